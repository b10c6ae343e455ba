//! Replacing the `.prom` file atomically, for node_exporter's textfile
//! collector (node_exporter README "Textfile Collector"; client_golang
//! `WriteToTextfile`), with what those leave out:
//! - the temp file is made in FILE's directory (rename(2) is atomic only
//!   within a filesystem) with O_TMPFILE, locked, filled, chmod 0644 (the
//!   collector runs as another user) and fsynced before it has a name, so
//!   a run that fails or is killed until then leaves nothing. Then it is
//!   linked (through /proc/self/fd), renamed over FILE, and the directory
//!   fsynced. Only a regular file (or a symlink to one) is replaced;
//! - its name, `.FILE.XXXXXXXX.tmp`, does not end in `.prom` (the collector
//!   reads dot-files too) and fits in NAME_MAX however long FILE's name is;
//! - a run killed between link and rename leaves a named temp file, so each
//!   run ends by removing those whose flock is free: a run locks its temp
//!   file before it has a name and holds the lock until it ends;
//! - without O_TMPFILE (NFS) or /proc, the temp file is made named (O_EXCL)
//!   and locked right after; a run cleaning up may remove it in between,
//!   which its owner sees (no link left) and makes another.
//!
//! Once renamed, the run has succeeded: a directory that cannot be fsynced
//! after that is a warning.

use std::{
    ffi::{OsStr, OsString},
    fs::{self, File, OpenOptions, Permissions, TryLockError},
    io::{self, BufWriter, Write},
    os::{
        fd::AsRawFd,
        unix::{
            ffi::{OsStrExt, OsStringExt},
            fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt},
        },
    },
    path::Path,
};

use anyhow::{Context, bail};
use tempfile::TempPath;

/// The longest file name Linux and the BSDs allow.
const NAME_MAX: usize = 255;
/// Random characters in a temp file's name.
const RANDOM: usize = 8;
/// Named temp files a run makes at most while other runs keep removing
/// them (see [`named`]).
const CREATE_ATTEMPTS: usize = 64;
/// What a temp file's name adds to the part taken from FILE's name: the
/// leading dot, the dot before the random part, the random part, `.tmp`.
const ADDED: usize = 1 + 1 + RANDOM + 4;

/// Checks, before any scanning, that `target`'s directory exists and that
/// it is a regular file (or a symlink to one) or does not exist yet.
pub(crate) fn check_target(target: &Path) -> anyhow::Result<()> {
    let dir = parent(target);
    let why = match fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => match not_regular(target) {
            Some(kind) => format!("it is {kind}; only a regular file is replaced"),
            None => return Ok(()),
        },
        Ok(_) => format!("{} is not a directory", dir.display()),
        Err(err) if err.kind() == io::ErrorKind::NotFound => format!(
            "the directory {} does not exist; create it, or write into node_exporter's \
             textfile directory (--collector.textfile.directory; \
             /var/lib/prometheus/node-exporter on Debian)",
            dir.display()
        ),
        Err(err) => format!("directory {}: {err}", dir.display()),
    };
    bail!("cannot write {}: {why}", target.display())
}

/// What is at `target`, in words, if it exists and is not a regular file.
fn not_regular(target: &Path) -> Option<&'static str> {
    let kind = fs::metadata(target).ok()?.file_type();
    Some(match kind {
        _ if kind.is_file() => return None,
        _ if kind.is_dir() => "a directory",
        _ if kind.is_fifo() => "a FIFO",
        _ if kind.is_char_device() => "a character device",
        _ if kind.is_block_device() => "a block device",
        _ if kind.is_socket() => "a socket",
        _ => "not a regular file",
    })
}

/// Whether node_exporter's textfile collector would read a file of this
/// name: it reads names ending in `.prom`, case-sensitively.
pub(crate) fn collector_reads(target: &Path) -> bool {
    target
        .file_name()
        .is_some_and(|name| name.as_encoded_bytes().ends_with(b".prom"))
}

/// Atomically replaces `target` with what `body` writes, mode 0644, then
/// removes the temp files that killed runs left behind. Returns a warning
/// when the directory could not be fsynced.
pub(crate) fn write_with(
    target: &Path,
    body: &mut dyn FnMut(&mut dyn Write) -> io::Result<()>,
) -> anyhow::Result<Option<String>> {
    check_target(target)?;
    let dir = parent(target);
    let name = target
        .file_name()
        .with_context(|| format!("cannot write {}: the path names no file", target.display()))?;
    let prefix = temp_prefix(name);
    let written = replace(dir, &prefix, target, body)
        .map_err(|err| needs_write_access(err, dir))
        .with_context(|| format!("cannot write {}", target.display()));
    remove_abandoned(dir, &prefix);
    Ok(written?.err().map(|err| {
        format!(
            "wrote {}, but could not sync its directory {}, so it may not survive a crash: {err}",
            target.display(),
            dir.display()
        )
    }))
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
    // The lock of `file` is held until the directory is synced; `path`
    // removes the temp file's name when dropped, until it is FILE's.
    let (file, path) = match unnamed(dir)? {
        Some(file) => (file, None),
        None => named(dir, prefix)?,
    };
    let mut buffered = BufWriter::with_capacity(64 * 1024, &file);
    body(&mut buffered)?;
    buffered.flush()?;
    drop(buffered);
    file.set_permissions(Permissions::from_mode(0o644))?;
    file.sync_all()?;
    let path = match path {
        Some(path) => path,
        None => link(&file, dir, prefix).map_err(|err| in_dir("name", err))?,
    };
    // A device or FIFO may have appeared at FILE while we scanned.
    if let Some(kind) = not_regular(target) {
        return Err(io::Error::other(format!(
            "it is {kind} now; only a regular file is replaced"
        )));
    }
    path.persist(target).map_err(|err| err.error)?;
    Ok(File::open(dir).and_then(|dir| dir.sync_all()))
}

/// A temp file made with O_TMPFILE and locked before it has a name, so
/// that no other run sees it unlocked. `None` when the filesystem has no
/// O_TMPFILE or /proc does not show the file (for [`link`]).
fn unnamed(dir: &Path) -> io::Result<Option<File>> {
    let file = match temp_options().custom_flags(libc::O_TMPFILE).open(dir) {
        Ok(file) => file,
        // What open(2) returns where a kernel or a filesystem lacks
        // O_TMPFILE.
        Err(err)
            if matches!(
                err.raw_os_error(),
                Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL | libc::ENOENT)
            ) =>
        {
            return Ok(None);
        }
        Err(err) => return Err(in_dir("create", err)),
    };
    // Nobody else knows of this file yet: the lock is ours at once.
    file.lock()?;
    let held = file.metadata()?;
    let shown = fs::metadata(fd_path(&file))
        .is_ok_and(|found| found.dev() == held.dev() && found.ino() == held.ino());
    Ok(shown.then_some(file))
}

/// /proc/self/fd/N for `file`.
fn fd_path(file: &File) -> String {
    format!("/proc/self/fd/{}", file.as_raw_fd())
}

/// Gives the unnamed `file` a new name in `dir` through /proc/self/fd.
fn link(file: &File, dir: &Path, prefix: &OsStr) -> io::Result<TempPath> {
    let proc = fd_path(file);
    let ((), path) = with_new_name(dir, prefix, |path| {
        nix::unistd::linkat(
            nix::fcntl::AT_FDCWD,
            proc.as_str(),
            nix::fcntl::AT_FDCWD,
            path,
            nix::fcntl::AtFlags::AT_SYMLINK_FOLLOW,
        )
        .map_err(io::Error::from)
    })?;
    Ok(path)
}

/// A temp file created with its name (O_EXCL) and locked right after;
/// another is made if a run cleaning up removed it in between.
fn named(dir: &Path, prefix: &OsStr) -> io::Result<(File, Option<TempPath>)> {
    for _ in 0..CREATE_ATTEMPTS {
        let (file, path) = with_new_name(dir, prefix, |path| {
            temp_options().create_new(true).open(path)
        })
        .map_err(|err| in_dir("create", err))?;
        match file.try_lock() {
            Ok(()) if file.metadata()?.nlink() > 0 => return Ok((file, Some(path))),
            Ok(()) | Err(TryLockError::WouldBlock) => {}
            Err(TryLockError::Error(err)) => return Err(err),
        }
    }
    Err(io::Error::other(
        "another run kept removing the temporary file",
    ))
}

/// How a temp file is opened: read-write, mode 0600 until it is filled
/// (then 0644).
fn temp_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.read(true).write(true).mode(0o600);
    options
}

/// Calls `make` with `dir`/`PREFIX` + 8 random characters + `.tmp`, with
/// another name while the name is taken (tempfile retries).
fn with_new_name<T>(
    dir: &Path,
    prefix: &OsStr,
    make: impl FnMut(&Path) -> io::Result<T>,
) -> io::Result<(T, TempPath)> {
    Ok(tempfile::Builder::new()
        .prefix(prefix)
        .suffix(".tmp")
        .rand_bytes(RANDOM)
        .make_in(dir, make)?
        .into_parts())
}

/// `err`, saying for a refusal that the directory must be writable (the
/// file is made and renamed there), whatever FILE's mode.
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

/// An error of creating or naming (`what`) the temp file, said as such.
fn in_dir(what: &str, err: io::Error) -> io::Error {
    io::Error::new(
        err.kind(),
        format!("cannot {what} a temporary file in the directory: {err}"),
    )
}

/// The start of the temp file names for a FILE called `name`: `.NAME.`,
/// with NAME cut so that the whole temp name fits in NAME_MAX bytes.
fn temp_prefix(name: &OsStr) -> OsString {
    let bytes = name.as_bytes();
    let kept = &bytes[..bytes.len().min(NAME_MAX - ADDED)];
    OsString::from_vec([b".", kept, b"."].concat())
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

/// Removes the temp files of FILE whose lock is free: their writer is
/// gone. Best effort: FILE is in place, or the run failed for a better
/// reason.
fn remove_abandoned(dir: &Path, prefix: &OsStr) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        // Locked, and still the same file under that name: then nobody
        // writes it.
        if is_temp_name(&entry.file_name(), prefix)
            && let Ok(file) = File::open(&path)
            && file.try_lock().is_ok()
            && let (Ok(held), Ok(named)) = (file.metadata(), fs::symlink_metadata(&path))
            && (held.ino(), held.dev()) == (named.ino(), named.dev())
        {
            let _ = fs::remove_file(&path);
        }
    }
}

/// The directory `target` lives in (`.` for a bare file name).
fn parent(target: &Path) -> &Path {
    let dir = target.parent().filter(|dir| !dir.as_os_str().is_empty());
    dir.unwrap_or(Path::new("."))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(target: &Path, contents: &[u8]) -> anyhow::Result<Option<String>> {
        write_with(target, &mut |out| out.write_all(contents))
    }

    #[test]
    fn replaces_the_file_with_mode_0644_and_leaves_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("open_ports.prom");
        fs::write(&target, "old\n").unwrap();
        assert_eq!(write(&target, b"new\n").unwrap(), None);
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
        let ((), path) = with_new_name(dir.path(), &prefix, |path| {
            tried.push(path.to_path_buf());
            if tried.len() < 3 {
                Err(io::ErrorKind::AlreadyExists.into())
            } else {
                Ok(())
            }
        })
        .unwrap();
        assert_eq!(tried.len(), 3);
        assert_eq!(tried[2], *path);
        assert!(tried[0] != tried[1] && tried[1] != tried[2]);
        for path in &tried {
            assert_eq!(path.parent(), Some(dir.path()));
            assert!(is_temp_name(path.file_name().unwrap(), &prefix), "{path:?}");
        }
        let refused = || Err::<(), _>(io::Error::from_raw_os_error(libc::EACCES));
        let err = with_new_name(dir.path(), &prefix, |_| refused()).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EACCES));
        let taken = || Err::<(), _>(io::ErrorKind::AlreadyExists.into());
        let err = with_new_name(dir.path(), &prefix, |_| taken()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
    }

    #[test]
    fn a_named_temp_file_is_locked_and_removed_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let prefix = temp_prefix(OsStr::new("open_ports.prom"));
        let (file, temp) = named(dir.path(), &prefix).unwrap();
        let temp = temp.unwrap();
        let path = temp.to_path_buf();
        assert!(is_temp_name(path.file_name().unwrap(), &prefix));
        let other = File::open(&path).unwrap();
        assert!(matches!(other.try_lock(), Err(TryLockError::WouldBlock)));
        drop((file, temp));
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
