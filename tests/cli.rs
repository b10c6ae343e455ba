//! The command line as a user meets it: help, version, usage errors (exit
//! 2, one line, nothing written) and bad output paths (exit 1).

use std::process::Stdio;

use crate::util::{
    self, Bin, Netns, SETPRIV, UNSHARE, one_error_line, run, stderr_of, stdout_of, tests,
};

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
    common_mistakes_say_what_to_type_instead,
    every_list_refuses_a_stray_comma_alike,
    (a_port_in_use_names_who_holds_it, Netns, UNSHARE, SETPRIV),
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
        (&["--ports", "22,"], "'22,'"),
        (&["--labels", "scope,process,"], "'scope,process,'"),
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
    // A missing directory: said so, with what to do.
    let line = one_error_line(&run(["--output".as_ref(), missing.as_os_str()]));
    assert!(
        line.contains(&format!(
            "the directory {} does not exist; create it",
            missing.parent().unwrap().display()
        )) && line.contains("/var/lib/prometheus/node-exporter on Debian"),
        "{line}"
    );
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
        "* * * * * root /usr/bin/port_exporter -o",
        "/usr/local/bin/port_exporter from the source install",
        "--exclude 32768-60999",
        "--ports 22,443 --include-closed",
        "--collector.textfile.directory",
        "Exit status:",
        "--include-closed",
        "--generate",
    ] {
        assert!(help.contains(needle), "--help lacks {needle:?}");
    }
    // Examples are what one would run in production: no example makes
    // more than a few series with --include-closed.
    assert!(!help.contains("8000-9000 --include-closed"), "{help}");
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

fn common_mistakes_say_what_to_type_instead() {
    let cases: &[(&[&str], &str)] = &[
        (&["--serve", "8000"], "--serve :8000 (every interface)"),
        (
            &["--web.listen-address", ":9100"],
            "unexpected argument '--web.listen-address': port_exporter takes the address to \
             listen on as --serve ADDR: --serve :9100",
        ),
        (
            &["--web.listen-address=127.0.0.1:9100"],
            "--serve 127.0.0.1:9100",
        ),
        (&["--web.telemetry-path", "/m"], "at both / and /metrics"),
        (
            &["--ports", "22", "80"],
            "unexpected argument '80': a list is one argument, comma-separated without \
             spaces: --ports 22,80",
        ),
        (&["-p22", "80", "443", "-v"], "--ports 22,80,443"),
        (&["--ports", "22,", "80"], "--ports 22,80"),
        (&["--exclude", "1-10", "20"], "--exclude 1-10,20"),
        (&["--labels", "scope", "process"], "--labels scope,process"),
        (&["--protocol", "tcp", "udp"], "--protocol tcp,udp"),
    ];
    for (args, needle) in cases {
        let output = run(*args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let line = one_error_line(&output);
        assert!(line.contains(needle), "{args:?}: {line:?} lacks {needle:?}");
        assert!(output.stdout.is_empty(), "{args:?}");
    }
}

fn every_list_refuses_a_stray_comma_alike() {
    // One rule for every list: an empty item is an error, said the same way.
    for (option, list) in [
        ("--ports", "22,80"),
        ("--exclude", "22,80"),
        ("--labels", "scope,process"),
        ("--protocol", "tcp,udp"),
    ] {
        for (value, why) in [
            (format!("{list},"), "the list ends with a comma; remove it"),
            (
                format!(",{list}"),
                "the list starts with a comma; remove it",
            ),
            (
                list.replace(',', ",,"),
                "two commas with nothing between them",
            ),
        ] {
            let output = run([option, &value]);
            assert_eq!(output.status.code(), Some(2), "{option} {value}");
            let line = one_error_line(&output);
            assert_eq!(
                line,
                format!("port_exporter: invalid value '{value}' for '{option} <LIST>': {why}")
                    + if why.ends_with("remove it") {
                        " (is a variable empty?)"
                    } else {
                        "; remove one"
                    },
                "{option} {value}"
            );
        }
        assert_eq!(
            run([option, list]).status.code(),
            Some(0),
            "{option} {list}"
        );
    }
}

fn a_port_in_use_names_who_holds_it() {
    // In network and PID namespaces of the test's own: a server holds a
    // port, and a second one asked for it says who has it, as root (the
    // process) and as nobody (the owner, and how to learn more).
    let script = r#"
        ip link set lo up || exit 9
        : >log
        "$0" --serve 127.0.0.1:0 2>log &
        until port=$(sed -n 's/^port_exporter: listening on 127.0.0.1:\([0-9]*\) .*/\1/p' log) \
            && [ -n "$port" ]; do
            kill -0 $! || exit 8
            sleep 0.01
        done
        echo "holder $!"
        "$0" --serve ":$port"; echo "exit $?"
        setpriv --reuid=65534 --regid=65534 --clear-groups "$1" --serve "127.0.0.1:$port"
        echo "exit $?"
        kill $!
        echo "port $port"
    "#;
    let dir = util::open_tempdir();
    let output = std::process::Command::new("unshare")
        .args([
            "--net",
            "--pid",
            "--fork",
            "--mount-proc",
            "sh",
            "-c",
            script,
        ])
        .arg(util::bin::path())
        .arg(util::bin::shared_bin())
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let (out, err) = (stdout_of(&output), stderr_of(&output));
    let field = |key: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key}: {out}{err}"))
            .to_string()
    };
    let (pid, port) = (field("holder "), field("port "));
    assert_eq!(
        out.lines().filter(|l| *l == "exit 1").count(),
        2,
        "{out}{err}"
    );
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "{err}");
    assert_eq!(
        lines[0],
        format!(
            "port_exporter: cannot listen on :{port}: Address already in use (os error 98): \
             port_exporter (pid {pid}, user root) listens on 127.0.0.1:{port}"
        )
    );
    assert_eq!(
        lines[1],
        format!(
            "port_exporter: cannot listen on 127.0.0.1:{port}: Address already in use (os error \
             98): a socket of user root listens on 127.0.0.1:{port} (its process is not visible \
             here; `ss -Htlnp sport = :{port}` as root may name it)"
        )
    );
}
