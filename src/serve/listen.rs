//! `--serve [ADDR]`: the address forms an exporter user expects, and binding
//! them.
//!
//! `:8000` means every interface and both families, as exporter-toolkit's
//! `--web.listen-address` does; Rust's `SocketAddr` parser rejects it, so
//! the forms are parsed here: `:PORT`, `IPV4:PORT`, `[IPV6]:PORT` and
//! `HOST:PORT`, where a host name is resolved when the server starts and
//! every address it resolves to is bound.

use std::{
    fmt,
    io::{self, ErrorKind::AddrInUse},
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, ToSocketAddrs},
};

use anyhow::Context;
use socket2::{Domain, Socket, Type};

use crate::{
    labels::Address,
    scan::{Detail, Method, Namespaces, Plan, Protocols},
};

/// Where to listen, as given on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListenAddr {
    /// `:PORT`: all interfaces, IPv4 and IPv6.
    AnyInterface(u16),
    /// `IPV4:PORT` or `[IPV6]:PORT`.
    Socket(SocketAddr),
    /// `HOST:PORT`, resolved at start.
    Host(String, u16),
}

/// The default of a bare `--serve`.
pub const DEFAULT: &str = ":8000";

impl ListenAddr {
    /// Parses one of the forms above; the error says which forms exist.
    pub fn parse(text: &str) -> Result<ListenAddr, String> {
        const FORMS: &str = "expected :PORT, IPV4:PORT, [IPV6]:PORT or HOST:PORT";
        if let Ok(addr) = text.parse::<SocketAddr>() {
            return Ok(ListenAddr::Socket(addr));
        }
        let Some((host, port)) = text.rsplit_once(':') else {
            if let Ok(port) = text.parse::<u16>() {
                return Err(format!(
                    "a port needs a colon before it: --serve :{port} (every interface) or \
                     --serve 127.0.0.1:{port} (local clients only)"
                ));
            }
            return Err(format!("no port; {FORMS}"));
        };
        let port: u16 = port
            .parse()
            .map_err(|_| format!("'{port}' is not a port (0-65535); {FORMS}"))?;
        if host.is_empty() {
            return Ok(ListenAddr::AnyInterface(port));
        }
        let name_like = host.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
        if !name_like {
            return Err(format!(
                "'{host}' is not an IP address or host name; {FORMS}"
            ));
        }
        Ok(ListenAddr::Host(host.to_string(), port))
    }

    /// Binds listening sockets for this address: one for `:PORT` (dual
    /// stack, or IPv4 where the kernel has no IPv6), one per resolved address
    /// of a host name. Port 0 picks a free port, the same one for every
    /// address of a host name: when the port the first address got is taken
    /// on another, all are closed and a new port is tried, a few times.
    pub fn bind(&self) -> anyhow::Result<Vec<TcpListener>> {
        match self {
            ListenAddr::AnyInterface(port) => {
                let any6 = SocketAddr::from((Ipv6Addr::UNSPECIFIED, *port));
                let bound = match listen(any6) {
                    Err(err) if err.raw_os_error() == Some(libc::EAFNOSUPPORT) => {
                        let any4 = SocketAddr::from((Ipv4Addr::UNSPECIFIED, *port));
                        listen(any4).with_context(|| format!("cannot listen on {any4}"))
                    }
                    bound => bound.with_context(|| format!("cannot listen on {self}")),
                };
                Ok(vec![bound?])
            }
            ListenAddr::Socket(addr) => Ok(vec![
                listen(*addr).with_context(|| format!("cannot listen on {addr}"))?,
            ]),
            ListenAddr::Host(host, port) => {
                let mut addrs: Vec<SocketAddr> = (host.as_str(), *port)
                    .to_socket_addrs()
                    .with_context(|| format!("cannot resolve {host}"))?
                    .collect();
                addrs.sort();
                addrs.dedup();
                let mut tries = 0;
                loop {
                    tries += 1;
                    match bind_all(&addrs) {
                        Err((err, _)) if *port == 0 && tries < 5 && err.kind() == AddrInUse => {}
                        Err((err, addr)) => {
                            return Err(naming_holder(err, addr.port()))
                                .with_context(|| format!("cannot listen on {addr}"));
                        }
                        Ok(listeners) => return Ok(listeners),
                    }
                }
            }
        }
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::AnyInterface(port) => write!(f, ":{port}"),
            ListenAddr::Socket(addr) => write!(f, "{addr}"),
            ListenAddr::Host(host, port) => write!(f, "{host}:{port}"),
        }
    }
}

/// Listening sockets on every one of `addrs`, all on the port of the first
/// (the port it was given, or the one it got for port 0); on failure, the
/// error and the address that failed, with every socket closed.
fn bind_all(addrs: &[SocketAddr]) -> Result<Vec<TcpListener>, (io::Error, SocketAddr)> {
    let mut listeners: Vec<TcpListener> = Vec::new();
    for mut addr in addrs.iter().copied() {
        if let Some(first) = listeners.first() {
            addr.set_port(first.local_addr().map_err(|err| (err, addr))?.port());
        }
        listeners.push(bind_listen(addr).map_err(|err| (err, addr))?);
    }
    Ok(listeners)
}

/// Who listens on `port` already, as a scan of this namespace sees it
/// (`node_exporter (pid 733, user prometheus) listens on 0.0.0.0:9100`),
/// or `None` when the scan cannot tell.
fn holder(port: u16) -> Option<String> {
    let plan = Plan {
        method: Method::Auto,
        selected: [port].into_iter().collect(),
        threads: None,
        protocols: Protocols::TCP,
        detail: Detail {
            sockets: true,
            users: true,
            processes: true,
        },
        namespaces: Namespaces::Own,
    };
    let scan = plan.run().ok()?;
    let sockets = scan.sockets.as_ref()?;
    // The one with a known process first: it names who to stop.
    let listener = sockets
        .listeners
        .iter()
        .filter(|l| l.port == port)
        .min_by_key(|l| sockets.process(l.pid).is_none())?;
    let at = match Address::of(listener, sockets).to_string() {
        v6 if v6.contains(':') => format!("[{v6}]:{port}"),
        v4 => format!("{v4}:{port}"),
    };
    let user = sockets
        .user(listener.uid)
        .map_or_else(|| listener.uid.to_string(), str::to_string);
    Some(match sockets.process(listener.pid) {
        Some(name) => format!("{name} (pid {}, user {user}) listens on {at}", listener.pid),
        None => format!(
            "a socket of user {user} listens on {at} (its process is not visible here; \
             `ss -Htlnp sport = :{port}` as root may name it)"
        ),
    })
}

/// `err` with who holds the port, when it says the address is in use.
fn naming_holder(err: io::Error, port: u16) -> io::Error {
    match (err.kind() == AddrInUse).then(|| holder(port)).flatten() {
        Some(who) => io::Error::new(err.kind(), format!("{err}: {who}")),
        None => err,
    }
}

/// A listening socket on `addr`. The IPv6 wildcard also accepts IPv4
/// (IPV6_V6ONLY off), whatever net.ipv6.bindv6only says, as Go's
/// net.Listen does; SO_REUSEADDR lets a restart bind despite old
/// connections in TIME_WAIT.
fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    bind_listen(addr).map_err(|err| naming_holder(err, addr.port()))
}

/// [`listen`] without the naming of a holder.
fn bind_listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    if let SocketAddr::V6(v6) = addr {
        socket.set_only_v6(!v6.ip().is_unspecified())?;
    }
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        assert_eq!(
            ListenAddr::parse(":8000"),
            Ok(ListenAddr::AnyInterface(8000))
        );
        assert_eq!(ListenAddr::parse(":0"), Ok(ListenAddr::AnyInterface(0)));
        assert_eq!(
            ListenAddr::parse("127.0.0.1:9999"),
            Ok(ListenAddr::Socket("127.0.0.1:9999".parse().unwrap()))
        );
        assert_eq!(
            ListenAddr::parse("[::1]:0"),
            Ok(ListenAddr::Socket("[::1]:0".parse().unwrap()))
        );
        assert_eq!(
            ListenAddr::parse("[::]:8000"),
            Ok(ListenAddr::Socket("[::]:8000".parse().unwrap()))
        );
        assert_eq!(
            ListenAddr::parse("localhost:8000"),
            Ok(ListenAddr::Host("localhost".into(), 8000))
        );
        assert_eq!(
            ListenAddr::parse("host-1.example:80"),
            Ok(ListenAddr::Host("host-1.example".into(), 80))
        );
    }

    #[test]
    fn bad_forms_say_what_is_expected() {
        for (text, needle) in [
            ("localhost", "no port"),
            (":", "'' is not a port"),
            (":65536", "'65536' is not a port"),
            (":http", "'http' is not a port"),
            ("::1:80", "is not an IP address or host name"),
            ("a b:80", "is not an IP address or host name"),
            ("[::1]:x", "'x' is not a port"),
            ("", "no port"),
        ] {
            let err = ListenAddr::parse(text).unwrap_err();
            assert!(
                err.contains(needle) && err.contains("expected :PORT"),
                "{text:?}: {err}"
            );
        }
    }

    #[test]
    fn a_bare_port_is_shown_with_its_colon() {
        let err = ListenAddr::parse("8000").unwrap_err();
        assert!(err.contains("--serve :8000"), "{err}");
        assert!(err.contains("--serve 127.0.0.1:8000"), "{err}");
    }

    #[test]
    fn binds_port_zero_and_reports_the_real_port() {
        let listeners = ListenAddr::parse("127.0.0.1:0").unwrap().bind().unwrap();
        assert_eq!(listeners.len(), 1);
        assert_ne!(listeners[0].local_addr().unwrap().port(), 0);
        let taken = listeners[0].local_addr().unwrap();
        let err = ListenAddr::Socket(taken).bind().unwrap_err();
        assert!(
            format!("{err:#}").contains("Address already in use"),
            "{err:#}"
        );
    }

    #[test]
    fn a_port_taken_on_one_address_closes_the_others() {
        let taken = TcpListener::bind("[::1]:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let v4 = SocketAddr::from(([127, 0, 0, 1], port));
        let v6 = taken.local_addr().unwrap();
        let (err, failed) = bind_all(&[v4, v6]).unwrap_err();
        assert_eq!(err.kind(), AddrInUse, "{err}");
        assert_eq!(failed, v6);
        // The IPv4 socket it had bound is closed again.
        drop(TcpListener::bind(v4).unwrap());
    }

    #[test]
    fn localhost_binds_each_address_on_one_port() {
        let listeners = ListenAddr::parse("localhost:0").unwrap().bind().unwrap();
        let ports: Vec<u16> = listeners
            .iter()
            .map(|l| l.local_addr().unwrap().port())
            .collect();
        assert!(
            !ports.is_empty() && ports.iter().all(|&p| p == ports[0] && p != 0),
            "{ports:?}"
        );
    }
}
