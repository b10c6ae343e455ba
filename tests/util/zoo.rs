//! The zoo: sockets of every kind that matters to "what is open" (the
//! listeners of both families and of SO_REUSEPORT, and ports that are
//! bound but not listening), for the tests that compare a scan with `ss`.

use std::{
    collections::BTreeSet,
    io::Read,
    net::{Ipv6Addr, SocketAddr, TcpListener, TcpStream},
    time::Duration,
};

use socket2::{Domain, Socket, Type};

use super::{ss, wait_until};

/// Sockets of every kind that matters, kept open while the zoo lives.
pub struct Zoo {
    /// Ports that have a listener.
    pub listeners: BTreeSet<u16>,
    /// Ports that are bound but not listening: an established client's
    /// local port, a client-side TIME_WAIT, a socket bound without listen.
    pub bound_only: BTreeSet<u16>,
    _keep: Vec<Socket>,
    _streams: Vec<TcpStream>,
    _listeners: Vec<TcpListener>,
}

/// A listening IPv6 wildcard socket with IPV6_V6ONLY as given.
fn v6_wildcard(only_v6: bool) -> Socket {
    let socket = Socket::new(Domain::IPV6, Type::STREAM, None).unwrap();
    socket.set_only_v6(only_v6).unwrap();
    socket
        .bind(&SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)).into())
        .unwrap();
    socket.listen(8).unwrap();
    socket
}

/// The local port of a socket2 socket.
fn port_of(socket: &Socket) -> u16 {
    socket.local_addr().unwrap().as_socket().unwrap().port()
}

/// Opens the zoo in the current (fresh) namespace. `low` adds a listener on
/// port 80, which only a privileged process may bind.
pub fn zoo(low: bool) -> Zoo {
    let mut listeners = Vec::new();
    for addr in ["0.0.0.0:0", "127.0.0.1:0", "127.0.0.2:0", "[::1]:0"] {
        listeners.push(TcpListener::bind(addr).unwrap());
    }
    if low {
        listeners.push(TcpListener::bind("0.0.0.0:80").unwrap());
    }
    // A listener with SO_REUSEPORT: a probe that set it too would share the
    // port instead of seeing it in use.
    let reuse_port = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    reuse_port.set_reuse_port(true).unwrap();
    reuse_port
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    reuse_port.listen(8).unwrap();
    let keep = vec![v6_wildcard(true), v6_wildcard(false), reuse_port];
    let mut ports: BTreeSet<u16> = listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect();
    ports.extend(keep.iter().map(port_of));
    let server = listeners[1].local_addr().unwrap();

    let mut bound_only = BTreeSet::new();
    let mut streams = Vec::new();
    // An established connection: both ends stay open.
    let client = TcpStream::connect(server).unwrap();
    let (accepted, _) = listeners[1].accept().unwrap();
    bound_only.insert(client.local_addr().unwrap().port());
    streams.extend([client, accepted]);
    // A client-side TIME_WAIT: the client closes first, then the server.
    let client = TcpStream::connect(server).unwrap();
    let (mut accepted, _) = listeners[1].accept().unwrap();
    let time_wait = client.local_addr().unwrap().port();
    drop(client);
    let mut sink = Vec::new();
    accepted.read_to_end(&mut sink).unwrap();
    drop(accepted);
    wait_for_time_wait(time_wait);
    bound_only.insert(time_wait);
    // A server-side TIME_WAIT on a port nobody listens on any more: the
    // server closed first, then its listener (std sets SO_REUSEADDR, as
    // most servers do) went away. Free for a new listener, so not open,
    // and a probe with SO_REUSEADDR must say so.
    let gone = TcpListener::bind("127.0.0.3:0").unwrap();
    let mut client = TcpStream::connect(gone.local_addr().unwrap()).unwrap();
    let (accepted, _) = gone.accept().unwrap();
    let server_time_wait = gone.local_addr().unwrap().port();
    drop((accepted, gone));
    client.read_to_end(&mut sink).unwrap();
    drop(client);
    wait_for_time_wait(server_time_wait);
    // Bound, never listening.
    let bound = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    bound
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    bound_only.insert(port_of(&bound));

    let mut keep = keep;
    keep.push(bound);
    assert!(ports.is_disjoint(&bound_only));
    Zoo {
        listeners: ports,
        bound_only,
        _keep: keep,
        _streams: streams,
        _listeners: listeners,
    }
}

/// Waits until the kernel shows a TIME_WAIT socket on local `port`.
fn wait_for_time_wait(port: u16) {
    wait_until(
        &format!("a TIME_WAIT socket on port {port}"),
        Duration::from_secs(30),
        || {
            ss(&["-tn", "state", "time-wait"])
                .iter()
                .any(|l| {
                    l.split_whitespace()
                        .nth(2)
                        .is_some_and(|a| a.ends_with(&format!(":{port}")))
                })
                .then_some(())
        },
    );
}
