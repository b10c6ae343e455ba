//! The atomic write of the .prom file: mode, failure modes that must leave
//! the previous file untouched, and many writers racing one reader.

use std::{
    fs,
    os::unix::fs::MetadataExt,
    process::Command,
    sync::atomic::{AtomicBool, Ordering},
    thread,
};

use crate::util::{
    self, Bin, Root, SETPRIV, UNSHARE, check_exposition, dir_names, run, stderr_of, tests,
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
];

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
    assert_eq!(
        check_exposition(&fs::read_to_string(&target).unwrap()),
        Ok(1000)
    );
    assert_eq!(dir_names(dir.path()), ["open_ports.prom"]);
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
        for _ in 0..2 {
            let writers: Vec<_> = (0..20)
                .map(|_| Bin::new().args(args).command().spawn().unwrap())
                .collect();
            for mut writer in writers {
                assert!(writer.wait().unwrap().success());
            }
        }
        done.store(true, Ordering::Relaxed);
        reader.join().unwrap()
    });
    assert!(reads >= 3000);
    assert_eq!(
        dir_names(dir.path()),
        ["open_ports.prom"],
        "temp files were left behind"
    );
}
