//! The `--serve` attack benchmark: `cargo bench --bench attack` (as root:
//! everything runs in a network namespace of its own).
//!
//! Section `slowloris`: 1,000 and then 5,000 clients that each send one
//! byte of a request head every 4 s and reconnect as soon as they are
//! dropped, while a scraper opens a new connection every 250 ms and asks
//! for /metrics. Target: ≥ 95% of the scrapes answered within 1 s, for the
//! release binary with its default settings. Debian's node_exporter (every
//! collector off, so that only its web layer counts) takes the same attack
//! for scale; its figures are printed, not judged. Also printed: the
//! server's peak resident memory and open descriptors during the attack,
//! and both again 10 s after it ended (memory settles, descriptors must
//! return to where they were).
//!
//! Section `aborts`: 200 scrapes of a `--method bind` server whose clients
//! reset the connection 20 ms after sending (as a Prometheus that times out
//! and retries does), then 2,000 such scrapes of a `--method procfs`
//! server; printed: how long the next scrape takes (target ≤ 3 s) and how
//! long SIGTERM then takes to end the server (target ≤ 2 s).
//!
//! Section `login`: a web config with ten users whose hashes cost 10; 20
//! clients on 127.0.0.2 send wrong passwords and unknown users as fast as
//! they are answered, while each user logs in for the first time from
//! 127.0.0.1, one after the other. Target: every login answered 200
//! within 2 s. For scale, the same logins without the flood.
//!
//! Section `handshakes`: HTTPS (a P-256 certificate); 1,000 connections
//! from 127.0.0.2 replay a ClientHello, each starting over as soon as the
//! server answers it, while curl scrapes from 127.0.0.1 on a new
//! connection every 250 ms. Target: p90 of the scrapes under 1 s. For
//! scale, the same scrapes without the flood and with 3,000 connections.
//!
//! `cargo bench --bench attack -- slowloris` runs one section. Only
//! loopback inside the benchmark's own namespace is used.

#[allow(dead_code)]
mod stats;
#[path = "../util/mod.rs"]
#[allow(dead_code, unused_imports, unused_macros)]
mod util;

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, TcpStream},
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use stats::{Report, Samples, kib, secs};
use util::{Bin, ChildGuard, Server};

/// Where Debian's prometheus-node-exporter package puts it.
const NODE_EXPORTER: &str = "/usr/bin/prometheus-node-exporter";
/// How long the attack runs before scrapes are measured.
const WARMUP: Duration = Duration::from_secs(6);
/// How long scrapes are measured, one every [`SCRAPE_EVERY`].
const MEASURE: Duration = Duration::from_secs(30);
const SCRAPE_EVERY: Duration = Duration::from_millis(250);
/// The attackers' source address in the login and handshakes sections.
const THERE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

fn main() {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|arg| !arg.starts_with("--"))
        .collect();
    let wants = |section: &str| filters.is_empty() || filters.iter().any(|f| section.contains(f));
    if !util::is_root() {
        println!("SKIPPED: the attack benchmark needs root (a network namespace of its own)");
        return;
    }
    let mut report = Report::default();
    report.header();
    util::in_netns(|| {
        if wants("slowloris") {
            for clients in [1000, 5000] {
                slowloris(&mut report, clients);
            }
        }
        if wants("aborts") {
            aborts(&mut report);
        }
        if wants("login") {
            login(&mut report);
        }
        if wants("handshakes") {
            handshakes(&mut report);
        }
    });
    report.summary();
}

/// A server under attack: ours, or node_exporter.
struct Target {
    name: &'static str,
    addr: String,
    pid: u32,
    _server: Option<Server>,
    _child: Option<ChildGuard>,
}

/// Starts our release binary, as a user would.
fn ours() -> Target {
    let mut command = Bin::new().args(["--serve", "127.0.0.1:0"]).command();
    command.env_clear();
    let server = Server::spawn(command);
    Target {
        name: "port_exporter",
        addr: server.addr.clone(),
        pid: server.pid(),
        _server: Some(server),
        _child: None,
    }
}

/// Starts node_exporter with every collector off, if it is installed.
fn node_exporter() -> Option<Target> {
    if !std::path::Path::new(NODE_EXPORTER).is_file() {
        return None;
    }
    let addr = "127.0.0.1:9100".to_string();
    let mut child = ChildGuard(
        Command::new(NODE_EXPORTER)
            .arg(format!("--web.listen-address={addr}"))
            .arg("--collector.disable-defaults")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start node_exporter"),
    );
    util::wait_until("node_exporter to listen", Duration::from_secs(30), || {
        assert!(
            child.0.try_wait().unwrap().is_none(),
            "node_exporter exited"
        );
        TcpStream::connect(&addr).ok().map(drop)
    });
    Some(Target {
        name: "node_exporter",
        addr,
        pid: child.0.id(),
        _server: None,
        _child: Some(child),
    })
}

/// One scrape on a new connection: its latency, or `None` when it failed
/// or took more than 10 s.
fn scrape(addr: &str) -> Option<Duration> {
    let started = Instant::now();
    let mut stream = TcpStream::connect(addr).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    stream
        .write_all(util::request("GET", "/metrics").as_bytes())
        .ok()?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).ok()?;
    answer
        .starts_with(b"HTTP/1.1 200")
        .then(|| started.elapsed())
}

/// Attacks `target` with `clients` slowloris clients and measures scrapes.
fn attack(report: &mut Report, target: Target, clients: usize, judge: bool) {
    let fds_before = util::fd_count(target.pid);
    let stop = Arc::new(AtomicBool::new(false));
    let attackers = {
        let (addr, stop) = (target.addr.clone(), stop.clone());
        thread::spawn(move || util::slowloris(&addr, clients, &stop))
    };
    thread::sleep(WARMUP);
    let mut latencies = Vec::new();
    let (mut failed, mut peak_fds) = (0, 0);
    let started = Instant::now();
    while started.elapsed() < MEASURE {
        let next = Instant::now() + SCRAPE_EVERY;
        match scrape(&target.addr) {
            Some(took) => latencies.push(took.as_secs_f64()),
            None => failed += 1,
        }
        peak_fds = peak_fds.max(util::fd_count(target.pid));
        thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    let peak_kib = util::status_kib(target.pid, "VmHWM") as f64;
    stop.store(true, Ordering::Relaxed);
    let reconnects = attackers.join().unwrap();
    // The attackers' sockets are closed; let the server notice and settle.
    thread::sleep(Duration::from_secs(10));
    let rss_after = util::status_kib(target.pid, "VmRSS") as f64;
    let fds_after = util::fd_count(target.pid);
    let total = latencies.len() + failed;
    let within = latencies.iter().filter(|&&s| s <= 1.0).count();
    let share = within as f64 / total as f64;
    let what = format!("{}, {clients} slowloris: scrapes within 1 s", target.name);
    let context = format!(
        "{within} of {total}; {failed} failed; {reconnects} reconnects; p50 {}, p99 {}",
        latencies_at(&latencies, 0.5),
        latencies_at(&latencies, 0.99),
    );
    if judge {
        report.at_most(
            &what,
            (-share, format!("{:.1}%", share * 100.0)),
            (-0.95, "≥ 95%"),
            context,
        );
    } else {
        report.info(&what, format!("{:.1}%", share * 100.0), context);
    }
    report.info(
        &format!(
            "{}, {clients} slowloris: memory and descriptors",
            target.name
        ),
        format!("peak {}", kib(peak_kib)),
        format!(
            "10 s after: RSS {}; fds {fds_before} before, {peak_fds} at most, {fds_after} after",
            kib(rss_after)
        ),
    );
}

/// The `q` quantile of `latencies` (seconds), formatted; `-` when empty.
fn latencies_at(latencies: &[f64], q: f64) -> String {
    if latencies.is_empty() {
        return "-".into();
    }
    let samples = Samples::new(latencies.to_vec());
    secs(samples.quantile(q))
}

/// The slowloris section for `clients` attackers.
fn slowloris(report: &mut Report, clients: usize) {
    attack(report, ours(), clients, true);
    if let Some(target) = node_exporter() {
        attack(report, target, clients, false);
    }
}

/// The aborts section.
fn aborts(report: &mut Report) {
    for (method, count) in [("bind", 200), ("procfs", 2000)] {
        let mut command = Bin::new()
            .args(["--serve", "127.0.0.1:0", "--method", method])
            .command();
        command.env_clear();
        let mut server = Server::spawn(command);
        let fds_before = server.fds();
        for _ in 0..count {
            let Ok(mut stream) = TcpStream::connect(&server.addr) else {
                continue;
            };
            let _ = stream.write_all(util::request("GET", "/metrics").as_bytes());
            thread::sleep(Duration::from_millis(20));
            util::abort(stream);
        }
        let next = scrape(&server.addr).map_or(f64::INFINITY, |d| d.as_secs_f64());
        report.at_most(
            &format!("next scrape after {count} aborted {method} scrapes"),
            (next, secs(next)),
            (3.0, "≤ 3 s"),
            format!(
                "scans run: {}; fds {fds_before} before, {} after; peak RSS {}",
                util::metric(&server.get("/metrics").body, "port_exporter_scans_total")
                    .unwrap_or(f64::NAN),
                server.fds(),
                kib(server.peak_rss_kib() as f64)
            ),
        );
        server.signal("-TERM");
        let (_, took) = server.wait_exit("SIGTERM after the aborts");
        report.at_most(
            &format!("SIGTERM after {count} aborted {method} scrapes"),
            (took.as_secs_f64(), secs(took.as_secs_f64())),
            (2.0, "≤ 2 s"),
            String::new(),
        );
    }
}

/// Starts our release binary with `web` as its web config file.
fn ours_with(web: &std::path::Path) -> Server {
    let mut command = Bin::new()
        .args(["--serve", "127.0.0.1:0", "--web.config.file"])
        .arg(web)
        .command();
    command.env_clear();
    Server::spawn(command)
}

/// One `GET /metrics` from `from` with `user`'s credentials on a new
/// connection: its status and latency.
fn get_as(addr: &str, from: Ipv4Addr, user: &str, password: &str) -> (u16, f64) {
    let started = Instant::now();
    let Ok(mut stream) = util::connect_from(from, addr) else {
        return (0, started.elapsed().as_secs_f64());
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let request = format!(
        "GET /metrics HTTP/1.1\r\nHost: bench\r\n{}\r\nConnection: close\r\n\r\n",
        util::basic_auth(user, password)
    );
    let mut answer = Vec::new();
    if stream.write_all(request.as_bytes()).is_err() || stream.read_to_end(&mut answer).is_err() {
        return (0, started.elapsed().as_secs_f64());
    }
    let status = std::str::from_utf8(&answer)
        .ok()
        .and_then(|text| text.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    (status, started.elapsed().as_secs_f64())
}

/// The login section.
fn login(report: &mut Report) {
    const USERS: usize = 10;
    let dir = util::open_tempdir();
    let web = dir.path().join("web.yml");
    let mut text = "basic_auth_users:\n".to_string();
    for user in 0..USERS {
        let hash = bcrypt::hash(format!("secret {user}"), 10).unwrap();
        text.push_str(&format!("  user{user}: '{hash}'\n"));
    }
    std::fs::write(&web, text).unwrap();
    for flooded in [false, true] {
        let server = ours_with(&web);
        let stop = Arc::new(AtomicBool::new(false));
        let refused = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let flood: Vec<_> = (0..if flooded { 20 } else { 0 })
            .map(|n| {
                let (addr, stop, refused) = (server.addr.clone(), stop.clone(), refused.clone());
                thread::spawn(move || {
                    let mut round = 0;
                    while !stop.load(Ordering::Relaxed) {
                        round += 1;
                        let user = if round % 2 == 0 { "user0" } else { "mallory" };
                        let (status, _) = get_as(&addr, THERE, user, &format!("flood {n} {round}"));
                        match status {
                            401 => {
                                refused.fetch_add(1, Ordering::Relaxed);
                            }
                            _ => thread::sleep(Duration::from_millis(5)),
                        }
                    }
                })
            })
            .collect();
        thread::sleep(Duration::from_secs(if flooded { 3 } else { 0 }));
        let mut latencies = Vec::new();
        let mut failed = 0;
        for user in 0..USERS {
            let (status, took) = get_as(
                &server.addr,
                Ipv4Addr::LOCALHOST,
                &format!("user{user}"),
                &format!("secret {user}"),
            );
            if status == 200 {
                latencies.push(took);
            } else {
                failed += 1;
            }
            thread::sleep(Duration::from_millis(500));
        }
        stop.store(true, Ordering::Relaxed);
        for thread in flood {
            thread.join().unwrap();
        }
        let worst = if failed > 0 {
            f64::INFINITY
        } else {
            latencies.iter().copied().fold(0.0, f64::max)
        };
        let detail = format!(
            "{} of {USERS} answered 200; median {}; flood answered 401 {} times",
            latencies.len(),
            latencies_at(&latencies, 0.5),
            refused.load(Ordering::Relaxed)
        );
        if flooded {
            report.at_most(
                "first logins (cost 10) while 20 clients flood wrong credentials: slowest",
                (worst, secs(worst)),
                (2.0, "≤ 2 s"),
                detail,
            );
        } else {
            report.info(
                "first logins (cost 10), no flood: slowest",
                secs(worst),
                detail,
            );
        }
    }
}

/// The handshakes section.
fn handshakes(report: &mut Report) {
    let pki = util::pki::Pki::new();
    let web = pki.config("tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n");
    let hello = util::attack::client_hello();
    for flood_size in [0, 1000, 3000] {
        let flooded = flood_size > 0;
        let server = ours_with(&web);
        let url = format!("https://127.0.0.1:{}/metrics", server.port());
        let stop = Arc::new(AtomicBool::new(false));
        let answers = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let flood = flooded.then(|| {
            let (addr, stop, hello) = (server.addr.clone(), stop.clone(), hello.clone());
            let answers = answers.clone();
            thread::spawn(move || {
                util::attack::handshake_flood(&addr, THERE, flood_size, &hello, &stop, &answers);
                answers.load(Ordering::SeqCst)
            })
        });
        if flooded {
            thread::sleep(WARMUP);
        }
        let mut latencies = Vec::new();
        let mut failed = 0;
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(20) {
            let next = Instant::now() + SCRAPE_EVERY;
            let begun = Instant::now();
            let out = Command::new("curl")
                .args([
                    "-sS",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "--max-time",
                    "10",
                ])
                .arg("--cacert")
                .arg(pki.path("ca.pem"))
                .arg(&url)
                .output()
                .expect("cannot run curl");
            if out.stdout == b"200" {
                latencies.push(begun.elapsed().as_secs_f64());
            } else {
                failed += 1;
            }
            thread::sleep(next.saturating_duration_since(Instant::now()));
        }
        stop.store(true, Ordering::Relaxed);
        let answered = flood.map(|f| f.join().unwrap());
        let p90 = if latencies.is_empty() {
            f64::INFINITY
        } else {
            Samples::new(latencies.clone()).quantile(0.9)
        };
        let detail = format!(
            "{} scrapes, {failed} failed; p50 {}, p99 {}; {} flood handshakes answered; peak RSS {}",
            latencies.len() + failed,
            latencies_at(&latencies, 0.5),
            latencies_at(&latencies, 0.99),
            answered.map_or("no".into(), |n| n.to_string()),
            kib(server.peak_rss_kib() as f64),
        );
        let what = format!("HTTPS scrape p90 during a {flood_size}-connection ClientHello flood");
        if flood_size == 1000 {
            report.at_most(&what, (p90, secs(p90)), (1.0, "< 1 s"), detail);
        } else if flooded {
            report.info(&what, secs(p90), detail);
        } else {
            report.info(
                "HTTPS scrape p90, no flood (curl, new connection)",
                secs(p90),
                detail,
            );
        }
    }
}
