//! Figures for the dashboard benchmark, kept only when `KILN_DASHBOARD_STATS=FILE` is set: how
//! long each frame took to render and write to the terminal, and how long each line of the log
//! on screen took from kilnd (its `ts`, stamped when kilnd wrote the line) to the end of the
//! first frame that drew it (live lines only: the backlog a stream starts with is counted, not
//! timed). Written as JSON to FILE when the dashboard quits.

use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::app::{Action, App, Note};

/// Lines whose latency is kept; a 10,000 lines/s build fills this in ten minutes.
const MAX_SAMPLES: usize = 6_000_000;

pub struct Stats {
    path: PathBuf,
    frames_us: Vec<u64>,
    renders_us: Vec<u64>,
    /// CPU time the dashboard's thread spent on each frame: the frame's time less the time it
    /// waited for a core.
    frames_cpu_us: Vec<u64>,
    latencies_us: Vec<i64>,
    /// Daemon timestamps of log lines received since the last frame.
    pending: Vec<DateTime<Utc>>,
    first_line: Option<DateTime<Utc>>,
    last_line: Option<DateTime<Utc>>,
    /// When the shown log's subscription was first seen in place: lines kilnd wrote before it
    /// are the backlog the stream starts with, not live lines, and count only in `backlog`.
    live_since: Option<DateTime<Utc>>,
    backlog: u64,
}

impl Stats {
    pub fn from_env() -> Option<Stats> {
        let path = std::env::var_os("KILN_DASHBOARD_STATS")?;
        Some(Stats {
            path: PathBuf::from(path),
            frames_us: Vec::new(),
            renders_us: Vec::new(),
            frames_cpu_us: Vec::new(),
            latencies_us: Vec::new(),
            pending: Vec::new(),
            first_line: None,
            last_line: None,
            live_since: None,
            backlog: 0,
        })
    }

    /// Notes a line of the log on screen (before `update` applies the action).
    pub fn on_action(&mut self, app: &App, action: &Action) {
        let Action::Notification(Note::Log(note)) = action else {
            return;
        };
        if app.log.as_ref().and_then(|l| l.sub) != Some(note.sub) {
            return;
        }
        let live_since = *self.live_since.get_or_insert_with(Utc::now);
        let ts = note.line.ts;
        if ts < live_since {
            self.backlog += 1;
            return;
        }
        self.first_line.get_or_insert(ts);
        self.last_line = Some(ts);
        self.pending.push(ts);
    }

    /// A frame took `render` to lay out into ratatui's buffer and `took` in all (with the diff
    /// written and flushed to the terminal), `cpu` of it on a core, and is on the terminal now.
    pub fn on_frame(&mut self, render: Duration, took: Duration, cpu: Duration) {
        self.renders_us.push(render.as_micros() as u64);
        self.frames_us.push(took.as_micros() as u64);
        self.frames_cpu_us.push(cpu.as_micros() as u64);
        let now = Utc::now();
        for ts in self.pending.drain(..) {
            if self.latencies_us.len() < MAX_SAMPLES {
                self.latencies_us
                    .push((now - ts).num_microseconds().unwrap_or(i64::MAX));
            }
        }
    }

    pub fn write(&mut self) -> std::io::Result<()> {
        self.frames_us.sort_unstable();
        self.renders_us.sort_unstable();
        self.frames_cpu_us.sort_unstable();
        self.latencies_us.sort_unstable();
        let span = match (self.first_line, self.last_line) {
            (Some(a), Some(b)) => (b - a).num_milliseconds() as f64 / 1000.0,
            _ => 0.0,
        };
        let out = json!({
            "frames": self.frames_us.len(),
            "frame_ms": summary(&self.frames_us.iter().map(|&u| u as i64).collect::<Vec<_>>()),
            "render_ms": summary(&self.renders_us.iter().map(|&u| u as i64).collect::<Vec<_>>()),
            "frame_cpu_ms": summary(&self.frames_cpu_us.iter().map(|&u| u as i64).collect::<Vec<_>>()),
            "lines": self.latencies_us.len(),
            "backlog_lines": self.backlog,
            "lines_span_s": span,
            "latency_ms": summary(&self.latencies_us),
        });
        std::fs::write(&self.path, format!("{out:#}\n"))
    }
}

/// CPU time this thread has used so far.
pub fn thread_cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

/// p50/p99/max of sorted microsecond samples, in milliseconds.
fn summary(sorted_us: &[i64]) -> Value {
    if sorted_us.is_empty() {
        return Value::Null;
    }
    let at = |p: f64| {
        let i = ((sorted_us.len() as f64 - 1.0) * p).round() as usize;
        sorted_us[i.min(sorted_us.len() - 1)] as f64 / 1000.0
    };
    json!({"p50": at(0.50), "p99": at(0.99), "max": at(1.0)})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_in_milliseconds() {
        let samples: Vec<i64> = (1..=100).map(|i| i * 1000).collect();
        assert_eq!(
            summary(&samples),
            json!({"p50": 51.0, "p99": 99.0, "max": 100.0})
        );
        assert_eq!(summary(&[]), Value::Null);
    }
}
