//! The real readers of what we write, from Debian's packages: promtool's
//! format gate and node_exporter's textfile collector.

use std::{
    net::{TcpListener, TcpStream},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use crate::util::{self, ChildGuard, in_netns, open_ports, run, ss_listeners, stdout_of};

#[test]
fn promtool_accepts_every_output_without_a_lint() {
    let Some(promtool) = util::need_program("promtool") else {
        return;
    };
    let _listener = TcpListener::bind("127.0.0.1:0").unwrap();
    for args in [
        &[][..],
        &["--method", "procfs"],
        &["--method", "bind", "--ports", "1-3000"],
        &["--ports", "1-100,8000-9000", "--include-closed"],
        &["--ports", "65535", "--include-closed"],
    ] {
        let text = stdout_of(&run(args));
        let (ok, said) = util::promtool_check(&promtool, &text);
        assert!(ok && said.is_empty(), "promtool on {args:?}: {said}");
    }
    // The gate itself works: a broken file is refused.
    let (ok, _) = util::promtool_check(&promtool, "# TYPE x gauge\nx{port=\"1\"} 1 123\nx 1");
    assert!(!ok, "promtool accepted a file without a final newline");
}

/// Waits until something accepts connections on `addr`.
fn wait_for_listener(addr: &str, child: &mut ChildGuard) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while TcpStream::connect(addr).is_err() {
        if let Some(status) = child.0.try_wait().unwrap() {
            panic!("node_exporter exited early: {status}");
        }
        assert!(Instant::now() < deadline, "nothing listens on {addr}");
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn node_exporter_reads_the_file_as_another_user() {
    if !util::need_root() || util::need_program("setpriv").is_none() {
        return;
    }
    let Some(node_exporter) = util::need_program("prometheus-node-exporter") else {
        return;
    };
    in_netns(|| {
        let _listeners: Vec<TcpListener> = ["127.0.0.1:0", "[::]:0", "0.0.0.0:0"]
            .iter()
            .map(|a| TcpListener::bind(a).unwrap())
            .collect();
        let dir = util::open_tempdir();
        let target = dir.path().join("open_ports.prom");
        let expected = ss_listeners();
        // umask 077 must not matter: node_exporter runs as `prometheus`.
        let status = Command::new("sh")
            .args(["-c", "umask 077 && exec \"$0\" --output \"$1\"", util::BIN])
            .arg(&target)
            .status()
            .unwrap();
        assert!(status.success());
        let written = std::fs::read_to_string(&target).unwrap();
        assert_eq!(open_ports(&written), expected);

        let addr = "127.0.0.1:9100";
        let mut child = ChildGuard(
            Command::new("setpriv")
                .args(["--reuid=prometheus", "--regid=prometheus", "--clear-groups"])
                .arg(&node_exporter)
                .arg(format!("--web.listen-address={addr}"))
                .args(["--collector.disable-defaults", "--collector.textfile"])
                .arg(format!(
                    "--collector.textfile.directory={}",
                    dir.path().display()
                ))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        wait_for_listener(addr, &mut child);
        let response = util::http(addr, "GET", "/metrics", Duration::from_secs(10));
        assert_eq!(response.status, 200);
        let body = response.body;
        assert!(body.contains("\nnode_textfile_scrape_error 0\n"), "{body}");
        let mtime = format!(
            "node_textfile_mtime_seconds{{file=\"{}\"}}",
            target.display()
        );
        assert!(body.contains(&mtime), "no {mtime} in:\n{body}");
        let ours: Vec<&str> = body
            .lines()
            .filter(|l| l.starts_with("instance_open_ports{"))
            .collect();
        let written: Vec<&str> = written
            .lines()
            .filter(|l| l.starts_with("instance_open_ports{"))
            .collect();
        assert_eq!(
            ours, written,
            "node_exporter exported other series than the file holds"
        );
        assert_eq!(ours.len(), expected.len());
        assert!(
            body.contains("port_exporter_build_info{method=\"netlink\""),
            "{body}"
        );
    });
}
