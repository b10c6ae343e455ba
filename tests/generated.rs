//! man/ and completions/ are build products that happen to be committed:
//! this fails when they differ from what `--generate` prints now.
//! `UPDATE_GENERATED=1 cargo test --test integration generated` rewrites them.

use std::path::Path;

use crate::util::{run, stdout_of, tests};

tests![
    man_page_and_completions_are_current,
    man_page_documents_every_option
];

const ARTIFACTS: [(&str, &str); 6] = [
    ("man", "man/port_exporter.1"),
    ("bash", "completions/port_exporter.bash"),
    ("zsh", "completions/_port_exporter"),
    ("fish", "completions/port_exporter.fish"),
    ("elvish", "completions/port_exporter.elv"),
    ("powershell", "completions/_port_exporter.ps1"),
];

fn man_page_and_completions_are_current() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let update = std::env::var_os("UPDATE_GENERATED").is_some();
    let mut stale = Vec::new();
    for (kind, file) in ARTIFACTS {
        let fresh = stdout_of(&run(["--generate", kind]));
        assert!(
            fresh.len() > 200,
            "--generate {kind} printed almost nothing"
        );
        let path = root.join(file);
        let committed = std::fs::read_to_string(&path)
            .unwrap_or_default()
            .replace("\r\n", "\n");
        if committed != fresh {
            if update {
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(&path, &fresh).unwrap();
            } else {
                stale.push(file);
            }
        }
    }
    assert!(
        stale.is_empty(),
        "{} stale; run UPDATE_GENERATED=1 cargo test --test integration generated, then commit",
        stale.join(", ")
    );
}

fn man_page_documents_every_option() {
    let man = stdout_of(&run(["--generate", "man"]));
    for option in [
        "output",
        "ports",
        "exclude",
        "include\\-closed",
        "method",
        "threads",
        "generate",
    ] {
        assert!(
            man.contains(&format!("\\-\\-{option}")),
            "man page lacks --{option}"
        );
    }
    assert!(
        man.contains("netlink") && man.contains("Exit status"),
        "man page lacks the long help"
    );
}
