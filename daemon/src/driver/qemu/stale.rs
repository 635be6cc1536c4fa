//! Finding and ending a qemu a dead kilnd left behind, without ever hitting a process that only
//! reused its pid.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt as _;
use std::path::Path;
use std::time::{Duration, Instant};

/// Kills a qemu left behind by a dead daemon: only if `pid` is a `qemu-system-*` process whose
/// command line mentions `work_dir` and, when `started` is known, that started then (clock
/// ticks since boot), so a reused pid is never hit. Returns whether it killed,
/// after the process is gone (waits up to 5 s for its new parent to reap it).
pub fn kill_stale(pid: u32, started: Option<u64>, work_dir: &Path) -> bool {
    if pid == 0 || pid == std::process::id() {
        return false;
    }
    if started.is_some() && crate::leftovers::start_ticks(pid) != started {
        return false;
    }
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
    let is_qemu = args
        .first()
        .and_then(|a| Path::new(OsStr::from_bytes(a)).file_name())
        .is_some_and(|n| n.as_bytes().starts_with(b"qemu-system"));
    let mut dirs = vec![work_dir.to_owned()];
    if let Ok(canonical) = std::fs::canonicalize(work_dir) {
        dirs.push(canonical);
    }
    let needles: Vec<Vec<u8>> = dirs
        .iter()
        .map(|d| {
            let mut n = d.as_os_str().as_bytes().to_vec();
            n.push(b'/');
            n
        })
        .collect();
    let mentions = args.iter().any(|a| {
        needles
            .iter()
            .any(|n| a.windows(n.len()).any(|w| w == n.as_slice()))
    });
    if !is_qemu || !mentions {
        return false;
    }
    let Some(target) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return false;
    };
    if rustix::process::kill_process(target, rustix::process::Signal::KILL).is_err() {
        return false;
    }
    tracing::info!(pid, work_dir = %work_dir.display(), "killed a stale qemu");
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && crate::leftovers::alive(pid) {
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kill_stale_ignores_processes_that_are_not_our_qemu() {
        assert!(!kill_stale(std::process::id(), None, Path::new("/")));
        assert!(!kill_stale(1, None, Path::new("/nonexistent-kiln-dir")));
        assert!(!kill_stale(0, None, Path::new("/")));
    }

    #[test]
    fn start_times_tell_a_reused_pid() {
        let me = std::process::id();
        let started = crate::leftovers::start_ticks(me);
        assert!(started.is_some_and(|t| t > 0), "{started:?}");
        // A process with the same pid that started later is another process.
        assert!(!kill_stale(me, started.map(|t| t + 1), Path::new("/")));
    }
}
