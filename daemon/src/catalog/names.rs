//! The catalog's rules for what it stores: new image ids, image names, OS ids, project names,
//! sizes in whole GiB, and how a name's scope reads in messages.

use std::sync::atomic::{AtomicU64, Ordering};

use kiln_shared::validate::is_os_id;
use sha2::{Digest, Sha256};

use super::{files, CatalogError};

pub(super) const GIB: u64 = 1 << 30;

/// A new image id: `img-` and 16 hex digits.
pub(super) fn new_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let mut h = Sha256::new();
    h.update(nanos.to_le_bytes());
    h.update(std::process::id().to_le_bytes());
    h.update(COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    format!("img-{}", &files::hex(&h.finalize())[..16])
}

/// An image's name: kiln-shared's one rule for names.
pub(super) fn check_name(name: &str) -> Result<(), CatalogError> {
    kiln_shared::names::check(name).map_err(|e| CatalogError::Invalid(format!("name {e}")))
}

pub(super) fn check_os(os: &str) -> Result<(), CatalogError> {
    if is_os_id(os) {
        Ok(())
    } else {
        Err(CatalogError::Invalid(format!(
            "{os:?} is not an OS id: write distribution-version in lowercase letters, digits, \
             dots and dashes, e.g. \"debian-12\" or \"ubuntu-24.04\""
        )))
    }
}

pub(super) fn check_project_name(p: &str) -> Result<(), CatalogError> {
    kiln_shared::names::check(p).map_err(|e| CatalogError::Invalid(format!("project {e}")))
}

/// Whole GiB needed to hold `bytes`.
pub(super) fn gib_ceil(bytes: u64) -> u64 {
    bytes.div_ceil(GIB)
}

pub(super) fn scope_text(owner: Option<&str>) -> String {
    match owner {
        Some(p) => format!("in project {p:?}"),
        None => "among the public images".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_shaped() {
        let a = new_id();
        let b = new_id();
        assert_ne!(a, b);
        assert!(a.starts_with("img-") && a.len() == 20, "{a}");
    }

    #[test]
    fn names_and_sizes() {
        assert!(check_name("web-base").is_ok());
        assert!(check_name("웹").is_ok());
        for bad in [
            "",
            "a/b",
            "a\nb",
            " a",
            "..",
            "-x",
            "a\u{200b}",
            &"x".repeat(256),
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_os("debian-12").is_ok());
        assert!(check_os("Debian 12").is_err());
        assert_eq!(gib_ceil(0), 0);
        assert_eq!(gib_ceil(1), 1);
        assert_eq!(gib_ceil(3 * GIB), 3);
        assert_eq!(gib_ceil(3 * GIB + 1), 4);
    }
}
