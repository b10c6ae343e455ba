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
            &[
                "--protocol",
                "tcp,udp",
                "--labels",
                "address,scope,user,process",
            ],
            &[
                "--protocol",
                "udp",
                "--labels",
                "address",
                "--ports",
                "1-100",
                "--include-closed",
            ],
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
    node_exporter_reads(&[]);
    // Every label, UDP too: one sample per listener here.
    node_exporter_reads(&[
        "--protocol",
        "tcp,udp",
        "--labels",
        "protocol,address,scope,user,process",
    ]);
}

/// node_exporter exports the file written with `args` as it is.
fn node_exporter_reads(args: &[&str]) {
    in_netns(|| {
        let _listeners: Vec<TcpListener> = ["127.0.0.1:0", "[::]:0", "0.0.0.0:0"]
            .iter()
            .map(|a| TcpListener::bind(a).unwrap())
            .collect();
        let _udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let dir = util::open_tempdir();
        let target = dir.path().join("open_ports.prom");
        let expected = ss_listeners();
        // umask 077 must not matter: node_exporter runs as `prometheus`.
        let status = Command::new("sh")
            .args(["-c", "umask 077 && exec \"$0\" --output \"$@\""])
            .arg(util::bin::path())
            .arg(&target)
            .args(args)
            .status()
            .unwrap();
        assert!(status.success());
        let written = std::fs::read_to_string(&target).unwrap();
        let samples = written
            .lines()
            .filter(|l| l.starts_with("instance_open_ports{"))
            .count();
        if args.is_empty() {
            assert_eq!(open_ports(&written), expected);
        } else {
            // Three TCP listeners on three ports, one UDP socket.
            assert_eq!(samples, 4, "{written}");
            // All held by this test process, whose command name is the
            // start of the test binary's.
            assert!(
                written
                    .lines()
                    .filter(|l| l.starts_with("instance_open_ports{"))
                    .all(|l| l.contains(",process=\"integration-")),
                "{written}"
            );
            assert!(written.contains("\nport_exporter_unattributed_listeners 0\n"));
        }

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
        // node_exporter writes the labels of a sample in name order, and
        // sorts the samples by them: compare the series, not the text.
        let ours = canonical_samples(&body);
        let written = canonical_samples(&written);
        assert_eq!(
            ours, written,
            "node_exporter exported other series than the file holds"
        );
        assert_eq!(ours.len(), samples);
        assert!(
            body.contains("port_exporter_build_info{method=\"netlink\""),
            "{body}"
        );
    });
}

/// The instance_open_ports samples of `text` with their labels in name
/// order, sorted.
fn canonical_samples(text: &str) -> Vec<String> {
    let mut samples: Vec<String> = text
        .lines()
        .filter(|l| l.starts_with("instance_open_ports{"))
        .map(|line| {
            let (labels, value) = line
                .strip_prefix("instance_open_ports{")
                .and_then(|rest| rest.rsplit_once("} "))
                .expect(line);
            let mut pairs: Vec<&str> = labels.split("\",").collect();
            for pair in &mut pairs {
                *pair = pair.trim_end_matches('"');
            }
            pairs.sort_unstable();
            format!("{{{}}} {value}", pairs.join(","))
        })
        .collect();
    samples.sort();
    samples
}
