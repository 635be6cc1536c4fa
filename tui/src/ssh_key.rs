//! The caller's SSH public key an instance's default user gets: which file it is when none is
//! named (`~/.ssh/id_ed25519.pub`, then `~/.ssh/id_rsa.pub`) and the key line read from it. Both
//! `kiln instance run` and the dashboard's `r` use it.

use std::path::{Path, PathBuf};

/// Why there is no public key to give an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    /// Neither default file exists (these two were tried).
    Missing { tried: [PathBuf; 2] },
    /// The file is there but could not be read.
    Unreadable { file: PathBuf, error: String },
}

impl std::fmt::Display for KeyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyError::Missing { tried } => write!(
                f,
                "no SSH public key to give the instance: neither {} nor {} exists; make one with \
                 `ssh-keygen -t ed25519`",
                tried[0].display(),
                tried[1].display()
            ),
            KeyError::Unreadable { file, error } => {
                write!(f, "cannot read {}: {error}", file.display())
            }
        }
    }
}

/// The caller's default public key file.
pub fn default_file() -> Result<PathBuf, KeyError> {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    default_file_in(&home)
}

/// The public key line of the caller's default key file.
pub fn default_key() -> Result<String, KeyError> {
    read(&default_file()?)
}

/// The first of `home`'s `.ssh/id_ed25519.pub` and `.ssh/id_rsa.pub` that exists.
fn default_file_in(home: &Path) -> Result<PathBuf, KeyError> {
    let tried = ["id_ed25519.pub", "id_rsa.pub"].map(|f| home.join(".ssh").join(f));
    match tried.iter().find(|p| p.is_file()) {
        Some(file) => Ok(file.clone()),
        None => Err(KeyError::Missing { tried }),
    }
}

/// The public key line in `file`, trimmed.
pub fn read(file: &Path) -> Result<String, KeyError> {
    std::fs::read_to_string(file)
        .map(|k| k.trim().to_owned())
        .map_err(|e| KeyError::Unreadable {
            file: file.to_owned(),
            error: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ed25519_comes_before_rsa_and_none_says_what_to_do() {
        let Ok(home) = tempfile::tempdir() else {
            panic!("no temp dir");
        };
        let ssh = home.path().join(".ssh");
        let none = default_file_in(home.path()).map_err(|e| e.to_string());
        assert!(
            none.as_ref()
                .is_err_and(|e| e.contains("ssh-keygen -t ed25519")),
            "{none:?}"
        );
        assert!(std::fs::create_dir(&ssh).is_ok());
        assert!(std::fs::write(ssh.join("id_rsa.pub"), "ssh-rsa AAAA me\n").is_ok());
        assert_eq!(default_file_in(home.path()), Ok(ssh.join("id_rsa.pub")));
        assert!(std::fs::write(ssh.join("id_ed25519.pub"), "ssh-ed25519 AAAA me\n").is_ok());
        let file = ssh.join("id_ed25519.pub");
        assert_eq!(default_file_in(home.path()), Ok(file.clone()));
        assert_eq!(read(&file).as_deref(), Ok("ssh-ed25519 AAAA me"));
    }
}
