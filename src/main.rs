//! The entry point: parse the command line, run one-shot or serve, and turn
//! the outcome into one line on stderr and an exit status (0 ok, 1 runtime
//! failure, 2 usage).

use std::{
    io::{self, Write},
    path::Path,
    process::ExitCode,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use anyhow::bail;
use clap::error::ErrorKind;

use port_exporter::{cli, generate, log, oneshot, serve};

fn main() -> ExitCode {
    let args = match cli::parse() {
        Ok(args) => args,
        Err(err) => return usage_error(&err),
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            log::line(format_args!("{err:#}"));
            log::flush(Duration::from_millis(200));
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

/// Prints a generated file, serves, or runs the one-shot job.
fn run(args: &cli::Args) -> anyhow::Result<()> {
    let output = args
        .output
        .as_deref()
        .filter(|path| *path != Path::new("-"));
    if args.serve.is_none() && output.is_none() {
        check_stdout()?;
    }
    if let Some(kind) = args.generate {
        let mut out = io::stdout().lock();
        generate::generate(kind, &mut out)?;
        return Ok(out.flush()?);
    }
    if let Some(addr) = &args.serve {
        return serve::serve(addr.as_ref(), args.web_config_file.as_deref(), args.job());
    }
    oneshot::run(&args.job(), output)
}

/// Fails when stdout was not open at all when the process started (`>&-`):
/// Rust's runtime then opens /dev/null in its place, so what is written
/// would be silently discarded and the run would pass for a success that
/// printed nothing. coreutils says "Bad file descriptor" there; so do we.
fn check_stdout() -> anyhow::Result<()> {
    if STDOUT_CLOSED_AT_START.load(Ordering::Relaxed) {
        bail!(
            "cannot write to stdout: {}",
            io::Error::from_raw_os_error(libc::EBADF)
        );
    }
    Ok(())
}

/// Whether descriptor 1 was closed when the process started.
static STDOUT_CLOSED_AT_START: AtomicBool = AtomicBool::new(false);

/// Looks at descriptor 1 before Rust's runtime replaces a closed one with
/// /dev/null: constructors in `.init_array` run before `main` and before
/// the runtime's own start-up.
#[used]
#[allow(unsafe_code)]
// SAFETY: the function is a valid `extern "C" fn()` that the C runtime may
// call before main; it only calls fcntl on descriptor 1 and stores a flag.
#[unsafe(link_section = ".init_array")]
static CHECK_STDOUT_AT_START: extern "C" fn() = {
    extern "C" fn check() {
        #[allow(unsafe_code)]
        // SAFETY: F_GETFD reads the flags of a descriptor number; it has no
        // memory effects, and a closed descriptor makes it fail with EBADF.
        let closed = unsafe { libc::fcntl(1, libc::F_GETFD) } == -1;
        STDOUT_CLOSED_AT_START.store(closed, Ordering::Relaxed);
    }
    check
};

/// Whether the error is stdout closing early, as in `port_exporter | head`:
/// the reader has what it wanted, which is success, not a failure.
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    })
}
