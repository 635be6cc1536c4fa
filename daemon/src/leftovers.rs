//! Processes a dead kilnd left running.
//!
//! kilnd puts `KILND_DATA_DIR=<its data dir>` into its own environment before it starts any
//! thread, so every program it runs (qemu, qemu-img, the bootstrap script) carries it and hands it
//! down to what that starts (mmdebstrap, apt, ...). A kilnd that holds the data dir's store lock is
//! the only one using that directory, so any other process still marked with it was started by
//! a kilnd that died: [`kill`] ends them all before the catalog and the queue clean up files.
//! This covers what the recorded qemu pids cannot: a VM between its start and the store write
//! of its pid, the KVM probe's throwaway VM, a running qemu-img or bootstrap.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::process::{kill_process, kill_process_group, Pid, Signal};

/// The environment variable that marks kilnd's children.
pub const MARK: &str = "KILND_DATA_DIR";

/// Marks this process (and so every child it will start) as kilnd's for `data_dir`.
///
/// Call it before any other thread exists: changing the environment while another thread reads
/// it is undefined behaviour in libc.
pub fn mark_this_process(data_dir: &Path) {
    std::env::set_var(MARK, marker_value(data_dir));
}

/// The data dir as the mark spells it: canonical when it exists already.
fn marker_value(data_dir: &Path) -> PathBuf {
    std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_owned())
}

/// SIGKILLs every process marked with `data_dir` but this one (and the process group of each
/// marked group leader, for children that dropped the mark), then waits up to 5 s for them to
/// die. Returns the pids it killed.
pub fn kill(data_dir: &Path) -> Vec<u32> {
    let wanted: Vec<Vec<u8>> = [data_dir.to_owned(), marker_value(data_dir)]
        .iter()
        .map(|d| {
            let mut entry = OsString::from(format!("{MARK}="));
            entry.push(d);
            entry.as_bytes().to_vec()
        })
        .collect();
    let me = std::process::id();
    let Ok(proc) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let marked: Vec<u32> = proc
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            // Unreadable (another user's process, or gone): not ours to judge.
            std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|env| {
                env.split(|&b| b == 0)
                    .any(|v| wanted.iter().any(|w| v == w))
            })
        })
        .collect();
    for &pid in &marked {
        let Some(target) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
            continue;
        };
        if rustix::process::getpgid(Some(target)).is_ok_and(|g| g == target) {
            let _ = kill_process_group(target, Signal::KILL);
        }
        let _ = kill_process(target, Signal::KILL);
        tracing::warn!(
            pid,
            command = %command_of(pid),
            "killed a process a previous kilnd left running"
        );
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && marked.iter().any(|&pid| alive(pid)) {
        std::thread::sleep(Duration::from_millis(20));
    }
    marked
}

/// Whether `pid` still runs (a zombie does not).
pub(crate) fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        // Field 3 (after the parenthesised name) is the state; Z = dead, not yet reaped.
        !stat
            .rsplit(')')
            .next()
            .is_some_and(|r| r.trim_start().starts_with('Z'))
    })
}

/// When `pid` started, in clock ticks since boot (field 22 of /proc/PID/stat): with the pid, it
/// names one process for good, since a reused pid has a later start.
pub(crate) fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised name start at field 3 (state).
    stat.rsplit(')')
        .next()?
        .split_whitespace()
        .nth(22 - 3)?
        .parse()
        .ok()
}

fn command_of(pid: u32) -> String {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    text.trim().chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::process::CommandExt;
    use std::process::Command;

    #[test]
    fn kills_marked_processes_and_their_groups_only() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let other = dir.path().join("other");
        // A marked shell that started an unmarked child in its own group, and a process marked
        // for another data dir.
        let mut ours = Command::new("sh")
            .args(["-c", "env -u KILND_DATA_DIR sleep 600 & wait"])
            .env(MARK, &data)
            .process_group(0)
            .spawn()
            .unwrap();
        let mut theirs = Command::new("sleep")
            .arg("600")
            .env(MARK, &other)
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let killed = kill(&data);
        assert_eq!(killed, vec![ours.id()]);
        assert!(ours.wait().unwrap().code().is_none(), "killed by a signal");
        let deadline = Instant::now() + Duration::from_secs(5);
        while in_group(ours.id()) {
            assert!(Instant::now() < deadline, "its group was not killed");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            theirs.try_wait().unwrap().is_none(),
            "another data dir's child lives"
        );
        theirs.kill().unwrap();
        theirs.wait().unwrap();
    }

    /// Whether a live process is in process group `pgid`.
    fn in_group(pgid: u32) -> bool {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .any(|pid| {
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                // After the name: state, ppid, pgrp.
                let fields: Vec<&str> = stat
                    .rsplit(')')
                    .next()
                    .unwrap_or("")
                    .split_whitespace()
                    .collect();
                fields.get(2) == Some(&pgid.to_string().as_str()) && alive(pid)
            })
    }
}
