//! The entry point: parse the command line, run one-shot or serve, and turn the outcome into
//! one line on stderr and an exit status (0 ok, 1 runtime failure, 2 usage).

use std::{
    io::{self, Write},
    path::Path,
    process::ExitCode,
};

use clap::error::ErrorKind;

use port_exporter::{cli, exposition, generate, scan, serve, textfile};

fn main() -> ExitCode {
    let args = match cli::parse() {
        Ok(args) => args,
        Err(err) => return usage_error(&err),
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("port_exporter: {err:#}");
            ExitCode::from(1)
        }
    }
}

/// Prints `--help`/`--version` as asked, or a usage error as one line.
fn usage_error(err: &clap::Error) -> ExitCode {
    match err.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = err.print();
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("port_exporter: {}", cli::one_line(err));
            ExitCode::from(2)
        }
    }
}

/// Prints a generated file, serves, or runs the one-shot job: scan, render,
/// then print or replace the file.
fn run(args: &cli::Args) -> anyhow::Result<()> {
    if let Some(kind) = args.generate {
        let mut out = io::stdout().lock();
        generate::generate(kind, &mut out)?;
        return Ok(out.flush()?);
    }
    if let Some(addr) = &args.serve {
        return serve::serve(
            addr,
            serve::Config {
                method: args.method,
                selected: args.selected_ports(),
                include_closed: args.include_closed,
                threads: args.thread_count(),
                verbose: args.verbose,
            },
        );
    }
    let output = args
        .output
        .as_deref()
        .filter(|path| *path != Path::new("-"));
    if let Some(path) = output {
        textfile::check_target(path)?;
        if !textfile::collector_reads(path) {
            eprintln!(
                "port_exporter: warning: {} does not end in .prom; \
                 node_exporter's textfile collector will ignore it",
                path.display()
            );
        }
    }
    let selected = args.selected_ports();
    let scan = scan::scan(args.method, &selected, args.thread_count())?;
    report_on_stderr(args, &scan, selected.len());
    let body = exposition::render_scan(&scan, &selected, args.include_closed);
    match output {
        Some(path) => textfile::write(path, body.as_bytes()),
        None => {
            let mut out = io::stdout().lock();
            out.write_all(body.as_bytes())?;
            Ok(out.flush()?)
        }
    }
}

/// The warnings every run gives, and what --verbose adds.
fn report_on_stderr(args: &cli::Args, scan: &scan::Scan, selected: usize) {
    if let Some(why) = scan.fallback.as_ref().filter(|_| args.verbose) {
        eprintln!("port_exporter: {why}");
    }
    if let Some(warning) = scan.skipped_warning() {
        eprintln!("port_exporter: {warning}");
    }
    if args.verbose {
        eprintln!(
            "port_exporter: method {} found {} open of {} selected ports in {:.3} ms",
            scan.method.name(),
            scan.open.len(),
            selected,
            scan.duration.as_secs_f64() * 1e3,
        );
    }
}

/// Whether the error is stdout closing early, as in `port_exporter | head`:
/// the reader has what it wanted, which is success, not a failure.
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    })
}
