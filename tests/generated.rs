//! man/ and completions/ are build products that happen to be committed:
//! this fails when they differ from what `--generate` prints now.
//! `UPDATE_GENERATED=1 cargo test --test integration generated` rewrites them.

use std::path::Path;

use crate::util::{Bin, Server, run, stdout_of, tests};

tests![
    man_page_and_completions_are_current,
    man_page_documents_every_option,
    man_page_documents_every_metric,
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
    for section in [
        "EXAMPLES",
        "METRICS",
        "LABELS",
        "EXIT STATUS",
        "ENVIRONMENT",
        "FILES",
    ] {
        assert!(
            man.contains(&format!("\n.SH {section}\n"))
                || man.contains(&format!("\n.SH \"{section}\"\n")),
            "man page lacks {section}"
        );
    }
    for name in [
        "LISTEN_FDS",
        "LISTEN_PID",
        "NO_COLOR",
        "SSL_CERT_FILE",
        "XDG_RUNTIME_DIR",
        "/run/port_exporter/bind",
        "/var/lib/port_exporter/open_ports.prom",
        "/etc/default/port_exporter",
    ] {
        assert!(man.contains(name), "man page lacks {name}");
    }
}

/// Every family the tool prints, with each option that adds one, is
/// described in the man page's METRICS section.
fn man_page_documents_every_metric() {
    let man = stdout_of(&run(["--generate", "man"]));
    let start = man.find("\n.SH METRICS\n").expect("man page lacks METRICS");
    let section = &man[start + 1..];
    let section = &section[..section[1..]
        .find("\n.SH ")
        .map_or(section.len(), |end| end + 1)];
    let mut texts = vec![
        stdout_of(&run(["--labels", "process", "--protocol", "tcp,udp"])),
        stdout_of(&run(["--method", "bind", "--ports", "1-10"])),
    ];
    // --netns all needs root; as root, its family must be there too.
    let netns = Bin::new().args(["--netns", "all"]).output();
    if netns.status.success() {
        texts.push(stdout_of(&netns));
    }
    let server = Server::start(&[]);
    texts.push(server.get("/metrics").body);
    let mut names: Vec<&str> = texts
        .iter()
        .flat_map(|text| text.lines())
        .filter_map(|line| line.strip_prefix("# HELP ")?.split(' ').next())
        .collect();
    names.sort_unstable();
    names.dedup();
    for needed in [
        "instance_open_ports",
        "port_exporter_unattributed_listeners",
        "port_exporter_scans_total",
    ] {
        assert!(names.contains(&needed), "no {needed} in {names:?}");
    }
    let missing: Vec<&str> = names
        .into_iter()
        .filter(|name| !section.contains(&format!("\\fB{name}")))
        .collect();
    assert!(missing.is_empty(), "METRICS lacks {missing:?}");
}
