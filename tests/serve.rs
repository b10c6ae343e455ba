//! `--serve`: HTTP answers, coalesced scans, failures, abuse and shutdown,
//! against the built binary on 127.0.0.1, and Debian's Prometheus server
//! scraping it.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{Shutdown, TcpListener, TcpStream},
    process::{Command, ExitStatus, Stdio},
    sync::{Arc, Barrier, Mutex, mpsc},
    thread,
    time::{Duration, Instant},
};

use crate::util::{self, BIN, ChildGuard, HttpResponse, in_netns, open_ports, run, stdout_of};

/// How long any normal answer may take in these tests.
const ONE_SECOND: Duration = Duration::from_secs(1);

/// A running `port_exporter --serve`, stopped when dropped.
struct Server {
    child: ChildGuard,
    addr: String,
    /// What it printed on stderr after the start line.
    log: Arc<Mutex<String>>,
}

impl Server {
    /// Starts `port_exporter --serve 127.0.0.1:0 ARGS...`.
    fn start(args: &[&str]) -> Server {
        let mut command = Command::new(BIN);
        command.args(["--serve", "127.0.0.1:0"]).args(args);
        Server::spawn(command)
    }

    /// Starts `command`, which must run the server, and waits for the line
    /// that names the bound address.
    fn spawn(mut command: Command) -> Server {
        // Its own process group, so that a wrapper (strace) and the server
        // it runs are stopped together.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let sink = log.clone();
        thread::spawn(move || {
            let mut lines = BufReader::new(stderr).lines();
            let first = lines.next().and_then(Result::ok).unwrap_or_default();
            let _ = tx.send(first);
            for line in lines.map_while(Result::ok) {
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let mut child = ChildGuard(child);
        let first = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the server said nothing");
        let Some(rest) = first.strip_prefix("port_exporter: listening on ") else {
            let status = child.0.wait().unwrap();
            panic!("unexpected start line {first:?} ({status})");
        };
        let addr = rest.split(' ').next().unwrap().to_string();
        Server { child, addr, log }
    }

    /// GETs `path` and returns the response, within a second.
    #[track_caller]
    fn get(&self, path: &str) -> HttpResponse {
        util::http(&self.addr, "GET", path, ONE_SECOND)
    }

    /// The value of an unlabeled sample in a fresh scrape.
    #[track_caller]
    fn metric(&self, name: &str) -> f64 {
        value_of(&self.get("/metrics").body, name)
    }

    /// Sends `signal` and returns how the process ended and how long it took.
    fn stop(&mut self, signal: &str) -> (ExitStatus, Duration) {
        let pid = self.child.0.id().to_string();
        let sent = Instant::now();
        assert!(
            Command::new("kill")
                .args([signal, &pid])
                .status()
                .unwrap()
                .success()
        );
        let deadline = sent + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.0.try_wait().unwrap() {
                return (status, sent.elapsed());
            }
            assert!(Instant::now() < deadline, "the server ignored {signal}");
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// The log so far, once it satisfies `ready` (stderr is read by another
    /// thread, so a line the server wrote may not have arrived yet).
    #[track_caller]
    fn log_when(&self, ready: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let log = self.log.lock().unwrap().clone();
            if ready(&log) || Instant::now() > deadline {
                return log;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// The server's peak resident memory so far (VmHWM), in KiB.
    fn peak_rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.child.0.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    /// Whether the process still runs.
    fn alive(&mut self) -> bool {
        self.child.0.try_wait().unwrap().is_none()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.0.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
    }
}

/// Opens a connection to `addr`, sends `bytes`, and reads whatever comes
/// back until the server closes (or `limit` passes). Errors on either side
/// are the point of the callers, so they are not failures here.
fn exchange(addr: &str, bytes: &[u8], limit: Duration) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(limit)).unwrap();
    let _ = stream.write_all(bytes);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    answer
}

/// The value of the unlabeled sample `name` in an exposition.
#[track_caller]
fn value_of(text: &str, name: &str) -> f64 {
    let prefix = format!("{name} ");
    let line = text
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no {name} in:\n{text}"));
    line[prefix.len()..].parse().unwrap()
}

/// The instance_open_ports lines of an exposition.
fn port_lines(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| l.starts_with("instance_open_ports"))
        .collect()
}

#[test]
fn answers_get_and_head_on_both_paths_with_the_one_shot_text() {
    if !util::need_root() {
        return;
    }
    in_netns(|| {
        let _listeners: Vec<TcpListener> = ["127.0.0.1:0", "[::1]:0"]
            .iter()
            .map(|a| TcpListener::bind(a).unwrap())
            .collect();
        let server = Server::start(&[]);
        let one_shot = stdout_of(&run::<[&str; 0], &str>([]));
        for path in ["/", "/metrics", "/metrics?collect=1"] {
            let response = server.get(path);
            assert_eq!(response.status, 200, "{path}");
            assert_eq!(
                response.header("content-type"),
                Some("text/plain; version=0.0.4; charset=utf-8")
            );
            assert_eq!(port_lines(&response.body), port_lines(&one_shot), "{path}");
            assert!(response.body.ends_with('\n'));
        }
        let head = util::http(&server.addr, "HEAD", "/metrics", ONE_SECOND);
        assert_eq!(head.status, 200);
        assert_eq!(
            head.header("content-type"),
            Some("text/plain; version=0.0.4; charset=utf-8")
        );
        assert!(head.body.is_empty(), "HEAD sent a body");
        let length: usize = head
            .header("content-length")
            .expect("no content-length")
            .parse()
            .unwrap();
        assert!(length > 500, "{length}");
    });
}

#[test]
fn other_paths_are_404_and_other_methods_405() {
    let server = Server::start(&[]);
    for path in ["/metric", "/metrics/", "/favicon.ico", "/../metrics"] {
        assert_eq!(server.get(path).status, 404, "{path}");
    }
    for method in ["POST", "PUT", "DELETE", "OPTIONS", "PATCH"] {
        let response = util::http(&server.addr, method, "/metrics", ONE_SECOND);
        assert_eq!(response.status, 405, "{method}");
        assert_eq!(response.header("allow"), Some("GET, HEAD"), "{method}");
    }
    // None of these scanned.
    assert_eq!(server.metric("port_exporter_scans_total"), 1.0);
}

#[test]
fn port_selection_applies_as_in_one_shot_mode() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let ports = format!("1-100,{port}");
    let server = Server::start(&[
        "--ports",
        &ports,
        "--exclude",
        "50-100",
        "--include-closed",
        "--method",
        "procfs",
    ]);
    let body = server.get("/metrics").body;
    let samples = util::samples(&body);
    assert_eq!(samples.len(), 50, "{body}");
    assert_eq!(samples.get(&port), Some(&1));
    assert!((1..50).all(|p| samples.get(&p) == Some(&0)), "{body}");
    assert!(body.contains("port_exporter_build_info{method=\"procfs\""));
}

#[test]
fn the_server_reports_its_scans() {
    let server = Server::start(&[]);
    assert_eq!(server.metric("port_exporter_scans_total"), 1.0);
    assert_eq!(server.metric("port_exporter_scans_total"), 2.0);
    assert_eq!(server.metric("port_exporter_scan_errors_total"), 0.0);
    let body = server.get("/").body;
    let own = server.addr.rsplit(':').next().unwrap().parse().unwrap();
    assert!(
        open_ports(&body).contains(&own),
        "the server does not see its own listener"
    );
    let Some(promtool) = util::need_program("promtool") else {
        return;
    };
    let (ok, said) = util::promtool_check(&promtool, &body);
    assert!(ok && said.is_empty(), "promtool: {said}");
}

#[test]
fn simultaneous_scrapes_share_scans() {
    // bind scans take long enough (all ports) for 200 requests to overlap.
    util::isolated(|| {
        let server = Server::start(&["--method", "bind"]);
        let barrier = Arc::new(Barrier::new(200));
        let answers: Vec<_> = (0..200)
            .map(|_| {
                let (addr, barrier) = (server.addr.clone(), barrier.clone());
                thread::spawn(move || {
                    let mut stream = TcpStream::connect(&addr).unwrap();
                    stream
                        .set_read_timeout(Some(Duration::from_secs(30)))
                        .unwrap();
                    barrier.wait();
                    write!(
                        stream,
                        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                    )
                    .unwrap();
                    let mut raw = String::new();
                    stream.read_to_string(&mut raw).unwrap();
                    util::parse_http(&raw)
                })
            })
            .collect();
        for answer in answers {
            let answer = answer.join().unwrap();
            assert_eq!(answer.status, 200);
            assert!(value_of(&answer.body, "port_exporter_scans_total") <= 3.0);
        }
        let scans = server.metric("port_exporter_scans_total");
        assert!(
            (2.0..=4.0).contains(&scans),
            "{scans} scans for 201 scrapes"
        );
    });
}

#[test]
fn a_failed_scan_answers_500_and_the_next_one_works() {
    let Some(strace) = util::need_program("strace") else {
        return;
    };
    // Fail the first sendto(2) of each thread: only the netlink request
    // uses it. strace counts per thread, and tokio runs the next scan on the
    // same (idle) blocking thread, whose second sendto goes through.
    let mut command = Command::new(strace);
    command
        .args([
            "-f",
            "-o",
            "/dev/null",
            "-e",
            "trace=sendto",
            "-e",
            "inject=sendto:error=EACCES:when=1",
            BIN,
        ])
        .args(["--serve", "127.0.0.1:0", "--method", "netlink"]);
    let server = Server::spawn(command);
    let failed = server.get("/metrics");
    assert_eq!(failed.status, 500);
    assert_eq!(failed.body.lines().count(), 1, "{}", failed.body);
    assert!(
        failed
            .body
            .starts_with("scan failed: netlink sock_diag dump failed: Permission denied"),
        "{}",
        failed.body
    );
    let ok = server.get("/metrics");
    assert_eq!(ok.status, 200);
    assert_eq!(value_of(&ok.body, "port_exporter_scans_total"), 2.0);
    assert_eq!(value_of(&ok.body, "port_exporter_scan_errors_total"), 1.0);
    let log = server.log_when(|log| log.contains("scan failed"));
    assert!(
        log.contains(
            "port_exporter: scan failed: netlink sock_diag dump failed: Permission denied"
        ),
        "{log}"
    );
}

#[test]
fn hostile_and_slow_clients_do_not_stop_a_normal_scrape() {
    let mut server = Server::start(&[]);
    let addr = server.addr.clone();
    let idle_since = Instant::now();
    // 200 clients that send one header byte per second.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let slow: Vec<_> = (0..200)
        .map(|_| {
            let (addr, stop) = (addr.clone(), stop.clone());
            thread::spawn(move || {
                let mut stream = TcpStream::connect(&addr).unwrap();
                for byte in b"GET /metrics HTTP/1.1\r\nHost: slow\r\n".iter().cycle() {
                    if stop.load(std::sync::atomic::Ordering::Relaxed)
                        || stream.write_all(&[*byte]).is_err()
                    {
                        break;
                    }
                    thread::sleep(Duration::from_secs(1));
                }
            })
        })
        .collect();
    // 50 that connect and say nothing.
    let silent: Vec<TcpStream> = (0..50)
        .map(|_| TcpStream::connect(&addr).unwrap())
        .collect();
    // Garbage, binary noise and a 1 MiB header line.
    let mut refused = Vec::new();
    for junk in [
        b"GARBAGE\r\n\r\n".to_vec(),
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n".to_vec(),
        b"GET / HTTP/9.9\r\n\r\n".to_vec(),
        [
            b"GET / HTTP/1.1\r\nX-Big: ".to_vec(),
            vec![b'a'; 1 << 20],
            b"\r\n\r\n".to_vec(),
        ]
        .concat(),
        [
            b"GET /".to_vec(),
            vec![b'a'; 1 << 20],
            b" HTTP/1.1\r\n\r\n".to_vec(),
        ]
        .concat(),
    ] {
        let answer = exchange(&addr, &junk, Duration::from_secs(5));
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 4"),
            "{answer}"
        );
        refused.push(answer.lines().next().unwrap_or("closed").to_string());
    }
    thread::sleep(Duration::from_millis(1500));
    for _ in 0..5 {
        let started = Instant::now();
        let response = server.get("/metrics");
        assert_eq!(response.status, 200);
        assert!(
            started.elapsed() < ONE_SECOND,
            "a normal scrape took {:?}",
            started.elapsed()
        );
    }
    assert!(server.alive());
    // The idle and the slow connections are closed after the header timeout.
    for mut stream in silent {
        stream
            .set_read_timeout(Some(Duration::from_secs(15)))
            .unwrap();
        let mut buf = [0; 64];
        let read = stream.read(&mut buf);
        assert!(
            matches!(read, Ok(0)) || read.is_err(),
            "an idle connection got {read:?}"
        );
    }
    let waited = idle_since.elapsed();
    assert!(
        waited < Duration::from_secs(12),
        "idle connections lived {waited:?}"
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for handle in slow {
        handle.join().unwrap();
    }
    // 512 connections with a full 16 KiB buffer each would be ~8 MiB more.
    let peak = server.peak_rss_kib();
    assert!(peak < 24 * 1024, "memory peaked at {peak} KiB");
    assert_eq!(server.get("/").status, 200);
    assert!(server.alive(), "refused with {refused:?}");
}

#[test]
fn connections_beyond_the_cap_are_closed_at_once() {
    let server = Server::start(&[]);
    let held: Vec<TcpStream> = (0..600)
        .map(|_| TcpStream::connect(&server.addr).unwrap())
        .collect();
    thread::sleep(Duration::from_millis(300));
    let closed = held
        .iter()
        .filter(|stream| {
            stream.set_nonblocking(true).unwrap();
            match (&**stream).read(&mut [0; 8]) {
                Ok(0) => true,
                Ok(_) => false,
                Err(err) => err.kind() != std::io::ErrorKind::WouldBlock,
            }
        })
        .count();
    // 600 - 512 = 88 over the cap; a few may not have been accepted yet.
    assert!(
        (80..=88).contains(&closed),
        "{closed} of 600 connections were closed"
    );
    drop(held);
    thread::sleep(Duration::from_millis(300));
    assert_eq!(server.get("/metrics").status, 200);
}

#[test]
fn sigterm_finishes_answers_in_flight_and_exits_0() {
    util::isolated(|| {
        for signal in ["-TERM", "-INT"] {
            // A bind scan of 30,000 ports is slow enough to still be running
            // when the signal arrives.
            let mut server = Server::start(&["--method", "bind", "--ports", "1-30000"]);
            let mut stream = TcpStream::connect(&server.addr).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            write!(stream, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            thread::sleep(Duration::from_millis(30));
            // The answer is still being worked on when the signal arrives.
            stream.set_nonblocking(true).unwrap();
            let pending = stream.read(&mut [0; 8]);
            assert!(
                matches!(&pending, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
                "{signal}: answered before the signal: {pending:?}"
            );
            stream.set_nonblocking(false).unwrap();
            let (status, took) = server.stop(signal);
            assert!(status.success(), "{signal}: {status}");
            assert!(took < ONE_SECOND, "{signal}: exiting took {took:?}");
            let mut raw = String::new();
            let _ = stream.read_to_string(&mut raw);
            let answer = util::parse_http(&raw);
            assert_eq!(answer.status, 200, "{signal}");
            assert!(
                answer.body.contains("port_exporter_build_info"),
                "{signal}: cut short"
            );
            assert!(
                TcpStream::connect(&server.addr).is_err(),
                "{signal}: still accepting"
            );
            let _ = stream.shutdown(Shutdown::Both);
        }
    });
}

#[test]
fn address_forms() {
    for form in ["[::1]:0", "localhost:0", ":0"] {
        let mut command = Command::new(BIN);
        command.args(["--serve", form]);
        let server = Server::spawn(command);
        let port = server.addr.rsplit(':').next().unwrap();
        let local = if form.starts_with("[::1]") {
            format!("[::1]:{port}")
        } else {
            format!("127.0.0.1:{port}")
        };
        assert_eq!(
            util::http(&local, "GET", "/metrics", ONE_SECOND).status,
            200,
            "{form}"
        );
    }
    // A bare --serve means :8000; this only checks it parses and starts, in
    // a namespace of its own so that port 8000 is surely free.
    if util::need_root() {
        in_netns(|| {
            let server = Server::spawn({
                let mut command = Command::new(BIN);
                command.arg("--serve");
                command
            });
            assert!(server.addr.ends_with(":8000"), "{}", server.addr);
            assert_eq!(
                util::http("127.0.0.1:8000", "GET", "/", ONE_SECOND).status,
                200
            );
            assert_eq!(util::http("[::1]:8000", "GET", "/", ONE_SECOND).status, 200);
        });
    }
}

#[test]
fn an_address_in_use_is_one_line_and_exit_1() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let output = run(["--serve", &addr]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = util::stderr_of(&output);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&addr) && stderr.contains("Address already in use"),
        "{stderr}"
    );
    let output = run(["--serve", "127.0.0.1:0", "--output", "x.prom"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(util::stderr_of(&output).contains("--output"));
    let output = run(["--serve", "nonsense"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(util::stderr_of(&output).contains("'nonsense'"));
}

#[test]
fn prometheus_scrapes_it() {
    if !util::need_root() {
        return;
    }
    let Some(prometheus) = util::need_program("prometheus") else {
        return;
    };
    in_netns(|| {
        let _extra = TcpListener::bind("127.0.0.1:7777").unwrap();
        let _server = Server::spawn({
            let mut command = Command::new(BIN);
            command.args(["--serve", "127.0.0.1:8000"]);
            command
        });
        let dir = util::open_tempdir();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: ports\n    static_configs:\n      - targets: ['127.0.0.1:8000']\n",
        )
        .unwrap();
        let mut child = ChildGuard(
            Command::new(prometheus)
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("data").display()
                ))
                .arg("--web.listen-address=127.0.0.1:9090")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let query = |q: &str| -> Option<String> {
            let path = format!("/api/v1/query?query={q}");
            let response = util::http("127.0.0.1:9090", "GET", &path, Duration::from_secs(5));
            (response.status == 200).then_some(response.body)
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        let (up, ports) = loop {
            assert!(child.0.try_wait().unwrap().is_none(), "prometheus exited");
            if TcpStream::connect("127.0.0.1:9090").is_ok() {
                let up = query("up%7Bjob%3D%22ports%22%7D").unwrap_or_default();
                let ports = query("instance_open_ports").unwrap_or_default();
                if up.contains("\"value\":[") && ports.contains("\"port\":\"7777\"") {
                    break (up, ports);
                }
            }
            assert!(
                Instant::now() < deadline,
                "prometheus never scraped the exporter"
            );
            thread::sleep(Duration::from_millis(250));
        };
        assert!(up.contains("\"1\"]"), "up is not 1: {up}");
        for port in ["7777", "8000", "9090"] {
            assert!(
                ports.contains(&format!("\"port\":\"{port}\"")),
                "no series for {port}: {ports}"
            );
        }
        assert_eq!(
            ports
                .matches("\"__name__\":\"instance_open_ports\"")
                .count(),
            3,
            "{ports}"
        );
        assert!(ports.contains("\"job\":\"ports\""), "{ports}");
    });
}

#[test]
fn unprivileged_bind_scans_say_once_what_they_skipped() {
    if !util::need_root() || util::need_program("setpriv").is_none() {
        return;
    }
    in_netns(|| {
        let (_dir, bin) = util::shared_bin();
        let mut command = Command::new("setpriv");
        command
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&bin)
            .args([
                "--serve",
                "127.0.0.1:0",
                "--method",
                "bind",
                "--ports",
                "1-2000",
            ]);
        let server = Server::spawn(command);
        for _ in 0..3 {
            assert_eq!(server.metric("port_exporter_scan_skipped_ports"), 1023.0);
        }
        let log = server.log_when(|log| log.contains("could not be checked"));
        assert_eq!(
            log.matches("1023 ports could not be checked").count(),
            1,
            "{log}"
        );
    });
}

#[test]
fn random_bytes_never_bring_it_down() {
    let mut server = Server::start(&[]);
    // xorshift64: the same "random" requests on every run.
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for round in 0..300 {
        let len = (next() % 4096) as usize + 1;
        let mut noise: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        // Every other request starts well-formed, so the noise reaches the
        // header and target parsers, not just the request line.
        if round % 2 == 0 {
            let prefixes: [&[u8]; 3] = [
                b"GET /metrics HTTP/1.1\r\n",
                b"GET /",
                b"HEAD / HTTP/1.1\r\nHost: ",
            ];
            noise.splice(0..0, prefixes[round % 3].iter().copied());
        }
        noise.extend_from_slice(b"\r\n\r\n");
        exchange(&server.addr, &noise, Duration::from_secs(10));
        assert!(
            server.alive(),
            "the server died on request {round}: {noise:?}"
        );
    }
    assert_eq!(server.get("/metrics").status, 200);
}

#[test]
fn a_client_that_stops_reading_is_dropped() {
    use socket2::{Domain, Socket, Type};
    let server = Server::start(&[]);
    // A small receive buffer and 2,000 pipelined requests, never read: the
    // server's writes stall, and after WRITE_TIMEOUT (10 s) it gives up.
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let addr: std::net::SocketAddr = server.addr.parse().unwrap();
    socket.connect(&addr.into()).unwrap();
    let mut stream: TcpStream = socket.into();
    let requests = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".repeat(2000);
    stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let _ = stream.write_all(requests.as_bytes());
    thread::sleep(Duration::from_secs(12));
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut answers = Vec::new();
    let ended = match stream.read_to_end(&mut answers) {
        Ok(_) => true,
        Err(err) => err.kind() == std::io::ErrorKind::ConnectionReset,
    };
    let count = String::from_utf8_lossy(&answers)
        .matches("HTTP/1.1 200")
        .count();
    assert!(ended, "the connection was kept open");
    assert!(
        count < 2000,
        "all {count} answers were written to a client that did not read"
    );
    assert_eq!(server.get("/metrics").status, 200);
}
