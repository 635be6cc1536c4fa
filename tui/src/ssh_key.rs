//! The caller's SSH public key an instance's default user gets: which file it is when none is
//! named (`~/.ssh/id_ed25519.pub`, then `~/.ssh/id_rsa.pub`) and the key line read from it. Both
//! `kiln instance run` and the dashboard's `r` use it; `kiln instance ssh` (the dashboard's `a`)
//! offers its private half when ssh would not find it itself.

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

/// The private key `kiln instance ssh` names to ssh when none is given: the private half of the
/// default public key, but only when `$HOME` is not the home of the user's passwd entry, where
/// ssh looks for its own default keys (`sudo` keeping `HOME`, a test's `HOME`): there the key
/// `kiln instance run` gave would not be offered. `None` leaves ssh to its defaults.
pub fn login_identity() -> Option<PathBuf> {
    let home = PathBuf::from(std::env::var_os("HOME")?);
    login_identity_in(&home, passwd_home().as_deref())
}

fn login_identity_in(home: &Path, passwd_home: Option<&Path>) -> Option<PathBuf> {
    // An unknown passwd home: ssh's behaviour is kept.
    let passwd_home = passwd_home?;
    let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    };
    if same(home, passwd_home) {
        return None;
    }
    let private = default_file_in(home).ok()?.with_extension("");
    private.is_file().then_some(private)
}

/// The home directory of this process's user in the user database (`getent`, so that NSS
/// sources count), as ssh sees it.
fn passwd_home() -> Option<PathBuf> {
    let uid = kiln_shared::paths::current_uid().to_string();
    let out = std::process::Command::new("getent")
        .args(["passwd", &uid])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let line = String::from_utf8_lossy(&out.stdout);
    let home = line.lines().next()?.split(':').nth(5)?.trim();
    (out.status.success() && !home.is_empty()).then(|| PathBuf::from(home))
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

    #[test]
    fn a_login_names_the_default_key_only_where_ssh_would_not_look() {
        let (Ok(home), Ok(other)) = (tempfile::tempdir(), tempfile::tempdir()) else {
            panic!("no temp dir");
        };
        let ssh = home.path().join(".ssh");
        assert!(std::fs::create_dir(&ssh).is_ok());
        assert!(std::fs::write(ssh.join("id_ed25519.pub"), "ssh-ed25519 AAAA me\n").is_ok());
        // Only the public half: nothing to name.
        assert_eq!(login_identity_in(home.path(), Some(other.path())), None);
        assert!(std::fs::write(ssh.join("id_ed25519"), "private").is_ok());
        assert_eq!(
            login_identity_in(home.path(), Some(other.path())),
            Some(ssh.join("id_ed25519"))
        );
        // ssh's own home, or one not known: ssh finds its keys itself.
        assert_eq!(login_identity_in(home.path(), Some(home.path())), None);
        assert_eq!(login_identity_in(home.path(), None), None);
    }
}
