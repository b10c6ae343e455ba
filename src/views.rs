//! The views of a scan for people and scripts (`--format table|json`): one
//! row or object per listener, with every detail the scan learned, whatever
//! `--labels` says. Pure formatting, streamed to the writer.

use std::io::{self, Write};

use crate::{
    labels::{Address, Label, Labels, Order, Scope},
    scan::{Listener, Sockets},
};

/// The listeners in row order: port, protocol, address, user, process,
/// namespace, then pid.
fn rows(sockets: &Sockets) -> Vec<u32> {
    let order = Order::new(sockets);
    let labels: Labels = Label::ALL.into_iter().collect();
    let listeners = &sockets.listeners;
    let mut sorted: Vec<u32> = (0..listeners.len() as u32).collect();
    sorted.sort_unstable_by_key(|&i| {
        let l = &listeners[i as usize];
        (order.key(l, labels), l.pid, l.inode)
    });
    sorted
}

/// The column headings of the table; NETNS only with `--netns all`.
pub fn headings(netns: bool) -> Vec<String> {
    let all = [
        "PROTOCOL", "PORT", "ADDRESS", "USER", "PROCESS", "PID", "NETNS",
    ];
    all[..6 + usize::from(netns)]
        .iter()
        .map(|h| h.to_string())
        .collect()
}

/// Writes an aligned table: a heading row, then one row per listener,
/// sorted by port. Unknown processes show as `-`; control, format and
/// bidirectional characters in names as `?` ([`printable`]), so that a
/// name cannot forge or hide rows.
pub fn write_table(sockets: &Sockets, out: &mut impl Write) -> io::Result<()> {
    let sorted = rows(sockets);
    let headings = headings(!sockets.namespaces.is_empty());
    let mut widths: Vec<usize> = headings.iter().map(String::len).collect();
    for &i in &sorted {
        widen(
            &mut widths,
            &Row::of(&sockets.listeners[i as usize], sockets).cells(),
        );
    }
    row(out, &headings, &widths)?;
    for &i in &sorted {
        let cells = Row::of(&sockets.listeners[i as usize], sockets).cells();
        row(out, &cells, &widths)?;
    }
    Ok(())
}

/// Widens the columns to fit `cells`.
pub fn widen(widths: &mut [usize], cells: &[String]) {
    for (width, cell) in widths.iter_mut().zip(cells) {
        *width = (*width).max(printable(cell).chars().count());
    }
}

/// One table row: cells padded to their column's width, two spaces apart,
/// the port right-aligned, nothing after the last cell.
pub fn row(out: &mut impl Write, cells: &[String], widths: &[usize]) -> io::Result<()> {
    let last = cells.len() - 1;
    for (k, (cell, &width)) in cells.iter().zip(widths).enumerate() {
        let cell = printable(cell);
        let pad = width - cell.chars().count();
        match k {
            1 => write!(out, "{:pad$}{cell}  ", "")?,
            _ if k == last => write!(out, "{cell}")?,
            _ => write!(out, "{cell}{:pad$}  ", "")?,
        }
    }
    out.write_all(b"\n")
}

/// `text` with the characters a terminal would act on or hide
/// ([`hidden`]) replaced by `?`.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(hidden) {
        return text.into();
    }
    text.chars()
        .map(|c| if hidden(c) { '?' } else { c })
        .collect()
}

/// One listener as `--format json` shows it (and `--watch` with it): the
/// keys `protocol`, `port`, `address`, `scope`, `user`, `uid`, `process`
/// and `pid` (`process` and `pid` are null when no process was found), and
/// `netns` with `--netns all`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Row {
    pub protocol: &'static str,
    pub port: u16,
    pub address: String,
    pub scope: &'static str,
    pub user: String,
    pub uid: u32,
    pub process: Option<String>,
    pub pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
}

impl Row {
    /// The row of `listener`.
    pub fn of(listener: &Listener, sockets: &Sockets) -> Row {
        let process = sockets.process(listener.pid);
        Row {
            protocol: listener.protocol.name(),
            port: listener.port,
            address: Address::of(listener, sockets).to_string(),
            scope: Scope::of(listener.address).name(),
            user: sockets
                .user(listener.uid)
                .map_or_else(|| listener.uid.to_string(), str::to_string),
            uid: listener.uid,
            process: process.map(str::to_string),
            pid: process.map(|_| listener.pid),
            netns: sockets.namespaces.get(listener.netns as usize).cloned(),
        }
    }

    /// The table's cells, in column order ([`headings`]): unknown
    /// processes as `-`, the netns column only with `--netns all`.
    pub fn cells(&self) -> Vec<String> {
        let mut cells = vec![
            self.protocol.to_string(),
            self.port.to_string(),
            self.address.clone(),
            self.user.clone(),
            self.process.clone().unwrap_or_else(|| "-".into()),
            self.pid.map_or_else(|| "-".into(), |pid| pid.to_string()),
        ];
        if let Some(netns) = &self.netns {
            cells.push(netns.clone());
        }
        cells
    }
}

/// Writes a JSON array of listener objects ([`Row`]), one per line, sorted
/// as the table is.
pub fn write_json(sockets: &Sockets, out: &mut impl Write) -> io::Result<()> {
    let sorted = rows(sockets);
    for (n, &i) in sorted.iter().enumerate() {
        out.write_all(if n == 0 { b"[\n" } else { b",\n" })?;
        write_json_value(&Row::of(&sockets.listeners[i as usize], sockets), &mut *out)?;
    }
    out.write_all(if sorted.is_empty() { b"[]\n" } else { b"\n]\n" })
}

/// Writes `value` as one line of JSON, with every character that a
/// terminal would act on or hide escaped as `\uXXXX` ([`hidden`]): the
/// text stays the same for a JSON reader, and none of it reaches a
/// terminal raw.
pub fn write_json_value(value: &impl serde::Serialize, out: &mut impl Write) -> io::Result<()> {
    let mut serializer = serde_json::Serializer::with_formatter(out, Escaping);
    value.serialize(&mut serializer).map_err(io::Error::from)
}

/// serde_json's compact output, with control, format and bidirectional
/// characters escaped: all of them as `\u00XX` (not `\n`), and also those
/// JSON allows raw (DEL, C1, U+202E, U+200B, ...).
struct Escaping;

impl serde_json::ser::Formatter for Escaping {
    fn write_string_fragment<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            if hidden(c) {
                writer.write_all(&fragment.as_bytes()[start..i])?;
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    write!(writer, "\\u{unit:04x}")?;
                }
                start = i + c.len_utf8();
            }
        }
        writer.write_all(&fragment.as_bytes()[start..])
    }

    fn write_char_escape<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        escape: serde_json::ser::CharEscape,
    ) -> io::Result<()> {
        use serde_json::ser::CharEscape;
        let byte = match escape {
            CharEscape::Quote => return writer.write_all(b"\\\""),
            CharEscape::ReverseSolidus => return writer.write_all(b"\\\\"),
            CharEscape::Solidus => b'/',
            CharEscape::Backspace => 0x08,
            CharEscape::FormFeed => 0x0c,
            CharEscape::LineFeed => b'\n',
            CharEscape::CarriageReturn => b'\r',
            CharEscape::Tab => b'\t',
            CharEscape::AsciiControl(byte) => byte,
        };
        write!(writer, "\\u{byte:04x}")
    }
}

/// Whether a terminal would act on `c` or not show it: control characters
/// (C0, DEL, C1, so ESC too), and the invisible format characters of
/// Unicode, above all those that reorder or hide text (bidirectional
/// overrides, embeddings, isolates and marks; zero-width spaces and
/// joiners; line and paragraph separators), so that a name cannot forge
/// or hide text in the rows around it.
pub fn hidden(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{ad}'
                | '\u{600}'..='\u{605}'
                | '\u{61c}'
                | '\u{6dd}'
                | '\u{70f}'
                | '\u{890}'..='\u{891}'
                | '\u{8e2}'
                | '\u{180e}'
                | '\u{200b}'..='\u{200f}'
                | '\u{2028}'..='\u{202e}'
                | '\u{2060}'..='\u{2064}'
                | '\u{2066}'..='\u{206f}'
                | '\u{feff}'
                | '\u{fff9}'..='\u{fffb}'
                | '\u{110bd}'
                | '\u{110cd}'
                | '\u{13430}'..='\u{1343f}'
                | '\u{1bca0}'..='\u{1bca3}'
                | '\u{1d173}'..='\u{1d17a}'
                | '\u{e0001}'
                | '\u{e0020}'..='\u{e007f}'
        )
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
