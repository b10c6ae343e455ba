//! The views of a scan for people and scripts (`--format table|json`): one
//! row or object per listener, with every detail the scan learned, whatever
//! `--labels` says. Pure formatting, streamed to the writer.

use std::io::{self, Write};

use crate::{
    labels::{Address, Label, Labels, Order},
    scan::{Listener, Scope, Sockets},
};

/// Every label: the order of the rows.
fn all_labels() -> Labels {
    Label::ALL.into_iter().collect()
}

/// The listeners in row order: port, protocol, address, user, process,
/// namespace, then pid.
fn rows(sockets: &Sockets) -> Vec<u32> {
    let order = Order::new(sockets);
    let labels = all_labels();
    let listeners = &sockets.listeners;
    let mut sorted: Vec<u32> = (0..listeners.len() as u32).collect();
    sorted.sort_unstable_by_key(|&i| {
        let l = &listeners[i as usize];
        (order.key(l, labels), l.pid, l.inode)
    });
    sorted
}

/// The text of a row's cells, in column order: the netns column only with
/// `--netns all`.
fn cells(listener: &Listener, sockets: &Sockets) -> Vec<String> {
    let user = sockets
        .user(listener.uid)
        .map_or_else(|| listener.uid.to_string(), str::to_string);
    let (process, pid) = match sockets.process(listener.pid) {
        Some(name) => (name.to_string(), listener.pid.to_string()),
        None => ("-".to_string(), "-".to_string()),
    };
    let mut cells = vec![
        listener.protocol.name().to_string(),
        listener.port.to_string(),
        Address::of(listener, sockets).to_string(),
        user,
        process,
        pid,
    ];
    if let Some(netns) = namespace(listener, sockets) {
        cells.push(netns.to_string());
    }
    cells
}

/// The label of a listener's namespace, with `--netns all`.
fn namespace<'a>(listener: &Listener, sockets: &'a Sockets) -> Option<&'a str> {
    sockets
        .namespaces
        .get(listener.netns as usize)
        .map(String::as_str)
}

/// The column headings of the table; NETNS only with `--netns all`.
fn headings(sockets: &Sockets) -> Vec<String> {
    let mut headings = ["PROTOCOL", "PORT", "ADDRESS", "USER", "PROCESS", "PID"]
        .map(str::to_string)
        .to_vec();
    if !sockets.namespaces.is_empty() {
        headings.push("NETNS".to_string());
    }
    headings
}

/// Writes an aligned table: a heading row, then one row per listener,
/// sorted by port. Unknown processes show as `-`; control characters in
/// names as `?`, so that a name cannot forge rows.
pub fn write_table(sockets: &Sockets, out: &mut impl Write) -> io::Result<()> {
    let sorted = rows(sockets);
    let headings = headings(sockets);
    let mut widths: Vec<usize> = headings.iter().map(String::len).collect();
    for &i in &sorted {
        for (width, cell) in widths
            .iter_mut()
            .zip(cells(&sockets.listeners[i as usize], sockets))
        {
            *width = (*width).max(printable(&cell).chars().count());
        }
    }
    row(out, &headings, &widths)?;
    for &i in &sorted {
        row(
            out,
            &cells(&sockets.listeners[i as usize], sockets),
            &widths,
        )?;
    }
    Ok(())
}

/// One table row: cells padded to their column's width, two spaces apart,
/// the port right-aligned, nothing after the last cell.
fn row(out: &mut impl Write, cells: &[String], widths: &[usize]) -> io::Result<()> {
    let last = cells.len() - 1;
    for (k, (cell, &width)) in cells.iter().zip(widths).enumerate() {
        let cell = printable(cell);
        let pad = width - cell.chars().count();
        if k == 1 {
            write!(out, "{:pad$}{cell}", "")?;
        } else if k == last {
            write!(out, "{cell}")?;
        } else {
            write!(out, "{cell}{:pad$}", "")?;
        }
        if k != last {
            out.write_all(b"  ")?;
        }
    }
    out.write_all(b"\n")
}

/// `text` with control characters replaced by `?`.
fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    if text.chars().any(char::is_control) {
        text.chars()
            .map(|c| if c.is_control() { '?' } else { c })
            .collect::<String>()
            .into()
    } else {
        text.into()
    }
}

/// Writes a JSON array of listener objects, one per line, sorted as the
/// table is, with the keys `protocol`, `port`, `address`, `scope`, `user`,
/// `uid`, `process` and `pid` (`process` and `pid` are null when no
/// process was found), and `netns` with `--netns all`.
pub fn write_json(sockets: &Sockets, out: &mut impl Write) -> io::Result<()> {
    let sorted = rows(sockets);
    if sorted.is_empty() {
        return out.write_all(b"[]\n");
    }
    out.write_all(b"[\n")?;
    for (n, &i) in sorted.iter().enumerate() {
        let listener = &sockets.listeners[i as usize];
        write!(
            out,
            "{{\"protocol\":\"{}\",\"port\":{},\"address\":",
            listener.protocol.name(),
            listener.port
        )?;
        json_string(out, &Address::of(listener, sockets).to_string())?;
        write!(
            out,
            ",\"scope\":\"{}\",\"user\":",
            Scope::of(listener.address).name()
        )?;
        match sockets.user(listener.uid) {
            Some(name) => json_string(out, name)?,
            None => json_string(out, &listener.uid.to_string())?,
        }
        write!(out, ",\"uid\":{},\"process\":", listener.uid)?;
        match sockets.process(listener.pid) {
            Some(name) => {
                json_string(out, name)?;
                write!(out, ",\"pid\":{}", listener.pid)?;
            }
            None => out.write_all(b"null,\"pid\":null")?,
        }
        if let Some(netns) = namespace(listener, sockets) {
            out.write_all(b",\"netns\":")?;
            json_string(out, netns)?;
        }
        out.write_all(b"}")?;
        out.write_all(if n + 1 < sorted.len() { b",\n" } else { b"\n" })?;
    }
    out.write_all(b"]\n")
}

/// Writes `text` as a JSON string.
fn json_string(out: &mut impl Write, text: &str) -> io::Result<()> {
    out.write_all(b"\"")?;
    for c in text.chars() {
        match c {
            '"' => out.write_all(b"\\\"")?,
            '\\' => out.write_all(b"\\\\")?,
            c if (c as u32) < 0x20 || c == '\u{7f}' => write!(out, "\\u{:04x}", c as u32)?,
            c => write!(out, "{c}")?,
        }
    }
    out.write_all(b"\"")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::{Protocol, owner::Processes};

    fn sockets() -> Sockets {
        let listener = |protocol, address: &str, interface, port, uid, pid| Listener {
            protocol,
            address: address.parse().unwrap(),
            interface,
            port,
            uid,
            inode: port as u32,
            pid,
            netns: 0,
        };
        Sockets {
            listeners: vec![
                listener(Protocol::Udp, "0.0.0.0", 0, 53, 0, 0),
                listener(Protocol::Tcp, "fe80::1", 3, 8080, 65534, 20),
                listener(Protocol::Tcp, "::", 0, 22, 0, 7),
                listener(Protocol::Tcp, "0.0.0.0", 0, 22, 0, 7),
            ],
            interfaces: vec![((0, 3), "veth0".into())],
            users: vec![(0, "root".into()), (65534, "nobody".into())],
            processes: Some(Processes {
                names: vec![(7, "sshd".into()), (20, "we\"ird\n".into())],
                unattributed: 1,
                denied: 0,
            }),
            namespaces: Vec::new(),
        }
    }

    #[test]
    fn golden_table() {
        let mut out = Vec::new();
        write_table(&sockets(), &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "\
PROTOCOL  PORT  ADDRESS        USER    PROCESS  PID
tcp         22  0.0.0.0        root    sshd     7
tcp         22  ::             root    sshd     7
udp         53  0.0.0.0        root    -        -
tcp       8080  fe80::1%veth0  nobody  we\"ird?  20
"
        );
    }

    #[test]
    fn golden_json() {
        let mut out = Vec::new();
        write_json(&sockets(), &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"[
{"protocol":"tcp","port":22,"address":"0.0.0.0","scope":"any","user":"root","uid":0,"process":"sshd","pid":7},
{"protocol":"tcp","port":22,"address":"::","scope":"any","user":"root","uid":0,"process":"sshd","pid":7},
{"protocol":"udp","port":53,"address":"0.0.0.0","scope":"any","user":"root","uid":0,"process":null,"pid":null},
{"protocol":"tcp","port":8080,"address":"fe80::1%veth0","scope":"link-local","user":"nobody","uid":65534,"process":"we\"ird\u000a","pid":20}
]
"#
        );
        let mut empty = Vec::new();
        write_json(&Sockets::default(), &mut empty).unwrap();
        assert_eq!(empty, b"[]\n");
    }
    #[test]
    fn golden_netns_column_and_key() {
        let mut sockets = sockets();
        sockets.namespaces = vec!["host".into(), "0123456789ab".into()];
        sockets.listeners[1].netns = 1;
        sockets.listeners[2].netns = 1;
        sockets.interfaces = vec![((1, 3), "veth0".into())];
        let mut out = Vec::new();
        write_table(&sockets, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "\
PROTOCOL  PORT  ADDRESS        USER    PROCESS  PID  NETNS
tcp         22  0.0.0.0        root    sshd     7    host
tcp         22  ::             root    sshd     7    0123456789ab
udp         53  0.0.0.0        root    -        -    host
tcp       8080  fe80::1%veth0  nobody  we\"ird?  20   0123456789ab
"
        );
        let mut out = Vec::new();
        write_json(&sockets, &mut out).unwrap();
        let json = String::from_utf8(out).unwrap();
        assert!(
            json.contains(r#""process":"sshd","pid":7,"netns":"0123456789ab"},"#),
            "{json}"
        );
        assert!(
            json.contains(r#""process":null,"pid":null,"netns":"host"},"#),
            "{json}"
        );
    }
}
