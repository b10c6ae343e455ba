//! Finding the open ports and who holds them: the only code that asks the
//! OS about sockets or reads /proc.
//!
//! A TCP port is open when the kernel holds a TCP socket in LISTEN state
//! bound to it, on any local address and either family, in the network
//! namespace the tool runs in: exactly the set `ss -Htln` prints. A UDP port
//! is open when a UDP socket is bound to it and not connected to a peer:
//! the set `ss -Huln` prints.
//!
//! Each socket that makes a port open is one [`Listener`] record; the port
//! sets and every label are views of a list of them. When no view needs
//! more than the ports ([`Detail::ports_only`]), netlink and procfs fill
//! port sets directly, which keeps the default run as cheap as it was.
//! Scanning is a function of the current network namespace (netlink) or of
//! a `/proc/PID/net` directory (procfs); finding the processes
//! ([`owner`]) and user names ([`users`]) is host-wide. With `--netns all`
//! ([`netns`]) the same scan runs in every network namespace of the host,
//! each listener marked with its namespace.

pub mod bind;
#[cfg(target_os = "linux")]
pub mod netlink;
#[cfg(target_os = "linux")]
pub mod netns;
pub mod owner;
#[cfg(target_os = "linux")]
pub mod procfs;
pub mod users;

use std::{
    net::IpAddr,
    time::{Duration, Instant, SystemTime},
};

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

/// A transport protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    /// The name on the command line and in the `protocol` label.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// The protocols to scan (`--protocol`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Protocols {
    pub tcp: bool,
    pub udp: bool,
}

impl Protocols {
    /// TCP alone: the default.
    pub const TCP: Protocols = Protocols {
        tcp: true,
        udp: false,
    };

    /// The protocols, TCP first.
    pub fn iter(self) -> impl Iterator<Item = Protocol> {
        [(self.tcp, Protocol::Tcp), (self.udp, Protocol::Udp)]
            .into_iter()
            .filter_map(|(wanted, protocol)| wanted.then_some(protocol))
    }
}

/// One socket that makes a port open, as the kernel reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Listener {
    pub protocol: Protocol,
    /// The local address it is bound to (a wildcard for any).
    pub address: IpAddr,
    /// The interface it is bound to, by index: the scope of a link-local
    /// IPv6 address, or a device (SO_BINDTODEVICE); 0 for none.
    pub interface: u32,
    pub port: u16,
    /// Its owner (the user that created it).
    pub uid: u32,
    /// The socket's inode, which ties it to the processes holding it.
    pub inode: u32,
    /// The lowest pid holding it ([`owner`]), 0 when unknown or not asked.
    pub pid: u32,
    /// Its network namespace: an index into [`Sockets::namespaces`], 0
    /// when only the tool's own namespace is scanned.
    pub netns: u32,
}

/// Where an address lets a socket be reached from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// A wildcard address: every address of the host.
    Any,
    /// 127.0.0.0/8, ::1, ::ffff:127.0.0.0/104: this host only.
    Loopback,
    /// 169.254.0.0/16, fe80::/10: one link.
    LinkLocal,
    /// One other address.
    Specific,
}

impl Scope {
    /// The scope of `address` (an IPv4-mapped IPv6 address as its IPv4).
    pub fn of(address: IpAddr) -> Scope {
        let address = match address {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
            v4 => v4,
        };
        match address {
            a if a.is_unspecified() => Scope::Any,
            a if a.is_loopback() => Scope::Loopback,
            IpAddr::V4(v4) if v4.is_link_local() => Scope::LinkLocal,
            IpAddr::V6(v6) if v6.is_unicast_link_local() => Scope::LinkLocal,
            _ => Scope::Specific,
        }
    }

    /// The value of the `scope` label.
    pub fn name(self) -> &'static str {
        match self {
            Scope::Any => "any",
            Scope::Loopback => "loopback",
            Scope::LinkLocal => "link-local",
            Scope::Specific => "specific",
        }
    }
}

/// How much a scan learns about the open ports, as the views need it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Detail {
    /// Each socket: address, interface, uid, inode.
    pub sockets: bool,
    /// The name of each socket's owner.
    pub users: bool,
    /// The process holding each socket.
    pub processes: bool,
}

impl Detail {
    /// Whether the ports alone will do (no record needed).
    pub fn ports_only(self) -> bool {
        !(self.sockets || self.users || self.processes)
    }
}

/// Which network namespaces to scan (`--netns`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Namespaces {
    /// The one port_exporter runs in.
    #[default]
    Own,
    /// Every namespace of the host that a thread is in or a file is bound
    /// to.
    All,
}

/// What to scan: the same for one-shot runs and for every scrape.
#[derive(Clone, Debug)]
pub struct Plan {
    /// `--method`.
    pub method: Method,
    /// The ports to report: `--ports` (or all) minus `--exclude`.
    pub selected: PortSet,
    /// Threads of the bind method's pool; `None` for one per CPU.
    pub threads: Option<usize>,
    /// `--protocol`.
    pub protocols: Protocols,
    /// What to learn about each open port.
    pub detail: Detail,
    /// `--netns`.
    pub namespaces: Namespaces,
}

/// The result of one scan.
#[derive(Debug)]
pub struct Scan {
    /// Selected TCP ports found open (empty when TCP was not scanned).
    pub open: PortSet,
    /// Selected UDP ports found open (empty when UDP was not scanned).
    pub open_udp: PortSet,
    /// The sockets behind the open ports, when the plan asked for them.
    pub sockets: Option<Sockets>,
    /// The protocols scanned.
    pub protocols: Protocols,
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
    /// With `--netns all`: the namespaces that could not be scanned.
    pub unscanned: Vec<Unscanned>,
}

/// A network namespace that exists but could not be scanned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unscanned {
    /// Its `netns` label.
    pub name: String,
    /// Why, such as `cannot open /run/netns/blue: Permission denied`.
    pub why: String,
}

/// Names by numeric id (interface index, uid, pid), sorted by id.
pub type Names = Vec<(u32, String)>;

/// An interface of a namespace: (namespace, interface index). Interface
/// indexes are numbered in each namespace on its own.
pub type Interface = (u32, u32);

/// The sockets of a scan and what is known about them.
#[derive(Debug, Default)]
pub struct Sockets {
    /// The sockets on selected ports, each once.
    pub listeners: Vec<Listener>,
    /// The name of each interface a listener is bound to, by namespace
    /// and index, sorted.
    pub interfaces: Vec<(Interface, String)>,
    /// The name of each owner (or its number when no name resolves), by
    /// uid, sorted; empty unless the plan asked for users.
    pub users: Vec<(u32, String)>,
    /// The processes holding the listeners, when the plan asked for them.
    pub processes: Option<owner::Processes>,
    /// With `--netns all`: the `netns` label of each namespace scanned, in
    /// no particular order ([`Listener::netns`] indexes it); empty
    /// otherwise.
    pub namespaces: Vec<String>,
}

impl Sockets {
    /// The name of interface `index` of namespace `netns`.
    pub fn interface(&self, netns: u32, index: u32) -> Option<&str> {
        lookup(&self.interfaces, (netns, index))
    }

    /// The name of user `uid`, if users were resolved.
    pub fn user(&self, uid: u32) -> Option<&str> {
        lookup(&self.users, uid)
    }

    /// The command name of process `pid`, if it holds a listener.
    pub fn process(&self, pid: u32) -> Option<&str> {
        self.processes.as_ref().and_then(|p| lookup(&p.names, pid))
    }
}

/// The value of `key` in a list of pairs sorted by key.
fn lookup<K: Ord>(pairs: &[(K, String)], key: K) -> Option<&str> {
    pairs
        .binary_search_by(|(k, _)| k.cmp(&key))
        .ok()
        .map(|i| pairs[i].1.as_str())
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

/// What a method found, before the selection is applied.
enum Found {
    /// The open ports of TCP and of UDP.
    Ports(PortSet, PortSet),
    /// Every listener, and the names of the interfaces they are bound to.
    Sockets(Vec<Listener>, Vec<(Interface, String)>),
}

/// The interfaces of the tool's own namespace, as [`Sockets`] keeps them.
#[cfg(target_os = "linux")]
fn own_interfaces(names: Names) -> Vec<(Interface, String)> {
    names
        .into_iter()
        .map(|(index, name)| ((0, index), name))
        .collect()
}

impl Plan {
    /// Checks, before anything else is done, that the plan can run at all:
    /// `--netns all` needs its privilege.
    pub fn check(&self) -> anyhow::Result<()> {
        match self.namespaces {
            Namespaces::Own => Ok(()),
            #[cfg(target_os = "linux")]
            Namespaces::All => netns::check_privilege(),
            #[cfg(not(target_os = "linux"))]
            Namespaces::All => anyhow::bail!("--netns exists only on Linux"),
        }
    }

    /// Scans the selected ports with the planned method, and learns what
    /// the plan's detail asks for.
    pub fn run(&self) -> anyhow::Result<Scan> {
        let started = SystemTime::now();
        let clock = Instant::now();
        let mut fallback = None;
        let mut unscanned = Vec::new();
        let mut namespaces = Vec::new();
        let (found, skipped, method) = match (self.namespaces, self.method) {
            (Namespaces::Own, method) => self.own(method, &mut fallback)?,
            #[cfg(target_os = "linux")]
            (Namespaces::All, _) => {
                let all = self.all()?;
                fallback = all.fallback;
                unscanned = all.unscanned;
                namespaces = all.names;
                (
                    Found::Sockets(all.listeners, all.interfaces),
                    PortSet::new(),
                    all.method,
                )
            }
            #[cfg(not(target_os = "linux"))]
            (Namespaces::All, _) => anyhow::bail!("--netns exists only on Linux"),
        };
        let (mut open, mut open_udp, sockets) = match found {
            Found::Ports(tcp, udp) => (tcp, udp, None),
            Found::Sockets(listeners, interfaces) => {
                let sockets = self.learn(listeners, interfaces, namespaces);
                let (mut tcp, mut udp) = (PortSet::new(), PortSet::new());
                for listener in &sockets.listeners {
                    match listener.protocol {
                        Protocol::Tcp => tcp.insert(listener.port),
                        Protocol::Udp => udp.insert(listener.port),
                    }
                }
                (tcp, udp, Some(sockets))
            }
        };
        open.intersect_with(&self.selected);
        open_udp.intersect_with(&self.selected);
        Ok(Scan {
            open,
            open_udp,
            sockets,
            protocols: self.protocols,
            skipped,
            method,
            started,
            duration: clock.elapsed(),
            fallback,
            unscanned,
        })
    }

    /// A scan of every network namespace ([`netns`]). Cold and never
    /// inlined: its code stays out of the way of the default run's, which
    /// is mostly process start-up.
    #[cfg(target_os = "linux")]
    #[cold]
    #[inline(never)]
    fn all(&self) -> anyhow::Result<netns::All> {
        netns::scan(self)
    }

    /// A scan of the tool's own network namespace with `method`: what it
    /// found, the ports it skipped, and the method that ran.
    fn own(
        &self,
        method: Method,
        fallback: &mut Option<String>,
    ) -> anyhow::Result<(Found, PortSet, Method)> {
        Ok(match method {
            Method::Bind => self.bind()?,
            #[cfg(target_os = "linux")]
            Method::Netlink => (
                self.netlink().context("netlink sock_diag dump failed")?,
                PortSet::new(),
                Method::Netlink,
            ),
            #[cfg(target_os = "linux")]
            Method::Procfs => (self.procfs()?, PortSet::new(), Method::Procfs),
            #[cfg(target_os = "linux")]
            Method::Auto => match self.netlink() {
                Ok(found) => (found, PortSet::new(), Method::Netlink),
                Err(refused) => {
                    let why = format!("netlink sock_diag dump failed ({refused})");
                    let found = self
                        .procfs()
                        .with_context(|| format!("{why}, and so did the procfs fallback"))?;
                    *fallback = Some(format!("{why}; used procfs"));
                    (found, PortSet::new(), Method::Procfs)
                }
            },
            #[cfg(not(target_os = "linux"))]
            Method::Netlink | Method::Procfs => {
                anyhow::bail!("--method {} exists only on Linux", method.name())
            }
            #[cfg(not(target_os = "linux"))]
            Method::Auto => self.bind()?,
        })
    }

    /// Keeps the listeners on selected ports, in a stable order, and finds
    /// their processes and user names if the plan asks for them.
    fn learn(
        &self,
        mut listeners: Vec<Listener>,
        interfaces: Vec<(Interface, String)>,
        namespaces: Vec<String>,
    ) -> Sockets {
        listeners.retain(|l| self.selected.contains(l.port));
        listeners.sort_unstable_by_key(|l| {
            (l.port, l.protocol, l.address, l.netns, l.interface, l.inode)
        });
        let processes = self
            .detail
            .processes
            .then(|| owner::attribute(&mut listeners, std::path::Path::new("/proc")));
        let users = if self.detail.users {
            let mut uids: Vec<u32> = listeners.iter().map(|l| l.uid).collect();
            uids.sort_unstable();
            uids.dedup();
            users::names(&uids)
        } else {
            Vec::new()
        };
        Sockets {
            listeners,
            interfaces,
            users,
            processes,
            namespaces,
        }
    }

    /// A netlink scan: the port sets, or every listener.
    #[cfg(target_os = "linux")]
    fn netlink(&self) -> std::io::Result<Found> {
        if self.detail.ports_only() {
            let (tcp, udp) = netlink::open_ports(self.protocols)?;
            return Ok(Found::Ports(tcp, udp));
        }
        let listeners = netlink::listeners(self.protocols)?;
        let interfaces = own_interfaces(netlink::interface_names(&listeners));
        Ok(Found::Sockets(listeners, interfaces))
    }

    /// A procfs scan of this process's network namespace. /proc/self/net,
    /// not /proc/net: the same link, but it says whose namespace is meant.
    #[cfg(target_os = "linux")]
    fn procfs(&self) -> anyhow::Result<Found> {
        let net = std::path::Path::new("/proc/self/net");
        let found = if self.detail.ports_only() {
            let (tcp, udp) = procfs::open_ports(net, self.protocols).context(PROCFS_FAILED)?;
            Found::Ports(tcp, udp)
        } else {
            let (listeners, interfaces) =
                procfs::listeners(net, self.protocols).context(PROCFS_FAILED)?;
            Found::Sockets(listeners, own_interfaces(interfaces))
        };
        Ok(found)
    }

    /// A bind scan of the selected ports: (open, skipped, method).
    fn bind(&self) -> anyhow::Result<(Found, PortSet, Method)> {
        let found = bind::scan(&self.selected, self.threads).context("bind scan failed")?;
        Ok((
            Found::Ports(found.open, PortSet::new()),
            found.skipped,
            Method::Bind,
        ))
    }
}

/// The context of a procfs failure.
#[cfg(target_os = "linux")]
const PROCFS_FAILED: &str = "reading the /proc listener tables failed";

#[cfg(all(test, target_os = "linux"))]
pub(crate) mod tests {
    /// 1,000 SO_REUSEPORT listeners on one address and port of `ip`: one
    /// bucket of the listener hash, larger than one datagram of a netlink
    /// dump and than one page of /proc/net/tcp. (inode, socket) each.
    pub(crate) fn one_bucket(ip: [u8; 4]) -> Vec<(u32, Option<socket2::Socket>)> {
        use socket2::{Domain, Socket, Type};
        use std::os::{fd::AsRawFd, unix::fs::MetadataExt};
        let mut port = 0;
        (0..1000)
            .map(|_| {
                let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
                socket.set_reuse_port(true).unwrap();
                let addr = std::net::SocketAddr::from((ip, port));
                socket.bind(&addr.into()).unwrap();
                socket.listen(1).unwrap();
                port = socket.local_addr().unwrap().as_socket().unwrap().port();
                let fd = format!("/proc/self/fd/{}", socket.as_raw_fd());
                let inode = std::fs::metadata(fd).unwrap().ino() as u32;
                (inode, Some(socket))
            })
            .collect()
    }
}
