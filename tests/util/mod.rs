//! Test harness: run the built binary, read its exposition, ask the kernel
//! (`ss`) for the truth, and run code inside a fresh network namespace.

use std::{
    collections::{BTreeMap, BTreeSet},
    panic::Location,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_port_exporter");

/// Runs the binary with `args`, no stdin, and returns what it did.
pub fn run<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("cannot start port_exporter")
}

/// stdout of a run that must have succeeded silently.
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

/// The `instance_open_ports` samples of an exposition, port to value.
#[track_caller]
pub fn samples(text: &str) -> BTreeMap<u16, u8> {
    let mut found = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| l.starts_with("instance_open_ports{"))
    {
        let rest = line
            .strip_prefix("instance_open_ports{port=\"")
            .expect(line);
        let (port, value) = rest.split_once("\"} ").expect(line);
        let port: u16 = port.parse().expect(line);
        let value: u8 = value.parse().expect(line);
        assert!(
            found.insert(port, value).is_none(),
            "port {port} appears twice"
        );
    }
    found
}

/// The ports an exposition reports open (value 1).
#[track_caller]
pub fn open_ports(text: &str) -> BTreeSet<u16> {
    samples(text)
        .into_iter()
        .filter(|&(_, v)| v == 1)
        .map(|(p, _)| p)
        .collect()
}

/// The oracle: the ports of all TCP listeners, as `ss -Htln` lists them.
#[track_caller]
pub fn ss_listeners() -> BTreeSet<u16> {
    let out = Command::new("ss")
        .arg("-Htln")
        .output()
        .expect("cannot run ss");
    assert!(out.status.success(), "ss failed");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let local = line.split_whitespace().nth(3).expect(line);
            local.rsplit(':').next().unwrap().parse().expect(line)
        })
        .collect()
}

/// Whether tests that need a thing they lack may skip: not under CI=true.
/// Under CI such a test fails; elsewhere it says loudly that it skipped.
#[track_caller]
pub fn unavailable(reason: &str) {
    let caller = Location::caller();
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("cannot run under CI=true: {reason}");
    }
    eprintln!("SKIPPED ({caller}): {reason}");
}

/// True when running as root; otherwise reports the test as unavailable.
#[track_caller]
pub fn need_root() -> bool {
    #[allow(unsafe_code)]
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        unavailable("needs root (network namespaces, setpriv, mounts)");
    }
    root
}

/// The path of `program` if it is installed; otherwise reports the test as
/// unavailable (Debian's packages install it: see .ci/run).
#[track_caller]
pub fn need_program(program: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        unavailable(&format!(
            "needs {program} (apt-get install as .ci/run does)"
        ));
    }
    found
}

/// Runs `f` on a thread of its own inside a fresh network namespace whose
/// loopback is up. Processes spawned from `f` inherit the namespace, so
/// nothing else on the host listens there and the oracle is exact.
pub fn in_netns<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| {
        let thread = scope.spawn(|| {
            #[allow(unsafe_code)]
            // SAFETY: unshare only changes this thread's namespaces; the
            // thread ends with the scope, so no other code runs in it later.
            let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
            assert_eq!(
                rc,
                0,
                "unshare(CLONE_NEWNET): {}",
                std::io::Error::last_os_error()
            );
            let status = Command::new("ip")
                .args(["link", "set", "lo", "up"])
                .status();
            assert!(
                status.expect("cannot run ip").success(),
                "ip link set lo up failed"
            );
            f()
        });
        thread
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Runs `f` in a network namespace of its own when root, so that bind scans
/// of concurrent tests (which take turns through a per-namespace lock) do
/// not wait for each other; in the host's namespace otherwise.
pub fn isolated<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    #[allow(unsafe_code)]
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if root { in_netns(f) } else { f() }
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

/// A copy of the binary that any user may run, in its own 0755 directory:
/// tests that run it as `nobody` cannot rely on every directory above the
/// build tree being searchable by others (a checkout under /root is not).
/// The copy goes away with the returned directory.
///
/// `cp` makes the copy, not this process: a file we held open for writing
/// would leak into children that other test threads fork meanwhile, and
/// exec of the copy would fail with ETXTBSY until they exec themselves.
pub fn shared_bin() -> (tempfile::TempDir, PathBuf) {
    let dir = open_tempdir();
    let path = dir.path().join("port_exporter");
    let copied = Command::new("cp")
        .arg(BIN)
        .arg(&path)
        .status()
        .expect("cannot run cp");
    assert!(copied.success(), "cp {BIN} failed");
    (dir, path)
}

/// Feeds `text` to `promtool check metrics` and returns (status, output).
pub fn promtool_check(promtool: &Path, text: &str) -> (bool, String) {
    use std::io::Write;
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
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

/// A strict reader of our exposition, for checks repeated too often to
/// spawn promtool each time: every line a HELP, a TYPE or a sample whose
/// value parses, families contiguous, final line feed. Returns the number
/// of instance_open_ports samples, or why the text is not a complete file.
pub fn check_exposition(text: &str) -> Result<usize, String> {
    if !text.ends_with('\n') {
        return Err("no final line feed".into());
    }
    if !text.starts_with("# HELP instance_open_ports ") {
        return Err("does not start with the HELP line".into());
    }
    if !text.contains("\nport_exporter_build_info{") {
        return Err("no build_info sample (cut short?)".into());
    }
    let mut families: Vec<&str> = Vec::new();
    let mut ports = 0;
    for line in text.lines() {
        if let Some(rest) = line
            .strip_prefix("# HELP ")
            .or_else(|| line.strip_prefix("# TYPE "))
        {
            let name = rest.split(' ').next().unwrap();
            if families.last() != Some(&name) {
                if families.contains(&name) {
                    return Err(format!("family {name} is split"));
                }
                families.push(name);
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').ok_or(format!("bad line {line:?}"))?;
        value
            .parse::<f64>()
            .map_err(|_| format!("bad value in {line:?}"))?;
        let name = series.split('{').next().unwrap();
        if families.last() != Some(&name) {
            return Err(format!("sample {line:?} outside its family"));
        }
        if name == "instance_open_ports" {
            ports += 1;
        }
    }
    Ok(ports)
}

/// An HTTP response, as read off the wire.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    /// Header names in lower case, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    /// The value of header `name` (lower case), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `method path` with `Connection: close` to `addr` and reads the
/// whole answer, failing the test if it takes longer than `limit`.
#[track_caller]
pub fn http(addr: &str, method: &str, path: &str, limit: std::time::Duration) -> HttpResponse {
    use std::io::{Read, Write};
    let mut stream =
        std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream.set_read_timeout(Some(limit)).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .unwrap_or_else(|e| panic!("{method} {path} on {addr}: {e}"));
    parse_http(&String::from_utf8(raw).expect("response is UTF-8"))
}

/// Parses a complete HTTP/1.1 response (no chunked bodies: we send none).
#[track_caller]
pub fn parse_http(raw: &str) -> HttpResponse {
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {raw:?}"));
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect(status_line);
    let headers = lines
        .map(|line| {
            let (name, value) = line.split_once(':').expect(line);
            (name.trim().to_ascii_lowercase(), value.trim().to_string())
        })
        .collect();
    HttpResponse {
        status,
        headers,
        body: body.to_string(),
    }
}
