//! `--generate rules` against Debian's promtool: the rule file passes
//! `promtool check rules` (and `check config` through the README's
//! `rule_files:` block), every alert fires and stays silent as
//! tests/promtool/alerts.test.yml says (`promtool test rules`), and every
//! fleet query of the README is one that tests/promtool/fleet.test.yml runs.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use crate::util::{PROMTOOL, run, stdout_of, tests};

tests![
    (promtool_checks_the_generated_rules, PROMTOOL),
    (alerts_fire_and_stay_silent_as_tested, PROMTOOL),
    readme_fleet_queries_are_the_tested_ones,
    (fleet_queries_answer_as_tested, PROMTOOL),
];

/// The alerts the rule file must define, each tested firing.
const ALERTS: [&str; 5] = [
    "OpenPortAppeared",
    "ExposedPortAppeared",
    "OpenPortDisappeared",
    "PortScanStale",
    "PortScanFailing",
];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(relative: &str) -> String {
    let path = root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Runs promtool with `args` in `dir`.
fn promtool(dir: &Path, args: &[&str]) -> Output {
    Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("cannot run promtool")
}

/// promtool's stdout and stderr, for failure messages.
fn said(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A scratch directory holding what `--generate rules` prints, as
/// port_exporter.rules.yml (the name the test files give in rule_files:).
fn generated_rules() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("port_exporter.rules.yml");
    std::fs::write(&path, stdout_of(&run(["--generate", "rules"]))).unwrap();
    (dir, path)
}

/// The names after `- alert:` in a rule file.
fn alert_names(rules: &str) -> Vec<&str> {
    rules
        .lines()
        .filter_map(|line| line.trim().strip_prefix("- alert: "))
        .collect()
}

fn promtool_checks_the_generated_rules() {
    let (dir, path) = generated_rules();
    let rules = std::fs::read_to_string(&path).unwrap();
    assert_eq!(alert_names(&rules), ALERTS);
    assert!(rules.contains("\n  - name: port_exporter\n"), "{rules}");
    let out = promtool(dir.path(), &["check", "rules", "port_exporter.rules.yml"]);
    assert!(
        out.status.success() && said(&out).contains("SUCCESS: 5 rules found"),
        "{}",
        said(&out)
    );
    // The README's rule_files: block, with the file where we wrote it,
    // makes a configuration Prometheus accepts, rules included.
    let readme = read("README.md");
    let block = readme
        .split("```yaml\nrule_files:\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("README shows no rule_files: block");
    let config = format!("rule_files:\n{block}").replace(
        "/etc/prometheus/port_exporter.rules.yml",
        &path.display().to_string(),
    );
    assert!(config.contains(&*path.display().to_string()), "{config}");
    std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
    let out = promtool(dir.path(), &["check", "config", "prometheus.yml"]);
    assert!(
        out.status.success() && said(&out).contains("SUCCESS: 5 rules found"),
        "{}",
        said(&out)
    );
    // The gate works: a broken expression is refused.
    std::fs::write(&path, rules.replace("== 1", "== ")).unwrap();
    let out = promtool(dir.path(), &["check", "rules", "port_exporter.rules.yml"]);
    assert!(
        !out.status.success(),
        "promtool accepted a broken rule file"
    );
}

fn alerts_fire_and_stay_silent_as_tested() {
    let tests = read("tests/promtool/alerts.test.yml");
    // promtool passes a test file that checks nothing: make sure each alert
    // is expected to fire somewhere (the multi-line form lists alerts).
    for alert in ALERTS {
        assert!(
            tests.contains(&format!(
                "alertname: {alert}\n        exp_alerts:\n          - exp_labels:"
            )),
            "alerts.test.yml never expects {alert} to fire"
        );
    }
    let (dir, _) = generated_rules();
    std::fs::write(dir.path().join("alerts.test.yml"), &tests).unwrap();
    let out = promtool(dir.path(), &["test", "rules", "alerts.test.yml"]);
    assert!(out.status.success(), "{}", said(&out));
}

/// The code of each ```promql block in the README section `heading`.
fn promql_blocks(readme: &str, heading: &str) -> Vec<String> {
    let start = readme
        .find(&format!("\n## {heading}\n"))
        .unwrap_or_else(|| panic!("README has no section {heading:?}"));
    let section = &readme[start + 1..];
    let section = &section[..section[3..]
        .find("\n## ")
        .map_or(section.len(), |end| end + 3)];
    section
        .split("```promql\n")
        .skip(1)
        .map(|block| block.split("```").next().unwrap().to_string())
        .collect()
}

/// Text with every run of white space made one space.
fn squeezed(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn readme_fleet_queries_are_the_tested_ones() {
    let readme = read("README.md");
    let tests = read("tests/promtool/fleet.test.yml");
    let queries = promql_blocks(&readme, "A fleet");
    assert!(queries.len() >= 4, "found {} fleet queries", queries.len());
    let tested = squeezed(&tests);
    for query in &queries {
        assert!(
            tested.contains(&format!("expr: | {} exp_samples:", squeezed(query))),
            "README query not in tests/promtool/fleet.test.yml:\n{query}"
        );
    }
    for alert in ALERTS {
        assert!(
            readme.contains(&format!("`{alert}`")),
            "README lacks {alert}"
        );
    }
}

fn fleet_queries_answer_as_tested() {
    let out = promtool(root(), &["test", "rules", "tests/promtool/fleet.test.yml"]);
    assert!(out.status.success(), "{}", said(&out));
}
