//! Finding the open TCP ports: the only code that asks the OS about sockets.
//!
//! A port is open when the kernel holds a TCP socket in LISTEN state bound
//! to it, on any local address and either family, in the network namespace
//! the tool runs in: exactly the set `ss -Htln` prints.

pub mod bind;
#[cfg(target_os = "linux")]
pub mod netlink;
#[cfg(target_os = "linux")]
pub mod procfs;

use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;

use crate::ports::PortSet;

/// How to find the open ports (`--method`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Method {
    /// netlink, falling back to procfs; bind where neither exists
    Auto,
    /// The kernel's listener table over NETLINK_SOCK_DIAG, as ss does:
    /// exact, ~35 µs, no privilege
    Netlink,
    /// /proc/net/tcp and tcp6: exact, but ~10 ms and slower with many
    /// connections
    Procfs,
    /// Try to bind each port, in parallel (--threads): portable, but ~0.3 s
    /// for all ports; counts ports that are only bound (outgoing
    /// connections, TIME_WAIT) as open, holds each free port for a few
    /// microseconds, and checks ports below 1024 only as root or with
    /// CAP_NET_BIND_SERVICE
    Bind,
}

impl Method {
    /// The name used on the command line and in `port_exporter_build_info`.
    pub fn name(self) -> &'static str {
        match self {
            Method::Auto => "auto",
            Method::Netlink => "netlink",
            Method::Procfs => "procfs",
            Method::Bind => "bind",
        }
    }
}

/// The result of one scan.
#[derive(Debug)]
pub struct Scan {
    /// Selected ports found open.
    pub open: PortSet,
    /// Selected ports that could not be checked (bind without privilege).
    pub denied: PortSet,
    /// The method that produced the result (never [`Method::Auto`]).
    pub method: Method,
    /// When the scan started.
    pub started: SystemTime,
    /// How long it took.
    pub duration: Duration,
    /// Why `auto` did not use its first choice, if it did not.
    pub fallback: Option<String>,
}

impl Scan {
    /// What to tell the user when some ports could not be checked: how many,
    /// and how to fix it. `None` when every selected port was checked.
    pub fn skipped_warning(&self) -> Option<String> {
        (!self.denied.is_empty()).then(|| {
            format!(
                "warning: {} ports could not be checked (permission denied) and are not \
                 reported; run as root, grant CAP_NET_BIND_SERVICE, lower \
                 net.ipv4.ip_unprivileged_port_start, or use --method netlink",
                self.denied.len()
            )
        })
    }
}

/// Scans the ports of `selected` with `method`; `threads` sizes the pool of
/// the bind method (`None`: one thread per CPU).
pub fn scan(method: Method, selected: &PortSet, threads: Option<usize>) -> anyhow::Result<Scan> {
    let started = SystemTime::now();
    let clock = Instant::now();
    let mut fallback = None;
    let (mut open, denied, method) = match method {
        Method::Bind => {
            let found = bind::scan(selected, threads).context("bind scan failed")?;
            (found.open, found.denied, Method::Bind)
        }
        #[cfg(target_os = "linux")]
        Method::Netlink => (
            netlink::listening_ports().context("netlink sock_diag dump failed")?,
            PortSet::new(),
            Method::Netlink,
        ),
        #[cfg(target_os = "linux")]
        Method::Procfs => (read_procfs()?, PortSet::new(), Method::Procfs),
        #[cfg(target_os = "linux")]
        Method::Auto => match netlink::listening_ports() {
            Ok(open) => (open, PortSet::new(), Method::Netlink),
            Err(err) => {
                fallback = Some(format!(
                    "netlink sock_diag dump failed ({err}); used procfs"
                ));
                (read_procfs()?, PortSet::new(), Method::Procfs)
            }
        },
        #[cfg(not(target_os = "linux"))]
        Method::Netlink | Method::Procfs => {
            anyhow::bail!("--method {} exists only on Linux", method.name())
        }
        #[cfg(not(target_os = "linux"))]
        Method::Auto => {
            let found = bind::scan(selected, threads).context("bind scan failed")?;
            (found.open, found.denied, Method::Bind)
        }
    };
    open.intersect_with(selected);
    Ok(Scan {
        open,
        denied,
        method,
        started,
        duration: clock.elapsed(),
        fallback,
    })
}

/// Reads the listener tables of this process's network namespace.
#[cfg(target_os = "linux")]
fn read_procfs() -> anyhow::Result<PortSet> {
    // /proc/self/net, not /proc/net: the same link, but it says whose
    // namespace is meant.
    procfs::listening_ports(std::path::Path::new("/proc/self/net"))
        .context("reading the /proc listener tables failed")
}
