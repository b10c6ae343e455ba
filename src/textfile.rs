//! Replacing the `.prom` file atomically, for node_exporter's textfile
//! collector.
//!
//! The recipe (node_exporter README "Textfile Collector"; client_golang
//! `WriteToTextfile`), with what those leave out:
//! - the temp file lives in the target's own directory, since rename(2) is
//!   atomic only within one filesystem, and its name ends in `.tmp`, since
//!   the collector reads every name ending in `.prom`, dot-files included;
//! - it is created with O_EXCL under a random name, so overlapping runs never
//!   share one, and removed on every error path;
//! - it is chmod 0644 through its descriptor: tempfile creates 0600, rename
//!   keeps the mode, and node_exporter runs as another user;
//! - data and directory are fsynced, so a crash cannot leave an empty file;
//! - the whole body is built before anything is written: a failed scan never
//!   replaces a good file.

use std::{
    fs::{self, File, Permissions},
    io::{self, Write},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use anyhow::{Context, bail};

/// Checks, before any scanning, that `target` can be a file we replace: its
/// directory exists and it is not itself a directory. The real write can
/// still fail later; this only catches the plain mistakes early.
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
    if target.is_dir() {
        bail!("cannot write {}: it is a directory", target.display());
    }
    Ok(())
}

/// Whether node_exporter's textfile collector would read a file of this
/// name: it reads names ending in `.prom`, case-sensitively.
pub fn collector_reads(target: &Path) -> bool {
    target
        .file_name()
        .is_some_and(|name| name.as_encoded_bytes().ends_with(b".prom"))
}

/// Atomically replaces `target` with `contents`, mode 0644.
pub fn write(target: &Path, contents: &[u8]) -> anyhow::Result<()> {
    write_inner(target, contents).with_context(|| format!("cannot write {}", target.display()))
}

/// [`write`] without the context naming the target.
fn write_inner(target: &Path, contents: &[u8]) -> io::Result<()> {
    let dir = parent(target);
    let name = target
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the path names no file"))?;
    let mut prefix = std::ffi::OsString::from(".");
    prefix.push(name);
    prefix.push(".");
    let mut temp = tempfile::Builder::new()
        .prefix(&prefix)
        .suffix(".tmp")
        .rand_bytes(8)
        .tempfile_in(&dir)
        .map_err(|err| strip_path(err, "cannot create a temporary file in the directory"))?;
    // Through the File itself: tempfile's own Write wraps errors with the
    // random temp path, which is gone by the time the user reads it.
    temp.as_file_mut().write_all(contents)?;
    temp.as_file()
        .set_permissions(Permissions::from_mode(0o644))?;
    temp.as_file().sync_all()?;
    // On failure the returned error owns the temp file, and dropping it
    // removes it.
    temp.persist(target).map_err(|err| err.error)?;
    File::open(&dir)?.sync_all()
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
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn replaces_the_file_with_mode_0644_and_leaves_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("open_ports.prom");
        fs::write(&target, "old\n").unwrap();
        write(&target, b"new\n").unwrap();
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
        assert!(err.ends_with("it is a directory"), "{err}");
        let missing = dir.path().join("missing/x.prom");
        let err = check_target(&missing).unwrap_err().to_string();
        assert!(err.contains("No such file or directory"), "{err}");
        check_target(&dir.path().join("x.prom")).unwrap();
    }

    #[test]
    fn names_the_collector_reads() {
        assert!(collector_reads(Path::new("/d/open_ports.prom")));
        assert!(collector_reads(Path::new(".hidden.prom")));
        assert!(!collector_reads(Path::new("/d/open_ports.PROM")));
        assert!(!collector_reads(Path::new("/d/open_ports.prom.tmp")));
        assert!(!collector_reads(Path::new("/d/open_ports.txt")));
    }
}
