//! The fallback method: read the kernel's text tables `/proc/net/tcp` and
//! `/proc/net/tcp6` and keep the rows in state `0A` (TCP_LISTEN).
//!
//! Exact, like netlink, but every read walks the whole established hash, so
//! it costs ~10 ms on an idle host and ~90 ms with 20,000 connections. It is
//! used only when netlink is unavailable (a kernel without
//! CONFIG_INET_DIAG, or a sandbox that refuses NETLINK_SOCK_DIAG).

use std::{fs, io, path::Path};

use crate::ports::PortSet;

/// The `st` column value of a socket in LISTEN state.
const LISTEN: &str = "0A";

/// The ports of every TCP socket in LISTEN state, read from `proc_net`
/// (normally `/proc/net`, the tables of the reader's network namespace).
/// A missing `tcp6` table means the kernel has no IPv6 and is not an error.
pub fn listening_ports(proc_net: &Path) -> io::Result<PortSet> {
    let mut open = PortSet::new();
    for (table, required) in [("tcp", true), ("tcp6", false)] {
        let path = proc_net.join(table);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(err) if !required && err.kind() == io::ErrorKind::NotFound => continue,
            Err(err) => {
                return Err(io::Error::new(
                    err.kind(),
                    format!("cannot read {}: {err}", path.display()),
                ));
            }
        };
        parse(&text, &mut open).map_err(|why| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("cannot parse {}: {why}", path.display()),
            )
        })?;
    }
    Ok(open)
}

/// Adds the local port of each LISTEN row of one table to `open`.
///
/// Rows look like `0: 0100007F:1F90 00000000:0000 0A ...`: slot, local
/// `HEXADDR:HEXPORT`, remote address, state. The first line is a header.
fn parse(table: &str, open: &mut PortSet) -> Result<(), String> {
    for (number, line) in table.lines().enumerate().skip(1) {
        let mut fields = line.split_whitespace();
        let (Some(_slot), Some(local), Some(_remote), Some(state)) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            if line.trim().is_empty() {
                continue;
            }
            return Err(format!("line {}: too few fields", number + 1));
        };
        if state != LISTEN {
            continue;
        }
        let port = local
            .rsplit_once(':')
            .and_then(|(_, port)| u16::from_str_radix(port, 16).ok())
            .ok_or_else(|| format!("line {}: bad local address '{local}'", number + 1))?;
        open.insert(port);
    }
    Ok(())
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

    #[test]
    fn keeps_only_listeners_and_dedupes() {
        let mut open = PortSet::new();
        parse(TCP, &mut open).unwrap();
        parse(TCP6, &mut open).unwrap();
        assert_eq!(open.iter().collect::<Vec<_>>(), [22, 8000, 65535]);
    }

    #[test]
    fn header_only_is_empty() {
        let mut open = PortSet::new();
        parse(TCP.lines().next().unwrap(), &mut open).unwrap();
        parse("", &mut open).unwrap();
        assert!(open.is_empty());
    }

    #[test]
    fn malformed_rows_are_errors() {
        let mut open = PortSet::new();
        let err = parse("header\n   0: 0100007F\n", &mut open).unwrap_err();
        assert!(err.contains("line 2: too few fields"), "{err}");
        let err = parse("header\n 0: 0100007F:XYZ 0:0 0A\n", &mut open).unwrap_err();
        assert!(err.contains("bad local address '0100007F:XYZ'"), "{err}");
    }

    #[test]
    fn reads_a_directory_and_tolerates_missing_tcp6() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("tcp"), TCP).unwrap();
        let open = listening_ports(dir.path()).unwrap();
        assert_eq!(open.iter().collect::<Vec<_>>(), [22, 8000]);
        fs::remove_file(dir.path().join("tcp")).unwrap();
        let err = listening_ports(dir.path()).unwrap_err();
        assert!(err.to_string().contains("cannot read"), "{err}");
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
