//! Running the binary under test: plainly, as `nobody`, or under strace
//! fault injection, always with no stdin.

use std::{
    ffi::{OsStr, OsString},
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    sync::Mutex,
};

/// The binary under test: cargo's for tests; for benchmarks, which get no
/// `CARGO_BIN_EXE_*`, the release binary next to the bench executable
/// (`target/release/deps/bench-*` → `target/release/port_exporter`).
pub fn path() -> PathBuf {
    if let Some(path) = option_env!("CARGO_BIN_EXE_port_exporter") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("cannot find this executable");
    let path = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("port_exporter"))
        .expect("this executable has no grandparent directory");
    assert!(
        path.is_file(),
        "{} is missing: build it first (`cargo build --release`)",
        path.display()
    );
    path
}

/// A run of the binary being put together.
#[derive(Default)]
pub struct Bin {
    args: Vec<OsString>,
    nobody: bool,
    injections: Vec<String>,
    fd_limit: Option<u32>,
}

impl Bin {
    /// The binary with no arguments yet.
    pub fn new() -> Bin {
        Bin::default()
    }

    /// Adds one argument.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Bin {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// Adds arguments.
    pub fn args<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(mut self, args: I) -> Bin {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Runs as `nobody` (through setpriv, from a copy any user may execute).
    /// Needs root and setpriv.
    pub fn nobody(mut self) -> Bin {
        self.nobody = true;
        self
    }

    /// Runs under `strace -f`, injecting a fault: `spec` is strace's
    /// `SYSCALL:error=ERRNO[:when=N]`, e.g. `socket:error=EPROTONOSUPPORT`.
    /// Needs strace.
    pub fn inject(mut self, spec: &str) -> Bin {
        self.injections.push(spec.to_owned());
        self
    }

    /// Runs with RLIMIT_NOFILE at `limit` (soft and hard, through
    /// util-linux's prlimit): how tests give a server a small connection
    /// cap (the limit less 256).
    pub fn fd_limit(mut self, limit: u32) -> Bin {
        self.fd_limit = Some(limit);
        self
    }

    /// The command that performs the run.
    pub fn command(&self) -> Command {
        let bin = if self.nobody { shared_bin() } else { path() };
        let mut parts: Vec<OsString> = Vec::new();
        if !self.injections.is_empty() {
            let traced: Vec<&str> = self
                .injections
                .iter()
                .map(|spec| spec.split(':').next().unwrap())
                .collect();
            parts.extend(["strace", "-f", "-o", "/dev/null", "-e"].map(OsString::from));
            parts.push(format!("trace={}", traced.join(",")).into());
            for spec in &self.injections {
                parts.push("-e".into());
                parts.push(format!("inject={spec}").into());
            }
        }
        if let Some(limit) = self.fd_limit {
            parts.push("prlimit".into());
            parts.push(format!("--nofile={limit}:{limit}").into());
        }
        if self.nobody {
            parts.extend(
                [
                    "setpriv",
                    "--reuid=65534",
                    "--regid=65534",
                    "--clear-groups",
                ]
                .map(OsString::from),
            );
        }
        parts.push(bin.into());
        let mut command = Command::new(&parts[0]);
        command
            .args(&parts[1..])
            .args(&self.args)
            .stdin(Stdio::null());
        command
    }

    /// Runs to the end and returns what it did.
    pub fn output(&self) -> Output {
        self.command().output().expect("cannot start port_exporter")
    }
}

/// Runs the binary with `args` and returns what it did.
pub fn run<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(args: I) -> Output {
    Bin::new().args(args).output()
}

/// stdout of a run that must have succeeded.
#[track_caller]
pub fn stdout_of(output: &Output) -> String {
    assert!(
        output.status.success(),
        "port_exporter failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).expect("stdout is UTF-8")
}

/// stderr as text.
pub fn stderr_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The one line a failed run printed, after checking it is only one and
/// carries the program's prefix.
#[track_caller]
pub fn one_error_line(output: &Output) -> String {
    let stderr = stderr_of(output);
    assert_eq!(
        stderr.lines().count(),
        1,
        "expected one line on stderr, got:\n{stderr}"
    );
    assert!(stderr.starts_with("port_exporter: "), "{stderr}");
    stderr.trim_end().to_string()
}

/// The shared copies' directory, made on first use and removed at the end
/// of the run by [`remove_shared_bin`].
static SHARED: Mutex<Option<tempfile::TempDir>> = Mutex::new(None);

/// A copy of the binary that any user may run, in its own 0755 directory:
/// a checkout under /root is not searchable by others.
pub fn shared_bin() -> PathBuf {
    shared_copy(&path(), "port_exporter")
}

/// A copy of this test binary that any user may run, likewise: a holder
/// that runs as nobody (`util::scenario`).
pub fn shared_exe() -> PathBuf {
    shared_copy(&std::env::current_exe().unwrap(), "holder")
}

/// `from` copied as `name` into the shared directory, on first use.
///
/// `cp` makes the copy, not this process: a file we held open for writing
/// would leak into children that other test threads fork meanwhile, and
/// exec of the copy would fail with ETXTBSY until they exec themselves.
fn shared_copy(from: &Path, name: &str) -> PathBuf {
    let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    let dir = shared.get_or_insert_with(super::system::open_tempdir);
    let to = dir.path().join(name);
    if !to.exists() {
        let copied = Command::new("cp")
            .arg(from)
            .arg(&to)
            .status()
            .expect("cannot run cp");
        assert!(copied.success(), "cp of {} failed", from.display());
    }
    to
}

/// Removes the shared copies, if any were made.
pub fn remove_shared_bin() {
    drop(SHARED.lock().unwrap_or_else(|e| e.into_inner()).take());
}
