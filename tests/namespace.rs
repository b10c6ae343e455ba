//! Exactness, checked against the kernel: inside a fresh network namespace
//! we open every kind of listener plus sockets that are bound but do not
//! listen (`util::zoo`), then compare each method's answer with `ss -Htln`.

use std::{collections::BTreeSet, net::TcpListener, process::Command, thread, time::Duration};

use crate::util::{
    self, Bin, Netns, SETPRIV, STRACE, in_netns, open_ports, run, ss_listeners, stderr_of,
    stdout_of, tests, wait_until, zoo::zoo,
};

tests![
    (netlink_procfs_and_auto_report_exactly_what_ss_lists, Netns),
    (ports_and_exclude_narrow_every_method, Netns),
    (
        bind_misses_no_listener_and_its_extras_are_the_documented_ones,
        Netns
    ),
    (
        unprivileged_bind_never_guesses_about_ports_it_may_not_bind,
        Netns,
        SETPRIV
    ),
    (concurrent_bind_scans_never_see_each_other, Netns),
    (
        auto_falls_back_to_procfs_when_netlink_is_refused,
        Netns,
        STRACE
    ),
    (a_bind_scan_waits_while_another_holds_the_lock, Netns),
    (another_user_cannot_make_a_bind_scan_wait, Netns, SETPRIV),
];

fn netlink_procfs_and_auto_report_exactly_what_ss_lists() {
    in_netns(|| {
        let zoo = zoo(true);
        let oracle = ss_listeners();
        assert_eq!(oracle, zoo.listeners, "the zoo itself is not what ss lists");
        for args in [
            &[][..],
            &["--method", "auto"],
            &["--method", "netlink"],
            &["--method", "procfs"],
        ] {
            let text = stdout_of(&run(args));
            assert_eq!(open_ports(&text), oracle, "{args:?}");
            assert_eq!(
                util::samples(&text).len(),
                oracle.len(),
                "{args:?} wrote a 0 sample"
            );
        }
        // The method that ran is named, never "auto".
        let text = stdout_of(&run(["--method", "auto"]));
        assert!(
            text.contains("port_exporter_build_info{method=\"netlink\""),
            "{text}"
        );
    });
}

fn ports_and_exclude_narrow_every_method() {
    in_netns(|| {
        let zoo = zoo(false);
        let ports: Vec<u16> = zoo.listeners.iter().copied().collect();
        let (kept, excluded) = (ports[0], ports[1]);
        let list = format!(
            "{kept},{excluded},{}",
            zoo.bound_only.iter().next().unwrap()
        );
        for method in ["netlink", "procfs", "bind"] {
            let out = run([
                "--method",
                method,
                "--ports",
                &list,
                "--exclude",
                &excluded.to_string(),
            ]);
            let text = stdout_of(&out);
            let found = open_ports(&text);
            assert!(
                found.contains(&kept) && !found.contains(&excluded),
                "{method}: {found:?}"
            );
            let expected = if method == "bind" { 2 } else { 1 };
            assert_eq!(found.len(), expected, "{method}: {found:?}");
        }
    });
}

fn bind_misses_no_listener_and_its_extras_are_the_documented_ones() {
    in_netns(|| {
        let zoo = zoo(true);
        let oracle = ss_listeners();
        let found = open_ports(&stdout_of(&run(["--method", "bind", "--threads", "2"])));
        let missed: BTreeSet<_> = oracle.difference(&found).collect();
        assert!(missed.is_empty(), "bind missed listeners {missed:?}");
        // The documented limit: a bound port reads as open, listening or not.
        let extra: BTreeSet<u16> = found.difference(&oracle).copied().collect();
        assert_eq!(extra, zoo.bound_only, "bind's extra ports");
    });
}

fn unprivileged_bind_never_guesses_about_ports_it_may_not_bind() {
    in_netns(|| {
        let zoo = zoo(true);
        let high: Vec<String> = zoo
            .listeners
            .iter()
            .filter(|&&p| p >= 1024)
            .map(u16::to_string)
            .collect();
        let list = format!("1-1100,{}", high.join(","));
        let output = Bin::new()
            .nobody()
            .args(["--method", "bind", "--ports", &list, "--include-closed"])
            .output();
        let text = stdout_of(&output);
        let samples = util::samples(&text);
        assert!(
            !samples.contains_key(&80),
            "port 80 was reported: {:?}",
            samples.get(&80)
        );
        assert!(
            (1..1024).all(|p| !samples.contains_key(&p)),
            "a port below 1024 got a sample"
        );
        for port in &high {
            assert_eq!(
                samples.get(&port.parse().unwrap()),
                Some(&1),
                "listener {port} missed"
            );
        }
        assert_eq!(samples.get(&1024), Some(&0));
        assert!(
            text.contains("\nport_exporter_scan_skipped_ports 1023\n"),
            "{text}"
        );
        let stderr = stderr_of(&output);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains("1023 ports were skipped"), "{stderr}");
        assert!(stderr.contains("CAP_NET_BIND_SERVICE"), "{stderr}");
    });
}

fn concurrent_bind_scans_never_see_each_other() {
    in_netns(|| {
        // Listeners only: with nothing merely bound, bind is exact here, so
        // any extra port could only be another scan's probe. (On Linux the
        // probes would not collide even without the lock; the lock itself
        // is checked by a_bind_scan_waits_while_another_holds_the_lock.)
        let listeners: Vec<TcpListener> = (0..3)
            .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let oracle = ss_listeners();
        assert_eq!(oracle.len(), listeners.len());
        let children: Vec<_> = (0..3)
            .map(|_| {
                Bin::new()
                    .args(["--method", "bind", "--threads", "2"])
                    .command()
                    .stdout(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for child in children {
            let text = stdout_of(&child.wait_with_output().unwrap());
            assert_eq!(open_ports(&text), oracle);
        }
    });
}

fn auto_falls_back_to_procfs_when_netlink_is_refused() {
    in_netns(|| {
        let _zoo = zoo(false);
        let oracle = ss_listeners();
        // Make every socket(2) call fail, as a sandbox without
        // NETLINK_SOCK_DIAG would; the one-shot run opens no other socket.
        let refused = |args: &[&str]| {
            Bin::new()
                .inject("socket:error=EPROTONOSUPPORT")
                .args(args)
                .output()
        };
        let output = refused(&["--verbose"]);
        let text = stdout_of(&output);
        assert_eq!(open_ports(&text), oracle);
        assert!(
            text.contains("port_exporter_build_info{method=\"procfs\""),
            "{text}"
        );
        let stderr = stderr_of(&output);
        assert!(
            stderr.contains("netlink sock_diag dump failed") && stderr.contains("used procfs"),
            "{stderr}"
        );
        // Without --verbose the fallback is silent: the answer is still exact.
        assert!(stderr_of(&refused(&[])).is_empty());
        // Asked for netlink by name, the failure is an error, said in one line.
        let output = refused(&["--method", "netlink"]);
        assert_eq!(output.status.code(), Some(1));
        let stderr = stderr_of(&output);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.starts_with("port_exporter: netlink sock_diag dump failed: "),
            "{stderr}"
        );
        assert!(output.stdout.is_empty());
        // A failed scan never replaces a good file.
        let dir = util::open_tempdir();
        let target = dir.path().join("open_ports.prom");
        std::fs::write(&target, "previous contents\n").unwrap();
        let output = refused(&["--method", "netlink", "-o", target.to_str().unwrap()]);
        assert_eq!(output.status.code(), Some(1), "{}", stderr_of(&output));
        assert_eq!(
            std::fs::read_to_string(&target).unwrap(),
            "previous contents\n"
        );
        assert_eq!(util::dir_names(dir.path()), ["open_ports.prom"]);
    });
}

fn a_bind_scan_waits_while_another_holds_the_lock() {
    in_netns(|| {
        // Holding the lock is what a running bind scan does.
        let held = util::hold_bind_scan_lock();
        let mut scan = util::ChildGuard(
            Bin::new()
                .args(["--method", "bind", "--ports", "1-2000"])
                .command()
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        );
        // A scan that did not wait would be done in far less than this.
        thread::sleep(Duration::from_millis(500));
        assert!(
            scan.0.try_wait().unwrap().is_none(),
            "the scan ran while the lock was held"
        );
        drop(held);
        let status = wait_until(
            "the scan to take the released lock and finish",
            Duration::from_secs(30),
            || scan.0.try_wait().unwrap(),
        );
        assert!(status.success());
        assert!(
            util::dir_names(std::path::Path::new("/run/port_exporter"))
                .iter()
                .all(|name| !name.starts_with(&format!("bind-scan.net{}.", netns_inode()))),
            "the lock file was left behind"
        );
    });
}

/// The inode of the calling thread's network namespace.
fn netns_inode() -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/thread-self/ns/net").unwrap().ino()
}

fn another_user_cannot_make_a_bind_scan_wait() {
    use std::os::{
        linux::net::SocketAddrExt,
        unix::net::{SocketAddr as UnixAddr, UnixDatagram},
    };
    in_netns(|| {
        // The lock of earlier versions, an abstract socket name that any
        // user could bind first, means nothing now.
        let name = UnixAddr::from_abstract_name(b"port_exporter/bind-scan").unwrap();
        let _squatted = UnixDatagram::bind_addr(&name).unwrap();
        // Root's lock lives where nobody may create or open a file.
        let path = format!("/run/port_exporter/bind-scan.net{}.lock", netns_inode());
        let started = std::time::Instant::now();
        assert!(
            run(["--method", "bind", "--ports", "1-2000"])
                .status
                .success()
        );
        let meta = std::fs::metadata("/run/port_exporter").unwrap();
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        assert_eq!((meta.uid(), meta.permissions().mode() & 0o777), (0, 0o700));
        let squat = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .args(["sh", "-c", "exec 3>>\"$0\""])
            .arg(&path)
            .output()
            .unwrap();
        assert!(!squat.status.success(), "nobody could create {path}");
        // The old lock made this wait 30 s and fail; now it runs at once.
        assert!(
            run(["--method", "bind", "--ports", "1-2000"])
                .status
                .success()
        );
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "two bind scans took {:?}",
            started.elapsed()
        );
    });
}
