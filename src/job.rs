//! What a run does, whichever way it reports: the scan to make, how to
//! render it, and what to say about it on stderr. Built once from the
//! command line ([`crate::cli::Args::job`]) and used alike by one-shot runs
//! ([`Job::run_once`]: scan once, then print or replace FILE) and by every
//! scrape of the server.

use std::{
    collections::BTreeSet,
    io::{self, BufWriter, Write},
    path::Path,
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

use crate::{
    exposition::{self, Shown},
    labels::Labels,
    log::log,
    scan::{Plan, Scan, owner::Processes},
    textfile, views,
};

/// How a one-shot run prints its scan (`--format`); the doc comments are
/// the values' help.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// The Prometheus text format, for node_exporter or a scrape
    #[default]
    Prometheus,
    /// An aligned table of every listener, for people
    Table,
    /// A JSON array of every listener, for scripts (jq)
    Json,
}

/// The scan and its rendering.
#[derive(Debug)]
pub struct Job {
    /// What to scan.
    pub plan: Plan,
    /// `--include-closed`: write 0 for each selected port that is closed.
    pub include_closed: bool,
    /// `--verbose`.
    pub verbose: bool,
    /// `--labels` (with `protocol` added whenever UDP is scanned).
    pub labels: Labels,
    /// `--format`.
    pub format: Format,
}

impl Job {
    /// Scans once and writes the job's format to `output` (atomically), or
    /// to stdout when `output` is `None`.
    pub fn run_once(&self, output: Option<&Path>) -> anyhow::Result<()> {
        self.plan.check()?;
        if let Some(path) = output {
            textfile::check_target(path)?;
            if !textfile::collector_reads(path) {
                log!(
                    "warning: {} does not end in .prom; node_exporter's textfile collector will \
                     ignore it",
                    path.display()
                );
            }
        }
        let scan = self.plan.run()?;
        self.notices().scanned(&scan);
        if self.verbose {
            let namespaces = scan
                .sockets
                .as_ref()
                .filter(|s| !s.namespaces.is_empty())
                .map(|s| format!(" in {} network namespaces", s.namespaces.len()))
                .unwrap_or_default();
            log!(
                "method {} found {} open of {} selected ports{namespaces} in {:.3} ms",
                scan.method.name(),
                scan.open.len() + scan.open_udp.len(),
                self.plan.selected.len(),
                scan.duration.as_secs_f64() * 1e3,
            );
        }
        // Streamed: 60,000 listeners make megabytes of text, never held whole.
        let Some(path) = output else {
            let mut out = BufWriter::with_capacity(32 * 1024, io::stdout().lock());
            self.write(&scan, &mut out)?;
            return Ok(out.flush()?);
        };
        let not_durable = textfile::write_with(path, &mut |mut out| self.write(&scan, &mut out))?;
        if let Some(why) = not_durable {
            log!("warning: {why}");
        }
        Ok(())
    }

    /// The exposition of `scan`, as the server answers it.
    pub fn render(&self, scan: &Scan) -> String {
        let mut out = Vec::new();
        // Writing to a Vec cannot fail; a scan without the detail the labels
        // need cannot happen, since the plan asks for it.
        let _ = exposition::write_scan(scan, self.shown(), &mut out);
        String::from_utf8(out).expect("the exposition is UTF-8")
    }

    /// Writes `scan` to `out` in the job's format, streaming.
    pub fn write(&self, scan: &Scan, out: &mut impl Write) -> io::Result<()> {
        match (self.format, &scan.sockets) {
            (Format::Prometheus, _) => exposition::write_scan(scan, self.shown(), out),
            (Format::Table, Some(sockets)) => views::write_table(sockets, out),
            (Format::Json, Some(sockets)) => views::write_json(sockets, out),
            (_, None) => Err(io::Error::other(
                "the scan did not learn the sockets this format needs",
            )),
        }
    }

    /// How the exposition shows a scan.
    fn shown(&self) -> Shown<'_> {
        Shown {
            labels: self.labels,
            closed_of: self.include_closed.then_some(&self.plan.selected),
        }
    }

    /// A fresh record of what has been said about this job's scans.
    pub fn notices(&self) -> Notices {
        Notices {
            verbose: self.verbose,
            format: self.format,
            ..Notices::default()
        }
    }
}

/// What a scan has to tell the user on stderr, each said at most once per
/// run or server. Only ports missing from the answer (skipped by bind,
/// namespaces not scanned) are warnings; a steady state such as listeners
/// without a process waits for `--verbose`, so a scheduled run is silent.
#[derive(Debug, Default)]
pub struct Notices {
    verbose: bool,
    /// How the listeners are shown, which the wording follows.
    format: Format,
    fallback: AtomicBool,
    skipped: AtomicBool,
    unattributed: AtomicBool,
    /// The namespaces already named as not scanned.
    unscanned: Mutex<BTreeSet<String>>,
}

impl Notices {
    /// Says what `scan` calls for and was not said yet.
    pub fn scanned(&self, scan: &Scan) {
        // Only with --verbose: procfs is exact too, just slower.
        if let Some(why) = &scan.fallback
            && self.verbose
            && !self.fallback.swap(true, Ordering::Relaxed)
        {
            log!("{why}");
        }
        if let Some(warning) = scan.skipped_warning()
            && !self.skipped.swap(true, Ordering::Relaxed)
        {
            log!("{warning}");
        }
        if self.verbose
            && let Some(note) = scan
                .sockets
                .as_ref()
                .and_then(|s| s.processes.as_ref())
                .and_then(|p| unattributed(p, self.format))
            && !self.unattributed.swap(true, Ordering::Relaxed)
        {
            log!("{note}");
        }
        if !scan.unscanned.is_empty() {
            let mut said = self.unscanned.lock().unwrap_or_else(|e| e.into_inner());
            let new: Vec<String> = scan
                .unscanned
                .iter()
                .filter(|u| said.insert(u.name.clone()))
                .map(|u| format!("network namespace {} ({})", u.name, u.why))
                .collect();
            if !new.is_empty() {
                log!(
                    "warning: not scanned, so their listeners are not reported: {}",
                    new.join("; ")
                );
            }
        }
    }
}

/// Why some listeners have no process and what would find it, in the words
/// of the view that shows them (`process=""`, `-` in the table, `null` in
/// JSON); `None` when every listener has its process.
fn unattributed(processes: &Processes, format: Format) -> Option<String> {
    let n = processes.unattributed;
    if n == 0 {
        return None;
    }
    let it = if n == 1 { "it" } else { "them" };
    let shown = match format {
        Format::Prometheus => "process=\"\"",
        Format::Table => "no process (PROCESS -)",
        Format::Json => "\"process\":null",
    };
    let what = match n {
        1 => format!("1 listener has {shown}"),
        n => format!("{n} listeners have {shown}"),
    };
    let why = match processes.denied {
        0 => format!(
            "no process visible here holds {it} (a socket of the kernel, of a process in \
             another PID namespace or hidden by /proc's hidepid, of one that just exited, or \
             held only by a thread with a descriptor table of its own)"
        ),
        1 => "the descriptors of 1 process of another user could not be read; run as root \
              (or grant CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH) to attribute it"
            .to_string(),
        denied => format!(
            "the descriptors of {denied} processes of other users could not be read; run as \
             root (or grant CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH) to attribute {it}"
        ),
    };
    Some(format!("{what}: {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(unattributed: usize, denied: usize, format: Format) -> String {
        let processes = Processes {
            names: Vec::new(),
            unattributed,
            denied,
        };
        super::unattributed(&processes, format).unwrap()
    }

    #[test]
    fn the_unattributed_note_speaks_each_view_and_counts_right() {
        assert!(super::unattributed(&Processes::default(), Format::Prometheus).is_none());
        assert_eq!(
            note(1, 0, Format::Prometheus),
            "1 listener has process=\"\": no process visible here holds it (a socket of the \
             kernel, of a process in another PID namespace or hidden by /proc's hidepid, of one \
             that just exited, or held only by a thread with a descriptor table of its own)"
        );
        assert!(note(2, 0, Format::Table).starts_with("2 listeners have no process (PROCESS -): "));
        assert!(note(2, 0, Format::Table).contains(" holds them ("));
        assert!(note(1, 1, Format::Json).starts_with("1 listener has \"process\":null: "));
        assert!(note(1, 1, Format::Json).contains("of 1 process of another user could not"));
        assert!(note(1, 1, Format::Json).ends_with("to attribute it"));
        assert!(note(3, 7, Format::Prometheus).contains("of 7 processes of other users could not"));
        assert!(note(3, 7, Format::Prometheus).ends_with("to attribute them"));
    }
}
