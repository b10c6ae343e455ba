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

/// How to find the open ports (`--method`; `cli` gives each its help).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// `netlink`, falling back to `procfs`; `bind` where neither exists.
    Auto,
    /// The kernel's listener table over NETLINK_SOCK_DIAG ([`netlink`]).
    Netlink,
    /// `/proc/net/tcp` and `tcp6` ([`procfs`]).
    Procfs,
    /// A bind probe of each port ([`bind`]).
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

/// What to scan: the same for one-shot runs and for every scrape.
#[derive(Debug)]
pub struct Plan {
    /// `--method`.
    pub method: Method,
    /// The ports to report: `--ports` (or all) minus `--exclude`.
    pub selected: PortSet,
    /// Threads of the bind method's pool; `None` for one per CPU.
    pub threads: Option<usize>,
}

/// The result of one scan.
#[derive(Debug)]
pub struct Scan {
    /// Selected ports found open.
    pub open: PortSet,
    /// Selected ports that were skipped: the bind method may not bind them
    /// (permission denied), so their state is unknown.
    pub skipped: PortSet,
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
    /// What to tell the user when some ports were skipped: how many, and
    /// how to fix it. `None` when every selected port was checked.
    pub fn skipped_warning(&self) -> Option<String> {
        (!self.skipped.is_empty()).then(|| {
            format!(
                "warning: {} ports were skipped (permission denied to bind them) and are not \
                 reported; run as root, grant CAP_NET_BIND_SERVICE, lower \
                 net.ipv4.ip_unprivileged_port_start, or use --method netlink",
                self.skipped.len()
            )
        })
    }
}

impl Plan {
    /// Scans the selected ports with the planned method.
    pub fn run(&self) -> anyhow::Result<Scan> {
        let started = SystemTime::now();
        let clock = Instant::now();
        let mut fallback = None;
        let (mut open, skipped, method) = match self.method {
            Method::Bind => self.bind()?,
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
                Err(refused) => {
                    let why = format!("netlink sock_diag dump failed ({refused})");
                    let open = read_procfs()
                        .with_context(|| format!("{why}, and so did the procfs fallback"))?;
                    fallback = Some(format!("{why}; used procfs"));
                    (open, PortSet::new(), Method::Procfs)
                }
            },
            #[cfg(not(target_os = "linux"))]
            Method::Netlink | Method::Procfs => {
                anyhow::bail!("--method {} exists only on Linux", self.method.name())
            }
            #[cfg(not(target_os = "linux"))]
            Method::Auto => self.bind()?,
        };
        open.intersect_with(&self.selected);
        Ok(Scan {
            open,
            skipped,
            method,
            started,
            duration: clock.elapsed(),
            fallback,
        })
    }

    /// A bind scan of the selected ports: (open, skipped, method).
    fn bind(&self) -> anyhow::Result<(PortSet, PortSet, Method)> {
        let found = bind::scan(&self.selected, self.threads).context("bind scan failed")?;
        Ok((found.open, found.skipped, Method::Bind))
    }
}

/// Reads the listener tables of this process's network namespace.
#[cfg(target_os = "linux")]
fn read_procfs() -> anyhow::Result<PortSet> {
    // /proc/self/net, not /proc/net: the same link, but it says whose
    // namespace is meant.
    procfs::listening_ports(std::path::Path::new("/proc/self/net"))
        .context("reading the /proc listener tables failed")
}
