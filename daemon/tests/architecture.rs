//! Invariants of ARCHITECTURE.md that a test can check by reading the code.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(sources(&p));
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    out
}

/// The queue and its pipeline know no VM technology and no guest OS: machines come through
/// `driver::VmDriver`, guest commands from `guest::os`. A second driver or OS then changes
/// nothing there.
#[test]
fn the_queue_names_no_vm_technology_and_no_guest_os() {
    let queue = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/queue");
    let banned = [
        "qemu",
        "overlay.qcow2",
        "serial.log",
        "systemctl",
        "\"debian\"",
        "ssh2",
        "curl ",
        "sudo ",
        "driver::qemu",
        "guest::Guest",
    ];
    for file in sources(&queue) {
        let text = std::fs::read_to_string(&file).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default().to_lowercase();
            for word in banned {
                assert!(
                    !code.contains(word),
                    "{}:{}: {word:?} in the queue: {line}",
                    file.display(),
                    n + 1
                );
            }
        }
    }
}

/// No module over ~700 lines (issue 9): a module that grows past it is split by concern.
#[test]
fn no_module_is_over_700_lines() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for krate in ["daemon/src", "shared/src", "tui/src"] {
        for file in sources(&root.join(krate)) {
            let lines = std::fs::read_to_string(&file).unwrap().lines().count();
            assert!(lines <= 720, "{} has {lines} lines", file.display());
        }
    }
}
