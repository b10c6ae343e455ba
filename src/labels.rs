//! The labels a sample may carry beyond `port` (`--labels`), and how each
//! listener's values are written and ordered. Pure: everything it shows
//! was learned by the scan.

use std::{fmt, net::IpAddr};

use crate::scan::{Listener, Protocol, Sockets};

/// One label of `--labels` (each variant's doc is its help).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Label {
    /// tcp or udp (always there when UDP is scanned)
    Protocol,
    /// The local address, as ss prints it without brackets: 0.0.0.0, ::,
    /// 127.0.0.1, fe80::1%eth0
    Address,
    /// any (a wildcard address), loopback, link-local or specific: is it
    /// exposed?
    Scope,
    /// The socket's owner, by name (the number when none resolves)
    User,
    /// The command name of the process holding the socket (the lowest pid),
    /// "" when it cannot be found
    Process,
    /// The network namespace: never chosen by `--labels`, always there
    /// with `--netns all`.
    #[value(skip)]
    Netns,
}

impl Label {
    /// Every label, in the order samples carry them (after `port`).
    pub const ALL: [Label; 6] = [
        Label::Protocol,
        Label::Address,
        Label::Scope,
        Label::User,
        Label::Process,
        Label::Netns,
    ];

    /// The label's name.
    pub fn name(self) -> &'static str {
        match self {
            Label::Protocol => "protocol",
            Label::Address => "address",
            Label::Scope => "scope",
            Label::User => "user",
            Label::Process => "process",
            Label::Netns => "netns",
        }
    }
}

/// A set of labels.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Labels(u8);

impl Labels {
    /// No label beyond `port`: the default.
    pub const NONE: Labels = Labels(0);

    /// The set with `label` added.
    pub fn with(self, label: Label) -> Labels {
        Labels(self.0 | (1 << label as u8))
    }

    /// Whether `label` is in the set.
    pub fn has(self, label: Label) -> bool {
        self.0 & (1 << label as u8) != 0
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Whether a label needs more than the port and protocol of a socket.
    pub fn need_sockets(self) -> bool {
        !self.is_empty() && self != Labels::NONE.with(Label::Protocol)
    }

    /// The labels of the set, in sample order.
    pub fn iter(self) -> impl Iterator<Item = Label> {
        Label::ALL.into_iter().filter(move |l| self.has(*l))
    }
}

impl FromIterator<Label> for Labels {
    fn from_iter<I: IntoIterator<Item = Label>>(iter: I) -> Labels {
        iter.into_iter().fold(Labels::NONE, Labels::with)
    }
}

/// Where an address lets a socket be reached from (the `scope` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// A wildcard address.
    Any,
    /// 127.0.0.0/8, ::1, ::ffff:127.0.0.0/104.
    Loopback,
    /// 169.254.0.0/16, fe80::/10.
    LinkLocal,
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

/// A listener's local address as `ss` prints it, without brackets:
/// `0.0.0.0`, `::`, `127.0.0.1`, `::1`, `fe80::1%eth0` (the interface after
/// `%` for a socket bound to one, by a scoped address or to a device).
pub struct Address<'a> {
    pub address: IpAddr,
    pub interface: Option<&'a str>,
}

impl<'a> Address<'a> {
    /// The address of `listener`, with its interface's name from `sockets`.
    pub fn of(listener: &Listener, sockets: &'a Sockets) -> Address<'a> {
        Address {
            address: listener.address,
            interface: (listener.interface != 0).then(|| {
                sockets
                    .interface(listener.netns, listener.interface)
                    .unwrap_or("?")
            }),
        }
    }
}

impl fmt::Display for Address<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.address {
            // inet_ntop writes the deprecated IPv4-compatible addresses
            // (::a.b.c.d, other than :: and ::1) with a dotted tail; Rust
            // writes hex. IPv4-mapped ones are alike in both.
            IpAddr::V6(v6) if v6.segments()[..6] == [0; 6] && v6.segments()[6] != 0 => {
                let [.., a, b, c, d] = v6.octets();
                write!(f, "::{a}.{b}.{c}.{d}")?;
            }
            address => write!(f, "{address}")?,
        }
        if let Some(interface) = self.interface {
            write!(f, "%{interface}")?;
        }
        Ok(())
    }
}

/// The order of listeners and samples: by port, protocol, then the label
/// values in sample order (addresses numerically, IPv4 first; names as
/// text). Ranks of names are computed once, so a comparison is cheap.
pub struct Order {
    /// uid → rank of its user name.
    users: Vec<(u32, u32)>,
    /// pid → rank of its command name.
    processes: Vec<(u32, u32)>,
    /// (namespace, interface index) → rank of its name.
    interfaces: Vec<((u32, u32), u32)>,
    /// Rank of each namespace's name, by namespace.
    namespaces: Vec<u32>,
}

impl Order {
    pub fn new(sockets: &Sockets) -> Order {
        let processes = sockets.processes.as_ref().map_or(&[][..], |p| &p.names[..]);
        let named: Vec<(u32, String)> = (0u32..).zip(sockets.namespaces.iter().cloned()).collect();
        Order {
            users: ranks(&sockets.users),
            processes: ranks(processes),
            interfaces: ranks(&sockets.interfaces),
            namespaces: ranks(&named).into_iter().map(|(_, rank)| rank).collect(),
        }
    }

    /// The rank of namespace `netns`'s name (0 when namespaces have none).
    pub fn namespace_rank(&self, netns: u32) -> u32 {
        self.namespaces.get(netns as usize).copied().unwrap_or(0)
    }

    /// The key of `listener` under `labels`: two listeners with equal keys
    /// make one sample.
    pub fn key(&self, listener: &Listener, labels: Labels) -> Key {
        fn rank<K: Ord + Copy>(table: &[(K, u32)], id: K) -> u32 {
            table
                .binary_search_by_key(&id, |(k, _)| *k)
                .map_or(u32::MAX, |i| table[i].1)
        }
        let has = |label| labels.has(label);
        Key {
            port: listener.port,
            protocol: has(Label::Protocol).then_some(listener.protocol),
            address: has(Label::Address).then(|| {
                let (family, octets) = match listener.address {
                    IpAddr::V4(v4) => (4, v4.to_ipv6_mapped().octets()),
                    IpAddr::V6(v6) => (6, v6.octets()),
                };
                let interface = match listener.interface {
                    0 => 0,
                    index => 1 + rank(&self.interfaces, (listener.netns, index)),
                };
                (family, octets, interface)
            }),
            scope: has(Label::Scope).then(|| Scope::of(listener.address)),
            user: has(Label::User).then(|| rank(&self.users, listener.uid)),
            process: has(Label::Process).then(|| match listener.pid {
                0 => 0,
                pid => 1 + rank(&self.processes, pid),
            }),
            netns: has(Label::Netns).then(|| self.namespace_rank(listener.netns)),
        }
    }
}

/// Ranks of the names in `(id, name)` pairs: `(id, rank)` sorted by id,
/// where rank orders the names as text.
fn ranks<K: Ord + Copy>(pairs: &[(K, String)]) -> Vec<(K, u32)> {
    let mut by_name: Vec<(&str, K)> = pairs.iter().map(|(id, n)| (n.as_str(), *id)).collect();
    by_name.sort_unstable();
    let mut ranked = Vec::with_capacity(by_name.len());
    let same_name = by_name.chunk_by(|a, b| a.0 == b.0);
    ranked.extend(
        same_name
            .zip(0..)
            .flat_map(|(same, rank)| same.iter().map(move |&(_, id)| (id, rank))),
    );
    ranked.sort_unstable();
    ranked
}

/// What orders and identifies a sample: the port and the values of the
/// chosen labels (`None` for a label not chosen).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Key {
    pub port: u16,
    pub protocol: Option<Protocol>,
    /// Family (4 first), the address as IPv6 octets, interface rank + 1.
    pub address: Option<(u8, [u8; 16], u32)>,
    pub scope: Option<Scope>,
    pub user: Option<u32>,
    /// 0 for no process, else its name's rank + 1.
    pub process: Option<u32>,
    /// The rank of the namespace's name.
    pub netns: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(address: &str, interface: Option<&str>) -> String {
        Address {
            address: address.parse().unwrap(),
            interface,
        }
        .to_string()
    }

    #[test]
    fn addresses_as_ss_prints_them() {
        assert_eq!(text("0.0.0.0", None), "0.0.0.0");
        assert_eq!(text("::", None), "::");
        assert_eq!(text("::1", None), "::1");
        assert_eq!(text("127.0.0.2", None), "127.0.0.2");
        assert_eq!(text("fe80::1", Some("eth0")), "fe80::1%eth0");
        assert_eq!(text("0.0.0.0", Some("veth0")), "0.0.0.0%veth0");
        assert_eq!(text("::ffff:127.0.0.1", None), "::ffff:127.0.0.1");
        assert_eq!(text("::1.2.3.4", None), "::1.2.3.4");
        assert_eq!(text("2001:db8::1:0:0:1", None), "2001:db8::1:0:0:1");
        assert_eq!(text("2001:db8:0:1:1:1:1:1", None), "2001:db8:0:1:1:1:1:1");
    }

    #[test]
    fn scopes() {
        for (address, scope) in [
            ("0.0.0.0", Scope::Any),
            ("::", Scope::Any),
            ("127.0.0.1", Scope::Loopback),
            ("127.9.9.9", Scope::Loopback),
            ("::1", Scope::Loopback),
            ("::ffff:127.0.0.5", Scope::Loopback),
            ("169.254.1.1", Scope::LinkLocal),
            ("fe80::1", Scope::LinkLocal),
            ("febf::1", Scope::LinkLocal),
            ("198.51.100.7", Scope::Specific),
            ("2001:db8::1", Scope::Specific),
            ("::ffff:198.51.100.7", Scope::Specific),
        ] {
            assert_eq!(Scope::of(address.parse().unwrap()), scope, "{address}");
        }
    }

    #[test]
    fn label_sets() {
        let labels: Labels = [Label::Process, Label::Protocol].into_iter().collect();
        assert_eq!(
            labels.iter().collect::<Vec<_>>(),
            [Label::Protocol, Label::Process]
        );
        assert!(labels.need_sockets());
        assert!(!Labels::NONE.with(Label::Protocol).need_sockets());
        assert!(!Labels::NONE.need_sockets());
    }

    #[test]
    fn names_rank_as_text() {
        let pairs = [
            (5, "b".to_string()),
            (1, "c".into()),
            (9, "a".into()),
            (2, "b".into()),
        ];
        assert_eq!(ranks(&pairs), [(1, 2), (2, 1), (5, 1), (9, 0)]);
    }
}
