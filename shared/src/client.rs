//! The async client: one connection to kilnd, many requests in flight, notifications on a channel.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use interprocess::local_socket::tokio::{prelude::*, Stream};
use interprocess::local_socket::{GenericFilePath, ToFsName};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, WriteHalf};
use tokio::sync::{mpsc, oneshot};

use crate::methods::Method;
use crate::protocol::{
    Hello, Notification, Request, Response, RpcError, ServerMessage, MAX_LINE_BYTES,
};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot connect to kilnd at {path}: {source} ({})",
        connect_hint(source)
    )]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("will not connect to kilnd at {path}: {source}")]
    Untrusted {
        path: PathBuf,
        source: crate::paths::SocketPathError,
    },
    #[error("connection to kilnd failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Rpc(#[from] RpcError),
    #[error("unexpected reply from kilnd: {0}")]
    Protocol(String),
    /// The result of a typed call is not what the method table says it returns.
    #[error("unexpected reply from kilnd to {method}: {source}")]
    Result {
        method: &'static str,
        source: serde_json::Error,
    },
    #[error("kilnd closed the connection")]
    Closed,
}

/// What to do when connecting failed with `e`.
fn connect_hint(e: &std::io::Error) -> &'static str {
    if e.kind() == std::io::ErrorKind::PermissionDenied {
        "you may not use this socket: a system kilnd admits the members of its group `kiln`; \
         ask an admin to add you (`adduser USER kiln`, then log in again)"
    } else {
        "is kilnd running? start it with `kilnd`, or set KILN_SOCKET"
    }
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Response>>>>;

/// A connection to kilnd. Cheap to share behind an `Arc`; calls may run concurrently.
pub struct Client {
    writer: tokio::sync::Mutex<WriteHalf<Stream>>,
    pending: Pending,
    next_id: AtomicU64,
    project: Option<String>,
    hello: Hello,
}

impl Client {
    /// Connects, reads the `hello` line and returns the client with its notification stream.
    pub async fn connect(
        path: &Path,
        project: Option<String>,
    ) -> Result<(Client, mpsc::UnboundedReceiver<Notification>), ClientError> {
        let connect_err = |source| ClientError::Connect {
            path: path.to_path_buf(),
            source,
        };
        // Someone who may write the socket's directory could have put their own socket there.
        // A directory that is not there yet is no daemon either: the connect below says so.
        if path.parent().is_some_and(Path::exists) {
            crate::paths::check_socket_path(path, crate::paths::SocketDir::Unwritable).map_err(
                |source| ClientError::Untrusted {
                    path: path.to_path_buf(),
                    source,
                },
            )?;
        }
        let name = path.to_fs_name::<GenericFilePath>().map_err(connect_err)?;
        let stream = Stream::connect(name).await.map_err(connect_err)?;
        let (read, write) = tokio::io::split(stream);
        let mut reader = BufReader::new(read);
        let mut first = String::new();
        if reader.read_line(&mut first).await? == 0 {
            return Err(ClientError::Closed);
        }
        let hello = match serde_json::from_str::<ServerMessage>(&first) {
            Ok(ServerMessage::Notification(n)) => n,
            // A refusal (`busy`: kilnd is at its connection limit) comes instead of hello.
            Ok(ServerMessage::Response(Response {
                error: Some(err), ..
            })) => return Err(ClientError::Rpc(err)),
            Ok(ServerMessage::Response(_)) => {
                return Err(ClientError::Protocol("a reply instead of hello".into()))
            }
            Err(e) => return Err(ClientError::Protocol(format!("bad hello line: {e}"))),
        };
        if hello.method != "hello" {
            return Err(ClientError::Protocol(format!(
                "expected hello, got {}",
                hello.method
            )));
        }
        let hello: Hello = serde_json::from_value(hello.params)
            .map_err(|e| ClientError::Protocol(format!("bad hello params: {e}")))?;

        let pending: Pending = Arc::default();
        let (note_tx, note_rx) = mpsc::unbounded_channel();
        tokio::spawn(read_loop(reader, pending.clone(), note_tx));
        let client = Client {
            writer: tokio::sync::Mutex::new(write),
            pending,
            next_id: AtomicU64::new(1),
            project,
            hello,
        };
        Ok((client, note_rx))
    }

    /// What the daemon announced when the connection opened.
    pub fn hello(&self) -> &Hello {
        &self.hello
    }

    /// Calls method `M` and waits for its reply, decoded as `M`'s result.
    pub async fn call<M: Method>(&self, params: &M::Params) -> Result<M::Result, ClientError> {
        let (_, result) = self.call_both::<M>(params).await?;
        Ok(result)
    }

    /// [`Client::call`], also returning the result exactly as kilnd sent it (what `--json`
    /// prints).
    pub async fn call_both<M: Method>(
        &self,
        params: &M::Params,
    ) -> Result<(Value, M::Result), ClientError> {
        let params = serde_json::to_value(params)
            .map_err(|e| ClientError::Protocol(format!("{} params: {e}", M::NAME)))?;
        let value = self.call_value(M::NAME, params).await?;
        let result =
            serde_json::from_value(value.clone()).map_err(|source| ClientError::Result {
                method: M::NAME,
                source,
            })?;
        Ok((value, result))
    }

    /// Sends one request by name and returns its raw result (for callers that hold a method
    /// as data, and tests that send what no typed call would).
    pub async fn call_value(&self, method: &str, mut params: Value) -> Result<Value, ClientError> {
        if params.is_null() {
            params = Value::Object(Default::default());
        }
        if let (Some(project), Value::Object(map)) = (&self.project, &mut params) {
            map.entry("project")
                .or_insert_with(|| Value::from(project.clone()));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(id, tx);
        let mut line = serde_json::to_vec(&Request::new(id, method, params))
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        line.push(b'\n');
        {
            let mut w = self.writer.lock().await;
            if let Err(e) = w.write_all(&line).await {
                lock(&self.pending).remove(&id);
                return Err(e.into());
            }
            w.flush().await?;
        }
        let response = rx.await.map_err(|_| ClientError::Closed)?;
        match (response.result, response.error) {
            (_, Some(err)) => Err(ClientError::Rpc(err)),
            (Some(result), None) => Ok(result),
            (None, None) => Ok(Value::Null),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

async fn read_loop(
    mut reader: BufReader<tokio::io::ReadHalf<Stream>>,
    pending: Pending,
    notes: mpsc::UnboundedSender<Notification>,
) {
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if line.len() > MAX_LINE_BYTES * 64 {
            break;
        }
        match serde_json::from_slice::<ServerMessage>(&line) {
            Ok(ServerMessage::Response(r)) => {
                let tx = r.id.as_u64().and_then(|id| lock(&pending).remove(&id));
                if let Some(tx) = tx {
                    let _ = tx.send(r);
                }
            }
            Ok(ServerMessage::Notification(n)) => {
                let _ = notes.send(n);
            }
            Err(_) => continue,
        }
    }
    // Dropping the senders wakes every waiting call with `Closed`.
    lock(&pending).clear();
}
