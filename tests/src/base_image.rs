//! The bootstrapped base images VM tests boot (`KILN_TEST_BASE_IMAGE` for Debian 12,
//! `KILN_TEST_BASE_IMAGE_13` for Debian 13, both prepared by scripts/test.sh).
//! Under CI (`CI=true`) a missing one fails the test: a CI run that boots no VM proves nothing.
//! Elsewhere the test is skipped, and says so where the person running it sees it (written
//! straight to the terminal's stderr: the test harness captures `eprintln!`).

use std::io::Write;
use std::path::{Path, PathBuf};

/// The base image, or `None` (with a visible notice) when a VM test should skip.
///
/// # Panics
/// Under `CI=true` when `KILN_TEST_BASE_IMAGE` is unset or names no file.
pub fn base_image() -> Option<PathBuf> {
    base_image_from("KILN_TEST_BASE_IMAGE")
}

/// The Debian 13 base image, like [`base_image`].
///
/// # Panics
/// Under `CI=true` when `KILN_TEST_BASE_IMAGE_13` is unset or names no file.
// daemon/tests/vm.rs includes this file and boots Debian 12 only.
#[allow(dead_code)]
pub fn base_image_13() -> Option<PathBuf> {
    base_image_from("KILN_TEST_BASE_IMAGE_13")
}

fn base_image_from(var: &str) -> Option<PathBuf> {
    // libtest names each test's thread after the test.
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("a VM test");
    let problem = match std::env::var_os(var) {
        Some(p) if Path::new(&p).is_file() => return Some(PathBuf::from(p)),
        Some(p) => format!("{var}={} is not a file", Path::new(&p).display()),
        None => format!("{var} is not set"),
    };
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: {problem}; under CI every VM test must run (scripts/test.sh prepares the image)");
    }
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test}: {problem} (scripts/test.sh prepares it; this test boots VMs)"
    );
    None
}
