//! Build logs: one append-only JSON-lines file per build, plus a live fan-out to any number of
//! subscribers. The build never waits for a subscriber: a slow one lags and re-reads the file.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chrono::Utc;
use kiln_shared::build::{LogLine, LogStream};
use tokio::sync::broadcast;

use crate::sync::lock;

/// The log of one running build.
pub struct BuildLog {
    inner: Mutex<Writer>,
    tx: broadcast::Sender<LogLine>,
}

struct Writer {
    file: Option<std::fs::File>,
    next_seq: u64,
}

impl BuildLog {
    /// Appends one line (a multi-line text becomes several), stamped now.
    pub fn write(&self, stream: LogStream, step: Option<&str>, text: &str) {
        for line in text.split('\n') {
            let line = line.strip_suffix('\r').unwrap_or(line);
            let mut w = lock(&self.inner);
            let entry = LogLine {
                seq: w.next_seq,
                ts: Utc::now(),
                stream,
                step: step.map(str::to_string),
                line: line.to_string(),
            };
            w.next_seq += 1;
            if let Some(f) = w.file.as_mut() {
                let mut bytes = serde_json::to_vec(&entry).unwrap_or_default();
                bytes.push(b'\n');
                if let Err(e) = f.write_all(&bytes) {
                    tracing::warn!("cannot write build log: {e}");
                    w.file = None;
                }
            }
            drop(w);
            // No receivers is fine; a lagging receiver is dropped behind, never waited for.
            let _ = self.tx.send(entry);
        }
    }

    pub fn kiln(&self, text: &str) {
        self.write(LogStream::Kiln, None, text);
    }
}

/// Every build's log: files under `dir`, live channels for running builds.
pub struct Logs {
    dir: PathBuf,
    live: Mutex<HashMap<u64, Arc<BuildLog>>>,
}

impl Logs {
    pub fn new(dir: PathBuf) -> std::io::Result<Logs> {
        std::fs::create_dir_all(&dir)?;
        Ok(Logs {
            dir,
            live: Mutex::default(),
        })
    }

    pub fn path(&self, id: u64) -> PathBuf {
        self.dir.join(format!("{id}.log"))
    }

    /// Where the serial console of a finished build is kept.
    pub fn serial_path(&self, id: u64) -> PathBuf {
        self.dir.join(format!("{id}.serial.log"))
    }

    /// Opens (or reopens) the log of a build that starts running.
    pub fn open(&self, id: u64) -> Arc<BuildLog> {
        let path = self.path(id);
        let next_seq = read_lines(&path, 0).len() as u64;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path);
        if let Err(e) = &file {
            tracing::warn!("cannot open build log {}: {e}", path.display());
        }
        let (tx, _) = broadcast::channel(4096);
        let log = Arc::new(BuildLog {
            inner: Mutex::new(Writer {
                file: file.ok(),
                next_seq,
            }),
            tx,
        });
        lock(&self.live).insert(id, log.clone());
        log
    }

    /// Ends the live channel of a build: followers drain the file and finish.
    pub fn close(&self, id: u64) {
        lock(&self.live).remove(&id);
    }

    pub fn live(&self, id: u64) -> Option<Arc<BuildLog>> {
        lock(&self.live).get(&id).cloned()
    }

    /// Subscribes to a running build's new lines; `None` once it has ended.
    pub fn subscribe(&self, id: u64) -> Option<broadcast::Receiver<LogLine>> {
        lock(&self.live).get(&id).map(|l| l.tx.subscribe())
    }

    /// Stored lines from `from` on.
    pub fn read_from(&self, id: u64, from: u64) -> Vec<LogLine> {
        read_lines(&self.path(id), from)
    }

    pub fn remove(&self, id: u64) {
        let _ = std::fs::remove_file(self.path(id));
        let _ = std::fs::remove_file(self.serial_path(id));
    }
}

fn read_lines(path: &Path, from: u64) -> Vec<LogLine> {
    let Ok(f) = std::fs::File::open(path) else {
        return Vec::new();
    };
    BufReader::new(f)
        .lines()
        .map_while(Result::ok)
        // A line torn by a crash mid-write is skipped, not fatal.
        .filter_map(|l| serde_json::from_str::<LogLine>(&l).ok())
        .filter(|l| l.seq >= from)
        .collect()
}

/// Lines of a plain-text file (the serial console) from line `from` on, as log lines.
pub fn read_text_lines(path: &Path, from: u64) -> Vec<LogLine> {
    let Ok(bytes) = std::fs::read(path) else {
        return Vec::new();
    };
    let text = String::from_utf8_lossy(&bytes);
    let ts = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .map(chrono::DateTime::<Utc>::from)
        .unwrap_or_else(|_| Utc::now());
    let mut lines: Vec<&str> = text.split('\n').collect();
    // The last piece is either empty (text ends in a newline) or a line still being written.
    lines.pop();
    lines
        .into_iter()
        .enumerate()
        .skip(from as usize)
        .map(|(i, l)| LogLine {
            seq: i as u64,
            ts,
            stream: LogStream::Serial,
            step: None,
            line: l.trim_end_matches('\r').to_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn lines_are_stored_numbered_and_fanned_out() {
        let dir = tempfile::tempdir().unwrap();
        let logs = Logs::new(dir.path().to_path_buf()).unwrap();
        let log = logs.open(7);
        let mut rx = logs.subscribe(7).unwrap();
        log.kiln("one\ntwo");
        log.write(LogStream::Stderr, Some("step"), "three");
        assert_eq!(rx.try_recv().unwrap().line, "one");
        let stored = logs.read_from(7, 1);
        assert_eq!(
            stored.iter().map(|l| l.line.as_str()).collect::<Vec<_>>(),
            ["two", "three"]
        );
        assert_eq!(stored[1].step.as_deref(), Some("step"));
        logs.close(7);
        assert!(logs.subscribe(7).is_none());
        // Reopening continues the numbering.
        logs.open(7).kiln("four");
        assert_eq!(logs.read_from(7, 3)[0].seq, 3);
    }
}
