//! The Debian package and the static build, as operators install them.
//!
//! `cargo deb` packages the binary under test with the units of src/units/;
//! lintian judges the package; a real systemd, booted as PID 1 of namespaces
//! of the test's own over an overlay of this machine's root, installs it with
//! dpkg, runs the timer and the socket-activated server under the units'
//! hardening, and purges it. The static (musl) build reports what the glibc
//! build reports in the same namespace.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::OnceLock,
    time::Duration,
};

use crate::util::{
    self, Check, Need, Netns, UNSHARE, find_program, in_netns, open_ports, stderr_of, stdout_of,
    succeed, tests, wait_until, zoo,
};

tests![
    (
        units_score_at_most_2_in_systemd_analyze_security,
        SYSTEMD_ANALYZE
    ),
    (lintian_finds_no_error_in_the_package, CARGO_DEB, LINTIAN),
    (
        the_package_works_under_a_real_systemd_and_purges_clean,
        Need::Root("boots systemd in namespaces of its own"),
        Netns,
        UNSHARE,
        CARGO_DEB,
        SYSTEMD,
        CURL,
        util::NODE_EXPORTER
    ),
    (
        the_static_musl_build_reports_what_the_glibc_build_does,
        Netns,
        MUSL
    ),
];

const SYSTEMD_ANALYZE: Need = Need::Program("systemd-analyze", "systemd");
const SYSTEMD: Need = Need::Program("systemctl", "systemd");
const LINTIAN: Need = Need::Program("lintian", "lintian");
const CURL: Need = Need::Program("curl", "curl");
const CARGO_DEB: Need = Check(|| {
    find_program("cargo-deb")
        .is_none()
        .then(|| "needs cargo-deb (cargo install --locked cargo-deb)".into())
});
const MUSL: Need = Check(|| {
    let sysroot = Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()
        .ok()?;
    let target = Path::new(String::from_utf8_lossy(&sysroot.stdout).trim())
        .join("lib/rustlib")
        .join(MUSL_TARGET);
    if !target.is_dir() {
        return Some(format!(
            "needs the {MUSL_TARGET} target (rustup target add {MUSL_TARGET})"
        ));
    }
    find_program("musl-gcc")
        .is_none()
        .then(|| "needs musl-gcc (apt-get install musl-tools)".into())
});
const MUSL_TARGET: &str = "x86_64-unknown-linux-musl";

/// stdout as text, whether the run succeeded or not.
fn out_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The crate's root, where Cargo.toml and src/units/ are.
fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The units the package installs, as `--generate` prints them.
const UNITS: [(&str, &str); 4] = [
    ("service", "port_exporter.service"),
    ("timer", "port_exporter.timer"),
    ("http-service", "port_exporter-http.service"),
    ("http-socket", "port_exporter-http.socket"),
];

fn units_score_at_most_2_in_systemd_analyze_security() {
    let dir = tempfile::tempdir().unwrap();
    for (kind, name) in UNITS {
        let text = stdout_of(&util::run(["--generate", kind]));
        let source = fs::read_to_string(root().join("src/units").join(name)).unwrap();
        assert_eq!(text, source, "--generate {kind} is not src/units/{name}");
        fs::write(dir.path().join(name), text).unwrap();
    }
    for name in ["port_exporter.service", "port_exporter-http.service"] {
        let out = succeed(
            Command::new("systemd-analyze")
                .args(["security", "--offline=yes", "--no-pager"])
                .arg(dir.path().join(name)),
        );
        let text = stdout_of(&out);
        let score = exposure(&text);
        assert!(score <= 2.0, "{name} scores {score}:\n{text}");
        // What the scan needs stays allowed.
        for allowed in [
            "RestrictAddressFamilies=~AF_NETLINK",
            "ProtectProc=",
            "ProcSubset=",
        ] {
            assert!(
                text.lines().any(|l| l.contains('✗') && l.contains(allowed)),
                "{name}: {allowed} is restricted, which breaks the scan"
            );
        }
    }
}

/// The overall exposure level in what `systemd-analyze security UNIT` said.
#[track_caller]
fn exposure(text: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.split_once("Overall exposure level for ")?
                .1
                .split_once(": ")
        })
        .and_then(|(_, rest)| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no overall score in:\n{text}"))
}

/// The package of the binary under test, built once by `cargo deb` from
/// Cargo.toml's `[package.metadata.deb]`: cargo-deb takes the binary as
/// `target/release/port_exporter` of a target directory of our own, so
/// the test's build is packaged as it is, not rebuilt.
fn deb() -> &'static Path {
    static DEB: OnceLock<PathBuf> = OnceLock::new();
    DEB.get_or_init(|| {
        let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("deb");
        let _ = fs::remove_dir_all(&target);
        fs::create_dir_all(target.join("release")).unwrap();
        let bin = target.join("release/port_exporter");
        fs::copy(util::bin::path(), &bin).unwrap();
        // Stripped, as the release profile builds it (`strip = true`).
        succeed(Command::new("strip").arg(&bin));
        let out = target.join("port-exporter.deb");
        succeed(
            Command::new("cargo")
                .args(["deb", "--no-build", "--output"])
                .arg(&out)
                .current_dir(root())
                .env("CARGO_TARGET_DIR", &target),
        );
        out
    })
}

fn lintian_finds_no_error_in_the_package() {
    // The package's version is the crate's: bump the changelog with it.
    let changelog = fs::read_to_string(root().join("src/units/debian/changelog")).unwrap();
    let version = format!("port-exporter ({}-1) ", env!("CARGO_PKG_VERSION"));
    assert!(
        changelog.starts_with(&version),
        "changelog is not {version}"
    );
    let out = Command::new("lintian")
        .args(["--tag-display-limit", "0", "--display-info"])
        .arg(deb())
        .output()
        .unwrap();
    let text = out_of(&out);
    let errors: Vec<&str> = text.lines().filter(|l| l.starts_with("E:")).collect();
    assert!(errors.is_empty(), "lintian:\n{text}{}", stderr_of(&out));
}

/// systemd as PID 1 of new PID, mount, network, UTS and IPC namespaces,
/// over an overlay of this machine's root whose writes land in a tmpfs,
/// with tmpfs /run and /tmp (see /work/shared/reference: booted on the
/// real root, its tmpfiles service would empty the host's /tmp). Killed,
/// with everything it started, when dropped.
struct Container {
    unshare: Child,
    pid: u32,
    cgroup: String,
    _dir: tempfile::TempDir,
}

/// The boot script, run as PID 1 of the new namespaces: $1 is a scratch
/// directory, $2 the name of the cgroup made for it on both hierarchies
/// (cgroups are not namespaced).
const BOOT: &str = r#"
set -e
mount --make-rprivate /
R=$1
mount -t tmpfs tmpfs "$R"
mkdir -p "$R/upper" "$R/work" "$R/root"
mount -t overlay overlay -o lowerdir=/,upperdir="$R/upper",workdir="$R/work" "$R/root"
for d in proc sys dev; do mount --rbind /$d "$R/root/$d"; done
mount -t tmpfs tmpfs "$R/root/run"
mount -t tmpfs tmpfs "$R/root/tmp"
for h in systemd unified; do
    mkdir -p /sys/fs/cgroup/$h/$2
    echo $$ > /sys/fs/cgroup/$h/$2/cgroup.procs
done
# Docker's policy-rc.d forbids starting services from maintainer scripts.
rm -f "$R/root/usr/sbin/policy-rc.d"
cd "$R/root"
mkdir -p oldroot
pivot_root . oldroot
umount -l /oldroot
export container=other
exec /lib/systemd/systemd --system --log-target=console --log-level=notice
"#;

impl Container {
    fn boot() -> Container {
        let dir = tempfile::tempdir().unwrap();
        let cgroup = format!("port_exporter-test-{}", std::process::id());
        let log = fs::File::create(dir.path().join("boot.log")).unwrap();
        let scratch = dir.path().join("root");
        fs::create_dir(&scratch).unwrap();
        let unshare = Command::new("setsid")
            .args([
                "unshare",
                "-p",
                "-f",
                "-m",
                "--mount-proc",
                "-n",
                "-u",
                "-i",
            ])
            .args(["--kill-child", "sh", "-c", BOOT, "boot"])
            .arg(&scratch)
            .arg(&cgroup)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let children = format!("/proc/{0}/task/{0}/children", unshare.id());
        let pid = wait_until("unshare's child", Duration::from_secs(10), || {
            fs::read_to_string(&children)
                .ok()?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        });
        let container = Container {
            unshare,
            pid,
            cgroup,
            _dir: dir,
        };
        let state = wait_until("systemd to boot", Duration::from_secs(120), || {
            let out = container.sh("systemctl is-system-running --wait");
            let state = out_of(&out).trim().to_string();
            (!state.is_empty() && state != "offline").then_some(state)
        });
        assert!(
            state == "running" || state == "degraded",
            "systemd is {state}:\n{}",
            container.log()
        );
        container
    }

    /// Runs `script` with sh inside, in every namespace of the container.
    fn sh(&self, script: &str) -> Output {
        Command::new("nsenter")
            .arg("-t")
            .arg(self.pid.to_string())
            .args(["-m", "-p", "-n", "-u", "-i", "--", "sh", "-c", script])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Copies the host's file `from` to `to` inside. The host's /tmp and
    /// /run are not visible inside (tmpfs of the container's own), and a
    /// clone of this repository may well be under /tmp.
    fn put(&self, from: &Path, to: &str) {
        let out = Command::new("nsenter")
            .arg("-t")
            .arg(self.pid.to_string())
            .args([
                "-m",
                "-p",
                "-n",
                "-u",
                "-i",
                "--",
                "sh",
                "-c",
                "cat > \"$1\"",
                "sh",
                to,
            ])
            .stdin(fs::File::open(from).unwrap())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "copying {} into the container failed: {}",
            from.display(),
            stderr_of(&out)
        );
    }

    /// Runs `script` inside and returns its stdout; fails the test when it
    /// fails.
    #[track_caller]
    fn ok(&self, script: &str) -> String {
        let out = self.sh(script);
        assert!(
            out.status.success(),
            "in the container, `{script}` failed ({}):\n{}{}",
            out.status,
            out_of(&out),
            stderr_of(&out)
        );
        out_of(&out)
    }

    /// One property of a unit, as `systemctl show -P` prints it.
    fn property(&self, unit: &str, property: &str) -> String {
        self.ok(&format!("systemctl show -P {property} {unit}"))
            .trim()
            .to_string()
    }

    /// What systemd said on its console.
    fn log(&self) -> String {
        fs::read_to_string(self._dir.path().join("boot.log")).unwrap_or_default()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        // Killing PID 1 of a PID namespace kills every process in it.
        let _ = Command::new("kill")
            .args(["-KILL", &self.pid.to_string()])
            .status();
        let _ = self.unshare.kill();
        let _ = self.unshare.wait();
        for hierarchy in ["systemd", "unified"] {
            let dir = format!("/sys/fs/cgroup/{hierarchy}/{}", self.cgroup);
            // Children first; rmdir only, and only once their processes
            // are gone.
            // Never a panic here: this may run while a failed test unwinds.
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while Path::new(&dir).exists() && std::time::Instant::now() < deadline {
                let _ = Command::new("find")
                    .args([&dir, "-depth", "-type", "d", "-exec", "rmdir", "{}", ";"])
                    .stderr(Stdio::null())
                    .status();
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// The textfile the package's timer writes, and the link node_exporter
/// reads it through.
const TEXTFILE: &str = "/var/lib/port_exporter/open_ports.prom";
const LINK: &str = "/var/lib/prometheus/node-exporter/open_ports.prom";
/// Where the package is copied to inside the container.
const DEB: &str = "/root/port-exporter.deb";

fn the_package_works_under_a_real_systemd_and_purges_clean() {
    let deb = deb();
    let ct = Container::boot();
    // Debian's node_exporter, started by this systemd, listens before the
    // package comes, so that the set of listeners is settled.
    wait_until("node_exporter to listen", Duration::from_secs(60), || {
        ct.ok("ss -Htln").contains(":9100 ").then_some(())
    });
    ct.put(deb, DEB);
    ct.ok(&format!("dpkg -i {DEB}"));
    let files: Vec<String> = ct
        .ok("dpkg -L port-exporter")
        .lines()
        .map(str::to_string)
        .collect();

    // Enabled and started on install: the timer fires at once, or 30 s
    // after this systemd started (OnBootSec=), and runs the job.
    assert_eq!(
        ct.property("port_exporter.timer", "UnitFileState"),
        "enabled"
    );
    assert_eq!(ct.property("port_exporter.timer", "ActiveState"), "active");
    assert_eq!(
        ct.property("port_exporter-http.socket", "UnitFileState"),
        "disabled"
    );
    assert_eq!(
        ct.property("port_exporter-http.socket", "ActiveState"),
        "inactive"
    );
    assert_eq!(ct.ok("id -un port_exporter").trim(), "port_exporter");
    let first = wait_until("the first textfile", Duration::from_secs(90), || {
        let out = ct.sh(&format!("stat -c '%a %U %.9Y' {TEXTFILE}"));
        out.status.success().then(|| out_of(&out))
    });
    let (mode_owner, _) = first.trim().rsplit_once(' ').unwrap();
    assert_eq!(mode_owner, "644 port_exporter", "{first}");
    assert_eq!(
        ct.ok(&format!("readlink {LINK}")).trim(),
        "../../port_exporter/open_ports.prom"
    );
    let text = ct.ok(&format!("cat {LINK}"));
    let listening = util::ss_ports(&ct.ok("ss -Htln"));
    assert_eq!(open_ports(&text), listening, "{text}");

    // The timer fires by itself (OnBootSec=30s), and the file is rewritten.
    wait_until("the timer to fire", Duration::from_secs(120), || {
        (ct.property("port_exporter.timer", "LastTriggerUSecMonotonic") != "0").then_some(())
    });
    wait_until("the job to run again", Duration::from_secs(120), || {
        (ct.ok(&format!("stat -c '%a %U %.9Y' {TEXTFILE}")) != first).then_some(())
    });
    assert_eq!(ct.property("port_exporter.service", "Result"), "success");

    // Debian's node_exporter exports it.
    let scraped = wait_until(
        "node_exporter to export it",
        Duration::from_secs(30),
        || {
            let out = ct.sh("curl -sf http://127.0.0.1:9100/metrics");
            let text = out_of(&out);
            text.contains("instance_open_ports{").then_some(text)
        },
    );
    assert_eq!(open_ports(&scraped), listening);

    // The oneshot's hardening as systemd applies it, and as this systemd
    // scores it.
    for unit in ["port_exporter.service", "port_exporter-http.service"] {
        let text = ct.ok(&format!("systemd-analyze security --no-pager {unit}"));
        assert!(exposure(&text) <= 2.0, "{text}");
    }
    for (property, value) in [
        ("User", "port_exporter"),
        ("NoNewPrivileges", "yes"),
        ("CapabilityBoundingSet", ""),
        ("ProtectSystem", "strict"),
        ("PrivateDevices", "yes"),
        ("ProtectProc", "default"),
    ] {
        assert_eq!(
            ct.property("port_exporter.service", property),
            value,
            "port_exporter.service {property}"
        );
    }

    let mut families: Vec<String> = ct
        .property("port_exporter.service", "RestrictAddressFamilies")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    families.sort();
    assert_eq!(families, ["AF_NETLINK", "AF_UNIX"]);

    // --serve by socket activation: the first connection starts it.
    ct.ok("systemctl start port_exporter-http.socket");
    let served = ct.ok("curl -sf http://127.0.0.1:8000/metrics");
    assert!(served.contains("port_exporter_scans_total"), "{served}");
    let served_ports = open_ports(&served);
    let now_listening = util::ss_ports(&ct.ok("ss -Htln"));
    assert_eq!(served_ports, now_listening, "{served}");
    assert!(served_ports.contains(&8000), "{served}");
    assert_eq!(
        ct.property("port_exporter-http.service", "ActiveState"),
        "active"
    );
    // The hardening in force in the running server.
    let main_pid = ct.property("port_exporter-http.service", "MainPID");
    let status = ct.ok(&format!("cat /proc/{main_pid}/status"));
    for line in [
        "NoNewPrivs:\t1",
        "CapEff:\t0000000000000000",
        "CapBnd:\t0000000000000000",
        "Seccomp:\t2",
    ] {
        assert!(status.contains(line), "no {line:?} in:\n{status}");
    }
    assert_eq!(
        ct.ok(&format!("stat -c %U /proc/{main_pid}")).trim(),
        "port_exporter"
    );
    // Purge removes it all: files, units, state, the link, the user.
    ct.ok("dpkg --purge port-exporter");
    let left: Vec<&String> = files
        .iter()
        .filter(|f| !ct.sh(&format!("test -d '{f}'")).status.success())
        .filter(|f| {
            ct.sh(&format!("test -e '{f}' -o -L '{f}'"))
                .status
                .success()
        })
        .collect();
    assert!(left.is_empty(), "left after purge: {left:?}");
    for path in [
        TEXTFILE,
        "/var/lib/port_exporter",
        "/etc/default/port_exporter",
        "/etc/systemd/system/timers.target.wants/port_exporter.timer",
    ] {
        assert!(
            !ct.sh(&format!("test -e {path} -o -L {path}"))
                .status
                .success(),
            "{path} is left after purge"
        );
    }
    assert!(
        !ct.sh(&format!("test -L {LINK}")).status.success(),
        "{LINK} is left"
    );
    assert!(!ct.sh("getent passwd port_exporter").status.success());
    assert!(!ct.sh("getent group port_exporter").status.success());
    // (It exits 1 when it lists none.)
    let units = ct.sh("systemctl list-unit-files --no-legend 'port_exporter*'");
    assert_eq!(out_of(&units).trim(), "", "units left after purge");

    // Without node_exporter: the link's directory is made (root's, 0755, as
    // Debian ships it), and removed again by the purge.
    ct.ok(
        "dpkg --purge prometheus-node-exporter-collectors prometheus-node-exporter \
         && test ! -e /var/lib/prometheus/node-exporter",
    );
    ct.ok(&format!("dpkg -i {DEB}"));
    wait_until("the textfile", Duration::from_secs(30), || {
        ct.sh(&format!("test -s {LINK}"))
            .status
            .success()
            .then_some(())
    });
    assert_eq!(
        ct.ok("stat -c '%a %U' /var/lib/prometheus/node-exporter")
            .trim(),
        "755 root"
    );
    ct.ok("dpkg --purge port-exporter");
    assert!(
        !ct.sh("test -e /var/lib/prometheus/node-exporter")
            .status
            .success(),
        "the textfile directory made for the link is left"
    );
}

/// Builds the binary for the musl target (a static executable), in a
/// target directory of its own: `cargo test` holds the lock of its own.
fn musl_bin() -> PathBuf {
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("musl");
    succeed(
        Command::new("cargo")
            .args([
                "build",
                "--locked",
                "--bin",
                "port_exporter",
                "--target",
                MUSL_TARGET,
            ])
            .current_dir(root())
            .env("CARGO_TARGET_DIR", &target),
    );
    target.join(MUSL_TARGET).join("debug/port_exporter")
}

fn the_static_musl_build_reports_what_the_glibc_build_does() {
    let musl = musl_bin();
    // Static: no program interpreter, no shared library.
    let headers = out_of(&succeed(Command::new("readelf").args(["-ldW"]).arg(&musl)));
    assert!(
        !headers.contains("program interpreter") && !headers.contains("(NEEDED)"),
        "{headers}"
    );
    let glibc = util::bin::path();
    in_netns(|| {
        let _zoo = zoo::zoo(false);
        let dir = tempfile::tempdir().unwrap();
        for args in [
            &["--version"][..],
            &["--help"],
            &["--generate", "timer"],
            &[],
            &[
                "--ports",
                "1-65535",
                "--include-closed",
                "--exclude",
                "2-60000",
            ],
            &["--labels", "address,scope,user", "--protocol", "tcp,udp"],
            &["--format", "table", "--method", "procfs"],
            &["--format", "json"],
            &["--method", "bind", "--ports", "1-2000"],
            &["--no-such-option"],
        ] {
            let run = |bin: &Path| {
                let out = Command::new(bin).args(args).output().unwrap();
                (
                    out.status.code(),
                    without_timings(&out_of(&out)),
                    stderr_of(&out),
                )
            };
            assert_eq!(run(&musl), run(&glibc), "port_exporter {args:?}");
        }
        // -o writes the same file.
        let write = |bin: &Path, name: &str| {
            let path = dir.path().join(name);
            succeed(Command::new(bin).arg("-o").arg(&path));
            without_timings(&fs::read_to_string(path).unwrap())
        };
        assert_eq!(write(&musl, "musl.prom"), write(&glibc, "glibc.prom"));
    });
}

/// An exposition without the lines that differ from run to run.
fn without_timings(text: &str) -> String {
    text.lines()
        .filter(|l| {
            !l.starts_with("port_exporter_scan_duration_seconds ")
                && !l.starts_with("port_exporter_last_scan_timestamp_seconds ")
        })
        .map(|l| format!("{l}\n"))
        .collect()
}
