//! Running kilnd's external programs to completion (qemu-img, ssh-keygen, the seed's ISO tool,
//! the bootstrap script): each runs in its own process group that is killed, with everything it
//! started, when the work is dropped (cancel, timeout, shutdown). Long-lived processes (a VM's
//! qemu) are the driver's own business.

use std::ffi::OsStr;
use std::process::{ExitStatus, Stdio};

use rustix::process::{kill_process_group, Pid, Signal};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};

/// Why a program did not run to a successful end.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error(
        "{program} is not installed on kilnd's host (or not on its PATH); install it \
         (qemu-img: `apt-get install qemu-utils`)"
    )]
    Missing {
        program: String,
        source: std::io::Error,
    },
    #[error("cannot start {program}: {source}")]
    Start {
        program: String,
        source: std::io::Error,
    },
    #[error("waiting for {program} failed: {source}")]
    Wait {
        program: String,
        source: std::io::Error,
    },
    /// A non-zero exit; `output` is what it said (trimmed; stderr, or the tail of both streams
    /// for [`stream`]).
    #[error("`{cmdline}` failed ({status}){}", colon_then(.output))]
    Failed {
        cmdline: String,
        status: ExitStatus,
        output: String,
    },
}

fn colon_then(output: &str) -> String {
    if output.is_empty() {
        String::new()
    } else {
        format!(": {output}")
    }
}

/// Lines of a failed program's output kept for its error message.
const TAIL_LINES: usize = 40;

/// SIGKILLs a process group when dropped, unless the group leader was reaped first.
struct GroupKill(Option<i32>);

impl GroupKill {
    fn of(child: &Child) -> GroupKill {
        GroupKill(child.id().and_then(|id| i32::try_from(id).ok()))
    }

    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for GroupKill {
    fn drop(&mut self) {
        // Pid 1 would mean "every process we may signal": never.
        if let Some(pid) = self.0.take().filter(|p| *p > 1).and_then(Pid::from_raw) {
            let _ = kill_process_group(pid, Signal::KILL);
        }
    }
}

/// A command line as shown in error messages.
fn display(program: &str, args: &[&OsStr]) -> String {
    std::iter::once(program.to_string())
        .chain(args.iter().map(|a| a.to_string_lossy().into_owned()))
        .collect::<Vec<_>>()
        .join(" ")
}

fn command(program: &str, args: &[&OsStr]) -> Command {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    cmd
}

fn spawn_error(program: &str, source: std::io::Error) -> ToolError {
    let program = program.to_string();
    if source.kind() == std::io::ErrorKind::NotFound {
        ToolError::Missing { program, source }
    } else {
        ToolError::Start { program, source }
    }
}

fn wait_error(program: &str) -> impl FnOnce(std::io::Error) -> ToolError {
    let program = program.to_string();
    move |source| ToolError::Wait { program, source }
}

fn failed(program: &str, args: &[&OsStr], status: ExitStatus, output: &str) -> ToolError {
    ToolError::Failed {
        cmdline: display(program, args),
        status,
        output: output.trim().to_string(),
    }
}

/// Runs `program` to the end and returns its stdout; a non-zero exit is an error carrying stderr.
pub async fn output(program: &str, args: &[&OsStr]) -> Result<Vec<u8>, ToolError> {
    let child = command(program, args)
        .spawn()
        .map_err(|e| spawn_error(program, e))?;
    let mut guard = GroupKill::of(&child);
    let out = child
        .wait_with_output()
        .await
        .map_err(wait_error(program))?;
    guard.disarm();
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(failed(
            program,
            args,
            out.status,
            &String::from_utf8_lossy(&out.stderr),
        ))
    }
}

/// Runs `program`, handing each stdout line to `line` as it comes; a non-zero exit is an error
/// carrying the last lines of stdout and stderr.
pub async fn stream(
    program: &str,
    args: &[&OsStr],
    envs: &[(&str, &str)],
    mut line: impl FnMut(&str),
) -> Result<(), ToolError> {
    let mut cmd = command(program, args);
    cmd.envs(envs.iter().copied());
    let mut child = cmd.spawn().map_err(|e| spawn_error(program, e))?;
    let mut guard = GroupKill::of(&child);
    let stderr = child.stderr.take().map(|e| tokio::spawn(tail(e)));
    let mut kept = Vec::new();
    if let Some(stdout) = child.stdout.take() {
        let mut reader = BufReader::new(stdout);
        while let Some(l) = next_line(&mut reader).await {
            line(&l);
            keep(&mut kept, l);
        }
    }
    let status = child.wait().await.map_err(wait_error(program))?;
    guard.disarm();
    let err_tail = match stderr {
        Some(task) => task.await.unwrap_or_default(),
        None => Vec::new(),
    };
    if status.success() {
        return Ok(());
    }
    kept.extend(err_tail);
    let from = kept.len().saturating_sub(TAIL_LINES);
    Err(failed(program, args, status, &kept[from..].join("\n")))
}

fn keep(kept: &mut Vec<String>, line: String) {
    if kept.len() >= TAIL_LINES {
        kept.remove(0);
    }
    kept.push(line);
}

/// The next line without its newline, invalid UTF-8 replaced, so that output a program prints
/// is always drained (a reader that stopped would leave the program blocked on a full pipe).
async fn next_line(reader: &mut (impl AsyncBufRead + Unpin)) -> Option<String> {
    let mut buf = Vec::new();
    match reader.read_until(b'\n', &mut buf).await {
        Ok(0) | Err(_) => None,
        Ok(_) => {
            if buf.last() == Some(&b'\n') {
                buf.pop();
            }
            Some(String::from_utf8_lossy(&buf).into_owned())
        }
    }
}

async fn tail(stream: impl AsyncRead + Unpin) -> Vec<String> {
    let mut kept = Vec::new();
    let mut reader = BufReader::new(stream);
    while let Some(l) = next_line(&mut reader).await {
        keep(&mut kept, l);
    }
    kept
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn failure_names_the_command_line() {
        let err = output("sh", &["-c".as_ref(), "exit 3".as_ref()])
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "`sh -c exit 3` failed (exit status: 3)");
    }

    #[tokio::test]
    async fn failure_carries_the_output_tail() {
        let err = output("sh", &["-c".as_ref(), "echo oops >&2; exit 3".as_ref()])
            .await
            .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("oops") && msg.contains("exit status: 3"),
            "{msg}"
        );

        let mut seen = Vec::new();
        let err = stream(
            "sh",
            &[
                "-c".as_ref(),
                "echo '==> one'; printf 'two\\377\\n'; echo bad >&2; exit 1".as_ref(),
            ],
            &[],
            |l| seen.push(l.to_string()),
        )
        .await
        .unwrap_err();
        assert_eq!(seen, vec!["==> one", "two\u{fffd}"]);
        assert!(err.to_string().contains("bad"), "{err}");
    }

    #[tokio::test]
    async fn dropping_the_work_kills_the_whole_group() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("alive");
        // The grandchild would write the marker after 1 s unless its group is killed.
        let script = format!("(sleep 1; touch {}) & wait", marker.display());
        let args: [&OsStr; 2] = ["-c".as_ref(), script.as_ref()];
        let work = output("sh", &args);
        let _ = tokio::time::timeout(std::time::Duration::from_millis(200), work).await;
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        assert!(!marker.exists(), "a process of the group survived");
    }

    #[tokio::test]
    async fn a_missing_program_is_unavailable() {
        let err = output("kiln-no-such-program", &[]).await.unwrap_err();
        assert!(matches!(err, ToolError::Missing { .. }), "{err}");
    }
}
