//! The original method, done right: try to bind each selected port and
//! count the ports the kernel says are in use.
//!
//! Each probe is one `[::]:port` socket with `IPV6_V6ONLY=0` (so one bind
//! covers both families) and `SO_REUSEADDR=1` (so sockets of services that
//! set it too, such as server-side TIME_WAIT, do not count), bound and
//! closed at once, never listened on. SO_REUSEPORT is never set: a probe
//! with it would share the port with a listener that has it and miss it.
//!
//! Only EADDRINUSE means open. EACCES/EPERM (a port below
//! `net.ipv4.ip_unprivileged_port_start` without privilege) means the port
//! is skipped: its state is unknown, so it is never reported open, only
//! counted. Any other error fails the scan.
//!
//! Known limits, kept because they are the method's nature: a port that is
//! only bound (the local port of an outgoing connection, a client-side
//! TIME_WAIT) reads as open, and a free port is held for a few microseconds
//! during its probe, so a service starting at that instant may fail to bind.

use std::{
    io,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    thread,
    time::{Duration, Instant},
};

use rayon::prelude::*;
use socket2::{Domain, Socket, Type};

use crate::ports::PortSet;

/// What a bind scan found.
#[derive(Debug, Default)]
pub struct Found {
    /// Ports whose bind failed with EADDRINUSE.
    pub open: PortSet,
    /// Ports skipped because their bind was refused for lack of
    /// privilege: state unknown.
    pub skipped: PortSet,
}

/// The outcome of probing one port.
enum Probe {
    /// The bind succeeded: nothing holds the port.
    Free,
    /// EADDRINUSE: something holds the port (a listener, or see the limits).
    InUse,
    /// EACCES/EPERM: not ours to bind, so skipped.
    Skipped,
}

/// Probes every port of `ports` with a pool of `threads` threads (`None`:
/// one per CPU, which is only worth asking the OS for here).
///
/// Holds the [`ScanLock`] for the whole scan, so bind scans of a namespace
/// take turns. On Linux two of these probes on one port do not collide
/// (both set SO_REUSEADDR and neither listens), but overlapping scans would
/// still double the time each free port is held against a starting
/// service, and where SO_REUSEADDR means less (the BSDs) concurrent probes
/// of one port do see each other as open.
pub fn scan(ports: &PortSet, threads: Option<usize>) -> io::Result<Found> {
    let _lock = ScanLock::acquire(LOCK_WAIT)?;
    let family = match Socket::new(Domain::IPV6, Type::STREAM, None) {
        Ok(_) if dual_stack_by_default() => Family::DualByDefault,
        Ok(_) => Family::Dual,
        // A kernel without IPv6: probe 0.0.0.0, which then covers everything.
        Err(err) if err.raw_os_error() == Some(libc::EAFNOSUPPORT) => Family::V4,
        Err(err) => return Err(err),
    };
    let threads = threads.unwrap_or_else(|| thread::available_parallelism().map_or(1, |n| n.get()));
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("bind-probe-{i}"))
        .build()
        .map_err(io::Error::other)?;
    let ports: Vec<u16> = ports.iter().collect();
    pool.install(|| {
        ports
            .par_iter()
            .with_min_len(256)
            .try_fold(Found::default, |mut found, &port| {
                match probe(port, family)? {
                    Probe::Free => {}
                    Probe::InUse => found.open.insert(port),
                    Probe::Skipped => found.skipped.insert(port),
                }
                Ok(found)
            })
            .try_reduce(Found::default, |mut a, b| {
                a.open.union_with(&b.open);
                a.skipped.union_with(&b.skipped);
                Ok(a)
            })
    })
}

/// Which socket a probe uses.
#[derive(Clone, Copy, Debug)]
enum Family {
    /// `[::]` with IPV6_V6ONLY cleared explicitly.
    Dual,
    /// `[::]`, which is dual-stack already: net.ipv6.bindv6only is 0, so the
    /// setsockopt would change nothing and costs ~10% of the scan.
    DualByDefault,
    /// `0.0.0.0`, on a kernel without IPv6.
    V4,
}

/// Whether a new IPv6 socket of this network namespace starts dual-stack.
fn dual_stack_by_default() -> bool {
    cfg!(target_os = "linux")
        && std::fs::read_to_string("/proc/sys/net/ipv6/bindv6only")
            .is_ok_and(|value| value.trim() == "0")
}

/// Binds (and at once closes) one socket on the wildcard address and `port`.
fn probe(port: u16, family: Family) -> io::Result<Probe> {
    let (socket, addr) = match family {
        Family::Dual | Family::DualByDefault => {
            let socket = Socket::new(Domain::IPV6, Type::STREAM, None)?;
            if let Family::Dual = family {
                socket.set_only_v6(false)?;
            }
            (socket, SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)))
        }
        Family::V4 => {
            let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
            (socket, SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)))
        }
    };
    socket.set_reuse_address(true)?;
    match socket.bind(&addr.into()) {
        Ok(()) => Ok(Probe::Free),
        Err(err) => match err.kind() {
            io::ErrorKind::AddrInUse => Ok(Probe::InUse),
            io::ErrorKind::PermissionDenied => Ok(Probe::Skipped),
            _ => Err(io::Error::new(
                err.kind(),
                format!("cannot probe port {port}: {err}"),
            )),
        },
    }
}

/// How long to wait for another bind scan to finish before giving up.
const LOCK_WAIT: Duration = Duration::from_secs(30);

/// Mutual exclusion between bind scans of one network namespace, across
/// processes and users.
///
/// On Linux it is a Unix socket bound to an abstract name: those names live
/// in the network namespace, which is exactly the scope in which two scans
/// disturb each other; any user may bind one, no file or directory has to be
/// writable (useful under systemd's ProtectSystem=strict), and the kernel
/// releases it when the holder exits, even by SIGKILL. Elsewhere it is an
/// advisory lock on a file in the temporary directory.
pub struct ScanLock {
    #[cfg(target_os = "linux")]
    _socket: std::os::unix::net::UnixDatagram,
    #[cfg(not(target_os = "linux"))]
    _file: std::fs::File,
}

impl ScanLock {
    /// Takes the lock, waiting up to `wait` for a running scan to end.
    #[cfg(target_os = "linux")]
    pub fn acquire(wait: Duration) -> io::Result<ScanLock> {
        use std::os::{linux::net::SocketAddrExt, unix::net};
        let name = net::SocketAddr::from_abstract_name(b"port_exporter/bind-scan")?;
        let deadline = Instant::now() + wait;
        loop {
            match net::UnixDatagram::bind_addr(&name) {
                Ok(socket) => return Ok(ScanLock { _socket: socket }),
                Err(err) if err.kind() == io::ErrorKind::AddrInUse => {
                    if Instant::now() >= deadline {
                        return Err(io::Error::new(
                            io::ErrorKind::WouldBlock,
                            format!(
                                "another bind scan has held its lock for {}s",
                                wait.as_secs()
                            ),
                        ));
                    }
                    thread::sleep(Duration::from_millis(5));
                }
                Err(err) => {
                    return Err(io::Error::new(
                        err.kind(),
                        format!("cannot take the bind-scan lock: {err}"),
                    ));
                }
            }
        }
    }

    /// Takes the lock, waiting up to `wait` for a running scan to end.
    #[cfg(not(target_os = "linux"))]
    pub fn acquire(wait: Duration) -> io::Result<ScanLock> {
        let path = std::env::temp_dir().join("port_exporter.bind-scan.lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?;
        let deadline = Instant::now() + wait;
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(ScanLock { _file: file }),
                Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(5));
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(io::Error::new(
                        io::ErrorKind::WouldBlock,
                        format!("another bind scan holds {}", path.display()),
                    ));
                }
                Err(std::fs::TryLockError::Error(err)) => return Err(err),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn finds_listeners_of_both_families() {
        let v4 = TcpListener::bind("127.0.0.1:0").unwrap();
        let v6 = TcpListener::bind("[::1]:0").unwrap();
        let (p4, p6) = (
            v4.local_addr().unwrap().port(),
            v6.local_addr().unwrap().port(),
        );
        let ports: PortSet = [p4, p6].into_iter().collect();
        let found = scan(&ports, Some(2)).unwrap();
        assert!(
            found.open.contains(p4) && found.open.contains(p6),
            "{found:?}"
        );
        drop((v4, v6));
        // Closed listeners (with SO_REUSEADDR, as std sets it) read as free.
        let found = scan(&ports, Some(1)).unwrap();
        assert!(found.open.is_empty(), "{found:?}");
    }

    #[test]
    fn every_probe_family_sees_a_v4_listener() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        for family in [Family::Dual, Family::DualByDefault, Family::V4] {
            assert!(
                matches!(probe(port, family).unwrap(), Probe::InUse),
                "{family:?}"
            );
        }
    }

    #[test]
    fn lock_excludes_a_second_holder() {
        let first = ScanLock::acquire(LOCK_WAIT).unwrap();
        let err = ScanLock::acquire(Duration::from_millis(20)).err().unwrap();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        drop(first);
        ScanLock::acquire(LOCK_WAIT).unwrap();
    }
}
