//! Replacing the `.prom` file atomically, for node_exporter's textfile
//! collector.
//!
//! The recipe (node_exporter README "Textfile Collector"; client_golang
//! `WriteToTextfile`), with what those leave out:
//! - the temp file lives in the target's own directory, since rename(2) is
//!   atomic only within one filesystem, and its name ends in `.tmp`, since
//!   the collector reads every name ending in `.prom`, dot-files included;
//! - it is created unnamed (O_TMPFILE) and locked (flock) at once, before
//!   it has a name. The lock lasts until the run ends, so that a later run
//!   can tell the temp file of a run that was killed (its lock is free)
//!   from that of a run still writing, and remove only the former; with no
//!   name before its lock, the temp file of a live run is never seen
//!   unlocked, so never taken for abandoned;
//! - it is written, chmod 0644 (through its descriptor: it is created 0600,
//!   rename keeps the mode, and node_exporter runs as another user) and
//!   fsynced while unnamed; then linkat names it through /proc/self/fd,
//!   with a random name no file had (linkat never replaces one) that fits
//!   in NAME_MAX however long FILE's name is, and it is renamed over FILE.
//!   A run that fails or is killed before the link leaves nothing behind;
//!   one killed between link and rename leaves a temp file that the next
//!   run removes;
//! - without /proc, it is named right after its lock (linkat with
//!   AT_EMPTY_PATH). Where that is refused too, or the filesystem has no
//!   O_TMPFILE (NFS, for one), it is created named, with O_EXCL, and locked
//!   right after: a run cleaning up may remove it in that moment, which its
//!   owner notices, and then makes another;
//! - data and directory are fsynced, so a crash cannot leave an empty file;
//! - the body is streamed into the temp file (so a large exposition is
//!   never held in memory whole), and FILE is replaced only after all of it
//!   was written and synced: a failed scan or write never replaces a good
//!   file, and only a regular file (or a symlink to one) is ever replaced,
//!   never a device or a FIFO.
//!
//! Once the rename has happened the run has succeeded: FILE holds the new
//! contents. A directory that cannot be fsynced after that is a warning,
//! not a failure.

use std::{
    ffi::{OsStr, OsString},
    fs::{self, File, Permissions, TryLockError},
    io::{self, BufWriter, Write},
    os::{
        fd::AsRawFd,
        unix::{
            ffi::{OsStrExt, OsStringExt},
            fs::{FileTypeExt, MetadataExt, PermissionsExt},
        },
    },
    path::{Path, PathBuf},
};

use anyhow::{Context, bail};
use nix::{
    errno::Errno,
    fcntl::{AT_FDCWD, OFlag},
    sys::stat::Mode,
};

/// The longest file name Linux and the BSDs allow.
const NAME_MAX: usize = 255;
/// Random characters in a temp file's name.
const RANDOM: usize = 8;
/// How many named temp files a run makes at most, where there is no
/// O_TMPFILE, before it gives up because other runs keep removing them
/// (see [`Temp::named`]).
const CREATE_ATTEMPTS: usize = 64;
/// What a temp file's name adds to the part taken from FILE's name: the
/// leading dot, the dot before the random part, the random part, `.tmp`.
const ADDED: usize = 1 + 1 + RANDOM + 4;

/// Checks, before any scanning, that `target` can be a file we replace: its
/// directory exists, and it is a regular file (or a symlink to one) or does
/// not exist yet. The real write can still fail later; this only catches
/// the plain mistakes early.
pub fn check_target(target: &Path) -> anyhow::Result<()> {
    let dir = parent(target);
    match fs::metadata(&dir) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => bail!(
            "cannot write {}: {} is not a directory",
            target.display(),
            dir.display()
        ),
        Err(err) if err.kind() == io::ErrorKind::NotFound => bail!(
            "cannot write {}: the directory {} does not exist; create it, or write into \
             node_exporter's textfile directory (--collector.textfile.directory; \
             /var/lib/prometheus/node-exporter on Debian)",
            target.display(),
            dir.display()
        ),
        Err(err) => bail!(
            "cannot write {}: directory {}: {err}",
            target.display(),
            dir.display()
        ),
    }
    match fs::metadata(target) {
        Ok(meta) if !meta.is_file() => bail!(
            "cannot write {}: it is {}; only a regular file is replaced",
            target.display(),
            kind_of(&meta.file_type())
        ),
        _ => Ok(()),
    }
}

/// What a file type is, in words, for an error message.
fn kind_of(kind: &fs::FileType) -> &'static str {
    if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

/// Whether node_exporter's textfile collector would read a file of this
/// name: it reads names ending in `.prom`, case-sensitively.
pub fn collector_reads(target: &Path) -> bool {
    target
        .file_name()
        .is_some_and(|name| name.as_encoded_bytes().ends_with(b".prom"))
}

/// What a successful [`write_with`] has to say.
#[derive(Debug, Default)]
pub struct Written {
    /// Why the new contents may not survive a crash yet (the directory
    /// could not be fsynced), if that is so.
    pub not_durable: Option<String>,
}

/// Atomically replaces `target` with `contents`, mode 0644, then removes
/// the temp files that killed runs left behind.
pub fn write(target: &Path, contents: &[u8]) -> anyhow::Result<Written> {
    write_with(target, &mut |out| out.write_all(contents))
}

/// Atomically replaces `target` with what `body` writes, mode 0644, then
/// removes the temp files that killed runs left behind. `body` writes into
/// the temp file through a buffer; FILE is replaced only once it succeeded.
pub fn write_with(
    target: &Path,
    body: &mut dyn FnMut(&mut dyn Write) -> io::Result<()>,
) -> anyhow::Result<Written> {
    check_target(target)?;
    let dir = parent(target);
    let name = target
        .file_name()
        .with_context(|| format!("cannot write {}: the path names no file", target.display()))?;
    let prefix = temp_prefix(name);
    let written = replace(&dir, &prefix, target, body)
        .map_err(|err| needs_write_access(err, &dir))
        .with_context(|| format!("cannot write {}", target.display()));
    remove_abandoned(&dir, &prefix);
    let not_durable = written?.err().map(|err| {
        format!(
            "wrote {}, but could not sync its directory {}, so it may not survive a crash: {err}",
            target.display(),
            dir.display()
        )
    });
    Ok(Written { not_durable })
}

/// Writes the temp file and renames it over `target`. The outer error means
/// nothing was replaced; the inner one, that the rename happened but the
/// directory could not be fsynced.
fn replace(
    dir: &Path,
    prefix: &OsStr,
    target: &Path,
    body: &mut dyn FnMut(&mut dyn Write) -> io::Result<()>,
) -> io::Result<io::Result<()>> {
    let mut temp = Temp::create(dir, prefix)?;
    let mut buffered = BufWriter::with_capacity(64 * 1024, &mut temp.file);
    body(&mut buffered)?;
    buffered.flush()?;
    drop(buffered);
    temp.file.set_permissions(Permissions::from_mode(0o644))?;
    temp.file.sync_all()?;
    let path = temp.name(dir, prefix)?;
    // A device or FIFO may have appeared at FILE while we scanned.
    if let Ok(meta) = fs::metadata(target)
        && !meta.is_file()
    {
        return Err(io::Error::other(format!(
            "it is {} now; only a regular file is replaced",
            kind_of(&meta.file_type())
        )));
    }
    fs::rename(&path, target)?;
    // Renamed: the name is FILE's now, not ours to remove. The lock is
    // held until the directory is synced.
    temp.path = None;
    let synced = File::open(dir).and_then(|dir| dir.sync_all());
    drop(temp);
    Ok(synced)
}

/// A temp file of this run in FILE's directory, holding an exclusive flock
/// from before it had a name for as long as it is open (except where
/// O_TMPFILE is missing: see [`Temp::named`]). Its name, if it has one, is
/// removed when it is dropped.
struct Temp {
    file: File,
    /// Its path, once it has a name.
    path: Option<PathBuf>,
}

impl Drop for Temp {
    fn drop(&mut self) {
        if let Some(path) = &self.path {
            let _ = fs::remove_file(path);
        }
    }
}

impl Temp {
    /// A new locked temp file in `dir`: unnamed where the system allows,
    /// named (`PREFIX` + 8 random characters + `.tmp`) otherwise.
    fn create(dir: &Path, prefix: &OsStr) -> io::Result<Temp> {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        if let Some(temp) = Temp::unnamed(dir, prefix)? {
            return Ok(temp);
        }
        Temp::named(dir, prefix)
    }

    /// A temp file made with O_TMPFILE and locked before it has a name, so
    /// that no other run can ever see it unlocked. It stays unnamed until
    /// [`Temp::name`] links it through /proc/self/fd; without /proc it is
    /// named at once with linkat's AT_EMPTY_PATH (which unprivileged users
    /// may use since Linux 6.10). `None` when the filesystem has no
    /// O_TMPFILE or neither way of naming is allowed.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn unnamed(dir: &Path, prefix: &OsStr) -> io::Result<Option<Temp>> {
        let flags = OFlag::O_TMPFILE | OFlag::O_RDWR | OFlag::O_CLOEXEC;
        let fd = match nix::fcntl::openat(AT_FDCWD, dir, flags, Mode::from_bits_truncate(0o600)) {
            Ok(fd) => fd,
            // What open(2) returns where a kernel or a filesystem lacks
            // O_TMPFILE.
            Err(Errno::EOPNOTSUPP | Errno::EISDIR | Errno::EINVAL | Errno::ENOENT) => {
                return Ok(None);
            }
            Err(err) => return Err(creating(err.into())),
        };
        let file = File::from(fd);
        // Nobody else knows of this file yet: the lock is ours at once.
        file.lock()?;
        let mut temp = Temp { file, path: None };
        if temp.proc_resolves() {
            return Ok(Some(temp));
        }
        let linked = with_new_name(dir, prefix, |path| {
            nix::unistd::linkat(
                &temp.file,
                "",
                AT_FDCWD,
                path,
                nix::fcntl::AtFlags::AT_EMPTY_PATH,
            )
        });
        match linked {
            Ok((path, ())) => {
                temp.path = Some(path);
                Ok(Some(temp))
            }
            // AT_EMPTY_PATH refused to an unprivileged user by older
            // kernels (ENOENT), or by a security module.
            Err(err) if matches!(err.raw_os_error(), Some(libc::ENOENT | libc::EPERM)) => Ok(None),
            Err(err) => Err(naming(err)),
        }
    }

    /// /proc/self/fd/N for this file.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn fd_path(&self) -> String {
        format!("/proc/self/fd/{}", self.file.as_raw_fd())
    }

    /// Whether /proc is there to resolve [`Temp::fd_path`] to this file.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn proc_resolves(&self) -> bool {
        match (self.file.metadata(), fs::metadata(self.fd_path())) {
            (Ok(held), Ok(found)) => held.dev() == found.dev() && held.ino() == found.ino(),
            _ => false,
        }
    }

    /// Its path, after naming it in `dir` if it has no name yet.
    fn name(&mut self, dir: &Path, prefix: &OsStr) -> io::Result<PathBuf> {
        if let Some(path) = &self.path {
            return Ok(path.clone());
        }
        let path = self.link(dir, prefix).map_err(naming)?;
        self.path = Some(path.clone());
        Ok(path)
    }

    /// Gives the unnamed file a new name in `dir` through /proc/self/fd,
    /// which [`Temp::unnamed`] found working.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn link(&self, dir: &Path, prefix: &OsStr) -> io::Result<PathBuf> {
        let proc = self.fd_path();
        let (path, ()) = with_new_name(dir, prefix, |path| {
            nix::unistd::linkat(
                AT_FDCWD,
                proc.as_str(),
                AT_FDCWD,
                path,
                nix::fcntl::AtFlags::AT_SYMLINK_FOLLOW,
            )
        })?;
        Ok(path)
    }

    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    fn link(&self, _: &Path, _: &OsStr) -> io::Result<PathBuf> {
        unreachable!("only O_TMPFILE makes a temp file without a name")
    }

    /// A temp file created with its name, with O_EXCL, and locked right
    /// after.
    ///
    /// Another run that cleans up ([`remove_abandoned`]) may lock and
    /// remove the file in the moment between its creation and our lock;
    /// then another is made. Each retry needs that to happen again, so
    /// [`CREATE_ATTEMPTS`] bounds a loop that mostly runs once: it is the
    /// way only where O_TMPFILE is missing.
    fn named(dir: &Path, prefix: &OsStr) -> io::Result<Temp> {
        let flags = OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_RDWR | OFlag::O_CLOEXEC;
        for _ in 0..CREATE_ATTEMPTS {
            let (path, fd) = with_new_name(dir, prefix, |path| {
                nix::fcntl::openat(AT_FDCWD, path, flags, Mode::from_bits_truncate(0o600))
            })
            .map_err(creating)?;
            let temp = Temp {
                file: File::from(fd),
                path: Some(path),
            };
            let locked = match temp.file.try_lock() {
                Ok(()) => temp.file.metadata()?.nlink() > 0,
                Err(TryLockError::WouldBlock) => false,
                Err(TryLockError::Error(err)) => return Err(err),
            };
            if locked {
                return Ok(temp);
            }
        }
        Err(io::Error::other(
            "another run kept removing the temporary file",
        ))
    }
}

/// Calls `make` with `dir`/`PREFIX` + 8 random characters + `.tmp`, and
/// again with another name for as long as the name is taken (EEXIST).
/// tempfile makes the names and retries.
fn with_new_name<T>(
    dir: &Path,
    prefix: &OsStr,
    mut make: impl FnMut(&Path) -> nix::Result<T>,
) -> io::Result<(PathBuf, T)> {
    let made = tempfile::Builder::new()
        .prefix(prefix)
        .suffix(".tmp")
        .rand_bytes(RANDOM)
        .make_in(dir, |path| make(path).map_err(io::Error::from))?;
    let (value, path) = made.into_parts();
    // Ours to remove from here on (see `Temp`), not tempfile's.
    Ok((path.keep()?, value))
}

/// `err`, and when it is a refusal, which access is missing: the file is
/// made and renamed in its directory, so that is what must be writable,
/// whatever the mode of FILE itself.
fn needs_write_access(err: io::Error, dir: &Path) -> io::Error {
    if err.kind() != io::ErrorKind::PermissionDenied {
        return err;
    }
    io::Error::new(
        err.kind(),
        format!(
            "{err}; the user running port_exporter needs write access to the directory {} \
             (FILE is replaced by a rename there), not just to FILE: see \"Permission \
             denied\" under Troubleshooting in the README",
            dir.display()
        ),
    )
}

/// An error of creating the temp file, said as such.
fn creating(err: io::Error) -> io::Error {
    io::Error::new(
        err.kind(),
        format!("cannot create a temporary file in the directory: {err}"),
    )
}

/// An error of naming the temp file, said as such.
fn naming(err: io::Error) -> io::Error {
    io::Error::new(
        err.kind(),
        format!("cannot name the temporary file in the directory: {err}"),
    )
}

/// The start of the temp file names for a FILE called `name`: `.NAME.`,
/// with NAME cut so that the whole temp name fits in NAME_MAX bytes.
fn temp_prefix(name: &OsStr) -> OsString {
    let bytes = name.as_bytes();
    let kept = &bytes[..bytes.len().min(NAME_MAX - ADDED)];
    let mut prefix = Vec::with_capacity(kept.len() + 2);
    prefix.push(b'.');
    prefix.extend_from_slice(kept);
    prefix.push(b'.');
    OsString::from_vec(prefix)
}

/// Whether `name` is a temp file name that [`with_new_name`] makes with
/// `prefix`.
fn is_temp_name(name: &OsStr, prefix: &OsStr) -> bool {
    let (name, prefix) = (name.as_bytes(), prefix.as_bytes());
    name.len() == prefix.len() + RANDOM + 4
        && name.starts_with(prefix)
        && name.ends_with(b".tmp")
        && name[prefix.len()..prefix.len() + RANDOM]
            .iter()
            .all(u8::is_ascii_alphanumeric)
}

/// Removes the temp files of FILE whose writer is gone: a run killed while
/// writing (SIGKILL, or SIGTERM at a timeout) leaves one, and nothing else
/// would ever remove it. A temp file whose lock is held belongs to a run
/// still writing and is left alone. Best effort: errors are ignored, since
/// FILE itself is already in place or the run has failed for a better
/// reason.
fn remove_abandoned(dir: &Path, prefix: &OsStr) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !is_temp_name(&name, prefix) {
            continue;
        }
        let path = entry.path();
        let Ok(file) = File::open(&path) else {
            continue;
        };
        if file.try_lock().is_err() {
            continue;
        }
        // Still the same file under that name: then nobody writes it.
        let same = match (file.metadata(), fs::symlink_metadata(&path)) {
            (Ok(held), Ok(named)) => held.ino() == named.ino() && held.dev() == named.dev(),
            _ => false,
        };
        if same {
            let _ = fs::remove_file(&path);
        }
    }
}

/// The directory `target` lives in (`.` for a bare file name).
fn parent(target: &Path) -> PathBuf {
    match target.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_file_with_mode_0644_and_leaves_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("open_ports.prom");
        fs::write(&target, "old\n").unwrap();
        let written = write(&target, b"new\n").unwrap();
        assert!(written.not_durable.is_none());
        assert_eq!(fs::read(&target).unwrap(), b"new\n");
        assert_eq!(fs::metadata(&target).unwrap().mode() & 0o777, 0o644);
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["open_ports.prom"]);
    }

    #[test]
    fn checks_the_target() {
        let dir = tempfile::tempdir().unwrap();
        let err = check_target(dir.path()).unwrap_err().to_string();
        assert!(
            err.ends_with("it is a directory; only a regular file is replaced"),
            "{err}"
        );
        let missing = dir.path().join("missing/x.prom");
        let err = check_target(&missing).unwrap_err().to_string();
        assert!(err.contains("missing does not exist; create it"), "{err}");
        check_target(&dir.path().join("x.prom")).unwrap();
        let err = check_target(Path::new("/dev/null"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("it is a character device"), "{err}");
        let link = dir.path().join("link.prom");
        fs::write(dir.path().join("real.prom"), "x").unwrap();
        std::os::unix::fs::symlink("real.prom", &link).unwrap();
        check_target(&link).unwrap();
    }

    #[test]
    fn names_the_collector_reads() {
        assert!(collector_reads(Path::new("/d/open_ports.prom")));
        assert!(collector_reads(Path::new(".hidden.prom")));
        assert!(!collector_reads(Path::new("/d/open_ports.PROM")));
        assert!(!collector_reads(Path::new("/d/open_ports.prom.tmp")));
        assert!(!collector_reads(Path::new("/d/open_ports.txt")));
    }

    #[test]
    fn temp_names_fit_in_name_max_and_are_recognised() {
        for len in [1, 100, 241, 242, 250, 255] {
            let name = OsString::from("a".repeat(len));
            let prefix = temp_prefix(&name);
            let temp = {
                let mut t = prefix.clone();
                t.push("Ab3dEf9h.tmp");
                t
            };
            assert!(temp.len() <= NAME_MAX, "{len}");
            assert!(is_temp_name(&temp, &prefix), "{len}");
        }
        let prefix = temp_prefix(OsStr::new("open_ports.prom"));
        assert_eq!(prefix, ".open_ports.prom.");
        for other in [
            ".open_ports.prom.Ab3dEf9h.tmp.x",
            ".open_ports.prom.Ab3dEf9.tmp",
            ".open_ports.prom.Ab3d-f9h.tmp",
            "open_ports.prom.Ab3dEf9h.tmp",
            ".other.prom.Ab3dEf9h.tmp",
        ] {
            assert!(!is_temp_name(OsStr::new(other), &prefix), "{other}");
        }
    }

    #[test]
    fn new_names_are_temp_names_and_taken_ones_are_passed_over() {
        let dir = tempfile::tempdir().unwrap();
        let prefix = temp_prefix(OsStr::new("open_ports.prom"));
        let mut tried = Vec::new();
        let (path, ()) = with_new_name(dir.path(), &prefix, |path| {
            tried.push(path.to_path_buf());
            if tried.len() < 3 {
                Err(Errno::EEXIST)
            } else {
                Ok(())
            }
        })
        .unwrap();
        assert_eq!(tried.len(), 3);
        assert_eq!(tried[2], path);
        assert!(tried[0] != tried[1] && tried[1] != tried[2]);
        for path in &tried {
            assert_eq!(path.parent(), Some(dir.path()));
            assert!(is_temp_name(path.file_name().unwrap(), &prefix), "{path:?}");
        }
        let err = with_new_name(dir.path(), &prefix, |_| Err::<(), _>(Errno::EACCES)).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EACCES));
        let err = with_new_name(dir.path(), &prefix, |_| Err::<(), _>(Errno::EEXIST)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
    }

    #[test]
    fn a_named_temp_file_is_locked_and_removed_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let prefix = temp_prefix(OsStr::new("open_ports.prom"));
        let temp = Temp::named(dir.path(), &prefix).unwrap();
        let path = temp.path.clone().unwrap();
        assert!(is_temp_name(path.file_name().unwrap(), &prefix));
        let other = File::open(&path).unwrap();
        assert!(matches!(other.try_lock(), Err(TryLockError::WouldBlock)));
        drop(temp);
        assert!(!path.exists());
        assert!(fs::read_dir(dir.path()).unwrap().next().is_none());
    }

    #[test]
    fn abandoned_temp_files_go_and_locked_ones_stay() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("open_ports.prom");
        let abandoned = dir.path().join(".open_ports.prom.AAAAaaaa.tmp");
        let busy = dir.path().join(".open_ports.prom.BBBBbbbb.tmp");
        let unrelated = dir.path().join(".other.prom.CCCCcccc.tmp");
        for path in [&abandoned, &busy, &unrelated] {
            fs::write(path, "partial").unwrap();
        }
        let writing = File::open(&busy).unwrap();
        writing.try_lock().unwrap();
        write(&target, b"new\n").unwrap();
        assert!(!abandoned.exists(), "an abandoned temp file was kept");
        assert!(busy.exists(), "a temp file still being written was removed");
        assert!(unrelated.exists(), "another file's temp file was removed");
    }

    #[test]
    fn a_long_name_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join(format!("{}.prom", "p".repeat(250)));
        write(&target, b"x\n").unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"x\n");
    }
}
