//! systemd socket activation (sd_listen_fds(3)), read by the listenfd
//! crate: when the service manager started us with `LISTEN_PID` set to our
//! pid and `LISTEN_FDS` = N ≥ 1, descriptors 3 .. 3+N-1 are listening
//! sockets it bound for us. A `--serve` without an address then serves on
//! them and binds nothing.
//!
//! Only TCP stream sockets that listen are taken; anything else is an
//! error, so that a unit file's mistake is said at start, not found later.
//! listenfd also takes descriptors when `LISTEN_PID` is unset (systemfd's
//! way); systemd always sets it, so here that means "not ours".

use std::{net::TcpListener, os::unix::ffi::OsStrExt};

use anyhow::{Context, bail};
use listenfd::ListenFd;
use socket2::SockRef;

/// The first descriptor passed (SD_LISTEN_FDS_START).
const FIRST_FD: usize = 3;

/// The sockets systemd handed us, or `None` when it handed none to this
/// process. Takes ownership of the descriptors (listenfd removes the
/// variables): call once, before other threads start.
pub fn listeners() -> anyhow::Result<Option<Vec<TcpListener>>> {
    let Some(pid) = std::env::var_os("LISTEN_PID") else {
        return Ok(None);
    };
    // listenfd reads a LISTEN_FDS it cannot parse as "none"; for us that
    // would serve on the default address instead of the unit's sockets.
    let count = std::env::var_os("LISTEN_FDS").unwrap_or_default();
    if pid.to_str() == Some(&std::process::id().to_string())
        && count.to_str().is_none_or(|n| n.parse::<usize>().is_err())
    {
        bail!("socket activation: LISTEN_FDS={count:?} is not a number of descriptors");
    }
    let mut fds = ListenFd::from_env();
    if fds.len() == 0 {
        return Ok(None);
    }
    (0..fds.len())
        .map(|idx| take(&mut fds, idx))
        .collect::<anyhow::Result<_>>()
        .map(Some)
}

/// Takes the `idx`th descriptor passed, if it is a listening TCP socket.
fn take(fds: &mut ListenFd, idx: usize) -> anyhow::Result<TcpListener> {
    let fd = FIRST_FD + idx;
    // What the descriptor is, in the kernel's words: "socket:[…]",
    // "/dev/null".
    let what = std::fs::read_link(format!("/proc/self/fd/{fd}")).with_context(|| {
        format!(
            "socket activation: LISTEN_FDS={}, but descriptor {fd} is not open",
            fds.len()
        )
    })?;
    if !what.as_os_str().as_bytes().starts_with(b"socket:[") {
        bail!(
            "socket activation: descriptor {fd} is {}, not a socket",
            what.display()
        );
    }
    let listener = fds.take_tcp_listener(idx).ok().flatten().with_context(|| {
        format!(
            "socket activation: descriptor {fd} is not a TCP socket \
             (use ListenStream= with an address or port)"
        )
    })?;
    let what = || format!("socket activation: descriptor {fd}");
    if !SockRef::from(&listener).is_listener().with_context(what)? {
        bail!("socket activation: descriptor {fd} is not listening (Accept=no is needed)");
    }
    listener.set_nonblocking(true).with_context(what)?;
    Ok(listener)
}
