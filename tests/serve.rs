//! `--serve`: HTTP answers, coalesced scans, failures, abuse and shutdown,
//! against the built binary on 127.0.0.1, and Debian's Prometheus server
//! scraping it.

use std::{
    io::{Read, Write},
    net::{Shutdown, TcpListener, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use crate::util::{
    self, ANSWER_LIMIT, Bin, Netns, PROMETHEUS, PROMTOOL, SETPRIV, STRACE, Server, UNSHARE,
    exchange, in_netns, open_ports, port_lines, prometheus::Prometheus, run, stdout_of, tests,
    value_of, wait_until,
};

tests![
    (a_client_that_stops_reading_is_dropped, Netns),
    (prometheus_scrapes_it, Netns, PROMETHEUS),
    (hostile_and_slow_clients_do_not_stop_a_normal_scrape, Netns),
    (
        answers_get_and_head_on_both_paths_with_the_one_shot_text,
        Netns
    ),
    other_paths_are_404_and_other_methods_405,
    (port_selection_applies_as_in_one_shot_mode, Netns),
    (the_server_reports_its_scans, Netns, PROMTOOL),
    (simultaneous_scrapes_share_scans, Netns),
    (a_failed_scan_answers_500_and_the_next_one_works, STRACE),
    (
        the_cap_evicts_the_longest_waiting_connection_never_a_busy_one,
        Netns
    ),
    (
        when_every_connection_is_busy_a_new_one_is_closed_at_once,
        Netns
    ),
    (
        reconnecting_slowloris_clients_do_not_keep_scrapes_out,
        Netns
    ),
    (sigterm_finishes_answers_in_flight_and_exits_0, Netns),
    address_forms,
    (a_bare_serve_means_port_8000, Netns),
    (an_address_in_use_is_one_line_and_exit_1, Netns, UNSHARE),
    (
        unprivileged_bind_scans_say_once_what_they_skipped,
        Netns,
        SETPRIV
    ),
    random_bytes_never_bring_it_down,
    (aborted_scrapes_leave_no_scans_behind, Netns),
    (sigterm_ends_the_server_even_while_a_scan_is_stuck, Netns),
    (a_log_nobody_reads_never_stops_the_server, STRACE),
    (answers_are_never_older_than_their_request, Netns),
];

/// How long a normal scrape may take while attackers hold connections: far
/// more than a scrape needs on any machine, far less than the 5 s header
/// timeout that a server blocked by them would make a scrape wait.
const UNDER_ATTACK: Duration = Duration::from_secs(3);

/// Connects to `addr` and sends a GET for /metrics, leaving the answer to
/// be read; returns the stream and its local port.
fn send_get(addr: &str) -> (TcpStream, u16) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(ANSWER_LIMIT)).unwrap();
    stream
        .write_all(util::request("GET", "/metrics").as_bytes())
        .unwrap();
    let port = stream.local_addr().unwrap().port();
    (stream, port)
}

/// Reads the whole answer on `stream`.
#[track_caller]
fn read_answer(stream: &mut TcpStream) -> util::HttpResponse {
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap();
    util::parse_http(&raw)
}

fn answers_get_and_head_on_both_paths_with_the_one_shot_text() {
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
        let head = util::http(&server.addr, "HEAD", "/metrics", ANSWER_LIMIT);
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

fn other_paths_are_404_and_other_methods_405() {
    let server = Server::start(&[]);
    for path in ["/metric", "/metrics/", "/favicon.ico", "/../metrics"] {
        assert_eq!(server.get(path).status, 404, "{path}");
    }
    for method in ["POST", "PUT", "DELETE", "OPTIONS", "PATCH"] {
        let response = util::http(&server.addr, method, "/metrics", ANSWER_LIMIT);
        assert_eq!(response.status, 405, "{method}");
        assert_eq!(response.header("allow"), Some("GET, HEAD"), "{method}");
    }
    // None of these scanned.
    assert_eq!(server.metric("port_exporter_scans_total"), 1.0);
}

fn port_selection_applies_as_in_one_shot_mode() {
    in_netns(|| {
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
    });
}

fn the_server_reports_its_scans() {
    in_netns(|| {
        let server = Server::start(&[]);
        assert_eq!(server.metric("port_exporter_scans_total"), 1.0);
        assert_eq!(server.metric("port_exporter_scans_total"), 2.0);
        assert_eq!(server.metric("port_exporter_scan_errors_total"), 0.0);
        let body = server.get("/").body;
        assert_eq!(
            open_ports(&body),
            [server.port()].into(),
            "the server does not see exactly its own listener"
        );
        util::assert_promtool_clean(&body, "a scrape");
    });
}

fn simultaneous_scrapes_share_scans() {
    in_netns(|| {
        let server = Server::start(&["--method", "bind", "--ports", "1-1000"]);
        // With the lock held, the first scan cannot finish, so every request
        // below arrives while it is pending.
        let lock = util::hold_bind_scan_lock();
        let mut streams: Vec<(TcpStream, u16)> = (0..200).map(|_| send_get(&server.addr)).collect();
        wait_until(
            "the server to read all 200 requests",
            ANSWER_LIMIT * 3,
            || {
                streams
                    .iter()
                    .all(|(_, port)| util::request_was_read(server.port(), *port))
                    .then_some(())
            },
        );
        drop(lock);
        // The first requests started scan 1; the others arrived while it
        // ran, so they share scan 2, which started after all of them.
        let mut seen = Vec::new();
        for (stream, _) in &mut streams {
            let answer = read_answer(stream);
            assert_eq!(answer.status, 200);
            seen.push(value_of(&answer.body, "port_exporter_scans_total") as u32);
        }
        seen.sort();
        assert_eq!(seen[0], 1, "no answer came from the first scan");
        assert_eq!(seen[199], 2, "no answer came from the second scan");
        assert_eq!(server.metric("port_exporter_scans_total"), 3.0);
    });
}

fn a_failed_scan_answers_500_and_the_next_one_works() {
    // Fail the first sendto(2) of each thread: only the netlink request
    // uses it. strace counts per thread, and every scan runs on the one
    // scan thread, whose second sendto goes through.
    let server = Server::start_bin(Bin::new().inject("sendto:error=EACCES:when=1").args([
        "--serve",
        "127.0.0.1:0",
        "--method",
        "netlink",
    ]));
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
    let log = server.log_when("the failure in the log", |log| log.contains("scan failed"));
    assert!(
        log.contains(
            "port_exporter: scan failed: netlink sock_diag dump failed: Permission denied"
        ),
        "{log}"
    );
}

fn hostile_and_slow_clients_do_not_stop_a_normal_scrape() {
    in_netns(|| {
        let mut server = Server::start(&[]);
        let addr = server.addr.clone();
        let fds_before = server.fds();
        let idle_since = Instant::now();
        // 200 clients that send one header byte per second.
        let stop = Arc::new(AtomicBool::new(false));
        let slow: Vec<_> = (0..200)
            .map(|_| {
                let (addr, stop) = (addr.clone(), stop.clone());
                thread::spawn(move || {
                    let mut stream = TcpStream::connect(&addr).unwrap();
                    for byte in b"GET /metrics HTTP/1.1\r\nHost: slow\r\n".iter().cycle() {
                        if stop.load(Ordering::Relaxed) || stream.write_all(&[*byte]).is_err() {
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
        // Every attacker is in before the normal scrapes start.
        wait_until(
            "the server to accept the 250 attackers",
            ANSWER_LIMIT,
            || (server.fds() >= fds_before + 250).then_some(()),
        );
        for _ in 0..5 {
            let started = Instant::now();
            let response = server.get("/metrics");
            assert_eq!(response.status, 200);
            assert!(
                started.elapsed() < UNDER_ATTACK,
                "a normal scrape took {:?}",
                started.elapsed()
            );
        }
        assert!(server.alive());
        // The idle and the slow connections are closed after the header timeout.
        for mut stream in silent {
            stream
                .set_read_timeout(Some(Duration::from_secs(30)))
                .unwrap();
            let mut buf = [0; 64];
            let read = stream.read(&mut buf);
            assert!(
                matches!(read, Ok(0)) || read.is_err(),
                "an idle connection got {read:?}"
            );
        }
        // The header timeout is 5 s: twice that bounds a server that honours it.
        let waited = idle_since.elapsed();
        assert!(
            waited < Duration::from_secs(20),
            "idle connections lived {waited:?}"
        );
        stop.store(true, Ordering::Relaxed);
        for handle in slow {
            handle.join().unwrap();
        }
        // 512 connections with a full 16 KiB buffer each would be ~8 MiB more.
        let peak = server.peak_rss_kib();
        assert!(peak < 24 * 1024, "memory peaked at {peak} KiB");
        assert_eq!(server.get("/").status, 200);
        assert!(server.alive(), "refused with {refused:?}");
    });
}

/// Whether the server has closed `stream` (read gives end of file or an
/// error), without waiting.
pub fn closed(stream: &TcpStream) -> bool {
    stream.set_nonblocking(true).unwrap();
    let closed = match (&*stream).read(&mut [0; 8]) {
        Ok(0) => true,
        Ok(_) => false,
        Err(err) => err.kind() != std::io::ErrorKind::WouldBlock,
    };
    stream.set_nonblocking(false).unwrap();
    closed
}

/// A server with a cap of 512 connections (a file limit of 768).
fn capped_server(args: &[&str]) -> Server {
    let server = Server::start_bin(
        Bin::new()
            .fd_limit(768)
            .args(["--serve", "127.0.0.1:0"])
            .args(args),
    );
    assert_eq!(server.cap(), 512, "{}", server.start_line);
    server
}

fn the_cap_evicts_the_longest_waiting_connection_never_a_busy_one() {
    in_netns(|| {
        let server = capped_server(&["--method", "bind", "--ports", "1-100"]);
        let fds = server.fds();
        // 100 connections being answered (their scan waits for the lock),
        // then 412 that say nothing: the cap is reached.
        let lock = util::hold_bind_scan_lock();
        let mut busy: Vec<(TcpStream, u16)> = (0..100).map(|_| send_get(&server.addr)).collect();
        wait_until("the 100 requests to be read", ANSWER_LIMIT * 3, || {
            busy.iter()
                .all(|(_, port)| util::request_was_read(server.port(), *port))
                .then_some(())
        });
        let mut silent: Vec<TcpStream> = Vec::new();
        for _ in 0..412 {
            silent.push(TcpStream::connect(&server.addr).unwrap());
        }
        wait_until("the server to hold 512 connections", ANSWER_LIMIT, || {
            (server.fds() == fds + 512).then_some(())
        });
        // 50 more: the 50 silent ones that came first give way, and only they.
        let newer: Vec<TcpStream> = (0..50)
            .map(|_| TcpStream::connect(&server.addr).unwrap())
            .collect();
        wait_until("50 connections to be evicted", ANSWER_LIMIT, || {
            (silent.iter().filter(|s| closed(s)).count() == 50).then_some(())
        });
        assert!(
            silent[..50].iter().all(closed),
            "not the oldest were evicted"
        );
        assert!(!silent[50..].iter().any(closed));
        assert!(!newer.iter().any(closed));
        assert!(
            !busy.iter().any(|(s, _)| closed(s)),
            "a busy connection was evicted"
        );
        // A scrape gets in at once, while all this goes on.
        drop(lock);
        assert_eq!(server.get("/metrics").status, 200);
        for (stream, _) in &mut busy {
            assert_eq!(read_answer(stream).status, 200);
        }
    });
}

fn when_every_connection_is_busy_a_new_one_is_closed_at_once() {
    in_netns(|| {
        let server = capped_server(&["--method", "bind", "--ports", "1-100"]);
        let lock = util::hold_bind_scan_lock();
        let mut busy: Vec<(TcpStream, u16)> = (0..512).map(|_| send_get(&server.addr)).collect();
        wait_until("the 512 requests to be read", ANSWER_LIMIT * 6, || {
            let read = util::ss(&["-tn", "state", "established"])
                .iter()
                .filter(|line| {
                    let fields: Vec<&str> = line.split_whitespace().collect();
                    fields.len() >= 4
                        && fields[0] == "0"
                        && fields[2].ends_with(&format!(":{}", server.port()))
                })
                .count();
            (read == 512).then_some(())
        });
        let late = TcpStream::connect(&server.addr).unwrap();
        wait_until("the late connection to be closed", ANSWER_LIMIT, || {
            closed(&late).then_some(())
        });
        assert!(
            !busy.iter().any(|(s, _)| closed(s)),
            "a busy connection was evicted"
        );
        drop(lock);
        for (stream, _) in &mut busy {
            assert_eq!(read_answer(stream).status, 200);
        }
    });
}

fn reconnecting_slowloris_clients_do_not_keep_scrapes_out() {
    in_netns(|| {
        let server = capped_server(&[]);
        // 1,000 clients (twice the cap) that send a byte every 4 s and
        // reconnect as soon as they are dropped.
        let stop = Arc::new(AtomicBool::new(false));
        let attackers = {
            let (addr, stop) = (server.addr.clone(), stop.clone());
            thread::spawn(move || util::slowloris(&addr, 1000, &stop))
        };
        let started = Instant::now();
        let mut scrapes = 0;
        while started.elapsed() < Duration::from_secs(12) {
            assert_eq!(server.get("/metrics").status, 200);
            scrapes += 1;
            thread::sleep(Duration::from_millis(100));
        }
        stop.store(true, Ordering::Relaxed);
        let reconnects = attackers.join().unwrap();
        assert!(scrapes > 10);
        assert!(
            reconnects > 0,
            "no attacker was ever dropped: the test tested nothing"
        );
    });
}

fn sigterm_finishes_answers_in_flight_and_exits_0() {
    in_netns(|| {
        for signal in ["-TERM", "-INT"] {
            let mut server = Server::start(&["--method", "bind", "--ports", "1-1000"]);
            // The answer is still being worked on when the signal arrives:
            // its scan waits for the lock until the signal has been sent.
            let lock = util::hold_bind_scan_lock();
            let (mut stream, port) = send_get(&server.addr);
            wait_until("the server to read the request", ANSWER_LIMIT, || {
                util::request_was_read(server.port(), port).then_some(())
            });
            server.signal(signal);
            drop(lock);
            let (status, took) = server.wait_exit(signal);
            assert!(status.success(), "{signal}: {status}");
            assert!(
                took < Duration::from_secs(2),
                "{signal}: exiting took {took:?}"
            );
            let answer = read_answer(&mut stream);
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

fn address_forms() {
    for form in ["[::1]:0", "localhost:0", ":0"] {
        let server = Server::start_bin(Bin::new().args(["--serve", form]));
        let port = server.port();
        let local = if form.starts_with("[::1]") {
            format!("[::1]:{port}")
        } else {
            format!("127.0.0.1:{port}")
        };
        assert_eq!(
            util::http(&local, "GET", "/metrics", ANSWER_LIMIT).status,
            200,
            "{form}"
        );
    }
}

fn a_bare_serve_means_port_8000() {
    // In a namespace of its own, so that port 8000 is surely free.
    in_netns(|| {
        let server = Server::start_bin(Bin::new().arg("--serve"));
        assert!(server.addr.ends_with(":8000"), "{}", server.addr);
        for addr in ["127.0.0.1:8000", "[::1]:8000"] {
            assert_eq!(util::http(addr, "GET", "/", ANSWER_LIMIT).status, 200);
        }
    });
}

fn an_address_in_use_is_one_line_and_exit_1() {
    // In namespaces of its own: the error names who holds the port, from a
    // scan that must see only the test's own listener and processes.
    let (taken, output) = in_netns(|| {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap().to_string();
        let output = std::process::Command::new("unshare")
            .args(["--pid", "--fork", "--mount-proc"])
            .arg(util::bin::path())
            .args(["--serve", &addr])
            .output()
            .unwrap();
        (taken, output)
    });
    let addr = taken.local_addr().unwrap().to_string();
    assert_eq!(output.status.code(), Some(1));
    let line = util::one_error_line(&output);
    assert!(
        line.contains(&addr) && line.contains("Address already in use"),
        "{line}"
    );
    let output = run(["--serve", "127.0.0.1:0", "--output", "x.prom"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(util::stderr_of(&output).contains("--output"));
    let output = run(["--serve", "nonsense"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(util::stderr_of(&output).contains("'nonsense'"));
}

fn prometheus_scrapes_it() {
    in_netns(|| {
        let _extra = TcpListener::bind("127.0.0.1:7777").unwrap();
        let _server = Server::start_bin(Bin::new().args(["--serve", "127.0.0.1:8000"]));
        let dir = util::open_tempdir();
        let mut prometheus = Prometheus::start(
            dir.path(),
            "  - job_name: ports\n    static_configs:\n      - targets: ['127.0.0.1:8000']\n",
        );
        let (up, ports) = prometheus.wait_for("prometheus to scrape the exporter", |p| {
            let up = p.query("up%7Bjob%3D%22ports%22%7D")?;
            let ports = p.query("instance_open_ports")?;
            (up.contains("\"value\":[") && ports.contains("\"port\":\"7777\""))
                .then_some((up, ports))
        });
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

fn unprivileged_bind_scans_say_once_what_they_skipped() {
    in_netns(|| {
        let server = Server::start_bin(Bin::new().nobody().args([
            "--serve",
            "127.0.0.1:0",
            "--method",
            "bind",
            "--ports",
            "1-2000",
        ]));
        for _ in 0..3 {
            assert_eq!(server.metric("port_exporter_scan_skipped_ports"), 1023.0);
        }
        let log = server.log_when("the skipped-ports warning", |log| {
            log.contains("were skipped")
        });
        assert_eq!(log.matches("1023 ports were skipped").count(), 1, "{log}");
    });
}

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

fn a_client_that_stops_reading_is_dropped() {
    use socket2::{Domain, Socket, Type};
    in_netns(|| {
        let server = Server::start(&[]);
        // A small receive buffer and 2,000 pipelined requests, never read: the
        // server's writes stall, and after WRITE_TIMEOUT (10 s) it gives up.
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let addr: std::net::SocketAddr = server.addr.parse().unwrap();
        socket.connect(&addr.into()).unwrap();
        let mut stream: TcpStream = socket.into();
        let port = stream.local_addr().unwrap().port();
        let requests = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".repeat(2000);
        stream
            .set_write_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let _ = stream.write_all(requests.as_bytes());
        // Without reading a byte, wait for the server to give up on us: its
        // end of the connection goes away.
        let server_end = format!(":{}", server.port());
        let client_end = format!(":{port}");
        wait_until(
            "the server to drop the connection",
            Duration::from_secs(60),
            || {
                let still = util::ss(&["-tn", "state", "established"])
                    .iter()
                    .any(|line| {
                        let fields: Vec<&str> = line.split_whitespace().collect();
                        fields.len() >= 4
                            && fields[2].ends_with(&server_end)
                            && fields[3].ends_with(&client_end)
                    });
                (!still).then_some(())
            },
        );
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
    });
}

fn aborted_scrapes_leave_no_scans_behind() {
    in_netns(|| {
        // Bind scans: scan 1 is kept pending by the lock; every scrape
        // below arrives meanwhile, waits for scan 2, and its client goes
        // away. No scan may run for them.
        let server = Server::start(&["--method", "bind", "--ports", "1-1000"]);
        let lock = util::hold_bind_scan_lock();
        let (mut first, port) = send_get(&server.addr);
        wait_until("the first request to be read", ANSWER_LIMIT, || {
            util::request_was_read(server.port(), port).then_some(())
        });
        for _ in 0..200 {
            let (stream, port) = send_get(&server.addr);
            wait_until("a request to be read", ANSWER_LIMIT, || {
                util::request_was_read(server.port(), port).then_some(())
            });
            util::abort(stream);
        }
        drop(lock);
        let answer = read_answer(&mut first);
        assert_eq!(value_of(&answer.body, "port_exporter_scans_total"), 1.0);
        assert_eq!(server.metric("port_exporter_scans_total"), 2.0);

        // procfs scans, 2,000 scrapes aborted as fast as they come: scans
        // ran for some of them, but none is left queued: two scrapes in a
        // row then see consecutive scans.
        let server = Server::start(&["--method", "procfs"]);
        for _ in 0..2000 {
            util::abort(send_get(&server.addr).0);
        }
        let next = server.metric("port_exporter_scans_total");
        assert_eq!(server.metric("port_exporter_scans_total"), next + 1.0);
    });
}

fn sigterm_ends_the_server_even_while_a_scan_is_stuck() {
    in_netns(|| {
        let mut server = Server::start(&["--method", "bind", "--ports", "1-1000"]);
        // The scan waits for the lock, which is never let go in time.
        let _lock = util::hold_bind_scan_lock();
        let (mut stream, port) = send_get(&server.addr);
        wait_until("the server to read the request", ANSWER_LIMIT, || {
            util::request_was_read(server.port(), port).then_some(())
        });
        server.signal("-TERM");
        let (status, took) = server.wait_exit("SIGTERM with a scan stuck");
        assert!(status.success(), "{status}");
        // The drain waits 0.8 s for answers in flight, then gives up.
        assert!(took < Duration::from_secs(2), "exiting took {took:?}");
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest);
        assert!(
            rest.is_empty(),
            "an answer came from a scan that never ended"
        );
    });
}

fn a_log_nobody_reads_never_stops_the_server() {
    // Every scan but the first fails (netlink's socket(2) refused; the
    // first socket(2) of each thread, the listener's, goes through) and logs
    // a line; the log is not read, so after 64 KiB the pipe is full.
    // (Injecting into sendto(2) instead would also break the wake-up of
    // tokio's signal handling.)
    let mut server = Server::start_bin(
        Bin::new()
            .inject("socket:error=EPROTONOSUPPORT:when=2+")
            .args(["--serve", "127.0.0.1:0", "--method", "netlink"]),
    );
    server.read_log(false);
    assert_eq!(server.get("/metrics").status, 200);
    for round in 0..1500 {
        let response = server.get("/metrics");
        assert_eq!(response.status, 500, "scrape {round}");
    }
    assert_eq!(server.get("/favicon.ico").status, 404);
    // Read again: lines were dropped, and the log says how many.
    server.read_log(true);
    let log = server.log_when("the dropped-lines count", |log| {
        log.contains("log lines were dropped")
    });
    assert!(log.contains("scan failed"), "{log}");
    server.read_log(false);
    server.signal("-TERM");
    let (status, _) = server.wait_exit("SIGTERM with an unread log");
    assert!(status.success(), "{status}");
}

fn answers_are_never_older_than_their_request() {
    in_netns(|| {
        // Many listeners make each scan long enough that requests keep
        // arriving while one runs.
        let _many: Vec<TcpListener> = (0..2000)
            .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let server = Server::start(&[]);
        let stop = Arc::new(AtomicBool::new(false));
        let busy: Vec<_> = (0..2)
            .map(|_| {
                let (addr, stop) = (server.addr.clone(), stop.clone());
                thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        util::http(&addr, "GET", "/metrics", ANSWER_LIMIT);
                    }
                })
            })
            .collect();
        let (mut stale_open, mut stale_closed) = (0, 0);
        for _ in 0..300 {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let port = listener.local_addr().unwrap().port();
            if !open_ports(&server.get("/metrics").body).contains(&port) {
                stale_open += 1;
            }
            drop(listener);
            // A process that another test thread forks meanwhile holds our
            // descriptors until it execs: wait until the kernel has really
            // closed the listener.
            wait_until("the listener to close", ANSWER_LIMIT, || {
                (!util::ss_listeners().contains(&port)).then_some(())
            });
            if open_ports(&server.get("/metrics").body).contains(&port) {
                stale_closed += 1;
            }
        }
        stop.store(true, Ordering::Relaxed);
        for handle in busy {
            handle.join().unwrap();
        }
        assert_eq!(
            (stale_open, stale_closed),
            (0, 0),
            "answers missing a port opened before the request, and still showing one closed before it"
        );
    });
}
