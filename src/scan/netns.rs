//! `--netns all`: the listeners of every network namespace of the host,
//! each scanned from inside it.
//!
//! **Finding them.** A namespace lives while a thread is in it, a file is
//! bound to it or a socket made in it is open. So: each distinct
//! `/proc/PID/ns/net` and `/proc/PID/task/TID/ns/net` (a thread that made
//! a namespace of its own, or outlived its main thread); the files bound
//! under `/run/netns` (`ip netns`) and `/var/run/docker/netns`; and the
//! nsfs mounts in the mount table of every mount namespace, reached
//! through `/proc/PID/root`. One held only by a socket is not found.
//!
//! **Naming them** (the `netns` label), in this order of preference: the
//! smallest file name under this mount namespace's `/run/netns`; `host`
//! for PID 1's; a container's short id, from the cgroup of its oldest
//! process (its init); else `net:[INODE]` as readlink writes it. Each is
//! stable for the namespace's life and between runs; of two claims to one
//! label, the less preferred falls back to `net:[INODE]`.
//!
//! **Scanning them.** A netlink socket belongs to the namespace it is made
//! in, so one worker thread, made for this and ended with the scan, enters
//! each namespace in turn (`setns`); no other thread ever moves. With
//! procfs, a namespace with a process is read from `/proc/PID/net`.
//!
//! **Failures.** A namespace gone between finding and scanning it is
//! skipped, as a later scan would see; one that cannot be opened or
//! entered is reported in [`Unscanned`], never dropped silently. Opening
//! and entering need CAP_SYS_PTRACE and CAP_SYS_ADMIN in the host's user
//! namespace, else the scan refuses to start ([`check_privilege`]): a
//! partial set must never pass for all of them.

use std::{
    collections::{HashMap, HashSet},
    fs::{self, File},
    io,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    thread,
};

use anyhow::{Context, bail, ensure};
use nix::sched::{CloneFlags, setns};

use super::{
    Found, Listener, Method, Names, Plan, Protocols, Scan, Unscanned, netlink, netlink_else_procfs,
    procfs,
};

/// Where namespaces are bound, and whether a file's name there is a label:
/// `ip netns add`'s (iproute2 writes `/var/run/netns`, which is `/run/netns`
/// on most systems), not Docker's (named by sandbox, not container).
const DIRS: [(&str, bool); 3] = [
    ("/run/netns", true),
    ("/var/run/netns", true),
    ("/var/run/docker/netns", false),
];

/// The inode of the initial user namespace (PROC_USER_INIT_INO).
const INITIAL_USER_NAMESPACE: u64 = 0xEFFF_FFFD;

/// A namespace's identity: the device and inode of its nsfs file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Id {
    dev: u64,
    ino: u64,
}

impl Id {
    fn of(meta: &fs::Metadata) -> Id {
        Id {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }

    /// The label of a namespace with no better name, as readlink writes it.
    fn fallback_name(self) -> String {
        format!("net:[{}]", self.ino)
    }
}

/// A file bound to a namespace.
#[derive(Debug)]
struct Bound {
    path: PathBuf,
    /// Its file name, when made by `ip netns`: a label.
    label: Option<String>,
    /// Found in a mount table: another file there (mounted over) means
    /// the namespace cannot be reached, not that it is gone.
    mounted: bool,
}

/// A network namespace that was found.
#[derive(Debug, Default)]
struct Space {
    /// Its `netns` label.
    name: String,
    id: Id,
    /// The processes in it (their main thread is), ascending.
    pids: Vec<u32>,
    /// The namespace links of threads in it whose main thread is not.
    threads: Vec<PathBuf>,
    /// The files bound to it.
    files: Vec<Bound>,
    /// PID 1 is in it.
    host: bool,
}

/// The namespaces of the host, and those seen that cannot be scanned.
#[derive(Debug, Default)]
struct Discovery {
    spaces: Vec<Space>,
    unscanned: Vec<Unscanned>,
    /// Where each namespace is in `spaces`.
    index: HashMap<Id, usize>,
}

impl Discovery {
    /// The namespace `id`, added when new.
    fn space(&mut self, id: Id) -> &mut Space {
        let spaces = &mut self.spaces;
        let i = *self.index.entry(id).or_insert_with(|| {
            spaces.push(Space {
                id,
                ..Space::default()
            });
            spaces.len() - 1
        });
        &mut spaces[i]
    }
}

/// Scans every network namespace of the host with the plan's method and
/// protocols, setting the method that ran, why it fell back and what could
/// not be scanned; the caller applies the selection and detail.
pub(super) fn scan(plan: &Plan, scan: &mut Scan) -> anyhow::Result<Found> {
    if plan.method == Method::Bind {
        bail!("--method bind cannot scan other network namespaces");
    }
    check_privilege()?;
    let found = discover().context("cannot list the network namespaces")?;
    scan.unscanned = found.unscanned;
    // The only thread that changes namespace; it ends in the last one.
    let outcomes = thread::scope(|scope| -> anyhow::Result<Vec<Outcome>> {
        let each = || found.spaces.iter().map(|s| scan_space(s, scan)).collect();
        thread::Builder::new()
            .name("netns".into())
            .spawn_scoped(scope, each)
            .context("cannot start the thread that enters the namespaces")?
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })?;
    if scan.method != Method::Procfs {
        scan.method = Method::Netlink;
    }
    let (mut listeners, mut interfaces, mut names) = (Vec::new(), Vec::new(), Vec::new());
    for (space, outcome) in found.spaces.into_iter().zip(outcomes) {
        match outcome {
            Ok((found, ifaces)) => {
                let netns = u32::try_from(names.len()).expect("fewer than 2^32 namespaces");
                listeners.extend(found.into_iter().map(|l| Listener { netns, ..l }));
                interfaces.extend(ifaces.into_iter().map(|(i, name)| ((netns, i), name)));
                names.push(space.name);
            }
            Err(None) => {}
            Err(Some(why)) => scan.unscanned.push(Unscanned {
                name: space.name,
                why,
            }),
        }
    }
    interfaces.sort_unstable();
    Ok(Found::Sockets(listeners, interfaces, names))
}

/// Fails, naming what is missing, unless this thread may open other
/// processes' namespaces (CAP_SYS_PTRACE) and enter them (CAP_SYS_ADMIN).
pub(super) fn check_privilege() -> anyhow::Result<()> {
    let path = "/proc/thread-self/status";
    let status = fs::read_to_string(path).with_context(|| format!("cannot read {path}"))?;
    let effective = status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .with_context(|| format!("cannot read {path}: no CapEff line"))?;
    // Their bits in linux/capability.h.
    let caps = [(21, "CAP_SYS_ADMIN"), (19, "CAP_SYS_PTRACE")];
    let missing: Vec<&str> = caps
        .into_iter()
        .filter_map(|(bit, name)| (effective & (1 << bit) == 0).then_some(name))
        .collect();
    // CapEff counts in this process's user namespace: root of its own
    // (`unshare -U -r`) has them all, and may enter none of the host's.
    let path = "/proc/thread-self/ns/user";
    let user = fs::metadata(path).with_context(|| format!("cannot read {path}"))?;
    ensure!(
        user.ino() == INITIAL_USER_NAMESPACE,
        "--netns all needs root in the host's user namespace: this process runs in a user \
         namespace of its own (user:[{}]), where its capabilities do not reach the host's \
         network namespaces",
        user.ino()
    );
    ensure!(
        missing.is_empty(),
        "--netns all needs root (CAP_SYS_ADMIN to enter network namespaces, CAP_SYS_PTRACE \
         to open those of other processes): this process lacks {}",
        missing.join(" and ")
    );
    Ok(())
}

/// Finds and names the network namespaces of the host.
fn discover() -> io::Result<Discovery> {
    // A file under /run/netns not on the nsfs device is not bound (left
    // over after a crash).
    let nsfs = fs::metadata("/proc/thread-self/ns/net")?.dev();
    let mut found = Discovery::default();

    let mut unreadable = Vec::new();
    // One process of each mount namespace, to read its nsfs mounts.
    let mut mounts: HashMap<u64, u32> = HashMap::new();
    for pid in super::owner::pids(Path::new("/proc")) {
        let main = match fs::metadata(format!("/proc/{pid}/ns/net")) {
            Ok(meta) => Some(Id::of(&meta)),
            // Gone, or its main thread exited: its threads tell.
            Err(err) if is_gone(&err) => None,
            Err(err) => {
                unreadable.push((pid, err));
                None
            }
        };
        if let Some(id) = main {
            found.space(id).pids.push(pid);
        }
        if let Ok(meta) = fs::metadata(format!("/proc/{pid}/ns/mnt")) {
            mounts.entry(meta.ino()).or_insert(pid);
        }
        // Threads in another namespace than their process's. The task
        // directory's link count is 2 + its threads: 3 is the main alone.
        let dir = format!("/proc/{pid}/task");
        if fs::metadata(&dir).is_ok_and(|m| m.nlink() <= 3) && main.is_some() {
            continue;
        }
        for entry in super::owner::threads(Path::new(&dir), pid) {
            let task = entry.path().join("ns/net");
            match fs::metadata(&task) {
                Ok(meta) if Some(Id::of(&meta)) != main => {
                    found.space(Id::of(&meta)).threads.push(task);
                }
                Err(err) if !is_gone(&err) => found.unscanned.push(Unscanned {
                    name: format!("of thread {} of pid {pid}", entry.file_name().display()),
                    why: format!("cannot open {}: {}", task.display(), reason(&err)),
                }),
                _ => {}
            }
        }
    }
    if let Some(space) = found.spaces.iter_mut().find(|s| s.pids.first() == Some(&1)) {
        space.host = true;
    }

    let mut dirs_read: HashSet<Id> = HashSet::new();
    for (dir, named) in DIRS {
        // /var/run is /run on most systems: read each directory once.
        if !fs::metadata(dir).is_ok_and(|meta| dirs_read.insert(Id::of(&meta))) {
            continue;
        }
        let entries = fs::read_dir(dir).into_iter().flatten().flatten();
        let mut names: Vec<_> = entries.map(|e| e.file_name()).collect();
        names.sort();
        for name in names {
            let path = Path::new(dir).join(&name);
            if let Ok(meta) = fs::metadata(&path)
                && meta.dev() == nsfs
                && meta.is_file()
            {
                found.space(Id::of(&meta)).files.push(Bound {
                    path,
                    label: named.then(|| name.to_string_lossy().into_owned()),
                    mounted: false,
                });
            }
        }
    }

    // nsfs mounts in every mount namespace, through a process's root.
    let mut mounts: Vec<u32> = mounts.into_values().collect();
    mounts.sort_unstable();
    for pid in mounts {
        let path = format!("/proc/{pid}/mountinfo");
        let table = match fs::read_to_string(&path) {
            Ok(table) => table,
            Err(err) if is_gone(&err) => continue,
            Err(err) => {
                found.unscanned.push(Unscanned {
                    name: format!("bound in the mount namespace of pid {pid}"),
                    why: format!("cannot read {path}: {}", reason(&err)),
                });
                continue;
            }
        };
        for (ino, point) in nsfs_mounts(&table) {
            let space = found.space(Id { dev: nsfs, ino });
            // One file will do: those found above, or the first mount.
            if space.files.is_empty() {
                space.files.push(Bound {
                    path: PathBuf::from(format!("/proc/{pid}/root{point}")),
                    label: None,
                    mounted: true,
                });
            }
        }
    }

    if !unreadable.is_empty() {
        place_unreadable(&mut found, unreadable);
    }
    name_spaces(&mut found.spaces, container_of_pid);
    Ok(found)
}

/// The network namespaces a mount table (`/proc/PID/mountinfo`) has nsfs
/// mounts of: (inode, mount point), the mount point unescaped (the table
/// writes space, tab, newline and backslash as `\ooo`).
fn nsfs_mounts(table: &str) -> Vec<(u64, String)> {
    table
        .lines()
        .filter_map(|line| {
            let (mount, fs) = line.split_once(" - ")?;
            if fs.split(' ').next() != Some("nsfs") {
                return None;
            }
            let mut fields = mount.split(' ').skip(3);
            let (root, point) = (fields.next()?, fields.next()?);
            let ino = root.strip_prefix("net:[")?.strip_suffix(']')?;
            Some((ino.parse().ok()?, unescape(point)))
        })
        .collect()
}

/// A mount table's field with its `\ooo` escapes undone.
fn unescape(field: &str) -> String {
    let mut out = Vec::with_capacity(field.len());
    let mut bytes = field.as_bytes();
    while let [first, rest @ ..] = bytes {
        match rest {
            [a @ b'0'..=b'7', b @ b'0'..=b'7', c @ b'0'..=b'7', ..] if *first == b'\\' => {
                out.push((a - b'0') << 6 | (b - b'0') << 3 | (c - b'0'));
                bytes = &rest[3..];
            }
            _ => {
                out.push(*first);
                bytes = rest;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Places the processes whose namespace link a security module refused
/// by their `/proc/PID/net/dev`, one inode per namespace: in one already
/// found (which may tell PID 1's), or else in one that cannot be scanned.
fn place_unreadable(found: &mut Discovery, unreadable: Vec<(u32, io::Error)>) {
    let entry = |pid: u32| fs::metadata(format!("/proc/{pid}/net/dev")).map(|m| m.ino());
    let mut known: HashMap<u64, usize> = HashMap::new();
    for (i, space) in found.spaces.iter().enumerate() {
        if let Some(ino) = space.pids.iter().find_map(|&pid| entry(pid).ok()) {
            known.insert(ino, i);
        }
    }
    let mut unknown: HashSet<u64> = HashSet::new();
    for (pid, err) in unreadable {
        let Ok(ino) = entry(pid) else {
            // Gone, or nothing at all can be learned of it.
            continue;
        };
        match known.get(&ino) {
            Some(&i) if pid == 1 => found.spaces[i].host = true,
            None if unknown.insert(ino) => found.unscanned.push(Unscanned {
                name: format!("of pid {pid}"),
                why: format!("cannot open /proc/{pid}/ns/net: {}", reason(&err)),
            }),
            _ => {}
        }
    }
}

/// A process that belongs to a container, and how old it is.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Member {
    /// The container's short id.
    id: String,
    /// When the process started (clock ticks since boot, `/proc/PID/stat`).
    started: u64,
    /// Its innermost pid is 1: the init of a PID namespace.
    init: bool,
}

/// Gives each namespace its label (see the module's documentation);
/// `container` tells of a process the container it belongs to, if any.
///
/// A container's id goes to the namespace of its oldest process (earliest
/// start, then a PID namespace's init, then the lower pid), which no later
/// process can displace; a pod's namespace, holding several containers'
/// inits, takes the oldest's (the sandbox's).
fn name_spaces(spaces: &mut [Space], container: impl Fn(u32) -> Option<Member>) {
    // Container id → (age key, namespace) of its oldest process.
    type Age = (u64, bool, u32);
    let mut oldest: HashMap<String, (Age, usize)> = HashMap::new();
    for (i, space) in spaces.iter().enumerate() {
        // Not the host's: that would read the cgroup of every process.
        if space.host || space.files.iter().any(|f| f.label.is_some()) {
            continue;
        }
        for (pid, member) in space.pids.iter().filter_map(|&p| Some((p, container(p)?))) {
            let age = (member.started, !member.init, pid);
            let entry = oldest.entry(member.id).or_insert((age, i));
            *entry = (*entry).min((age, i));
        }
    }
    let mut claims: Vec<Option<(Age, String)>> = vec![None; spaces.len()];
    for (id, (age, i)) in oldest {
        if claims[i].as_ref().is_none_or(|(a, _)| age < *a) {
            claims[i] = Some((age, id));
        }
    }
    // (label, preference, the pid that gave it, index)
    let mut labels: Vec<(String, u8, u32, usize)> = Vec::with_capacity(spaces.len());
    for (i, space) in spaces.iter().enumerate() {
        let first = space.pids.first().copied().unwrap_or(u32::MAX);
        let label = if let Some(name) = space.files.iter().filter_map(|f| f.label.as_ref()).min() {
            (name.clone(), 0, first)
        } else if space.host {
            ("host".to_string(), 1, 1)
        } else if let Some(((_, _, pid), id)) = claims[i].take() {
            (id, 2, pid)
        } else {
            (space.id.fallback_name(), 3, first)
        };
        labels.push((label.0, label.1, label.2, i));
    }
    // A label claimed twice stays with the most preferred claim.
    labels.sort_unstable();
    for (k, (label, _, _, i)) in labels.iter().enumerate() {
        spaces[*i].name = if k > 0 && labels[k - 1].0 == *label {
            spaces[*i].id.fallback_name()
        } else {
            label.clone()
        };
    }
}

/// The container process `pid` belongs to (from its cgroup), with its
/// start time and whether it is a PID namespace's init.
fn container_of_pid(pid: u32) -> Option<Member> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let id = container_id(&text)?;
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 22, counted after the command name (which may hold anything).
    let after_command = stat.rsplit_once(')')?.1;
    let started = after_command.split_whitespace().nth(19)?.parse().ok()?;
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let nspid = status.lines().find_map(|l| l.strip_prefix("NSpid:"));
    let init = nspid.and_then(|pids| pids.split_whitespace().last()) == Some("1");
    Some(Member { id, started, init })
}

/// The short id (12 hex digits) of the container a `/proc/PID/cgroup` file
/// places its process in: the innermost path component that names one,
/// `docker-`, `cri-containerd-`, `crio-` or `libpod-` `<id>.scope` (systemd
/// drivers) or `<id>` alone (cgroupfs drivers), `<id>` 64 hex digits.
fn container_id(cgroup: &str) -> Option<String> {
    let paths = cgroup.lines().filter_map(|line| line.splitn(3, ':').nth(2));
    let mut components = paths.flat_map(|path| path.rsplit('/'));
    components.find_map(|component| {
        let id = ["docker-", "cri-containerd-", "crio-", "libpod-"]
            .iter()
            .find_map(|prefix| component.strip_prefix(prefix)?.strip_suffix(".scope"))
            .unwrap_or(component);
        let hex = id.len() == 64 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        hex.then(|| id[..12].to_string())
    })
}

/// Whether an error opening or entering a namespace means it is gone.
fn is_gone(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::ENOENT | libc::ESRCH | libc::EINVAL)
    )
}

/// What went wrong, without the `(os error N)` that io::Error adds.
fn reason(err: &io::Error) -> String {
    let mut text = err.to_string();
    if let Some(end) = text.rfind(" (os error ") {
        text.truncate(end);
    }
    text
}

/// What became of one namespace: its listeners and the names of their
/// interfaces; `Err(None)` when it is gone, `Err(Some(why))` when it exists
/// but could not be scanned.
type Outcome = Result<(Vec<Listener>, Names), Option<String>>;

/// Scans one namespace, on the worker thread; `auto` becomes procfs once
/// netlink is refused.
fn scan_space(space: &Space, scan: &mut Scan) -> anyhow::Result<Outcome> {
    let protocols = scan.protocols;
    if scan.method == Method::Procfs
        && let Some(found) = read_from_outside(space, protocols)?
    {
        return Ok(Ok(found));
    }
    let file = match open(space) {
        Ok(file) => file,
        Err(why) => return Ok(Err(why)),
    };
    if let Err(errno) = setns(&file, CloneFlags::CLONE_NEWNET) {
        let err = io::Error::from(errno);
        let why = (!is_gone(&err)).then(|| format!("cannot enter it: {}", reason(&err)));
        return Ok(Err(why));
    }
    // This thread is in the namespace now; thread-self, not self: the
    // latter is the main thread's namespace.
    let (found, _, fallback) = netlink_else_procfs(
        scan.method,
        &format!(" in network namespace {}", space.name),
        || netlink::listeners(protocols),
        || procfs::listeners(Path::new("/proc/thread-self/net"), protocols),
    )?;
    if fallback.is_some() {
        (scan.method, scan.fallback) = (Method::Procfs, fallback);
    }
    Ok(Ok(found))
}

/// Opens the namespace's file: one bound under /run, or the namespace link
/// of a process still in it; `Err` as in [`Outcome`].
fn open(space: &Space) -> Result<File, Option<String>> {
    let mut refused = None;
    let links = space
        .pids
        .iter()
        .map(|pid| (PathBuf::from(format!("/proc/{pid}/ns/net")), false))
        .chain(space.threads.iter().map(|t| (t.clone(), false)));
    let files = space.files.iter().map(|f| (f.path.clone(), f.mounted));
    for (path, mounted) in files.chain(links) {
        // A pid may have been taken by a process of another namespace, a
        // file replaced: only the same one will do.
        let why = match File::open(&path) {
            Ok(file) if file.metadata().is_ok_and(|m| Id::of(&m) == space.id) => return Ok(file),
            Ok(_) if mounted => format!("{} is another file (mounted over)", path.display()),
            Err(err) if !is_gone(&err) => {
                format!("cannot open {}: {}", path.display(), reason(&err))
            }
            _ => continue,
        };
        refused.get_or_insert(why);
    }
    Err(refused)
}

/// The namespace's tables read from `/proc/PID/net` of a process in it,
/// without entering it; `None` when no process of it is left.
fn read_from_outside(
    space: &Space,
    protocols: Protocols,
) -> anyhow::Result<Option<(Vec<Listener>, Names)>> {
    let inside = |pid: u32| {
        fs::metadata(format!("/proc/{pid}/ns/net")).is_ok_and(|m| Id::of(&m) == space.id)
    };
    for &pid in space.pids.iter().filter(|&&pid| inside(pid)) {
        let read = procfs::listeners(Path::new(&format!("/proc/{pid}/net")), protocols);
        // Still there afterwards: the tables were the namespace's.
        if !inside(pid) {
            continue;
        }
        return read.map(Some).with_context(|| {
            format!(
                "reading the /proc listener tables of network namespace {} failed",
                space.name
            )
        });
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn container_ids_of_every_runtime() {
        for cgroup in [
            format!("0::/system.slice/docker-{ID}.scope\n"),
            format!(
                "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice/cri-containerd-{ID}.scope\n"
            ),
            format!("0::/kubepods.slice/kubepods-pod2.slice/crio-{ID}.scope\n"),
            format!("0::/machine.slice/libpod-{ID}.scope/container\n"),
            format!("12:pids:/docker/{ID}\n11:memory:/docker/{ID}\n0::/\n"),
            format!("0::/kubepods/besteffort/pod3/{ID}\n"),
            format!("0::/system.slice/docker-{ID}.scope/system.slice/nginx.service\n"),
            // Docker in Docker: the innermost container.
            format!("0::/docker/{}/docker/{ID}\n", "f".repeat(64)),
        ] {
            assert_eq!(
                container_id(&cgroup).as_deref(),
                Some("0123456789ab"),
                "{cgroup}"
            );
        }
    }

    #[test]
    fn what_is_not_a_container() {
        for cgroup in [
            "0::/\n".to_string(),
            "0::/user.slice/user-0.slice/session-1.scope\n".into(),
            format!("0::/machine.slice/libpod-conmon-{ID}.scope\n"),
            format!("0::/system.slice/crio-conmon-{ID}.scope\n"),
            format!("0::/system.slice/docker-{}.scope\n", &ID[..63]),
            format!("0::/system.slice/docker-{}.scope\n", ID.to_uppercase()),
            format!("0::/system.slice/other-{ID}.scope\n"),
            "garbage".into(),
        ] {
            assert_eq!(container_id(&cgroup), None, "{cgroup}");
        }
    }

    #[test]
    fn nsfs_mounts_of_network_namespaces() {
        let table = "\
22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
530 29 0:4 net:[4026532281] /run/netns/blue rw shared:210 - nsfs nsfs rw
531 29 0:4 mnt:[4026532290] /run/mnt rw - nsfs nsfs rw
532 29 0:4 net:[4026532300] /srv/my\\040net rw shared:5 master:3 - nsfs nsfs rw
533 29 0:4 net:[4026532301] /odd\\134name rw - nsfs nsfs rw
";
        assert_eq!(
            nsfs_mounts(table),
            [
                (4026532281, "/run/netns/blue".to_string()),
                (4026532300, "/srv/my net".to_string()),
                (4026532301, "/odd\\name".to_string()),
            ]
        );
    }

    fn space(ino: u64, pids: &[u32], named: &[&str], host: bool) -> Space {
        Space {
            name: String::new(),
            id: Id { dev: 4, ino },
            pids: pids.to_vec(),
            files: named
                .iter()
                .map(|n| Bound {
                    path: PathBuf::from(format!("/run/netns/{n}")),
                    label: Some(n.to_string()),
                    mounted: false,
                })
                .collect(),
            threads: Vec::new(),
            host,
        }
    }

    /// The labels `name_spaces` gives, each process of `containers`
    /// (pid, id) started at its pid's time and no init.
    fn names(spaces: &mut [Space], containers: &[(u32, &str)]) -> Vec<String> {
        let members: Vec<(u32, Member)> = containers
            .iter()
            .map(|(pid, id)| {
                let member = Member {
                    id: id.to_string(),
                    started: u64::from(*pid),
                    init: false,
                };
                (*pid, member)
            })
            .collect();
        names_of(spaces, &members)
    }

    fn names_of(spaces: &mut [Space], members: &[(u32, Member)]) -> Vec<String> {
        name_spaces(spaces, |pid| {
            members
                .iter()
                .find(|(p, _)| *p == pid)
                .map(|(_, m)| m.clone())
        });
        spaces.iter().map(|s| s.name.clone()).collect()
    }

    #[test]
    fn a_container_label_stays_with_its_init() {
        let member = |id: &str, started: u64, init: bool| Member {
            id: id.to_string(),
            started,
            init,
        };
        // The container's init, pid 300, is in namespace 11. A namespace
        // made inside the container later (a sandbox, Docker in Docker
        // without a cgroup of its own) gets a lower pid (pids wrapped):
        // the id stays with the init's namespace.
        let mut spaces = [
            space(10, &[1], &[], true),
            space(11, &[300, 301], &[], false),
            space(12, &[40], &[], false),
        ];
        let members = [
            (300, member("aaaaaaaaaaaa", 1000, true)),
            (301, member("aaaaaaaaaaaa", 1005, false)),
            (40, member("aaaaaaaaaaaa", 9000, true)),
        ];
        assert_eq!(
            names_of(&mut spaces, &members),
            ["host", "aaaaaaaaaaaa", "net:[12]"]
        );
        // Started in the same clock tick: a PID namespace's init first.
        let members = [
            (300, member("aaaaaaaaaaaa", 1000, true)),
            (40, member("aaaaaaaaaaaa", 1000, false)),
        ];
        assert_eq!(
            names_of(&mut spaces, &members),
            ["host", "aaaaaaaaaaaa", "net:[12]"]
        );
        // A pod: one namespace, the inits of two containers; the oldest
        // (the sandbox) names it. The other container's id names nothing.
        let mut spaces = [space(11, &[300, 310], &[], false)];
        let members = [
            (300, member("bbbbbbbbbbbb", 1000, true)),
            (310, member("aaaaaaaaaaaa", 1200, true)),
        ];
        assert_eq!(names_of(&mut spaces, &members), ["bbbbbbbbbbbb"]);
    }

    #[test]
    fn labels_in_order_of_preference() {
        let mut spaces = [
            space(10, &[1, 2, 3], &[], true),
            space(11, &[], &["blue", "azure"], false),
            space(12, &[50, 60], &["red"], false),
            space(13, &[70, 71], &[], false),
            space(14, &[80], &[], false),
            space(15, &[], &[], false),
        ];
        let containers = [
            (60, "aaaaaaaaaaaa"),
            (71, "bbbbbbbbbbbb"),
            (2, "cccccccccccc"),
        ];
        assert_eq!(
            names(&mut spaces, &containers),
            [
                "host",
                "azure",
                "red",
                "bbbbbbbbbbbb",
                "net:[14]",
                "net:[15]"
            ]
        );
    }

    #[test]
    fn a_label_is_never_taken_twice() {
        // A container with a namespace of its own inside: the container's
        // lowest pid keeps the id. An `ip netns` name "host" wins over
        // PID 1's namespace.
        let mut spaces = [
            space(10, &[1], &[], true),
            space(11, &[], &["host"], false),
            space(12, &[90, 91], &[], false),
            space(13, &[40], &[], false),
        ];
        let containers = [(91, "aaaaaaaaaaaa"), (40, "aaaaaaaaaaaa")];
        assert_eq!(
            names(&mut spaces, &containers),
            ["net:[10]", "host", "net:[12]", "aaaaaaaaaaaa"]
        );
    }
}
