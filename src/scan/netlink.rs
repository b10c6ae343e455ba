//! The exact, default method: the kernel's socket tables over
//! NETLINK_SOCK_DIAG, as `ss` reads them (sock_diag(7)), one dump per
//! family asking only for the open state, so the kernel walks only its
//! listening hash and the cost stays flat however many connections the
//! host has (~35 µs). No privilege is needed.
//!
//! Messages are built and parsed by hand rather than with a netlink crate:
//! the request is 72 bytes and a reply needs a few fields, less code than a
//! typed crate's glue, and the parser stays a pure function tests feed.

use std::{
    collections::BTreeSet,
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_SOCK_DIAG};

use super::{Listener, Names, Protocol, Protocols};
use crate::ports::PortSet;

/// A dual-stack `[::]` listener is only in the AF_INET6 dump, and
/// AF_UNSPEC is refused: both families are asked for.
const FAMILIES: [u8; 2] = [AF_INET, AF_INET6];
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

/// nlmsghdr types (linux/netlink.h, linux/sock_diag.h).
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const SOCK_DIAG_BY_FAMILY: u16 = 20;

/// nlmsghdr flags; NLM_F_DUMP_INTR marks a dump the table changed under.
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_DUMP_INTR: u16 = 0x10;

const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
/// include/net/tcp_states.h; an unconnected UDP socket is in TCP_CLOSE.
const TCP_LISTEN: u8 = 10;
const TCP_CLOSE: u8 = 7;

const NLMSG_HDRLEN: usize = 16;
/// sizeof(struct inet_diag_req_v2) and sizeof(struct inet_diag_msg).
const REQ_LEN: usize = 56;
const DIAG_MSG_LEN: usize = 72;

/// The kernel's dump datagrams are at most 32 KiB (netlink_dump).
const RECV_BUF: usize = 64 * 1024;

/// Dumps of one table flagged as interrupted before the scan gives up.
const ATTEMPTS: usize = 3;

/// Where the sockets of a dump go: the port alone (cheap), or the record.
trait Sink {
    /// Adds the socket of `protocol` that `msg` (an `inet_diag_msg`) is.
    fn add(&mut self, protocol: Protocol, msg: &[u8]);
    /// The same table is about to be dumped again.
    fn again(&mut self) {}
    /// A datagram was read and another follows (a seam for a test).
    fn part_done(&mut self) {}
}

impl Sink for PortSet {
    fn add(&mut self, _protocol: Protocol, msg: &[u8]) {
        self.insert(port_of(msg));
    }
}

/// The TCP ports listened on in this network namespace.
pub fn listening_ports() -> io::Result<PortSet> {
    open_ports(Protocols::TCP).map(|(tcp, _)| tcp)
}

/// The open ports of each protocol of `protocols` (TCP, UDP).
pub(crate) fn open_ports(protocols: Protocols) -> io::Result<(PortSet, PortSet)> {
    let mut dumper = Dumper::new()?;
    let (mut tcp, mut udp) = (PortSet::new(), PortSet::new());
    if protocols.tcp {
        dumper.dump_all(Protocol::Tcp, &mut tcp)?;
    }
    if protocols.udp {
        dumper.dump_all(Protocol::Udp, &mut udp)?;
    }
    Ok((tcp, udp))
}

/// Every listener of `protocols` in this network namespace, each socket
/// once (by inode), and the names of the interfaces they are bound to.
pub(crate) fn listeners(protocols: Protocols) -> io::Result<(Vec<Listener>, Names)> {
    let mut dumper = Dumper::new()?;
    let mut found = Vec::new();
    for protocol in protocols.iter() {
        let mut unite = Unite {
            before: found.len(),
            known: Vec::new(),
            list: &mut found,
        };
        dumper.dump_all(protocol, &mut unite)?;
    }
    let indexes: BTreeSet<u32> = found.iter().map(|l| l.interface).collect();
    let names = indexes.into_iter().filter(|&i| i != 0);
    let names = names.map(|index| (index, interface_name(index))).collect();
    Ok((found, names))
}

/// The name of interface `index`, or `if` and the index as `ss` writes
/// it for one deleted since (nix's `if_indextoname` then gives `Ok("")`).
fn interface_name(index: u32) -> String {
    match nix::net::if_::if_indextoname(index) {
        Ok(name) if !name.is_empty() => name.to_string_lossy().into_owned(),
        _ => format!("if{index}"),
    }
}

/// Adds records to a list, skipping sockets (inodes) that earlier dumps
/// of the same table added: the union of two dumps.
struct Unite<'a> {
    list: &'a mut Vec<Listener>,
    /// Length of the list when the current dump started.
    before: usize,
    /// Inodes added by earlier dumps, sorted.
    known: Vec<u32>,
}

impl Sink for Unite<'_> {
    fn add(&mut self, protocol: Protocol, msg: &[u8]) {
        let record = listener_of(protocol, msg);
        if self.known.binary_search(&record.inode).is_err() {
            self.list.push(record);
        }
    }

    fn again(&mut self) {
        self.known
            .extend(self.list[self.before..].iter().map(|l| l.inode));
        self.known.sort_unstable();
        self.known.dedup();
        self.before = self.list.len();
    }
}

/// One NETLINK_SOCK_DIAG socket and its receive buffer.
struct Dumper {
    socket: Socket,
    buf: Vec<u8>,
    seq: u32,
}

impl Dumper {
    fn new() -> io::Result<Dumper> {
        Ok(Dumper {
            socket: Socket::new(NETLINK_SOCK_DIAG)?,
            buf: Vec::with_capacity(RECV_BUF),
            seq: 0,
        })
    }

    /// Dumps the listeners of `protocol` of both families into `sink`.
    ///
    /// The kernel resumes each datagram of a dump at a position counted
    /// inside a hash bucket: sockets of the bucket that close between two
    /// move the rest past it, unflagged, so a dump in several datagrams can
    /// miss a socket that listened all along. Such a dump is taken twice
    /// and the two united; a dump in one datagram (the common case) is a
    /// consistent snapshot.
    fn dump_all<S: Sink>(&mut self, protocol: Protocol, sink: &mut S) -> io::Result<()> {
        for family in FAMILIES {
            let mut clean = false;
            for dumps in 1.. {
                let (parts, interrupted) = self.dump(protocol, family, sink)?;
                clean |= !interrupted;
                if clean && (dumps > 1 || parts <= 1) {
                    break;
                }
                if dumps == ATTEMPTS {
                    return Err(invalid("the kernel interrupted every dump"));
                }
                sink.again();
            }
        }
        Ok(())
    }

    /// One dump of the listeners of `protocol` and `family` into `sink`:
    /// how many datagrams carried sockets, and whether NLM_F_DUMP_INTR was
    /// set.
    fn dump<S: Sink>(
        &mut self,
        protocol: Protocol,
        family: u8,
        sink: &mut S,
    ) -> io::Result<(usize, bool)> {
        self.seq += 1;
        let kernel = SocketAddr::new(0, 0);
        self.socket
            .send_to(&request(protocol, family, self.seq), &kernel, 0)?;
        let (mut parts, mut interrupted) = (0, false);
        loop {
            self.buf.clear();
            let len = self.socket.recv(&mut self.buf, 0)?;
            if len >= RECV_BUF {
                return Err(invalid("reply larger than the receive buffer"));
            }
            let progress = parse(&self.buf, self.seq, protocol, sink)?;
            interrupted |= progress.interrupted;
            parts += usize::from(progress.sockets > 0);
            if progress.done {
                return Ok((parts, interrupted));
            }
            sink.part_done();
        }
    }
}

/// The IP protocol number of `protocol`, and the state a socket of it is
/// in when it makes its port open.
fn numbers(protocol: Protocol) -> (u8, u8) {
    match protocol {
        Protocol::Tcp => (IPPROTO_TCP, TCP_LISTEN),
        Protocol::Udp => (IPPROTO_UDP, TCP_CLOSE),
    }
}

/// A SOCK_DIAG_BY_FAMILY dump request for the open sockets of `protocol`
/// and `family`.
fn request(protocol: Protocol, family: u8, seq: u32) -> [u8; NLMSG_HDRLEN + REQ_LEN] {
    let mut msg = [0u8; NLMSG_HDRLEN + REQ_LEN];
    msg[0..4].copy_from_slice(&((NLMSG_HDRLEN + REQ_LEN) as u32).to_ne_bytes());
    msg[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    msg[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    msg[8..12].copy_from_slice(&seq.to_ne_bytes());
    // nlmsg_pid 0: the kernel fills in our port id.
    let (number, state) = numbers(protocol);
    msg[16] = family;
    msg[17] = number;
    // idiag_ext 0, pad 0, then the state bitmask; the socket id stays zero.
    msg[20..24].copy_from_slice(&(1u32 << state).to_ne_bytes());
    msg
}

/// The local port of an inet_diag_msg: the first field of its
/// inet_diag_sockid, in network byte order.
fn port_of(msg: &[u8]) -> u16 {
    u16::from_be_bytes([msg[4], msg[5]])
}

/// The whole record of an inet_diag_msg: family, state, timer, retrans,
/// then inet_diag_sockid (sport, dport, src[4], dst[4], if, cookie[2]),
/// expires, rqueue, wqueue, uid, inode.
fn listener_of(protocol: Protocol, msg: &[u8]) -> Listener {
    let word = |at: usize| u32::from_ne_bytes(msg[at..at + 4].try_into().unwrap());
    let address = if msg[0] == AF_INET {
        IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(&msg[8..12]).unwrap()))
    } else {
        IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&msg[8..24]).unwrap()))
    };
    Listener {
        protocol,
        address,
        interface: word(40),
        port: port_of(msg),
        uid: word(64),
        inode: word(68),
        pid: 0,
        netns: 0,
    }
}

/// What one received datagram told us.
#[derive(Debug, Default, PartialEq, Eq)]
struct Progress {
    /// NLMSG_DONE was seen.
    done: bool,
    /// NLM_F_DUMP_INTR was set.
    interrupted: bool,
    /// Sockets the datagram carried.
    sockets: usize,
}

/// Parses one datagram of replies to request `seq` for `protocol`, adding
/// each open socket to `sink`; late replies to earlier requests are skipped.
fn parse<S: Sink>(
    datagram: &[u8],
    seq: u32,
    protocol: Protocol,
    sink: &mut S,
) -> io::Result<Progress> {
    let mut progress = Progress::default();
    let (_, state) = numbers(protocol);
    let mut rest = datagram;
    while !rest.is_empty() {
        if rest.len() < NLMSG_HDRLEN {
            return Err(invalid("truncated message header"));
        }
        let len = u32::from_ne_bytes(rest[0..4].try_into().unwrap()) as usize;
        if len < NLMSG_HDRLEN || len > rest.len() {
            return Err(invalid("message length out of bounds"));
        }
        let kind = u16::from_ne_bytes([rest[4], rest[5]]);
        let flags = u16::from_ne_bytes([rest[6], rest[7]]);
        let msg_seq = u32::from_ne_bytes(rest[8..12].try_into().unwrap());
        let payload = &rest[NLMSG_HDRLEN..len];
        if msg_seq == seq {
            progress.interrupted |= flags & NLM_F_DUMP_INTR != 0;
            match kind {
                NLMSG_DONE | NLMSG_ERROR => {
                    // The payload starts with an int: a negative errno if
                    // the dump failed.
                    let code = payload
                        .get(0..4)
                        .map(|c| i32::from_ne_bytes(c.try_into().unwrap()));
                    if let Some(code) = code.filter(|&c| c < 0) {
                        return Err(io::Error::from_raw_os_error(-code));
                    }
                    if kind == NLMSG_ERROR {
                        return Err(invalid("unexpected acknowledgement"));
                    }
                    progress.done = true;
                    return Ok(progress);
                }
                SOCK_DIAG_BY_FAMILY => {
                    if payload.len() < DIAG_MSG_LEN {
                        return Err(invalid("truncated inet_diag_msg"));
                    }
                    if payload[0] != AF_INET && payload[0] != AF_INET6 {
                        return Err(invalid("unknown address family"));
                    }
                    progress.sockets += 1;
                    if payload[1] == state {
                        sink.add(protocol, payload);
                    }
                }
                _ => {}
            }
        }
        // Messages are padded to 4-byte alignment (NLMSG_ALIGN).
        let next = len.next_multiple_of(4).min(rest.len());
        rest = &rest[next..];
    }
    Ok(progress)
}

/// An error for a reply that does not have the expected shape.
fn invalid(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("malformed sock_diag reply: {what}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One nlmsghdr with `payload`, padded to 4 bytes as the kernel does.
    fn message(kind: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let len = NLMSG_HDRLEN + payload.len();
        let mut msg = Vec::new();
        msg.extend_from_slice(&(len as u32).to_ne_bytes());
        msg.extend_from_slice(&kind.to_ne_bytes());
        msg.extend_from_slice(&flags.to_ne_bytes());
        msg.extend_from_slice(&seq.to_ne_bytes());
        msg.extend_from_slice(&4242u32.to_ne_bytes());
        msg.extend_from_slice(payload);
        msg.resize(len.next_multiple_of(4), 0);
        msg
    }

    /// An inet_diag_msg for a socket on `port` in `state`.
    fn diag(family: u8, state: u8, port: u16) -> Vec<u8> {
        let mut msg = vec![0u8; DIAG_MSG_LEN];
        msg[0] = family;
        msg[1] = state;
        msg[4..6].copy_from_slice(&port.to_be_bytes());
        msg[6..8].copy_from_slice(&0u16.to_be_bytes());
        msg[8..12].copy_from_slice(&[127, 0, 0, 1]);
        msg
    }

    fn listener(seq: u32, port: u16) -> Vec<u8> {
        message(SOCK_DIAG_BY_FAMILY, 0x2, seq, &diag(2, TCP_LISTEN, port))
    }

    fn done(seq: u32) -> Vec<u8> {
        message(NLMSG_DONE, 0x2, seq, &0i32.to_ne_bytes())
    }

    #[test]
    fn request_layout() {
        let req = request(Protocol::Tcp, 10, 7);
        assert_eq!(req.len(), 72);
        assert_eq!(u32::from_ne_bytes(req[0..4].try_into().unwrap()), 72);
        assert_eq!(u16::from_ne_bytes([req[4], req[5]]), 20);
        assert_eq!(u16::from_ne_bytes([req[6], req[7]]), 0x301);
        assert_eq!(u32::from_ne_bytes(req[8..12].try_into().unwrap()), 7);
        assert_eq!((req[16], req[17], req[18], req[19]), (10, 6, 0, 0));
        assert_eq!(u32::from_ne_bytes(req[20..24].try_into().unwrap()), 1 << 10);
        assert!(req[24..].iter().all(|&b| b == 0), "socket id must be zero");
    }

    #[test]
    fn collects_listeners_across_datagrams() {
        let mut open = PortSet::new();
        let first = [listener(1, 22), listener(1, 8000), listener(1, 22)].concat();
        let progress = parse(&first, 1, Protocol::Tcp, &mut open).unwrap();
        assert_eq!((progress.done, progress.sockets), (false, 3));
        let second = [listener(1, 65535), done(1)].concat();
        let progress = parse(&second, 1, Protocol::Tcp, &mut open).unwrap();
        assert!(progress.done && !progress.interrupted);
        assert_eq!(open.iter().collect::<Vec<_>>(), [22, 8000, 65535]);
    }

    #[test]
    fn port_is_big_endian() {
        let mut open = PortSet::new();
        parse(&listener(3, 0x1F90), 3, Protocol::Tcp, &mut open).unwrap();
        assert_eq!(open.iter().collect::<Vec<_>>(), [8080]);
    }

    #[test]
    fn skips_other_states_and_sequences() {
        let mut open = PortSet::new();
        let buf = [
            message(SOCK_DIAG_BY_FAMILY, 2, 5, &diag(10, 1, 40000)),
            listener(4, 1111),
            listener(5, 2222),
            message(0x7777, 0, 5, &[1, 2, 3]),
            done(4),
            done(5),
        ]
        .concat();
        let progress = parse(&buf, 5, Protocol::Tcp, &mut open).unwrap();
        assert!(progress.done);
        assert_eq!(open.iter().collect::<Vec<_>>(), [2222]);
    }

    #[test]
    fn reports_interrupted_dumps() {
        let mut open = PortSet::new();
        let buf = [
            message(SOCK_DIAG_BY_FAMILY, NLM_F_DUMP_INTR, 1, &diag(2, 10, 1)),
            done(1),
        ]
        .concat();
        assert!(
            parse(&buf, 1, Protocol::Tcp, &mut open)
                .unwrap()
                .interrupted
        );
    }

    #[test]
    fn kernel_errors_become_io_errors() {
        let mut open = PortSet::new();
        let mut payload = (-2i32).to_ne_bytes().to_vec();
        payload.extend_from_slice(&request(Protocol::Tcp, 2, 1)[..NLMSG_HDRLEN]);
        let err = parse(
            &message(NLMSG_ERROR, 0, 1, &payload),
            1,
            Protocol::Tcp,
            &mut open,
        )
        .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(2));
        let err = parse(
            &message(NLMSG_DONE, 2, 1, &(-16i32).to_ne_bytes()),
            1,
            Protocol::Tcp,
            &mut open,
        )
        .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(16));
    }

    #[test]
    fn rejects_malformed_replies() {
        let mut open = PortSet::new();
        let good = listener(1, 22);
        for bad in [
            good[..10].to_vec(),
            good[..40].to_vec(),
            {
                let mut short = good.clone();
                short[0..4].copy_from_slice(&8u32.to_ne_bytes());
                short
            },
            message(SOCK_DIAG_BY_FAMILY, 2, 1, &[0u8; 20]),
        ] {
            let err = parse(&bad, 1, Protocol::Tcp, &mut open).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{bad:?}");
        }
        assert!(open.is_empty());
    }

    /// The live kernel agrees with itself: a listener we open is reported.
    #[test]
    fn sees_a_live_listener() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(listening_ports().unwrap().contains(port));
        drop(listener);
    }

    #[test]
    fn a_deleted_interface_is_named_as_ss_names_it() {
        // No interface has this index (nix returns Ok("") for it).
        assert_eq!(interface_name(999_999), "if999999");
        assert_eq!(interface_name(1), "lo");
    }

    /// A sink that, between two datagrams of the first dump, closes the
    /// test's sockets that the dump has reported so far, while some are
    /// still to come: the kernel then resumes past as many unreported ones.
    struct Churn {
        inner: Vec<Listener>,
        ours: Vec<(u32, Option<socket2::Socket>)>,
        fired: bool,
    }

    impl Churn {
        fn reported(&self, inode: u32) -> bool {
            self.inner.iter().any(|l| l.inode == inode)
        }
    }

    impl Sink for Churn {
        fn add(&mut self, protocol: Protocol, msg: &[u8]) {
            let record = listener_of(protocol, msg);
            if !self.reported(record.inode) {
                self.inner.push(record);
            }
        }

        fn part_done(&mut self) {
            let reported = self.ours.iter().filter(|(i, _)| self.reported(*i)).count();
            if self.fired || reported == 0 || reported == self.ours.len() {
                return;
            }
            self.fired = true;
            let inner = &self.inner;
            for (inode, socket) in &mut self.ours {
                if inner.iter().any(|l| l.inode == *inode) {
                    socket.take();
                }
            }
        }
    }

    /// The sockets of `churn` still open that its dump did not report.
    fn missed(churn: &Churn) -> usize {
        churn
            .ours
            .iter()
            .filter(|(inode, socket)| socket.is_some() && !churn.reported(*inode))
            .count()
    }

    #[test]
    fn sockets_closed_between_datagrams_hide_others_from_one_dump_but_not_from_two() {
        // One dump, as before the fix: the kernel skips listeners that
        // listened all along. (This shows the test reproduces the fault.)
        let mut churn = Churn {
            inner: Vec::new(),
            ours: crate::scan::tests::one_bucket([127, 0, 0, 77]),
            fired: false,
        };
        let mut dumper = Dumper::new().unwrap();
        dumper.dump(Protocol::Tcp, AF_INET, &mut churn).unwrap();
        assert!(
            churn.fired,
            "the dump of 1,000 sockets came in one datagram"
        );
        assert!(
            missed(&churn) > 0,
            "one dump missed nothing: the fault did not show"
        );
        // dump_all, as every scan does: the second dump finds them.
        let mut churn = Churn {
            inner: Vec::new(),
            ours: crate::scan::tests::one_bucket([127, 0, 0, 77]),
            fired: false,
        };
        dumper.dump_all(Protocol::Tcp, &mut churn).unwrap();
        assert!(churn.fired);
        assert_eq!(missed(&churn), 0, "a listener that stayed open was missed");
    }
}
