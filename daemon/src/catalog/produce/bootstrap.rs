//! Bootstrap: `kiln image bootstrap OS` builds the public base image of an OS from its
//! distribution's mirror, by one recipe per supported OS (a script embedded in kilnd, so an
//! installed daemon needs no source tree) that needs some host programs.

use std::path::Path;

use kiln_shared::protocol::{BootstrapList, BootstrapOs, ImageInfo};

use super::RemoveOnDrop;
use crate::catalog::names::new_id;
use crate::catalog::{blocking, files, io_err, Catalog, CatalogError, ImageRecord, Requester};
use crate::tool;

/// How to bootstrap one OS.
pub struct Recipe {
    /// The OS id and the name of the public image it makes.
    pub os: &'static str,
    /// The first argument of the script (the Debian suite).
    pub suite: &'static str,
    pub script: &'static str,
    /// Programs the script runs, each with the Debian package that provides it.
    pub tools: &'static [(&'static str, &'static str)],
}

const DEBIAN_TOOLS: &[(&str, &str)] = &[
    ("mmdebstrap", "mmdebstrap"),
    ("sfdisk", "fdisk"),
    ("mkfs.ext4", "e2fsprogs"),
    ("qemu-img", "qemu-utils"),
    ("bc", "bc"),
    ("mount", "mount"),
];

const DEBIAN_SCRIPT: &str = include_str!("../../../assets/bootstrap-debian.sh");

/// Every bootstrapped image is of the Debian family and logs in as `debian`, the user Debian's
/// cloud-init config names.
const BOOTSTRAP_USER: &str = "debian";

pub const RECIPES: &[Recipe] = &[
    Recipe {
        os: "debian-12",
        suite: "bookworm",
        script: DEBIAN_SCRIPT,
        tools: DEBIAN_TOOLS,
    },
    Recipe {
        os: "debian-13",
        suite: "trixie",
        script: DEBIAN_SCRIPT,
        tools: DEBIAN_TOOLS,
    },
];

pub fn recipe(os: &str) -> Option<&'static Recipe> {
    RECIPES.iter().find(|r| r.os == os)
}

/// What `image.bootstrap_list` answers: every recipe, and what this host lacks for it.
pub fn bootstrap_list() -> BootstrapList {
    let as_root = kiln_shared::paths::current_uid() == 0;
    BootstrapList {
        oses: RECIPES
            .iter()
            .map(|r| BootstrapOs {
                os: r.os.into(),
                suite: r.suite.into(),
                family: crate::guest::os::family_of(r.os).into(),
                default_user: BOOTSTRAP_USER.into(),
                missing_tools: r
                    .missing_tools()
                    .iter()
                    .map(|(t, p)| format!("{t} (package {p})"))
                    .collect(),
                as_root,
            })
            .collect(),
    }
}

/// The OSes kilnd can bootstrap, for messages: `debian-12, debian-13`.
pub fn supported() -> String {
    RECIPES.iter().map(|r| r.os).collect::<Vec<_>>().join(", ")
}

/// Whether `program` is an executable file in one of `path`'s directories.
fn on_path(program: &str, path: &std::ffi::OsStr) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::env::split_paths(path).any(|dir| {
        std::fs::metadata(Path::new(&dir).join(program))
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    })
}

impl Recipe {
    /// The tools missing from kilnd's PATH (sbin directories included, since root's tools live
    /// there), each with its package.
    pub fn missing_tools(&self) -> Vec<(&'static str, &'static str)> {
        let path = search_path();
        self.tools
            .iter()
            .copied()
            .filter(|(tool, _)| !on_path(tool, &path))
            .collect()
    }
}

/// kilnd's PATH with the sbin directories added: the script runs with this PATH.
pub fn search_path() -> std::ffi::OsString {
    let mut dirs: Vec<std::path::PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    for extra in [
        "/usr/local/sbin",
        "/usr/local/bin",
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
    ] {
        if !dirs.iter().any(|d| d == Path::new(extra)) {
            dirs.push(extra.into());
        }
    }
    std::env::join_paths(dirs).unwrap_or_default()
}

impl Catalog {
    /// Builds the public base image `os` (e.g. `debian-12`) from the distribution's mirror and
    /// publishes it under the name `os`, replacing an older one only once the new one is
    /// available. Each `==> ` line of the script goes to `progress`. Takes minutes; needs an
    /// admin, and kilnd running as root with mmdebstrap installed.
    pub async fn bootstrap(
        &self,
        who: &Requester,
        os: &str,
        progress: impl Fn(String) + Send + Sync,
    ) -> Result<ImageInfo, CatalogError> {
        who.needs_admin(&format!("bootstrapping {os}"))?;
        let recipe = recipe(os).ok_or_else(|| {
            CatalogError::Invalid(format!(
                "kiln cannot bootstrap {os:?}; it can bootstrap: {}. For another OS, import an \
                 image with `kiln image import FILE --name NAME --os OS --public`",
                supported()
            ))
        })?;
        let uid = kiln_shared::paths::current_uid();
        if uid != 0 {
            return Err(CatalogError::Unavailable(format!(
                "bootstrapping {os} needs kilnd to run as root (mmdebstrap builds the root tree \
                 and mounts it), but this kilnd runs as uid {uid}; use a kilnd started as root, \
                 or build the image elsewhere and `kiln image import` it"
            )));
        }
        let missing = recipe.missing_tools();
        if !missing.is_empty() {
            let tools: Vec<String> = missing
                .iter()
                .map(|(t, p)| format!("{t} (package {p})"))
                .collect();
            let mut packages: Vec<&str> = missing.iter().map(|(_, p)| *p).collect();
            packages.dedup();
            return Err(CatalogError::Unavailable(format!(
                "bootstrapping {os} needs programs kilnd's host lacks: {}; install them with \
                 `apt-get install {}`",
                tools.join(", "),
                packages.join(" ")
            )));
        }
        let Some(_slot) = self.bootstrapping.take(os) else {
            return Err(CatalogError::Conflict(format!(
                "{os} is being bootstrapped already; wait for that to finish"
            )));
        };

        let id = new_id();
        let mut record = ImageRecord::new(&id, os, os, None, self.image_path(&id));
        record.default_user = BOOTSTRAP_USER.into();
        let creation = self.begin(record, |_, _| Ok(())).await?;
        let script = self.dir.join(format!("{}{id}.sh", files::SCRIPT_PREFIX));
        let written = self.dir.join(format!("{id}.bootstrap{}", files::PARTIAL));
        let script_text = recipe.script;
        let path = script.clone();
        blocking(move || {
            use std::os::unix::fs::PermissionsExt;
            std::fs::write(&path, script_text)
                .and_then(|()| {
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700))
                })
                .map_err(io_err(format!("write {}", path.display())))
        })
        .await?;
        let _script = RemoveOnDrop(Some(script.clone()));
        progress(format!("==> bootstrapping {os} as public image {id}"));
        let search_path = search_path();
        let envs = [
            (
                "PATH",
                search_path
                    .to_str()
                    .unwrap_or("/usr/sbin:/usr/bin:/sbin:/bin"),
            ),
            ("KILN_COMPRESS", "zstd"),
        ];
        let args = [
            script.as_os_str(),
            recipe.suite.as_ref(),
            written.as_os_str(),
            self.dir.as_os_str(),
        ];
        tool::stream("bash", &args, &envs, |line| {
            if line.starts_with("==> ") {
                progress(line.to_string());
            }
        })
        .await
        .map_err(|e| match CatalogError::from(e) {
            CatalogError::Tool(msg) => {
                CatalogError::Tool(format!("bootstrapping {os} failed: {msg}"))
            }
            e => e,
        })?;
        let record = creation.finish(&written).await?;
        progress(format!(
            "==> published {os} ({} bytes, sha256 {})",
            record.file_size, record.sha256
        ));
        let record = self.supersede(record).await;
        self.announce(&record);
        record
            .info_for(&who.project)
            .ok_or_else(|| CatalogError::Conflict("image vanished".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debian_recipe_is_embedded() {
        let r = recipe("debian-12").expect("debian-12 is supported");
        assert_eq!(r.suite, "bookworm");
        assert!(r.script.starts_with("#!/usr/bin/env bash"));
        assert!(r.script.contains("==> "));
        assert!(recipe("plan9-4").is_none());
        assert_eq!(supported(), "debian-12, debian-13");
        assert_eq!(recipe("debian-13").map(|r| r.suite), Some("trixie"));
    }

    #[test]
    fn the_list_has_every_recipe_with_its_user() {
        let list = bootstrap_list();
        let rows: Vec<(&str, &str, &str, &str)> = list
            .oses
            .iter()
            .map(|o| {
                (
                    o.os.as_str(),
                    o.suite.as_str(),
                    o.family.as_str(),
                    o.default_user.as_str(),
                )
            })
            .collect();
        assert_eq!(
            rows,
            [
                ("debian-12", "bookworm", "debian", "debian"),
                ("debian-13", "trixie", "debian", "debian")
            ]
        );
    }

    #[test]
    fn finds_programs_on_path() {
        assert!(on_path("sh", &search_path()));
        assert!(!on_path("kiln-no-such-program", &search_path()));
    }
}
