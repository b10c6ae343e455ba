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

use std::{
    borrow::Cow,
    io::{self, Write},
};

use crate::{
    labels::{Address, Key, Label, Labels, Order, Scope},
    ports::PortSet,
    scan::{Listener, Protocol, Scan, Sockets},
};

/// The metric this tool exists for.
pub const OPEN_PORTS: &str = "instance_open_ports";

const OPEN_PORTS_HELP: &str = "Whether a TCP socket listens on this port, on any local address and \
either family: 1 open, 0 closed (closed ports are listed only with --include-closed).";

/// The HELP text when UDP is scanned or labels are chosen.
const OPEN_PORTS_HELP_LABELLED: &str = "Whether a socket listens on this port (TCP in LISTEN \
state, UDP bound and not connected), with the labels chosen by --labels: 1 open, 0 closed \
(closed ports are listed only with --include-closed).";

/// The HELP text with `--netns all`.
const OPEN_PORTS_HELP_NETNS: &str = "Whether a socket listens on this port (TCP in LISTEN \
state, UDP bound and not connected) in the network namespace of the netns label, with the labels \
chosen by --labels: 1 open, 0 closed (closed ports are listed only with --include-closed).";

/// The HELP texts of the other families, the server's counters included.
const HELP: &[(&str, &str)] = &[
    (
        "port_exporter_scan_duration_seconds",
        "How long the port scan took, in seconds.",
    ),
    (
        "port_exporter_last_scan_timestamp_seconds",
        "When the last successful port scan started, in seconds since the Unix epoch.",
    ),
    (
        "port_exporter_scan_skipped_ports",
        "Selected ports the scan skipped (the bind method may not bind them without \
privilege); they are never reported open.",
    ),
    (
        "port_exporter_unattributed_listeners",
        "Listeners whose process could not be found (process label empty): held by \
processes of other users without the privilege to read them, or by no visible process.",
    ),
    (
        "port_exporter_netns_unscanned",
        "Network namespaces that exist but could not be opened or entered (--netns all): \
their listeners are missing from this exposition.",
    ),
    (
        "port_exporter_build_info",
        "A metric with a constant 1 value, labeled by the version and the scan method used.",
    ),
    (
        "port_exporter_scans_total",
        "Port scans run since the server started.",
    ),
    (
        "port_exporter_scan_errors_total",
        "Port scans that failed since the server started.",
    ),
];

/// The HELP text of `name` in [`HELP`].
fn help(name: &str) -> &'static str {
    let found = HELP.iter().find(|(family, _)| *family == name);
    found.expect("every family has a HELP text").1
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

/// Writes the exposition of `scan` shown as `shown`. Without labels the
/// output is the original one, byte for byte.
pub fn write_scan(scan: &Scan, shown: Shown, out: &mut impl Write) -> io::Result<()> {
    let labels = shown.labels;
    if labels.need_sockets() && scan.sockets.is_none() {
        return Err(io::Error::other(
            "the scan did not learn the sockets these labels need",
        ));
    }
    // Without labels, one sample per port: the open and selected sets
    // say all, whatever sockets the scan learnt.
    let order = scan
        .sockets
        .as_ref()
        .filter(|_| !labels.is_empty())
        .map(Order::new);
    let mut samples = Samples {
        out,
        labels,
        closed: closed_samples(scan, shown, order.as_ref()).peekable(),
        namespaces: scan.sockets.as_ref().map_or(&[], |s| &s.namespaces[..]),
    };
    let open_help = if labels.has(Label::Netns) {
        OPEN_PORTS_HELP_NETNS
    } else if labels.is_empty() {
        OPEN_PORTS_HELP
    } else {
        OPEN_PORTS_HELP_LABELLED
    };
    header(samples.out, OPEN_PORTS, open_help, "gauge")?;
    match (&scan.sockets, &order) {
        (Some(sockets), Some(order)) => {
            let listeners = &sockets.listeners;
            let mut sorted: Vec<u32> = (0..listeners.len() as u32).collect();
            sorted.sort_unstable_by_key(|&i| order.key(&listeners[i as usize], labels));
            let mut last: Option<Key> = None;
            for i in sorted {
                let listener = &listeners[i as usize];
                let key = order.key(listener, labels);
                if last != Some(key) {
                    last = Some(key);
                    samples.open(key, listener.protocol, Some((listener, sockets)))?;
                }
            }
        }
        _ => {
            let mut open: Vec<(u16, Protocol)> = scan
                .open
                .iter()
                .map(|p| (p, Protocol::Tcp))
                .chain(scan.open_udp.iter().map(|p| (p, Protocol::Udp)))
                .collect();
            open.sort_unstable();
            for (port, protocol) in open {
                samples.open(closed_key(port, protocol, labels, None), protocol, None)?;
            }
        }
    }
    samples.closed_before(None)?;
    drop(samples);
    // The families about the scan itself; a clock before 1970 is not worth
    // failing a scrape over.
    let duration = scan.duration.as_secs_f64();
    let started = scan.started.duration_since(std::time::UNIX_EPOCH);
    let started = started.map_or(0.0, |since| since.as_secs_f64());
    let skipped = scan.skipped.len() as f64;
    write_gauge(out, "port_exporter_scan_duration_seconds", duration)?;
    write_gauge(out, "port_exporter_last_scan_timestamp_seconds", started)?;
    write_gauge(out, "port_exporter_scan_skipped_ports", skipped)?;
    if labels.has(Label::Process) {
        let processes = scan.sockets.as_ref().and_then(|s| s.processes.as_ref());
        let count = processes.map_or(0, |p| p.unattributed) as f64;
        write_gauge(out, "port_exporter_unattributed_listeners", count)?;
    }
    if labels.has(Label::Netns) {
        let count = scan.unscanned.len() as f64;
        write_gauge(out, "port_exporter_netns_unscanned", count)?;
    }
    let info = "port_exporter_build_info";
    header(out, info, help(info), "gauge")?;
    writeln!(
        out,
        "port_exporter_build_info{{method=\"{}\",version=\"{}\"}} 1",
        escape_label(scan.method.name()),
        escape_label(env!("CARGO_PKG_VERSION")),
    )
}

/// The key of a sample with no listener behind it (a closed port, or an
/// open one when only ports were scanned): the port, and the protocol and
/// namespace rank if those labels are shown.
fn closed_key(port: u16, protocol: Protocol, labels: Labels, netns: Option<u32>) -> Key {
    Key {
        port,
        protocol: labels.has(Label::Protocol).then_some(protocol),
        address: None,
        scope: None,
        user: None,
        process: None,
        netns: netns.filter(|_| labels.has(Label::Netns)),
    }
}

/// The closed samples of a labelled exposition: each selected port that
/// is neither open nor skipped, per protocol, and with `--netns all` per
/// namespace scanned; each with its protocol and namespace. Made one at a
/// time, in sample order (port, protocol, namespace), never all at once:
/// an explicit `--ports 1-65535` makes hundreds of thousands.
fn closed_samples<'a>(
    scan: &'a Scan,
    shown: Shown<'a>,
    order: Option<&Order>,
) -> ClosedSamples<'a> {
    let labels = shown.labels;
    let Some(selected) = shown.closed_of else {
        return Box::new(std::iter::empty());
    };
    let mut namespaces = vec![(0, 0)];
    let mut open = Open::Sets(&scan.open, &scan.open_udp);
    if let (Some(sockets), Some(order), true) = (&scan.sockets, order, labels.has(Label::Netns)) {
        let mut listening: Vec<(u32, Protocol, u16)> = sockets
            .listeners
            .iter()
            .map(|l| (l.netns, l.protocol, l.port))
            .collect();
        listening.sort_unstable();
        listening.dedup();
        open = Open::PerNamespace(listening);
        namespaces = (0..sockets.namespaces.len() as u32)
            .map(|netns| (order.namespace_rank(netns), netns))
            .collect();
        namespaces.sort_unstable();
    }
    // (protocol, namespace rank, namespace) in sample order, for each port.
    let slots: Vec<(Protocol, u32, u32)> = scan
        .protocols
        .iter()
        .flat_map(|protocol| {
            namespaces
                .iter()
                .map(move |&(rank, netns)| (protocol, rank, netns))
        })
        .collect();
    let ports = selected.iter().filter(|p| !scan.skipped.contains(*p));
    let per_port = slots.len();
    Box::new(
        ports
            .flat_map(move |port| (0..per_port).map(move |i| (port, i)))
            .filter_map(move |(port, i)| {
                let (protocol, rank, netns) = slots[i];
                let key = closed_key(port, protocol, labels, Some(rank));
                (!open.contains(netns, protocol, port)).then_some((key, protocol, netns))
            }),
    )
}

/// The closed samples: (key, protocol, namespace index).
type ClosedSamples<'a> = Box<dyn Iterator<Item = (Key, Protocol, u32)> + 'a>;

/// What is open, to find the closed ports.
enum Open<'a> {
    /// The open TCP and UDP ports of the one namespace scanned.
    Sets(&'a PortSet, &'a PortSet),
    /// (namespace, protocol, port) of every listener, sorted.
    PerNamespace(Vec<(u32, Protocol, u16)>),
}

impl Open<'_> {
    fn contains(&self, netns: u32, protocol: Protocol, port: u16) -> bool {
        match self {
            Open::Sets(tcp, udp) => match protocol {
                Protocol::Tcp => tcp.contains(port),
                Protocol::Udp => udp.contains(port),
            },
            Open::PerNamespace(open) => open.binary_search(&(netns, protocol, port)).is_ok(),
        }
    }
}

/// The samples of a labelled exposition, open ones given in order and
/// closed ones merged in.
struct Samples<'a, W: Write> {
    out: &'a mut W,
    labels: Labels,
    closed: std::iter::Peekable<ClosedSamples<'a>>,
    /// The label of each namespace, by index.
    namespaces: &'a [String],
}

impl<W: Write> Samples<'_, W> {
    /// Writes an open sample of key `key`, after the closed ones that sort
    /// before it.
    fn open(
        &mut self,
        key: Key,
        protocol: Protocol,
        listener: Option<(&Listener, &Sockets)>,
    ) -> io::Result<()> {
        self.closed_before(Some(key))?;
        let netns = listener.map_or(0, |(l, _)| l.netns);
        self.sample(key.port, protocol, listener, netns, 1)
    }

    /// Writes the closed samples that sort before `before` (all: `None`).
    fn closed_before(&mut self, before: Option<Key>) -> io::Result<()> {
        while let Some(&(key, protocol, netns)) = self.closed.peek() {
            if before.is_some_and(|b| key >= b) {
                break;
            }
            self.closed.next();
            self.sample(key.port, protocol, None, netns, 0)?;
        }
        Ok(())
    }

    /// One sample: `port`, `protocol` if chosen, the chosen labels of
    /// `listener` (none for a closed port), and namespace `netns`'s label
    /// with `--netns all`.
    fn sample(
        &mut self,
        port: u16,
        protocol: Protocol,
        listener: Option<(&Listener, &Sockets)>,
        netns: u32,
        value: u8,
    ) -> io::Result<()> {
        let out = &mut *self.out;
        if self.labels.is_empty() {
            // The common case, in one write.
            return writeln!(out, "{OPEN_PORTS}{{port=\"{port}\"}} {value}");
        }
        write!(out, "{OPEN_PORTS}{{port=\"{port}\"")?;
        for label in self.labels.iter() {
            let text: Cow<str> = match (label, listener) {
                (Label::Protocol, _) => protocol.name().into(),
                (Label::Address, Some((listener, sockets))) => {
                    Address::of(listener, sockets).to_string().into()
                }
                (Label::Scope, Some((listener, _))) => Scope::of(listener.address).name().into(),
                (Label::User, Some((listener, sockets))) => sockets
                    .user(listener.uid)
                    .map_or_else(|| listener.uid.to_string().into(), Cow::from),
                (Label::Process, Some((listener, sockets))) => {
                    sockets.process(listener.pid).unwrap_or("").into()
                }
                (Label::Netns, _) => self
                    .namespaces
                    .get(netns as usize)
                    .map_or("", String::as_str)
                    .into(),
                // A closed port has no address, scope, user or process.
                (_, None) => continue,
            };
            write!(out, ",{}=\"{}\"", label.name(), escape_label(&text))?;
        }
        writeln!(out, "}} {value}")
    }
}

/// Appends a family of one unlabeled counter sample.
pub fn counter(out: &mut String, name: &str, value: u64) {
    let mut bytes = Vec::new();
    let _ = header(&mut bytes, name, help(name), "counter");
    let _ = writeln!(bytes, "{name} {value}");
    out.push_str(std::str::from_utf8(&bytes).expect("UTF-8"));
}

/// Writes a family of one unlabeled gauge sample.
fn write_gauge(out: &mut impl Write, name: &str, value: f64) -> io::Result<()> {
    header(out, name, help(name), "gauge")?;
    // The values are finite, which Rust writes as Go's ParseFloat reads.
    writeln!(out, "{name} {value}")
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

/// Escapes a label value: backslash, double quote and line feed.
fn escape_label(value: &str) -> Cow<'_, str> {
    if value.contains(['\\', '"', '\n']) {
        let value = value.replace('\\', "\\\\").replace('"', "\\\"");
        value.replace('\n', "\\n").into()
    } else {
        value.into()
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

    const META: &str = concat!(
        "\
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
port_exporter_build_info{method=\"netlink\",version=\"",
        env!("CARGO_PKG_VERSION"),
        "\"} 1\n"
    );

    /// A TCP scan finding `open`, without sockets.
    fn tcp_scan(open: PortSet) -> Scan {
        use crate::scan::{Method, Protocols};
        Scan {
            open,
            open_udp: PortSet::new(),
            sockets: None,
            protocols: Protocols::TCP,
            skipped: PortSet::new(),
            method: Method::Netlink,
            started: std::time::UNIX_EPOCH + std::time::Duration::from_secs_f64(1764302673.25),
            duration: std::time::Duration::from_nanos(35_000),
            fallback: None,
            unscanned: Vec::new(),
        }
    }

    /// The exposition without labels of a scan finding `open`, with the
    /// closed ports of `closed_of`.
    fn render(open: PortSet, closed_of: Option<&PortSet>) -> String {
        let shown = Shown {
            labels: Labels::NONE,
            closed_of,
        };
        let mut out = Vec::new();
        write_scan(&tcp_scan(open), shown, &mut out).unwrap();
        String::from_utf8(out).unwrap()
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
        assert_eq!(render(open, None), expected);
    }

    #[test]
    fn golden_nothing_open() {
        let open = PortSet::new();
        assert_eq!(render(open, None), format!("{HEADER}{META}"));
    }

    #[test]
    fn golden_include_closed_merges_in_port_order() {
        let open = parse_list("22,8080").unwrap();
        let selected = parse_list("1,22,80,443,8080,65535").unwrap();
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
        assert_eq!(render(open, Some(&selected)), expected);
    }

    #[test]
    fn every_line_is_well_formed() {
        let open = PortSet::all();
        let text = render(open, None);
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
        assert_eq!(escape_label(r#"a\b"c"#), r#"a\\b\"c"#);
        assert_eq!(escape_label("x\ny"), "x\\ny");
        assert_eq!(escape_label("0.1.0-ünï"), "0.1.0-ünï");
    }

    #[test]
    fn extra_families() {
        let mut out = String::new();
        counter(&mut out, "port_exporter_scans_total", 7);
        assert_eq!(
            out,
            "# HELP port_exporter_scans_total Port scans run since the server started.\n\
# TYPE port_exporter_scans_total counter\nport_exporter_scans_total 7\n"
        );
    }
    /// A scan of three namespaces: host with 22 on two addresses, blue
    /// with 22 and 8080 (a name that needs escaping in a label), and an
    /// empty one.
    fn netns_scan() -> Scan {
        use crate::scan::{Sockets, Unscanned, owner::Processes};
        let listener = |port, address: &str, netns, pid| Listener {
            protocol: Protocol::Tcp,
            address: address.parse().unwrap(),
            interface: 0,
            port,
            uid: 0,
            inode: u32::from(port) + 1000 * netns,
            pid,
            netns,
        };
        let listeners = vec![
            listener(8080, "::", 1, 30),
            listener(22, "0.0.0.0", 0, 7),
            listener(22, "::", 0, 7),
            listener(22, "127.0.0.1", 1, 30),
        ];
        let mut open = PortSet::new();
        open.insert(22);
        open.insert(8080);
        Scan {
            sockets: Some(Sockets {
                listeners,
                interfaces: Vec::new(),
                users: Vec::new(),
                processes: Some(Processes {
                    names: vec![(7, "sshd".into()), (30, "nginx".into())],
                    unattributed: 0,
                    denied: 0,
                }),
                namespaces: vec!["host".into(), "b\"lue".into(), "empty".into()],
            }),
            unscanned: vec![Unscanned {
                name: "red".into(),
                why: "cannot enter it: Operation not permitted".into(),
            }],
            ..tcp_scan(open)
        }
    }

    fn netns_exposition(labels: &[Label], closed_of: Option<&PortSet>) -> String {
        let labels = labels
            .iter()
            .copied()
            .collect::<Labels>()
            .with(Label::Netns);
        let mut out = Vec::new();
        write_scan(&netns_scan(), Shown { labels, closed_of }, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let meta = text.find("# HELP port_exporter_scan_duration").unwrap();
        assert!(
            text.ends_with(
                "# HELP port_exporter_netns_unscanned Network namespaces that exist but could not be opened or entered (--netns all): their listeners are missing from this exposition.
# TYPE port_exporter_netns_unscanned gauge
port_exporter_netns_unscanned 1
# HELP port_exporter_build_info A metric with a constant 1 value, labeled by the version and the scan method used.
# TYPE port_exporter_build_info gauge
port_exporter_build_info{method=\"netlink\",version=\"0.1.0\"} 1
"
            ),
            "{text}"
        );
        text[..meta].to_string()
    }

    const NETNS_HEADER: &str = "\
# HELP instance_open_ports Whether a socket listens on this port (TCP in LISTEN state, UDP bound and not connected) in the network namespace of the netns label, with the labels chosen by --labels: 1 open, 0 closed (closed ports are listed only with --include-closed).
# TYPE instance_open_ports gauge
";

    #[test]
    fn golden_netns_one_sample_per_port_and_namespace() {
        assert_eq!(
            netns_exposition(&[], None),
            format!(
                "{NETNS_HEADER}\
instance_open_ports{{port=\"22\",netns=\"b\\\"lue\"}} 1
instance_open_ports{{port=\"22\",netns=\"host\"}} 1
instance_open_ports{{port=\"8080\",netns=\"b\\\"lue\"}} 1
"
            )
        );
    }

    #[test]
    fn golden_netns_labels_and_closed_ports_per_namespace() {
        let selected = parse_list("22,80,8080").unwrap();
        assert_eq!(
            netns_exposition(&[Label::Address, Label::Process], Some(&selected)),
            format!(
                "{NETNS_HEADER}\
instance_open_ports{{port=\"22\",netns=\"empty\"}} 0
instance_open_ports{{port=\"22\",address=\"0.0.0.0\",process=\"sshd\",netns=\"host\"}} 1
instance_open_ports{{port=\"22\",address=\"127.0.0.1\",process=\"nginx\",netns=\"b\\\"lue\"}} 1
instance_open_ports{{port=\"22\",address=\"::\",process=\"sshd\",netns=\"host\"}} 1
instance_open_ports{{port=\"80\",netns=\"b\\\"lue\"}} 0
instance_open_ports{{port=\"80\",netns=\"empty\"}} 0
instance_open_ports{{port=\"80\",netns=\"host\"}} 0
instance_open_ports{{port=\"8080\",netns=\"empty\"}} 0
instance_open_ports{{port=\"8080\",netns=\"host\"}} 0
instance_open_ports{{port=\"8080\",address=\"::\",process=\"nginx\",netns=\"b\\\"lue\"}} 1
"
            )
        );
    }
    #[test]
    fn golden_protocol_label_with_closed_ports() {
        let scan = Scan {
            open_udp: parse_list("53").unwrap(),
            protocols: crate::scan::Protocols {
                tcp: true,
                udp: true,
            },
            ..tcp_scan(parse_list("22").unwrap())
        };
        let selected = parse_list("22,53,80").unwrap();
        let shown = Shown {
            labels: Labels::NONE.with(Label::Protocol),
            closed_of: Some(&selected),
        };
        let mut out = Vec::new();
        write_scan(&scan, shown, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let samples: Vec<&str> = text.lines().filter(|l| l.starts_with(OPEN_PORTS)).collect();
        assert_eq!(
            samples,
            [
                "instance_open_ports{port=\"22\",protocol=\"tcp\"} 1",
                "instance_open_ports{port=\"22\",protocol=\"udp\"} 0",
                "instance_open_ports{port=\"53\",protocol=\"tcp\"} 0",
                "instance_open_ports{port=\"53\",protocol=\"udp\"} 1",
                "instance_open_ports{port=\"80\",protocol=\"tcp\"} 0",
                "instance_open_ports{port=\"80\",protocol=\"udp\"} 0",
            ]
        );
        assert!(!text.contains("netns"));
    }
}
