//! A minimal QMP client: one short-lived connection per command, events skipped.
//!
//! QEMU's QMP socket (`server=on,wait=off`) serves one client at a time, so holding a connection
//! open would lock out a person poking at the VM; a fresh connection per command costs a
//! millisecond.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// Connects, negotiates capabilities and runs `command` (e.g. `system_powerdown`), returning
/// its `return` value.
pub(crate) async fn execute(socket: &Path, command: &str) -> Result<Value, String> {
    execute_with(socket, command, Value::Null).await
}

/// [`execute`] with `arguments` (an object; `Null` for none).
pub(crate) async fn execute_with(
    socket: &Path,
    command: &str,
    arguments: Value,
) -> Result<Value, String> {
    tokio::time::timeout(REPLY_TIMEOUT, execute_inner(socket, command, arguments))
        .await
        .map_err(|_| format!("no reply to {command} within {REPLY_TIMEOUT:?}"))?
}

async fn execute_inner(socket: &Path, command: &str, arguments: Value) -> Result<Value, String> {
    let stream = UnixStream::connect(socket)
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let greeting = next_message(&mut lines).await?;
    if greeting.get("QMP").is_none() {
        return Err(format!("unexpected greeting {greeting}"));
    }
    for cmd in ["qmp_capabilities", command] {
        let message = if cmd == command && !arguments.is_null() {
            serde_json::json!({ "execute": cmd, "arguments": arguments })
        } else {
            serde_json::json!({ "execute": cmd })
        };
        let line = format!("{message}\n");
        write
            .write_all(line.as_bytes())
            .await
            .map_err(|e| format!("sending {cmd}: {e}"))?;
        loop {
            let msg = next_message(&mut lines).await?;
            if msg.get("event").is_some() {
                continue;
            }
            if let Some(err) = msg.get("error") {
                return Err(format!("{cmd} failed: {err}"));
            }
            match msg.get("return") {
                Some(ret) if cmd == command => return Ok(ret.clone()),
                Some(_) => break,
                None => return Err(format!("unexpected reply to {cmd}: {msg}")),
            }
        }
    }
    Err("no reply".into())
}

/// Whether a `query-migrate` reply says the migration is done: `Ok(false)` while it runs,
/// `Err` with QEMU's reason when it failed.
pub(crate) fn migration_done(reply: &Value) -> Result<bool, String> {
    match reply["status"].as_str().unwrap_or("none") {
        "completed" => Ok(true),
        "failed" | "cancelled" => Err(reply["error-desc"]
            .as_str()
            .unwrap_or("no reason given")
            .to_owned()),
        _ => Ok(false),
    }
}

async fn next_message(
    lines: &mut tokio::io::Lines<BufReader<tokio::net::unix::OwnedReadHalf>>,
) -> Result<Value, String> {
    let line = lines
        .next_line()
        .await
        .map_err(|e| format!("reading: {e}"))?
        .ok_or("QEMU closed the connection")?;
    serde_json::from_str(&line).map_err(|e| format!("bad JSON {line:?}: {e}"))
}
