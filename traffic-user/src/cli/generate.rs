//! `traffic --generate KIND`: the man page and the shell completions, made
//! from the flags' own definitions so that they cannot drift from them.
//! `cargo xtask dist` writes them all.

use std::io::{self, Write};

use clap::CommandFactory as _;
use clap_complete::Shell;

use super::LowArgs;

/// What `--generate` can make.
pub const KINDS: [&str; 6] = ["man", "bash", "zsh", "fish", "elvish", "powershell"];

/// Why `--generate` made nothing.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// An unknown kind.
    #[error("--generate {0}: give one of man, bash, zsh, fish, elvish, powershell")]
    Kind(String),
    /// Writing failed.
    #[error("writing the {kind} failed")]
    Write {
        /// What was being written.
        kind: String,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// Writes the man page (`man`) or the completion script for a shell to
/// `out`.
///
/// # Errors
///
/// An unknown kind, or a failed write.
pub fn generate(kind: &str, out: &mut dyn Write) -> Result<(), GenerateError> {
    let mut cmd = LowArgs::command();
    let write = |source| GenerateError::Write {
        kind: kind.to_owned(),
        source,
    };
    if kind == "man" {
        return clap_mangen::Man::new(cmd).render(out).map_err(write);
    }
    let shell: Shell = kind
        .parse()
        .map_err(|_| GenerateError::Kind(kind.to_owned()))?;
    clap_complete::generate(shell, &mut cmd, "traffic", out);
    out.flush().map_err(write)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_names_the_flags() {
        for kind in KINDS {
            let mut out = Vec::new();
            generate(kind, &mut out).unwrap();
            let text = String::from_utf8(out).unwrap();
            assert!(text.contains("ipfix"), "{kind}");
            assert!(text.contains("metrics"), "{kind}");
        }
        assert!(matches!(
            generate("tcsh", &mut Vec::new()),
            Err(GenerateError::Kind(_))
        ));
    }
}
