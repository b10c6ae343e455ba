//! Basic auth against hostile clients: unknown users cost no more than a
//! typical check, and a flood of wrong credentials from one address does
//! not keep a real login from another out. The server runs in a network
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
    Netns, Server, basic_auth, connect_from, in_netns, open_tempdir, tests, wait_until,
};

tests![
    (an_unknown_user_costs_no_more_than_a_typical_check, Netns),
    (
        a_login_gets_in_while_another_address_floods_wrong_credentials,
        Netns
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
