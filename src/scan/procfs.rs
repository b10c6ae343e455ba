//! The fallback method: the rows of `/proc/net/tcp` and `tcp6` in state
//! `0A` (TCP_LISTEN), of `udp` and `udp6` in state `07` (not connected).
//! Exact like netlink, but every read walks the established hash too
//! (~10 ms idle, ~90 ms at 20,000 connections), so it is used only where
//! netlink is refused (no CONFIG_INET_DIAG, a sandbox).

use std::{
    fs::File,
    io::{self, ErrorKind, Read},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::Path,
};

use super::{Listener, Names, Protocol, Protocols};
use crate::ports::PortSet;

/// The `st` of a listening TCP socket, and of an unconnected UDP one.
const LISTEN: &str = "0A";
const UNCONNECTED: &str = "07";

/// The listening TCP ports in the tables of `proc_net` (say `/proc/net`).
pub fn listening_ports(proc_net: &Path) -> io::Result<PortSet> {
    open_ports(proc_net, Protocols::TCP).map(|(tcp, _)| tcp)
}

/// The open ports of each protocol of `protocols`: (TCP, UDP).
pub(crate) fn open_ports(proc_net: &Path, protocols: Protocols) -> io::Result<(PortSet, PortSet)> {
    let (mut tcp, mut udp) = (PortSet::new(), PortSet::new());
    for protocol in protocols.iter() {
        let open = match protocol {
            Protocol::Tcp => &mut tcp,
            Protocol::Udp => &mut udp,
        };
        let each = &mut |row: &Row, _| {
            open.insert(row.port()?);
            Ok(())
        };
        read(proc_net, protocol, each, &mut |_| {})?;
    }
    Ok((tcp, udp))
}

/// Every open socket of `protocols`, and the names of the interfaces of
/// those bound to a link-local IPv6 address.
///
/// The tables do not name a socket's interface: for a link-local IPv6
/// address it is the one interface that has the address now (`if_inet6`),
/// and SO_BINDTODEVICE cannot be told at all.
pub(crate) fn listeners(
    proc_net: &Path,
    protocols: Protocols,
) -> io::Result<(Vec<Listener>, Names)> {
    let mut found: Vec<Listener> = Vec::new();
    for protocol in protocols.iter() {
        // A table read twice names a socket twice: once will do. (Kernel
        // sockets all have inode 0, so the address and port count too.)
        let mut first = std::collections::HashSet::new();
        let each = &mut |row: &Row, reading| {
            let listener = row.listener(protocol)?;
            let key = (listener.inode, listener.address, listener.port);
            if reading == 0 {
                first.insert(key);
            } else if first.contains(&key) {
                return Ok(());
            }
            found.push(listener);
            Ok(())
        };
        read(proc_net, protocol, each, &mut |_| {})?;
    }
    let mut interfaces = Vec::new();
    if found.iter().any(is_link_local_v6) {
        let addresses = link_local_addresses(proc_net)?;
        for listener in found.iter_mut().filter(|l| is_link_local_v6(l)) {
            let mut on = addresses
                .iter()
                .filter(|(a, _, _)| IpAddr::V6(*a) == listener.address);
            if let (Some((_, index, name)), None) = (on.next(), on.next()) {
                listener.interface = *index;
                interfaces.push((*index, name.clone()));
            }
        }
    }
    interfaces.sort();
    interfaces.dedup();
    Ok((found, interfaces))
}

/// Whether a listener is bound to an fe80::/10 address.
fn is_link_local_v6(listener: &Listener) -> bool {
    matches!(listener.address, IpAddr::V6(a) if a.is_unicast_link_local())
}

/// The link-local IPv6 addresses of the namespace's interfaces, from
/// `if_inet6`: `fe800000000000000000000000000001 03 40 20 80 eth0` is the
/// address, the interface index, prefix length, scope, flags and name.
fn link_local_addresses(proc_net: &Path) -> io::Result<Vec<(Ipv6Addr, u32, String)>> {
    let path = proc_net.join("if_inet6");
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(err) if err.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(cannot("read", &path, err)),
    };
    let mut found = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let entry = match fields[..] {
            [address, index, _, _, _, name] => u128::from_str_radix(address, 16)
                .ok()
                .zip(u32::from_str_radix(index, 16).ok())
                .map(|(a, i)| (Ipv6Addr::from(a), i, name.to_string())),
            _ => None,
        };
        let bad = || format!("bad line '{}'", crate::ports::cut(line));
        let entry = entry.ok_or_else(|| cannot("parse", &path, bad()))?;
        if entry.0.is_unicast_link_local() {
            found.push(entry);
        }
    }
    Ok(found)
}

/// One row of a table: `0: 0100007F:1F90 00000000:0000 0A ... uid timeout
/// inode ...`, split into its fields.
struct Row<'a> {
    fields: [&'a str; 10],
    number: usize,
}

impl Row<'_> {
    /// The local port.
    fn port(&self) -> Result<u16, String> {
        self.fields[1]
            .rsplit_once(':')
            .and_then(|(_, port)| u16::from_str_radix(port, 16).ok())
            .ok_or_else(|| self.bad("local address"))
    }

    /// The whole record of the row's socket.
    fn listener(&self, protocol: Protocol) -> Result<Listener, String> {
        let address = self.fields[1]
            .rsplit_once(':')
            .and_then(|(hex, _)| address(hex))
            .ok_or_else(|| self.bad("local address"))?;
        let uid = self.fields[7].parse().map_err(|_| self.bad("uid"))?;
        let inode = self.fields[9].parse().map_err(|_| self.bad("inode"))?;
        Ok(Listener {
            protocol,
            address,
            interface: 0,
            port: self.port()?,
            uid,
            inode,
            pid: 0,
            netns: 0,
        })
    }

    /// What is wrong with the row.
    fn bad(&self, field: &str) -> String {
        format!("line {}: bad {field}", self.number)
    }
}

/// An address as the tables print it: the 32-bit words of the address as
/// this machine's integers, in hex (8 digits for IPv4, 32 for IPv6).
fn address(hex: &str) -> Option<IpAddr> {
    let word = |i: usize| {
        hex.get(8 * i..8 * i + 8)
            .and_then(|w| u32::from_str_radix(w, 16).ok())
            .map(u32::to_ne_bytes)
    };
    match hex.len() {
        8 => Some(IpAddr::V4(Ipv4Addr::from(word(0)?))),
        32 => {
            let words = [word(0)?, word(1)?, word(2)?, word(3)?];
            let bytes: [u8; 16] = words.as_flattened().try_into().unwrap();
            Some(IpAddr::V6(Ipv6Addr::from(bytes)))
        }
        _ => None,
    }
}

/// Calls `each` with every open row of the tables of `protocol` and the
/// reading it is from; `between` gets the text after each part (a test's
/// hook).
///
/// The kernel writes a table a page per `read`, each restarting its walk
/// at a position counted inside a hash bucket: sockets of the bucket that
/// close between two reads move the rest past it, so a socket open all
/// along can be missed. A table read in one part is consistent; one in
/// several is read twice, and the callers unite the two (as netlink does).
fn read(
    proc_net: &Path,
    protocol: Protocol,
    each: &mut dyn FnMut(&Row, usize) -> Result<(), String>,
    between: &mut dyn FnMut(&[u8]),
) -> io::Result<()> {
    let mut text = Vec::new();
    // The tables, with whether each must exist (IPv6 may not).
    let (tables, state) = match protocol {
        Protocol::Tcp => ([("tcp", true), ("tcp6", false)], LISTEN),
        Protocol::Udp => ([("udp", true), ("udp6", false)], UNCONNECTED),
    };
    for (table, required) in tables {
        let path = proc_net.join(table);
        for reading in 0..2 {
            text.clear();
            let parts = match read_table(&path, &mut text, between) {
                Err(err) if reading == 0 && !required && err.kind() == ErrorKind::NotFound => break,
                read => read.map_err(|err| {
                    io::Error::new(err.kind(), format!("cannot read {}: {err}", path.display()))
                })?,
            };
            let text = std::str::from_utf8(&text)
                .map_err(|_| cannot("read", &path, "stream did not contain valid UTF-8"))?;
            parse(text, state, &mut |row| each(row, reading))
                .map_err(|why| cannot("parse", &path, why))?;
            if parts <= 1 {
                break;
            }
        }
    }
    Ok(())
}

/// Reads the table at `path` into `text`: how many reads returned data.
fn read_table(
    path: &Path,
    text: &mut Vec<u8>,
    between: &mut dyn FnMut(&[u8]),
) -> io::Result<usize> {
    let mut file = File::open(path)?;
    // The kernel fills a page per read; more room is not used.
    let mut chunk = [0u8; 16 * 1024];
    let mut parts = 0;
    loop {
        match file.read(&mut chunk) {
            Ok(0) => return Ok(parts),
            Ok(n) => {
                text.extend_from_slice(&chunk[..n]);
                parts += 1;
                between(text);
            }
            Err(err) if err.kind() == ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
}

/// Calls `each` with each row of one table in `state`, after the header.
fn parse(
    table: &str,
    state: &str,
    each: &mut dyn FnMut(&Row) -> Result<(), String>,
) -> Result<(), String> {
    for (number, line) in (1..).zip(table.lines()).skip(1) {
        let mut split = line.split_whitespace();
        let fields: [&str; 10] = std::array::from_fn(|_| split.next().unwrap_or(""));
        if !fields[0].is_empty() && fields[3].is_empty() {
            return Err(format!("line {number}: too few fields"));
        }
        // A record needs ten fields: a short row fails on the one it lacks.
        if fields[3] == state {
            each(&Row { fields, number })?;
        }
    }
    Ok(())
}

/// An error naming the table.
fn cannot(what: &str, path: &Path, why: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        ErrorKind::InvalidData,
        format!("cannot {what} {}: {why}", path.display()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1001 1 0000000000000000 100 0 0 10 0
   1: 0200007F:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1002 1 0000000000000000 100 0 0 10 0
   2: 0100007F:A1B2 0100007F:1F40 01 00000000:00000000 00:00000000 00000000     0        0 1003 1 0000000000000000 20 4 30 10 -1
   3: 0100007F:C000 0100007F:1F40 06 00000000:00000000 03:00000ABC 00000000     0        0 0 3 0000000000000000
";
    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:1F40 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2001 1 0000000000000000 100 0 0 10 0
   1: 00000000000000000000000001000000:FFFF 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2002 1 0000000000000000 100 0 0 10 0
   2: 00000000000000000000000001000000:0050 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 2003 2 0000000000000000 100 0 0 10 0
";

    /// The ports of the open rows of `table` in `state`.
    fn ports(table: &str, state: &str) -> Result<Vec<u16>, String> {
        let mut open = PortSet::new();
        parse(table, state, &mut |row| {
            open.insert(row.port()?);
            Ok(())
        })?;
        Ok(open.iter().collect())
    }

    #[test]
    fn keeps_only_listeners() {
        assert_eq!(ports(TCP, LISTEN).unwrap(), [22, 8000]);
        assert_eq!(ports(TCP6, LISTEN).unwrap(), [8000, 65535]);
    }

    #[test]
    fn header_only_is_empty() {
        assert!(
            ports(TCP.lines().next().unwrap(), LISTEN)
                .unwrap()
                .is_empty()
        );
        assert!(ports("", LISTEN).unwrap().is_empty());
    }

    #[test]
    fn malformed_rows_are_errors() {
        let err = ports("header\n   0: 0100007F\n", LISTEN).unwrap_err();
        assert!(err.contains("line 2: too few fields"), "{err}");
        let err = ports("header\n 0: 0100007F:XYZ 0:0 0A\n", LISTEN).unwrap_err();
        assert!(err.contains("line 2: bad local address"), "{err}");
    }

    #[test]
    fn records_carry_address_uid_and_inode() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tcp"), TCP).unwrap();
        std::fs::write(dir.path().join("tcp6"), TCP6).unwrap();
        std::fs::write(
            dir.path().join("udp"),
            format!("{}\n   5: 0100007F:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000   101        0 3001 2 0 0\n   6: 0100007F:0036 0100007F:0035 01 00000000:00000000 00:00000000 00000000   101        0 3002 2 0 0\n", TCP.lines().next().unwrap()),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("if_inet6"),
            "fe800000000000000000000000000001 03 40 20 80    veth0\n00000000000000000000000000000001 01 80 10 80       lo\n",
        )
        .unwrap();
        let tcp6 = TCP6.replace(
            "00000000000000000000000001000000:FFFF",
            "000080FE000000000000000001000000:FFFF",
        );
        std::fs::write(dir.path().join("tcp6"), tcp6).unwrap();
        let both = Protocols {
            tcp: true,
            udp: true,
        };
        let (found, interfaces) = listeners(dir.path(), both).unwrap();
        let summary: Vec<String> = found
            .iter()
            .map(|l| {
                format!(
                    "{}/{} {} if{} uid{} ino{}",
                    l.port,
                    l.protocol.name(),
                    l.address,
                    l.interface,
                    l.uid,
                    l.inode
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                "8000/tcp 127.0.0.1 if0 uid0 ino1001",
                "22/tcp 127.0.0.2 if0 uid0 ino1002",
                "8000/tcp :: if0 uid0 ino2001",
                "65535/tcp fe80::1 if3 uid0 ino2002",
                "53/udp 127.0.0.1 if0 uid101 ino3001",
            ]
        );
        assert_eq!(interfaces, [(3, "veth0".to_string())]);
    }

    #[test]
    fn reads_a_directory_and_tolerates_missing_tcp6() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tcp"), TCP).unwrap();
        let open = listening_ports(dir.path()).unwrap();
        assert_eq!(open.iter().collect::<Vec<_>>(), [22, 8000]);
        std::fs::remove_file(dir.path().join("tcp")).unwrap();
        let err = listening_ports(dir.path()).unwrap_err();
        assert!(err.to_string().contains("cannot read"), "{err}");
    }

    /// The inodes of the rows of a table's text.
    fn inodes(text: &[u8]) -> std::collections::HashSet<u32> {
        String::from_utf8_lossy(text)
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().nth(9)?.parse().ok())
            .collect()
    }

    /// A hook that, after the first part of a reading that shows some of
    /// `ours` but not all, closes those it showed: the kernel then resumes
    /// past as many that are still open.
    fn closer(ours: &mut [(u32, Option<socket2::Socket>)]) -> impl FnMut(&[u8]) + '_ {
        let mut fired = false;
        move |text| {
            let seen = inodes(text);
            let shown = ours.iter().filter(|(i, _)| seen.contains(i)).count();
            if fired || shown == 0 || shown == ours.len() {
                return;
            }
            fired = true;
            for (inode, socket) in ours.iter_mut() {
                if seen.contains(inode) {
                    socket.take();
                }
            }
        }
    }

    /// Those of `ours` still open that are not among `found`.
    fn missed(ours: &[(u32, Option<socket2::Socket>)], found: &[u32]) -> usize {
        ours.iter()
            .filter(|(inode, socket)| socket.is_some() && !found.contains(inode))
            .count()
    }

    #[test]
    fn sockets_closed_between_pages_hide_others_from_one_reading_but_not_from_two() {
        let path = Path::new("/proc/self/net/tcp");
        // One reading, as before the fix: listeners that listened all
        // along are missing. (This shows the test reproduces the fault.)
        let mut ours = crate::scan::tests::one_bucket([127, 0, 0, 78]);
        let mut text = Vec::new();
        let parts = read_table(path, &mut text, &mut closer(&mut ours)).unwrap();
        assert!(parts > 1, "/proc/net/tcp came in one part");
        let found: Vec<u32> = inodes(&text).into_iter().collect();
        assert!(
            missed(&ours, &found) > 0,
            "one reading missed nothing: the fault did not show"
        );
        // read, as every scan does: the second reading finds them.
        let mut ours = crate::scan::tests::one_bucket([127, 0, 0, 78]);
        let mut found = Vec::new();
        read(
            Path::new("/proc/self/net"),
            Protocol::Tcp,
            &mut |row, _| {
                found.push(row.fields[9].parse().unwrap());
                Ok(())
            },
            &mut closer(&mut ours),
        )
        .unwrap();
        assert_eq!(
            missed(&ours, &found),
            0,
            "a listener that stayed open was missed"
        );
    }

    #[test]
    fn sees_a_live_listener() {
        let listener = std::net::TcpListener::bind("[::1]:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(
            listening_ports(Path::new("/proc/net"))
                .unwrap()
                .contains(port)
        );
    }
}
