//! Finding the open ports and who holds them: the only code that asks the
//! OS about sockets or reads /proc.
//!
//! A TCP port is open when a socket in LISTEN state is bound to it (what
//! `ss -Htln` prints), a UDP port when a socket is bound to it and not
//! connected (`ss -Huln`), on any address and either family, in the network
//! namespace scanned: the tool's own, or each of the host's ([`netns`]).
//! Each such socket is one [`Listener`]; the port sets and every label are
//! views of a list of them. When the views need only the ports
//! ([`Detail::ports_only`]), netlink and procfs fill port sets directly,
//! which keeps the default run cheap.

pub mod bind;
#[cfg(target_os = "linux")]
pub mod netlink;
#[cfg(target_os = "linux")]
pub(crate) mod netns;
pub mod owner;
#[cfg(target_os = "linux")]
pub mod procfs;

use std::{
    net::IpAddr,
    time::{Duration, Instant, SystemTime},
};

use anyhow::Context;

use crate::ports::PortSet;

/// How to find the open ports (`--method`). Each variant's doc is its help
/// in `--help`, the man page and the completions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Method {
    /// On Linux netlink, falling back to procfs if netlink is refused
    /// (--verbose says so); bind on other systems
    Auto,
    /// The kernel's listener table over NETLINK_SOCK_DIAG, as ss asks for
    /// it: exact, the fastest, no privilege
    Netlink,
    /// /proc/net/tcp and tcp6: exact, but slower the more connections the
    /// host has
    Procfs,
    /// Try to bind each port, in parallel (--threads): portable but slow;
    /// counts ports that are only bound (outgoing connections, TIME_WAIT) as
    /// open, holds each free port for a moment, and checks ports below 1024
    /// only as root or with CAP_NET_BIND_SERVICE
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

/// A transport protocol (`--protocol`; each variant's doc is its help).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum)]
pub enum Protocol {
    /// TCP sockets in LISTEN state (ss -Htln)
    Tcp,
    /// UDP sockets bound and not connected to a peer (ss -Huln)
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
    /// The local address (a wildcard for any).
    pub address: IpAddr,
    /// The interface it is bound to (by a link-local IPv6 address's scope
    /// or SO_BINDTODEVICE), by index; 0 for none.
    pub interface: u32,
    pub port: u16,
    /// The user that created it.
    pub uid: u32,
    /// The socket's inode, which ties it to the processes holding it.
    pub inode: u32,
    /// The lowest pid holding it ([`owner`]), 0 when unknown or not asked.
    pub pid: u32,
    /// An index into [`Sockets::namespaces`]; 0 when only the tool's own
    /// namespace is scanned.
    pub netns: u32,
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

/// Which network namespaces to scan (`--netns`; the doc of `All` is its help).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Namespaces {
    /// The one port_exporter runs in: the default, not a value of `--netns`.
    #[default]
    #[value(skip)]
    Own,
    /// Every network namespace with a process or a name, each entered in turn
    All,
}

/// What to scan: the same for one-shot runs and for every scrape.
#[derive(Clone, Debug)]
pub struct Plan {
    pub method: Method,
    /// The ports to report: `--ports` (or all) minus `--exclude`.
    pub selected: PortSet,
    /// Threads of the bind method's pool; `None` for one per CPU.
    pub threads: Option<usize>,
    pub protocols: Protocols,
    pub detail: Detail,
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
    pub protocols: Protocols,
    /// Selected ports the bind method was not allowed to bind: their state
    /// is unknown.
    pub skipped: PortSet,
    /// The method that ran (never [`Method::Auto`]).
    pub method: Method,
    pub started: SystemTime,
    pub duration: Duration,
    /// Why `auto` did not use netlink, if it did not.
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
    /// The name of each interface a listener is bound to, sorted.
    pub interfaces: Vec<(Interface, String)>,
    /// The name of each owner (or its number when none resolves), by uid,
    /// sorted; empty unless the plan asked for users.
    pub users: Vec<(u32, String)>,
    pub processes: Option<owner::Processes>,
    /// With `--netns all`: the `netns` label of each namespace scanned
    /// ([`Listener::netns`] indexes it); empty otherwise.
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
    /// Every listener, the names of the interfaces they are bound to, and
    /// with `--netns all` the label of each namespace.
    Sockets(Vec<Listener>, Vec<(Interface, String)>, Vec<String>),
}

/// `method`'s scan, with `auto`'s decision: netlink, else procfs. Returns
/// what was found, the method that ran and why `auto` fell back, if it did;
/// `place` says where, in messages (` in network namespace NAME`, or empty).
#[cfg(target_os = "linux")]
fn netlink_else_procfs<T>(
    method: Method,
    place: &str,
    netlink: impl FnOnce() -> std::io::Result<T>,
    procfs: impl FnOnce() -> std::io::Result<T>,
) -> anyhow::Result<(T, Method, Option<String>)> {
    let procfs = || procfs().context("reading the /proc listener tables failed");
    let failed = format!("netlink sock_diag dump failed{place}");
    match method {
        Method::Procfs => Ok((procfs()?, Method::Procfs, None)),
        Method::Netlink => Ok((netlink().context(failed)?, Method::Netlink, None)),
        _ => match netlink() {
            Ok(found) => Ok((found, Method::Netlink, None)),
            Err(refused) => {
                let why = format!("{failed} ({refused})");
                let found =
                    procfs().with_context(|| format!("{why}, and so did the procfs fallback"))?;
                Ok((found, Method::Procfs, Some(format!("{why}; used procfs"))))
            }
        },
    }
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
        let clock = Instant::now();
        let mut scan = Scan {
            open: PortSet::new(),
            open_udp: PortSet::new(),
            sockets: None,
            protocols: self.protocols,
            skipped: PortSet::new(),
            method: self.method,
            started: SystemTime::now(),
            duration: Duration::ZERO,
            fallback: None,
            unscanned: Vec::new(),
        };
        let found = match self.namespaces {
            Namespaces::Own => self.own(&mut scan)?,
            #[cfg(target_os = "linux")]
            Namespaces::All => netns::scan(self, &mut scan)?,
            #[cfg(not(target_os = "linux"))]
            Namespaces::All => anyhow::bail!("--netns exists only on Linux"),
        };
        match found {
            Found::Ports(tcp, udp) => (scan.open, scan.open_udp) = (tcp, udp),
            Found::Sockets(listeners, interfaces, namespaces) => {
                let sockets = self.learn(listeners, interfaces, namespaces);
                for listener in &sockets.listeners {
                    match listener.protocol {
                        Protocol::Tcp => scan.open.insert(listener.port),
                        Protocol::Udp => scan.open_udp.insert(listener.port),
                    }
                }
                scan.sockets = Some(sockets);
            }
        }
        scan.open.intersect_with(&self.selected);
        scan.open_udp.intersect_with(&self.selected);
        scan.duration = clock.elapsed();
        Ok(scan)
    }

    /// A scan of the tool's own network namespace; sets the method that
    /// ran, and what it skipped or fell back from.
    fn own(&self, scan: &mut Scan) -> anyhow::Result<Found> {
        #[cfg(target_os = "linux")]
        if self.method != Method::Bind {
            // /proc/self/net, not /proc/net: the same link, but it says
            // whose namespace is meant.
            let net = std::path::Path::new("/proc/self/net");
            let ports = self.detail.ports_only();
            let own = |(listeners, names): (Vec<Listener>, Names)| {
                let interfaces = names.into_iter().map(|(i, name)| ((0, i), name));
                Found::Sockets(listeners, interfaces.collect(), Vec::new())
            };
            let netlink = || match ports {
                true => netlink::open_ports(self.protocols).map(|(t, u)| Found::Ports(t, u)),
                false => netlink::listeners(self.protocols).map(own),
            };
            let procfs = || match ports {
                true => procfs::open_ports(net, self.protocols).map(|(t, u)| Found::Ports(t, u)),
                false => procfs::listeners(net, self.protocols).map(own),
            };
            let found;
            (found, scan.method, scan.fallback) =
                netlink_else_procfs(self.method, "", netlink, procfs)?;
            return Ok(found);
        }
        #[cfg(not(target_os = "linux"))]
        if self.method != Method::Bind && self.method != Method::Auto {
            anyhow::bail!("--method {} exists only on Linux", self.method.name());
        }
        let found = bind::scan(&self.selected, self.threads).context("bind scan failed")?;
        (scan.method, scan.skipped) = (Method::Bind, found.skipped);
        Ok(Found::Ports(found.open, PortSet::new()))
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
        let users = self.detail.users.then(|| {
            let mut uids: Vec<u32> = listeners.iter().map(|l| l.uid).collect();
            uids.sort_unstable();
            uids.dedup();
            user_names(&uids)
        });
        Sockets {
            listeners,
            interfaces,
            users: users.unwrap_or_default(),
            processes,
            namespaces,
        }
    }
}

/// The name of each uid of `uids` through the system's user database (NSS:
/// /etc/passwd, LDAP, systemd's dynamic users, ...) as `ls -l` finds it, or
/// the number when none resolves: `(uid, name)` in the order given.
fn user_names(uids: &[u32]) -> Vec<(u32, String)> {
    let name = |uid| match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(user)) => user.name,
        _ => uid.to_string(),
    };
    uids.iter().map(|&uid| (uid, name(uid))).collect()
}

#[cfg(test)]
#[test]
fn root_has_a_name_and_an_unknown_uid_its_number() {
    assert_eq!(
        user_names(&[0, 4_000_000_123]),
        [
            (0, "root".to_string()),
            (4_000_000_123, "4000000123".to_string())
        ]
    );
}

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
