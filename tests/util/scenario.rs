//! The scenario kit of `labels.rs`, `netns.rs`, `watch.rs` and `docker.rs`:
//! `sh`, the *holder* (this test binary re-run in the [`HOLDER`] role: a
//! process of a known name that opens sockets where it is told and waits),
//! the `ss` oracle inside a namespace, and port_exporter's `--format json`
//! read with serde_json.

use std::{
    fs,
    io::{BufRead, Write},
    net::{SocketAddr, SocketAddrV6, TcpStream},
    process::{Child, Command, ExitCode},
};

use socket2::{Domain, Socket, Type};

use super::{ROLE, bin, ss_local, ss_lowest_process, start_helper, succeed};

/// The role of a holder (see [`holder`]).
pub const HOLDER: &str = "holder";

/// Runs the holder role if this process was started in it.
pub fn role() -> Option<ExitCode> {
    (std::env::var(ROLE).ok()? == HOLDER).then(|| {
        holder();
        ExitCode::SUCCESS
    })
}

/// Runs `cmd ARGS`, which must succeed.
#[track_caller]
pub fn sh(cmd: &str, args: &[&str]) {
    succeed(Command::new(cmd).args(args));
}

/// Sets this thread's command name (comm; the process's, on the main
/// thread).
pub fn set_name(name: &str) {
    let name = std::ffi::CString::new(name).unwrap();
    nix::sys::prctl::set_name(&name).expect("prctl(PR_SET_NAME)");
}

/// Opens one socket of a spec item `KIND ADDRESS PORT [FLAGS]`, where KIND
/// is tcp (listening), udp (bound), tcp-bound (bound, not listening),
/// udp-connected or tcp-connection (a client connected to PORT), and FLAGS
/// are v6only, dual, reuseport, dev=IFACE, share, share-nobody (see
/// [`holder`]). Returns the kind, the socket and its port.
pub fn open(item: &str) -> (String, Socket, u16) {
    let words: Vec<&str> = item.split_whitespace().collect();
    let (kind, address, port) = (words[0], words[1], words[2]);
    let flags = &words[3..];
    let port: u16 = port.parse().unwrap();
    let addr: SocketAddr = match address.split_once('%') {
        Some((ip, iface)) => SocketAddr::V6(SocketAddrV6::new(
            ip.parse().unwrap(),
            port,
            0,
            nix::net::if_::if_nametoindex(iface).unwrap(),
        )),
        None => SocketAddr::new(address.parse().unwrap(), port),
    };
    let udp = kind.starts_with("udp");
    let socket = Socket::new(
        Domain::for_address(addr),
        if udp { Type::DGRAM } else { Type::STREAM },
        None,
    )
    .unwrap();
    for flag in flags {
        match *flag {
            "v6only" => socket.set_only_v6(true).unwrap(),
            "dual" => socket.set_only_v6(false).unwrap(),
            "reuseport" => socket.set_reuse_port(true).unwrap(),
            "share" | "share-nobody" => {}
            dev if dev.starts_with("dev=") => {
                socket.bind_device(Some(&dev.as_bytes()[4..])).unwrap()
            }
            other => panic!("unknown flag {other}"),
        }
    }
    match kind {
        "tcp-connection" => {
            let client = TcpStream::connect(addr).unwrap();
            let local = client.local_addr().unwrap().port();
            return ("tcp-connection".into(), Socket::from(client), local);
        }
        "udp-connected" => {
            socket.bind(&SocketAddr::new(addr.ip(), 0).into()).unwrap();
            socket.connect(&addr.into()).unwrap();
        }
        _ => {
            socket.bind(&addr.into()).unwrap();
            if kind == "tcp" {
                socket.listen(16).unwrap();
            }
        }
    }
    let port = socket.local_addr().unwrap().as_socket().unwrap().port();
    (kind.to_string(), socket, port)
}

/// Where a holder runs.
#[derive(Clone, Copy)]
pub enum Place<'a> {
    /// In the scenario's namespace (`host`).
    Here,
    /// Here, as `nobody` from its start (through setpriv), as a daemon
    /// started so does: one that changed user itself would be
    /// non-dumpable, and its /proc entries root's.
    Nobody,
    /// In a namespace of its own, unnamed.
    Own,
    /// In the namespace `ip netns` named so (through `ip netns exec`).
    Named(&'a str),
    /// In the namespace of this process (through `nsenter`).
    With(u32),
}

/// A running holder. Dropping it closes its stdin: it exits, and is
/// waited for.
pub struct Holder {
    child: Child,
    pub pid: u32,
    /// Its command name.
    pub name: String,
    /// `(kind, port)` of each socket it opened, in spec order.
    pub opened: Vec<(String, u16)>,
}

/// The environment that makes this test binary a holder named `name`
/// opening `spec`.
pub fn holder_env(name: &str, spec: &str) -> [(&'static str, String); 3] {
    [
        (ROLE, HOLDER.to_string()),
        ("HOLD_NAME", name.to_string()),
        ("HOLD_SPEC", spec.to_string()),
    ]
}

impl Holder {
    /// Starts a holder named `name` at `place`, opening `spec` (sockets
    /// separated by `;`, see [`open`]).
    pub fn start(name: &str, place: Place, spec: &str) -> Holder {
        Holder::start_how(name, place, spec, "")
    }

    /// [`Holder::start`], the holder's threads placed as `how` says (see
    /// [`holder`]).
    pub fn start_how(name: &str, place: Place, spec: &str, how: &str) -> Holder {
        let exe = std::env::current_exe().unwrap();
        let mut command = match place {
            Place::Here | Place::Own => Command::new(&exe),
            Place::Nobody => {
                let mut command = Command::new("setpriv");
                command
                    .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
                    .arg(bin::shared_exe());
                command
            }
            Place::Named(ns) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", ns]).arg(&exe);
                command
            }
            Place::With(pid) => {
                let mut command = Command::new("nsenter");
                command.arg(format!("--net=/proc/{pid}/ns/net")).arg(&exe);
                command
            }
        };
        if let Place::Own = place {
            command.env("HOLD_UNSHARE", "1");
        }
        let (child, said) = start_helper(command.envs(holder_env(name, spec)).env("HOLD_HOW", how));
        let opened = said
            .iter()
            .map(|line| {
                let (kind, port) = line.split_once(' ').unwrap();
                (kind.to_string(), port.parse().unwrap())
            })
            .collect();
        Holder {
            pid: child.id(),
            child,
            name: name.to_string(),
            opened,
        }
    }

    /// The path of its namespace link.
    pub fn ns(&self) -> String {
        format!("/proc/{}/ns/net", self.pid)
    }

    /// Sends it a command (see [`holder`]).
    pub fn tell(&mut self, command: &str) {
        writeln!(self.child.stdin.as_ref().unwrap(), "{command}").unwrap();
    }

    /// Ends it now, and waits until it is gone.
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// The holder role: name itself (HOLD_NAME), make a namespace of its own
/// if asked (HOLD_UNSHARE), bring its loopback up if it is down, open the
/// sockets of HOLD_SPEC, say `KIND PORT` for each and `ready`, then obey
/// the lines read from stdin until it closes: `name NAME` renames it, and
/// `hand NAME` starts a holder of that name that inherits its sockets,
/// which it closes. A `share` socket is inherited at once by a worker
/// named `NAME-w` (`share-nobody`: one that runs as nobody), as prefork
/// servers and socket activation do.
///
/// HOLD_HOW asks for one of the namespaces that no process's main thread
/// is in:
/// - `thread`: a second thread makes a namespace of its own and opens the
///   sockets there; the main thread stays where it was;
/// - `main-exits`: a second thread opens the sockets, and the main thread
///   exits (the process lives on, its `/proc/PID/ns/net` unreadable);
/// - `leave=PATH`: the namespace made (HOLD_UNSHARE) is bound to PATH
///   once the sockets are open, and the holder goes back to the namespace
///   it came from: none of its threads is in the one it made.
fn holder() {
    set_name(&std::env::var("HOLD_NAME").unwrap());
    let back = fs::File::open("/proc/thread-self/ns/net").unwrap();
    let unshare = || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET)")
    };
    if std::env::var_os("HOLD_UNSHARE").is_some() {
        unshare();
    }
    match std::env::var("HOLD_HOW").unwrap_or_default().as_str() {
        "" => serve(|| {}),
        "thread" => std::thread::spawn(move || {
            unshare();
            serve(|| {});
        })
        .join()
        .unwrap(),
        "main-exits" => {
            std::thread::spawn(|| {
                serve(|| {});
                std::process::exit(0);
            });
            // The exit system call ends the calling thread alone, without
            // unwinding (pthread_exit would unwind into Rust's main and
            // abort); the process lives on in the other thread, which ends
            // it. nix wraps neither.
            #[allow(unsafe_code)]
            // SAFETY: the thread never runs again, so nothing it owns is
            // used after; the other thread touches none of it.
            unsafe {
                nix::libc::syscall(nix::libc::SYS_exit, 0);
            }
            unreachable!("the main thread has exited");
        }
        leave => {
            let path = leave.strip_prefix("leave=").expect("HOLD_HOW");
            serve(|| {
                fs::write(path, "").unwrap();
                sh("mount", &["--bind", "/proc/self/ns/net", path]);
                nix::sched::setns(&back, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            });
        }
    }
    bin::remove_shared_bin();
}

/// The body of [`holder`] once it is where it must be: opens the sockets
/// of HOLD_SPEC, calls `then`, says `ready` and obeys stdin.
fn serve(then: impl FnOnce()) {
    let lo_up = nix::ifaddrs::getifaddrs().unwrap().any(|i| {
        i.interface_name == "lo" && i.flags.contains(nix::net::if_::InterfaceFlags::IFF_UP)
    });
    if !lo_up {
        sh("ip", &["link", "set", "lo", "up"]);
    }
    let name = std::env::var("HOLD_NAME").unwrap();
    let spec = std::env::var("HOLD_SPEC").unwrap();
    let mut out = std::io::stdout().lock();
    let mut kept = Vec::new();
    let mut helpers = Vec::new();
    for item in spec.split(';').filter(|s| !s.is_empty()) {
        let (kind, socket, port) = open(item);
        writeln!(out, "{kind} {port}").unwrap();
        if item.contains(" share") {
            socket.set_cloexec(false).unwrap();
            let place = if item.contains(" share-nobody") {
                Place::Nobody
            } else {
                Place::Here
            };
            helpers.push(Holder::start(&format!("{name}-w"), place, ""));
        }
        kept.push(socket);
    }
    then();
    writeln!(out, "ready").unwrap();
    out.flush().unwrap();
    drop(out);
    for line in std::io::stdin().lock().lines() {
        let line = line.unwrap();
        match line.split_once(' ') {
            Some(("name", name)) => set_name(name),
            Some(("hand", name)) => {
                for socket in &kept {
                    socket.set_cloexec(false).unwrap();
                }
                helpers.push(Holder::start(name, Place::Here, ""));
                kept.clear();
            }
            _ => panic!("unknown holder command {line:?}"),
        }
    }
    drop((kept, helpers));
}

/// One listener as `--format json` shows it.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonRow {
    pub protocol: String,
    pub port: u16,
    pub address: String,
    pub scope: String,
    pub user: String,
    pub uid: u32,
    pub process: Option<String>,
    pub pid: Option<u32>,
    pub netns: Option<String>,
}

/// The rows of port_exporter's `--format json` output.
#[track_caller]
pub fn json_rows(json: &str) -> Vec<JsonRow> {
    serde_json::from_str(json).unwrap_or_else(|e| panic!("not JSON ({e}): {json}"))
}

/// One listener of `--netns all`: namespace label, protocol, port,
/// address, process (`""` when unknown).
pub type NetnsRow = (String, String, u16, String, String);

/// The rows of port_exporter's `--netns all --format json` output, sorted.
#[track_caller]
pub fn netns_rows(json: &str) -> Vec<NetnsRow> {
    let mut rows: Vec<NetnsRow> = json_rows(json)
        .into_iter()
        .map(|r| {
            let netns = r.netns.unwrap_or_else(|| panic!("no netns: {json}"));
            let process = r.process.unwrap_or_default();
            (netns, r.protocol, r.port, r.address, process)
        })
        .collect();
    rows.sort();
    rows
}

/// What `ss -Htulnp` lists inside the namespace of the file `path`, each
/// row labelled `label`; the process is the name of the lowest pid
/// holding the socket.
pub fn netns_oracle(label: &str, path: &str) -> Vec<NetnsRow> {
    let out = Command::new("nsenter")
        .arg(format!("--net={path}"))
        .args(["ss", "-Htulnp"])
        .output()
        .unwrap();
    assert!(out.status.success(), "nsenter --net={path} ss failed");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (address, port) = ss_local(fields[4]);
            let process = ss_lowest_process(line).unwrap_or_default();
            (
                label.to_string(),
                fields[0].to_string(),
                port,
                address,
                process,
            )
        })
        .collect()
}
