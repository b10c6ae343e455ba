//! The scan benchmarks of port_exporter: `cargo bench --bench scan`.
//!
//! Prints one line per figure (median, target, PASS/FAIL) for the project's
//! performance targets (README, Performance), plus figures without a target
//! for context:
//!
//! | section   | figure                                             | target          |
//! |-----------|----------------------------------------------------|-----------------|
//! | `netlink` | `scan::netlink::listening_ports()` in-process      | ≤ 50 µs         |
//! |           | the same with 20,000 established connections      | ≤ 1.5 × idle    |
//! | `oneshot` | the binary, one run to stdout, vs `ss -Htn state listening`; the same for the static musl build | ≤ 0.65 × ss, idle and at 20k |
//! | `bind`    | `scan::bind::scan(&PortSet::all(), Some(2))`       | ≤ 300 ms        |
//! | `rss`     | peak RSS of one one-shot run                       | ≤ 5 MiB (worst) |
//! | `procfs`  | `scan::procfs::listening_ports()`, idle and at 20k | context only    |
//! | `process` | `--labels process`, 1,000 processes × 100 fds, vs `ss -Htlnp` | ≤ 0.5 × ss |
//! | `rss60k`  | peak RSS with 60,000 listeners, no labels / every label | ≤ 5 / ≤ 8 MiB |
//! | `churn`   | netlink scan, 10 and 1,000 listeners (dumped twice) | context only |
//! | `netns`   | `--netns all` over 103 namespaces vs a loop of `nsenter --net=X ss -Htln`; peak RSS | ≤ 0.1 × the loop; ≤ 8 MiB |
//!
//! `cargo bench --bench scan -- oneshot` runs one section alone (any
//! argument that is a part of a section name selects it; arguments starting
//! with `--`, such as the `--bench` that cargo passes, are ignored).
//!
//! How the numbers are made, and why:
//! - Medians everywhere (see `stats.rs`): the machine is shared and noisy,
//!   and a mean would follow the neighbours' load, not our code.
//! - In-process figures call the library many times after a warmup, each
//!   call timed on its own.
//! - Process figures spawn the release binary exactly as a user would and
//!   time it against `ss` in the same, interleaved series (`oneshot.rs`), so
//!   the ratio does not depend on the machine or the moment.
//! - The idle figures are taken first, then 20,000 loopback connections are
//!   opened by helper processes (`holders.rs`) and checked to exist, the
//!   loaded figures are taken, the helpers are stopped, and the netlink
//!   idle runs are taken again: the netlink idle figure and its ratio use
//!   idle runs from both sides of the loaded phase, so slow drift of the
//!   machine's load does not pass for an effect of the connections. (So
//!   the netlink lines are printed last.)
//! - Peak RSS is ru_maxrss as GNU time reports it (`oneshot.rs` says why
//!   not wait4 from here); the worst of 20 runs carries the target.
//!
//! A missed target prints FAIL and is listed in the summary, but the exit
//! status stays 0: this is a benchmark, not a test. Only loopback is used,
//! and only ports this benchmark opened itself.

mod holders;
mod listeners;
mod netns;
mod oneshot;
mod stats;
#[path = "../util/mod.rs"]
#[allow(dead_code, unused_imports, unused_macros)]
mod util;

use std::{
    env, fs,
    path::{Path, PathBuf},
    process::{self, Command},
};

use port_exporter::{
    ports::PortSet,
    scan::{bind, netlink, procfs},
};

use holders::{HOLDER_ENV, Holders};
use stats::{Report, Samples, kib, ratio, secs, time_calls};

/// The sections, in the order their idle figures are taken.
const SECTIONS: [&str; 9] = [
    "netlink", "procfs", "oneshot", "rss", "bind", "process", "rss60k", "churn", "netns",
];

/// Established loopback connections for the loaded figures.
const CONNECTIONS: usize = 20_000;

/// In-process netlink scans per phase (each ~35 µs), and untimed ones first.
const NETLINK_RUNS: usize = 2_000;
const NETLINK_WARMUP: usize = 200;

/// procfs scans: ~10 ms idle, ~90 ms loaded, so fewer of them.
const PROCFS_RUNS_IDLE: usize = 50;
const PROCFS_RUNS_LOADED: usize = 20;

/// One-shot runs of each program per phase (each a few ms).
const ONESHOT_RUNS: usize = 300;
const ONESHOT_WARMUP: usize = 10;

/// Full bind scans (~300 ms with 2 threads, ~600 ms with 1).
const BIND_RUNS_2: usize = 11;
const BIND_RUNS_1: usize = 5;

/// Runs measured for the peak RSS.
const RSS_RUNS: usize = 20;

/// The targets, as the README's Performance table states them.
const NETLINK_TARGET_S: f64 = 50e-6;
const NETLINK_LOADED_RATIO: f64 = 1.5;
const ONESHOT_RATIO: f64 = 0.65;
const BIND_TARGET_S: f64 = 0.300;
const RSS_TARGET_KIB: f64 = 5.0 * 1024.0;

/// Dispatches between the holder role and the benchmark itself.
fn main() {
    if netns::helper() {
        return;
    }
    if listeners::helper() {
        return;
    }
    if let Some(count) = env::var_os(HOLDER_ENV) {
        let count = count
            .to_str()
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("{HOLDER_ENV} must be a connection count"));
        if let Err(err) = holders::serve(count) {
            eprintln!("scan bench: connection holder: {err}");
            process::exit(1);
        }
        return;
    }
    let filters: Vec<String> = env::args()
        .skip(1)
        .filter(|arg| !arg.starts_with("--"))
        .collect();
    for filter in &filters {
        if !SECTIONS.iter().any(|s| s.contains(filter.as_str())) {
            eprintln!(
                "scan bench: no section matches {filter:?}; sections: {}",
                SECTIONS.join(", ")
            );
            process::exit(2);
        }
    }
    let wants = |section: &str| filters.is_empty() || filters.iter().any(|f| section.contains(f));
    run(&wants);
}

/// Takes the idle figures of every wanted section, then the loaded ones.
fn run(wants: &dyn Fn(&str) -> bool) {
    let binary = ["oneshot", "rss", "process", "rss60k", "netns"]
        .iter()
        .any(|s| wants(s))
        .then(util::bin::path);
    // Built (or found up to date) before the clock starts: cargo's output
    // goes to stderr, and an error is printed as the musl row.
    let musl = wants("oneshot").then(oneshot::musl_release);
    print_environment(
        binary.as_deref(),
        musl.as_ref().and_then(|m| m.as_deref().ok()),
    );
    let mut report = Report::default();
    report.header();

    // The netlink figures are printed at the end, once the idle runs after
    // the loaded phase are in (see `netlink_figures`).
    let netlink_before = wants("netlink").then(time_netlink);
    if wants("procfs") {
        time_procfs(&mut report, "idle", PROCFS_RUNS_IDLE);
    }
    if let (true, Some(binary)) = (wants("oneshot"), &binary) {
        oneshot::check_output(binary);
        if let Some(Ok(musl)) = &musl {
            oneshot::check_output(musl);
        }
        time_oneshot(&mut report, binary, musl.as_ref(), "idle");
    }
    if let (true, Some(binary)) = (wants("rss"), &binary) {
        measure_rss(&mut report, binary);
    }
    if wants("bind") {
        time_bind(&mut report);
    }
    if let (true, Some(binary)) = (wants("process"), &binary) {
        listeners::process(&mut report, binary);
    }
    if let (true, Some(binary)) = (wants("rss60k"), &binary) {
        listeners::rss(&mut report, binary);
    }
    if wants("churn") {
        listeners::churn(&mut report);
    }
    if let (true, Some(binary)) = (wants("netns"), &binary) {
        netns::run(&mut report, binary);
    }

    if wants("netlink") || wants("procfs") || wants("oneshot") || wants("bind") {
        let holders = Holders::start(CONNECTIONS);
        verify_load(&holders);
        if wants("bind") {
            count_bind_false_ports(&mut report);
        }
        let netlink_loaded = wants("netlink").then(time_netlink);
        if wants("procfs") {
            time_procfs(&mut report, "20k conns", PROCFS_RUNS_LOADED);
        }
        if let (true, Some(binary)) = (wants("oneshot"), &binary) {
            time_oneshot(&mut report, binary, musl.as_ref(), "20k conns");
        }
        drop(holders);
        if let (Some(before), Some(loaded)) = (&netlink_before, &netlink_loaded) {
            netlink_figures(&mut report, before, loaded);
        }
    }
    report.summary();
}

/// With the connections open, counts the ports a full bind scan reports
/// that have no listener (netlink's answer): the client ends of the
/// connections, the documented false positives of the bind method.
fn count_bind_false_ports(report: &mut Report) {
    let listening = netlink::listening_ports().expect("netlink scan failed");
    let mut extra = bind::scan(&PortSet::all(), Some(2))
        .expect("bind scan failed")
        .open;
    extra.subtract(&listening);
    report.info(
        "bind: ports reported open without a listener, 20k conns",
        extra.len().to_string(),
        format!("{} real listeners", listening.len()),
    );
}

/// Takes the idle netlink runs after the loaded phase and prints the three
/// netlink figures.
///
/// The idle figure and the ratio use the idle runs from before and after
/// the load together: a single netlink call is ~35 µs, so a neighbour that
/// is busy for a second shifts a whole window of 2,000 calls, and windows
/// on both sides of the loaded one keep such drift from passing for an
/// effect of the connections, in either direction.
fn netlink_figures(report: &mut Report, before: &Samples, loaded: &Samples) {
    let after = time_netlink();
    let idle = Samples::merged(before, &after);
    report.at_most(
        "netlink in-process, idle (before+after)",
        (idle.median(), secs(idle.median())),
        (NETLINK_TARGET_S, "≤ 50 µs"),
        format!(
            "{}; before {}, after {}",
            idle.spread(secs),
            secs(before.median()),
            secs(after.median())
        ),
    );
    report.info(
        "netlink in-process, 20k conns",
        secs(loaded.median()),
        loaded.spread(secs),
    );
    let r = loaded.median() / idle.median();
    report.at_most(
        "netlink 20k / idle",
        (r, ratio(r)),
        (NETLINK_LOADED_RATIO, "≤ 1.50×"),
        String::new(),
    );
}

/// Prints what the figures depend on: cores, kernel, CPU, the load at the
/// start (a busy neighbour explains a slow run), the binary measured and
/// the TCP socket counts before anything is opened.
fn print_environment(binary: Option<&Path>, musl: Option<&Path>) {
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = read_trimmed("/proc/sys/kernel/osrelease");
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "?".into());
    println!("port_exporter scan benchmark (release build; medians)");
    println!("machine: nproc {nproc}, kernel {kernel}, cpu {cpu}");
    println!("loadavg: {}", read_trimmed("/proc/loadavg"));
    if let Some(binary) = binary {
        println!("binary:  {}", describe(binary));
        println!("loads:   {}", needed_libraries(binary));
    }
    if let Some(musl) = musl {
        println!("static:  {}", describe(musl));
    }
    println!("sockets: {}", tcp_sockstat());
    println!();
}

/// A binary's path and size.
fn describe(binary: &Path) -> String {
    let size = fs::metadata(binary).map_or(0, |m| m.len());
    format!("{} ({:.2} MiB)", binary.display(), size as f64 / 1048576.0)
}

/// The shared libraries `binary` names (its NEEDED entries, from binutils'
/// readelf), or "?". Each one loaded costs every one-shot run: libgcc_s
/// alone cost ~0.1 ms here.
fn needed_libraries(binary: &Path) -> String {
    let Ok(out) = Command::new("readelf").arg("-dW").arg(binary).output() else {
        return "? (no readelf)".into();
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let libraries: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| l.split_once('[')?.1.split_once(']').map(|(name, _)| name))
        .collect();
    libraries.join(", ")
}

/// The TCP line of /proc/net/sockstat (sockets in use, TIME_WAIT, ...).
fn tcp_sockstat() -> String {
    fs::read_to_string("/proc/net/sockstat")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("TCP:"))
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "?".into())
}

/// A small /proc file without its trailing newline, or "?".
fn read_trimmed(path: &str) -> String {
    fs::read_to_string(path).map_or_else(|_| "?".into(), |s| s.trim().to_owned())
}

/// Checks that the load really exists before a loaded figure is taken:
/// `ss` must see exactly two established sockets per connection on the
/// holders' ports, and the library must see each holder's listener.
/// Panics otherwise, because a "loaded" figure without the load would pass
/// its target for the wrong reason.
fn verify_load(holders: &Holders) {
    let filter = holders
        .ports
        .iter()
        .map(|p| format!("sport = :{p} or dport = :{p}"))
        .collect::<Vec<_>>()
        .join(" or ");
    let out = Command::new("ss")
        .args(["-Htn", "state", "established", &format!("( {filter} )")])
        .output()
        .expect("cannot run ss");
    assert!(out.status.success(), "ss failed: {}", out.status);
    let established = out
        .stdout
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .count();
    assert_eq!(
        established,
        2 * holders.connections,
        "ss sees {established} established sockets, expected two per connection"
    );
    let open = netlink::listening_ports().expect("netlink scan failed");
    for &port in &holders.ports {
        assert!(open.contains(port), "netlink misses holder listener {port}");
    }
    eprintln!(
        "load: {} connections in {} holder processes, opened in {}; ss sees {established} \
         established sockets; {}",
        holders.connections,
        holders.ports.len(),
        secs(holders.setup.as_secs_f64()),
        tcp_sockstat()
    );
}

/// Times the netlink listener dump in-process.
fn time_netlink() -> Samples {
    time_calls(NETLINK_WARMUP, NETLINK_RUNS, || {
        netlink::listening_ports().expect("netlink scan failed")
    })
}

/// Times the /proc/net/tcp{,6} reader in-process and prints its figure.
/// There is no target: procfs is only the fallback, measured so the cost of
/// falling back is known.
fn time_procfs(report: &mut Report, phase: &str, runs: usize) {
    let dir = PathBuf::from("/proc/self/net");
    let samples = time_calls(2, runs, || {
        procfs::listening_ports(&dir).expect("procfs scan failed")
    });
    report.info(
        &format!("procfs in-process, {phase}"),
        secs(samples.median()),
        samples.spread(secs),
    );
}

/// Times whole one-shot runs against `ss` in one interleaved series and
/// prints each program's median: ours; ours with `--version`, our start-up
/// floor (loading, clap, exit: no scan), so the scan's own share shows;
/// ss; `true`, the floor any dynamically linked process pays; and the
/// static musl build when there is one. The ratios ours/ss of the glibc
/// and the static build carry the target.
fn time_oneshot(
    report: &mut Report,
    binary: &Path,
    musl: Option<&Result<PathBuf, String>>,
    phase: &str,
) {
    let (ss, floor) = (oneshot::tool("ss"), oneshot::tool("true"));
    let mut programs: Vec<oneshot::Program> = vec![
        (binary, &[]),
        (binary, &["--version"]),
        (&ss, &oneshot::SS_ARGS),
        (&floor, &[]),
    ];
    if let Some(Ok(musl)) = musl {
        programs.push((musl, &[]));
    }
    let seconds = oneshot::series(&programs, ONESHOT_RUNS, ONESHOT_WARMUP);
    let runs: Vec<Samples> = seconds.iter().cloned().map(Samples::new).collect();
    let (ours, version, ss) = (&runs[0], &runs[1], &runs[2]);
    // Program `which` against ss, the target's ratio.
    let gate = |report: &mut Report, name: &str, which: usize| {
        let r = runs[which].median() / ss.median();
        let per_round = oneshot::per_round(&seconds[which], &seconds[2]);
        report.at_most(
            &format!("one-shot {name} / ss, {phase}"),
            (r, ratio(r)),
            (ONESHOT_RATIO, "≤ 0.65×"),
            format!("median of per-round ratios {}", ratio(per_round.median())),
        );
    };
    report.info(
        &format!("one-shot port_exporter, {phase}"),
        secs(ours.median()),
        ours.spread(secs),
    );
    report.info(
        &format!("one-shot port_exporter --version, {phase}"),
        secs(version.median()),
        format!(
            "start-up floor, no scan; the scan adds {}",
            secs(ours.median() - version.median())
        ),
    );
    report.info(
        &format!("one-shot ss -Htn state listening, {phase}"),
        secs(ss.median()),
        ss.spread(secs),
    );
    report.info(
        &format!("one-shot `true` (exec floor), {phase}"),
        secs(runs[3].median()),
        runs[3].spread(secs),
    );
    gate(report, "ours", 0);
    match musl {
        Some(Ok(_)) => {
            report.info(
                &format!("one-shot static musl build, {phase}"),
                secs(runs[4].median()),
                runs[4].spread(secs),
            );
            gate(report, "musl", 4);
        }
        Some(Err(why)) => report.info(
            &format!("one-shot static musl build, {phase}: SKIPPED"),
            "-".into(),
            why.clone(),
        ),
        None => {}
    }
}

/// Measures the peak RSS of one-shot runs: the worst run carries the target
/// (memory limits are hit by the worst run, not the typical one), the
/// median and the floor of the method are printed for context, and so is
/// ss's.
fn measure_rss(report: &mut Report, binary: &Path) {
    if !oneshot::can_measure_rss() {
        report.info(
            "peak RSS one-shot: SKIPPED",
            "-".into(),
            "needs GNU time at /usr/bin/time (wait4 would need unsafe)".into(),
        );
        return;
    }
    let ours = Samples::new(
        (0..RSS_RUNS)
            .map(|_| oneshot::peak_rss_kib(binary, &[]))
            .collect(),
    );
    report.at_most(
        "peak RSS one-shot, worst run",
        (ours.max(), kib(ours.max())),
        (RSS_TARGET_KIB, "≤ 5.00 MiB"),
        format!("median {}, n={}", kib(ours.median()), ours.len()),
    );
    let ss = oneshot::peak_rss_kib(&oneshot::tool("ss"), &oneshot::SS_ARGS);
    report.info(
        "peak RSS ss -Htn state listening",
        kib(ss),
        format!(
            "floor of the method (`true`): {}",
            kib(oneshot::rss_floor_kib())
        ),
    );
}

/// Times full bind scans of every port, with 2 threads (the target) and
/// 1 thread (context: how much the second core buys).
fn time_bind(report: &mut Report) {
    let all = PortSet::all();
    let scan = |threads| bind::scan(&all, threads).expect("bind scan failed");
    let two = time_calls(1, BIND_RUNS_2, || scan(Some(2)));
    report.at_most(
        "bind scan 65,535 ports, 2 threads",
        (two.median(), secs(two.median())),
        (BIND_TARGET_S, "≤ 300 ms"),
        two.spread(secs),
    );
    let one = time_calls(0, BIND_RUNS_1, || scan(Some(1)));
    report.info(
        "bind scan 65,535 ports, 1 thread",
        secs(one.median()),
        one.spread(secs),
    );
}
