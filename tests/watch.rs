//! `--watch`: listeners that open and close show up in the stream, in
//! network and PID namespaces of the test's own.
//!
//! As in `labels.rs`, each scenario re-runs this test binary in a role
//! (see [`role`]) as PID 1 of fresh namespaces, so that the processes the
//! watch reads are only the ones the scenario starts. The watch runs with
//! `--format json`; its lines are read on a thread and waited for with a
//! deadline, never after a guessed sleep.

use std::{
    io::{BufRead, BufReader, Read},
    net::{TcpListener, UdpSocket},
    process::{Child, Command, ExitCode, ExitStatus, Stdio},
    sync::mpsc::{self, Receiver, RecvTimeoutError},
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::util::{
    self, Bin, Netns, STRACE, UNSHARE, one_error_line,
    scenario::{Holder, Place, sh},
    tests,
};

tests![
    (
        tcp_and_udp_listeners_that_live_300ms_come_and_go,
        Netns,
        UNSHARE
    ),
    (
        a_new_process_name_closes_and_opens_and_is_escaped,
        Netns,
        UNSHARE
    ),
    (a_namespace_that_appears_is_watched, Netns, UNSHARE),
    (signals_and_a_closed_pipe_end_it_quietly, Netns, UNSHARE),
    (
        failed_scans_are_said_once_and_the_watch_goes_on,
        Netns,
        UNSHARE,
        STRACE
    ),
    usage_errors_are_one_line,
];

/// The roles of this module.
pub fn role() -> Option<ExitCode> {
    let role = std::env::var(util::ROLE).ok()?;
    match role.as_str() {
        "watch-come-and-go" => come_and_go(),
        "watch-process" => process_change(),
        "watch-netns" => namespace_appears(),
        "watch-signals" => signals(),
        "watch-failures" => failures(),
        _ => return None,
    }
    eprintln!("{role}: done");
    Some(ExitCode::SUCCESS)
}

/// Runs the scenario `role` as PID 1 of fresh network and PID namespaces
/// (and a mount namespace when `mount`).
fn scenario(role: &str, mount: bool) {
    let mut unshare = vec!["--net", "--pid", "--fork", "--mount-proc"];
    if mount {
        unshare.insert(0, "--mount");
    }
    util::run_role(&unshare, role, &format!("{role}: done"));
}

fn tcp_and_udp_listeners_that_live_300ms_come_and_go() {
    scenario("watch-come-and-go", false);
}

fn a_new_process_name_closes_and_opens_and_is_escaped() {
    scenario("watch-process", false);
}

fn a_namespace_that_appears_is_watched() {
    scenario("watch-netns", true);
}

fn signals_and_a_closed_pipe_end_it_quietly() {
    scenario("watch-signals", false);
}

/// How long any one awaited line may take: bounds a broken test only.
const LIMIT: Duration = Duration::from_secs(20);

/// A running `port_exporter --watch 100ms --format json ARGS`.
struct Watch {
    child: Child,
    lines: Receiver<String>,
    /// Every line read so far, and whether [`Watch::expect`] returned it.
    seen: Vec<(String, bool)>,
}

impl Watch {
    fn start(args: &[&str]) -> Watch {
        Watch::start_bin(Bin::new().args(args))
    }

    /// Starts `bin` with `--watch 100ms --format json` added.
    fn start_bin(bin: Bin) -> Watch {
        let mut child = bin
            .args(["--watch", "100ms", "--format", "json"])
            .command()
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start port_exporter --watch");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Watch {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// The first line not returned yet that is an event `event`
    /// matching `wanted`, reading more lines as needed (lines of one scan
    /// come in port order, not in the order the test awaits them); fails
    /// the test after [`LIMIT`].
    #[track_caller]
    fn expect(&mut self, event: &str, what: &str, wanted: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + LIMIT;
        let mut next = 0;
        loop {
            while next < self.seen.len() {
                let (line, returned) = &mut self.seen[next];
                next += 1;
                let value = check_line(line);
                if !*returned && value["event"] == event && wanted(&value) {
                    *returned = true;
                    return value;
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push((line, false)),
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "no {event} event of {what} within {LIMIT:?}; seen:\n{:#?}",
                        self.seen
                    )
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!(
                        "the watch ended before a {event} event of {what}; seen:\n{:#?}",
                        self.seen
                    )
                }
            }
        }
    }

    /// The pid of port_exporter: the child, or under strace the child's.
    fn pid(&self) -> u32 {
        let child = self.child.id();
        let comm = std::fs::read_to_string(format!("/proc/{child}/comm")).unwrap();
        if comm.trim_end() != "strace" {
            return child;
        }
        let children = format!("/proc/{child}/task/{child}/children");
        util::wait_until("strace's child", LIMIT, || {
            let text = std::fs::read_to_string(&children).unwrap();
            text.split_whitespace().next().map(|p| p.parse().unwrap())
        })
    }

    /// The last line read.
    fn last(&self) -> &str {
        &self.seen.last().unwrap().0
    }

    /// Stops it with `signal` and returns its exit status, every line it
    /// printed, and its stderr.
    fn stop(mut self, signal: nix::sys::signal::Signal) -> (ExitStatus, Vec<String>, String) {
        let pid = nix::unistd::Pid::from_raw(self.pid() as i32);
        nix::sys::signal::kill(pid, signal).unwrap();
        let status = self.child.wait().unwrap();
        let mut all: Vec<String> = self.seen.drain(..).map(|(line, _)| line).collect();
        all.extend(self.lines.iter());
        all.iter().for_each(|line| {
            check_line(line);
        });
        let mut stderr = String::new();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        (status, all, stderr)
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Parses one JSON line and checks what every event carries: its name, a
/// time in RFC 3339 UTC with milliseconds, and a row's keys.
#[track_caller]
fn check_line(line: &str) -> Value {
    let value: Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    assert!(
        ["listening", "open", "close"].contains(&value["event"].as_str().unwrap_or("")),
        "{line}"
    );
    let time = value["time"].as_str().expect(line);
    assert!(
        time.len() == 24 && time.as_bytes()[10] == b'T' && time.ends_with('Z'),
        "{line}"
    );
    for key in [
        "protocol", "port", "address", "scope", "user", "uid", "process", "pid",
    ] {
        assert!(value.get(key).is_some(), "no {key}: {line}");
    }
    assert!(!line.chars().any(|c| c.is_control()), "{line}");
    value
}

/// Whether an event is of the listener `protocol` `port`.
fn is(value: &Value, protocol: &str, port: u16) -> bool {
    value["protocol"] == protocol && value["port"] == port
}

/// This process's command name, as the watch names it.
fn own_name() -> String {
    std::fs::read_to_string("/proc/self/comm")
        .unwrap()
        .trim_end()
        .to_string()
}

/// TCP and UDP listeners that live 300 ms, three times over, each seen
/// opening and closing, with this process as their holder; the listener
/// that stays is listed once and never closes.
fn come_and_go() {
    sh("ip", &["link", "set", "lo", "up"]);
    let stays = TcpListener::bind("127.0.0.1:0").unwrap();
    let stays = stays.local_addr().unwrap().port();
    for method in ["netlink", "procfs"] {
        come_and_go_with(method, stays);
    }
    ports_and_exclude();
}

/// [`come_and_go`] with `--method METHOD`.
fn come_and_go_with(method: &str, stays: u16) {
    let mut watch = Watch::start(&["--protocol", "tcp,udp", "--method", method]);
    let listed = watch.expect("listening", "the listener that stays", |v| {
        is(v, "tcp", stays)
    });
    assert_eq!(listed["process"], own_name(), "{listed}");
    assert_eq!(listed["pid"], 1, "{listed}");
    assert_eq!(listed["scope"], "loopback", "{listed}");
    let mut expected = Vec::new();
    for round in 0..3 {
        let tcp = TcpListener::bind("[::]:0").unwrap();
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let (tcp_port, udp_port) = (
            tcp.local_addr().unwrap().port(),
            udp.local_addr().unwrap().port(),
        );
        std::thread::sleep(Duration::from_millis(300));
        drop((tcp, udp));
        for (protocol, port, address) in [("tcp", tcp_port, "::"), ("udp", udp_port, "127.0.0.1")] {
            let what = format!("{protocol} {port} (round {round})");
            let open = watch.expect("open", &what, |v| is(v, protocol, port));
            assert_eq!(open["address"], address, "{open}");
            assert_eq!(open["process"], own_name(), "{open}");
            expected.push(format!("open {protocol} {port}"));
            expected.push(format!("close {protocol} {port}"));
        }
        for (protocol, port) in [("tcp", tcp_port), ("udp", udp_port)] {
            let what = format!("{protocol} {port} (round {round})");
            watch.expect("close", &what, |v| is(v, protocol, port));
        }
    }
    let (status, all, stderr) = watch.stop(nix::sys::signal::Signal::SIGTERM);
    assert!(status.success(), "{status}: {stderr}");
    assert_eq!(stderr, "");
    // Exactly the listing and the events of the rounds, each once.
    let mut events: Vec<String> = all
        .iter()
        .map(|line| {
            let v = check_line(line);
            format!(
                "{} {} {}",
                v["event"].as_str().unwrap(),
                v["protocol"].as_str().unwrap(),
                v["port"]
            )
        })
        .collect();
    expected.push(format!("listening tcp {stays}"));
    events.sort();
    expected.sort();
    assert_eq!(events, expected);
}

/// `--ports` and `--exclude` apply to every scan: listeners on other
/// ports never show.
fn ports_and_exclude() {
    let sentinel = TcpListener::bind("127.0.0.1:7010").unwrap();
    let mut watch = Watch::start(&["--ports", "7000-7010", "--exclude", "7005"]);
    watch.expect("listening", "7010", |v| is(v, "tcp", 7010));
    let listeners: Vec<TcpListener> = [7005, 7011, 7000]
        .map(|port| TcpListener::bind(("127.0.0.1", port)).unwrap())
        .into();
    watch.expect("open", "7000", |v| is(v, "tcp", 7000));
    drop(listeners);
    watch.expect("close", "7000", |v| is(v, "tcp", 7000));
    drop(sentinel);
    watch.expect("close", "7010", |v| is(v, "tcp", 7010));
    let (status, all, stderr) = watch.stop(nix::sys::signal::Signal::SIGTERM);
    assert!(status.success(), "{status}: {stderr}");
    assert_eq!(all.len(), 4, "{all:#?}");
}

/// A holder whose command name changes while it keeps its listener: the
/// watch closes the old and opens the new, and a name with bidirectional
/// and zero-width characters is escaped in JSON and replaced in tables.
fn process_change() {
    sh("ip", &["link", "set", "lo", "up"]);
    let mut holder = Holder::start("alpha", Place::Here, "tcp 127.0.0.1 0");
    let port = holder.opened[0].1;
    let mut watch = Watch::start(&[]);
    let listed = watch.expect("listening", "alpha", |v| is(v, "tcp", port));
    assert_eq!(listed["process"], "alpha", "{listed}");
    let pid = listed["pid"].clone();

    // U+202E RIGHT-TO-LEFT OVERRIDE and U+200B ZERO WIDTH SPACE: 11 bytes,
    // within comm's 15.
    let evil = "beta\u{202e}\u{200b}x";
    holder.tell(&format!("name {evil}"));
    let comm = format!("/proc/{}/comm", holder.pid);
    util::wait_until("the holder's new name", LIMIT, || {
        (std::fs::read_to_string(&comm).unwrap() == format!("{evil}\n")).then_some(())
    });
    let closed = watch.expect("close", "alpha", |v| is(v, "tcp", port));
    assert_eq!(closed["process"], "alpha", "{closed}");
    let opened = watch.expect("open", "the renamed holder", |v| is(v, "tcp", port));
    assert_eq!(opened["process"], evil, "{opened}");
    assert_eq!(opened["pid"], pid, "{opened}");
    let raw = watch.last();
    assert!(
        raw.contains(r#""process":"beta\u202e\u200bx""#),
        "not escaped: {raw:?}"
    );

    // Tables, one-shot and watched: the characters become `?`.
    let out = Bin::new().args(["--format", "table"]).output();
    let table = util::stdout_of(&out);
    assert!(table.contains(" beta??x "), "{table:?}");
    let out = Bin::new().args(["--format", "json"]).output();
    let json = util::stdout_of(&out);
    assert!(
        json.contains(r#""process":"beta\u202e\u200bx""#),
        "{json:?}"
    );
    let mut table_watch = Bin::new()
        .args(["--watch", "100ms"])
        .command()
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(table_watch.stdout.take().unwrap()).lines();
    let heading = lines.next().unwrap().unwrap();
    assert!(
        heading.starts_with("TIME ") && heading.contains(" PROTOCOL "),
        "{heading}"
    );
    let listed = lines.next().unwrap().unwrap();
    assert!(
        listed.contains("  =  tcp ") && listed.contains(" beta??x "),
        "{listed:?}"
    );
    for text in [&table, &json, &listed] {
        assert!(
            !text.contains('\u{202e}') && !text.contains('\u{200b}'),
            "{text:?}"
        );
    }
    drop(lines);
    table_watch.kill().unwrap();
    table_watch.wait().unwrap();

    // The socket handed to a child while the holder lives on, named and
    // unchanged: seen within the second the watch trusts what it knows.
    holder.tell("hand heir");
    let closed = watch.expect("close", "the renamed holder", |v| is(v, "tcp", port));
    assert_eq!(closed["process"], evil, "{closed}");
    let opened = watch.expect("open", "the heir", |v| is(v, "tcp", port));
    assert_eq!(opened["process"], "heir", "{opened}");
    assert_ne!(opened["pid"], pid, "{opened}");
    assert_eq!(
        std::fs::read_to_string(&comm).unwrap(),
        format!("{evil}\n"),
        "the holder lives on"
    );

    // The holder exits, and its heir with it: the listener closes.
    drop(holder);
    let closed = watch.expect("close", "the heir", |v| is(v, "tcp", port));
    assert_eq!(closed["process"], "heir", "{closed}");
    let (status, _, stderr) = watch.stop(nix::sys::signal::Signal::SIGINT);
    assert!(status.success(), "{status}: {stderr}");
}

/// `--netns all`: a namespace made while the watch runs, named by `ip
/// netns` or not, is seen with its listeners, and seen to go.
fn namespace_appears() {
    sh("mount", &["-t", "tmpfs", "tmpfs", "/run"]);
    sh("ip", &["link", "set", "lo", "up"]);
    let host = Holder::start("w-host", Place::Here, "tcp 127.0.0.1 0");
    let mut watch = Watch::start(&["--netns", "all", "--protocol", "tcp,udp"]);
    let listed = watch.expect("listening", "the host's listener", |v| {
        v["process"] == "w-host"
    });
    assert_eq!(listed["netns"], "host", "{listed}");

    sh("ip", &["netns", "add", "late"]);
    let late = Holder::start(
        "w-late",
        Place::Named("late"),
        "tcp 127.0.0.1 22;udp ::1 53",
    );
    for (protocol, port) in [("tcp", 22), ("udp", 53)] {
        let open = watch.expect("open", "late's listener", |v| is(v, protocol, port));
        assert_eq!(open["netns"], "late", "{open}");
        assert_eq!(open["process"], "w-late", "{open}");
    }
    let own = Holder::start("w-own", Place::Own, "tcp 0.0.0.0 8080");
    let open = watch.expect("open", "an unnamed namespace's listener", |v| {
        is(v, "tcp", 8080)
    });
    let label = open["netns"].as_str().unwrap().to_string();
    assert!(label.starts_with("net:["), "{open}");
    drop(own);
    let closed = watch.expect("close", "the unnamed namespace's listener", |v| {
        is(v, "tcp", 8080)
    });
    assert_eq!(closed["netns"], label.as_str(), "{closed}");
    drop(late);
    for (protocol, port) in [("tcp", 22), ("udp", 53)] {
        let closed = watch.expect("close", "late's listener", |v| is(v, protocol, port));
        assert_eq!(closed["netns"], "late", "{closed}");
    }
    let (status, all, stderr) = watch.stop(nix::sys::signal::Signal::SIGTERM);
    assert!(status.success(), "{status}: {stderr}");
    assert!(
        all.iter().filter(|l| l.contains("w-host")).count() == 1,
        "the host's listener changed: {all:#?}"
    );
    drop(host);
}

/// SIGTERM and SIGINT end the watch with status 0 and nothing on stderr,
/// and so does a reader that goes away (`| head`), even with nothing
/// changing.
fn signals() {
    sh("ip", &["link", "set", "lo", "up"]);
    let stays = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = stays.local_addr().unwrap().port();
    for signal in [
        nix::sys::signal::Signal::SIGTERM,
        nix::sys::signal::Signal::SIGINT,
    ] {
        let mut watch = Watch::start(&[]);
        watch.expect("listening", "the listener", |v| is(v, "tcp", port));
        let (status, all, stderr) = watch.stop(signal);
        assert_eq!(status.code(), Some(0), "{signal}: {stderr}");
        assert_eq!(stderr, "", "{signal}");
        assert_eq!(all.len(), 1, "{signal}: {all:?}");
    }
    // Scans every millisecond, overrunning: signals are heard all the same.
    let mut busy = Bin::new()
        .args(["--watch", "1ms", "--format", "json"])
        .command()
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Kept open until it stops: a closed pipe would stop it too.
    let mut reader = BufReader::new(busy.stdout.take().unwrap());
    let mut first = String::new();
    reader.read_line(&mut first).unwrap();
    check_line(first.trim_end());
    let pid = nix::unistd::Pid::from_raw(busy.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = util::wait_until("the busy watch to stop", LIMIT, || busy.try_wait().unwrap());
    assert_eq!(status.code(), Some(0), "{status}");
    drop(reader);

    // `| head -n 2`, as a shell runs it; the table is the default there.
    // Nothing changes afterwards: the watch must notice the reader gone.
    let command = format!(
        "set -o pipefail; timeout 20 {} --watch 10ms | head -n 2",
        util::bin::path().display()
    );
    let out = Command::new("bash")
        .args(["-c", &command])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{}: {stdout}", out.status);
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
    assert!(stdout.starts_with("TIME "), "{stdout}");
    assert!(stdout.contains(&format!(" {port}  127.0.0.1 ")), "{stdout}");
}

fn failed_scans_are_said_once_and_the_watch_goes_on() {
    scenario("watch-failures", false);
}

/// Netlink dumps that fail for a while (strace makes sendto fail from the
/// third call to the twelfth): the failure is said once, the watch goes on,
/// and a listener opened meanwhile is seen when scans work again.
fn failures() {
    sh("ip", &["link", "set", "lo", "up"]);
    let stays = TcpListener::bind("127.0.0.1:0").unwrap();
    let stays = stays.local_addr().unwrap().port();
    let mut watch = Watch::start_bin(
        Bin::new()
            .inject("sendto:error=ENOBUFS:when=3..12")
            .args(["--method", "netlink"]),
    );
    watch.expect("listening", "the listener", |v| is(v, "tcp", stays));
    let late = TcpListener::bind("127.0.0.1:0").unwrap();
    let late = late.local_addr().unwrap().port();
    watch.expect("open", "the listener opened meanwhile", |v| {
        is(v, "tcp", late)
    });
    let (status, all, stderr) = watch.stop(nix::sys::signal::Signal::SIGTERM);
    assert!(status.success(), "{status}: {stderr}");
    assert_eq!(all.len(), 2, "{all:#?}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("port_exporter: warning: a scan failed")
            && stderr.contains("No buffer space available"),
        "{stderr}"
    );
}

fn usage_errors_are_one_line() {
    for (args, names) in [
        (&["--watch", "0"][..], "'0'"),
        (&["--watch", "junk"], "'junk'"),
        (&["--watch", "100"], "'100'"),
        (&["--watch", "2s", "--output", "x.prom"], "--output"),
        (&["--watch", "--serve", "127.0.0.1:0"], "--serve"),
        (&["--serve", "--watch"], "--serve"),
        (&["--watch", "--format", "prometheus"], "--format"),
        (&["--watch", "--method", "bind"], "--method bind"),
        (&["--watch", "--generate", "man"], "--generate"),
    ] {
        let out = util::run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}");
        let line = one_error_line(&out);
        assert!(line.contains(names), "{args:?}: {line}");
    }
}
