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

use std::fmt::Write;

use crate::{ports::PortSet, scan::Scan};

/// The metric this tool exists for.
pub const OPEN_PORTS: &str = "instance_open_ports";

const OPEN_PORTS_HELP: &str = "Whether a TCP socket listens on this port, on any local address and \
either family: 1 open, 0 closed (closed ports are listed only with --include-closed).";

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

/// Renders a scan of the `selected` ports; with `include_closed`, each
/// selected port that is neither open nor unchecked is written as 0.
pub fn render_scan(scan: &Scan, selected: &PortSet, include_closed: bool) -> String {
    let closed = include_closed.then(|| {
        let mut closed = selected.clone();
        closed.subtract(&scan.open);
        closed.subtract(&scan.skipped);
        closed
    });
    render(&Report {
        open: &scan.open,
        closed: closed.as_ref(),
        skipped: scan.skipped.len(),
        duration_seconds: scan.duration.as_secs_f64(),
        // A clock before 1970 is not worth failing a scrape over.
        timestamp_seconds: scan
            .started
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |since| since.as_secs_f64()),
        method: scan.method.name(),
        version: env!("CARGO_PKG_VERSION"),
    })
}

/// Renders `report` as a complete exposition.
pub fn render(report: &Report) -> String {
    let closed_len = report.closed.map_or(0, PortSet::len);
    let mut out = String::with_capacity(600 + 40 * (report.open.len() + closed_len));
    header(&mut out, OPEN_PORTS, OPEN_PORTS_HELP, "gauge");
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
        let _ = writeln!(out, "{OPEN_PORTS}{{port=\"{port}\"}} {value}");
    }
    gauge(
        &mut out,
        "port_exporter_scan_duration_seconds",
        "How long the port scan took, in seconds.",
        report.duration_seconds,
    );
    gauge(
        &mut out,
        "port_exporter_last_scan_timestamp_seconds",
        "When the last successful port scan started, in seconds since the Unix epoch.",
        report.timestamp_seconds,
    );
    gauge(
        &mut out,
        "port_exporter_scan_skipped_ports",
        "Selected ports the scan skipped (the bind method may not bind them without \
privilege); they are never reported open.",
        report.skipped as f64,
    );
    header(
        &mut out,
        "port_exporter_build_info",
        "A metric with a constant 1 value, labeled by the version and the scan method used.",
        "gauge",
    );
    let _ = writeln!(
        out,
        "port_exporter_build_info{{method=\"{}\",version=\"{}\"}} 1",
        escape_label(report.method),
        escape_label(report.version),
    );
    out
}

/// Appends a family of one unlabeled gauge sample.
pub fn gauge(out: &mut String, name: &str, help: &str, value: f64) {
    header(out, name, help, "gauge");
    let _ = writeln!(out, "{name} {}", number(value));
}

/// Appends a family of one unlabeled counter sample.
pub fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    header(out, name, help, "counter");
    let _ = writeln!(out, "{name} {value}");
}

/// Appends the HELP and TYPE lines of a family.
fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    debug_assert!(
        !help.contains(['\\', '\n', '"']),
        "HELP text must need no escaping"
    );
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
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
