//! Who listens, and where: --protocol, --labels and --format against
//! `ss -Htulnpe`, in network and PID namespaces of the test's own, with
//! processes of known names run by two users.
//!
//! The test re-runs this test binary in roles (see [`role`]): a *scenario*
//! as PID 1 of a fresh network and PID namespace (`unshare -n -p -f
//! --mount-proc`), so that `/proc` holds only the processes it starts, and
//! the kit's holders (`util::scenario`), some of them as `nobody`. The
//! scenario then compares every view of port_exporter with what `ss` says.

use std::{
    collections::BTreeMap,
    process::{Command, ExitCode, Stdio},
};

use crate::util::{
    self, Bin, Netns, PROMTOOL, SETPRIV, UNSHARE,
    scenario::{self, Holder, Place, sh},
    stdout_of, tests,
};

tests![
    (
        every_view_matches_ss_for_both_users_and_methods,
        Netns,
        UNSHARE,
        SETPRIV,
        PROMTOOL
    ),
    (
        a_scheduled_run_with_unattributed_listeners_is_silent,
        Netns,
        UNSHARE,
        SETPRIV
    ),
];

/// Runs the role this process was started for, if any.
pub fn role() -> Option<ExitCode> {
    match std::env::var(util::ROLE).ok()?.as_str() {
        "scenario" => {
            every_view();
            Some(ExitCode::SUCCESS)
        }
        "quiet" => {
            quiet();
            Some(ExitCode::SUCCESS)
        }
        other => panic!("unknown role {other}"),
    }
}

fn every_view_matches_ss_for_both_users_and_methods() {
    util::run_role(
        &["--net", "--pid", "--fork", "--mount-proc"],
        "scenario",
        "scenario: all views agree",
    );
}

fn a_scheduled_run_with_unattributed_listeners_is_silent() {
    util::run_role(
        &["--net", "--pid", "--fork", "--mount-proc"],
        "quiet",
        "quiet: silent, counted, explained with --verbose",
    );
}

/// The cron job of the README with `--labels scope,process`, as PID 1 of
/// fresh network and PID namespaces, with one listener held by root that
/// the run cannot attribute: as nobody (root's descriptors are closed to
/// it), and as root in a PID namespace below this one (the holder is not
/// in its /proc, as a socket of the kernel or of another container is
/// not). Each run exits 0, says nothing, and counts the listener in
/// port_exporter_unattributed_listeners; `--verbose` says why, once, in
/// the words of the view.
fn quiet() {
    use std::os::unix::fs::PermissionsExt;
    sh("ip", &["link", "set", "lo", "up"]);
    let holder = Holder::start("root-daemon", Place::Here, "tcp 0.0.0.0 0");
    let port = holder.opened[0].1;
    let dir = util::open_tempdir();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let file = dir.path().join("open_ports.prom");
    let cron = ["--labels", "scope,process", "-o", file.to_str().unwrap()];
    // As root, in a PID namespace of its own below this one.
    let below = |args: &[&str]| {
        Command::new("unshare")
            .args(["--pid", "--fork", "--mount-proc"])
            .arg(util::bin::path())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    for how in ["as nobody", "in another PID namespace"] {
        let out = match how {
            "as nobody" => Bin::new().nobody().args(cron).output(),
            _ => below(&cron),
        };
        let stderr = util::stderr_of(&out);
        assert!(out.status.success(), "{how}: {stderr}");
        assert_eq!(stderr, "", "{how}: a working scheduled run said something");
        let text = std::fs::read_to_string(&file).unwrap();
        assert_eq!(
            util::value_of(&text, "port_exporter_unattributed_listeners"),
            1.0,
            "{how}: {text}"
        );
        assert!(
            text.contains(&format!(
                "instance_open_ports{{port=\"{port}\",scope=\"any\",process=\"\"}} 1"
            )),
            "{how}: {text}"
        );
        std::fs::remove_file(&file).unwrap();
    }

    // --verbose says it once, in the words of each view.
    let one_line = |out: &std::process::Output, starts: &str| {
        assert!(out.status.success(), "{}", util::stderr_of(out));
        let stderr = util::stderr_of(out);
        let said: Vec<&str> = stderr
            .lines()
            .filter(|l| l.contains("1 listener has"))
            .collect();
        assert_eq!(said.len(), 1, "{stderr}");
        assert!(
            said[0].starts_with(&format!("port_exporter: 1 listener has {starts}: ")),
            "{stderr}"
        );
        said[0].to_string()
    };
    let denied = one_line(
        &Bin::new()
            .nobody()
            .args(["--labels", "process", "--verbose"])
            .output(),
        "process=\"\"",
    );
    assert!(
        denied.contains("processes of other users could not be read; run as root")
            && denied.ends_with("to attribute it"),
        "{denied}"
    );
    let out = below(&["--format", "table", "--verbose"]);
    let invisible = one_line(&out, "no process (PROCESS -)");
    assert!(
        invisible.contains("no process visible here holds it (a socket of the kernel"),
        "{invisible}"
    );
    let row = stdout_of(&out)
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(&port.to_string()))
        .map(str::to_string)
        .unwrap();
    assert_eq!(
        row.split_whitespace().rev().take(2).collect::<Vec<_>>(),
        ["-", "-"],
        "{row}"
    );
    let out = below(&["--format", "json", "--verbose"]);
    one_line(&out, "\"process\":null");
    let rows = scenario::json_rows(&stdout_of(&out));
    let row = rows.iter().find(|r| r.port == port).unwrap();
    assert_eq!((&row.process, row.pid), (&None, None), "{row:?}");

    drop(holder);
    util::bin::remove_shared_bin();
    eprintln!("quiet: silent, counted, explained with --verbose");
}

/// One listener as the oracle or port_exporter sees it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Row {
    protocol: String,
    port: u16,
    address: String,
    uid: u32,
    process: Option<String>,
}

/// The listeners `ss -Htulnpe` lists, with the name of the lowest pid
/// holding each.
fn oracle() -> Vec<Row> {
    let mut rows: Vec<Row> = util::ss(&["-tulnpe"])
        .iter()
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (address, port) = util::ss_local(fields[4]);
            let uid = fields
                .iter()
                .find_map(|f| f.strip_prefix("uid:"))
                .map_or(0, |u| u.parse().unwrap());
            let process = util::ss_lowest_process(line);
            Row {
                protocol: fields[0].to_string(),
                port,
                address,
                uid,
                process,
            }
        })
        .collect();
    rows.sort();
    rows
}

/// The rows of port_exporter's JSON, and each row's scope and user.
fn json_rows(json: &str) -> (Vec<Row>, BTreeMap<String, String>, BTreeMap<u32, String>) {
    let mut rows = Vec::new();
    let mut scopes = BTreeMap::new();
    let mut users = BTreeMap::new();
    for row in scenario::json_rows(json) {
        assert_eq!(
            row.pid.is_none(),
            row.process.is_none(),
            "pid and process disagree: {row:?}"
        );
        scopes.insert(row.address.clone(), row.scope);
        users.insert(row.uid, row.user);
        rows.push(Row {
            protocol: row.protocol,
            port: row.port,
            address: row.address,
            uid: row.uid,
            process: row.process,
        });
    }
    rows.sort();
    (rows, scopes, users)
}

/// The scenario, as PID 1 of fresh network and PID namespaces.
fn every_view() {
    sh("ip", &["link", "set", "lo", "up"]);
    sh(
        "ip",
        &[
            "link", "add", "veth0", "type", "veth", "peer", "name", "veth1",
        ],
    );
    sh("ip", &["link", "set", "veth0", "up"]);
    sh("ip", &["link", "set", "veth1", "up"]);
    sh("ip", &["addr", "add", "198.51.100.7/24", "dev", "veth0"]);
    sh(
        "ip",
        &["addr", "add", "fe80::1/64", "dev", "veth0", "nodad"],
    );
    sh(
        "ip",
        &["addr", "add", "2001:db8::7/64", "dev", "veth0", "nodad"],
    );

    let web = Holder::start(
        "web-root",
        Place::Here,
        "tcp 0.0.0.0 0;tcp :: 0 dual;tcp :: 0 v6only;tcp 127.0.0.1 0;tcp 127.0.0.2 0;\
         tcp ::1 0;tcp 198.51.100.7 0;tcp 2001:db8::7 0;tcp fe80::1%veth0 0;\
         udp 0.0.0.0 0;udp :: 0 v6only;udp 127.0.0.1 0;udp ::1 0;\
         tcp 0.0.0.0 0 dev=veth0;tcp-bound 127.0.0.1 0;tcp 127.0.0.1 0 share",
    );
    let server = web.opened[3].1;
    let dns = Holder::start(
        "dns-nobody",
        Place::Nobody,
        &format!(
            "udp 127.0.0.53 5353;tcp 127.0.0.53 5353;udp 0.0.0.0 0;udp-connected 127.0.0.1 {};\
             tcp-connection 127.0.0.1 {server}",
            web.opened[11].1
        ),
    );
    // A SO_REUSEPORT group across two processes of two names, both root.
    let a = Holder::start("group-a", Place::Here, "tcp 127.0.0.9 0 reuseport");
    let b = Holder::start(
        "group-b",
        Place::Here,
        &format!("tcp 127.0.0.9 {} reuseport", a.opened[0].1),
    );
    // A root activator (the lower pid) that hands its socket to a service
    // running as nobody: as root the activator; as nobody, whose reading
    // of root's processes is refused, no answer rather than the service.
    let activator = Holder::start("activator", Place::Here, "tcp 127.0.0.1 0 share-nobody");
    // What must not count.
    let bound_only = web.opened[14].1;
    let connected = dns.opened[3].1;
    let client = dns.opened[4].1;

    let expected = oracle();
    for port in [bound_only, connected, client] {
        assert!(
            expected.iter().all(|r| r.port != port),
            "ss lists a port that must not count: {port}"
        );
    }
    assert!(
        !expected
            .iter()
            .any(|r| r.process.as_deref() == Some("web-root-w")),
        "the shared listener's lowest pid is the master"
    );
    assert!(expected.len() >= 20, "{expected:#?}");
    let both = ["--protocol", "tcp,udp"];

    for method in ["netlink", "procfs"] {
        let json = stdout_of(
            &Bin::new()
                .args(both)
                .args(["--format", "json", "--method", method])
                .output(),
        );
        let (rows, scopes, users) = json_rows(&json);
        let wanted: Vec<Row> = if method == "procfs" {
            // procfs cannot see a device binding (netlink can).
            let mut w: Vec<Row> = expected
                .iter()
                .cloned()
                .map(|mut r| {
                    if r.address == "0.0.0.0%veth0" {
                        r.address = "0.0.0.0".into();
                    }
                    r
                })
                .collect();
            w.sort();
            w
        } else {
            expected.clone()
        };
        assert_eq!(rows, wanted, "{method}: JSON vs ss");
        for (address, scope) in [
            ("0.0.0.0", "any"),
            ("::", "any"),
            ("127.0.0.2", "loopback"),
            ("::1", "loopback"),
            ("198.51.100.7", "specific"),
            ("2001:db8::7", "specific"),
            ("fe80::1%veth0", "link-local"),
        ] {
            assert_eq!(
                scopes.get(address).map(String::as_str),
                Some(scope),
                "{address}"
            );
        }
        assert_eq!(users.get(&0).map(String::as_str), Some("root"));
        assert_eq!(users.get(&65534).map(String::as_str), Some("nobody"));

        // The exposition: one sample per distinct label combination, the
        // same listeners as the JSON.
        let all = "protocol,address,scope,user,process";
        let text = stdout_of(
            &Bin::new()
                .args(both)
                .args(["--labels", all, "--method", method])
                .output(),
        );
        util::assert_promtool_clean(&text, &format!("{method} --labels {all}"));
        let mut samples: Vec<String> = text
            .lines()
            .filter(|l| l.starts_with("instance_open_ports{"))
            .map(str::to_string)
            .collect();
        let mut from_rows: Vec<String> = rows
            .iter()
            .map(|r| {
                format!(
                    "instance_open_ports{{port=\"{}\",protocol=\"{}\",address=\"{}\",scope=\"{}\",user=\"{}\",process=\"{}\"}} 1",
                    r.port,
                    r.protocol,
                    r.address,
                    scopes[&r.address],
                    users[&r.uid],
                    r.process.as_deref().unwrap_or("")
                )
            })
            .collect();
        from_rows.dedup();
        let mut sorted = samples.clone();
        sorted.sort_by_key(|l| port_of_sample(l));
        assert_eq!(samples, sorted, "{method}: samples not sorted by port");
        samples.sort();
        from_rows.sort();
        from_rows.dedup();
        assert_eq!(samples, from_rows, "{method}: exposition vs JSON");
        assert!(
            text.contains("\nport_exporter_unattributed_listeners 0\n"),
            "{method}: {text}"
        );

        // Protocol alone: one sample per port and protocol.
        let text = stdout_of(&Bin::new().args(both).args(["--method", method]).output());
        let mut pairs: Vec<(u16, String)> =
            rows.iter().map(|r| (r.port, r.protocol.clone())).collect();
        pairs.sort();
        pairs.dedup();
        let lines: Vec<String> = pairs
            .iter()
            .map(|(p, proto)| format!("instance_open_ports{{port=\"{p}\",protocol=\"{proto}\"}} 1"))
            .collect();
        assert_eq!(
            util::port_lines(&text),
            lines,
            "{method}: --protocol tcp,udp"
        );
    }

    // As nobody: the same listeners; process only for nobody's own
    // sockets, never a wrong name.
    let json = stdout_of(
        &Bin::new()
            .nobody()
            .args(both)
            .args(["--format", "json"])
            .output(),
    );
    let (rows, _, _) = json_rows(&json);
    let wanted: Vec<Row> = expected
        .iter()
        .cloned()
        .map(|mut r| {
            if r.uid != 65534 {
                r.process = None;
            }
            r
        })
        .collect();
    assert_eq!(rows, wanted, "as nobody: JSON vs ss");
    let out = Bin::new()
        .nobody()
        .args(["--labels", "process", "--verbose"])
        .output();
    let text = stdout_of(&out);
    let stderr = util::stderr_of(&out);
    assert_eq!(
        stderr.lines().filter(|l| l.contains("process=")).count(),
        1,
        "{stderr}"
    );
    assert!(
        stderr.contains("process=\"\"") && stderr.contains("run as root"),
        "{stderr}"
    );
    let unattributed = wanted
        .iter()
        .filter(|r| r.protocol == "tcp" && r.process.is_none())
        .count();
    assert_eq!(
        util::value_of(&text, "port_exporter_unattributed_listeners"),
        unattributed as f64
    );

    // The table: a heading and one aligned row per listener.
    let table = stdout_of(&Bin::new().args(both).args(["--format", "table"]).output());
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("PROTOCOL") && lines[0].ends_with("PID"),
        "{table}"
    );
    assert_eq!(lines.len(), expected.len() + 1, "{table}");
    let column = lines[0].find("ADDRESS").unwrap();
    assert!(
        lines
            .iter()
            .all(|l| l.as_bytes()[column - 1] == b' ' && l.as_bytes()[column] != b' '),
        "{table}"
    );

    drop((web, dns, a, b, activator));
    util::bin::remove_shared_bin();
    eprintln!("scenario: all views agree ({} listeners)", expected.len());
}

/// The port of a sample line.
fn port_of_sample(line: &str) -> u16 {
    line.split("port=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}
