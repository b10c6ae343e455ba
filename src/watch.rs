//! `--watch`: the listeners, then each one that opens or closes.
//!
//! Each scan is compared with the last one that succeeded. A listener is
//! its socket with what the views show of it, so a socket whose process
//! changes closes and opens again. Scans start on a fixed schedule (one
//! interval after the last one's start), so a listener that lives two
//! intervals always spans a whole scan. SIGINT and SIGTERM are read from a
//! signalfd polled with stdout (POLLERR/POLLHUP: its reader is gone), so
//! the watch ends between two lines, never inside one.

use std::{
    collections::{BTreeSet, HashMap},
    io::{self, BufWriter, IsTerminal, Write},
    os::fd::AsFd,
    path::Path,
    time::{Duration, Instant, SystemTime},
};

use anyhow::Context;
use nix::{
    errno::Errno,
    poll::{PollFd, PollFlags, PollTimeout, poll},
    sys::{
        signal::{SigSet, Signal},
        signalfd::{SfdFlags, SignalFd},
    },
};

use crate::{
    job::{Format, Job},
    log::log,
    scan::{
        Listener, Scan, Sockets,
        owner::{self, Processes},
    },
    views::{self, Row},
};

/// How often the watch checks that each holder it knows still holds its
/// sockets, and how often it walks every process anyway (see [`Holders`]).
const RECHECK: Duration = Duration::from_secs(1);
const REWALK: Duration = Duration::from_secs(30);

/// Who holds each listener, remembered between scans: walking every
/// process's descriptors costs more than the rest of a scan, so the watch
/// walks again only for a socket it has not attributed, a holder that
/// exited, was renamed or no longer holds its socket (checked every
/// [`RECHECK`]), and every [`REWALK`] (a lower pid sharing a socket).
#[derive(Default)]
struct Holders {
    /// Each socket's holder (0 for none found), by inode.
    pids: HashMap<u32, u32>,
    /// The holders' names, by pid.
    names: HashMap<u32, String>,
    /// Processes whose descriptors could not be read in the last walk.
    denied: usize,
    /// When the processes were last walked, and the holders last checked.
    walked: Option<Instant>,
    checked: Option<Instant>,
}

impl Holders {
    /// The holders' names, if what the last walk found still stands for
    /// `listeners` (see [`Holders`]).
    fn still_known(&mut self, listeners: &[Listener]) -> Option<Vec<(u32, String)>> {
        if self.walked.is_none_or(|at| at.elapsed() >= REWALK) {
            return None;
        }
        let mut held: Vec<u32> = listeners
            .iter()
            .map(|l| self.pids.get(&l.inode).copied())
            .collect::<Option<_>>()?;
        held.sort_unstable();
        held.dedup();
        held.retain(|&pid| pid != 0);
        let names = held
            .iter()
            .map(|&pid| {
                let name = self.names.get(&pid)?;
                (owner::comm(Path::new("/proc"), pid).as_ref() == Some(name))
                    .then(|| (pid, name.clone()))
            })
            .collect::<Option<_>>()?;
        if self.checked.is_none_or(|at| at.elapsed() >= RECHECK) {
            // Each listener still held by the holder the last walk found.
            let held_now: Vec<(u32, Vec<u32>)> = held
                .iter()
                .map(|&pid| Some((pid, owner::sockets_of(Path::new("/proc"), pid)?)))
                .collect::<Option<_>>()?;
            let holds = |l: &Listener| match self.pids.get(&l.inode).copied() {
                None | Some(0) => true,
                Some(pid) => held_now
                    .binary_search_by_key(&pid, |(p, _)| *p)
                    .is_ok_and(|i| held_now[i].1.binary_search(&l.inode).is_ok()),
            };
            if !listeners.iter().all(holds) {
                return None;
            }
            self.checked = Some(Instant::now());
        }
        Some(names)
    }

    /// Sets the holder of each listener of `sockets`, walking the
    /// processes only when it must.
    fn attribute(&mut self, sockets: &mut Sockets) {
        let processes = match self.still_known(&sockets.listeners) {
            Some(names) => {
                for listener in &mut sockets.listeners {
                    listener.pid = self.pids.get(&listener.inode).copied().unwrap_or(0);
                }
                Processes {
                    names,
                    unattributed: sockets.listeners.iter().filter(|l| l.pid == 0).count(),
                    denied: self.denied,
                }
            }
            None => {
                let processes = owner::attribute(&mut sockets.listeners, Path::new("/proc"));
                self.pids = sockets.listeners.iter().map(|l| (l.inode, l.pid)).collect();
                self.names = processes.names.iter().cloned().collect();
                self.denied = processes.denied;
                self.walked = Some(Instant::now());
                self.checked = self.walked;
                processes
            }
        };
        sockets.processes = Some(processes);
    }
}

/// What happened to a listener: there at the start, opened, or closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    Listening,
    Open,
    Close,
}

/// A listener as the watch follows it: its row and its socket's inode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub row: Row,
    pub inode: u32,
}

impl Entry {
    /// The order of a watch's lines: by port, protocol, address, namespace,
    /// user, process, pid, then socket.
    fn key(&self) -> impl Ord + '_ {
        let row = &self.row;
        (
            row.port,
            row.protocol,
            &row.address,
            row.netns.as_deref(),
            &row.user,
            row.uid,
            row.process.as_deref(),
            row.pid,
            self.inode,
        )
    }
}

impl Ord for Entry {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key().cmp(&other.key())
    }
}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// What a scan found, as it found it: two scans alike in it have the same
/// rows, and comparing them costs far less than making rows.
fn found(s: &Sockets) -> impl PartialEq + '_ {
    (
        &s.listeners,
        &s.interfaces,
        &s.users,
        &s.processes,
        &s.namespaces,
    )
}

/// The listeners of a scan.
pub fn entries(scan: &Scan) -> anyhow::Result<BTreeSet<Entry>> {
    let sockets = scan
        .sockets
        .as_ref()
        .context("the scan did not learn the sockets --watch shows")?;
    Ok(sockets
        .listeners
        .iter()
        .map(|listener| Entry {
            row: Row::of(listener, sockets),
            inode: listener.inode,
        })
        .collect())
}

/// What changed from `before` to `after`, in line order.
pub fn changes<'a>(
    before: &'a BTreeSet<Entry>,
    after: &'a BTreeSet<Entry>,
) -> Vec<(Event, &'a Entry)> {
    let mut changes: Vec<(Event, &Entry)> = before
        .difference(after)
        .map(|e| (Event::Close, e))
        .chain(after.difference(before).map(|e| (Event::Open, e)))
        .collect();
    // Stable: for two alike but for their process, the close comes first.
    changes.sort_by_key(|(_, e)| (e.row.port, e.row.protocol, &e.row.address, &e.row.netns));
    changes
}

/// One event as a JSON line: `event`, `time`, then the keys of a row.
#[derive(serde::Serialize)]
struct JsonEvent<'a> {
    event: &'static str,
    time: String,
    #[serde(flatten)]
    row: &'a Row,
}

/// Writes the events of a watch in the job's format.
pub struct Printer<W: Write> {
    out: W,
    json: bool,
    colour: bool,
    /// The width of each column of the table, grown as wider cells come.
    widths: Vec<usize>,
}

/// The narrowest each column starts at, so that most lines stay aligned.
const MIN_WIDTHS: [usize; 7] = [3, 5, 15, 8, 15, 7, 12];

impl<W: Write> Printer<W> {
    /// A printer in `format`, colouring the marks if `colour`.
    pub fn new(out: W, format: Format, colour: bool, netns: bool) -> Printer<W> {
        let headings = views::headings(netns);
        let widths = headings
            .iter()
            .zip(MIN_WIDTHS)
            .map(|(h, min)| h.len().max(min))
            .collect();
        Printer {
            out,
            json: format == Format::Json,
            colour,
            widths,
        }
    }

    /// Lists the listeners of the first scan, under the table's heading.
    pub fn listing(&mut self, entries: &BTreeSet<Entry>, time: SystemTime) -> io::Result<()> {
        if !self.json {
            for entry in entries {
                views::widen(&mut self.widths, &entry.row.cells());
            }
            let headings = views::headings(self.widths.len() > 6);
            write!(self.out, "{:24}     ", "TIME")?;
            views::row(&mut self.out, &headings, &self.widths)?;
        }
        let listing: Vec<_> = entries.iter().map(|e| (Event::Listening, e)).collect();
        self.changes(&listing, time)
    }

    /// Writes the changes of one scan, each with its time: RFC 3339, UTC,
    /// with milliseconds.
    pub fn changes(&mut self, changes: &[(Event, &Entry)], time: SystemTime) -> io::Result<()> {
        let time = humantime::format_rfc3339_millis(time).to_string();
        for (event, entry) in changes {
            self.event(*event, &time, &entry.row)?;
        }
        self.out.flush()
    }

    /// Writes one event.
    fn event(&mut self, event: Event, time: &str, row: &Row) -> io::Result<()> {
        let (name, mark, colour) = match event {
            Event::Listening => ("listening", '=', None),
            Event::Open => ("open", '+', Some("\x1b[32m")),
            Event::Close => ("close", '-', Some("\x1b[31m")),
        };
        if self.json {
            let line = JsonEvent {
                event: name,
                time: time.to_string(),
                row,
            };
            views::write_json_value(&line, &mut self.out)?;
            return self.out.write_all(b"\n");
        }
        let cells = row.cells();
        views::widen(&mut self.widths, &cells);
        match colour.filter(|_| self.colour) {
            Some(colour) => write!(self.out, "{time}  {colour}{mark}\x1b[0m  ")?,
            None => write!(self.out, "{time}  {mark}  ")?,
        }
        views::row(&mut self.out, &cells, &self.widths)
    }
}

/// Watches, scanning every `interval`, until SIGINT, SIGTERM or stdout's
/// reader goes away.
pub fn run(job: &Job, interval: Duration) -> anyhow::Result<()> {
    job.plan.check()?;
    let stop = SigSet::from_iter([Signal::SIGINT, Signal::SIGTERM]);
    // Before any thread starts (--netns all scans on threads): they
    // inherit the mask, so that only the signalfd sees these signals.
    stop.thread_block()
        .context("cannot block SIGINT and SIGTERM")?;
    let signals = SignalFd::with_flags(&stop, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .context("cannot open a signalfd")?;
    let stdout = io::stdout();
    let colour =
        stdout.is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty());
    let notices = job.notices();

    // The plan finds no processes: the holders do, walking less often.
    let mut plan = job.plan.clone();
    let processes = std::mem::replace(&mut plan.detail.processes, false);
    let mut holders = Holders::default();
    let mut scan_once = || -> anyhow::Result<Scan> {
        let mut scan = plan.run()?;
        if let Some(sockets) = scan.sockets.as_mut().filter(|_| processes) {
            holders.attribute(sockets);
        }
        notices.scanned(&scan);
        Ok(scan)
    };

    let mut next = Instant::now() + interval;
    let scan = scan_once()?;
    let netns = scan
        .sockets
        .as_ref()
        .is_some_and(|s| !s.namespaces.is_empty());
    let mut printer = Printer::new(
        BufWriter::with_capacity(32 * 1024, stdout.lock()),
        job.format,
        colour,
        netns,
    );
    let mut seen = entries(&scan)?;
    printer.listing(&seen, scan.started)?;
    let mut last = scan.sockets;

    let mut failures = BTreeSet::new();
    while wait(&signals, next)? {
        let started = Instant::now();
        next = (next + interval).max(started);
        match scan_once() {
            // Most scans find what the last one found: no rows to make.
            Ok(scan) if scan.sockets.as_ref().map(found) == last.as_ref().map(found) => {}
            Ok(scan) => {
                let now = entries(&scan)?;
                printer.changes(&changes(&seen, &now), scan.started)?;
                seen = now;
                last = scan.sockets;
            }
            Err(err) => {
                let cause = format!("{err:#}");
                if failures.insert(cause.clone()) {
                    log!(
                        "warning: a scan failed, so its changes are not shown; watching on: {cause}"
                    );
                }
            }
        }
    }
    Ok(())
}

/// Waits until `deadline`; `false` when the watch must stop first.
fn wait(signals: &SignalFd, deadline: Instant) -> io::Result<bool> {
    let stdout = io::stdout();
    loop {
        // Polled even when the deadline has passed, so that a watch whose
        // scans overrun their interval still hears its signals.
        let left = deadline.saturating_duration_since(Instant::now());
        // Rounded up: poll counts whole milliseconds.
        let millis = left.as_nanos().div_ceil(1_000_000);
        let timeout = PollTimeout::try_from(millis).unwrap_or(PollTimeout::MAX);
        let mut fds = [
            PollFd::new(signals.as_fd(), PollFlags::POLLIN),
            PollFd::new(stdout.as_fd(), PollFlags::empty()),
        ];
        match poll(&mut fds, timeout) {
            Ok(0) if left.is_zero() => return Ok(true),
            Ok(0) | Err(Errno::EINTR) => continue,
            Ok(_) => {
                let gone = PollFlags::POLLERR | PollFlags::POLLHUP;
                let signalled = fds[0].any().unwrap_or(false);
                let hung_up = fds[1].revents().is_some_and(|r| r.intersects(gone));
                if signalled || hung_up {
                    return Ok(false);
                }
            }
            Err(errno) => return Err(errno.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(port: u16, process: &str, pid: u32, inode: u32) -> Entry {
        Entry {
            row: Row {
                protocol: "tcp",
                port,
                address: "127.0.0.1".into(),
                scope: "loopback",
                user: "root".into(),
                uid: 0,
                process: Some(process.into()),
                pid: Some(pid),
                netns: None,
            },
            inode,
        }
    }

    #[test]
    fn a_process_change_is_a_close_then_an_open() {
        let before: BTreeSet<Entry> = [entry(22, "sshd", 7, 1), entry(80, "httpd", 9, 2)].into();
        let after: BTreeSet<Entry> = [entry(22, "sshd", 7, 1), entry(80, "nginx", 3, 2)].into();
        let changes = changes(&before, &after);
        let seen: Vec<(Event, &str)> = changes
            .iter()
            .map(|(e, entry)| (*e, entry.row.process.as_deref().unwrap()))
            .collect();
        assert_eq!(seen, [(Event::Close, "httpd"), (Event::Open, "nginx")]);
        // The same socket closed and another opened alike: two events.
        let again: BTreeSet<Entry> = [entry(22, "sshd", 7, 5), entry(80, "nginx", 3, 2)].into();
        assert_eq!(super::changes(&after, &again).len(), 2);
        assert!(super::changes(&after, &after).is_empty());
    }

    #[test]
    fn golden_lines() {
        let time = SystemTime::UNIX_EPOCH + Duration::from_millis(1_764_700_000_123);
        let mut e = entry(8080, "we\u{202e}rd\u{200b}", 20, 4);
        e.row.address = "fe80::1%veth0".into();
        let set: BTreeSet<Entry> = [entry(22, "sshd", 7, 1)].into();
        let mut out = Vec::new();
        let mut table = Printer::new(&mut out, Format::Table, false, false);
        table.listing(&set, time).unwrap();
        table.changes(&[(Event::Open, &e)], time).unwrap();
        table.changes(&[(Event::Close, &e)], time).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "\
TIME                         PROTOCOL   PORT  ADDRESS          USER      PROCESS          PID
2025-12-02T18:26:40.123Z  =  tcp          22  127.0.0.1        root      sshd             7
2025-12-02T18:26:40.123Z  +  tcp        8080  fe80::1%veth0    root      we?rd?           20
2025-12-02T18:26:40.123Z  -  tcp        8080  fe80::1%veth0    root      we?rd?           20
"
        );
        let mut out = Vec::new();
        let mut coloured = Printer::new(&mut out, Format::Table, true, false);
        coloured.changes(&[(Event::Open, &e)], time).unwrap();
        assert!(out.starts_with(b"2025-12-02T18:26:40.123Z  \x1b[32m+\x1b[0m  tcp"));
        let mut out = Vec::new();
        let mut json = Printer::new(&mut out, Format::Json, false, false);
        json.listing(&set, time).unwrap();
        json.changes(&[(Event::Close, &e)], time).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"event":"listening","time":"2025-12-02T18:26:40.123Z","protocol":"tcp","port":22,"address":"127.0.0.1","scope":"loopback","user":"root","uid":0,"process":"sshd","pid":7}
{"event":"close","time":"2025-12-02T18:26:40.123Z","protocol":"tcp","port":8080,"address":"fe80::1%veth0","scope":"loopback","user":"root","uid":0,"process":"we\u202erd\u200b","pid":20}
"#
        );
    }
}
