//! The `--serve` benchmark: `cargo bench --bench serve`.
//!
//! Starts the release binary with `--serve 127.0.0.1:0` (default method)
//! and loads `GET /` with Debian's `wrk`: `wrk -t1 -c32 -d10s --latency`,
//! 32 connections as a busy Prometheus setup might open, on a machine where
//! wrk shares the cores with the server. Targets: ≥ 5,000 requests/s, p99 latency
//! ≤ 10 ms, resident memory ≤ 16 MiB after the run. Three 10 s runs follow
//! a 2 s warmup; the medians of the three carry the targets.
//!
//! Also printed: non-2xx answers (must be 0), how many scans served how
//! many requests (coalescing at work), and the peak RSS.
//! Only loopback is used, and only the server this benchmark started.

#[allow(dead_code)]
mod stats;
#[path = "../util/mod.rs"]
#[allow(dead_code, unused_imports, unused_macros)]
mod util;

use std::{path::Path, process::Command};

use stats::{Report, Samples, kib};
use util::{Bin, Server};

/// Where Debian's wrk package puts it.
const WRK: &str = "/usr/bin/wrk";
const RUNS: usize = 3;

/// Starts the release binary on a free loopback port, with only PATH in
/// its environment (cargo's LD_LIBRARY_PATH would slow its loader).
fn start_server() -> Server {
    let mut command = Bin::new().args(["--serve", "127.0.0.1:0"]).command();
    command.env_clear();
    if let Some(path) = std::env::var_os("PATH") {
        command.env("PATH", path);
    }
    Server::spawn(command)
}

/// What one wrk run reported.
struct WrkRun {
    requests_per_second: f64,
    p99_ms: f64,
    requests: f64,
    bad: f64,
}

/// Runs wrk against `url` for `seconds` and parses its report.
fn wrk(url: &str, seconds: u32) -> WrkRun {
    let out = Command::new(WRK)
        .args(["-t1", "-c32", &format!("-d{seconds}s"), "--latency", url])
        .output()
        .expect("cannot run wrk");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "wrk failed:\n{text}");
    let field = |prefix: &str| -> Option<&str> {
        text.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(prefix))
            .map(str::trim)
    };
    let p99 = field("99%").unwrap_or_else(|| panic!("no p99 in:\n{text}"));
    WrkRun {
        requests_per_second: field("Requests/sec:")
            .and_then(|v| v.parse().ok())
            .expect("no Requests/sec"),
        p99_ms: milliseconds(p99),
        requests: text
            .lines()
            .find(|l| l.contains("requests in"))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(f64::NAN),
        bad: field("Non-2xx or 3xx responses:")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0),
    }
}

/// wrk's latency figure (`812.00us`, `1.23ms`, `1.01s`) in milliseconds.
fn milliseconds(text: &str) -> f64 {
    let split = text
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().unwrap_or(f64::NAN);
    match unit {
        "us" => number / 1e3,
        "ms" => number,
        "s" => number * 1e3,
        "m" => number * 60e3,
        _ => f64::NAN,
    }
}

/// The value of an unlabeled sample in the server's own exposition.
fn sample(server: &Server, name: &str) -> f64 {
    util::metric(&server.get("/metrics").body, name).unwrap_or(f64::NAN)
}

fn main() {
    if !Path::new(WRK).is_file() {
        println!("SKIPPED: {WRK} is missing (apt-get install wrk)");
        return;
    }
    let server = start_server();
    let url = format!("http://{}/", server.addr);
    println!("port_exporter --serve benchmark: wrk -t1 -c32 -d10s --latency {url}");
    println!(
        "machine: nproc {}",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let mut report = Report::default();
    report.header();
    wrk(&url, 2);
    let runs: Vec<WrkRun> = (0..RUNS).map(|_| wrk(&url, 10)).collect();
    let rps = Samples::new(runs.iter().map(|r| r.requests_per_second).collect());
    let p99 = Samples::new(runs.iter().map(|r| r.p99_ms).collect());
    let each = |f: fn(&WrkRun) -> f64| {
        runs.iter()
            .map(|r| format!("{:.0}", f(r)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    // "At least" targets are checked as "at most" on the negated value.
    report.at_most(
        "requests/s, GET /, 32 connections",
        (-rps.median(), format!("{:.0}", rps.median())),
        (-5000.0, "≥ 5000"),
        format!("runs: {}", each(|r| r.requests_per_second)),
    );
    report.at_most(
        "p99 latency",
        (p99.median(), format!("{:.2} ms", p99.median())),
        (10.0, "≤ 10 ms"),
        format!(
            "runs: {} ms",
            runs.iter()
                .map(|r| format!("{:.2}", r.p99_ms))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    );
    let rss = util::status_kib(server.pid(), "VmRSS") as f64;
    report.at_most(
        "resident memory after the runs",
        (rss, kib(rss)),
        (16.0 * 1024.0, "≤ 16 MiB"),
        format!("peak (VmHWM) {}", kib(server.peak_rss_kib() as f64)),
    );
    let bad: f64 = runs.iter().map(|r| r.bad).sum();
    report.at_most(
        "non-2xx answers",
        (bad, format!("{bad:.0}")),
        (0.0, "0"),
        String::new(),
    );
    let requests: f64 = runs.iter().map(|r| r.requests).sum();
    let scans = sample(&server, "port_exporter_scans_total");
    report.info(
        "scans per request (coalescing)",
        format!("{:.2}", scans / requests),
        format!("{scans:.0} scans for ~{requests:.0} requests, warmup included in scans"),
    );
    report.summary();
}
