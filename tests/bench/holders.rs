//! The "20,000 connections" load: established loopback connections held open
//! by helper processes while the loaded figures are measured.
//!
//! Why helper processes: each connection costs two file descriptors (client
//! and accepted server side), and the hard `RLIMIT_NOFILE` here is 20,000
//! and cannot be raised, so one process could hold fewer than 10,000. The
//! load is therefore spread over several holders of at most 5,000
//! connections each. A holder is this very bench executable, started again
//! with [`HOLDER_ENV`] set, so no extra binary has to be built or found.
//!
//! Each holder binds one listener on 127.0.0.1 with an ephemeral port,
//! connects its clients to it (connect, then accept, one pair at a time, so
//! the accept queue never overflows and no SYN is ever retransmitted),
//! prints `ready PORT COUNT` and then blocks until its stdin closes. Only
//! loopback is used, and only ports the holder opened itself.
//!
//! Every socket gets `SO_LINGER` with a zero timeout, so closing it sends a
//! RST instead of a FIN: no 20,000 TIME_WAIT sockets are left behind for
//! the next minute to slow down the idle figures of a following run.
//!
//! The parent keeps the holders in [`Holders`], whose `Drop` kills and reaps
//! every one of them by its own pid, on success and on panic alike. If the
//! parent dies without unwinding (SIGKILL), the holders' stdin pipes close
//! and they exit by themselves.

use std::{
    env, fs,
    io::{self, BufRead, BufReader, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use socket2::{Domain, SockRef, Socket, Type};

/// Set to a connection count, this environment variable turns the bench
/// executable into a holder of that many connections.
pub const HOLDER_ENV: &str = "PORT_EXPORTER_BENCH_HOLDER";

/// The most connections one holder keeps, when its file limit allows.
const PER_HOLDER: usize = 5_000;

/// File descriptors a holder needs besides its sockets (stdio, the
/// listener, whatever the runtime opens), with room to spare.
const SPARE_FDS: usize = 64;

/// Runs the holder side: opens `count` connections, says it is ready, and
/// waits for the parent to close stdin.
pub fn serve(count: usize) -> io::Result<()> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    socket.bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into())?;
    socket.listen(1024)?;
    let listener: TcpListener = socket.into();
    let addr = listener.local_addr()?;
    let mut held = Vec::with_capacity(2 * count);
    for _ in 0..count {
        let client = TcpStream::connect(addr)?;
        let (server, _) = listener.accept()?;
        for end in [&client, &server] {
            SockRef::from(end).set_linger(Some(Duration::ZERO))?;
        }
        held.push(client);
        held.push(server);
    }
    let mut out = io::stdout().lock();
    writeln!(out, "ready {} {}", addr.port(), count)?;
    out.flush()?;
    drop(out);
    // EOF on stdin (the parent closed it or died) is the signal to stop.
    io::copy(&mut io::stdin().lock(), &mut io::sink())?;
    drop(held);
    Ok(())
}

/// Running holders and what they hold; dropping it stops them.
pub struct Holders {
    children: Vec<Child>,
    /// The listener port of each holder.
    pub ports: Vec<u16>,
    /// Connections held in total.
    pub connections: usize,
    /// How long it took to open them all.
    pub setup: Duration,
}

impl Holders {
    /// Starts enough holders for `total` connections, at most
    /// [`PER_HOLDER`] each and fewer when the soft file limit would not
    /// fit them, and waits until every holder reports ready.
    ///
    /// Panics (after stopping whatever was started, through `Drop`) when a
    /// holder fails: a loaded figure measured without its load would be
    /// a lie.
    pub fn start(total: usize) -> Holders {
        let clock = Instant::now();
        let per_holder = PER_HOLDER.min(soft_fd_limit().saturating_sub(SPARE_FDS) / 2);
        assert!(
            per_holder > 0,
            "the file limit is too low to hold connections"
        );
        let exe = env::current_exe().expect("cannot find the bench executable");
        let mut holders = Holders {
            children: Vec::new(),
            ports: Vec::new(),
            connections: 0,
            setup: Duration::ZERO,
        };
        // Start them all first, so they open their connections in parallel.
        let mut left = total;
        while left > 0 {
            let count = left.min(per_holder);
            left -= count;
            let child = Command::new(&exe)
                .env(HOLDER_ENV, count.to_string())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("cannot start a connection holder");
            holders.children.push(child);
        }
        for i in 0..holders.children.len() {
            let out = holders.children[i].stdout.take().expect("holder stdout");
            let mut line = String::new();
            BufReader::new(out)
                .read_line(&mut line)
                .expect("cannot read from a connection holder");
            let mut words = line.split_whitespace();
            let (Some("ready"), Some(port), Some(count)) =
                (words.next(), words.next(), words.next())
            else {
                panic!("connection holder {i} failed before it was ready (said {line:?})");
            };
            holders.ports.push(port.parse().expect("holder port"));
            holders.connections += count.parse::<usize>().expect("holder count");
        }
        holders.setup = clock.elapsed();
        holders
    }
}

impl Drop for Holders {
    /// Kills each holder by its own pid and reaps it, so no process and no
    /// connection outlives the bench, even when a measurement panicked.
    fn drop(&mut self) {
        for child in &mut self.children {
            drop(child.stdin.take());
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The soft `RLIMIT_NOFILE` of this process (holders inherit it), read from
/// /proc/self/limits because reading it with getrlimit would need `unsafe`,
/// which the crate forbids.
fn soft_fd_limit() -> usize {
    let limits = fs::read_to_string("/proc/self/limits").expect("cannot read /proc/self/limits");
    limits
        .lines()
        .find_map(|line| line.strip_prefix("Max open files"))
        .and_then(|rest| rest.split_whitespace().next())
        .map(|soft| match soft {
            "unlimited" => usize::MAX,
            n => n.parse().expect("soft file limit in /proc/self/limits"),
        })
        .expect("no file limit in /proc/self/limits")
}
