//! Replacing the `.prom` file atomically, for node_exporter's textfile
//! collector.
//!
//! The recipe (node_exporter README "Textfile Collector"; client_golang
//! `WriteToTextfile`), with what those leave out:
//! - the temp file lives in the target's own directory, since rename(2) is
//!   atomic only within one filesystem, and its name ends in `.tmp`, since
//!   the collector reads every name ending in `.prom`, dot-files included;
//! - it is created with O_EXCL under a random name, so overlapping runs never
//!   share one, kept within NAME_MAX however long FILE's name is, and
//!   removed on every error path;
//! - it is locked (flock) while it is written, so that a later run can tell
//!   the temp file of a run that was killed (its lock is free) from that of
//!   a run still writing, and remove only the former;
//! - it is chmod 0644 through its descriptor: tempfile creates 0600, rename
//!   keeps the mode, and node_exporter runs as another user;
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
    os::unix::{
        ffi::{OsStrExt, OsStringExt},
        fs::{FileTypeExt, MetadataExt, PermissionsExt},
    },
    path::{Path, PathBuf},
};

use anyhow::{Context, bail};
use tempfile::NamedTempFile;

/// The longest file name Linux and the BSDs allow.
const NAME_MAX: usize = 255;
/// Random characters in a temp file's name.
const RANDOM: usize = 8;
/// How many temp files a run makes at most before it gives up because other
/// runs keep removing them (see [`locked_temp_file`]).
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

/// What a successful [`write`] has to say.
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
    let mut temp = locked_temp_file(dir, prefix)?;
    // Through the File itself: tempfile's own Write wraps errors with the
    // random temp path, which is gone by the time the user reads it.
    let mut buffered = BufWriter::with_capacity(64 * 1024, temp.as_file_mut());
    body(&mut buffered)?;
    buffered.flush()?;
    drop(buffered);
    temp.as_file()
        .set_permissions(Permissions::from_mode(0o644))?;
    temp.as_file().sync_all()?;
    // A device or FIFO may have appeared at FILE while we scanned.
    if let Ok(meta) = fs::metadata(target)
        && !meta.is_file()
    {
        return Err(io::Error::other(format!(
            "it is {} now; only a regular file is replaced",
            kind_of(&meta.file_type())
        )));
    }
    // On failure the returned error owns the temp file, and dropping it
    // removes it.
    let file = temp.persist(target).map_err(|err| err.error)?;
    let synced = File::open(dir).and_then(|dir| dir.sync_all());
    drop(file);
    Ok(synced)
}

/// A new temp file in `dir`, named `PREFIX` + 8 random characters + `.tmp`,
/// holding an exclusive flock for as long as it is open.
///
/// Another run that cleans up ([`remove_abandoned`]) may lock and remove
/// the file in the moment between its creation and our lock; then another
/// is made. Each retry needs that to happen again, so [`CREATE_ATTEMPTS`]
/// bounds a loop that in practice runs once or twice, even with many runs
/// writing one FILE at once on a loaded machine.
fn locked_temp_file(dir: &Path, prefix: &OsStr) -> io::Result<NamedTempFile> {
    let mut attempts = 0;
    loop {
        attempts += 1;
        let temp = tempfile::Builder::new()
            .prefix(prefix)
            .suffix(".tmp")
            .rand_bytes(RANDOM)
            .tempfile_in(dir)
            .map_err(|err| strip_path(err, "cannot create a temporary file in the directory"))?;
        let locked = match temp.as_file().try_lock() {
            Ok(()) => temp.as_file().metadata()?.nlink() > 0,
            Err(TryLockError::WouldBlock) => false,
            Err(TryLockError::Error(err)) => return Err(err),
        };
        if locked {
            return Ok(temp);
        }
        if attempts == CREATE_ATTEMPTS {
            return Err(io::Error::other(
                "another run kept removing the temporary file",
            ));
        }
    }
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

/// Whether `name` is a temp file name that [`locked_temp_file`] makes with
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

/// tempfile's errors repeat the (random) temp path; say what failed instead.
fn strip_path(err: io::Error, what: &str) -> io::Error {
    let kind = err.kind();
    let cause = err.into_inner().map_or_else(
        || "unknown error".to_string(),
        |inner| match inner.downcast::<io::Error>() {
            Ok(io) => io.to_string(),
            Err(other) => other.to_string(),
        },
    );
    io::Error::new(kind, format!("{what}: {cause}"))
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
        assert!(err.contains("No such file or directory"), "{err}");
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
