//! The `--watch` benchmark: `cargo bench --bench watch` (root).
//!
//! | figure                                                    | target        |
//! |-----------------------------------------------------------|---------------|
//! | CPU of `--watch 100ms` with 1,000 listeners, per core     | ≤ 3 %         |
//! | the same at `--watch 10ms`                                | context only  |
//! | `ss -Htlnp` every 100 ms (what `watch -n 0.1 ss -tlnp` runs) | context, and the ratio |
//!
//! It runs as PID 1 of network and PID namespaces of its own (`unshare -n
//! -p -f --mount-proc`), so the listeners and the processes the watch
//! reads are the ones it started: 300 processes of root holding 20
//! descriptors each (a host's background, all walked before the
//! listeners' holder, which starts last), and one process holding 1,000
//! TCP listeners on 127.0.0.1.
//!
//! CPU time is the watch's own, read from `/proc/PID/task/*/schedstat`
//! (nanoseconds on the CPU) after a second of warm-up and again
//! [`SECONDS`] later: the steady state, without start-up and the first
//! listing. `ss` is measured by the CPU time of its runs (getrusage of the
//! reaped children) over the same span, in the same run. Each figure is the
//! median of [`RUNS`] spans. The machine is shared with others' builds:
//! compare the ratio, not the absolute figures, across runs.

// The helpers of the scan bench (`fill N`, `listen FIRST COUNT`) and its
// kit; this bench uses a part of each.
#[allow(dead_code)]
mod listeners;
#[allow(dead_code)]
mod oneshot;
#[allow(dead_code)]
mod stats;
#[path = "../util/mod.rs"]
#[allow(dead_code, unused_imports, unused_macros)]
mod util;

use std::{
    env, fs,
    path::Path,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use nix::sys::resource::{UsageWho, getrusage};

use stats::{Report, Samples};

/// Set to `scenario`, this variable makes the bench executable the
/// scenario, as PID 1 of its namespaces.
const SCENARIO_ENV: &str = "PORT_EXPORTER_BENCH_WATCH";

/// Listeners, and the background processes and their descriptors.
const LISTENERS: u16 = 1_000;
const BACKGROUND: usize = 300;
const FDS_EACH: usize = 20;

/// Seconds each span measures, after a second of warm-up, and spans per
/// figure.
const SECONDS: u64 = 5;
const RUNS: usize = 5;

/// The target: a share of one core at 100 ms.
const TARGET: f64 = 0.03;

fn main() {
    if listeners::helper() {
        return;
    }
    if env::var_os(SCENARIO_ENV).is_some() {
        scenario();
        return;
    }
    if !util::is_root() {
        eprintln!("watch bench: needs root (network and PID namespaces of its own)");
        std::process::exit(1);
    }
    let status = Command::new("unshare")
        .args(["--net", "--pid", "--fork", "--mount-proc"])
        .arg(env::current_exe().unwrap())
        .env(SCENARIO_ENV, "scenario")
        .env("PORT_EXPORTER_BIN", util::bin::path())
        .stdin(Stdio::null())
        .status()
        .expect("cannot run unshare");
    assert!(status.success(), "the watch bench failed: {status}");
}

/// The scenario, as PID 1 of fresh network and PID namespaces.
fn scenario() {
    let binary = std::path::PathBuf::from(env::var_os("PORT_EXPORTER_BIN").unwrap());
    let ip = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .unwrap();
    assert!(ip.success(), "ip link set lo up failed");
    println!(
        "watch bench: {LISTENERS} listeners in one process, after {BACKGROUND} processes x \
         {FDS_EACH} fds; {RUNS} spans of {SECONDS} s per figure; load average {}",
        fs::read_to_string("/proc/loadavg").unwrap().trim()
    );
    let background = listeners::Helpers::start(BACKGROUND, |_| format!("fill {FDS_EACH}"), None);
    let holder = listeners::Helpers::start(1, |_| format!("listen 20000 {LISTENERS}"), None);
    check_attributed(&binary);

    let mut report = Report::default();
    report.header();
    let ss = oneshot::tool("ss");
    let mut at_100ms = None;
    for interval in ["100ms", "10ms"] {
        let shares = Samples::new((0..RUNS).map(|_| watch_share(&binary, interval)).collect());
        let name = format!("--watch {interval}, {LISTENERS} listeners, CPU");
        let shown = percent(shares.median());
        if interval == "100ms" {
            at_100ms = Some(shares.median());
            report.at_most(
                &name,
                (shares.median(), shown),
                (TARGET, "≤ 3.0 %"),
                shares.spread(percent),
            );
        } else {
            report.info(&name, shown, shares.spread(percent));
        }
    }
    let shares = Samples::new((0..RUNS).map(|_| ss_share(&ss)).collect());
    report.info(
        "ss -Htlnp every 100 ms, CPU",
        percent(shares.median()),
        shares.spread(percent),
    );
    let ratio = at_100ms.unwrap() / shares.median();
    report.info(
        "--watch 100ms / ss -Htlnp every 100 ms",
        stats::ratio(ratio),
        String::new(),
    );
    report.summary();
    drop((holder, background));
}

/// A share of one core as a percentage.
fn percent(share: f64) -> String {
    format!("{:.2} %", share * 100.0)
}

/// Checks that a one-shot run sees every listener with its process.
fn check_attributed(binary: &Path) {
    let out = Command::new(binary)
        .args(["--format", "json"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let attributed = util::scenario::json_rows(&text)
        .iter()
        .filter(|row| row.pid.is_some())
        .count();
    assert_eq!(
        attributed,
        usize::from(LISTENERS),
        "not every listener is seen with its process:\n{text}"
    );
}

/// The nanoseconds on the CPU of every thread of `pid` so far.
fn cpu_ns(pid: u32) -> u64 {
    fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .map(|task| {
            let stat = fs::read_to_string(task.unwrap().path().join("schedstat")).unwrap();
            stat.split_whitespace()
                .next()
                .unwrap()
                .parse::<u64>()
                .unwrap()
        })
        .sum()
}

/// The share of one core a `--watch INTERVAL --format json` uses over a
/// span, after a second of warm-up; checks that it listed every listener.
fn watch_share(binary: &Path, interval: &str) -> f64 {
    let dir = util::open_tempdir();
    let out = dir.path().join("watch.jsonl");
    let mut child = Command::new(binary)
        .args(["--watch", interval, "--format", "json"])
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out).unwrap())
        .spawn()
        .unwrap();
    let pid = child.id();
    thread::sleep(Duration::from_secs(1));
    let (cpu, clock) = (cpu_ns(pid), Instant::now());
    thread::sleep(Duration::from_secs(SECONDS));
    let used = cpu_ns(pid) - cpu;
    let span = clock.elapsed();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "--watch {interval} ended with {status}");
    let lines = fs::read_to_string(&out).unwrap();
    assert_eq!(
        lines.lines().count(),
        usize::from(LISTENERS),
        "--watch {interval} printed other than the listing"
    );
    used as f64 / span.as_nanos() as f64
}

/// The share of one core that `ss -Htlnp` run every 100 ms uses over a
/// span.
fn ss_share(ss: &Path) -> f64 {
    let cpu = || {
        let usage = getrusage(UsageWho::RUSAGE_CHILDREN).unwrap();
        let (u, s) = (usage.user_time(), usage.system_time());
        (u.tv_sec() + s.tv_sec()) as f64 + (u.tv_usec() + s.tv_usec()) as f64 * 1e-6
    };
    let (before, clock) = (cpu(), Instant::now());
    let mut next = clock;
    while clock.elapsed() < Duration::from_secs(SECONDS) {
        let out = Command::new(ss).arg("-Htlnp").output().unwrap();
        assert!(out.status.success());
        next += Duration::from_millis(100);
        thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    (cpu() - before) / clock.elapsed().as_secs_f64()
}
