//! The `build.*` methods, and the log streams `build.logs` opens on a connection.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use kiln_shared::build::{
    BuildIdParams, BuildList, BuildListParams, BuildLogsParams, BuildReply, BuildStartParams,
    BuildState, LogLine, SubReply,
};
use kiln_shared::methods::{Empty, Name, Notice};
use kiln_shared::protocol::{ErrorKind, LogEnd, LogNote, Notification, RpcError};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use super::dispatch::Daemon;
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
pub const WAITS: &[Name] = &[Name::BuildWait];

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
    pub(super) async fn note<N: Notice>(&self, params: &N) -> bool {
        (self.send)(Notification::of(params)).await
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
    pub(super) fn unsubscribe(&self, p: SubReply, what: &str) -> Result<Empty, RpcError> {
        match lock(&self.subs).remove(&p.sub) {
            Some(token) => {
                token.cancel();
                Ok(Empty {})
            }
            None => Err(RpcError::new(
                ErrorKind::NotFound,
                format!(
                    "no open {what} {} on this connection (it ended, or was never opened here)",
                    p.sub
                ),
            )),
        }
    }
}

/// `build.start`: queues a build of the caller's template.
pub async fn start(
    daemon: &Daemon,
    peer: &Peer,
    project: &str,
    p: BuildStartParams,
) -> Result<BuildReply, RpcError> {
    let build = daemon.queue.submit(project, peer.user.clone(), p).await?;
    Ok(BuildReply { build })
}

pub fn get(daemon: &Daemon, project: &str, p: BuildIdParams) -> Result<BuildReply, RpcError> {
    let build = daemon.queue.get(project, p.id)?;
    Ok(BuildReply { build })
}

pub fn list(daemon: &Daemon, project: &str, p: BuildListParams) -> Result<BuildList, RpcError> {
    let builds = daemon.queue.list(project, &p)?;
    Ok(BuildList { builds })
}

pub async fn cancel(
    daemon: &Daemon,
    project: &str,
    p: BuildIdParams,
) -> Result<BuildReply, RpcError> {
    let build = daemon.queue.cancel(project, p.id).await?;
    Ok(BuildReply { build })
}

/// `build.wait`: the build once it has ended, unless the connection closes first.
pub async fn wait(
    daemon: &Daemon,
    project: &str,
    p: BuildIdParams,
    sink: &Sink,
) -> Result<BuildReply, RpcError> {
    tokio::select! {
        r = daemon.queue.wait(project, p.id) => Ok(BuildReply { build: r? }),
        // Nobody is left to tell.
        () = sink.closed.cancelled() => Err(RpcError::new(
            ErrorKind::Unavailable,
            "the connection closed while waiting",
        )),
    }
}

/// `build.logs`: opens a log stream; its lines go out once the reply naming it has.
pub fn logs(
    daemon: &Daemon,
    project: &str,
    p: BuildLogsParams,
    sink: &Sink,
    follow_up: &mut Option<FollowUp>,
) -> Result<SubReply, RpcError> {
    let queue = daemon.queue.clone();
    let logs = daemon.logs.clone();
    queue.get(project, p.id)?;
    let (sub, token) = sink.open_sub()?;
    let sink = sink.clone();
    *follow_up = Some(Box::pin(async move {
        stream_logs(queue, logs, p, sub, sink.clone(), token).await;
        sink.closed(sub);
    }));
    Ok(SubReply { sub })
}

use crate::logs::Logs;
use crate::sync::lock;

fn state_of(queue: &Queue, id: u64) -> Option<BuildState> {
    queue.store_build_state(id)
}

/// Sends a build's log (or serial console) from `from_line`, then, with `follow`, every new line
/// until the build ends; then `build.log.end`. Stops quietly when the client goes away; when
/// `stop` fires (`build.logs.unsubscribe`) it ends with `build.log.end` saying `unsubscribed`.
async fn stream_logs(
    queue: Arc<Queue>,
    logs: Arc<Logs>,
    p: BuildLogsParams,
    sub: u64,
    sink: Sink,
    stop: CancellationToken,
) {
    let mut next = p.from_line.unwrap_or(0);
    let id = p.id;
    let streamed = async {
        send_logs(&queue, &logs, &p, sub, &sink, &mut next).await;
    };
    let unsubscribed = tokio::select! {
        () = streamed => false,
        () = stop.cancelled() => true,
    };
    let end = LogEnd {
        sub,
        state: state_of(&queue, id),
        lines: next,
        unsubscribed,
    };
    let _ = sink.note(&end).await;
}

/// The lines of [`stream_logs`]; `next` is the sequence number of the next line to send.
async fn send_logs(
    queue: &Arc<Queue>,
    logs: &Logs,
    p: &BuildLogsParams,
    sub: u64,
    sink: &Sink,
    next: &mut u64,
) {
    let queue = queue.clone();
    let id = p.id;
    macro_rules! send {
        ($line:expr) => {{
            let line: &LogLine = $line;
            if line.seq >= *next {
                let note = LogNote {
                    sub,
                    line: line.clone(),
                };
                if !sink.note(&note).await {
                    return;
                }
                *next = line.seq + 1;
            }
        }};
    }
    if p.serial {
        let live = || state_of(&queue, id).is_some_and(|s| !s.is_terminal());
        send_text(|| queue.serial_path(id), live, p.follow, sub, sink, next).await;
    } else if p.follow {
        let mut changes = queue.changes();
        loop {
            // Subscribe before reading the file, so no line falls between the two.
            let rx = logs.subscribe(id);
            for line in logs.read_from(id, *next) {
                send!(&line);
            }
            if let Some(mut rx) = rx {
                loop {
                    match rx.recv().await {
                        Ok(line) => send!(&line),
                        // Too slow for the live channel: catch up from the file.
                        Err(RecvError::Lagged(_)) => {
                            for line in logs.read_from(id, *next) {
                                send!(&line);
                            }
                        }
                        Err(RecvError::Closed) => break,
                    }
                }
                for line in logs.read_from(id, *next) {
                    send!(&line);
                }
                break;
            }
            if state_of(&queue, id).is_none_or(BuildState::is_terminal) {
                for line in logs.read_from(id, *next) {
                    send!(&line);
                }
                break;
            }
            // Queued: wait for the build to start.
            let _ = tokio::time::timeout(Duration::from_secs(1), changes.recv()).await;
        }
    } else {
        for line in logs.read_from(id, *next) {
            send!(&line);
        }
    }
}

/// Sends the lines of the text file `path()` from `next` as `build.log` notes; with `follow`,
/// also what is appended while `live()` holds (polled, for a console file another process
/// writes).
async fn send_text(
    path: impl Fn() -> std::path::PathBuf,
    live: impl Fn() -> bool,
    follow: bool,
    sub: u64,
    sink: &Sink,
    next: &mut u64,
) {
    loop {
        let done = !live();
        for line in crate::logs::read_text_lines(&path(), *next) {
            if line.seq < *next {
                continue;
            }
            let seq = line.seq;
            if !sink.note(&LogNote { sub, line }).await {
                return;
            }
            *next = seq + 1;
        }
        if done || !follow {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A subscription streaming the text file `path` (an instance's console): its lines as
/// `build.log` notes, following while `live()` with `follow`, then `build.log.end`.
pub fn stream_file(
    path: std::path::PathBuf,
    live: Arc<dyn Fn() -> bool + Send + Sync>,
    follow: bool,
    sink: &Sink,
    follow_up: &mut Option<FollowUp>,
) -> Result<SubReply, RpcError> {
    let (sub, stop) = sink.open_sub()?;
    let sink = sink.clone();
    *follow_up = Some(Box::pin(async move {
        let mut next = 0;
        let streamed = send_text(|| path.clone(), || live(), follow, sub, &sink, &mut next);
        let unsubscribed = tokio::select! {
            () = streamed => false,
            () = stop.cancelled() => true,
        };
        let end = LogEnd {
            sub,
            state: None,
            lines: next,
            unsubscribed,
        };
        let _ = sink.note(&end).await;
        sink.closed(sub);
    }));
    Ok(SubReply { sub })
}
