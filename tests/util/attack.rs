//! Hostile clients, for the tests and the benchmarks that check the
//! server holds against them.

use std::{
    io::{Read, Write},
    net::TcpStream,
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::{Duration, Instant},
};

/// Resets the connection (RST, as a client that gives up does) instead of
/// closing it politely.
pub fn abort(stream: TcpStream) {
    socket2::SockRef::from(&stream)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(stream);
}

/// Keeps `clients` slowloris connections to `addr` until `stop`: each sends
/// one byte of a request head every 4 s, and reconnects within about 0.2 s
/// of being dropped. Returns how many reconnections there were.
pub fn slowloris(addr: &str, clients: usize, stop: &AtomicBool) -> usize {
    const HEAD: &[u8] = b"GET /metrics HTTP/1.1\r\nHost: slowloris\r\nX-A: ";
    /// Each round looks at one tenth of the connections, every 20 ms.
    const SLICES: usize = 10;
    let connect = || {
        let stream = TcpStream::connect(addr).ok()?;
        stream.set_nonblocking(true).ok()?;
        Some(stream)
    };
    let start = Instant::now();
    let mut conns: Vec<(Option<TcpStream>, usize, Instant)> = (0..clients)
        .map(|i| {
            // Spread the first bytes over the 4 s.
            let first = start + Duration::from_millis((4000 * i / clients.max(1)) as u64);
            (connect(), 0, first)
        })
        .collect();
    let mut reconnects = 0;
    let mut round = 0;
    while !stop.load(Ordering::Relaxed) {
        for (stream, sent, next) in conns.iter_mut().skip(round % SLICES).step_by(SLICES) {
            let gone = match stream {
                None => true,
                Some(s) => match (&*s).read(&mut [0; 64]) {
                    Ok(0) => true,
                    Ok(_) => false,
                    Err(err) => err.kind() != std::io::ErrorKind::WouldBlock,
                },
            };
            if gone {
                *stream = connect();
                (*sent, *next) = (0, Instant::now());
                reconnects += 1;
            } else if Instant::now() >= *next {
                if let Some(s) = stream {
                    let _ = (&*s).write(&[HEAD[*sent % HEAD.len()]]);
                }
                *sent += 1;
                *next += Duration::from_secs(4);
            }
        }
        round += 1;
        thread::sleep(Duration::from_millis(20));
    }
    reconnects
}
