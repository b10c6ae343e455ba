//! The atomic write of the .prom file: mode, failure modes that must leave
//! the previous file untouched, and many writers racing one reader.

use std::{
    fs,
    os::unix::fs::{FileTypeExt, MetadataExt},
    path::Path,
    process::{Command, Output},
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::Duration,
};

use crate::util::{
    self, Bin, ChildGuard, Root, SETPRIV, STRACE, UNSHARE, check_exposition, dir_names,
    one_error_line, run, stderr_of, tests, wait_until,
};

tests![
    file_is_0644_even_under_umask_077_and_nothing_else_is_left,
    (
        unwritable_directory_keeps_the_previous_file,
        Root("run as nobody"),
        SETPRIV
    ),
    (
        full_filesystem_keeps_the_previous_file,
        Root("mounts"),
        UNSHARE
    ),
    (
        read_only_filesystem_keeps_the_previous_file,
        Root("mounts"),
        UNSHARE
    ),
    twenty_writers_never_show_a_reader_a_partial_file,
    (
        a_directory_it_may_not_read_still_succeeds_with_a_warning,
        Root("run as nobody"),
        SETPRIV
    ),
    (
        a_failed_directory_sync_after_the_rename_is_a_warning,
        STRACE
    ),
    devices_fifos_and_directories_are_never_replaced,
    names_up_to_255_bytes_work,
    (killed_runs_leave_nothing_behind_after_the_next_run, STRACE),
];

/// `target` holds a complete exposition of `ports` samples, and nothing
/// else is in its directory (no temp file left).
#[track_caller]
fn assert_alone(target: &Path, ports: usize) {
    assert_eq!(
        check_exposition(&fs::read_to_string(target).unwrap()),
        Ok(ports)
    );
    let name = target.file_name().unwrap().to_string_lossy().into_owned();
    assert_eq!(dir_names(target.parent().unwrap()), [name]);
}

fn file_is_0644_even_under_umask_077_and_nothing_else_is_left() {
    let dir = util::open_tempdir();
    let target = dir.path().join("open_ports.prom");
    let status = Command::new("sh")
        .args([
            "-c",
            "umask 077 && exec \"$0\" --ports 1-1000 --include-closed -o \"$1\"",
        ])
        .arg(util::bin::path())
        .arg(&target)
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(fs::metadata(&target).unwrap().mode() & 0o777, 0o644);
    assert_alone(&target, 1000);
}

fn unwritable_directory_keeps_the_previous_file() {
    // The directory belongs to root, mode 0755: `nobody` cannot create the
    // temp file there.
    let dir = util::open_tempdir();
    let target = dir.path().join("open_ports.prom");
    fs::write(&target, "previous contents\n").unwrap();
    let output = Bin::new().nobody().arg("-o").arg(&target).output();
    assert_eq!(output.status.code(), Some(1), "{}", stderr_of(&output));
    let stderr = stderr_of(&output);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&target.display().to_string()) && stderr.contains("Permission denied"),
        "{stderr}"
    );
    assert_eq!(fs::read_to_string(&target).unwrap(), "previous contents\n");
    assert_eq!(dir_names(dir.path()), ["open_ports.prom"]);
}

/// Runs `setup` then port_exporter inside a private mount namespace on a
/// small tmpfs, and returns (exit code, stderr, file afterwards, listing).
fn on_tmpfs(setup: &str) -> (String, String, String) {
    let script = format!(
        "set -e
         d=$(mktemp -d)
         mount -t tmpfs -o size=4k,mode=0755 port_exporter-test \"$d\"
         printf 'previous contents\\n' > \"$d/open_ports.prom\"
         {setup}
         rc=0; \"$0\" --ports 1-5000 --include-closed -o \"$d/open_ports.prom\" 2>\"$d.err\" || rc=$?
         echo \"rc=$rc\"; cat \"$d.err\"; echo ---; cat \"$d/open_ports.prom\"; echo ---; ls -A \"$d\"
         umount \"$d\"; rm -r \"$d\" \"$d.err\""
    );
    let out = Command::new("unshare")
        .args(["-m", "sh", "-c", &script])
        .arg(util::bin::path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "test script failed: {}",
        stderr_of(&out)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut parts = text.splitn(3, "---\n");
    let (head, file, listing) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    (head.to_string(), file.to_string(), listing.to_string())
}

fn full_filesystem_keeps_the_previous_file() {
    // A one-page tmpfs, already full with the previous file.
    let (head, file, listing) = on_tmpfs("");
    assert!(
        head.starts_with("rc=1\nport_exporter: cannot write "),
        "{head}"
    );
    assert!(head.contains("No space left on device"), "{head}");
    assert_eq!(head.lines().count(), 2, "{head}");
    assert_eq!(file, "previous contents\n");
    assert_eq!(listing, "open_ports.prom\n");
}

fn read_only_filesystem_keeps_the_previous_file() {
    let (head, file, listing) = on_tmpfs("mount -o remount,ro \"$d\"");
    assert!(
        head.starts_with("rc=1\nport_exporter: cannot write "),
        "{head}"
    );
    assert!(head.contains("Read-only file system"), "{head}");
    assert_eq!(file, "previous contents\n");
    assert_eq!(listing, "open_ports.prom\n");
}

fn twenty_writers_never_show_a_reader_a_partial_file() {
    let dir = util::open_tempdir();
    let target = dir.path().join("open_ports.prom");
    // A big file (3,000 samples, ~100 KB) makes a torn write likely to show.
    let args = [
        "--ports",
        "1-3000",
        "--include-closed",
        "-o",
        target.to_str().unwrap(),
    ];
    assert!(run(args).status.success());
    let done = AtomicBool::new(false);
    let reads = thread::scope(|scope| {
        let reader = scope.spawn(|| {
            let mut reads = 0;
            while reads < 3000 || !done.load(Ordering::Relaxed) {
                let text = fs::read_to_string(&target).expect("the file vanished");
                assert_eq!(
                    check_exposition(&text),
                    Ok(3000),
                    "read {reads} saw a bad file"
                );
                reads += 1;
            }
            reads
        });
        let mut failed = Vec::new();
        for _ in 0..2 {
            let writers: Vec<_> = (0..20)
                .map(|_| {
                    Bin::new()
                        .args(args)
                        .command()
                        .stderr(std::process::Stdio::piped())
                        .spawn()
                        .unwrap()
                })
                .collect();
            for writer in writers {
                let output = writer.wait_with_output().unwrap();
                if !output.status.success() {
                    failed.push(stderr_of(&output));
                }
            }
        }
        // Stop the reader before judging, or a failure would leave it
        // reading forever.
        done.store(true, Ordering::Relaxed);
        assert!(failed.is_empty(), "writers failed: {failed:?}");
        reader.join().unwrap()
    });
    assert!(reads >= 3000);
    assert_eq!(
        dir_names(dir.path()),
        ["open_ports.prom"],
        "temp files were left behind"
    );
}

/// Makes `dir` belong to nobody, so that a run as nobody may write there.
fn give_to_nobody(dir: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::os::unix::fs::chown(dir, Some(65534), Some(65534)).unwrap();
    fs::set_permissions(dir, fs::Permissions::from_mode(mode)).unwrap();
}

fn a_directory_it_may_not_read_still_succeeds_with_a_warning() {
    // 0300: nobody may create and rename files there, but not open the
    // directory to fsync it. The file is replaced: that is a success.
    let dir = util::open_tempdir();
    let target = dir.path().join("open_ports.prom");
    fs::write(&target, "previous contents\n").unwrap();
    give_to_nobody(dir.path(), 0o300);
    let output = Bin::new()
        .nobody()
        .args(["--ports", "1-10", "--include-closed", "-o"])
        .arg(&target)
        .output();
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    let line = one_error_line(&output);
    assert!(
        line.contains("warning: wrote") && line.contains("Permission denied"),
        "{line}"
    );
    give_to_nobody(dir.path(), 0o755);
    assert_alone(&target, 10);
}

fn a_failed_directory_sync_after_the_rename_is_a_warning() {
    // The second fsync is the directory's, after the rename.
    let dir = util::open_tempdir();
    let target = dir.path().join("open_ports.prom");
    let output = Bin::new()
        .inject("fsync:error=EIO:when=2")
        .args(["--ports", "1-10", "--include-closed", "-o"])
        .arg(&target)
        .output();
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    let line = one_error_line(&output);
    assert!(
        line.contains(&format!("warning: wrote {}", target.display()))
            && line.contains("Input/output error"),
        "{line}"
    );
    assert_alone(&target, 10);
    // The first fsync (the data's) failing is a failure: nothing replaced.
    let output = Bin::new()
        .inject("fsync:error=EIO:when=1")
        .args(["--ports", "1-20", "--include-closed", "-o"])
        .arg(&target)
        .output();
    assert_eq!(output.status.code(), Some(1));
    let line = one_error_line(&output);
    assert!(
        line.starts_with(&format!(
            "port_exporter: cannot write {}: ",
            target.display()
        )),
        "{line}"
    );
    assert!(
        !line.contains(".tmp"),
        "the error names the temp file: {line}"
    );
    assert_alone(&target, 10);
}

/// Runs the binary with `args`, writing to `target`.
fn write_to(target: &Path, args: &[&str]) -> Output {
    Bin::new().args(args).arg("-o").arg(target).output()
}

fn devices_fifos_and_directories_are_never_replaced() {
    let dir = util::open_tempdir();
    let fifo = dir.path().join("fifo.prom");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let device = dir.path().join("null.prom");
    std::os::unix::fs::symlink("/dev/null", &device).unwrap();
    let subdir = dir.path().join("dir.prom");
    fs::create_dir(&subdir).unwrap();
    for (target, kind) in [
        (fifo.as_path(), "a FIFO"),
        (device.as_path(), "a character device"),
        (subdir.as_path(), "a directory"),
        (Path::new("/dev/null"), "a character device"),
    ] {
        let output = write_to(target, &["--ports", "1-10"]);
        assert_eq!(output.status.code(), Some(1), "{}", target.display());
        let line = one_error_line(&output);
        assert!(
            line.contains(&target.display().to_string()) && line.contains(kind),
            "{line}"
        );
    }
    assert!(fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo());
    assert_eq!(fs::read_link(&device).unwrap(), Path::new("/dev/null"));
    assert!(
        fs::metadata("/dev/null")
            .unwrap()
            .file_type()
            .is_char_device()
    );
    assert_eq!(
        dir_names(dir.path()),
        ["dir.prom", "fifo.prom", "null.prom"]
    );
    // A symlink to a regular file is replaced by the new file, as before.
    let real = dir.path().join("real");
    fs::write(&real, "old\n").unwrap();
    let link = dir.path().join("link.prom");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    assert!(write_to(&link, &["--ports", "1-10"]).status.success());
    assert!(fs::symlink_metadata(&link).unwrap().is_file());
}

fn names_up_to_255_bytes_work() {
    let dir = util::open_tempdir();
    for len in [236, 241, 242, 250, 255] {
        let target = dir.path().join(format!("{}.prom", "p".repeat(len - 5)));
        let output = write_to(&target, &["--ports", "1-10", "--include-closed"]);
        assert!(output.status.success(), "{len}: {}", stderr_of(&output));
        assert_alone(&target, 10);
        fs::remove_file(&target).unwrap();
    }
    assert!(dir_names(dir.path()).is_empty());
}

/// The syscalls that may do the rename.
const RENAMES: &str = "rename,renameat,renameat2";

/// A run writing to `target` that gets `signal` (SIGTERM as systemd sends
/// at a timeout, SIGKILL as the OOM killer does) just before its rename,
/// with its temp file written.
fn killed_before_rename(target: &Path, signal: &str) {
    let output = Bin::new()
        .inject(&format!("{RENAMES}:error=EINTR:signal={signal}"))
        .args(["--ports", "1-100", "-o"])
        .arg(target)
        .output();
    assert!(!output.status.success(), "the run was not killed");
}

/// A run writing to `target` that strace holds just before its rename, so
/// that it is still writing, until [`HeldRun::release`].
struct HeldRun {
    strace: ChildGuard,
}

impl HeldRun {
    fn start(target: &Path) -> HeldRun {
        let strace = ChildGuard(
            Bin::new()
                .inject(&format!("{RENAMES}:delay_enter=60000000"))
                .args(["--ports", "1-100", "-o"])
                .arg(target)
                .command()
                .spawn()
                .unwrap(),
        );
        HeldRun { strace }
    }

    /// Lets the run go on (killing strace detaches it) and waits for it to
    /// finish its rename.
    fn release(mut self) {
        let pid = self.strace.0.id();
        let run = fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap();
        let run = run.trim().to_string();
        assert!(!run.is_empty(), "strace has no child");
        self.strace.0.kill().unwrap();
        self.strace.0.wait().unwrap();
        wait_until("the released run to end", Duration::from_secs(30), || {
            (!Path::new(&format!("/proc/{run}")).exists()).then_some(())
        });
    }
}

fn killed_runs_leave_nothing_behind_after_the_next_run() {
    let dir = util::open_tempdir();
    let target = dir.path().join("open_ports.prom");
    let temp_files = || {
        dir_names(dir.path())
            .into_iter()
            .filter(|name| name.ends_with(".tmp"))
            .count()
    };
    let wait_for_temp_files = |count: usize| {
        wait_until(
            "a run to write its temp file",
            Duration::from_secs(30),
            || (temp_files() == count).then_some(()),
        );
    };
    for (round, signal) in ["SIGTERM", "SIGKILL", "SIGTERM", "SIGKILL"]
        .into_iter()
        .enumerate()
    {
        killed_before_rename(&target, signal);
        assert_eq!(temp_files(), round + 1, "{signal} left no temp file");
    }
    // Runs stopped by SIGTERM (as systemd does at a timeout) at staggered
    // moments: whatever each left, the next run removes it.
    for delay in 0..20 {
        let mut child = Bin::new()
            .args(["--ports", "1-65535", "--include-closed", "-o"])
            .arg(&target)
            .command()
            .spawn()
            .unwrap();
        thread::sleep(Duration::from_micros(500 * delay));
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let _ = child.wait();
    }
    assert!(write_to(&target, &["--ports", "1-10"]).status.success());
    assert_eq!(dir_names(dir.path()), ["open_ports.prom"]);
    for signal in ["SIGTERM", "SIGKILL"] {
        killed_before_rename(&target, signal);
    }
    // A run still writing keeps its temp file while another run cleans up.
    let busy = HeldRun::start(&target);
    wait_for_temp_files(3);
    assert!(write_to(&target, &["--ports", "1-10"]).status.success());
    assert_eq!(temp_files(), 1, "{:?}", dir_names(dir.path()));
    busy.release();
    assert!(write_to(&target, &["--ports", "1-10"]).status.success());
    assert_eq!(dir_names(dir.path()), ["open_ports.prom"]);
}
