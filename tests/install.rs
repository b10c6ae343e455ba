//! The README's install lines, run verbatim on a fresh root: a tmpfs over
//! /usr/local in a mount namespace of the test's own, so that nothing of
//! the host's /usr/local is seen or touched. The lines are read from the
//! README, so the test and the text cannot drift apart.

use std::{path::Path, process::Command};

use crate::util::{self, Root, UNSHARE, stderr_of, stdout_of, tests};

tests![
    (
        the_readme_install_lines_work_on_a_fresh_root,
        Root("mounts"),
        UNSHARE
    ),
    cron_lines_name_the_binary_by_the_path_the_install_gives_it,
];

/// The sentence that introduces the install block in the README.
const INTRO: &str = "Install the binary, the man page and the completion scripts";

/// What the install makes, which must not appear on the host.
const HOST_BIN: &str = "/usr/local/bin/port_exporter";

/// The lines of the first ```sh block after `intro` in `readme`.
fn block_after<'a>(readme: &'a str, intro: &str) -> Vec<&'a str> {
    let start = readme
        .find(intro)
        .expect("the README lost its install intro");
    let rest = &readme[start..];
    let open = rest.find("```sh\n").expect("no sh block after the intro") + "```sh\n".len();
    let close = rest[open..].find("```").expect("an unclosed block");
    rest[open..open + close].lines().collect()
}

fn the_readme_install_lines_work_on_a_fresh_root() {
    let there_before = Path::new(HOST_BIN).exists();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let lines = block_after(&readme, INTRO);
    // The build is what this test suite's own build did (a release build
    // would take minutes): the test puts the binary where it would be and
    // runs every other line as written.
    assert_eq!(lines[0], "cargo build --release --locked", "{lines:#?}");
    let installs = &lines[1..];
    assert!(
        installs.len() >= 5 && installs.iter().all(|l| l.starts_with("install ")),
        "{lines:#?}"
    );

    // A scratch source tree: the binary as the build leaves it, and the
    // committed man page and completions.
    let tree = util::open_tempdir();
    let release = tree.path().join("target/release");
    std::fs::create_dir_all(&release).unwrap();
    std::fs::copy(util::bin::path(), release.join("port_exporter")).unwrap();
    for dir in ["man", "completions"] {
        let status = Command::new("cp")
            .args(["-R"])
            .arg(root.join(dir))
            .arg(tree.path())
            .status()
            .unwrap();
        assert!(status.success(), "cp {dir}");
    }

    // Then what an operator relies on: the command runs by its full path
    // (cron's PATH lacks /usr/local/bin), man finds the page, and each
    // completion is in the place its shell reads.
    let checks = r#"
        echo "version: $(/usr/local/bin/port_exporter --version)"
        echo "man: $(man -w port_exporter)"
        for f in /usr/local/share/bash-completion/completions/port_exporter \
                 /usr/local/share/zsh/site-functions/_port_exporter \
                 /usr/local/share/fish/vendor_completions.d/port_exporter.fish; do
            echo "file: $f $(stat -c %a "$f")"
        done
        cmp completions/port_exporter.bash /usr/local/share/bash-completion/completions/port_exporter
        cmp completions/_port_exporter /usr/local/share/zsh/site-functions/_port_exporter
        cmp completions/port_exporter.fish \
            /usr/local/share/fish/vendor_completions.d/port_exporter.fish
        cmp man/port_exporter.1 /usr/local/share/man/man1/port_exporter.1
        echo "bin: $(stat -c %a /usr/local/bin/port_exporter)"
    "#;
    let script = format!(
        "set -e\nmount -t tmpfs -o mode=0755 fresh /usr/local\n\
         [ -z \"$(ls -A /usr/local)\" ]\n{}\n{checks}",
        installs.join("\n")
    );
    let output = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .current_dir(tree.path())
        .env("PATH", "/usr/bin:/bin:/usr/sbin:/sbin")
        .output()
        .unwrap();
    let (out, err) = (stdout_of(&output), stderr_of(&output));
    assert!(
        output.status.success(),
        "the install lines failed:\n{out}{err}"
    );
    let said =
        |key: &str| -> Vec<&str> { out.lines().filter_map(|l| l.strip_prefix(key)).collect() };
    assert_eq!(
        said("version: "),
        [format!("port_exporter {}", env!("CARGO_PKG_VERSION"))],
        "{out}"
    );
    assert_eq!(
        said("man: "),
        ["/usr/local/share/man/man1/port_exporter.1"],
        "{out}"
    );
    assert_eq!(said("bin: "), ["755"], "{out}");
    let files = said("file: ");
    assert_eq!(files.len(), 3, "{out}");
    assert!(files.iter().all(|f| f.ends_with(" 644")), "{out}");
    // The host's /usr/local was not touched.
    assert_eq!(
        Path::new(HOST_BIN).exists(),
        there_before,
        "the test changed the host's {HOST_BIN}"
    );
}

fn cron_lines_name_the_binary_by_the_path_the_install_gives_it() {
    // cron runs jobs with PATH=/usr/bin:/bin: a bare command name fails
    // with 127 unless the package put it in /usr/bin.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let help = stdout_of(&util::run(["--help"]));
    let man = std::fs::read_to_string(root.join("man/port_exporter.1")).unwrap();
    for (whence, text, path) in [
        ("README", readme.as_str(), "/usr/local/bin/port_exporter"),
        ("--help", help.as_str(), "/usr/bin/port_exporter"),
        ("man page", man.as_str(), "/usr/bin/port_exporter"),
    ] {
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with("* * * * *"))
            .collect();
        assert!(!lines.is_empty(), "{whence} has no cron line");
        for line in lines {
            assert_eq!(
                line.split_whitespace().nth(6),
                Some(path),
                "{whence}: {line}"
            );
        }
    }
}
