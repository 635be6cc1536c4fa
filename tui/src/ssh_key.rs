//! The caller's SSH public key an instance's default user gets: which file it is when none is
//! named (`~/.ssh/id_ed25519.pub`, then `~/.ssh/id_rsa.pub`) and the key line read from it. Both
//! `kiln instance run` and the dashboard's `r` use it.

use std::path::{Path, PathBuf};

/// The caller's default public key file, or what to do when there is none.
pub fn default_file() -> Result<PathBuf, String> {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    default_file_in(&home)
}

/// The first of `home`'s `.ssh/id_ed25519.pub` and `.ssh/id_rsa.pub` that exists.
fn default_file_in(home: &Path) -> Result<PathBuf, String> {
    let tried = ["id_ed25519.pub", "id_rsa.pub"].map(|f| home.join(".ssh").join(f));
    tried.iter().find(|p| p.is_file()).cloned().ok_or_else(|| {
        format!(
            "no SSH public key to give the instance: neither {} nor {} exists; make one with \
             `ssh-keygen -t ed25519` or pass --ssh-key FILE",
            tried[0].display(),
            tried[1].display()
        )
    })
}

/// The public key line in `file`, trimmed.
pub fn read(file: &Path) -> Result<String, String> {
    std::fs::read_to_string(file)
        .map(|k| k.trim().to_owned())
        .map_err(|e| format!("cannot read {}: {e}", file.display()))
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
        let none = default_file_in(home.path()).err().unwrap_or_default();
        assert!(none.contains("ssh-keygen -t ed25519"), "{none}");
        assert!(std::fs::create_dir(&ssh).is_ok());
        assert!(std::fs::write(ssh.join("id_rsa.pub"), "ssh-rsa AAAA me\n").is_ok());
        assert_eq!(default_file_in(home.path()), Ok(ssh.join("id_rsa.pub")));
        assert!(std::fs::write(ssh.join("id_ed25519.pub"), "ssh-ed25519 AAAA me\n").is_ok());
        let file = ssh.join("id_ed25519.pub");
        assert_eq!(default_file_in(home.path()), Ok(file.clone()));
        assert_eq!(read(&file).as_deref(), Ok("ssh-ed25519 AAAA me"));
    }
}
