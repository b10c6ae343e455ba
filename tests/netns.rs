//! `--netns all` against `nsenter --net=... ss -Htulnp`, one namespace at a
//! time, in mount, network and PID namespaces of the test's own.
//!
//! As in `labels.rs`, the test re-runs this binary in roles (see [`role`]):
//! a *scenario* as PID 1 of fresh mount, network and PID namespaces
//! (`unshare -m -n -p -f --mount-proc`), so that `/proc` holds only the
//! processes it starts, PID 1's namespace (`host`) is its own, and a tmpfs
//! on `/run` makes `ip netns add` and the Docker directory its own too; and
//! the kit's holders (`util::scenario`), placed in namespaces. The scenario builds every kind of
//! namespace port_exporter names (ip netns names, two names for one, one
//! without a process, unnamed ones, one whose process sits in a cgroup
//! named like a Docker container's, one known only from Docker's
//! directory), then compares every view with `ss` run inside each
//! namespace, and checks what happens when a namespace vanishes or cannot
//! be opened.

use std::{
    collections::BTreeSet,
    fs,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    process::{Command, ExitCode, Stdio},
    time::Duration,
};

use crate::util::{
    self, Bin, Netns, PROMTOOL, Root, SETPRIV, STRACE, Server, UNSHARE, one_error_line,
    scenario::{Holder, NetnsRow, Place, netns_oracle, netns_rows, sh},
    stdout_of, tests,
};

tests![
    (
        every_namespace_matches_ss_inside_it,
        Netns,
        UNSHARE,
        STRACE,
        PROMTOOL
    ),
    (
        refuses_without_both_capabilities,
        Root("running as nobody and without capabilities"),
        SETPRIV,
        UNSHARE
    ),
    bind_cannot_scan_namespaces,
];

/// A container id, as Docker makes them: 64 hex digits.
const CONTAINER: &str = "c0ffee0123456789abcdef0123456789abcdef0123456789abcdef0123456789";

/// Runs the role this process was started for, if it is this module's.
pub fn role() -> Option<ExitCode> {
    (std::env::var(util::ROLE).ok()? == "netns-scenario").then(|| {
        scenario();
        ExitCode::SUCCESS
    })
}

fn every_namespace_matches_ss_inside_it() {
    util::run_role(
        &["--mount", "--net", "--pid", "--fork", "--mount-proc"],
        "netns-scenario",
        "netns scenario: all views agree",
    );
}

fn refuses_without_both_capabilities() {
    // As nobody: nothing at all, and a server that does not start.
    for serve in [false, true] {
        let mut bin = Bin::new().nobody().args(["--netns", "all"]);
        if serve {
            bin = bin.args(["--serve", "127.0.0.1:0"]);
        }
        let out = bin.output();
        assert_eq!(out.status.code(), Some(1), "serve {serve}");
        assert!(out.stdout.is_empty(), "serve {serve}");
        let line = one_error_line(&out);
        assert!(
            line.contains("--netns all needs root")
                && line.ends_with("lacks CAP_SYS_ADMIN and CAP_SYS_PTRACE"),
            "{line}"
        );
    }
    // Root without one of the two is refused too, naming what it lacks: a
    // part of the namespaces must never pass for all of them.
    for (dropped, lacks) in [
        ("-sys_admin", "lacks CAP_SYS_ADMIN"),
        ("-sys_ptrace", "lacks CAP_SYS_PTRACE"),
    ] {
        let out = Command::new("setpriv")
            .arg(format!("--bounding-set={dropped}"))
            .arg(util::bin::path())
            .args(["--netns", "all", "--format", "json"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{dropped}");
        assert!(out.stdout.is_empty(), "{dropped}");
        let line = one_error_line(&out);
        assert!(line.ends_with(lacks), "{dropped}: {line}");
    }
    // Root of a user namespace of its own has every capability there, and
    // none over the host's namespaces: refused the same way, not `[]`.
    let out = Command::new("unshare")
        .args(["--user", "--map-root-user"])
        .arg(util::bin::path())
        .args(["--netns", "all", "--format", "json"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "unshare -U -r");
    assert!(out.stdout.is_empty(), "unshare -U -r");
    let line = one_error_line(&out);
    assert!(
        line.contains("--netns all needs root in the host's user namespace"),
        "{line}"
    );
}

fn bind_cannot_scan_namespaces() {
    let out = util::run(["--netns", "all", "--method", "bind"]);
    assert_eq!(out.status.code(), Some(2));
    let line = one_error_line(&out);
    assert!(
        line.contains("--netns all") && line.contains("--method bind"),
        "{line}"
    );
    let out = util::run(["--netns", "some"]);
    assert_eq!(out.status.code(), Some(2));
}

/// The namespace link of the thread of `holder` that is not in the
/// namespace of its main thread (or whose main thread has exited).
fn thread_ns(holder: &Holder) -> String {
    let main = fs::metadata(holder.ns()).ok().map(|m| m.ino());
    fs::read_dir(format!("/proc/{}/task", holder.pid))
        .unwrap()
        .flatten()
        .map(|t| format!("{}/ns/net", t.path().display()))
        .find(|link| fs::metadata(link).is_ok_and(|m| Some(m.ino()) != main))
        .unwrap_or_else(|| panic!("no thread of {} in a namespace of its own", holder.name))
}

/// The inode of the namespace file at `path`.
fn inode(path: &str) -> u64 {
    fs::metadata(path).unwrap().ino()
}

/// A cgroup named like a Docker container's (`docker-<id>.scope`, as
/// Docker's systemd driver names them), made under this process's own
/// cgroup in the cgroup v2 hierarchy: the one mounted on the host, or one
/// mounted here (the scenario's mount namespace is its own). Removed when
/// dropped, its processes moved back first.
struct Cgroup {
    /// The directory made for the test, and the container's inside it.
    parent: PathBuf,
    dir: PathBuf,
    /// Our own cgroup's directory, where processes go back to.
    home: PathBuf,
}

impl Cgroup {
    fn new(pid: u32) -> Cgroup {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
        let mount = mountinfo.lines().find_map(|line| {
            let (mount, fs) = line.split_once(" - ")?;
            (fs.split_whitespace().next() == Some("cgroup2"))
                .then(|| PathBuf::from(mount.split_whitespace().nth(4).unwrap()))
        });
        let root = mount.unwrap_or_else(|| {
            let dir = PathBuf::from("/run/port_exporter-test-cgroup2");
            fs::create_dir_all(&dir).unwrap();
            sh("mount", &["-t", "cgroup2", "none", dir.to_str().unwrap()]);
            dir
        });
        let cgroups = fs::read_to_string("/proc/self/cgroup").unwrap();
        let own = cgroups
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .expect("no cgroup v2 line in /proc/self/cgroup");
        let home = root.join(own.trim_start_matches('/'));
        let parent = home.join(format!("port_exporter-test.{}", std::process::id()));
        let dir = parent.join(format!("docker-{CONTAINER}.scope"));
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot make {}: {e}", dir.display()));
        let cgroup = Cgroup { parent, dir, home };
        fs::write(cgroup.dir.join("cgroup.procs"), pid.to_string()).unwrap();
        cgroup
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        if let Ok(procs) = fs::read_to_string(self.dir.join("cgroup.procs")) {
            for pid in procs.lines() {
                let _ = fs::write(self.home.join("cgroup.procs"), pid);
            }
        }
        let _ = fs::remove_dir(&self.dir);
        let _ = fs::remove_dir(&self.parent);
    }
}

/// The `(netns, port, value)` of each sample of an exposition made with
/// `--netns all` and no other label, in order.
fn netns_samples(text: &str) -> Vec<(String, u16, u8)> {
    util::port_lines(text)
        .iter()
        .map(|line| {
            let rest = line
                .strip_prefix("instance_open_ports{port=\"")
                .expect(line);
            let (port, rest) = rest.split_once("\",netns=\"").expect(line);
            let (netns, value) = rest.rsplit_once("\"} ").expect(line);
            (
                netns.to_string(),
                port.parse().unwrap(),
                value.parse().unwrap(),
            )
        })
        .collect()
}

/// `port_exporter ARGS` under strace with `strace_args` (the filter and
/// the fault to inject), as a command.
fn traced(strace_args: &[&str], args: &[&str]) -> Command {
    let mut command = Command::new("strace");
    command
        .args(["-f", "-o", "/dev/null"])
        .args(strace_args)
        .arg(util::bin::path())
        .args(args)
        .stdin(Stdio::null());
    command
}

/// The scenario, as PID 1 of fresh mount, network and PID namespaces.
fn scenario() {
    sh("mount", &["-t", "tmpfs", "tmpfs", "/run"]);
    sh("ip", &["link", "set", "lo", "up"]);

    // The host: PID 1's namespace, this one.
    let here = Holder::start(
        "h-host",
        Place::Here,
        "tcp 127.0.0.1 0;tcp :: 0 dual;udp 0.0.0.0 0",
    );
    // Named ones: blue has a second name, azure (the smaller wins); empty
    // has no process at all.
    for name in ["blue", "green", "empty"] {
        sh("ip", &["netns", "add", name]);
    }
    sh("touch", &["/run/netns/azure"]);
    sh("mount", &["--bind", "/run/netns/blue", "/run/netns/azure"]);
    let blue = Holder::start(
        "h-blue",
        Place::Named("blue"),
        "tcp 0.0.0.0 0;tcp ::1 0 v6only;udp ::1 0;tcp 127.0.0.1 22",
    );
    let green = Holder::start("h-green", Place::Named("green"), "tcp 127.0.0.1 22");
    // Unnamed: one with two processes in it.
    let loner = Holder::start("h-loner", Place::Own, "tcp 127.0.0.1 0;tcp 0.0.0.0 8080");
    let mate = Holder::start("h-mate", Place::With(loner.pid), "tcp :: 9090 v6only");
    // A container: a process of its own namespace in a cgroup named like
    // Docker's, the namespace also bound under Docker's directory.
    let container = Holder::start("h-container", Place::Own, "tcp 0.0.0.0 80;udp 0.0.0.0 53");
    let _cgroup = Cgroup::new(container.pid);
    fs::create_dir_all("/run/docker/netns").unwrap();
    sh("touch", &["/run/docker/netns/5a4db0c0ffee"]);
    sh(
        "mount",
        &["--bind", &container.ns(), "/run/docker/netns/5a4db0c0ffee"],
    );
    // A namespace known only from Docker's directory, no process in it.
    sh("touch", &["/run/docker/netns/0123deadbeef"]);
    sh(
        "unshare",
        &[
            "--net=/run/docker/netns/0123deadbeef",
            "ip",
            "link",
            "set",
            "lo",
            "up",
        ],
    );

    // Namespaces no process's main thread is in: a thread's own; one whose
    // process's main thread exited; one bound outside /run/netns, held
    // otherwise only by the sockets made in it; one named by `ip netns` in
    // another mount namespace, with no process.
    let threaded = Holder::start_how("h-thread", Place::Here, "tcp 127.0.0.1 7001", "thread");
    let orphan = Holder::start_how("h-orphan", Place::Own, "tcp 127.0.0.1 7002", "main-exits");
    sh("mount", &["-t", "tmpfs", "tmpfs", "/mnt"]);
    let left = Holder::start_how(
        "h-left",
        Place::Own,
        "tcp 127.0.0.1 7003",
        "leave=/mnt/held",
    );
    let (sleeper, _) = util::start_helper(Command::new("unshare").args([
        "--mount",
        "sh",
        "-c",
        "mount -t tmpfs tmpfs /run && ip netns add inner && echo ready && exec cat",
    ]));
    let sleeper = util::ChildGuard(sleeper);
    let inner = format!("/proc/{}/root/run/netns/inner", sleeper.0.id());

    let short = &CONTAINER[..12];
    let unnamed = |path: &str| (format!("net:[{}]", inode(path)), path.to_string());
    let spaces: Vec<(String, String)> = vec![
        unnamed(&thread_ns(&threaded)),
        unnamed(&thread_ns(&orphan)),
        unnamed("/mnt/held"),
        unnamed(&inner),
        ("host".into(), "/proc/1/ns/net".into()),
        ("azure".into(), "/run/netns/blue".into()),
        ("green".into(), "/run/netns/green".into()),
        ("empty".into(), "/run/netns/empty".into()),
        (format!("net:[{}]", inode(&loner.ns())), loner.ns()),
        (short.to_string(), container.ns()),
        (
            format!("net:[{}]", inode("/run/docker/netns/0123deadbeef")),
            "/run/docker/netns/0123deadbeef".into(),
        ),
    ];
    let labels: BTreeSet<String> = spaces.iter().map(|(l, _)| l.clone()).collect();
    assert_eq!(labels.len(), spaces.len(), "{spaces:?}");
    let mut expected: Vec<NetnsRow> = spaces
        .iter()
        .flat_map(|(l, p)| netns_oracle(l, p))
        .collect();
    // ss -p finds no holder for a process whose main thread has exited (it
    // reads /proc/PID/fd only); port_exporter reads its threads' tables.
    for row in expected.iter_mut().filter(|r| r.0 == spaces[1].0) {
        assert_eq!(row.4, "", "ss found the holder whose main thread exited");
        row.4 = orphan.name.clone();
    }
    expected.sort();
    // Every holder's listeners are there, with their names.
    for (holder, label) in [
        (&here, "host"),
        (&blue, "azure"),
        (&green, "green"),
        (&loner, spaces[8].0.as_str()),
        (&mate, spaces[8].0.as_str()),
        (&container, short),
        (&threaded, spaces[0].0.as_str()),
        (&orphan, spaces[1].0.as_str()),
        (&left, spaces[2].0.as_str()),
    ] {
        assert!(
            expected.iter().any(|r| r.0 == label && r.4 == holder.name),
            "ss sees no listener of {} in {label}: {expected:#?}",
            holder.name
        );
    }
    let both = ["--netns", "all", "--protocol", "tcp,udp"];

    // JSON: every listener, its namespace and process, for both methods;
    // table: the same rows with a NETNS column.
    for method in ["netlink", "procfs"] {
        let json = stdout_of(
            &Bin::new()
                .args(both)
                .args(["--format", "json", "--method", method])
                .output(),
        );
        assert_eq!(
            netns_rows(&json),
            expected,
            "{method}: JSON vs ss in each namespace"
        );
    }
    let table = stdout_of(&Bin::new().args(both).args(["--format", "table"]).output());
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].ends_with("PID  NETNS"), "{table}");
    assert_eq!(lines.len(), expected.len() + 1, "{table}");

    // The exposition: one sample per port and namespace, the same for
    // both methods and from one run to the next; promtool is content.
    let tcp: BTreeSet<(String, u16)> = expected
        .iter()
        .filter(|r| r.1 == "tcp")
        .map(|r| (r.0.clone(), r.2))
        .collect();
    let mut runs = Vec::new();
    for method in ["netlink", "procfs", "netlink"] {
        let text = stdout_of(
            &Bin::new()
                .args(["--netns", "all", "--method", method])
                .output(),
        );
        let samples = netns_samples(&text);
        let found: BTreeSet<(String, u16)> =
            samples.iter().map(|(l, p, _)| (l.clone(), *p)).collect();
        assert_eq!(found, tcp, "{method}: exposition vs ss");
        assert_eq!(samples.len(), tcp.len(), "{method}: a sample twice\n{text}");
        assert_eq!(util::value_of(&text, "port_exporter_netns_unscanned"), 0.0);
        runs.push(util::port_lines(&text).join("\n"));
    }
    assert!(runs.iter().all(|r| *r == runs[0]), "runs differ: {runs:#?}");
    let text = stdout_of(
        &Bin::new()
            .args(both)
            .args(["--labels", "address,scope,user,process"])
            .output(),
    );
    util::assert_promtool_clean(&text, "--netns all with every label");

    // Closed ports per namespace, for every namespace, empty ones too.
    let mut ports: BTreeSet<u16> = tcp.iter().map(|(_, p)| *p).collect();
    ports.insert(1);
    let list: Vec<String> = ports.iter().map(u16::to_string).collect();
    let text = stdout_of(
        &Bin::new()
            .args([
                "--netns",
                "all",
                "--include-closed",
                "--ports",
                &list.join(","),
            ])
            .output(),
    );
    let samples = netns_samples(&text);
    assert_eq!(samples.len(), ports.len() * spaces.len(), "{text}");
    for (label, port, value) in &samples {
        assert!(labels.contains(label), "{label}");
        let open = tcp.contains(&(label.clone(), *port));
        assert_eq!(*value, u8::from(open), "{label} {port}");
    }

    // Served: the same samples, from the scan thread's worker.
    let server = Server::start(&["--netns", "all"]);
    let answer = server.get("/metrics");
    assert_eq!(answer.status, 200, "{}", answer.body);
    // Its own listener aside.
    let own = format!(
        "instance_open_ports{{port=\"{}\",netns=\"host\"}} 1",
        server.port()
    );
    let served: Vec<&str> = util::port_lines(&answer.body)
        .into_iter()
        .filter(|l| *l != own)
        .collect();
    assert_eq!(served.join("\n"), runs[0]);
    drop(server);

    cannot_be_opened(&spaces);
    links_that_cannot_be_read(&spaces);
    vanishes_while_scanned(&spaces);

    drop((here, blue, green, mate, loner, container));
    drop((threaded, orphan, left, sleeper));
    util::bin::remove_shared_bin();
    eprintln!(
        "netns scenario: all views agree ({} namespaces, {} listeners)",
        spaces.len(),
        expected.len()
    );
}

/// A namespace that cannot be opened (EACCES injected on opening the file
/// of `empty`, which has no process to fall back on) is counted and named
/// once, in a one-shot run and in a server's life; the others are
/// reported as ever.
fn cannot_be_opened(spaces: &[(String, String)]) {
    let strace = [
        "-P",
        "/run/netns/empty",
        "-e",
        "trace=openat",
        "-e",
        "inject=openat:error=EACCES",
    ];
    let out = traced(
        &strace,
        &["--netns", "all", "--ports", "1", "--include-closed"],
    )
    .output()
    .unwrap();
    let text = stdout_of(&out);
    let stderr = util::stderr_of(&out);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr
            .contains("network namespace empty (cannot open /run/netns/empty: Permission denied)"),
        "{stderr}"
    );
    assert_eq!(util::value_of(&text, "port_exporter_netns_unscanned"), 1.0);
    let found: BTreeSet<String> = netns_samples(&text).into_iter().map(|s| s.0).collect();
    let others: BTreeSet<String> = spaces
        .iter()
        .map(|(l, _)| l.clone())
        .filter(|l| l != "empty")
        .collect();
    assert_eq!(found, others);

    let mut args = vec!["--serve", "127.0.0.1:0", "--netns", "all"];
    args.extend(["--ports", "1", "--include-closed"]);
    let server = Server::spawn(traced(&strace, &args));
    for _ in 0..3 {
        assert_eq!(server.metric("port_exporter_netns_unscanned"), 1.0);
    }
    let log = server.log();
    assert_eq!(
        log.lines()
            .filter(|l| l.contains("network namespace empty"))
            .count(),
        1,
        "named once per server life:\n{log}"
    );
}

/// Processes whose namespace link cannot be read (a security module may
/// refuse even root; strace refuses here): one in a namespace known from
/// another process is placed there by its `/proc/PID/net` entries, which
/// is how PID 1's namespace stays `host`; one alone in its namespace makes
/// that namespace unscanned, counted and named.
fn links_that_cannot_be_read(spaces: &[(String, String)]) {
    let labels =
        |text: &str| -> BTreeSet<String> { netns_samples(text).into_iter().map(|s| s.0).collect() };
    let all: BTreeSet<String> = spaces.iter().map(|(l, _)| l.clone()).collect();
    let args = ["--netns", "all", "--ports", "1", "--include-closed"];
    let refuse = |paths: &[&str]| {
        let mut strace: Vec<&str> = Vec::new();
        for path in paths {
            strace.extend(["-P", path]);
        }
        strace.extend(["-e", "trace=statx", "-e", "inject=statx:error=EACCES"]);
        traced(&strace, &args).output().unwrap()
    };

    // PID 1's link: still host, by its net/dev.
    let out = refuse(&["/proc/1/ns/net"]);
    let text = stdout_of(&out);
    assert_eq!(util::stderr_of(&out), "");
    assert_eq!(labels(&text), all);
    assert_eq!(util::value_of(&text, "port_exporter_netns_unscanned"), 0.0);
    // ...which the refusal did reach: without net/dev either, PID 1's
    // namespace is scanned through its other processes, but is no longer
    // known as PID 1's.
    let out = refuse(&["/proc/1/ns/net", "/proc/1/net/dev"]);
    let text = stdout_of(&out);
    let mut expected = all.clone();
    expected.remove("host");
    expected.insert(format!("net:[{}]", inode("/proc/1/ns/net")));
    assert_eq!(labels(&text), expected);

    // A process alone in its namespace.
    let loner = Holder::start("h-unreadable", Place::Own, "tcp 127.0.0.1 0");
    let link = loner.ns();
    let out = refuse(&[&link]);
    let text = stdout_of(&out);
    let stderr = util::stderr_of(&out);
    assert!(
        stderr.contains(&format!(
            "network namespace of pid {} (cannot open {link}: Permission denied)",
            loner.pid
        )),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert_eq!(labels(&text), all);
    assert_eq!(util::value_of(&text, "port_exporter_netns_unscanned"), 1.0);
}

/// A namespace whose last process exits while the scan runs is skipped,
/// without a word: the worker is held in its first setns (the host's
/// namespace, PID 1's, comes first) while the victim is killed and
/// reaped, and checked to be still held afterwards.
fn vanishes_while_scanned(spaces: &[(String, String)]) {
    let mut victim = Holder::start("h-victim", Place::Own, "tcp 127.0.0.1 7777");
    let label = format!("net:[{}]", inode(&victim.ns()));
    let strace = [
        "-e",
        "trace=setns",
        "-e",
        "inject=setns:delay_enter=5000000:when=1",
    ];
    let run = traced(
        &strace,
        &["--netns", "all", "--ports", "1,7777", "--include-closed"],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let in_setns = |thread: &Path| {
        fs::read_to_string(thread.join("syscall"))
            .is_ok_and(|s| s.starts_with(&format!("{} ", nix::libc::SYS_setns)))
    };
    let worker = util::wait_until(
        "the worker to wait in its first setns",
        Duration::from_secs(30),
        || {
            fs::read_dir("/proc")
                .ok()?
                .flatten()
                .filter_map(|p| fs::read_dir(p.path().join("task")).ok())
                .flatten()
                .flatten()
                .map(|t| t.path())
                .find(|t| {
                    fs::read_to_string(t.join("comm")).is_ok_and(|c| c == "netns\n") && in_setns(t)
                })
        },
    );
    victim.kill();
    assert!(
        in_setns(&worker),
        "the worker left its first setns before the victim was gone: the test cannot tell"
    );
    let out = run.wait_with_output().unwrap();
    let text = stdout_of(&out);
    assert_eq!(
        util::stderr_of(&out),
        "",
        "a vanished namespace is no warning"
    );
    let found: BTreeSet<String> = netns_samples(&text).into_iter().map(|s| s.0).collect();
    let before: BTreeSet<String> = spaces.iter().map(|(l, _)| l.clone()).collect();
    assert!(!found.contains(&label), "{text}");
    assert_eq!(found, before, "{text}");
    assert_eq!(util::value_of(&text, "port_exporter_netns_unscanned"), 0.0);
}
