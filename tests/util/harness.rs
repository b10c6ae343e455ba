//! The test harness: collects the tests of every module, checks what each
//! needs, and runs them through libtest-mimic, which prints and counts like
//! libtest (`cargo test -- FILTER`, `--list`, `--test-threads` all work).
//!
//! A test that needs root or a program from Debian's packages says so when
//! it is registered. When the need is not met the test is reported as
//! `ignored (needs ...)`, never as passed; under `CI=true` it fails instead,
//! because CI installs everything (`.ci/run`) and a test that cannot run
//! there is a broken test, not a skipped one.

use std::{any::Any, panic, process::ExitCode};

use libtest_mimic::{Arguments, Completion, Failed, Trial};

use super::system::{find_program, is_root};

/// The variable that gives this test binary a role other than running
/// tests: a scenario run as PID 1 of namespaces of its own, or a helper
/// process such a scenario starts (see `labels.rs` and `netns.rs`).
pub const ROLE: &str = "PORT_EXPORTER_TEST_ROLE";

/// Runs this test binary again in `role` under `unshare ARGS` (as PID 1 of
/// a PID namespace of its own when ARGS ask for one), and checks that it
/// succeeded and said `done`.
#[track_caller]
pub fn run_role(unshare: &[&str], role: &str, done: &str) {
    let out = std::process::Command::new("unshare")
        .args(unshare)
        .arg(std::env::current_exe().unwrap())
        .env(ROLE, role)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{role} failed:\n{said}");
    assert!(said.contains(done), "{role} did not say {done:?}:\n{said}");
}

/// Something a test needs from the machine.
#[derive(Clone, Copy, Debug)]
pub enum Need {
    /// Root, for the reason given ("network namespaces", "mounts", ...).
    Root(&'static str),
    /// A network namespace of its own (root, with `ip` and `ss`).
    Netns,
    /// A program in PATH, installed by `.ci/run` from the named package.
    Program(&'static str, &'static str),
    /// Anything else `.ci/run` installs (a cargo tool, a rustup target):
    /// the check returns why it is unmet, saying how to install it.
    Check(fn() -> Option<String>),
}

/// Shorthands for the programs tests use, with their Debian package.
pub const PROMTOOL: Need = Need::Program("promtool", "prometheus");
pub const PROMETHEUS: Need = Need::Program("prometheus", "prometheus");
pub const NODE_EXPORTER: Need =
    Need::Program("prometheus-node-exporter", "prometheus-node-exporter");
pub const STRACE: Need = Need::Program("strace", "strace");
pub const SETPRIV: Need = Need::Program("setpriv", "util-linux");
pub const UNSHARE: Need = Need::Program("unshare", "util-linux");
pub const DOCKERD: Need = Need::Program("dockerd", "docker.io");

impl Need {
    /// Why the test cannot run here, or `None` when the need is met.
    fn unmet(self) -> Option<String> {
        match self {
            Need::Root(why) => (!is_root()).then(|| format!("needs root: {why}")),
            Need::Netns => {
                if !is_root() {
                    return Some("needs root: a network namespace of its own".into());
                }
                ["ip", "ss"]
                    .into_iter()
                    .find(|p| find_program(p).is_none())
                    .map(|p| format!("needs {p} (apt-get install iproute2)"))
            }
            Need::Program(program, package) => find_program(program)
                .is_none()
                .then(|| format!("needs {program} (apt-get install {package})")),
            Need::Check(check) => check(),
        }
    }
}

/// One registered test: its name, its body, and what it needs.
pub struct Test {
    pub name: &'static str,
    pub module: &'static str,
    pub body: fn(),
    pub needs: &'static [Need],
}

/// Registers test functions of the calling module:
/// `tests![plain_test, (root_test, Netns), (peer_test, Netns, PROMTOOL)]`.
macro_rules! tests {
    ($($entry:tt),* $(,)?) => {
        pub const TESTS: &[$crate::util::harness::Test] =
            &[$($crate::util::harness::tests!(@one $entry)),*];
    };
    (@one ($body:ident $(, $need:expr)*)) => {
        $crate::util::harness::Test {
            name: stringify!($body),
            module: module_path!(),
            body: $body,
            needs: &[$($need),*],
        }
    };
    (@one $body:ident) => { $crate::util::harness::tests!(@one ($body)) };
}
pub(crate) use tests;

/// Runs the tests of `modules` as the command line asks, and returns the
/// exit status libtest would.
pub fn main(modules: &[&[Test]]) -> ExitCode {
    let mut args = Arguments::from_args();
    // Most tests wait on processes, sockets and the kernel, not on the CPU.
    args.test_threads.get_or_insert(4);
    let ci = std::env::var("CI").as_deref() == Ok("true");
    let trials = modules
        .iter()
        .flat_map(|tests| tests.iter())
        .map(|test| {
            let module = test.module.split_once("::").map_or("", |(_, m)| m);
            let (body, needs) = (test.body, test.needs);
            Trial::ignorable_test(format!("{module}::{}", test.name), move || {
                if let Some(why) = needs.iter().find_map(|need| need.unmet()) {
                    return if ci {
                        Err(format!("cannot run under CI=true: {why}").into())
                    } else {
                        Ok(Completion::ignored_with(why))
                    };
                }
                panic::catch_unwind(body)
                    .map(|()| Completion::Completed)
                    .map_err(panic_message)
            })
        })
        .collect();
    let conclusion = libtest_mimic::run(&args, trials);
    super::bin::remove_shared_bin();
    conclusion.exit_code()
}

/// The message of a test's panic, for the failure summary.
fn panic_message(payload: Box<dyn Any + Send>) -> Failed {
    match payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
    {
        Some(message) => message.into(),
        None => Failed::without_message(),
    }
}
