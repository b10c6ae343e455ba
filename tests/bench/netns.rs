//! The `netns` benchmark: `--netns all` over 103 network namespaces (100
//! named by `ip netns add`, 2 held by processes, the host's), three
//! listeners each, against what one would do without it: a loop of
//! `nsenter --net=X ss -Htln` over the same namespaces. Plus its peak RSS.
//!
//! It all happens in mount, network and PID namespaces of the benchmark's
//! own, so the host is untouched and "the host" is the bench's namespace:
//! the bench executable runs itself as PID 1 there (`unshare -m -n -p -f
//! --mount-proc`, a tmpfs on /run for `ip netns`), builds the namespaces,
//! times the runs in pairs and prints the raw seconds, which the parent
//! turns into figures. The named namespaces have no process in them (their
//! sockets are held by the bench, which made them there), so port_exporter
//! enters them through /run/netns, as it would a CNI namespace; 300 idle
//! processes stand for a node's others, which port_exporter reads to find
//! namespaces.

use std::{
    env,
    fs::File,
    io::{self, Read, Write},
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener},
    path::Path,
    process::{Child, Command, Stdio},
    thread,
};

use crate::{
    oneshot,
    stats::{Report, Samples, kib, ratio, secs},
    util::scenario::sh,
};

/// Set to `scenario` or `hold`, this variable turns the bench executable
/// into the measuring PID 1, or into a process holding listeners in a
/// namespace of its own.
const ROLE_ENV: &str = "PORT_EXPORTER_BENCH_NETNS";

/// The namespaces: named, held by processes, and the host's.
const NAMED: usize = 100;
const HELD: usize = 2;
const NAMESPACES: usize = NAMED + HELD + 1;
/// Listeners in each: two on 0.0.0.0, one on [::] (wildcards need no
/// loopback up).
const PORTS: [u16; 3] = [8000, 8001, 8002];
/// Idle processes beside them.
const IDLE: usize = 300;
/// Paired rounds, and peak-RSS runs.
const ROUNDS: usize = 20;
const RSS_RUNS: usize = 5;
/// Runs of `--method procfs` (about a second each), for context.
const PROCFS_RUNS: usize = 5;

/// The targets (issue 9): a tenth of the loop, 8 MiB.
const RATIO_TARGET: f64 = 0.1;
const RSS_TARGET_KIB: f64 = 8.0 * 1024.0;

/// Runs a role of this module; returns false when this process has none.
pub fn helper() -> bool {
    let Some(role) = env::var_os(ROLE_ENV) else {
        return false;
    };
    match role.to_str() {
        Some("scenario") => scenario(),
        Some("hold") => {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare");
            let kept = listen();
            println!("ready");
            io::stdout().flush().unwrap();
            let _ = io::stdin().read_to_end(&mut Vec::new());
            drop(kept);
        }
        _ => panic!("unknown {ROLE_ENV} role {role:?}"),
    }
    true
}

/// Opens the listeners of one namespace, in the namespace of this thread.
fn listen() -> Vec<TcpListener> {
    let v4 = |port| SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
    vec![
        TcpListener::bind(v4(PORTS[0])).unwrap(),
        TcpListener::bind(v4(PORTS[1])).unwrap(),
        TcpListener::bind(SocketAddr::from((Ipv6Addr::UNSPECIFIED, PORTS[2]))).unwrap(),
    ]
}

/// Runs the scenario as PID 1 of namespaces of its own and prints the
/// figures.
pub fn run(report: &mut Report, binary: &Path) {
    let out = Command::new("unshare")
        .args(["--mount", "--net", "--pid", "--fork", "--mount-proc"])
        .arg(env::current_exe().unwrap())
        .env(ROLE_ENV, "scenario")
        .env("PORT_EXPORTER_BENCH_BINARY", binary)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .expect("cannot run unshare");
    assert!(out.status.success(), "the netns scenario failed");
    let text = String::from_utf8(out.stdout).unwrap();
    let values = |key: &str| -> Vec<f64> {
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("the scenario printed no {key}:\n{text}"));
        line.split_whitespace()
            .map(|v| v.parse().unwrap())
            .collect()
    };
    let ours = Samples::new(values("ours"));
    let each = Samples::new(values("loop"));
    let per_round = Samples::new(values("per_round"));
    let procfs = Samples::new(values("procfs"));
    let rss = values("rss");
    report.info(
        &format!("--netns all, {NAMESPACES} namespaces"),
        secs(ours.median()),
        ours.spread(secs),
    );
    report.info(
        &format!("nsenter ss -Htln loop, {NAMESPACES} namespaces"),
        secs(each.median()),
        each.spread(secs),
    );
    let r = ours.median() / each.median();
    report.at_most(
        "--netns all / nsenter ss loop",
        (r, ratio(r)),
        (RATIO_TARGET, "≤ 0.10×"),
        format!("per-round {}", ratio(per_round.median())),
    );
    report.info(
        &format!("--netns all --method procfs, {NAMESPACES} ns"),
        secs(procfs.median()),
        procfs.spread(secs),
    );
    if rss.is_empty() {
        report.info(
            "peak RSS --netns all: SKIPPED",
            "-".into(),
            "needs GNU time".into(),
        );
        return;
    }
    let rss = Samples::new(rss);
    report.at_most(
        &format!("peak RSS --netns all, {NAMESPACES} namespaces"),
        (rss.max(), kib(rss.max())),
        (RSS_TARGET_KIB, "≤ 8.00 MiB"),
        format!("worst of {RSS_RUNS}; median {}", kib(rss.median())),
    );
}

/// Children stopped (stdin closed, killed, reaped) when dropped.
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            drop(child.stdin.take());
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The scenario: build the namespaces, check the output, time the pairs,
/// print the raw figures on stdout.
fn scenario() {
    let binary = env::var_os("PORT_EXPORTER_BENCH_BINARY").expect("no binary given");
    let binary = Path::new(&binary);
    sh("mount", &["-t", "tmpfs", "tmpfs", "/run"]);
    let _host = listen();

    // 100 named namespaces, made by one ip process; their listeners are
    // opened by a thread that enters each in turn, and kept here.
    let names: Vec<String> = (0..NAMED).map(|i| format!("ns{i:03}")).collect();
    let batch: String = names.iter().map(|n| format!("netns add {n}\n")).collect();
    let mut ip = Command::new("ip")
        .args(["-batch", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    ip.stdin
        .take()
        .unwrap()
        .write_all(batch.as_bytes())
        .unwrap();
    assert!(ip.wait().unwrap().success(), "ip netns add failed");
    let named: Vec<TcpListener> = thread::scope(|scope| {
        scope
            .spawn(|| {
                let mut kept = Vec::new();
                for name in &names {
                    let file = File::open(format!("/run/netns/{name}")).unwrap();
                    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
                    kept.extend(listen());
                }
                kept
            })
            .join()
            .unwrap()
    });

    // Two held by processes of their own, and the idle processes.
    let exe = env::current_exe().unwrap();
    let mut held = Children(Vec::new());
    for _ in 0..HELD {
        let (child, said) = crate::util::start_helper(Command::new(&exe).env(ROLE_ENV, "hold"));
        assert!(said.is_empty(), "a holder said {said:?}");
        held.0.push(child);
    }
    let idle = Children(
        (0..IDLE)
            .map(|_| {
                Command::new("sleep")
                    .arg("3600")
                    .stdin(Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect(),
    );

    // The same namespaces for the loop.
    let mut paths: Vec<String> = vec!["/proc/1/ns/net".into()];
    paths.extend(names.iter().map(|n| format!("/run/netns/{n}")));
    paths.extend(held.0.iter().map(|c| format!("/proc/{}/ns/net", c.id())));
    assert_eq!(paths.len(), NAMESPACES);

    // Both must see every listener.
    let out = Command::new(binary)
        .args(["--netns", "all"])
        .output()
        .unwrap();
    assert!(out.status.success(), "port_exporter --netns all failed");
    let text = String::from_utf8(out.stdout).unwrap();
    let samples = text
        .lines()
        .filter(|l| l.starts_with("instance_open_ports{"))
        .count();
    assert_eq!(samples, NAMESPACES * PORTS.len(), "{text}");
    let nsenter = oneshot::tool("nsenter");
    let listed: usize = paths
        .iter()
        .map(|path| {
            let out = Command::new(&nsenter)
                .arg(format!("--net={path}"))
                .args(["ss", "-Htln"])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).lines().count()
        })
        .sum();
    assert_eq!(listed, NAMESPACES * PORTS.len());
    eprintln!(
        "netns: {NAMESPACES} namespaces, {samples} listeners, {} processes",
        IDLE + HELD + 1
    );

    // Paired rounds, the order alternating.
    let args: Vec<String> = paths.iter().map(|p| format!("--net={p}")).collect();
    let ours_run = || oneshot::time_run(binary, &["--netns", "all"]);
    let loop_run = || {
        args.iter()
            .map(|arg| oneshot::time_run(&nsenter, &[arg, "ss", "-Htln"]))
            .sum::<f64>()
    };
    ours_run();
    loop_run();
    let (mut ours, mut each) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        if round % 2 == 0 {
            ours.push(ours_run());
            each.push(loop_run());
        } else {
            each.push(loop_run());
            ours.push(ours_run());
        }
    }
    let per_round: Vec<f64> = ours.iter().zip(&each).map(|(a, b)| a / b).collect();
    let procfs: Vec<f64> = (0..PROCFS_RUNS)
        .map(|_| oneshot::time_run(binary, &["--netns", "all", "--method", "procfs"]))
        .collect();
    let rss: Vec<f64> = if oneshot::can_measure_rss() {
        (0..RSS_RUNS)
            .map(|_| oneshot::peak_rss_kib(binary, &["--netns", "all"]))
            .collect()
    } else {
        Vec::new()
    };
    let line = |key: &str, values: &[f64]| {
        let values: Vec<String> = values.iter().map(f64::to_string).collect();
        println!("{key} {}", values.join(" "));
    };
    line("ours", &ours);
    line("loop", &each);
    line("per_round", &per_round);
    line("procfs", &procfs);
    line("rss", &rss);
    drop((idle, held, named));
}
