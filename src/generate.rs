//! `--generate`: the man page and shell completions, rendered from the clap
//! definition so they can never drift from `--help`.

use std::io::{self, Write};

use clap::CommandFactory;
use clap_complete::Shell;

use crate::cli::{Args, GenerateKind};

/// Writes the artifact `kind` to `out`. The program name is fixed, not taken
/// from argv[0], so the output does not depend on how we were invoked.
pub fn generate(kind: GenerateKind, out: &mut dyn Write) -> io::Result<()> {
    let mut command = Args::command();
    let shell = match kind {
        GenerateKind::Man => return clap_mangen::Man::new(command).render(out),
        GenerateKind::Bash => Shell::Bash,
        GenerateKind::Zsh => Shell::Zsh,
        GenerateKind::Fish => Shell::Fish,
        GenerateKind::Elvish => Shell::Elvish,
        GenerateKind::Powershell => Shell::PowerShell,
    };
    clap_complete::generate(shell, &mut command, "port_exporter", out);
    Ok(())
}
