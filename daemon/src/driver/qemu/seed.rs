//! The cloud-init NoCloud seed: user-data that installs the build's client key and its pinned
//! host key, and the `cidata` ISO that carries it to the guest.
//!
//! The seed only adds keys and hostname handling; it leaves cloud-init enabled and the image's
//! own config in force, so the pipeline's generalization (`cloud-init clean`, removing host keys
//! and the build key) works on the result as on any cloud-init image.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use super::prepare::run_tool;
use crate::driver::DriverError;

pub struct Seed {
    pub instance_id: String,
    pub hostname: String,
    /// The image's default user, who gets `client_public_key` (and passwordless sudo) even when
    /// the image's cloud-init config names another default user.
    pub user: String,
    /// OpenSSH public key line for the default user's authorized_keys.
    pub client_public_key: String,
    /// OpenSSH private key (PEM-like block) the guest's sshd will use.
    pub host_private_key: String,
    /// "ssh-ed25519 AAAA..." matching `host_private_key`.
    pub host_public_key: String,
}

/// A fresh NoCloud instance id, so cloud-init treats every boot of a seed as a new instance.
pub fn instance_id() -> String {
    let uuid = std::fs::read_to_string("/proc/sys/kernel/random/uuid")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default();
            format!("{:x}-{:x}", std::process::id(), nanos)
        });
    format!("kiln-{uuid}")
}

/// A YAML scalar for any string: JSON strings are valid YAML double-quoted scalars.
fn scalar(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

pub fn meta_data(seed: &Seed) -> String {
    format!(
        "instance-id: {}\nlocal-hostname: {}\n",
        scalar(&seed.instance_id),
        scalar(&seed.hostname)
    )
}

pub fn user_data(seed: &Seed) -> String {
    let mut private = String::new();
    for line in seed.host_private_key.lines() {
        private.push_str("    ");
        private.push_str(line);
        private.push('\n');
    }
    format!(
        "#cloud-config\n\
         ssh_authorized_keys:\n  - {client}\n\
         # the image's recorded user; when cloud-init's default user is the same, this only adds\n\
         # the key it has already\n\
         users:\n  - default\n  - name: {user}\n    shell: /bin/bash\n    \
         sudo: \"ALL=(ALL) NOPASSWD:ALL\"\n    ssh_authorized_keys:\n      - {client}\n\
         ssh_pwauth: false\n\
         # without it sudo warns \"unable to resolve host\" on every call\n\
         manage_etc_hosts: localhost\n\
         # only the pinned key: the image has none, and RSA/ECDSA generation is slow under TCG\n\
         ssh_deletekeys: true\n\
         ssh_genkeytypes: []\n\
         ssh_keys:\n  ed25519_private: |\n{private}  ed25519_public: {public}\n",
        client = scalar(&seed.client_public_key),
        user = scalar(&seed.user),
        public = scalar(&seed.host_public_key),
    )
}

/// Writes `seed.iso` (iso9660, volume id `cidata`) into `work_dir` and returns its path. The
/// staging files holding the host private key are removed again.
pub async fn write(work_dir: &Path, seed: &Seed) -> Result<PathBuf, DriverError> {
    let staging = work_dir.join("seed");
    let iso = work_dir.join("seed.iso");
    let io = |doing, path: &Path| {
        let path = path.to_owned();
        move |source| DriverError::Io {
            doing,
            path,
            source,
        }
    };
    std::fs::create_dir(&staging).map_err(io("creating the seed directory", &staging))?;
    let user_data_path = staging.join("user-data");
    let meta_data_path = staging.join("meta-data");
    let written = write_private(&user_data_path, user_data(seed).as_bytes())
        .map_err(io("writing", &user_data_path))
        .and_then(|()| {
            write_private(&meta_data_path, meta_data(seed).as_bytes())
                .map_err(io("writing", &meta_data_path))
        });
    let built = match written {
        Ok(()) => {
            run_tool(
                "genisoimage",
                &[
                    "-quiet".as_ref(),
                    "-output".as_ref(),
                    iso.as_os_str(),
                    "-volid".as_ref(),
                    "cidata".as_ref(),
                    "-joliet".as_ref(),
                    "-rock".as_ref(),
                    user_data_path.as_os_str(),
                    meta_data_path.as_os_str(),
                ],
                || format!("building the cloud-init seed {}", iso.display()),
            )
            .await
        }
        Err(e) => Err(e),
    };
    let removed = std::fs::remove_dir_all(&staging);
    built?;
    removed.map_err(io("removing the seed staging directory", &staging))?;
    Ok(iso)
}

fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_data_indents_the_private_key_and_quotes_keys() {
        let seed = Seed {
            instance_id: "kiln-1".into(),
            hostname: "kiln-build".into(),
            user: "cloud".into(),
            client_public_key: "ssh-ed25519 AAAAC kiln-build".into(),
            host_private_key:
                "-----BEGIN OPENSSH PRIVATE KEY-----\nb3Bl\n-----END OPENSSH PRIVATE KEY-----\n"
                    .into(),
            host_public_key: "ssh-ed25519 AAAAH".into(),
        };
        let text = user_data(&seed);
        assert!(text.starts_with("#cloud-config\n"));
        assert!(text.contains("  - \"ssh-ed25519 AAAAC kiln-build\"\n"));
        assert!(text.contains("  - name: \"cloud\"\n"), "{text}");
        assert!(
            text.contains("      - \"ssh-ed25519 AAAAC kiln-build\"\n"),
            "{text}"
        );
        assert!(text.contains(
            "  ed25519_private: |\n    -----BEGIN OPENSSH PRIVATE KEY-----\n    b3Bl\n    -----END OPENSSH PRIVATE KEY-----\n  ed25519_public: \"ssh-ed25519 AAAAH\"\n"
        ));
        assert_eq!(
            meta_data(&seed),
            "instance-id: \"kiln-1\"\nlocal-hostname: \"kiln-build\"\n"
        );
    }
}
