//! The entry point: parse the command line, run, and turn the outcome into
//! one line on stderr and an exit status (0 ok, 1 runtime failure, 2 usage).
//!
//! Rust's runtime ignores SIGPIPE, opens /dev/null on closed descriptors
//! 0-2 and exits 101 on a panic; what it does not give is an error for a
//! closed stdout (`>&-`), which [`stdout_was_closed`] tells apart.

use std::{
    io::{self, Write},
    os::fd::AsFd,
    path::Path,
    process::ExitCode,
    time::Duration,
};

use anyhow::bail;
use clap::error::ErrorKind;
use nix::{
    fcntl::{FcntlArg, OFlag, fcntl},
    sys::stat::{SFlag, fstat, major, minor},
};

use port_exporter::{cli, generate, log, oneshot, serve};

fn main() -> ExitCode {
    ExitCode::from(exit_code(stdout_was_closed()))
}

/// Whether the program was started with descriptor 1 closed (`>&-`): then
/// std's `sanitize_standard_fds` has put /dev/null there read-write, where
/// a shell's `>/dev/null` opens it write-only. (`1<>/dev/null` and
/// daemon(3) look the same; their output would be thrown away anyway.)
fn stdout_was_closed() -> bool {
    let stdout = io::stdout();
    let fd = stdout.as_fd();
    let is_dev_null = fstat(fd).is_ok_and(|st| {
        st.st_mode & SFlag::S_IFMT.bits() == SFlag::S_IFCHR.bits()
            && major(st.st_rdev) == 1
            && minor(st.st_rdev) == 3
    });
    is_dev_null
        && fcntl(fd, FcntlArg::F_GETFL)
            .is_ok_and(|flags| OFlag::from_bits_truncate(flags) & OFlag::O_ACCMODE == OFlag::O_RDWR)
}

/// Runs the program and returns its exit status.
fn exit_code(stdout_closed: bool) -> u8 {
    let args = match cli::parse() {
        Ok(args) => args,
        Err(err) => return usage_error(&err),
    };
    match run(&args, stdout_closed) {
        Ok(()) => 0,
        Err(err) if is_broken_pipe(&err) => 0,
        Err(err) => {
            log::line(format_args!("{err:#}"));
            log::flush(Duration::from_millis(200));
            1
        }
    }
}

/// Prints `--help`/`--version` as asked, or a usage error as one line.
fn usage_error(err: &clap::Error) -> u8 {
    match err.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = err.print();
            0
        }
        _ => {
            eprintln!("port_exporter: {}", cli::one_line(err));
            2
        }
    }
}

/// Prints a generated file, serves, or runs the one-shot job.
fn run(args: &cli::Args, stdout_closed: bool) -> anyhow::Result<()> {
    let output = args
        .output
        .as_deref()
        .filter(|path| *path != Path::new("-"));
    // As coreutils does, rather than pass for a success that printed nothing.
    if stdout_closed && args.serve.is_none() && output.is_none() {
        bail!(
            "cannot write to stdout: {}",
            io::Error::from_raw_os_error(libc::EBADF)
        );
    }
    if let Some(kind) = args.generate {
        let mut out = io::stdout().lock();
        generate::generate(kind, &mut out)?;
        return Ok(out.flush()?);
    }
    if let Some(addr) = &args.serve {
        return serve::serve(addr.as_ref(), args.web_config_file.as_deref(), args.job());
    }
    if let Some(interval) = args.watch {
        return port_exporter::watch::run(&args.job(), interval);
    }
    oneshot::run(&args.job(), output)
}

/// Whether stdout closed early, as in `port_exporter | head`: a success.
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    })
}
