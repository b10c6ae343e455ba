//! The Prometheus text exposition format 0.0.4, written by hand.
//!
//! Pure formatting: no I/O, no clock. The rules it keeps (see
//! prometheus/docs `exposition_formats.md` and node_exporter's
//! `collector/textfile.go`):
//! - one `# HELP` then one `# TYPE` per family, each family contiguous;
//! - HELP text is a fixed string with no `"` and no escapes, because
//!   parsers older than 2024 (promtool 2.42, node_exporter 1.5) reject `\"`
//!   in HELP and drop the whole file;
//! - one sample per series, ports sorted numerically, so the output is
//!   deterministic apart from the meta values;
//! - no timestamps (node_exporter skips a file that has them);
//! - `\n` line ends, including after the last line.

use std::io::{self, Write};

use crate::{
    labels::{Address, Key, Label, Labels, Order},
    ports::PortSet,
    scan::{Listener, Protocol, Scan, Scope, Sockets},
};

/// The metric this tool exists for.
pub const OPEN_PORTS: &str = "instance_open_ports";

const OPEN_PORTS_HELP: &str = "Whether a TCP socket listens on this port, on any local address and \
either family: 1 open, 0 closed (closed ports are listed only with --include-closed).";

/// The HELP text when UDP is scanned or labels are chosen.
const OPEN_PORTS_HELP_LABELLED: &str = "Whether a socket listens on this port (TCP in LISTEN \
state, UDP bound and not connected), with the labels chosen by --labels: 1 open, 0 closed \
(closed ports are listed only with --include-closed).";

/// Everything one exposition says.
#[derive(Debug)]
pub struct Report<'a> {
    /// Ports to report as open (1).
    pub open: &'a PortSet,
    /// Ports to report as closed (0), if closed ports are reported at all.
    pub closed: Option<&'a PortSet>,
    /// Ports the scan skipped (their state is unknown).
    pub skipped: usize,
    /// How long the scan took, in seconds.
    pub duration_seconds: f64,
    /// When the scan started, in seconds since the Unix epoch.
    pub timestamp_seconds: f64,
    /// The method that ran (`netlink`, `procfs` or `bind`).
    pub method: &'a str,
    /// This program's version.
    pub version: &'a str,
}

/// How a scan is shown in the exposition: which labels, and whether closed
/// ports are listed.
#[derive(Clone, Copy, Debug)]
pub struct Shown<'a> {
    /// The labels beyond `port` (empty: the original exposition).
    pub labels: Labels,
    /// The selected ports, when closed ones are listed with value 0.
    pub closed_of: Option<&'a PortSet>,
}

/// Renders a scan of the `selected` ports without labels; with
/// `include_closed`, each selected port that is neither open nor unchecked
/// is written as 0.
pub fn render_scan(scan: &Scan, selected: &PortSet, include_closed: bool) -> String {
    let shown = Shown {
        labels: Labels::NONE,
        closed_of: include_closed.then_some(selected),
    };
    let mut out = Vec::new();
    // Writing to a Vec cannot fail.
    let _ = write_scan(scan, shown, &mut out);
    String::from_utf8(out).expect("the exposition is UTF-8")
}

/// Writes the exposition of `scan` shown as `shown`. Without labels the
/// output is the original one, byte for byte.
pub fn write_scan(scan: &Scan, shown: Shown, out: &mut impl Write) -> io::Result<()> {
    let closed = |open: &PortSet| {
        shown.closed_of.map(|selected| {
            let mut closed = selected.clone();
            closed.subtract(open);
            closed.subtract(&scan.skipped);
            closed
        })
    };
    let closed_tcp = closed(&scan.open);
    let report = Report {
        open: &scan.open,
        closed: closed_tcp.as_ref(),
        skipped: scan.skipped.len(),
        duration_seconds: scan.duration.as_secs_f64(),
        // A clock before 1970 is not worth failing a scrape over.
        timestamp_seconds: scan
            .started
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |since| since.as_secs_f64()),
        method: scan.method.name(),
        version: env!("CARGO_PKG_VERSION"),
    };
    if shown.labels.is_empty() {
        return write(&report, out);
    }
    // Closed ports as (port, protocol), in sample order.
    let mut closed_keys: Vec<(u16, Protocol)> = Vec::new();
    for protocol in scan.protocols.iter() {
        let set = match protocol {
            Protocol::Tcp => closed_tcp.clone(),
            Protocol::Udp => closed(&scan.open_udp),
        };
        closed_keys.extend(set.iter().flat_map(|s| s.iter()).map(|p| (p, protocol)));
    }
    closed_keys.sort_unstable();
    let mut samples = Samples {
        out,
        labels: shown.labels,
        closed: closed_keys.into_iter().peekable(),
    };
    header(samples.out, OPEN_PORTS, OPEN_PORTS_HELP_LABELLED, "gauge")?;
    match &scan.sockets {
        Some(sockets) => {
            let order = Order::new(sockets);
            let listeners = &sockets.listeners;
            let mut sorted: Vec<u32> = (0..listeners.len() as u32).collect();
            sorted.sort_unstable_by_key(|&i| order.key(&listeners[i as usize], shown.labels));
            let mut last: Option<Key> = None;
            for i in sorted {
                let listener = &listeners[i as usize];
                let key = order.key(listener, shown.labels);
                if last != Some(key) {
                    last = Some(key);
                    samples.open(listener.port, listener.protocol, Some((listener, sockets)))?;
                }
            }
        }
        None if shown.labels.need_sockets() => {
            return Err(io::Error::other(
                "the scan did not learn the sockets these labels need",
            ));
        }
        None => {
            let mut open: Vec<(u16, Protocol)> = scan
                .open
                .iter()
                .map(|p| (p, Protocol::Tcp))
                .chain(scan.open_udp.iter().map(|p| (p, Protocol::Udp)))
                .collect();
            open.sort_unstable();
            for (port, protocol) in open {
                samples.open(port, protocol, None)?;
            }
        }
    }
    samples.closed_before(None)?;
    let unattributed = shown.labels.has(Label::Process).then(|| {
        scan.sockets
            .as_ref()
            .and_then(|s| s.processes.as_ref())
            .map_or(0, |p| p.unattributed)
    });
    meta(&report, unattributed, out)
}

/// The samples of a labelled exposition, open ones given in order and
/// closed ones merged in.
struct Samples<'a, W: Write> {
    out: &'a mut W,
    labels: Labels,
    closed: std::iter::Peekable<std::vec::IntoIter<(u16, Protocol)>>,
}

impl<W: Write> Samples<'_, W> {
    /// Writes an open sample, after the closed ones that sort before it.
    fn open(
        &mut self,
        port: u16,
        protocol: Protocol,
        listener: Option<(&Listener, &Sockets)>,
    ) -> io::Result<()> {
        self.closed_before(Some((port, protocol)))?;
        self.sample(port, protocol, listener, 1)
    }

    /// Writes the closed samples that sort before `before` (all: `None`).
    fn closed_before(&mut self, before: Option<(u16, Protocol)>) -> io::Result<()> {
        while let Some(&(port, protocol)) = self.closed.peek() {
            if before.is_some_and(|b| (port, protocol) >= b) {
                break;
            }
            self.closed.next();
            self.sample(port, protocol, None, 0)?;
        }
        Ok(())
    }

    /// One sample: `port`, `protocol` if chosen, and the chosen labels of
    /// `listener` (none for a closed port).
    fn sample(
        &mut self,
        port: u16,
        protocol: Protocol,
        listener: Option<(&Listener, &Sockets)>,
        value: u8,
    ) -> io::Result<()> {
        let out = &mut *self.out;
        write!(out, "{OPEN_PORTS}{{port=\"{port}\"")?;
        if self.labels.has(Label::Protocol) {
            write!(out, ",protocol=\"{}\"", protocol.name())?;
        }
        if let Some((listener, sockets)) = listener {
            for label in self.labels.iter() {
                match label {
                    Label::Protocol => {}
                    Label::Address => {
                        out.write_all(b",address=\"")?;
                        write_escaped(out, &Address::of(listener, sockets).to_string())?;
                        out.write_all(b"\"")?;
                    }
                    Label::Scope => {
                        write!(out, ",scope=\"{}\"", Scope::of(listener.address).name())?;
                    }
                    Label::User => {
                        out.write_all(b",user=\"")?;
                        match sockets.user(listener.uid) {
                            Some(name) => write_escaped(out, name)?,
                            None => write!(out, "{}", listener.uid)?,
                        }
                        out.write_all(b"\"")?;
                    }
                    Label::Process => {
                        out.write_all(b",process=\"")?;
                        write_escaped(out, sockets.process(listener.pid).unwrap_or(""))?;
                        out.write_all(b"\"")?;
                    }
                }
            }
        }
        writeln!(out, "}} {value}")
    }
}

/// Renders `report` as a complete exposition.
pub fn render(report: &Report) -> String {
    let mut out = Vec::with_capacity(600 + 40 * report.open.len());
    // Writing to a Vec cannot fail.
    let _ = write(report, &mut out);
    String::from_utf8(out).expect("the exposition is UTF-8")
}

/// Writes `report` as a complete exposition: one sample per port.
pub fn write(report: &Report, out: &mut impl Write) -> io::Result<()> {
    header(out, OPEN_PORTS, OPEN_PORTS_HELP, "gauge")?;
    let mut open = report.open.iter().peekable();
    let mut closed = report.closed.into_iter().flat_map(PortSet::iter).peekable();
    // Merge the two sorted streams so the family stays sorted by port.
    loop {
        let (port, value) = match (open.peek(), closed.peek()) {
            (Some(&o), Some(&c)) if c < o => (closed.next().unwrap(), 0),
            (Some(_), _) => (open.next().unwrap(), 1),
            (None, Some(_)) => (closed.next().unwrap(), 0),
            (None, None) => break,
        };
        writeln!(out, "{OPEN_PORTS}{{port=\"{port}\"}} {value}")?;
    }
    meta(report, None, out)
}

/// The families about the scan itself; `unattributed` with the process
/// label.
fn meta(report: &Report, unattributed: Option<usize>, out: &mut impl Write) -> io::Result<()> {
    write_gauge(
        out,
        "port_exporter_scan_duration_seconds",
        "How long the port scan took, in seconds.",
        report.duration_seconds,
    )?;
    write_gauge(
        out,
        "port_exporter_last_scan_timestamp_seconds",
        "When the last successful port scan started, in seconds since the Unix epoch.",
        report.timestamp_seconds,
    )?;
    write_gauge(
        out,
        "port_exporter_scan_skipped_ports",
        "Selected ports the scan skipped (the bind method may not bind them without \
privilege); they are never reported open.",
        report.skipped as f64,
    )?;
    if let Some(count) = unattributed {
        write_gauge(
            out,
            "port_exporter_unattributed_listeners",
            "Listeners whose process could not be found (process label empty): held by \
processes of other users without the privilege to read them, or by no visible process.",
            count as f64,
        )?;
    }
    header(
        out,
        "port_exporter_build_info",
        "A metric with a constant 1 value, labeled by the version and the scan method used.",
        "gauge",
    )?;
    writeln!(
        out,
        "port_exporter_build_info{{method=\"{}\",version=\"{}\"}} 1",
        escape_label(report.method),
        escape_label(report.version),
    )
}

/// Appends a family of one unlabeled gauge sample.
pub fn gauge(out: &mut String, name: &str, help: &str, value: f64) {
    let mut bytes = Vec::new();
    let _ = write_gauge(&mut bytes, name, help, value);
    out.push_str(std::str::from_utf8(&bytes).expect("UTF-8"));
}

/// Appends a family of one unlabeled counter sample.
pub fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    let mut bytes = Vec::new();
    let _ = header(&mut bytes, name, help, "counter");
    let _ = writeln!(bytes, "{name} {value}");
    out.push_str(std::str::from_utf8(&bytes).expect("UTF-8"));
}

/// Writes a family of one unlabeled gauge sample.
fn write_gauge(out: &mut impl Write, name: &str, help: &str, value: f64) -> io::Result<()> {
    header(out, name, help, "gauge")?;
    writeln!(out, "{name} {}", number(value))
}

/// Writes the HELP and TYPE lines of a family.
fn header(out: &mut impl Write, name: &str, help: &str, kind: &str) -> io::Result<()> {
    debug_assert!(
        !help.contains(['\\', '\n', '"']),
        "HELP text must need no escaping"
    );
    writeln!(out, "# HELP {name} {help}")?;
    writeln!(out, "# TYPE {name} {kind}")
}

/// A sample value as Go's ParseFloat reads it (`+Inf`, not Rust's `inf`).
fn number(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_string()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.to_string()
    } else {
        value.to_string()
    }
}

/// Escapes a label value: backslash, double quote and line feed.
fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Writes a label value escaped, without building a string when it needs
/// no escape (the common case).
fn write_escaped(out: &mut impl Write, value: &str) -> io::Result<()> {
    if value.contains(['\\', '"', '\n']) {
        out.write_all(escape_label(value).as_bytes())
    } else {
        out.write_all(value.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::parse_list;

    const HEADER: &str = "\
# HELP instance_open_ports Whether a TCP socket listens on this port, on any local address and either family: 1 open, 0 closed (closed ports are listed only with --include-closed).
# TYPE instance_open_ports gauge
";

    const META: &str = "\
# HELP port_exporter_scan_duration_seconds How long the port scan took, in seconds.
# TYPE port_exporter_scan_duration_seconds gauge
port_exporter_scan_duration_seconds 0.000035
# HELP port_exporter_last_scan_timestamp_seconds When the last successful port scan started, in seconds since the Unix epoch.
# TYPE port_exporter_last_scan_timestamp_seconds gauge
port_exporter_last_scan_timestamp_seconds 1764302673.25
# HELP port_exporter_scan_skipped_ports Selected ports the scan skipped (the bind method may not bind them without privilege); they are never reported open.
# TYPE port_exporter_scan_skipped_ports gauge
port_exporter_scan_skipped_ports 0
# HELP port_exporter_build_info A metric with a constant 1 value, labeled by the version and the scan method used.
# TYPE port_exporter_build_info gauge
port_exporter_build_info{method=\"netlink\",version=\"1.2.3\"} 1
";

    fn report<'a>(open: &'a PortSet, closed: Option<&'a PortSet>) -> Report<'a> {
        Report {
            open,
            closed,
            skipped: 0,
            duration_seconds: 0.000035,
            timestamp_seconds: 1764302673.25,
            method: "netlink",
            version: "1.2.3",
        }
    }

    #[test]
    fn golden_open_ports() {
        let open = parse_list("8000,22,443").unwrap();
        let expected = format!(
            "{HEADER}\
instance_open_ports{{port=\"22\"}} 1
instance_open_ports{{port=\"443\"}} 1
instance_open_ports{{port=\"8000\"}} 1
{META}"
        );
        assert_eq!(render(&report(&open, None)), expected);
    }

    #[test]
    fn golden_nothing_open() {
        let open = PortSet::new();
        assert_eq!(render(&report(&open, None)), format!("{HEADER}{META}"));
    }

    #[test]
    fn golden_include_closed_merges_in_port_order() {
        let open = parse_list("22,8080").unwrap();
        let closed = parse_list("1,80,443,65535").unwrap();
        let expected = format!(
            "{HEADER}\
instance_open_ports{{port=\"1\"}} 0
instance_open_ports{{port=\"22\"}} 1
instance_open_ports{{port=\"80\"}} 0
instance_open_ports{{port=\"443\"}} 0
instance_open_ports{{port=\"8080\"}} 1
instance_open_ports{{port=\"65535\"}} 0
{META}"
        );
        assert_eq!(render(&report(&open, Some(&closed))), expected);
    }

    #[test]
    fn every_line_is_well_formed() {
        let open = PortSet::all();
        let text = render(&report(&open, None));
        assert!(text.ends_with('\n') && !text.contains('\r'));
        let mut seen_types = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                assert!(seen_types.insert(rest.split(' ').next().unwrap()), "{line}");
            } else if !line.starts_with("# HELP ") {
                let (_, value) = line.rsplit_once(' ').unwrap();
                value.parse::<f64>().unwrap();
            }
        }
        assert_eq!(
            text.lines().filter(|l| l.starts_with(OPEN_PORTS)).count(),
            65535
        );
    }

    #[test]
    fn numbers_and_labels() {
        assert_eq!(number(1.0), "1");
        assert_eq!(number(0.5), "0.5");
        assert_eq!(number(1e-9), "0.000000001");
        assert_eq!(number(f64::INFINITY), "+Inf");
        assert_eq!(number(f64::NEG_INFINITY), "-Inf");
        assert_eq!(number(f64::NAN), "NaN");
        assert_eq!(escape_label(r#"a\b"c"#), r#"a\\b\"c"#);
        assert_eq!(escape_label("x\ny"), "x\\ny");
        assert_eq!(escape_label("0.1.0-ünï"), "0.1.0-ünï");
    }

    #[test]
    fn extra_families() {
        let mut out = String::new();
        counter(&mut out, "port_exporter_scans_total", "Scans run.", 7);
        assert_eq!(
            out,
            "# HELP port_exporter_scans_total Scans run.\n\
# TYPE port_exporter_scans_total counter\nport_exporter_scans_total 7\n"
        );
    }
}
