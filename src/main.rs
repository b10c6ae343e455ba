//! The entry point: parse the command line, run, and turn the outcome into
//! one line on stderr and an exit status (0 ok, 1 runtime failure, 2 usage).
//!
//! Rust's runtime ignores SIGPIPE, opens /dev/null on closed descriptors
//! 0-2 and exits 101 on a panic; what it does not give is an error for a
//! closed stdout (`>&-`), which [`stdout_was_closed`] tells apart.

use std::{
    io::{self, Write},
    process::ExitCode,
    time::Duration,
};

use anyhow::bail;
use nix::{
    fcntl::{FcntlArg, OFlag, fcntl},
    sys::stat::{SFlag, fstat, makedev},
};

use port_exporter::{cli, generate, log, serve, watch};

fn main() -> ExitCode {
    let stdout_closed = stdout_was_closed();
    let args = match cli::parse() {
        Ok(args) => args,
        // --help and --version: clap's only "errors" meant for stdout.
        Err(err) if !err.use_stderr() => {
            let _ = err.print();
            return ExitCode::SUCCESS;
        }
        Err(err) => {
            eprintln!("port_exporter: {}", cli::one_line(&err));
            return ExitCode::from(2);
        }
    };
    match run(&args, stdout_closed) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            log::line(format_args!("{err:#}"));
            log::flush(Duration::from_millis(200));
            ExitCode::FAILURE
        }
    }
}

/// Whether the program was started with descriptor 1 closed (`>&-`): then
/// std's `sanitize_standard_fds` has put /dev/null there read-write, where
/// a shell's `>/dev/null` opens it write-only. (`1<>/dev/null` and
/// daemon(3) look the same; their output would be thrown away anyway.)
fn stdout_was_closed() -> bool {
    let is_dev_null = fstat(io::stdout()).is_ok_and(|st| {
        SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFCHR
            && st.st_rdev == makedev(1, 3)
    });
    is_dev_null
        && fcntl(io::stdout(), FcntlArg::F_GETFL)
            .is_ok_and(|flags| OFlag::from_bits_truncate(flags) & OFlag::O_ACCMODE == OFlag::O_RDWR)
}

/// Prints a generated file, serves, or runs the one-shot job.
fn run(args: &cli::Args, stdout_closed: bool) -> anyhow::Result<()> {
    let output = args.output_file();
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
        return watch::run(&args.job(), interval);
    }
    args.job().run_once(output)
}

/// Whether stdout closed early, as in `port_exporter | head`: a success.
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    })
}
