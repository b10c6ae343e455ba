//! Reading what the binary prints: samples, metric values, a strict format
//! check, and promtool's verdict.

use std::{
    collections::{BTreeMap, BTreeSet},
    process::{Command, Stdio},
};

/// The `instance_open_ports` samples of an exposition without extra labels,
/// port to value. Fails on a port that appears twice.
#[track_caller]
pub fn samples(text: &str) -> BTreeMap<u16, u8> {
    let mut found = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| l.starts_with("instance_open_ports{"))
    {
        let rest = line
            .strip_prefix("instance_open_ports{port=\"")
            .expect(line);
        let (port, value) = rest.split_once("\"} ").expect(line);
        let port: u16 = port.parse().expect(line);
        let value: u8 = value.parse().expect(line);
        assert!(
            found.insert(port, value).is_none(),
            "port {port} appears twice"
        );
    }
    found
}

/// The ports an exposition reports open (value 1).
#[track_caller]
pub fn open_ports(text: &str) -> BTreeSet<u16> {
    samples(text)
        .into_iter()
        .filter(|&(_, v)| v == 1)
        .map(|(p, _)| p)
        .collect()
}

/// The instance_open_ports lines of an exposition, in order.
pub fn port_lines(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| l.starts_with("instance_open_ports"))
        .collect()
}

/// The value of the sample `series` (a name, or a name with its labels as
/// written, e.g. `port_exporter_build_info{method="netlink",version="1"}`),
/// or `None` when the text has no such sample.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        Some(
            value
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        )
    })
}

/// The value of the sample `series`, which must be there.
#[track_caller]
pub fn value_of(text: &str, series: &str) -> f64 {
    metric(text, series).unwrap_or_else(|| panic!("no {series} in:\n{text}"))
}

/// Feeds `text` to `promtool check metrics` and returns (status, output).
pub fn promtool_check(text: &str) -> (bool, String) {
    use std::io::Write;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot run promtool");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

/// promtool accepts `text` without a single lint.
#[track_caller]
pub fn assert_promtool_clean(text: &str, what: &str) {
    let (ok, said) = promtool_check(text);
    assert!(ok && said.is_empty(), "promtool on {what}: {said}");
}

/// A strict reader of our exposition, for checks repeated too often to
/// spawn promtool each time: every line a HELP, a TYPE or a sample whose
/// value parses, families contiguous, final line feed. Returns the number
/// of instance_open_ports samples, or why the text is not a complete file.
pub fn check_exposition(text: &str) -> Result<usize, String> {
    if !text.ends_with('\n') {
        return Err("no final line feed".into());
    }
    if !text.starts_with("# HELP instance_open_ports ") {
        return Err("does not start with the HELP line".into());
    }
    if !text.contains("\nport_exporter_build_info{") {
        return Err("no build_info sample (cut short?)".into());
    }
    let mut families: Vec<&str> = Vec::new();
    let mut ports = 0;
    for line in text.lines() {
        if let Some(rest) = line
            .strip_prefix("# HELP ")
            .or_else(|| line.strip_prefix("# TYPE "))
        {
            let name = rest.split(' ').next().unwrap();
            if families.last() != Some(&name) {
                if families.contains(&name) {
                    return Err(format!("family {name} is split"));
                }
                families.push(name);
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').ok_or(format!("bad line {line:?}"))?;
        value
            .parse::<f64>()
            .map_err(|_| format!("bad value in {line:?}"))?;
        let name = series.split('{').next().unwrap();
        if families.last() != Some(&name) {
            return Err(format!("sample {line:?} outside its family"));
        }
        if name == "instance_open_ports" {
            ports += 1;
        }
    }
    Ok(ports)
}
