//! What `kiln image bootstrap OS` runs: one recipe per supported OS (a script embedded in kilnd,
//! so an installed daemon needs no source tree) and the host programs the recipe needs.

use std::path::Path;

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

pub const RECIPES: &[Recipe] = &[Recipe {
    os: "debian-12",
    suite: "bookworm",
    script: include_str!("../../assets/bootstrap-debian.sh"),
    tools: DEBIAN_TOOLS,
}];

pub fn recipe(os: &str) -> Option<&'static Recipe> {
    RECIPES.iter().find(|r| r.os == os)
}

/// The OSes kilnd can bootstrap, for messages: `debian-12`.
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
        assert_eq!(supported(), "debian-12");
    }

    #[test]
    fn finds_programs_on_path() {
        assert!(on_path("sh", &search_path()));
        assert!(!on_path("kiln-no-such-program", &search_path()));
    }
}
