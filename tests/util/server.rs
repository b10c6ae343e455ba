//! A running `port_exporter --serve`, as tests and benchmarks drive it.

use std::{
    io::{BufRead, BufReader},
    process::{Command, ExitStatus, Stdio},
    sync::{Arc, Condvar, Mutex, mpsc},
    thread,
    time::{Duration, Instant},
};

use super::{
    bin::Bin,
    http::{HttpResponse, http},
    metrics::value_of,
    system::{ChildGuard, fd_count, status_kib, wait_until},
};

/// How long any normal answer may take in the tests. Generous: it bounds a
/// hung server, it does not time a working one.
pub const ANSWER_LIMIT: Duration = Duration::from_secs(10);

/// The address in the server's start line, `port_exporter: listening on
/// ADDR[ and ADDR...] (...)`, or `None` for any other line.
pub fn listening_addr(line: &str) -> Option<&str> {
    line.strip_prefix("port_exporter: listening on ")?
        .split(' ')
        .next()
}

/// A running server, killed (with its process group) when dropped.
pub struct Server {
    child: ChildGuard,
    /// The first address it said it listens on.
    pub addr: String,
    /// Its start line, `port_exporter: listening on ...`.
    pub start_line: String,
    /// What it printed on stderr, but the start line.
    log: Arc<Mutex<String>>,
    /// Whether its stderr is being read (see [`Server::read_log`]).
    reading: Arc<(Mutex<bool>, Condvar)>,
    /// When [`Server::signal`] last sent a signal.
    signalled: Option<Instant>,
    /// Keeps the run's settings alive.
    _bin: Option<Bin>,
}

impl Server {
    /// Starts `port_exporter --serve 127.0.0.1:0 ARGS...`.
    pub fn start(args: &[&str]) -> Server {
        Server::start_bin(Bin::new().args(["--serve", "127.0.0.1:0"]).args(args))
    }

    /// Starts `bin`, whose arguments must make it serve.
    pub fn start_bin(bin: Bin) -> Server {
        let mut server = Server::spawn(bin.command());
        server._bin = Some(bin);
        server
    }

    /// Starts `command`, which must run the server, and waits for the line
    /// that names the bound address.
    pub fn spawn(mut command: Command) -> Server {
        // Its own process group, so that a wrapper (strace, setpriv) and
        // the server it runs are stopped together.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start the server");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let reading = Arc::new((Mutex::new(true), Condvar::new()));
        let (tx, rx) = mpsc::channel();
        let (sink, gate) = (log.clone(), reading.clone());
        thread::spawn(move || {
            // Warnings may come before the start line (what a web config
            // asks for that cannot be done): they go to the log.
            let mut lines = BufReader::new(stderr).lines().map_while(Result::ok);
            let mut first = String::new();
            for line in lines.by_ref() {
                if listening_addr(&line).is_some() {
                    first = line;
                    break;
                }
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
                first = line;
            }
            let _ = tx.send(first);
            loop {
                let (on, turned) = &*gate;
                drop(turned.wait_while(on.lock().unwrap(), |on| !*on).unwrap());
                let Some(line) = lines.next() else { break };
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let mut child = ChildGuard(child);
        let first = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the server said nothing");
        let Some(addr) = listening_addr(&first).map(str::to_owned) else {
            let status = child.0.wait().unwrap();
            panic!("unexpected start line {first:?} ({status})");
        };
        Server {
            child,
            addr,
            start_line: first,
            log,
            reading,
            signalled: None,
            _bin: None,
        }
    }

    /// The server's process id: the child's, or under strace the id of
    /// strace's child (setpriv execs the server in place).
    pub fn pid(&self) -> u32 {
        let pid = self.child.0.id();
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.trim() != "strace" {
            return pid;
        }
        wait_until(
            "strace to start the server",
            Duration::from_secs(30),
            || {
                std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
                    .ok()?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            },
        )
    }

    /// The most connections it serves at once, from its start line.
    pub fn cap(&self) -> usize {
        self.start_line
            .split("at most ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no cap in {:?}", self.start_line))
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.addr.rsplit(':').next().unwrap().parse().unwrap()
    }

    /// GETs `path` and returns the response.
    #[track_caller]
    pub fn get(&self, path: &str) -> HttpResponse {
        http(&self.addr, "GET", path, ANSWER_LIMIT)
    }

    /// The value of a sample (see [`value_of`]) in a fresh scrape.
    #[track_caller]
    pub fn metric(&self, series: &str) -> f64 {
        value_of(&self.get("/metrics").body, series)
    }

    /// Sends `signal` (`-TERM`, `-INT`, ...) to the server.
    #[track_caller]
    pub fn signal(&mut self, signal: &str) {
        let pid = self.pid().to_string();
        let killed = Command::new("kill").args([signal, &pid]).status().unwrap();
        assert!(killed.success(), "kill {signal} {pid} failed");
        self.signalled = Some(Instant::now());
    }

    /// Waits for the server to exit after [`Server::signal`]; returns how it
    /// ended and how long after the signal.
    #[track_caller]
    pub fn wait_exit(&mut self, what: &str) -> (ExitStatus, Duration) {
        let status = wait_until(
            &format!("the server to exit ({what})"),
            Duration::from_secs(60),
            || self.child.0.try_wait().unwrap(),
        );
        let sent = self.signalled.expect("no signal was sent");
        (status, sent.elapsed())
    }

    /// Stops or resumes reading the server's stderr: stopped, the pipe
    /// fills up as one nobody reads does (what was read last may still be
    /// taken in).
    pub fn read_log(&self, on: bool) {
        let (reading, turned) = &*self.reading;
        *reading.lock().unwrap() = on;
        turned.notify_all();
    }

    /// The log so far (stderr but the start line).
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The log, once it satisfies `ready`: stderr is read by another thread,
    /// so a line the server wrote may not have arrived yet.
    #[track_caller]
    pub fn log_when(&self, what: &str, ready: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let log = self.log();
            if ready(&log) {
                return log;
            }
            assert!(
                Instant::now() < deadline,
                "gave up after 30s waiting for {what}; the log:\n{log}"
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// The server's peak resident memory so far (VmHWM), in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        status_kib(self.pid(), "VmHWM")
    }

    /// Its open file descriptors now.
    pub fn fds(&self) -> usize {
        fd_count(self.pid())
    }

    /// Whether the process still runs.
    pub fn alive(&mut self) -> bool {
        self.child.0.try_wait().unwrap().is_none()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.0.id());
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
    }
}
