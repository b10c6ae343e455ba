//! The real readers of what we write, from Debian's packages: promtool's
//! format gate and node_exporter's textfile collector.

use std::{
    net::{TcpListener, TcpStream},
    process::{Command, Stdio},
    time::Duration,
};

use crate::util::{
    self, ChildGuard, NODE_EXPORTER, Netns, PROMTOOL, SETPRIV, in_netns, open_ports, run,
    ss_listeners, stdout_of, tests, wait_until,
};

tests![
    (
        promtool_accepts_every_output_without_a_lint,
        Netns,
        PROMTOOL
    ),
    (
        node_exporter_reads_the_file_as_another_user,
        Netns,
        SETPRIV,
        NODE_EXPORTER
    ),
];

fn promtool_accepts_every_output_without_a_lint() {
    in_netns(|| {
        let _listener = TcpListener::bind("127.0.0.1:0").unwrap();
        for args in [
            &[][..],
            &["--method", "procfs"],
            &["--method", "bind", "--ports", "1-3000"],
            &["--ports", "1-100,8000-9000", "--include-closed"],
            &["--ports", "65535", "--include-closed"],
        ] {
            let text = stdout_of(&run(args));
            util::assert_promtool_clean(&text, &format!("{args:?}"));
        }
    });
    // The gate itself works: a broken file is refused.
    let (ok, _) = util::promtool_check("# TYPE x gauge\nx{port=\"1\"} 1 123\nx 1");
    assert!(!ok, "promtool accepted a file without a final newline");
}

/// Waits until something accepts connections on `addr`.
pub fn wait_for_listener(addr: &str, child: &mut ChildGuard, what: &str) {
    wait_until(
        &format!("{what} to listen on {addr}"),
        Duration::from_secs(60),
        || {
            if let Some(status) = child.0.try_wait().unwrap() {
                panic!("{what} exited early: {status}");
            }
            TcpStream::connect(addr).is_ok().then_some(())
        },
    );
}

fn node_exporter_reads_the_file_as_another_user() {
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
            .args(["-c", "umask 077 && exec \"$0\" --output \"$1\""])
            .arg(util::bin::path())
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
                .arg("prometheus-node-exporter")
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
        wait_for_listener(addr, &mut child, "node_exporter");
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
