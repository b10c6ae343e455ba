//! `--generate`: the man page and shell completions, rendered from the clap
//! definition so they can never drift from `--help` (the man page adds the
//! reference sections of `man.txt`: metrics, exit status, environment and
//! files); the Prometheus alerting rules, whose text lives in `rules.yml`
//! beside this file; and the systemd units, sysusers.d and tmpfiles.d entries
//! and options file under `units/`, which the Debian package installs
//! (Cargo.toml's `[package.metadata.deb]`), so that a copied static binary can
//! install the very same files.

use std::io::{self, Write};

use clap::CommandFactory;
use clap_complete::Shell;
use clap_mangen::roff::{Roff, bold, roman};

use crate::cli::{Args, GenerateKind};

/// The alerting rules, as `promtool check rules` and `promtool test rules`
/// see them (tests/promtool/alerts.test.yml).
const RULES: &str = include_str!("rules.yml");

/// Writes the artifact `kind` to `out`. The program name is fixed, not taken
/// from `argv[0]`, so the output does not depend on how we were invoked.
pub fn generate(kind: GenerateKind, out: &mut dyn Write) -> io::Result<()> {
    let text = match kind {
        GenerateKind::Man => return man(out),
        // The rule file, headed by the version that wrote it.
        GenerateKind::Rules => {
            let version = env!("CARGO_PKG_VERSION");
            writeln!(
                out,
                "# Written by port_exporter {version} --generate rules."
            )?;
            RULES
        }
        // The files under `units/`, as the package installs them.
        GenerateKind::Service => include_str!("units/port_exporter.service"),
        GenerateKind::Timer => include_str!("units/port_exporter.timer"),
        GenerateKind::HttpService => include_str!("units/port_exporter-http.service"),
        GenerateKind::HttpSocket => include_str!("units/port_exporter-http.socket"),
        GenerateKind::Sysusers => include_str!("units/sysusers.d/port_exporter.conf"),
        GenerateKind::Tmpfiles => include_str!("units/tmpfiles.d/port_exporter.conf"),
        GenerateKind::Options => include_str!("units/port_exporter.default"),
        GenerateKind::Bash => return completion(Shell::Bash, out),
        GenerateKind::Zsh => return completion(Shell::Zsh, out),
        GenerateKind::Fish => return completion(Shell::Fish, out),
        GenerateKind::Elvish => return completion(Shell::Elvish, out),
        GenerateKind::Powershell => return completion(Shell::PowerShell, out),
    };
    out.write_all(text.as_bytes())
}

/// Writes the completion script for `shell`.
fn completion(shell: Shell, out: &mut dyn Write) -> io::Result<()> {
    clap_complete::generate(shell, &mut Args::command(), "port_exporter", out);
    Ok(())
}

/// Writes the man page: clap_mangen's sections from the CLI definition,
/// then the examples of --help and the reference sections that have no
/// option to hang on, before VERSION.
fn man(out: &mut dyn Write) -> io::Result<()> {
    let command = Args::command();
    let examples = command.get_after_long_help().map(|text| text.to_string());
    let man = clap_mangen::Man::new(command);
    man.render_title(out)?;
    man.render_name_section(out)?;
    man.render_synopsis_section(out)?;
    man.render_description_section(out)?;
    man.render_options_section(out)?;
    let mut roff = Roff::new();
    // --help's examples and their indentation, as they are: filled, the
    // commands would wrap into the prose.
    roff.control("SH", ["EXAMPLES"]).control("nf", []);
    for line in examples.as_deref().unwrap_or_default().lines() {
        roff.text([roman(line)]);
    }
    roff.control("fi", [])
        .extend([reference(include_str!("man.txt"))]);
    roff.to_writer(out)?;
    man.render_version_section(out)
}

/// The man page's sections in `man.txt`'s plain layout, as roff: an
/// unindented line in capitals is a section title; an unindented line
/// followed by indented ones is a term (bold) and its description, where a
/// blank line starts another paragraph of it; other unindented lines are
/// paragraphs of the section. roff fills the lines.
fn reference(text: &str) -> Roff {
    let mut roff = Roff::new();
    let lines: Vec<&str> = text.lines().collect();
    let mut paragraph = true;
    for (i, line) in lines.iter().enumerate() {
        let indented = line.starts_with(' ');
        let next_indented = lines.get(i + 1).is_some_and(|l| l.starts_with(' '));
        if line.trim().is_empty() {
            paragraph = true;
        } else if !indented && line.chars().all(|c| c.is_ascii_uppercase() || c == ' ') {
            roff.control("SH", [*line]);
            paragraph = false;
        } else if !indented && next_indented {
            roff.control("TP", []).text([bold(*line)]);
            paragraph = false;
        } else {
            if paragraph {
                roff.control(if indented { "IP" } else { "PP" }, []);
                paragraph = false;
            }
            roff.text([roman(line.trim())]);
        }
    }
    roff
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_are_the_rule_file_under_a_version_line() {
        let mut out = Vec::new();
        generate(GenerateKind::Rules, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let (first, rest) = text.split_once('\n').unwrap();
        assert_eq!(
            first,
            concat!(
                "# Written by port_exporter ",
                env!("CARGO_PKG_VERSION"),
                " --generate rules."
            )
        );
        assert_eq!(rest, RULES);
        assert!(RULES.ends_with('\n') && !RULES.contains('\t'));
    }
}
