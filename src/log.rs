//! What port_exporter says on stderr: one line each, `port_exporter: `
//! first, and never a reason to stop working.
//!
//! A server must never wait for its log (a stderr pipe that nobody reads
//! would stop the thread that serves), so after [`to_background`] lines go
//! through a bounded queue to a writer thread; a line that finds the queue
//! full is dropped and counted, and the count said later. Write errors are
//! ignored.

use std::{
    fmt,
    io::{self, Write},
    sync::{
        OnceLock,
        atomic::{AtomicU64, Ordering},
        mpsc::{self, SyncSender},
    },
    thread,
    time::{Duration, Instant},
};

/// Lines that may wait for the writer thread.
const QUEUE: usize = 256;

/// The writer thread's queue, once [`to_background`] has started it.
static QUEUE_TX: OnceLock<SyncSender<String>> = OnceLock::new();
/// Lines dropped since the writer last wrote.
static DROPPED: AtomicU64 = AtomicU64::new(0);
/// Lines queued and not yet written.
static PENDING: AtomicU64 = AtomicU64::new(0);

/// Writes `port_exporter: MESSAGE` as one line on stderr.
macro_rules! log {
    ($($arg:tt)*) => {
        $crate::log::line(format_args!($($arg)*))
    };
}
pub(crate) use log;

/// Says one line: directly, or through the queue once it runs.
pub fn line(message: fmt::Arguments) {
    let text = format!("port_exporter: {message}\n");
    match QUEUE_TX.get() {
        None => {
            let _ = io::stderr().write_all(text.as_bytes());
        }
        Some(queue) => {
            PENDING.fetch_add(1, Ordering::Relaxed);
            if queue.try_send(text).is_err() {
                PENDING.fetch_sub(1, Ordering::Relaxed);
                DROPPED.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Sends every line from now on through the writer thread.
pub(crate) fn to_background() -> io::Result<()> {
    if QUEUE_TX.get().is_some() {
        return Ok(());
    }
    let (tx, rx) = mpsc::sync_channel::<String>(QUEUE);
    thread::Builder::new().name("log".into()).spawn(move || {
        // Each line, preceded by the count of lines dropped since the
        // last one written.
        let mut stderr = io::stderr();
        for text in rx {
            let dropped = DROPPED.swap(0, Ordering::Relaxed);
            if dropped > 0 {
                let _ = writeln!(
                    stderr,
                    "port_exporter: {dropped} log lines were dropped: stderr was not read"
                );
            }
            let _ = stderr.write_all(text.as_bytes());
            PENDING.fetch_sub(1, Ordering::Relaxed);
        }
    })?;
    let _ = QUEUE_TX.set(tx);
    Ok(())
}

/// Gives queued lines up to `limit` to reach stderr, as a process about to
/// exit should; returns at once when nothing is queued.
pub fn flush(limit: Duration) {
    let deadline = Instant::now() + limit;
    while PENDING.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(1));
    }
}
