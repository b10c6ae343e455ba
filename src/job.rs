//! What a run does, whichever way it reports: the scan to make, how to
//! render it, and what to say about it on stderr. Built once from the
//! command line ([`crate::cli::Args::job`]) and used alike by one-shot runs
//! and by every scrape of the server.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::{
    exposition,
    log::log,
    scan::{Plan, Scan},
};

/// The scan and its rendering.
#[derive(Debug)]
pub struct Job {
    /// What to scan.
    pub plan: Plan,
    /// `--include-closed`: write 0 for each selected port that is closed.
    pub include_closed: bool,
    /// `--verbose`.
    pub verbose: bool,
}

impl Job {
    /// The exposition of `scan`.
    pub fn render(&self, scan: &Scan) -> String {
        exposition::render_scan(scan, &self.plan.selected, self.include_closed)
    }

    /// A fresh record of what has been said about this job's scans.
    pub fn notices(&self) -> Notices {
        Notices {
            verbose: self.verbose,
            fallback: AtomicBool::new(false),
            skipped: AtomicBool::new(false),
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
    }
}
