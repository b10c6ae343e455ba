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

/// A connection to `addr` from the loopback address `from` (127.0.0.2,
/// say), so that a test can play two clients the server tells apart.
pub fn connect_from(from: std::net::Ipv4Addr, addr: &str) -> std::io::Result<TcpStream> {
    use std::net::ToSocketAddrs;
    let target = addr
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::other(format!("no address in {addr}")))?;
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.bind(&std::net::SocketAddr::from((from, 0)).into())?;
    socket.connect(&target.into())?;
    Ok(socket.into())
}

/// A TLS ClientHello, as rustls' client sends it for `localhost`: a flood
/// replays these bytes, which cost the client nothing and the server a key
/// exchange and a signature each.
pub fn client_hello() -> Vec<u8> {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let mut client =
        rustls::ClientConnection::new(std::sync::Arc::new(config), "localhost".try_into().unwrap())
            .unwrap();
    let mut hello = Vec::new();
    while client.wants_write() {
        client.write_tls(&mut hello).unwrap();
    }
    hello
}

/// Keeps `clients` connections from `from` to `addr` replaying `hello`
/// until `stop`: each sends it, waits for the server's answer (or its
/// close), and starts over on a new connection. Counts the answers in
/// `answers`.
pub fn handshake_flood(
    addr: &str,
    from: std::net::Ipv4Addr,
    clients: usize,
    hello: &[u8],
    stop: &AtomicBool,
    answers: &std::sync::atomic::AtomicUsize,
) {
    let open = || {
        let mut stream = connect_from(from, addr).ok()?;
        stream.write_all(hello).ok()?;
        stream.set_nonblocking(true).ok()?;
        Some(stream)
    };
    let mut conns: Vec<Option<TcpStream>> = (0..clients).map(|_| open()).collect();
    let mut buf = [0; 4096];
    while !stop.load(Ordering::Relaxed) {
        let mut idle = true;
        for conn in &mut conns {
            let done = match conn {
                None => true,
                Some(s) => match s.read(&mut buf) {
                    Ok(0) => true,
                    Ok(_) => {
                        answers.fetch_add(1, Ordering::SeqCst);
                        true
                    }
                    Err(err) => err.kind() != std::io::ErrorKind::WouldBlock,
                },
            };
            if done {
                idle = false;
                if let Some(s) = conn.take() {
                    abort(s);
                }
                *conn = open();
            }
        }
        if idle {
            thread::sleep(Duration::from_millis(1));
        }
    }
}
