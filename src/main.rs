//! The entry point: parse the command line, run one-shot or serve, and turn
//! the outcome into one line on stderr and an exit status (0 ok, 1 runtime
//! failure, 2 usage).
//!
//! `main` is the C runtime's, not Rust's (`no_main`): a one-shot run is
//! over in well under a millisecond, most of it process start-up, and Rust's
//! own start-up would add a tenth to it (it reads /proc/self/maps through
//! glibc to guard the main thread's stack, and sets up a handler for stack
//! overflows, which a run this short does not need). What of it matters is
//! done here: SIGPIPE is ignored, so that a closed pipe is an error to
//! handle (`port_exporter | head`); descriptors 0-2 are checked and, when
//! closed, given /dev/null; stdout is flushed before exit.
#![no_main]

use std::{
    fs::File,
    io::{self, Write},
    os::fd::{AsRawFd, IntoRawFd},
    panic::{self, AssertUnwindSafe},
    path::Path,
    time::Duration,
};

use anyhow::bail;
use clap::error::ErrorKind;

use port_exporter::{cli, generate, log, oneshot, serve};

// The unwinder (`_Unwind_*`, which panics use) comes from GCC's static
// libgcc_eh rather than the shared libgcc_s.so.1 that std links by default,
// as `-static-libgcc` does for C++. Loading libgcc_s costs a one-shot run
// about 0.1 ms, a sixth of it: its constructor probes the CPU with CPUID
// instructions, each a trap to the hypervisor in a virtual machine. With
// the archive named here, before std's libraries, the linker resolves the
// unwinder from it and `--as-needed` drops libgcc_s. Unwinding works as
// before: it finds the frame tables through `dl_iterate_phdr`.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[link(name = "gcc_eh", kind = "static")]
#[allow(unsafe_code)]
unsafe extern "C" {}

/// The program, as the C runtime calls it.
// SAFETY (no_mangle): with `no_main`, this is the only symbol named `main`
// in the program, with the signature the C runtime calls.
#[unsafe(no_mangle)]
#[allow(unsafe_code)]
extern "C" fn main(_argc: libc::c_int, _argv: *const *const libc::c_char) -> libc::c_int {
    // SAFETY: setting a signal's disposition to SIG_IGN installs no handler
    // code; nothing else runs yet that could race with it.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    let stdout_closed = !is_open(1);
    fill_closed_std_fds();
    // A panic is a bug: say so as Rust's runtime does (the hook has
    // printed the message) and exit 101, rather than abort.
    let code = panic::catch_unwind(AssertUnwindSafe(|| exit_code(stdout_closed))).unwrap_or(101);
    let _ = io::stdout().flush();
    libc::c_int::from(code)
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
    // With stdout closed (`>&-`), what is printed would go nowhere and the
    // run would pass for a success that printed nothing; coreutils says
    // "Bad file descriptor" there, and so do we.
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

/// Whether descriptor `fd` is open.
fn is_open(fd: libc::c_int) -> bool {
    #[allow(unsafe_code)]
    // SAFETY: F_GETFD only reads the flags of a descriptor number; a closed
    // one makes it fail with EBADF.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    flags != -1
}

/// Opens /dev/null on any of descriptors 0, 1 and 2 that is closed, so that
/// no socket or file opened later takes its number: a log line meant for a
/// closed stderr must never go to a client or into the .prom file.
fn fill_closed_std_fds() {
    // open(2) returns the lowest free descriptor: keep each one below 3.
    while let Ok(null) = File::options().read(true).write(true).open("/dev/null") {
        if null.as_raw_fd() > 2 {
            break;
        }
        // Kept open for the life of the process.
        let _ = null.into_raw_fd();
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
