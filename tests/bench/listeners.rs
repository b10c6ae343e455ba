//! The listener benchmarks: who holds the ports (`--labels process` on a
//! host with 1,000 processes of 100 descriptors each, against `ss
//! -Htlnp`), peak memory with 60,000 listeners (with and without labels),
//! and what the netlink scan costs when its table is dumped twice.
//!
//! Everything runs in a network namespace of the benchmark's own, so the
//! listeners are the ones it opened; the processes are the host's plus the
//! ones it started. Helper processes are this bench executable started
//! again with [`ROLE_ENV`] set, and stop when their stdin closes.

use std::{
    env,
    io::{self, BufRead, BufReader, Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener},
    os::unix::process::CommandExt,
    path::Path,
    process::{Child, Command, Stdio},
};

use port_exporter::scan::netlink;

use crate::{
    oneshot,
    stats::{Report, Samples, kib, ratio, secs, time_calls},
    util,
};

/// Set to `fill N` or `listen FIRST COUNT`, this variable turns the bench
/// executable into a helper: a process holding N descriptors (pipes and
/// /dev/null), or one holding COUNT listeners on 127.0.0.1 from port FIRST.
pub const ROLE_ENV: &str = "PORT_EXPORTER_BENCH_ROLE";

/// Processes and descriptors of the `process` figure.
const PROCESSES: usize = 1_000;
const FDS_EACH: usize = 100;
/// Listeners of the `process` figure, in processes started after the others.
const LISTENERS: usize = 20;
/// Paired runs of the `process` figure.
const PROCESS_RUNS: usize = 60;

/// Listeners of the memory figures.
const MANY: usize = 60_000;
const PER_HOLDER: usize = 15_000;
const RSS_RUNS: usize = 5;

/// Listeners of the churn-fix cost figure, and calls timed.
const CHURN_LISTENERS: usize = 1_000;
const CHURN_RUNS: usize = 500;

/// Runs a helper role; returns false when this process has none.
pub fn helper() -> bool {
    let Some(role) = env::var_os(ROLE_ENV) else {
        return false;
    };
    let role = role.to_string_lossy().into_owned();
    let words: Vec<&str> = role.split_whitespace().collect();
    let mut kept_files = Vec::new();
    let mut kept_listeners = Vec::new();
    match words[..] {
        ["fill", n] => {
            let n: usize = n.parse().unwrap();
            while kept_files.len() < n {
                let (r, w) = io::pipe().unwrap();
                kept_files.push(Box::new(r) as Box<dyn Send>);
                kept_files.push(Box::new(w));
                kept_files.push(Box::new(std::fs::File::open("/dev/null").unwrap()));
            }
        }
        ["listen", first, count] => {
            let (first, count): (u16, u16) = (first.parse().unwrap(), count.parse().unwrap());
            for port in first..first + count {
                kept_listeners.push(
                    TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).unwrap(),
                );
            }
        }
        _ => panic!("unknown role {role}"),
    }
    println!("ready");
    io::stdout().flush().unwrap();
    let _ = io::stdin().read_to_end(&mut Vec::new());
    drop((kept_files, kept_listeners));
    true
}

/// Helpers, stopped (stdin closed, killed, reaped) when dropped.
pub struct Helpers(Vec<Child>);

impl Helpers {
    /// Starts `count` helpers of `role`, as `uid` if given, and waits until
    /// each is ready.
    pub fn start(count: usize, role: impl Fn(usize) -> String, uid: Option<u32>) -> Helpers {
        let exe = env::current_exe().unwrap();
        let mut helpers = Helpers(Vec::new());
        for i in 0..count {
            let mut command = Command::new(&exe);
            command
                .env(ROLE_ENV, role(i))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped());
            if let Some(uid) = uid {
                command.uid(uid).gid(uid);
            }
            helpers
                .0
                .push(command.spawn().expect("cannot start a helper"));
        }
        for child in &mut helpers.0 {
            let mut line = String::new();
            BufReader::new(child.stdout.take().unwrap())
                .read_line(&mut line)
                .unwrap();
            assert_eq!(line, "ready\n", "a helper failed");
        }
        helpers
    }

    fn pids(&self) -> impl Iterator<Item = u32> {
        self.0.iter().map(Child::id)
    }
}

impl Drop for Helpers {
    fn drop(&mut self) {
        for child in &mut self.0 {
            drop(child.stdin.take());
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `--labels process` with 1,000 processes of nobody holding 100
/// descriptors each, the listeners held by root processes started after
/// them (so stopping early does not help), against `ss -Htlnp`. Then the
/// same with root's processes: nothing to skip, the worst case.
pub fn process(report: &mut Report, binary: &Path) {
    util::in_netns(|| {
        for (who, uid) in [("nobody's", Some(65534)), ("root's", None)] {
            let (fillers, holders) = loop {
                let fillers = Helpers::start(PROCESSES, |_| format!("fill {FDS_EACH}"), uid);
                let holders = Helpers::start(
                    LISTENERS / 5,
                    |i| format!("listen {} 5", 20_000 + 10 * i),
                    None,
                );
                // Pids that wrapped around pid_max would put holders
                // before fillers: the walk would stop early. Again, then.
                if holders.pids().min() > fillers.pids().max() {
                    break (fillers, holders);
                }
            };
            let out = Command::new(binary)
                .args(["--labels", "process"])
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                text.contains("\nport_exporter_unattributed_listeners 0\n")
                    && text.matches(",process=\"scan-").count() == LISTENERS,
                "not every listener was attributed:\n{text}"
            );
            let ss = oneshot::tool("ss");
            let pair = oneshot::pair(
                (binary, &["--labels", "process"]),
                (&ss, &["-Htlnp"]),
                PROCESS_RUNS,
            );
            let phase = format!("{PROCESSES} of {who} procs x {FDS_EACH} fds");
            report.info(
                &format!("--labels process, {phase}"),
                secs(pair.a.median()),
                pair.a.spread(secs),
            );
            report.info(
                &format!("ss -Htlnp, {phase}"),
                secs(pair.b.median()),
                pair.b.spread(secs),
            );
            let r = pair.a.median() / pair.b.median();
            let name = format!("--labels process / ss -Htlnp, {who}");
            // Both carry the target: root's is the worst case (every
            // process is the owners', the holders come last).
            report.at_most(
                &name,
                (r, ratio(r)),
                (0.5, "≤ 0.50×"),
                format!("per-round {}", ratio(pair.per_round.median())),
            );
            drop((fillers, holders));
        }
    });
}

/// Peak RSS of one-shot runs with 60,000 listeners: without labels (≤ 5
/// MiB), with every label (≤ 8 MiB), and `ss -Htln` for context.
pub fn rss(report: &mut Report, binary: &Path) {
    if !oneshot::can_measure_rss() {
        report.info(
            "peak RSS, 60k listeners: SKIPPED",
            "-".into(),
            "needs GNU time".into(),
        );
        return;
    }
    util::in_netns(|| {
        let _holders = Helpers::start(
            MANY / PER_HOLDER,
            |i| format!("listen {} {PER_HOLDER}", 1024 + i * PER_HOLDER),
            None,
        );
        assert_eq!(
            netlink::listening_ports().unwrap().len(),
            MANY,
            "the listeners are not all there"
        );
        let every = [
            "--protocol",
            "tcp,udp",
            "--labels",
            "protocol,address,scope,user,process",
        ];
        for (name, args, target, label) in [
            (
                "peak RSS one-shot, 60k listeners",
                &[][..],
                5.0,
                "≤ 5.00 MiB",
            ),
            (
                "peak RSS, 60k listeners, every label",
                &every[..],
                8.0,
                "≤ 8.00 MiB",
            ),
        ] {
            let runs = Samples::new(
                (0..RSS_RUNS)
                    .map(|_| oneshot::peak_rss_kib(binary, args))
                    .collect(),
            );
            report.at_most(
                name,
                (runs.max(), kib(runs.max())),
                (target * 1024.0, label),
                format!("worst of {RSS_RUNS}; median {}", kib(runs.median())),
            );
        }
        let ss = oneshot::peak_rss_kib(&oneshot::tool("ss"), &["-Htln"]);
        report.info("peak RSS ss -Htln, 60k listeners", kib(ss), String::new());
    });
}

/// What the netlink scan costs in-process, idle and with 1,000 listeners,
/// where the table comes in several datagrams and is dumped twice (the
/// churn fix): context for the one-shot figures.
pub fn churn(report: &mut Report) {
    util::in_netns(|| {
        let mut listeners = Vec::new();
        for (phase, count) in [("10 listeners", 10), ("1,000 listeners", CHURN_LISTENERS)] {
            while listeners.len() < count {
                listeners.push(TcpListener::bind("127.0.0.1:0").unwrap());
            }
            let scans: Vec<f64> = (0..CHURN_RUNS)
                .map(|_| time_calls(0, 1, || netlink::listening_ports().unwrap()).median())
                .collect();
            let scans = Samples::new(scans);
            report.info(
                &format!("netlink scan, {phase}"),
                secs(scans.median()),
                scans.spread(secs),
            );
        }
    });
}
