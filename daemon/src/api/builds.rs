//! `build.*` methods, and the log streams `build.logs` opens on a connection.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use kiln_shared::build::{
    BuildIdParams, BuildList, BuildListParams, BuildLogsParams, BuildReply, BuildStartParams,
    BuildState, LogLine, SubReply,
};
use kiln_shared::protocol::{ErrorKind, Notification, RpcError};
use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use super::dispatch::{params, to_value, Daemon};
use crate::access::Peer;
use crate::queue::Queue;

/// Work to start once the reply has been written: it sends notifications through `Sink`.
pub type FollowUp = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Sends one notification; resolves to false once the client is gone.
pub type SendNote =
    dyn Fn(Notification) -> Pin<Box<dyn Future<Output = bool> + Send>> + Send + Sync;

/// Subscriptions (`events.subscribe`, `build.logs`) one connection may have open at once.
pub const MAX_SUBSCRIPTIONS: usize = 64;

/// Methods that wait for something else to happen (a build to end): they take one of a
/// connection's wait slots instead of a request slot, so waits never starve other requests.
pub const WAITS: &[&str] = &["build.wait"];

/// Where a connection's notifications go.
#[derive(Clone)]
pub struct Sink {
    pub send: Arc<SendNote>,
    pub next_sub: Arc<std::sync::atomic::AtomicU64>,
    /// The connection's open subscriptions, so `*.unsubscribe` can end one.
    pub subs: Arc<std::sync::Mutex<HashMap<u64, CancellationToken>>>,
    /// Cancelled the moment the connection closes: every subscription and wait on it ends then
    /// (each subscription's token is a child of this one).
    pub closed: CancellationToken,
}

impl Sink {
    async fn note(&self, method: &str, params: Value) -> bool {
        (self.send)(Notification::new(method, params)).await
    }

    /// Opens a subscription on this connection: its number, and the token that ends it (when
    /// unsubscribed or when the connection closes). `busy` past [`MAX_SUBSCRIPTIONS`].
    pub(super) fn open_sub(&self) -> Result<(u64, CancellationToken), RpcError> {
        let mut subs = lock(&self.subs);
        if subs.len() >= MAX_SUBSCRIPTIONS {
            return Err(RpcError::new(
                ErrorKind::Busy,
                format!(
                    "this connection has {MAX_SUBSCRIPTIONS} subscriptions open, the limit; end \
                     one with events.unsubscribe or build.logs.unsubscribe, or use another connection"
                ),
            ));
        }
        let sub = self
            .next_sub
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let token = self.closed.child_token();
        subs.insert(sub, token.clone());
        Ok((sub, token))
    }

    /// Forgets subscription `sub` once its stream has ended.
    pub(super) fn closed(&self, sub: u64) {
        lock(&self.subs).remove(&sub);
    }

    /// `*.unsubscribe`: ends subscription `p.sub` (`what` names it in the error).
    pub(super) fn unsubscribe(
        &self,
        method: &str,
        p: &Value,
        what: &str,
    ) -> Result<Value, RpcError> {
        let s: SubReply = params(method, p)?;
        match lock(&self.subs).remove(&s.sub) {
            Some(token) => {
                token.cancel();
                Ok(json!({}))
            }
            None => Err(RpcError::new(
                ErrorKind::NotFound,
                format!(
                    "no open {what} {} on this connection (it ended, or was never opened here)",
                    s.sub
                ),
            )),
        }
    }
}

/// Runs a `build.*` method; `None` when `method` is not one.
pub async fn call(
    daemon: &Daemon,
    peer: &Peer,
    project: &str,
    method: &str,
    p: &Value,
    sink: &Sink,
    follow_up: &mut Option<FollowUp>,
) -> Option<Result<Value, RpcError>> {
    let queue = daemon.queue.clone();
    let r = match method {
        "build.start" => match params::<BuildStartParams>(method, p) {
            Ok(sp) => queue
                .submit(
                    project,
                    crate::store::StartedBy {
                        uid: peer.uid,
                        gid: peer.gid,
                        gids: peer.gids.clone(),
                    },
                    sp,
                )
                .await
                .and_then(|build| to_value(BuildReply { build })),
            Err(e) => Err(e),
        },
        "build.get" => params::<BuildIdParams>(method, p)
            .and_then(|ip| queue.get(project, ip.id))
            .and_then(|build| to_value(BuildReply { build })),
        "build.list" => params::<BuildListParams>(method, p)
            .and_then(|lp| queue.list(project, &lp))
            .and_then(|builds| to_value(BuildList { builds })),
        "build.cancel" => match params::<BuildIdParams>(method, p) {
            Ok(ip) => queue
                .cancel(project, ip.id)
                .await
                .and_then(|build| to_value(BuildReply { build })),
            Err(e) => Err(e),
        },
        "build.wait" => match params::<BuildIdParams>(method, p) {
            Ok(ip) => tokio::select! {
                r = queue.wait(project, ip.id) => r.and_then(|build| to_value(BuildReply { build })),
                // Nobody is left to tell.
                () = sink.closed.cancelled() => Err(RpcError::new(
                    ErrorKind::Unavailable,
                    "the connection closed while waiting",
                )),
            },
            Err(e) => Err(e),
        },
        "build.logs" => match params::<BuildLogsParams>(method, p) {
            Ok(lp) => match queue.get(project, lp.id).and_then(|_| sink.open_sub()) {
                Ok((sub, token)) => {
                    let sink = sink.clone();
                    *follow_up = Some(Box::pin(async move {
                        stream_logs(queue, lp, sub, sink.clone(), token).await;
                        sink.closed(sub);
                    }));
                    to_value(SubReply { sub })
                }
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        },
        "build.logs.unsubscribe" => sink.unsubscribe(method, p, "log stream"),
        _ => return None,
    };
    Some(r)
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn log_params(sub: u64, line: &LogLine) -> Value {
    let mut v = serde_json::to_value(line).unwrap_or_default();
    if let Value::Object(m) = &mut v {
        m.insert("sub".into(), json!(sub));
    }
    v
}

fn state_of(queue: &Queue, id: u64) -> Option<BuildState> {
    queue.store_build_state(id)
}

/// Sends a build's log (or serial console) from `from_line`, then, with `follow`, every new line
/// until the build ends; then `build.log.end`. Stops quietly when the client goes away; when
/// `stop` fires (`build.logs.unsubscribe`) it ends with `build.log.end` saying `unsubscribed`.
async fn stream_logs(
    queue: Arc<Queue>,
    p: BuildLogsParams,
    sub: u64,
    sink: Sink,
    stop: CancellationToken,
) {
    let mut next = p.from_line.unwrap_or(0);
    let id = p.id;
    let streamed = async {
        send_logs(&queue, &p, sub, &sink, &mut next).await;
    };
    let unsubscribed = tokio::select! {
        () = streamed => false,
        () = stop.cancelled() => true,
    };
    let state = state_of(&queue, id).map(|s| s.as_str());
    let _ = sink
        .note(
            "build.log.end",
            json!({"sub": sub, "state": state, "lines": next, "unsubscribed": unsubscribed}),
        )
        .await;
}

/// The lines of [`stream_logs`]; `next` is the sequence number of the next line to send.
async fn send_logs(queue: &Arc<Queue>, p: &BuildLogsParams, sub: u64, sink: &Sink, next: &mut u64) {
    let queue = queue.clone();
    let id = p.id;
    macro_rules! send {
        ($line:expr) => {{
            let line: &LogLine = $line;
            if line.seq >= *next {
                if !sink.note("build.log", log_params(sub, line)).await {
                    return;
                }
                *next = line.seq + 1;
            }
        }};
    }
    if p.serial {
        loop {
            let done = state_of(&queue, id).is_none_or(BuildState::is_terminal);
            for line in crate::logs::read_text_lines(&queue.serial_path(id), *next) {
                send!(&line);
            }
            if done || !p.follow {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    } else if p.follow {
        let mut changes = queue.changes();
        loop {
            // Subscribe before reading the file, so no line falls between the two.
            let rx = queue.logs.subscribe(id);
            for line in queue.logs.read_from(id, *next) {
                send!(&line);
            }
            if let Some(mut rx) = rx {
                loop {
                    match rx.recv().await {
                        Ok(line) => send!(&line),
                        // Too slow for the live channel: catch up from the file.
                        Err(RecvError::Lagged(_)) => {
                            for line in queue.logs.read_from(id, *next) {
                                send!(&line);
                            }
                        }
                        Err(RecvError::Closed) => break,
                    }
                }
                for line in queue.logs.read_from(id, *next) {
                    send!(&line);
                }
                break;
            }
            if state_of(&queue, id).is_none_or(BuildState::is_terminal) {
                for line in queue.logs.read_from(id, *next) {
                    send!(&line);
                }
                break;
            }
            // Queued: wait for the build to start.
            let _ = tokio::time::timeout(Duration::from_secs(1), changes.recv()).await;
        }
    } else {
        for line in queue.logs.read_from(id, *next) {
            send!(&line);
        }
    }
}
