//! Whole-process figures: the one-shot run timed against `ss`, and its peak
//! resident memory.
//!
//! A one-shot run is what cron or a systemd timer pays for: exec, dynamic
//! loading, argument parsing, the scan, formatting, writing, exit. So the
//! binary is spawned exactly as a user would run it (no arguments, stdout
//! to /dev/null) and the clock runs from just before the spawn to just after
//! the reap. `ss -Htn state listening` is timed the same way; both pay the
//! same spawn overhead, and ss is the tool users would otherwise reach for.
//! Two floors are timed in the same series, since a ratio means more when
//! the share it cannot change is known: `true` (fork, exec, glibc's start-up
//! and exit alone, a large part of either program's time on this machine)
//! and `port_exporter --version` (our start-up: loading, clap, exit, no
//! scan). So is the static musl build, which loads no shared libraries.

use std::{
    env,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use crate::stats::Samples;

/// The arguments of the `ss` run we compare with: the listener table only,
/// no header, numeric, TCP, both families.
pub const SS_ARGS: [&str; 3] = ["-Htn", "state", "listening"];

/// GNU time, used for the peak RSS of a child (see [`peak_rss_kib`]).
const GNU_TIME: &str = "/usr/bin/time";

/// A command for a measured child: no input, all output to /dev/null, and
/// a minimal environment (PATH only), as cron or a systemd timer gives.
///
/// Not the bench's own environment: for bench runs cargo sets
/// LD_LIBRARY_PATH to four directories of its own, and the dynamic loader
/// then searches each of them (and their glibc-hwcaps subdirectories) for
/// every shared library before it looks at its cache. Measured here, that
/// adds ~0.1 ms to each run of even `true`, and more to ss, which loads 15
/// libraries: it distorts the ratio, and no user pays it. `program` must
/// be a path (see [`tool`]): std spawns a bare name with a changed PATH by
/// fork and exec instead of posix_spawn, which would add a cost of its own.
fn command(program: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(path) = env::var_os("PATH") {
        cmd.env("PATH", path);
    }
    cmd
}

/// The absolute path of the program `name` in PATH, as a shell would find
/// it. Panics when it is missing: every figure that uses it needs it.
pub fn tool(name: &str) -> PathBuf {
    crate::util::find_program(name)
        .unwrap_or_else(|| panic!("{name} is not in PATH; the benchmark needs it"))
}

/// Runs `program args` once (see [`command`]) and returns the wall-clock
/// seconds from spawn to reap. Panics when it fails: a failing run is fast
/// and would flatter the figure.
pub fn time_run(program: &Path, args: &[&str]) -> f64 {
    let start = Instant::now();
    let status = command(program)
        .args(args)
        .status()
        .unwrap_or_else(|err| panic!("cannot run {}: {err}", program.display()));
    let elapsed = start.elapsed().as_secs_f64();
    assert!(status.success(), "{} failed: {status}", program.display());
    elapsed
}

/// A program of a series and its arguments.
pub type Program<'a> = (&'a Path, &'a [&'a str]);

/// Times `programs` in `runs` rounds of one run each, after `warmup`
/// untimed rounds, and returns each program's seconds per run, in the order
/// given: element i of every list is from round i.
///
/// Why interleaved: on a shared machine the background load drifts over
/// seconds. Timing all of ours, then all of ss, would let that drift land
/// on one side only and skew the ratio; rounds of one run each put all
/// programs under the same conditions. The order inside a round rotates,
/// so none of them always runs right after another warmed the caches.
pub fn series(programs: &[Program], runs: usize, warmup: usize) -> Vec<Vec<f64>> {
    for _ in 0..warmup {
        for (program, args) in programs {
            time_run(program, args);
        }
    }
    let mut seconds = vec![Vec::with_capacity(runs); programs.len()];
    for round in 0..runs {
        for k in 0..programs.len() {
            let which = (round + k) % programs.len();
            let (program, args) = programs[which];
            seconds[which].push(time_run(program, args));
        }
    }
    seconds
}

/// a/b within each round of a series: its median is less sensitive to slow
/// drift than the ratio of the two medians, printed as a cross-check.
pub fn per_round(a: &[f64], b: &[f64]) -> Samples {
    Samples::new(a.iter().zip(b).map(|(x, y)| x / y).collect())
}

/// The static release build, brought up to date the way the README builds
/// it (`cargo build --release --locked --target x86_64-unknown-linux-musl`)
/// in the target directory of the glibc build (`util::bin::path`), so a
/// stale copy is never timed. Err says why there is none (no musl target or
/// musl-gcc: cargo's own message is on stderr).
pub fn musl_release() -> Result<PathBuf, String> {
    const TARGET: &str = "x86_64-unknown-linux-musl";
    let target_dir = crate::util::bin::path()
        .parent()
        .and_then(Path::parent)
        .expect("the release binary is in a target directory")
        .to_owned();
    let args = ["build", "--release", "--locked", "--target", TARGET];
    let built = Command::new("cargo")
        .args(args)
        .arg("--target-dir")
        .arg(&target_dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null())
        .status()
        .map_err(|err| format!("cannot run cargo: {err}"))?;
    if !built.success() {
        return Err(format!("`cargo {}` failed: {built}", args.join(" ")));
    }
    Ok(target_dir.join(TARGET).join("release/port_exporter"))
}

/// Runs the binary once, untimed, and checks that it printed an exposition:
/// the timed runs send stdout to /dev/null, so this is the only place a
/// binary that prints nothing useful would be caught.
pub fn check_output(ours: &Path) {
    let out = command(ours)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap_or_else(|err| panic!("cannot run {}: {err}", ours.display()));
    assert!(
        out.status.success(),
        "{} failed: {}: {}",
        ours.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("# TYPE instance_open_ports gauge"),
        "{} printed no exposition:\n{text}",
        ours.display()
    );
}

/// Whether [`peak_rss_kib`] can work on this machine.
pub fn can_measure_rss() -> bool {
    Path::new(GNU_TIME).is_file()
}

/// The peak resident set (ru_maxrss, KiB) of one run of `program args`.
///
/// The kernel reports it only through wait4/getrusage, which need `unsafe`
/// from Rust, and the crate denies unsafe code in every target. So the run
/// goes through GNU time (`-f %M`), which forks, execs the program and
/// reads ru_maxrss with wait4 itself.
///
/// A small launcher is also what makes the figure right: a child's
/// ru_maxrss keeps the high-water mark of the image it had before exec,
/// which is a copy of its parent's (fork or vfork alike; a 300 MiB parent
/// gets ~310 MiB reported for `true`). Spawned from this bench, whose RSS
/// grows with its samples, the child would be charged the bench's memory.
/// GNU time's own image is small; [`rss_floor_kib`] shows that floor.
pub fn peak_rss_kib(program: &Path, args: &[&str]) -> f64 {
    let out = command(Path::new(GNU_TIME))
        .args(["-f", "maxrss_kib=%M", "--"])
        .arg(program)
        .args(args)
        .stderr(Stdio::piped())
        .output()
        .unwrap_or_else(|err| panic!("cannot run {GNU_TIME}: {err}"));
    assert!(
        out.status.success(),
        "{} under {GNU_TIME} failed: {}",
        program.display(),
        out.status
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    stderr
        .lines()
        .rev()
        .find_map(|line| line.strip_prefix("maxrss_kib="))
        .and_then(|kib| kib.trim().parse().ok())
        .unwrap_or_else(|| panic!("{GNU_TIME} printed no maxrss: {stderr:?}"))
}

/// The smallest peak RSS this method can report: that of `true`, a tiny C
/// program. A figure near this floor is dominated by the C runtime, not by
/// the program measured.
pub fn rss_floor_kib() -> f64 {
    peak_rss_kib(&tool("true"), &[])
}

/// Timings of two commands from one interleaved series.
pub struct Pair {
    pub a: Samples,
    pub b: Samples,
    /// a/b within each round.
    pub per_round: Samples,
}

/// Times `a` and `b` in `runs` rounds (after two untimed ones), the order
/// inside a round alternating, as [`series`] does for three.
pub fn pair(a: Program, b: Program, runs: usize) -> Pair {
    for _ in 0..2 {
        time_run(a.0, a.1);
        time_run(b.0, b.1);
    }
    let (mut ta, mut tb) = (Vec::new(), Vec::new());
    for round in 0..runs {
        if round % 2 == 0 {
            ta.push(time_run(a.0, a.1));
            tb.push(time_run(b.0, b.1));
        } else {
            tb.push(time_run(b.0, b.1));
            ta.push(time_run(a.0, a.1));
        }
    }
    Pair {
        per_round: per_round(&ta, &tb),
        a: Samples::new(ta),
        b: Samples::new(tb),
    }
}
