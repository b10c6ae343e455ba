//! `--netns all` with real containers, run by a Docker engine of the
//! test's own (Debian's docker.io), against `ss` run inside each
//! container's namespace.
//!
//! The scenario runs as PID 1 of fresh mount, network and PID namespaces
//! (`unshare -m -n -p -f --mount-proc`, as in `netns.rs`), so that the
//! engine's daemons, shims and containers are its own processes and all of
//! them end with it. The engine keeps everything in a tmpfs on `/run`: its
//! data root (vfs driver), its socket, and its exec root `/var/run/docker`,
//! which is where port_exporter looks for Docker's namespace files. It
//! makes no bridge and leaves iptables, forwarding and masquerading alone.
//! Its one image is this test binary and the libraries it loads, imported
//! from a tar stream (there is no registry); its containers run the kit's
//! holder (`util::scenario`) with `--network none`: a namespace with a loopback
//! only.
//!
//! Checked: every container's listeners are reported under its short id
//! (what `docker ps` shows), a sidecar that shares a container's namespace
//! under that container's id, one port in three namespaces kept apart,
//! Docker's own namespace files not counted as namespaces of their own, a
//! paused container still reported, and a removed one gone.

use std::{
    fs::{self, File},
    path::{Path, PathBuf},
    process::{Child, Command, ExitCode, Stdio},
    time::Duration,
};

use crate::util::{
    self, Bin, DOCKERD, Netns, UNSHARE,
    scenario::{self, Holder, NetnsRow, Place, netns_oracle, netns_rows, sh},
    stdout_of, tests,
};

tests![(
    containers_are_named_by_their_short_id,
    Netns,
    UNSHARE,
    DOCKERD
)];

/// Where the engine keeps its socket, configuration, log and data (in the
/// scenario's tmpfs on /run).
const DIR: &str = "/run/port_exporter-docker";
/// Docker's exec root, its default: its namespace files are in `netns/`.
const EXEC_ROOT: &str = "/var/run/docker";
/// The image the containers run.
const IMAGE: &str = "port_exporter-test:holder";

/// Runs the role this process was started for, if it is this module's.
pub fn role() -> Option<ExitCode> {
    (std::env::var(util::ROLE).ok()? == "docker-scenario").then(|| {
        scenario();
        ExitCode::SUCCESS
    })
}

fn containers_are_named_by_their_short_id() {
    util::run_role(
        &["--mount", "--net", "--pid", "--fork", "--mount-proc"],
        "docker-scenario",
        "docker scenario: all views agree",
    );
}

/// A Docker engine (dockerd, and the containerd it starts) of the
/// scenario's own. Dropping it stops it and removes the cgroup
/// directories it made.
struct Engine {
    dockerd: Child,
    host: String,
    /// The `docker` cgroup directories that did not exist before the
    /// engine started (cgroups are the host's, not namespaced).
    cgroups: Vec<PathBuf>,
}

impl Engine {
    fn start() -> Engine {
        fs::create_dir_all(DIR).unwrap();
        // An empty configuration: a daemon.json of the host's has no say.
        let config = format!("{DIR}/daemon.json");
        fs::write(&config, "{}\n").unwrap();
        let cgroups = cgroup_mounts()
            .into_iter()
            .map(|mount| mount.join("docker"))
            .filter(|dir| !dir.exists())
            .collect();
        let log = File::create(format!("{DIR}/dockerd.log")).unwrap();
        let host = format!("unix://{DIR}/docker.sock");
        let dockerd = Command::new("dockerd")
            .arg(format!("--config-file={config}"))
            .arg(format!("--host={host}"))
            .arg(format!("--data-root={DIR}/data"))
            .arg(format!("--exec-root={EXEC_ROOT}"))
            .arg(format!("--pidfile={DIR}/dockerd.pid"))
            .args([
                "--storage-driver=vfs",
                "--bridge=none",
                "--iptables=false",
                "--ip6tables=false",
                "--ip-forward=false",
                "--ip-masq=false",
                "--log-level=warn",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut engine = Engine {
            dockerd,
            host,
            cgroups,
        };
        util::wait_until("dockerd to answer", Duration::from_secs(60), || {
            if let Some(status) = engine.dockerd.try_wait().unwrap() {
                panic!("dockerd exited ({status}):\n{}", log_text());
            }
            let ok = engine.docker(&["version"]).output().unwrap();
            ok.status.success().then_some(())
        });
        engine
    }

    /// `docker ARGS` as a command, talking to this engine.
    fn docker(&self, args: &[&str]) -> Command {
        let mut command = Command::new("docker");
        command
            .env("DOCKER_HOST", &self.host)
            .args(args)
            .stdin(Stdio::null());
        command
    }

    /// The output of `docker ARGS`, which must succeed.
    #[track_caller]
    fn output(&self, args: &[&str]) -> String {
        let out = self.docker(args).output().unwrap();
        assert!(
            out.status.success(),
            "docker {args:?} failed: {}\ndockerd's log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            log_text()
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Imports [`IMAGE`]: this test binary as `/holder`, port_exporter as
    /// `/port_exporter`, and the libraries they load at their own paths.
    fn import_image(&self) {
        let root = Path::new(DIR).join("image");
        let mut files = Vec::new();
        for (exe, name) in [
            (std::env::current_exe().unwrap(), "holder"),
            (util::bin::path(), "port_exporter"),
        ] {
            for library in libraries(&exe) {
                let to = root.join(library.strip_prefix("/").unwrap());
                files.push((library, to));
            }
            files.push((exe, root.join(name)));
        }
        // Both load libc: copy it once.
        files.sort();
        files.dedup();
        for (from, to) in files {
            fs::create_dir_all(to.parent().unwrap()).unwrap();
            fs::copy(&from, &to).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
        }
        let mut tar = Command::new("tar")
            .arg("-C")
            .arg(&root)
            .args(["-c", "."])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let out = self
            .docker(&["import", "-", IMAGE])
            .stdin(tar.stdout.take().unwrap())
            .output()
            .unwrap();
        assert!(tar.wait().unwrap().success(), "tar failed");
        assert!(
            out.status.success(),
            "docker import failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        fs::remove_dir_all(root).unwrap();
    }

    /// Runs a container `name` on `network` whose process, named `c-NAME`,
    /// opens the sockets of `spec` (see `util::scenario::open`) and holds them
    /// until the container is dropped.
    fn run(&self, name: &str, network: &str, spec: &str) -> Container {
        let mut command = self.docker(&["run", "-i", "--rm", "--network", network]);
        command.args(["--name", name]);
        for (key, value) in scenario::holder_env(&format!("c-{name}"), spec) {
            command.arg("--env").arg(format!("{key}={value}"));
        }
        command.args([IMAGE, "/holder"]);
        let (client, _) = util::start_helper(&mut command);
        let inspect = self.output(&["inspect", "--format", "{{.Id}} {{.State.Pid}}", name]);
        let (id, pid) = inspect.trim().split_once(' ').unwrap();
        Container {
            client,
            name: name.to_string(),
            short: id[..12].to_string(),
            pid: pid.parse().unwrap(),
        }
    }

    /// The names of Docker's namespace files.
    fn netns_files(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(format!("{EXEC_ROOT}/netns"))
            .map(|dir| {
                dir.map(|e| e.unwrap().file_name().into_string().unwrap())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        // SIGTERM: dockerd stops its containers and containerd, and exits.
        let _ = Command::new("kill")
            .args(["-TERM", &self.dockerd.id().to_string()])
            .status();
        let stopped = (0..3000).any(|_| {
            let done = matches!(self.dockerd.try_wait(), Ok(Some(_)));
            if !done {
                std::thread::sleep(Duration::from_millis(10));
            }
            done
        });
        if !stopped {
            let _ = self.dockerd.kill();
            let _ = self.dockerd.wait();
        }
        // Only empty directories go: those of containers are gone by now.
        for dir in &self.cgroups {
            let _ = fs::remove_dir(dir);
        }
    }
}

/// dockerd's log so far.
fn log_text() -> String {
    fs::read_to_string(format!("{DIR}/dockerd.log")).unwrap_or_default()
}

/// Where cgroup hierarchies (v1 and v2) are mounted.
fn cgroup_mounts() -> Vec<PathBuf> {
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|line| {
            let (mount, fs) = line.split_once(" - ")?;
            matches!(fs.split_whitespace().next(), Some("cgroup" | "cgroup2"))
                .then(|| PathBuf::from(mount.split_whitespace().nth(4).unwrap()))
        })
        .collect()
}

/// The shared libraries `exe` loads, and the loader, as `ldd` lists them.
fn libraries(exe: &Path) -> Vec<PathBuf> {
    let out = Command::new("ldd").arg(exe).output().unwrap();
    assert!(out.status.success(), "ldd {} failed", exe.display());
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .filter(|word| word.starts_with('/'))
        .map(PathBuf::from)
        .collect()
}

/// A running container: its `docker run -i` client, whose stdin is the
/// holder's. Dropping it closes that stdin: the holder exits, and Docker
/// removes the container (`--rm`).
struct Container {
    client: Child,
    name: String,
    /// The short id: the first 12 hex digits of its id.
    short: String,
    /// Its process, in the scenario's PID namespace.
    pid: u32,
}

impl Container {
    /// The path of its namespace link.
    fn ns(&self) -> String {
        format!("/proc/{}/ns/net", self.pid)
    }

    /// Its process's name.
    fn process(&self) -> String {
        format!("c-{}", self.name)
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        drop(self.client.stdin.take());
        let _ = self.client.wait();
    }
}

/// `--netns all --protocol tcp,udp --format json` with `method`, as rows.
fn json_rows(method: &str) -> Vec<NetnsRow> {
    let json = stdout_of(
        &Bin::new()
            .args(["--netns", "all", "--protocol", "tcp,udp"])
            .args(["--format", "json", "--method", method])
            .output(),
    );
    netns_rows(&json)
}

/// What `ss` lists inside each of `spaces` (label, namespace file), sorted.
fn expected(spaces: &[(String, String)]) -> Vec<NetnsRow> {
    let mut rows: Vec<NetnsRow> = spaces
        .iter()
        .flat_map(|(label, path)| netns_oracle(label, path))
        .collect();
    rows.sort();
    rows
}

/// The scenario, as PID 1 of fresh mount, network and PID namespaces.
fn scenario() {
    sh("mount", &["-t", "tmpfs", "tmpfs", "/run"]);
    sh("ip", &["link", "set", "lo", "up"]);
    let engine = Engine::start();
    engine.import_image();

    // Port 8080 in three namespaces: the host's and two containers'.
    let host = Holder::start("h-host", Place::Here, "tcp 127.0.0.1 8080");
    let web = engine.run("web", "none", "tcp 0.0.0.0 8080;udp 0.0.0.0 5353");
    let db = engine.run("db", "none", "tcp 127.0.0.1 8080;tcp :: 5432 dual");
    // A sidecar in web's namespace: it is web's (the lowest pid's).
    let side = engine.run("side", "container:web", "tcp 127.0.0.1 9090");
    assert_eq!(
        fs::read_link(side.ns()).unwrap(),
        fs::read_link(web.ns()).unwrap()
    );
    assert!(web.pid < side.pid);
    // `docker ps` shows the short ids.
    let ps = engine.output(&["ps", "--format", "{{.ID}} {{.Names}}"]);
    for container in [&web, &db, &side] {
        let line = format!("{} {}", container.short, container.name);
        assert!(ps.lines().any(|l| l == line), "{line} not in:\n{ps}");
    }
    // Docker's namespace files are there too: each namespace is counted
    // once all the same.
    assert_eq!(engine.netns_files().len(), 2, "{:?}", engine.netns_files());

    let spaces = vec![
        ("host".to_string(), "/proc/1/ns/net".to_string()),
        (web.short.clone(), web.ns()),
        (db.short.clone(), db.ns()),
    ];
    let all = expected(&spaces);
    for (process, label) in [
        (host.name.clone(), "host"),
        (web.process(), &web.short),
        (side.process(), &web.short),
        (db.process(), &db.short),
    ] {
        assert!(
            all.iter().any(|r| r.0 == label && r.4 == process),
            "ss sees no listener of {process} in {label}: {all:#?}"
        );
    }
    for method in ["netlink", "procfs"] {
        assert_eq!(json_rows(method), all, "{method}: JSON vs ss in each");
    }
    let text = stdout_of(&Bin::new().args(["--netns", "all"]).output());
    for label in ["host", &web.short, &db.short] {
        let sample = format!("instance_open_ports{{port=\"8080\",netns=\"{label}\"}} 1");
        assert!(
            text.lines().any(|l| l == sample),
            "{sample} not in:\n{text}"
        );
    }

    // port_exporter itself in a container, deployed as the README says:
    // the host's PID and network namespaces, the two capabilities, and
    // Docker's default seccomp profile. It sees what it sees outside.
    let inside = engine.output(&[
        "run",
        "--rm",
        "--pid=host",
        "--network=host",
        "--cap-add=SYS_ADMIN",
        "--cap-add=SYS_PTRACE",
        IMAGE,
        "/port_exporter",
        "--netns=all",
        "--protocol=tcp,udp",
        "--format=json",
    ]);
    assert_eq!(netns_rows(&inside), all, "from inside a container");

    // Paused (its processes frozen): reported as ever.
    engine.output(&["pause", "web"]);
    assert_eq!(json_rows("netlink"), all, "web paused");
    engine.output(&["unpause", "web"]);

    // Removed: its listeners and its label are gone at the next run.
    let db_short = db.short.clone();
    drop(db);
    util::wait_until("db's removal", Duration::from_secs(60), || {
        let left = engine.output(&["ps", "--all", "--quiet", "--no-trunc"]);
        (!left.contains(&db_short)).then_some(())
    });
    let rest = expected(&spaces[..2]);
    assert_eq!(json_rows("netlink"), rest, "after db's removal");
    // Docker unmounts a removed container's namespace file at once but
    // keeps the empty file until its next sweep, up to a minute later
    // (measured: 59 s). Such a file is no namespace: nothing reports it,
    // not even with --include-closed.
    let closed = stdout_of(
        &Bin::new()
            .args(["--netns", "all", "--include-closed", "--ports", "8080"])
            .output(),
    );
    let mut samples = util::port_lines(&closed);
    samples.sort();
    assert_eq!(
        samples,
        [
            format!(
                "instance_open_ports{{port=\"8080\",netns=\"{}\"}} 1",
                web.short
            ),
            "instance_open_ports{port=\"8080\",netns=\"host\"} 1".to_string(),
        ],
        "after db's removal, Docker's files: {:?}",
        engine.netns_files()
    );

    let listeners = all.len();
    drop((side, web, host));
    drop(engine);
    eprintln!("docker scenario: all views agree (3 namespaces, {listeners} listeners)");
}
