//! One client connection: the `hello` line, bounded line reading, requests handled concurrently,
//! replies funnelled through one writer so a client that hangs up harms nothing.

use std::sync::Arc;

use interprocess::local_socket::tokio::{prelude::*, Stream};
use kiln_shared::protocol::{
    ErrorKind, Hello, Notification, Response, RpcError, MAX_LINE_BYTES, PROTOCOL_VERSION,
};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, Semaphore};

use super::builds::Sink;
use super::dispatch::Daemon;
use crate::access::Peer;

/// Requests one connection may have in flight before the daemon stops reading from it.
const MAX_IN_FLIGHT: usize = 64;

/// What a reader task hands to the writer: a finished line, or the order to close.
enum Outgoing {
    Line(Vec<u8>),
    Close,
}

/// Serves one connection until the client hangs up or sends an oversized line.
pub async fn serve_connection(daemon: Arc<Daemon>, stream: Stream) {
    let peer = match stream.peer_creds() {
        Ok(c) => Peer::from_creds(
            c.euid().unwrap_or(u32::MAX),
            c.egid().unwrap_or(u32::MAX),
            c.pid().and_then(|p| u32::try_from(p).ok()),
        ),
        Err(e) => {
            tracing::warn!("cannot read peer credentials, closing: {e}");
            return;
        }
    };
    tracing::debug!(uid = peer.uid, pid = ?peer.pid, "client connected");
    let (read, mut write) = tokio::io::split(stream);
    let (tx, mut rx) = mpsc::channel::<Outgoing>(256);

    let writer = tokio::spawn(async move {
        while let Some(out) = rx.recv().await {
            match out {
                Outgoing::Line(line) => {
                    if write.write_all(&line).await.is_err() {
                        break;
                    }
                }
                Outgoing::Close => break,
            }
        }
        let _ = write.shutdown().await;
    });

    let hello = Notification::new(
        "hello",
        serde_json::to_value(Hello {
            server: "kilnd".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            protocol: PROTOCOL_VERSION,
        })
        .unwrap_or_default(),
    );
    let _ = tx.send(Outgoing::Line(to_line(&hello))).await;

    let sink = {
        let tx = tx.clone();
        Sink {
            send: Arc::new(move |n: Notification| {
                let tx = tx.clone();
                Box::pin(async move { tx.send(Outgoing::Line(to_line(&n))).await.is_ok() })
            }),
            next_sub: Arc::default(),
            subs: Arc::default(),
        }
    };
    let mut reader = BufReader::with_capacity(64 * 1024, read);
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut line = Vec::new();
    loop {
        line.clear();
        match read_bounded_line(&mut reader, &mut line).await {
            Ok(LineRead::Eof) | Err(_) => break,
            Ok(LineRead::TooLong) => {
                let err = RpcError::new(
                    ErrorKind::TooLarge,
                    format!("line longer than {MAX_LINE_BYTES} bytes; closing the connection"),
                );
                let _ = tx
                    .send(Outgoing::Line(to_line(&Response::err(Value::Null, err))))
                    .await;
                let _ = tx.send(Outgoing::Close).await;
                break;
            }
            Ok(LineRead::Line) => {}
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            break;
        };
        let daemon = daemon.clone();
        let peer = peer.clone();
        let tx = tx.clone();
        let sink = sink.clone();
        let request = std::mem::take(&mut line);
        tokio::spawn(async move {
            let (response, follow_up) = daemon.handle_line(&peer, &request, &sink).await;
            if let Some(response) = response {
                // The client may be gone; that is its business.
                let _ = tx.send(Outgoing::Line(to_line(&response))).await;
            }
            drop(permit);
            // Streams (build.logs) start after their reply, so `sub` is known first.
            if let Some(f) = follow_up {
                f.await;
            }
        });
    }
    drop(sink);
    drop(tx);
    let _ = writer.await;
    tracing::debug!(uid = peer.uid, "client disconnected");
}

fn to_line<T: serde::Serialize>(msg: &T) -> Vec<u8> {
    let mut v = serde_json::to_vec(msg).unwrap_or_default();
    v.push(b'\n');
    v
}

enum LineRead {
    Line,
    Eof,
    TooLong,
}

/// Reads up to and excluding `\n`, refusing to buffer more than `MAX_LINE_BYTES`.
async fn read_bounded_line<R: tokio::io::AsyncBufRead + Unpin>(
    reader: &mut R,
    out: &mut Vec<u8>,
) -> std::io::Result<LineRead> {
    loop {
        let buf = reader.fill_buf().await?;
        if buf.is_empty() {
            return Ok(if out.is_empty() {
                LineRead::Eof
            } else {
                LineRead::Line
            });
        }
        let (take, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        let content = if done { take - 1 } else { take };
        if out.len() + content > MAX_LINE_BYTES {
            return Ok(LineRead::TooLong);
        }
        out.extend_from_slice(&buf[..content]);
        reader.consume(take);
        if done {
            return Ok(LineRead::Line);
        }
    }
}
