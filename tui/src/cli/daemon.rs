//! `kiln daemon ...`: what kilnd says about itself.

use std::process::ExitCode;

use clap::Subcommand;
use kiln_shared::methods::{self as m, Empty};
use kiln_shared::protocol::DaemonStatus;

use super::output;
use super::{call, CmdResult, Settings};

#[derive(Debug, Subcommand)]
pub enum DaemonCommand {
    /// Version, pid, socket, data directory, uptime, build queue, accelerator and who you are
    Status,
}

pub async fn run(settings: &Settings, command: DaemonCommand) -> CmdResult {
    match command {
        DaemonCommand::Status => status(settings).await,
    }
}

async fn status(settings: &Settings) -> CmdResult {
    let client = settings.connect().await?;
    let (value, status) = call::<m::DaemonStatus>(&client, &Empty {}).await?;
    if settings.json {
        output::print_json(&value);
    } else {
        output::print(&status_text(&status));
    }
    Ok(ExitCode::SUCCESS)
}

/// `3d 4h`, `2h 5m`, `5m 3s`, `42s`: the two largest units are enough to read an uptime.
pub fn duration_text(seconds: u64) -> String {
    let (d, h, m, s) = (
        seconds / 86_400,
        seconds / 3600 % 24,
        seconds / 60 % 60,
        seconds % 60,
    );
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

/// `daemon status` for people: one `key: value` line per fact.
pub fn status_text(s: &DaemonStatus) -> String {
    let gids: Vec<String> = s.caller.gids.iter().map(u32::to_string).collect();
    let rows = [
        (
            "version",
            format!("kilnd {} (protocol {})", s.version, s.protocol),
        ),
        ("pid", s.pid.to_string()),
        ("socket", s.socket.clone()),
        ("data dir", s.data_dir.clone()),
        (
            "uptime",
            format!(
                "{} (since {})",
                duration_text(s.uptime_seconds),
                output::local_time_long(&s.started_at)
            ),
        ),
        (
            "builds",
            format!(
                "{} running, {} queued (at most {} at once)",
                s.running, s.queue, s.max_concurrent_builds
            ),
        ),
        ("accel", s.accel.clone()),
        ("templates", s.templates.to_string()),
        (
            "caller",
            format!(
                "uid {} (groups {}), project {}",
                s.caller.uid,
                if gids.is_empty() {
                    "none".to_string()
                } else {
                    gids.join(",")
                },
                s.caller.project
            ),
        ),
    ];
    rows.iter()
        .map(|(k, v)| format!("{:<10} {v}\n", format!("{k}:")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_shared::protocol::Caller;

    #[test]
    fn durations() {
        let check = |s: u64, expected: &str| assert_eq!(duration_text(s), expected, "{s}");
        check(0, "0s");
        check(59, "59s");
        check(61, "1m 1s");
        check(3600, "1h 0m");
        check(7322, "2h 2m");
        check(90_061, "1d 1h");
    }

    #[test]
    fn status_lines() {
        let status = DaemonStatus {
            version: "0.1.0".into(),
            protocol: 1,
            pid: 4242,
            socket: "/run/kiln/kiln.sock".into(),
            data_dir: "/var/lib/kiln".into(),
            started_at: "2024-05-01T12:00:00Z".parse().expect("a time"),
            uptime_seconds: 7322,
            queue: 2,
            running: 1,
            max_concurrent_builds: 1,
            accel: "kvm".into(),
            templates: 3,
            caller: Caller {
                uid: 1000,
                gids: vec![1000, 27],
                project: "default".into(),
            },
        };
        let text = status_text(&status);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "version:   kilnd 0.1.0 (protocol 1)");
        assert_eq!(lines[1], "pid:       4242");
        assert_eq!(lines[3], "data dir:  /var/lib/kiln");
        assert!(lines[4].starts_with("uptime:    2h 2m (since 2024-05-01"));
        assert_eq!(
            lines[5],
            "builds:    1 running, 2 queued (at most 1 at once)"
        );
        assert_eq!(
            lines[8],
            "caller:    uid 1000 (groups 1000,27), project default"
        );
        assert!(lines.iter().all(|l| l.len() <= 80));
    }
}
