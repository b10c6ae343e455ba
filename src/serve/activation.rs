//! systemd socket activation (sd_listen_fds(3)): when the service manager
//! started us with `LISTEN_PID` set to our pid and `LISTEN_FDS` = N ≥ 1,
//! descriptors 3 .. 3+N-1 are listening sockets it bound for us. A
//! `--serve` without an address then serves on them and binds nothing.
//!
//! Only TCP stream sockets that listen are taken; anything else is an
//! error, so that a unit file's mistake is said at start, not found later.

use std::net::TcpListener;

use anyhow::{Context, bail};

/// The first descriptor passed (SD_LISTEN_FDS_START).
const FIRST_FD: i32 = 3;

/// The sockets systemd handed us, or `None` when it handed none to this
/// process. Takes ownership of the descriptors: call once.
pub fn listeners() -> anyhow::Result<Option<Vec<TcpListener>>> {
    let pid = std::env::var("LISTEN_PID").ok();
    let fds = std::env::var("LISTEN_FDS").ok();
    listeners_from(pid.as_deref(), fds.as_deref(), std::process::id())
}

/// [`listeners`] for the given environment values and our pid.
fn listeners_from(
    pid: Option<&str>,
    fds: Option<&str>,
    our_pid: u32,
) -> anyhow::Result<Option<Vec<TcpListener>>> {
    let count = match passed(pid, fds, our_pid)? {
        0 => return Ok(None),
        n => n,
    };
    take(count).map(Some)
}

/// How many descriptors are ours per the environment: 0 when the variables
/// are absent or meant for another process (our parent, say).
fn passed(pid: Option<&str>, fds: Option<&str>, our_pid: u32) -> anyhow::Result<i32> {
    let (Some(pid), Some(fds)) = (pid, fds) else {
        return Ok(0);
    };
    if pid.trim().parse::<u32>().ok() != Some(our_pid) {
        return Ok(0);
    }
    let count: i32 = fds
        .trim()
        .parse()
        .ok()
        .filter(|n| (0..=1024).contains(n))
        .with_context(|| format!("socket activation: LISTEN_FDS={fds:?} is not a count"))?;
    Ok(count)
}

#[cfg(target_os = "linux")]
/// Takes descriptors 3 .. 3+count-1 as listeners.
fn take(count: i32) -> anyhow::Result<Vec<TcpListener>> {
    use std::{
        os::fd::{FromRawFd, OwnedFd},
        sync::atomic::{AtomicBool, Ordering},
    };

    use socket2::{Domain, Socket, Type};

    static TAKEN: AtomicBool = AtomicBool::new(false);
    if TAKEN.swap(true, Ordering::SeqCst) {
        bail!("socket activation: the descriptors were already taken");
    }
    let mut listeners = Vec::new();
    for fd in FIRST_FD..FIRST_FD + count {
        // Only an open socket may be owned: ask the kernel what fd is.
        let target = std::fs::read_link(format!("/proc/self/fd/{fd}")).with_context(|| {
            format!("socket activation: LISTEN_FDS={count}, but descriptor {fd} is not open")
        })?;
        if !target.to_string_lossy().starts_with("socket:[") {
            bail!(
                "socket activation: descriptor {fd} is {}, not a socket",
                target.display()
            );
        }
        #[allow(unsafe_code)]
        // SAFETY: the descriptor is open (checked above) and, per the
        // sd_listen_fds protocol, handed to this process to own; nothing
        // else in it uses descriptors 3.., and TAKEN makes this run once.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        let socket = Socket::from(owned);
        let what = |err| format!("socket activation: descriptor {fd}: {err}");
        let domain = socket.domain().map_err(|e| anyhow::anyhow!(what(e)))?;
        let kind = socket.r#type().map_err(|e| anyhow::anyhow!(what(e)))?;
        let listening = socket.is_listener().map_err(|e| anyhow::anyhow!(what(e)))?;
        if !(domain == Domain::IPV4 || domain == Domain::IPV6) || kind != Type::STREAM {
            bail!(
                "socket activation: descriptor {fd} is not a TCP socket \
                 (use ListenStream= with an address or port)"
            );
        }
        if !listening {
            bail!("socket activation: descriptor {fd} is not listening (Accept=no is needed)");
        }
        socket
            .set_cloexec(true)
            .map_err(|e| anyhow::anyhow!(what(e)))?;
        socket
            .set_nonblocking(true)
            .map_err(|e| anyhow::anyhow!(what(e)))?;
        listeners.push(TcpListener::from(socket));
    }
    Ok(listeners)
}

#[cfg(not(target_os = "linux"))]
/// Socket activation is systemd's, so Linux only.
fn take(_count: i32) -> anyhow::Result<Vec<TcpListener>> {
    bail!("socket activation is only supported on Linux")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_descriptors_meant_for_us_count() {
        assert_eq!(passed(None, None, 42).unwrap(), 0);
        assert_eq!(passed(Some("42"), None, 42).unwrap(), 0);
        assert_eq!(passed(None, Some("1"), 42).unwrap(), 0);
        assert_eq!(passed(Some("41"), Some("2"), 42).unwrap(), 0);
        assert_eq!(passed(Some("x"), Some("2"), 42).unwrap(), 0);
        assert_eq!(passed(Some("42"), Some("0"), 42).unwrap(), 0);
        assert_eq!(passed(Some("42"), Some("2"), 42).unwrap(), 2);
        for bad in ["", "-1", "two", "100000"] {
            let err = passed(Some("42"), Some(bad), 42).unwrap_err();
            assert!(format!("{err:#}").contains("LISTEN_FDS"), "{err:#}");
        }
        // Not ours: nothing is taken, whatever the descriptors are.
        assert!(listeners_from(Some("1"), Some("3"), 42).unwrap().is_none());
    }
}
