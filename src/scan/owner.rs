//! Which process holds each listener: the socket's inode, found among the
//! descriptors in `/proc/PID/fd` (links named `socket:[INODE]`).
//!
//! The answer for a socket is the lowest pid among the processes that run
//! as the socket's owner and hold it; when none of those holds it (a
//! daemon that bound as root and then changed user, a socket passed to
//! another user), the lowest pid among all processes that hold it. Never a
//! guess: a socket no readable process holds stays unattributed (pid 0).
//!
//! What keeps it cheap (`ss -p` reads every descriptor of every process):
//! - processes are walked in pid order, first only those whose user owns a
//!   wanted socket (the kernel reports each socket's uid; `/proc/PID`
//!   belongs to the process's user), and the walk stops as soon as every
//!   wanted socket has its answer;
//! - the other processes are read only for sockets still without a holder
//!   of their owner's, and only as far as the answer can still change;
//! - a command name is read once per process that holds a listener;
//! - descriptors are read by number rather than listed (see
//!   `Walk::descriptors`), with many processes by a thread per CPU (at
//!   most 4), the answers taken in pid order as one reader would.
//!
//! Reading another user's descriptors needs root, or CAP_SYS_PTRACE and
//! CAP_DAC_READ_SEARCH; without them those processes are counted in
//! [`Processes::denied`]. The answer never depends on that privilege: a
//! socket whose owner has a process that could not be read, and that no
//! readable process of its owner holds, stays unattributed; so does one
//! whose lowest holder among the others has a higher pid than a process
//! that could not be read. (Otherwise a root socket that a root activator
//! hands to a service would be the activator's as root, the service's as
//! the service's user.)

use std::{
    fs,
    io::ErrorKind,
    os::{fd::AsFd, unix::fs::MetadataExt},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicUsize, Ordering},
        mpsc,
    },
    thread,
};

use rustix::{
    fs::{Dir, PROC_SUPER_MAGIC, fstatfs},
    io::Errno,
    path::DecInt,
};

use super::Listener;

/// Processes a reading thread takes at a time.
const CHUNK: usize = 4;
/// Processes that make another reading thread worth its start.
const PER_THREAD: usize = 200;

/// The processes found holding listeners.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Processes {
    /// The command name (comm) of each pid that holds a listener, by pid,
    /// sorted.
    pub names: Vec<(u32, String)>,
    /// Listeners no process was found for.
    pub unattributed: usize,
    /// Processes whose descriptors could not be read (permission denied).
    pub denied: usize,
}

/// A socket to find, and what the walk learned about it.
struct Wanted {
    /// Its place in the listener list.
    index: u32,
    /// The lowest pid found holding it that does not run as its owner.
    other: u32,
    /// Found in a process of its owner: the answer is final.
    done: bool,
}

/// Sets the `pid` of each listener to the process that holds it (see the
/// module's rule), reading the processes under `proc_root` (`/proc`).
pub fn attribute(listeners: &mut [Listener], proc_root: &Path) -> Processes {
    // Sorted by inode; `inodes[i]` is `wanted[i]`'s (kept apart, and small,
    // for 60,000 listeners).
    let mut order: Vec<u32> = (0..listeners.len() as u32).collect();
    order.sort_unstable_by_key(|&i| listeners[i as usize].inode);
    let inodes: Vec<u32> = order.iter().map(|&i| listeners[i as usize].inode).collect();
    let mut wanted: Vec<Wanted> = order
        .into_iter()
        .map(|index| Wanted {
            index,
            other: 0,
            done: false,
        })
        .collect();
    let mut owners: Vec<u32> = listeners.iter().map(|l| l.uid).collect();
    owners.sort_unstable();
    owners.dedup();
    let mut processes = Processes::default();
    let mut left = wanted.len();
    // Owners some of whose processes could not be read: their sockets
    // have no answer unless one of their readable processes holds them,
    // and the lowest denied pid, below which no fallback answer holds.
    let mut denied_owners: Vec<u32> = Vec::new();
    let mut lowest_denied = u32::MAX;

    // First the processes of the sockets' owners.
    let mut others = Vec::new();
    in_order(
        proc_root,
        &pids(proc_root),
        &inodes,
        Some(&owners),
        |held| {
            let Some(uid) = held.uid else { return true };
            if owners.binary_search(&uid).is_err() {
                others.push(held.pid);
                return true;
            }
            for inode in held.inodes {
                let w = &mut wanted[inodes.binary_search(&inode).unwrap()];
                if w.done {
                    continue;
                }
                let listener = &mut listeners[w.index as usize];
                if listener.uid == uid {
                    listener.pid = held.pid;
                    w.done = true;
                    left -= 1;
                } else if w.other == 0 {
                    w.other = held.pid;
                }
            }
            if held.denied > 0 {
                processes.denied += held.denied;
                denied_owners.push(uid);
                lowest_denied = lowest_denied.min(held.pid);
            }
            left > 0
        },
    );
    // A socket whose owner has processes that could not be read may be
    // held by one of them: the first tier's answer is unknown, so there is
    // none (never a process of another tier, which a reader with more
    // privilege would not give).
    for w in &mut wanted {
        if !w.done && denied_owners.contains(&listeners[w.index as usize].uid) {
            w.done = true;
            w.other = 0;
            left -= 1;
        }
    }

    // Then the others, for sockets no process of their owner holds: the
    // first holder found in pid order, unless a lower one was seen above.
    if left > 0 {
        let mut unheld = wanted.iter().filter(|w| !w.done && w.other == 0).count();
        let last_seen = wanted
            .iter()
            .filter(|w| !w.done)
            .map(|w| w.other)
            .max()
            .unwrap_or(0);
        in_order(proc_root, &others, &inodes, None, |held| {
            if unheld == 0 && held.pid > last_seen {
                return false;
            }
            for inode in held.inodes {
                let w = &mut wanted[inodes.binary_search(&inode).unwrap()];
                if w.done {
                    continue;
                }
                if w.other == 0 {
                    unheld -= 1;
                }
                if w.other == 0 || held.pid < w.other {
                    w.other = held.pid;
                }
                w.done = true;
            }
            if held.denied > 0 {
                processes.denied += held.denied;
                lowest_denied = lowest_denied.min(held.pid);
            }
            true
        });
        // The lowest holder, unless a process below it could not be read.
        for w in wanted.iter().filter(|w| w.other != 0) {
            let listener = &mut listeners[w.index as usize];
            if listener.pid == 0 && w.other < lowest_denied {
                listener.pid = w.other;
            }
        }
    }

    // The command names, once per process.
    let mut walk = Walk::new(proc_root);
    let mut pids: Vec<u32> = listeners
        .iter()
        .map(|l| l.pid)
        .filter(|&p| p != 0)
        .collect();
    pids.sort_unstable();
    pids.dedup();
    processes.names = pids
        .into_iter()
        .filter_map(|pid| Some((pid, walk.comm(pid)?)))
        .collect();
    for listener in listeners.iter_mut() {
        // It exited before its name could be read: not a guess either.
        if super::lookup(&processes.names, listener.pid).is_none() {
            listener.pid = 0;
            processes.unattributed += 1;
        }
    }
    processes
}

/// What one process was found to hold.
#[derive(Default)]
struct Held {
    pid: u32,
    /// The user it runs as, when asked for; `None` if it exited.
    uid: Option<u32>,
    /// The wanted sockets it holds, in descriptor order.
    inodes: Vec<u32>,
    /// Descriptor directories that could not be read (permission denied).
    denied: usize,
}

/// Reads the processes of `pids` (those that run as one of `owners`, all
/// when `None`) for the sockets of `inodes`, and hands what each holds to
/// `take` in pid order until it returns false. Several threads read ahead
/// of `take`: one reader is as slow as `ss -p`, and the kernel serves
/// readers of different processes at once.
fn in_order(
    proc_root: &Path,
    pids: &[u32],
    inodes: &[u32],
    owners: Option<&[u32]>,
    mut take: impl FnMut(Held) -> bool,
) {
    let read = |walk: &mut Walk, pid: u32| {
        let mut held = Held {
            pid,
            ..Held::default()
        };
        if let Some(owners) = owners {
            held.uid = walk.uid(pid);
            if held
                .uid
                .is_none_or(|uid| owners.binary_search(&uid).is_err())
            {
                return held;
            }
        }
        walk.sockets(pid, &mut held.denied, |inode| {
            if inodes.binary_search(&inode).is_ok() {
                held.inodes.push(inode);
            }
        });
        held
    };
    // A reader per PER_THREAD processes, up to one per CPU and at most 4:
    // more gain little and cost memory.
    let cpus = thread::available_parallelism().map_or(1, |n| n.get().min(4));
    let threads = cpus.min(pids.len() / PER_THREAD);
    if threads <= 1 {
        let mut walk = Walk::new(proc_root);
        pids.iter().all(|&pid| take(read(&mut walk, pid)));
        return;
    }
    let chunks: Vec<&[u32]> = pids.chunks(CHUNK).collect();
    let next = AtomicUsize::new(0);
    thread::scope(|scope| {
        // A short queue: readers wait while `take` is busy rather than
        // pile up what they found.
        let (sender, receiver) = mpsc::sync_channel(threads);
        for _ in 0..threads {
            let sender = sender.clone();
            let (chunks, next) = (&chunks, &next);
            scope.spawn(move || {
                let mut walk = Walk::new(proc_root);
                // Stops when every chunk is taken or `take` has stopped.
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(chunk) = chunks.get(i) else { break };
                    let held: Vec<Held> = chunk.iter().map(|&pid| read(&mut walk, pid)).collect();
                    if sender.send((i, held)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(sender);
        let mut ready: Vec<Option<Vec<Held>>> = chunks.iter().map(|_| None).collect();
        let mut first = 0;
        for (i, held) in receiver {
            ready[i] = Some(held);
            while let Some(held) = ready.get_mut(first).and_then(Option::take) {
                first += 1;
                for held in held {
                    if !take(held) {
                        next.store(chunks.len(), Ordering::Relaxed);
                        return;
                    }
                }
            }
        }
    });
}

/// The pids of the processes under `proc_root`, ascending.
pub(crate) fn pids(proc_root: &Path) -> Vec<u32> {
    let mut pids: Vec<u32> = fs::read_dir(proc_root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    pids
}

/// The thread directories (`/proc/PID/task/TID`) in `task_dir` of process
/// `pid`, but its main thread's.
pub(crate) fn threads(task_dir: &Path, pid: u32) -> impl Iterator<Item = fs::DirEntry> + use<> {
    let main = pid.to_string();
    let tasks = fs::read_dir(task_dir).into_iter().flatten().flatten();
    tasks.filter(move |task| task.file_name() != main.as_str())
}

/// Reads processes, reusing one path buffer.
struct Walk<'a> {
    root: &'a Path,
    path: PathBuf,
}

impl Walk<'_> {
    fn new(root: &Path) -> Walk<'_> {
        Walk {
            root,
            path: root.to_path_buf(),
        }
    }

    /// `/proc/PID/REST...` in the buffer.
    fn at(&mut self, pid: u32, rest: &[&str]) -> &Path {
        self.path.as_mut_os_string().clear();
        self.path.push(self.root);
        self.path.push(pid.to_string());
        for part in rest {
            self.path.push(part);
        }
        &self.path
    }

    /// The user a process runs as: the owner of its /proc directory.
    fn uid(&mut self, pid: u32) -> Option<u32> {
        fs::metadata(self.at(pid, &[])).ok().map(|m| m.uid())
    }

    /// Calls `each` with the inode of each socket process `pid` holds, in
    /// descriptor order. A process that exited is skipped; one whose
    /// descriptors may not be read is counted. A process whose main thread
    /// has exited shows no descriptors in `/proc/PID/fd`: its other
    /// threads' are read instead (`/proc/PID/task/TID/fd`).
    fn sockets(&mut self, pid: u32, denied: &mut usize, mut each: impl FnMut(u32)) {
        self.at(pid, &["fd"]);
        if self.descriptors(denied, &mut each) == Some(0) {
            // No descriptor at all: a kernel thread, or a process whose
            // main thread has exited while others live on.
            for task in threads(self.at(pid, &["task"]), pid) {
                self.path.push(task.file_name());
                self.path.push("fd");
                let found = self.descriptors(denied, &mut each);
                self.path.pop();
                self.path.pop();
                // The threads of a process share one table, as a rule.
                if found.is_some_and(|n| n > 0) {
                    break;
                }
            }
        }
    }

    /// Calls `each` with the inode of each socket in the descriptor
    /// directory at the buffer's path: how many descriptors there were,
    /// `None` when it could not be read.
    fn descriptors(&mut self, denied: &mut usize, each: &mut impl FnMut(u32)) -> Option<u64> {
        let dir = fs::File::open(&self.path)
            .inspect_err(|err| *denied += usize::from(err.kind() == ErrorKind::PermissionDenied))
            .ok()?;
        // Listing the directory costs the kernel half as much as reading
        // the links, so the descriptors are read by number, lowest first,
        // until the count of open ones that Linux 6.2+ gives as the
        // directory's size is reached; only what follows a gap is listed.
        let open = dir.metadata().map_or(0, |m| m.len());
        let (mut count, mut fd) = (0, 0);
        while count < open {
            let link = socket_at(&dir, DecInt::new(fd));
            if link == Err(Errno::NOENT) {
                break;
            }
            (count, fd) = (count + 1, fd + 1);
            if let Ok(Some(inode)) = link {
                each(inode);
            }
        }
        if open > 0 && count == open {
            return Some(count);
        }
        // In procfs a descriptor's offset in the listing is its number + 2.
        let procfs = fstatfs(&dir).is_ok_and(|fs| fs.f_type == PROC_SUPER_MAGIC);
        let Ok(mut list) = Dir::new(dir) else {
            return Some(count);
        };
        if procfs && fd > 0 {
            let _ = list.seek(fd as i64 + 2);
        }
        while let Some(Ok(entry)) = list.read() {
            let number = entry.file_name().to_str().ok().and_then(|n| n.parse().ok());
            if number.is_none_or(|n: u64| n < fd) {
                continue; // `.`, `..`, or read above
            }
            count += 1;
            if let Ok(Some(inode)) = list.fd().and_then(|dir| socket_at(dir, entry.file_name())) {
                each(inode);
            }
        }
        Some(count)
    }

    /// The command name of process `pid`, or `None` if it exited.
    fn comm(&mut self, pid: u32) -> Option<String> {
        let bytes = fs::read(self.at(pid, &["comm"])).ok()?;
        let name = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
        Some(String::from_utf8_lossy(name).into_owned())
    }
}

/// The command name of process `pid` under `proc_root` (`/proc`), or
/// `None` if it exited: how `--watch` checks, between two walks, that the
/// holders it knows are still there as they were.
pub fn comm(proc_root: &Path, pid: u32) -> Option<String> {
    Walk::new(proc_root).comm(pid)
}

/// The inodes of the sockets process `pid` under `proc_root` holds,
/// sorted, or `None` if its descriptors cannot be read (it exited, or
/// permission denied).
pub fn sockets_of(proc_root: &Path, pid: u32) -> Option<Vec<u32>> {
    let mut walk = Walk::new(proc_root);
    fs::metadata(walk.at(pid, &["fd"])).ok()?;
    let mut inodes = Vec::new();
    let mut denied = 0;
    walk.sockets(pid, &mut denied, |inode| inodes.push(inode));
    inodes.sort_unstable();
    (denied == 0).then_some(inodes)
}

/// The inode of the socket that descriptor `name` in `dir` is, if it is
/// one (its link reads `socket:[INODE]`). The link is read relative to the
/// open directory, which spares the kernel a walk of the whole path, and
/// into a buffer on the stack: a longer link is not a socket's.
fn socket_at(dir: impl AsFd, name: impl rustix::path::Arg) -> rustix::io::Result<Option<u32>> {
    let mut link = [0; 24];
    let len = rustix::fs::readlinkat_raw(dir, name, &mut link)?;
    Ok(std::str::from_utf8(&link[..len])
        .ok()
        .and_then(|l| l.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::Protocol;
    use std::{net::IpAddr, os::unix::fs::symlink};

    fn listener(inode: u32, uid: u32) -> Listener {
        Listener {
            protocol: Protocol::Tcp,
            address: IpAddr::from([0, 0, 0, 0]),
            interface: 0,
            port: 1,
            uid,
            inode,
            pid: 0,
            netns: 0,
        }
    }

    /// A fake /proc: each process with its sockets and name. The owner of
    /// each directory is ours, so the uid rule is tested with our uid.
    fn fake_proc(procs: &[(u32, &[u32], &str)]) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        for (pid, sockets, name) in procs {
            let dir = root.path().join(pid.to_string());
            fs::create_dir_all(dir.join("fd")).unwrap();
            fs::write(dir.join("comm"), format!("{name}\n")).unwrap();
            symlink("/dev/null", dir.join("fd/0")).unwrap();
            symlink("pipe:[5]", dir.join("fd/1")).unwrap();
            for (fd, inode) in sockets.iter().enumerate() {
                symlink(
                    format!("socket:[{inode}]"),
                    dir.join(format!("fd/{}", fd + 3)),
                )
                .unwrap();
            }
        }
        fs::create_dir(root.path().join("self")).unwrap();
        root
    }

    fn me() -> u32 {
        fs::metadata("/proc/self").unwrap().uid()
    }

    #[test]
    fn lowest_pid_of_the_owner_and_never_a_guess() {
        let root = fake_proc(&[
            (300, &[11, 12], "worker"),
            (20, &[11], "master"),
            (7, &[99], "other"),
        ]);
        let uid = me();
        let mut listeners = [listener(11, uid), listener(12, uid), listener(13, uid)];
        let processes = attribute(&mut listeners, root.path());
        assert_eq!(listeners.map(|l| l.pid), [20, 300, 0]);
        assert_eq!(
            processes.names,
            [(20, "master".to_string()), (300, "worker".to_string())]
        );
        assert_eq!(processes.unattributed, 1);
    }

    #[test]
    fn several_readers_answer_as_one() {
        // Enough processes for more than one reading thread.
        let procs: Vec<(u32, Vec<u32>)> = (1..=3 * PER_THREAD as u32)
            .map(|pid| match pid {
                5 => (pid, vec![31]),
                400 | 401 => (pid, vec![32, 33]),
                555 => (pid, vec![33, 31]),
                _ => (pid, vec![]),
            })
            .collect();
        let procs: Vec<(u32, &[u32], &str)> =
            procs.iter().map(|(pid, s)| (*pid, &s[..], "p")).collect();
        let root = fake_proc(&procs);
        let uid = me();
        let mut listeners = [listener(33, uid), listener(31, uid), listener(32, uid)];
        let processes = attribute(&mut listeners, root.path());
        assert_eq!(listeners.map(|l| l.pid), [400, 5, 400]);
        assert_eq!(processes.unattributed, 0);
    }

    #[test]
    fn a_socket_of_another_owner_gets_the_lowest_holder() {
        // The processes run as us; the sockets belong to another user, as
        // when a daemon binds as root and then changes user.
        let root = fake_proc(&[(50, &[21], "late"), (40, &[21, 22], "early")]);
        let other = me().wrapping_add(1);
        let mut listeners = [listener(21, other), listener(22, other)];
        let processes = attribute(&mut listeners, root.path());
        assert_eq!(listeners.map(|l| l.pid), [40, 40]);
        assert_eq!(processes.unattributed, 0);
    }

    #[test]
    fn finds_our_own_socket_in_the_real_proc() {
        let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = socket.local_addr().unwrap().port();
        let (mut found, _) = crate::scan::netlink::listeners(crate::scan::Protocols::TCP).unwrap();
        found.retain(|l| l.port == port);
        assert_eq!(found.len(), 1);
        let processes = attribute(&mut found, Path::new("/proc"));
        assert_eq!(found[0].pid, std::process::id());
        let comm = fs::read_to_string("/proc/self/comm").unwrap();
        assert_eq!(processes.names[0].1, comm.trim_end());
    }
}
