//! The default user an imported image's cloud-init config names (`system_info.default_user.name`
//! in `/etc/cloud/cloud.cfg` and `/etc/cloud/cloud.cfg.d/*.cfg`, the later file winning, as
//! cloud-init merges them), read offline from a raw disk: the partition table (MBR or GPT), then
//! each partition's ext4 (or ext2/3) filesystem, read-only, in-process and without root.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use ext4_view::{Ext4, Ext4Read};

/// Where cloud-init's config lives in the guest.
const CLOUD_CFG: &str = "/etc/cloud/cloud.cfg";
const CLOUD_CFG_D: &str = "/etc/cloud/cloud.cfg.d";
/// More of one config file than any real one holds; a bigger file is not read.
const MAX_CONFIG: usize = 1 << 20;

/// A partition of the raw disk, as a byte range.
#[derive(Clone)]
struct Window {
    file: std::sync::Arc<File>,
    start: u64,
}

impl Ext4Read for Window {
    fn read(
        &mut self,
        start_byte: u64,
        dst: &mut [u8],
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync + 'static>> {
        let at = self
            .start
            .checked_add(start_byte)
            .ok_or("offset overflow")?;
        self.file.read_exact_at(dst, at)?;
        Ok(())
    }
}

/// Byte offsets where a filesystem may start: each used partition of a GPT or MBR table, and the
/// disk's start (a filesystem with no table).
fn partition_starts(raw: &Path, file: &mut File) -> Vec<u64> {
    let mut starts = Vec::new();
    if let Ok(disk) = gpt::GptConfig::new().writable(false).open(raw) {
        let lb = *disk.logical_block_size();
        for part in disk.partitions().values().filter(|p| p.is_used()) {
            if let Ok(at) = part.bytes_start(lb) {
                starts.push(at);
            }
        }
    }
    if starts.is_empty() {
        if let Ok(mbr) = mbrman::MBR::read_from(file, 512) {
            for (_, p) in mbr.iter().filter(|(_, p)| p.is_used()) {
                starts.push(u64::from(p.starting_lba) * u64::from(mbr.sector_size));
            }
        }
    }
    starts.push(0);
    starts
}

/// The cloud-init config files of the filesystem `fs`, in the order cloud-init reads them
/// (`cloud.cfg`, then `cloud.cfg.d/*.cfg` by name); `None` when it has no `cloud.cfg`.
fn config_files(fs: &Ext4) -> Option<Vec<(String, String)>> {
    let main = read_small(fs, CLOUD_CFG)?;
    let mut files = vec![(CLOUD_CFG.to_string(), main)];
    let mut names: Vec<String> = fs
        .read_dir(CLOUD_CFG_D)
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter_map(|e| e.file_name().as_str().ok().map(str::to_owned))
                .filter(|n| n.ends_with(".cfg"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    for name in names {
        let path = format!("{CLOUD_CFG_D}/{name}");
        if let Some(text) = read_small(fs, &path) {
            files.push((path, text));
        }
    }
    Some(files)
}

fn read_small(fs: &Ext4, path: &str) -> Option<String> {
    let size = fs.metadata(path).ok()?.len();
    if size > MAX_CONFIG as u64 {
        return None;
    }
    String::from_utf8(fs.read(path).ok()?).ok()
}

/// Why no user could be read from an image.
#[derive(Debug, PartialEq, Eq)]
pub enum Unreadable {
    /// No partition holds an ext2/3/4 filesystem with `/etc/cloud/cloud.cfg`.
    NoCloudConfig,
    /// The config files name no `system_info.default_user.name`.
    NoDefaultUser { files: Vec<String> },
}

impl std::fmt::Display for Unreadable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unreadable::NoCloudConfig => write!(
                f,
                "kiln found no ext4 filesystem with {CLOUD_CFG} in it (the image has no \
                 cloud-init config kiln can read)"
            ),
            Unreadable::NoDefaultUser { files } => write!(
                f,
                "its cloud-init config ({}) names no system_info.default_user.name",
                files.join(", ")
            ),
        }
    }
}

/// The default user of the raw disk at `raw`.
pub fn read(raw: &Path) -> Result<String, Unreadable> {
    let Ok(mut file) = File::open(raw) else {
        return Err(Unreadable::NoCloudConfig);
    };
    let starts = partition_starts(raw, &mut file);
    let file = std::sync::Arc::new(file);
    for start in starts {
        let window = Window {
            file: file.clone(),
            start,
        };
        let Ok(fs) = Ext4::load(Box::new(window)) else {
            continue;
        };
        if let Some(files) = config_files(&fs) {
            return default_user(&files).ok_or_else(|| Unreadable::NoDefaultUser {
                files: files.into_iter().map(|(p, _)| p).collect(),
            });
        }
    }
    Err(Unreadable::NoCloudConfig)
}

/// `system_info.default_user.name` of cloud-init config files given in the order cloud-init
/// reads them: the last file that names one wins. A file that is not YAML is passed over, as
/// the others still configure the guest.
pub fn default_user(files: &[(String, String)]) -> Option<String> {
    files
        .iter()
        .filter_map(|(_, text)| serde_norway::from_str::<serde_norway::Value>(text).ok())
        .filter_map(|doc| {
            doc.get("system_info")?
                .get("default_user")?
                .get("name")?
                .as_str()
                .map(str::to_owned)
        })
        .next_back()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Config files as (name, text), in reading order; the user they name.
    fn check(files: &[(&str, &str)], expected: Option<&str>) {
        let files: Vec<(String, String)> = files
            .iter()
            .map(|(n, t)| (n.to_string(), t.to_string()))
            .collect();
        assert_eq!(default_user(&files).as_deref(), expected, "{files:?}");
    }

    const DEBIAN: &str = "users:\n  - default\nsystem_info:\n  distro: debian\n  default_user:\n    name: debian\n    lock_passwd: True\n";

    #[test]
    fn reads_the_default_user_with_later_files_winning() {
        check(&[("cloud.cfg", DEBIAN)], Some("debian"));
        check(
            &[
                ("cloud.cfg", DEBIAN),
                (
                    "cloud.cfg.d/90_user.cfg",
                    "system_info:\n  default_user:\n    name: cloud\n",
                ),
            ],
            Some("cloud"),
        );
        check(
            &[
                ("cloud.cfg", DEBIAN),
                (
                    "cloud.cfg.d/01_kiln_datasource.cfg",
                    "datasource_list: [ NoCloud, None ]\n",
                ),
            ],
            Some("debian"),
        );
        check(
            &[
                (
                    "cloud.cfg",
                    "system_info:\n  default_user:\n    name: ubuntu\n",
                ),
                ("cloud.cfg.d/50_bad.cfg", "system_info: [unclosed\n"),
            ],
            Some("ubuntu"),
        );
        check(&[("cloud.cfg", "users: [default]\n")], None);
        check(
            &[(
                "cloud.cfg",
                "system_info:\n  default_user:\n    name: [x]\n",
            )],
            None,
        );
        check(&[], None);
    }

    /// The bootstrapped base image (when the VM tests' one is there) names `debian`; prints how
    /// long converting it to raw and reading it take.
    #[test]
    fn reads_debian_from_the_base_image() {
        let Some(base) = std::env::var_os("KILN_TEST_BASE_IMAGE") else {
            return;
        };
        let raw = std::env::temp_dir().join(format!("kiln-cloud-user-{}.raw", std::process::id()));
        let started = std::time::Instant::now();
        let out = std::process::Command::new("qemu-img")
            .args(["convert", "-f", "qcow2", "-O", "raw"])
            .arg(&base)
            .arg(&raw)
            .output()
            .expect("qemu-img runs");
        assert!(out.status.success(), "{out:?}");
        let converted = started.elapsed();
        let user = read(&raw);
        let _ = std::fs::remove_file(&raw);
        eprintln!(
            "default user of {}: {user:?}; convert {:.2} s, read {:.3} s",
            std::path::Path::new(&base).display(),
            converted.as_secs_f64(),
            (started.elapsed() - converted).as_secs_f64()
        );
        assert_eq!(user, Ok("debian".to_string()));
    }

    #[test]
    fn a_file_that_is_no_disk_has_no_config() {
        let dir = std::env::temp_dir().join(format!("kiln-cloud-user-{}", std::process::id()));
        std::fs::write(&dir, vec![0u8; 1 << 20]).ok();
        assert_eq!(read(&dir), Err(Unreadable::NoCloudConfig));
        let _ = std::fs::remove_file(&dir);
    }
}
