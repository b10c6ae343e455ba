//! Exact under churn: listeners that stay open are in every scan, netlink's
//! and procfs's, while
//! SO_REUSEPORT groups in their listener-hash buckets open and close
//! sockets as fast as two threads can.
//!
//! The kernel resumes a netlink dump that spans several datagrams, and a
//! /proc/net/tcp read that spans several pages, at a position counted
//! inside a hash bucket; sockets that close ahead of that
//! position move the rest of the bucket past it. A stable listener in a
//! SO_REUSEPORT group shares its bucket with the group, so churn in the
//! group is churn ahead of it.

use std::{
    collections::BTreeSet,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::Instant,
};

use socket2::{Domain, Socket, Type};

use crate::util::{Bin, Netns, in_netns, open_ports, stdout_of, tests};

tests![(stable_listeners_survive_churn_in_their_buckets, Netns)];

/// Stable listeners, each with a churning group on its address and port.
const STABLE: usize = 10;
/// Sockets a group opens and closes at a time: few, so that the stable
/// listener is never far from where a dump resumes in its bucket.
const GROUP: usize = 32;
/// Listeners that only fill the table, so that every dump spans many
/// datagrams (each ends at a place a later one resumes from).
const FILLER: usize = 1_000;
/// Scans that must each see every stable listener.
const SCANS: usize = 300;

/// A listening TCP socket on 127.0.0.1:`port` with SO_REUSEPORT.
fn reuse_port_listener(port: u16) -> Socket {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.set_reuse_port(true).unwrap();
    socket
        .bind(&SocketAddr::from(([127, 0, 0, 1], port)).into())
        .unwrap();
    socket.listen(1).unwrap();
    socket
}

fn stable_listeners_survive_churn_in_their_buckets() {
    in_netns(|| {
        let stable: Vec<Socket> = (0..STABLE).map(|_| reuse_port_listener(0)).collect();
        let filler: Vec<std::net::TcpListener> = (0..FILLER)
            .map(|_| std::net::TcpListener::bind("127.0.0.2:0").unwrap())
            .collect();
        let ports: Vec<u16> = stable
            .iter()
            .map(|s| s.local_addr().unwrap().as_socket().unwrap().port())
            .collect();
        let expected: BTreeSet<u16> = ports.iter().copied().collect();
        let stop = Arc::new(AtomicBool::new(false));
        let churned = Arc::new(AtomicU64::new(0));
        // Two churners, each over half of the groups, going round them: a
        // group that is empty gets GROUP sockets (each new one goes to the
        // head of the bucket, ahead of the stable listener), a full one is
        // closed whole (which moves the stable listener forward in the
        // bucket, past where a resumed dump continues).
        let churners: Vec<_> = ports
            .chunks(STABLE / 2)
            .map(|mine| {
                let (mine, stop, churned) = (mine.to_vec(), stop.clone(), churned.clone());
                thread::spawn(move || {
                    let mut groups: Vec<Vec<Socket>> = mine
                        .iter()
                        .enumerate()
                        .map(|(i, &port)| {
                            let size = if i % 2 == 0 { GROUP } else { 0 };
                            (0..size).map(|_| reuse_port_listener(port)).collect()
                        })
                        .collect();
                    while !stop.load(Ordering::Relaxed) {
                        for (group, &port) in groups.iter_mut().zip(&mine) {
                            if group.is_empty() {
                                group.extend((0..GROUP).map(|_| reuse_port_listener(port)));
                            } else {
                                // Newest first: each close is ahead of
                                // every other socket of the group.
                                while group.pop().is_some() {}
                            }
                        }
                        churned.fetch_add((mine.len() * GROUP) as u64, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        let list = ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let clock = Instant::now();
        let mut missed = Vec::new();
        for method in ["netlink", "procfs"] {
            for scan in 0..SCANS {
                let found = open_ports(&stdout_of(
                    &Bin::new()
                        .args(["--ports", &list, "--method", method])
                        .output(),
                ));
                if found != expected {
                    missed.push((
                        method,
                        scan,
                        expected.difference(&found).copied().collect::<Vec<_>>(),
                    ));
                }
            }
        }
        let elapsed = clock.elapsed();
        stop.store(true, Ordering::Relaxed);
        for churner in churners {
            churner.join().unwrap();
        }
        let rate = churned.load(Ordering::Relaxed) as f64 * 2.0 / elapsed.as_secs_f64();
        eprintln!(
            "churn: {SCANS} scans of each method in {elapsed:.1?}, {rate:.0} opens and closes a second, {} missed",
            missed.len()
        );
        assert!(
            missed.is_empty(),
            "{} of {SCANS} scans of each method missed a stable listener: {missed:?}",
            missed.len()
        );
        drop((stable, filler));
    });
}
