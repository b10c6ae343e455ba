//! The main job: scan once, then print the exposition or replace FILE.

use std::{
    io::{self, BufWriter, Write},
    path::Path,
};

use crate::{job::Job, log::log, textfile};

/// Scans once and writes the exposition to `output` (atomically), or to
/// stdout when `output` is `None`.
pub fn run(job: &Job, output: Option<&Path>) -> anyhow::Result<()> {
    job.plan.check()?;
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
    let scan = job.plan.run()?;
    job.notices().scanned(&scan);
    if job.verbose {
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
            job.plan.selected.len(),
            scan.duration.as_secs_f64() * 1e3,
        );
    }
    // Streamed: 60,000 listeners make megabytes of text, never held whole.
    let Some(path) = output else {
        let mut out = BufWriter::with_capacity(32 * 1024, io::stdout().lock());
        job.write(&scan, &mut out)?;
        return Ok(out.flush()?);
    };
    let not_durable = textfile::write_with(path, &mut |mut out| job.write(&scan, &mut out))?;
    if let Some(why) = not_durable {
        log!("warning: {why}");
    }
    Ok(())
}
