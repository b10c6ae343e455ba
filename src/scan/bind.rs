//! The portable method: bind each selected port and count those the
//! kernel says are in use.
//!
//! Each probe is one `[::]:port` socket with `IPV6_V6ONLY=0` (one bind
//! covers both families) and `SO_REUSEADDR=1` (a server-side TIME_WAIT does
//! not count), bound and closed at once; never SO_REUSEPORT, which would
//! share the port with a listener that has it. Only EADDRINUSE means open;
//! EACCES/EPERM means skipped (state unknown, counted, never reported).
//!
//! By its nature, a port only bound (an outgoing connection's) reads as
//! open, and a free port is held for microseconds, so a service starting
//! at that instant may fail to bind.

use std::{
    fs, io,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt},
    path::{Path, PathBuf},
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
    /// Ports whose bind was refused for lack of privilege.
    pub skipped: PortSet,
}

/// The outcome of probing one port.
enum Probe {
    Free,
    InUse,
    Skipped,
}

/// Probes every port of `ports` with a pool of `threads` threads (`None`:
/// one per CPU), holding the [`ScanLock`] throughout.
pub fn scan(ports: &PortSet, threads: Option<usize>) -> io::Result<Found> {
    let _lock = lock_path()
        .map(|path| ScanLock::acquire_at(path, LOCK_WAIT))
        .transpose()?;
    // Whether a new IPv6 socket of this network namespace starts dual-stack.
    let v6only = fs::read_to_string("/proc/sys/net/ipv6/bindv6only");
    let family = match Socket::new(Domain::IPV6, Type::STREAM, None) {
        Ok(_) if v6only.is_ok_and(|value| value.trim() == "0") => Family::DualByDefault,
        Ok(_) => Family::Dual,
        // A kernel without IPv6: 0.0.0.0 covers everything.
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
    /// `[::]` where net.ipv6.bindv6only is 0: the setsockopt would change
    /// nothing and cost ~10% of the scan.
    DualByDefault,
    V4,
}

/// Binds (and at once closes) one socket on the wildcard address and `port`.
fn probe(port: u16, family: Family) -> io::Result<Probe> {
    let addr = match family {
        Family::V4 => SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)),
        Family::Dual | Family::DualByDefault => SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)),
    };
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    if let Family::Dual = family {
        socket.set_only_v6(false)?;
    }
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

/// Turns between bind scans of one network namespace by one user.
///
/// On Linux two probes of one port do not collide, but overlapping scans
/// double how long a free port is held, and where SO_REUSEADDR means less
/// (the BSDs) they see each other's probes as open. The lock is an flock
/// in a directory only this user may write (`/run/port_exporter` for root,
/// `$XDG_RUNTIME_DIR/port_exporter` for others), so no other user can make
/// a scan wait; without one (a read-only /run) scans run unlocked. The
/// holder removes the file before releasing it, so a waiter that locked
/// the removed file sees it is no longer the named one and tries again.
struct ScanLock {
    /// Locked; closing it releases the lock.
    _file: fs::File,
    path: PathBuf,
}

impl ScanLock {
    /// Takes the lock that the file at `path` stands for, waiting up to
    /// `wait` for a running scan to end.
    fn acquire_at(path: PathBuf, wait: Duration) -> io::Result<ScanLock> {
        let deadline = Instant::now() + wait;
        loop {
            let file = fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(&path)
                .map_err(|err| {
                    io::Error::new(
                        err.kind(),
                        format!("cannot open the bind-scan lock {}: {err}", path.display()),
                    )
                })?;
            match file.try_lock() {
                Ok(()) if same_file(&file, &path) => return Ok(ScanLock { _file: file, path }),
                // Its holder removed it as we locked it: try the new one.
                Ok(()) => continue,
                Err(fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                    drop(file);
                    thread::sleep(Duration::from_millis(5));
                }
                Err(fs::TryLockError::WouldBlock) => {
                    return Err(io::Error::new(
                        io::ErrorKind::WouldBlock,
                        format!(
                            "another bind scan has held {} for {}s",
                            path.display(),
                            wait.as_secs()
                        ),
                    ));
                }
                Err(fs::TryLockError::Error(err)) => return Err(err),
            }
        }
    }
}

impl Drop for ScanLock {
    fn drop(&mut self) {
        // Removed while still locked; closing the file then releases it.
        let _ = fs::remove_file(&self.path);
    }
}

/// Whether `file` is still the file named `path`.
fn same_file(file: &fs::File, path: &Path) -> bool {
    match (file.metadata(), fs::metadata(path)) {
        (Ok(held), Ok(named)) => held.dev() == named.dev() && held.ino() == named.ino(),
        _ => false,
    }
}

/// The lock file of this user and network namespace, in a directory only
/// this user may write (made 0700 if missing); `None` when there is none.
fn lock_path() -> Option<PathBuf> {
    let dir = if nix::unistd::geteuid().is_root() {
        PathBuf::from(if cfg!(target_os = "linux") {
            "/run/port_exporter"
        } else {
            "/var/run/port_exporter"
        })
    } else {
        let runtime = PathBuf::from(std::env::var_os("XDG_RUNTIME_DIR")?);
        private_dir(&runtime)?;
        runtime.join("port_exporter")
    };
    // Made if missing; the check below judges what is there (nothing, if
    // it could not be made).
    let _ = fs::DirBuilder::new().mode(0o700).create(&dir);
    private_dir(&dir)?;
    Some(dir.join(format!("bind-scan.{}.lock", namespace_id())))
}

/// `Some` when `dir` is a real directory (no symlink) of this user that no
/// one else may write.
fn private_dir(dir: &Path) -> Option<()> {
    let meta = fs::symlink_metadata(dir).ok()?;
    (meta.is_dir() && meta.uid() == nix::unistd::geteuid().as_raw() && meta.mode() & 0o022 == 0)
        .then_some(())
}

/// What tells this network namespace from others: its inode on Linux.
fn namespace_id() -> String {
    fs::metadata("/proc/thread-self/ns/net")
        .map_or_else(|_| "net".into(), |meta| format!("net{}", meta.ino()))
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
    fn lock_excludes_a_second_holder_and_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bind-scan.lock");
        let first = ScanLock::acquire_at(path.clone(), LOCK_WAIT).unwrap();
        let err = ScanLock::acquire_at(path.clone(), Duration::from_millis(20))
            .err()
            .unwrap();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        // A waiter that opened the file before the holder let go gets the
        // lock on a removed file, sees that, and takes the new one.
        let early = fs::File::open(&path).unwrap();
        drop(first);
        assert!(!path.exists(), "the lock file was left behind");
        early.try_lock().unwrap();
        assert!(!same_file(&early, &path));
        let second = ScanLock::acquire_at(path.clone(), LOCK_WAIT).unwrap();
        assert!(path.exists() && second.path == path);
    }

    #[test]
    fn only_a_private_directory_holds_the_lock() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let set = |mode| fs::set_permissions(dir.path(), fs::Permissions::from_mode(mode)).unwrap();
        set(0o700);
        assert!(private_dir(dir.path()).is_some());
        for shared in [0o777, 0o1777, 0o720, 0o702] {
            set(shared);
            assert!(private_dir(dir.path()).is_none(), "{shared:o}");
        }
        set(0o700);
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(dir.path(), &link).unwrap();
        assert!(private_dir(&link).is_none(), "a symlink was trusted");
        assert!(private_dir(&dir.path().join("missing")).is_none());
    }
}
