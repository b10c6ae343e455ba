//! Basic auth and TLS against hostile clients: unknown users cost no more
//! than a typical check, a flood of wrong credentials from one address does
//! not keep a real login from another out, and a flood of ClientHellos does
//! not hold up an established connection. The server runs in a network
//! namespace of its own; the two clients are 127.0.0.1 and 127.0.0.2.

use std::{
    io::{Read, Write},
    net::Ipv4Addr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use crate::util::{
    Need, Netns, Server, basic_auth, connect_from, in_netns, open_tempdir, pki::Pki, tests,
    wait_until,
};

const OPENSSL: Need = Need::Program("openssl", "openssl");

tests![
    (an_unknown_user_costs_no_more_than_a_typical_check, Netns),
    (
        a_login_gets_in_while_another_address_floods_wrong_credentials,
        Netns
    ),
    (
        an_established_tls_connection_is_answered_during_a_client_hello_flood,
        Netns,
        OPENSSL
    ),
];

/// The real client.
const HERE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
/// The attacker.
const THERE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

/// A well-formed bcrypt hash of cost `cost` that no password the tests
/// send matches: checking it costs what a real one of that cost does,
/// without making one (a cost-14 hash takes long to make).
fn hash_of_cost(cost: u32) -> String {
    let hash = bcrypt::hash_with_result("never sent", 4)
        .unwrap()
        .format_for_version(bcrypt::Version::TwoY);
    format!("$2y${cost:02}${}", &hash[7..])
}

/// Serves with `basic_auth_users` = `users`; the directory goes with it.
fn serve(users: &[(&str, String)]) -> (Server, tempfile::TempDir) {
    let dir = open_tempdir();
    let path = dir.path().join("web.yml");
    let mut text = "basic_auth_users:\n".to_string();
    for (user, hash) in users {
        text.push_str(&format!("  {user}: '{hash}'\n"));
    }
    std::fs::write(&path, text).unwrap();
    let server = Server::start(&["--web.config.file", path.to_str().unwrap()]);
    (server, dir)
}

/// One `GET /metrics` from `from` with `user`'s credentials, on a new
/// connection: the status (0 if there was no answer) and how long it took.
fn get(addr: &str, from: Ipv4Addr, user: &str, password: &str) -> (u16, Duration) {
    let started = Instant::now();
    let Ok(mut stream) = connect_from(from, addr) else {
        return (0, started.elapsed());
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let request = format!(
        "GET /metrics HTTP/1.1\r\nHost: auth-test\r\n{}\r\nConnection: close\r\n\r\n",
        basic_auth(user, password)
    );
    let mut answer = Vec::new();
    if stream.write_all(request.as_bytes()).is_err() || stream.read_to_end(&mut answer).is_err() {
        return (0, started.elapsed());
    }
    let status = std::str::from_utf8(&answer)
        .ok()
        .and_then(|text| text.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    (status, started.elapsed())
}

/// With a cost-14 user in the file, an unknown user is checked against a
/// hash of the file's typical cost (10 here), not the costliest: it
/// answers in about the time a wrong password for a cost-10 user takes,
/// not 16 times that.
fn an_unknown_user_costs_no_more_than_a_typical_check() {
    in_netns(|| {
        let (server, _dir) = serve(&[("alice", hash_of_cost(10)), ("slow", hash_of_cost(14))]);
        // Taken in turns, so that a moment of load elsewhere weighs on
        // both; the fastest of each counts.
        let (mut wrong, mut unknown) = (Duration::MAX, Duration::MAX);
        for n in 0..4 {
            for (user, fastest) in [("alice", &mut wrong), ("mallory", &mut unknown)] {
                let (status, took) = get(&server.addr, HERE, user, &format!("guess {n}"));
                assert_eq!(status, 401, "{user}");
                *fastest = (*fastest).min(took);
            }
        }
        assert!(
            unknown < wrong * 3,
            "an unknown user took {unknown:?}, a wrong password for a cost-10 user {wrong:?}"
        );
    });
}

/// 20 clients on 127.0.0.2 send wrong passwords and unknown users as fast
/// as they are answered; a first login from 127.0.0.1 gets in after at
/// most a few of their checks (today's bcrypt queue was first come, first
/// served: it waited for one check per attacker). Counted in checks the
/// flood got answered meanwhile, not in seconds, so that a slow machine
/// cannot fail it; the time bound is Prometheus' default scrape timeout.
fn a_login_gets_in_while_another_address_floods_wrong_credentials() {
    in_netns(|| {
        let hash = bcrypt::hash("right", 8).unwrap();
        let (server, _dir) = serve(&[("prometheus", hash)]);
        let refused = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let flood: Vec<_> = (0..20)
            .map(|n| {
                let (addr, refused, stop) = (server.addr.clone(), refused.clone(), stop.clone());
                thread::spawn(move || {
                    let mut round = 0;
                    while !stop.load(Ordering::Relaxed) {
                        round += 1;
                        let user = if round % 2 == 0 {
                            "prometheus"
                        } else {
                            "mallory"
                        };
                        match get(&addr, THERE, user, &format!("flood {n} {round}")).0 {
                            401 => {
                                refused.fetch_add(1, Ordering::SeqCst);
                            }
                            // The flood's own checks wait in a full queue.
                            429 => thread::sleep(Duration::from_millis(5)),
                            other => panic!("the flood got {other}"),
                        }
                    }
                })
            })
            .collect();
        wait_until("the flood to be answered", Duration::from_secs(60), || {
            (refused.load(Ordering::SeqCst) >= 5).then_some(())
        });
        let before = refused.load(Ordering::SeqCst);
        let (status, took) = get(&server.addr, HERE, "prometheus", "right");
        let during = refused.load(Ordering::SeqCst) - before;
        stop.store(true, Ordering::Relaxed);
        for thread in flood {
            thread.join().unwrap();
        }
        assert_eq!(status, 200);
        assert!(
            during <= 6,
            "the login waited while {during} of the flood's checks were answered ({took:?})"
        );
        assert!(took < Duration::from_secs(10), "the login took {took:?}");
    });
}

/// Sends `GET /metrics` on `stream` (kept alive) and reads one answer by
/// its Content-Length; returns the status.
fn ask(stream: &mut impl ReadWrite) -> u16 {
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: tls-test\r\n\r\n")
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().to_string())
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    stream.read_exact(&mut body).unwrap();
    head.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// 500 connections from 127.0.0.2 replay a ClientHello, each starting over
/// once it is answered. A connection from 127.0.0.1 still completes its
/// handshake, and a request on it, once established, is answered while
/// few of the flood's handshakes are: their costly step runs off the
/// serving thread. (Before, every handshake ran on that thread, and the
/// request waited behind the ClientHellos that had come first: hundreds.)
/// Counted in flood handshakes answered meanwhile, not in seconds.
fn an_established_tls_connection_is_answered_during_a_client_hello_flood() {
    in_netns(|| {
        let pki = Pki::new();
        let web =
            pki.config("tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n");
        let server = Server::start(&["--web.config.file", web.to_str().unwrap()]);
        let answers = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let flood = {
            let (addr, answers, stop) = (server.addr.clone(), answers.clone(), stop.clone());
            let hello = crate::util::attack::client_hello();
            thread::spawn(move || {
                crate::util::attack::handshake_flood(&addr, THERE, 500, &hello, &stop, &answers)
            })
        };
        wait_until("the flood to be answered", Duration::from_secs(60), || {
            (answers.load(Ordering::SeqCst) >= 100).then_some(())
        });

        let mut roots = rustls::RootCertStore::empty();
        let ca = std::fs::read(pki.path("ca.pem")).unwrap();
        use rustls::pki_types::{CertificateDer, pem::PemObject};
        for cert in CertificateDer::pem_slice_iter(&ca) {
            roots.add(cert.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let client =
            rustls::ClientConnection::new(Arc::new(config), "localhost".try_into().unwrap())
                .unwrap();
        let tcp = connect_from(HERE, &server.addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut tls = rustls::StreamOwned::new(client, tcp);
        assert_eq!(ask(&mut tls), 200, "the first request");
        let mut most = 0;
        for _ in 0..5 {
            let before = answers.load(Ordering::SeqCst);
            assert_eq!(ask(&mut tls), 200);
            most = most.max(answers.load(Ordering::SeqCst) - before);
        }
        stop.store(true, Ordering::Relaxed);
        flood.join().unwrap();
        assert!(
            most <= 100,
            "a request on an established connection waited while {most} flood handshakes were answered"
        );
    });
}
