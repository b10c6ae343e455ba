//! The machine side of the kit: who we are, programs in PATH, network
//! namespaces, the `ss` oracle, child processes, scratch directories, and
//! waiting for a condition instead of sleeping for a guessed time.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant},
};

/// Whether this process runs as root.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Runs `command` with no stdin, which must succeed, and returns its
/// output.
#[track_caller]
pub fn succeed(command: &mut Command) -> std::process::Output {
    let out = command
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The path of `program` in PATH, as a shell would find it.
pub fn find_program(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|path| path.is_file())
    })
}

/// Calls `probe` until it returns `Some`, every 10 ms, and returns that
/// value; fails the test naming `what` when `limit` passes first. Limits are
/// generous on purpose: they bound a broken test, they do not time a working
/// one.
#[track_caller]
pub fn wait_until<T>(what: &str, limit: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "gave up after {limit:?} waiting for {what}"
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// Runs `f` on a thread of its own inside a fresh network namespace whose
/// loopback is up. Processes spawned from `f` inherit the namespace, so
/// nothing else on the host listens there and the oracle is exact. Needs
/// [`Need::Netns`](super::harness::Need::Netns).
pub fn in_netns<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    thread::scope(|scope| {
        let thread = scope.spawn(|| {
            // Only this thread's namespace changes; the thread ends with
            // the scope, so no other code runs in it later.
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
                .expect("unshare(CLONE_NEWNET)");
            super::scenario::sh("ip", &["link", "set", "lo", "up"]);
            f()
        });
        thread
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// The lines `ss ARGS` prints, without a header.
#[track_caller]
pub fn ss(args: &[&str]) -> Vec<String> {
    let out = Command::new("ss")
        .arg("-H")
        .args(args)
        .output()
        .expect("cannot run ss");
    assert!(out.status.success(), "ss {args:?} failed");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The oracle: the ports of all TCP listeners, as `ss -Htln` lists them.
#[track_caller]
pub fn ss_listeners() -> BTreeSet<u16> {
    ss_ports(&ss(&["-tln"]).join("\n"))
}

/// The ports of the local addresses in what `ss -Htln` printed (run
/// elsewhere, say in a container).
#[track_caller]
pub fn ss_ports(text: &str) -> BTreeSet<u16> {
    text.lines()
        .map(|line| {
            let local = line.split_whitespace().nth(3).expect(line);
            local.rsplit(':').next().unwrap().parse().expect(line)
        })
        .collect()
}

/// A local address column of `ss` (`127.0.0.1:22`, `[::1]:22`, `*:53`,
/// `[fe80::1]%veth0:22`) as the `address` label writes it, and the port.
#[track_caller]
pub fn ss_local(column: &str) -> (String, u16) {
    let (address, port) = column.rsplit_once(':').expect(column);
    let address = match address {
        "*" => "::".to_string(),
        a => a.replace(['[', ']'], ""),
    };
    (address, port.parse().expect(column))
}

/// The command name of the process with the lowest pid among those `ss -p`
/// lists for one socket (`users:(("name",pid=N,fd=M),...)`), as the
/// `process` label names it; `None` when the line lists none.
pub fn ss_lowest_process(line: &str) -> Option<String> {
    let users = line.split("users:((").nth(1)?;
    users
        .split("),(")
        .map(|user| {
            let name = user.split('"').nth(1).expect(line).to_string();
            let pid: u32 = user
                .split("pid=")
                .nth(1)
                .and_then(|rest| rest.split(',').next())
                .and_then(|pid| pid.parse().ok())
                .expect(line);
            (pid, name)
        })
        .min()
        .map(|(_, name)| name)
}

/// Whether the server side of the TCP connection from local port `client`
/// to `server` has read everything the client sent (its Recv-Q is 0): how a
/// test knows that a request reached the server, without sleeping.
pub fn request_was_read(server: u16, client: u16) -> bool {
    ss(&["-tn", "state", "established"]).iter().any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.len() >= 4
            && fields[0] == "0"
            && fields[2].ends_with(&format!(":{server}"))
            && fields[3].ends_with(&format!(":{client}"))
    })
}

/// Starts a helper process (this binary in a role) that says what it has
/// done, one line at a time, then `ready`, and lives until its stdin closes.
/// Returns it and the lines it said before `ready`.
#[track_caller]
pub fn start_helper(command: &mut Command) -> (std::process::Child, Vec<String>) {
    use std::io::BufRead;
    let mut child = command
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("cannot start a helper");
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut said = Vec::new();
    loop {
        match lines.next() {
            Some(Ok(line)) if line == "ready" => return (child, said),
            Some(Ok(line)) => said.push(line),
            _ => panic!("a helper ended before it was ready, having said {said:?}"),
        }
    }
}

/// A child process killed and reaped when the guard drops, even when the
/// test panics.
pub struct ChildGuard(pub std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A field of /proc/PID/status in KiB, such as `VmHWM` (peak resident
/// memory) or `VmRSS`.
pub fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let prefix = format!("{field}:");
    let line = status
        .lines()
        .find(|line| line.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The number of open file descriptors of process `pid`.
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// A scratch directory any user can enter and read, for tests where another
/// user (nobody, prometheus) reads or writes files.
pub fn open_tempdir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix("port_exporter-test.")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// The names in `dir`, sorted.
pub fn dir_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Holds root's bind-scan lock of the current network namespace, as a
/// running bind scan does, until dropped: a bind scan started meanwhile (as
/// root) waits, which is how tests keep a scan pending for as long as they
/// need. The protocol is the binary's (`src/scan/bind.rs`): an flock on
/// `/run/port_exporter/bind-scan.net<INODE>.lock`, removed by its holder
/// before the lock is let go.
pub fn hold_bind_scan_lock() -> impl Drop {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    /// The locked file (closing it lets the lock go) and its name.
    struct Held(#[allow(dead_code)] std::fs::File, PathBuf);
    impl Drop for Held {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.1);
        }
    }
    let dir = Path::new("/run/port_exporter");
    let _ = std::fs::DirBuilder::new().mode(0o700).create(dir);
    let namespace = std::fs::metadata("/proc/thread-self/ns/net").unwrap().ino();
    let path = dir.join(format!("bind-scan.net{namespace}.lock"));
    let file = std::fs::File::create(&path).expect("cannot create the bind-scan lock");
    file.lock().expect("cannot take the bind-scan lock");
    Held(file, path)
}
