//! Looking inside a finished disk image without booting it: the root file system is copied out
//! with debugfs (e2fsprogs; no mount, no loop device, no root needed) and searched as files.
//! Tests use it to prove what an image does *not* hold, e.g. a key kiln installed.

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::Digest;

/// An OpenSSH public key found in a file of the image.
#[derive(Debug, Clone)]
pub struct FoundKey {
    /// Path inside the image, e.g. `/root/.ssh/authorized_keys`.
    pub file: String,
    /// "SHA256:..." as `ssh-keygen -l` prints it.
    pub fingerprint: String,
    /// The whole line the key sits on (options and comment included).
    pub line: String,
}

/// The root file system of `image` (any format qemu-img reads; first partition, ext4), copied
/// into a new directory under `work`.
pub struct Unpacked {
    pub root: PathBuf,
}

fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().expect("run a tool");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

impl Unpacked {
    pub fn new(image: &Path, work: &Path) -> Unpacked {
        std::fs::create_dir_all(work).unwrap();
        let raw = work.join("disk.raw");
        run(Command::new("qemu-img")
            .args(["convert", "-O", "raw"])
            .arg(image)
            .arg(&raw));
        let table: serde_json::Value =
            serde_json::from_slice(&run(Command::new("sfdisk").arg("--json").arg(&raw))).unwrap();
        let table = &table["partitiontable"];
        let start = table["partitions"][0]["start"]
            .as_u64()
            .expect("a partition");
        let sector = table["sectorsize"].as_u64().unwrap_or(512);
        let root = work.join("root");
        std::fs::create_dir(&root).unwrap();
        let dump = format!("rdump / {}", root.display());
        run(Command::new("debugfs").args(["-R", &dump]).arg(format!(
            "{}?offset={}",
            raw.display(),
            start * sector
        )));
        std::fs::remove_file(&raw).unwrap();
        Unpacked { root }
    }

    /// Every regular file's path inside the image.
    pub fn files(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut dirs = vec![self.root.clone()];
        while let Some(d) = dirs.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                match e.file_type() {
                    Ok(t) if t.is_dir() => dirs.push(e.path()),
                    Ok(t) if t.is_file() => out.push(e.path()),
                    _ => {}
                }
            }
        }
        out.sort();
        out
    }

    /// `path` as the image names it (`/etc/...`).
    pub fn inside(&self, path: &Path) -> String {
        format!("/{}", path.strip_prefix(&self.root).unwrap().display())
    }

    /// Every OpenSSH public key written anywhere in the image, in any file.
    pub fn public_keys(&self) -> Vec<FoundKey> {
        let pattern = regex::bytes::Regex::new(
            r"(?m)^.*\b(?:ssh-ed25519|ssh-rsa|ssh-dss|ecdsa-sha2-nistp\d+|sk-[a-z0-9@.-]+) (AAAA[A-Za-z0-9+/]+=*).*$",
        )
        .unwrap();
        let mut found = Vec::new();
        for file in self.files() {
            let Ok(bytes) = std::fs::read(&file) else {
                continue;
            };
            for m in pattern.captures_iter(&bytes) {
                let Some(blob) = decode_base64(&m[1]) else {
                    continue;
                };
                found.push(FoundKey {
                    file: self.inside(&file),
                    fingerprint: fingerprint(&blob),
                    line: String::from_utf8_lossy(&m[0]).into_owned(),
                });
            }
        }
        found
    }
}

impl Unpacked {
    /// Image paths of every file holding an OpenSSH private key (the PEM-style block with an
    /// `openssh-key-v1` body; code that merely names the format does not count).
    pub fn private_keys(&self) -> Vec<String> {
        let pattern =
            regex::bytes::Regex::new(r"-----BEGIN OPENSSH PRIVATE KEY-----\s*b3BlbnNzaC1rZXktdjE")
                .unwrap();
        self.files()
            .into_iter()
            .filter(|f| std::fs::read(f).is_ok_and(|b| pattern.is_match(&b)))
            .map(|f| self.inside(&f))
            .collect()
    }
}

/// OpenSSH's "SHA256:..." of a key blob.
pub fn fingerprint(blob: &[u8]) -> String {
    use base64::Engine;
    format!(
        "SHA256:{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(sha2::Sha256::digest(blob))
    )
}

/// The fingerprint of an OpenSSH public key line ("TYPE BASE64 [comment]").
pub fn line_fingerprint(line: &str) -> Option<String> {
    let blob = line.split_whitespace().nth(1)?;
    decode_base64(blob.as_bytes()).map(|b| fingerprint(&b))
}

fn decode_base64(text: &[u8]) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-partition disk (MBR, ext4 at 1 MiB, as kiln's images are) made from `tree`.
    fn disk_of(tree: &Path, disk: &Path) {
        run(Command::new("truncate").args(["-s", "40M"]).arg(disk));
        let mut sfdisk = Command::new("sfdisk");
        sfdisk
            .arg("-q")
            .arg(disk)
            .stdin(std::process::Stdio::piped());
        let mut child = sfdisk.spawn().unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"label: dos\nstart=2048, type=83\n")
            .unwrap();
        assert!(child.wait().unwrap().success());
        run(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-E", "offset=1048576", "-d"])
            .arg(tree)
            .arg(disk)
            .arg("38M"));
    }

    #[test]
    fn finds_every_public_and_private_key_in_an_image() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        let ssh = tree.join("root/.ssh");
        std::fs::create_dir_all(&ssh).unwrap();
        let key = dir.path().join("k");
        run(Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "kiln-build", "-f"])
            .arg(&key));
        let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
        std::fs::write(
            ssh.join("authorized_keys"),
            format!("command=\"echo no\" {public}"),
        )
        .unwrap();
        std::fs::create_dir_all(tree.join("etc/ssh")).unwrap();
        std::fs::copy(&key, tree.join("etc/ssh/ssh_host_ed25519_key")).unwrap();
        let disk = dir.path().join("disk.raw");
        disk_of(&tree, &disk);

        let fs = Unpacked::new(&disk, &dir.path().join("scan"));
        let keys = fs.public_keys();
        assert_eq!(keys.len(), 1, "{keys:?}");
        assert_eq!(keys[0].file, "/root/.ssh/authorized_keys");
        assert_eq!(Some(keys[0].fingerprint.clone()), line_fingerprint(&public));
        let printed = run(Command::new("ssh-keygen")
            .arg("-lf")
            .arg(key.with_extension("pub")));
        assert!(String::from_utf8_lossy(&printed).contains(&keys[0].fingerprint));
        assert_eq!(fs.private_keys(), vec!["/etc/ssh/ssh_host_ed25519_key"]);
    }
}
