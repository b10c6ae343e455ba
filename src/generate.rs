//! `--generate`: the man page and shell completions, rendered from the clap
//! definition so they can never drift from `--help` (the man page adds the
//! reference sections of `man.txt`: metrics, exit status, environment and
//! files); the Prometheus
//! alerting rules, whose text lives in `rules.yml` beside this file; and the
//! systemd units, sysusers.d and tmpfiles.d entries and options file under
//! `units/`, which the Debian package installs (Cargo.toml's
//! `[package.metadata.deb]`), so that a copied static binary can install
//! the very same files.

use std::io::{self, Write};

use clap::CommandFactory;
use clap_complete::Shell;
use clap_mangen::roff::{Roff, bold, roman};

use crate::cli::{Args, GenerateKind};

/// The alerting rules, as `promtool check rules` and `promtool test rules`
/// see them (tests/promtool/alerts.test.yml).
const RULES: &str = include_str!("rules.yml");

/// The man page's reference sections (see [`reference`]).
const MAN_SECTIONS: &str = include_str!("man.txt");

/// The files under `units/`, as the package installs them.
const SERVICE: &str = include_str!("units/port_exporter.service");
const TIMER: &str = include_str!("units/port_exporter.timer");
const HTTP_SERVICE: &str = include_str!("units/port_exporter-http.service");
const HTTP_SOCKET: &str = include_str!("units/port_exporter-http.socket");
const SYSUSERS: &str = include_str!("units/sysusers.d/port_exporter.conf");
const TMPFILES: &str = include_str!("units/tmpfiles.d/port_exporter.conf");
const OPTIONS: &str = include_str!("units/port_exporter.default");

/// Writes the artifact `kind` to `out`. The program name is fixed, not taken
/// from `argv[0]`, so the output does not depend on how we were invoked.
pub fn generate(kind: GenerateKind, out: &mut dyn Write) -> io::Result<()> {
    let shell = match kind {
        GenerateKind::Rules => return rules(out),
        GenerateKind::Service => return out.write_all(SERVICE.as_bytes()),
        GenerateKind::Timer => return out.write_all(TIMER.as_bytes()),
        GenerateKind::HttpService => return out.write_all(HTTP_SERVICE.as_bytes()),
        GenerateKind::HttpSocket => return out.write_all(HTTP_SOCKET.as_bytes()),
        GenerateKind::Sysusers => return out.write_all(SYSUSERS.as_bytes()),
        GenerateKind::Tmpfiles => return out.write_all(TMPFILES.as_bytes()),
        GenerateKind::Options => return out.write_all(OPTIONS.as_bytes()),
        GenerateKind::Man => return man(out),
        GenerateKind::Bash => Shell::Bash,
        GenerateKind::Zsh => Shell::Zsh,
        GenerateKind::Fish => Shell::Fish,
        GenerateKind::Elvish => Shell::Elvish,
        GenerateKind::Powershell => Shell::PowerShell,
    };
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
    roff.control("fi", []).extend([reference(MAN_SECTIONS)]);
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

/// Writes the rule file, headed by the version that wrote it.
fn rules(out: &mut dyn Write) -> io::Result<()> {
    writeln!(
        out,
        "# Written by port_exporter {} --generate rules.",
        env!("CARGO_PKG_VERSION")
    )?;
    out.write_all(RULES.as_bytes())
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
