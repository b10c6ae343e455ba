//! The command line as a user meets it: help, version, usage errors (exit
//! 2, one line, nothing written) and bad output paths (exit 1).

use std::process::Stdio;

use crate::util::{self, Bin, Netns, one_error_line, run, stderr_of, stdout_of, tests};

tests![
    bad_input_exits_2_with_one_line_naming_it_and_writes_nothing,
    bad_output_paths_exit_1_naming_the_path,
    warns_when_node_exporter_would_ignore_the_file,
    help_teaches,
    version,
    (default_all_ports_and_dash_print_the_same_ports, Netns),
    closed_stdout_is_not_an_error,
    include_closed_reports_every_selected_port_once,
    meta_metrics_are_in_seconds,
    odd_values_give_one_short_line_naming_the_option,
    a_closed_stdout_is_an_error,
];

fn bad_input_exits_2_with_one_line_naming_it_and_writes_nothing() {
    let dir = util::open_tempdir();
    let target = dir.path().join("open_ports.prom");
    let cases: &[(&[&str], &str)] = &[
        (&["--ports", "0"], "'0'"),
        (&["--ports", "65536"], "'65536'"),
        (&["--ports", "10-5"], "'10-5'"),
        (&["--ports", "abc"], "'abc'"),
        (&["--ports", ""], "''"),
        (&["--ports", "1,,2"], "'1,,2'"),
        (&["--ports", "-5"], "'-5'"),
        (&["--exclude", "70000"], "'70000'"),
        (&["--method", "foo"], "'foo'"),
        (&["--threads", "0"], "'0'"),
        (&["--include-closed"], "--include-closed"),
        (&["--ports", "22", "--exclude", "1-100"], "--exclude"),
        (&["--frobnicate"], "'--frobnicate'"),
        (&["--generate", "troff"], "'troff'"),
        (&["--protocol", "icmp"], "'icmp'"),
        (&["--labels", "pid"], "'pid'"),
        (&["--format", "yaml"], "'yaml'"),
        (&["--method", "bind", "--protocol", "udp"], "TCP ports only"),
        (
            &["--method", "bind", "--labels", "process"],
            "--labels process",
        ),
        (&["--method", "bind", "--format", "json"], "--format json"),
        (&["--format", "table"], "--output writes"),
        (&["--format", "json", "--serve", "127.0.0.1:0"], "--serve"),
        (
            &["--format", "table", "--ports", "22", "--include-closed"],
            "--format table",
        ),
    ];
    for (args, named) in cases {
        let output = run(args
            .iter()
            .copied()
            .chain(["--output", target.to_str().unwrap()]));
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr_of(&output)
        );
        let line = one_error_line(&output);
        assert!(
            line.contains(named),
            "{args:?}: {line:?} does not name {named}"
        );
        assert!(output.stdout.is_empty(), "{args:?} printed to stdout");
        assert!(
            util::dir_names(dir.path()).is_empty(),
            "{args:?} wrote a file"
        );
    }
}

fn bad_output_paths_exit_1_naming_the_path() {
    let dir = util::open_tempdir();
    let missing = dir.path().join("no/such/dir/open_ports.prom");
    for target in [missing.as_path(), dir.path()] {
        let output = run(["--output".as_ref(), target.as_os_str()]);
        assert_eq!(output.status.code(), Some(1), "{}", stderr_of(&output));
        let line = one_error_line(&output);
        assert!(line.contains(&target.display().to_string()), "{line}");
        assert!(output.stdout.is_empty());
    }
    assert!(
        util::dir_names(dir.path()).is_empty(),
        "something was written"
    );
}

fn warns_when_node_exporter_would_ignore_the_file() {
    let dir = util::open_tempdir();
    let target = dir.path().join("open_ports.txt");
    let output = run(["--ports", "1-10", "-o", target.to_str().unwrap()]);
    assert!(output.status.success());
    let line = one_error_line(&output);
    assert!(line.contains("does not end in .prom"), "{line}");
    assert!(target.is_file());
}

fn help_teaches() {
    let help = stdout_of(&run(["--help"]));
    for needle in [
        "A port is open when a TCP socket listens on it",
        "ss -Htln",
        "netlink",
        "procfs",
        "bind",
        "outgoing connections",
        "CAP_NET_BIND_SERVICE",
        "* * * * * root port_exporter -o",
        "--collector.textfile.directory",
        "Exit status:",
        "--include-closed",
        "--generate",
    ] {
        assert!(help.contains(needle), "--help lacks {needle:?}");
    }
    let short = stdout_of(&run(["-h"]));
    assert!(
        short.lines().all(|l| l.chars().count() <= 100),
        "-h has a line over 100 columns"
    );
    assert!(short.lines().count() < help.lines().count());
}

fn version() {
    let out = stdout_of(&run(["--version"]));
    assert_eq!(
        out,
        format!("port_exporter {}\n", env!("CARGO_PKG_VERSION"))
    );
}

fn default_all_ports_and_dash_print_the_same_ports() {
    // In a namespace of our own nothing else opens or closes listeners
    // between the runs.
    util::in_netns(|| {
        let _listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let texts = [
            run::<[&str; 0], &str>([]),
            run(["--ports", "1-65535"]),
            run(["-o", "-"]),
        ]
        .map(|output| stdout_of(&output));
        for text in &texts {
            assert!(util::check_exposition(text).is_ok(), "{text}");
            assert_eq!(
                util::samples(text).len(),
                util::open_ports(text).len(),
                "a 0 sample"
            );
        }
        assert_eq!(util::open_ports(&texts[0]), util::open_ports(&texts[1]));
        assert_eq!(util::open_ports(&texts[0]), util::open_ports(&texts[2]));
    });
}

fn closed_stdout_is_not_an_error() {
    // Like `port_exporter | head -1`: the reader left; that is success.
    let mut child = Bin::new()
        .args(["--ports", "1-65535", "--include-closed"])
        .command()
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", stderr_of(&output));
    assert!(output.stderr.is_empty(), "{}", stderr_of(&output));
}

fn include_closed_reports_every_selected_port_once() {
    let text = stdout_of(&run([
        "--ports",
        "1-2000,60000-60010",
        "--exclude",
        "100-199",
        "--include-closed",
    ]));
    let samples = util::samples(&text);
    let expected: Vec<u16> = (1..=2000)
        .filter(|p| !(100..=199).contains(p))
        .chain(60000..=60010)
        .collect();
    assert_eq!(samples.keys().copied().collect::<Vec<_>>(), expected);
}

fn meta_metrics_are_in_seconds() {
    let text = stdout_of(&run(["--ports", "1-100"]));
    let value = |name: &str| util::value_of(&text, name);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let started = value("port_exporter_last_scan_timestamp_seconds");
    assert!(
        (now - 60.0..=now).contains(&started),
        "timestamp {started}, now {now}"
    );
    let took = value("port_exporter_scan_duration_seconds");
    assert!(took > 0.0 && took < 5.0, "duration {took}");
    assert_eq!(value("port_exporter_scan_skipped_ports"), 0.0);
}

fn odd_values_give_one_short_line_naming_the_option() {
    use std::os::unix::ffi::OsStrExt;
    let not_utf8 = std::ffi::OsStr::from_bytes(b"22,\xff80");
    let output = Bin::new().arg("--ports").arg(not_utf8).output();
    assert_eq!(output.status.code(), Some(2));
    let line = one_error_line(&output);
    assert!(
        line.contains("'--ports <LIST>'") && line.contains("not UTF-8"),
        "{line}"
    );
    // A list of over 110 KiB with one bad item: the line names it, briefly.
    let mut list = (1..=20_000).map(|p| p.to_string()).collect::<Vec<_>>();
    list[10_000] = "http".into();
    let list = list.join(",") + &",1".repeat(5_000);
    // Just under the kernel's limit for one argument (MAX_ARG_STRLEN, 128 KiB).
    assert!(
        (110 * 1024..128 * 1024).contains(&list.len()),
        "{}",
        list.len()
    );
    let output = run(["--exclude", &list]);
    assert_eq!(output.status.code(), Some(2));
    let line = one_error_line(&output);
    assert!(
        line.contains("'--exclude <LIST>'") && line.contains("'http' is not a port number"),
        "{line}"
    );
    assert!(line.len() < 300, "a {} byte error line", line.len());
}

fn a_closed_stdout_is_an_error() {
    // `>&-`, as coreutils treats it: the output cannot go anywhere.
    let output = std::process::Command::new("sh")
        .args(["-c", "exec \"$0\" --ports 1-10 >&-"])
        .arg(util::bin::path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let line = one_error_line(&output);
    assert!(
        line.contains("cannot write to stdout: Bad file descriptor"),
        "{line}"
    );
    // `>/dev/null` is not a closed stdout: it succeeds, printing nothing.
    let output = std::process::Command::new("sh")
        .args(["-c", "exec \"$0\" --ports 1-10 >/dev/null"])
        .arg(util::bin::path())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr_of(&output));
    // Writing a file needs no stdout.
    let dir = util::open_tempdir();
    let target = dir.path().join("open_ports.prom");
    let output = std::process::Command::new("sh")
        .args(["-c", "exec \"$0\" --ports 1-10 -o \"$1\" >&-"])
        .arg(util::bin::path())
        .arg(&target)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr_of(&output));
    assert!(target.is_file());
}
