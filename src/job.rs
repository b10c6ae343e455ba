//! What a run does, whichever way it reports: the scan to make, how to
//! render it, and what to say about it on stderr. Built once from the
//! command line ([`crate::cli::Args::job`]) and used alike by one-shot runs
//! and by every scrape of the server.

use std::{
    collections::BTreeSet,
    io::{self, Write},
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

use crate::{
    exposition::{self, Shown},
    labels::Labels,
    log::log,
    scan::{Plan, Scan},
    views,
};

/// How a one-shot run prints its scan (`--format`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// The Prometheus text exposition.
    #[default]
    Prometheus,
    /// An aligned table for people, one row per listener.
    Table,
    /// A JSON array for scripts, one object per listener.
    Json,
}

impl Format {
    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Format::Prometheus => "prometheus",
            Format::Table => "table",
            Format::Json => "json",
        }
    }
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
            fallback: AtomicBool::new(false),
            skipped: AtomicBool::new(false),
            unattributed: AtomicBool::new(false),
            unscanned: Mutex::new(BTreeSet::new()),
        }
    }
}

/// What a scan has to tell the user on stderr, each said at most once in
/// the life of a `Notices`: once per one-shot run, once per server. The
/// answer stays exact either way, and the metrics keep showing the state.
#[derive(Debug)]
pub struct Notices {
    verbose: bool,
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
        if let Some(warning) = scan
            .sockets
            .as_ref()
            .and_then(|s| s.processes.as_ref())
            .and_then(|p| p.warning())
            && !self.unattributed.swap(true, Ordering::Relaxed)
        {
            log!("{warning}");
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
