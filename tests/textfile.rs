//! The atomic write of the .prom file: mode, failure modes that must leave
//! the previous file untouched, and many writers racing one reader.

use std::{
    fs,
    io::Read,
    os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt},
    path::Path,
    process::{Command, Output, Stdio},
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
    (
        a_run_held_before_locking_its_temp_file_loses_nothing_to_cleanup,
        STRACE
    ),
    (a_run_killed_while_writing_leaves_nothing_at_all, STRACE),
    (without_o_tmpfile_the_temp_file_is_made_named, STRACE),
    (
        without_proc_the_temp_file_is_still_named,
        Root("mounts"),
        UNSHARE,
        SETPRIV,
        STRACE
    ),
];

/// The one line of a run that failed (exit 1) to write `target`, which
/// it names.
#[track_caller]
fn write_failure(output: &Output, target: &Path) -> String {
    assert_eq!(output.status.code(), Some(1), "{}", stderr_of(output));
    let line = one_error_line(output);
    let start = format!("port_exporter: cannot write {}: ", target.display());
    assert!(line.starts_with(&start), "{line}");
    line
}

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
    // Which access is missing, and where the README solves it.
    assert!(
        stderr.contains(&format!(
            "needs write access to the directory {} (FILE is replaced by a rename there)",
            dir.path().display()
        )) && stderr.contains("Troubleshooting in the README"),
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
                    failed.push(format!("{}: {}", output.status, stderr_of(&output)));
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
    let line = write_failure(&output, &target);
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

/// What `/proc/PID/syscall` says `pid` is in: the syscall number and its
/// first argument, or `None` while it runs (or is gone).
fn syscall_of(pid: &str) -> Option<(i64, u64)> {
    let text = fs::read_to_string(format!("/proc/{pid}/syscall")).ok()?;
    let mut fields = text.split_whitespace();
    let number = fields.next()?.parse().ok()?;
    let first = fields.next()?.trim_start_matches("0x");
    Some((number, u64::from_str_radix(first, 16).ok()?))
}

fn a_run_held_before_locking_its_temp_file_loses_nothing_to_cleanup() {
    // A run that strace holds as it enters its first flock(2): the lock of
    // its new temp file. Meanwhile another run writes FILE and removes the
    // temp files whose lock is free. The held run's file must survive
    // that, unseen or locked, and be the one that becomes FILE: a temp
    // file that had a name before its lock would be removed as abandoned,
    // and its owner would have to start over with another.
    let dir = util::open_tempdir();
    let target = dir.path().join("open_ports.prom");
    // Where O_TMPFILE is missing, runs take the named way, which cannot
    // pass this test.
    let unnamed = fs::OpenOptions::new()
        .write(true)
        .custom_flags(nix::fcntl::OFlag::O_TMPFILE.bits())
        .open(dir.path());
    assert!(
        unnamed.is_ok(),
        "{} has no O_TMPFILE: {unnamed:?}",
        dir.path().display()
    );
    let mut strace = ChildGuard(
        Bin::new()
            .inject("flock:delay_enter=60000000:when=1")
            .args(["--ports", "1-77", "--include-closed", "-o"])
            .arg(&target)
            .command()
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let tracer = strace.0.id();
    // strace's child that runs the binary (strace forks others to probe
    // the kernel first).
    let run = wait_until("strace to start the run", Duration::from_secs(30), || {
        let children = fs::read_to_string(format!("/proc/{tracer}/task/{tracer}/children")).ok()?;
        children
            .split_whitespace()
            .find(|pid| {
                fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|comm| comm == "port_exporter\n")
            })
            .map(str::to_string)
    });
    let held = |fd: u64| syscall_of(&run) == Some((nix::libc::SYS_flock, fd));
    let fd = wait_until("the run to reach its lock", Duration::from_secs(30), || {
        syscall_of(&run)
            .filter(|&(number, _)| number == nix::libc::SYS_flock)
            .map(|(_, fd)| fd)
    });
    // Held open here too, so that its inode number cannot go to another
    // file while this test compares them.
    let file = fs::File::open(format!("/proc/{run}/fd/{fd}")).unwrap();
    let inode = file.metadata().unwrap().ino();
    let cleaner = write_to(&target, &["--ports", "1-10", "--include-closed"]);
    assert!(cleaner.status.success(), "{}", stderr_of(&cleaner));
    assert!(held(fd), "the run was not held until the other run ended");
    // Killing strace lets the run go on.
    strace.0.kill().unwrap();
    strace.0.wait().unwrap();
    let mut stderr = String::new();
    // Until the run ends, which closes the last end of the pipe.
    strace
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(stderr, "", "the held run failed");
    assert_eq!(
        fs::metadata(&target).unwrap().ino(),
        inode,
        "the held run had to make another temp file: the other run removed its first"
    );
    drop(file);
    assert_alone(&target, 77);
}

fn a_run_killed_while_writing_leaves_nothing_at_all() {
    // Killed at the fsync of its data, before its temp file has a name: no
    // temp file is left, not even one for the next run to remove.
    let dir = util::open_tempdir();
    let target = dir.path().join("open_ports.prom");
    assert!(
        write_to(&target, &["--ports", "1-10", "--include-closed"])
            .status
            .success()
    );
    for signal in ["SIGTERM", "SIGKILL"] {
        let output = Bin::new()
            .inject(&format!("fsync:error=EINTR:signal={signal}:when=1"))
            .args(["--ports", "1-20", "--include-closed", "-o"])
            .arg(&target)
            .output();
        assert!(!output.status.success(), "the run was not killed");
        assert_alone(&target, 10);
    }
}

/// Runs the binary under umask 077, writing 20 samples to `target`, with
/// its first openat(2) of `target`'s directory (the creation of its temp
/// file) failing with `errno`.
fn write_failing_first_open_of_dir(target: &Path, errno: &str) -> Output {
    Command::new("sh")
        .args([
            "-c",
            "umask 077 && exec strace -f -o /dev/null -P \"$1\" -e trace=openat \
             -e inject=openat:error=$2:when=1 \"$0\" --ports 1-20 --include-closed -o \"$3\"",
        ])
        .arg(util::bin::path())
        .arg(target.parent().unwrap())
        .arg(errno)
        .arg(target)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn without_o_tmpfile_the_temp_file_is_made_named() {
    // What open(2) says where the kernel or the filesystem has no
    // O_TMPFILE: the run makes a named temp file instead.
    let dir = util::open_tempdir();
    let target = dir.path().join("open_ports.prom");
    for errno in ["EOPNOTSUPP", "EISDIR", "EINVAL", "ENOENT"] {
        fs::write(&target, "previous contents\n").unwrap();
        let output = write_failing_first_open_of_dir(&target, errno);
        assert!(output.status.success(), "{errno}: {}", stderr_of(&output));
        assert_eq!(fs::metadata(&target).unwrap().mode() & 0o777, 0o644);
        assert_alone(&target, 20);
    }
    // Any other error is the run's failure, and leaves the previous file.
    fs::write(&target, "previous contents\n").unwrap();
    let output = write_failing_first_open_of_dir(&target, "EACCES");
    let line = write_failure(&output, &target);
    assert!(line.contains("Permission denied"), "{line}");
    assert_eq!(fs::read_to_string(&target).unwrap(), "previous contents\n");
    assert_eq!(dir_names(dir.path()), ["open_ports.prom"]);
}

fn without_proc_the_temp_file_is_still_named() {
    // With an empty tmpfs over /proc, in a mount namespace of its own, the
    // run cannot name its temp file through /proc/self/fd. It names it
    // with linkat's AT_EMPTY_PATH (allowed to root, and to others since
    // Linux 6.10) or, where that is refused, makes a named temp file.
    let dir = util::open_tempdir();
    let target = dir.path().join("open_ports.prom");
    give_to_nobody(dir.path(), 0o755);
    let nobody = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
    ];
    let refused = [
        "strace",
        "-f",
        "-o",
        "/dev/null",
        "-e",
        "trace=linkat",
        "-e",
        "inject=linkat:error=ENOENT",
    ];
    for (how, wrapper, bin) in [
        ("as root", &[][..], util::bin::path()),
        ("as nobody", &nobody[..], util::bin::shared_bin()),
        (
            "with AT_EMPTY_PATH refused",
            &refused[..],
            util::bin::path(),
        ),
    ] {
        fs::write(&target, "previous contents\n").unwrap();
        let output = Command::new("unshare")
            .args([
                "-m",
                "sh",
                "-c",
                "mount -t tmpfs none /proc && exec \"$@\"",
                "sh",
            ])
            .args(wrapper)
            .arg(bin)
            .args(["--ports", "1-20", "--include-closed", "-o"])
            .arg(&target)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(output.status.success(), "{how}: {}", stderr_of(&output));
        assert_eq!(
            fs::metadata(&target).unwrap().mode() & 0o777,
            0o644,
            "{how}"
        );
        assert_alone(&target, 20);
    }
}
