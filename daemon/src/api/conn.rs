//! One client connection and what it may cost: admission against `max_connections`, the `hello`
//! line, bounded line reading (length, time to finish a started line, one budget for all
//! connections' partial lines), requests and waits in flight within per-connection slots, and
//! replies funnelled through one writer so a client that hangs up harms nothing. Every limit
//! answers with an error line (`busy`, `too_large`), never with silence.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use interprocess::local_socket::tokio::{prelude::*, Stream};
use kiln_shared::methods::Name;
use kiln_shared::protocol::{
    Call, ErrorKind, Hello, Id, Incoming, Notification, Request, Response, RpcError,
    MAX_LINE_BYTES, PROTOCOL_VERSION,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::builds::{FollowUp, Sink, WAITS};
use super::dispatch::Daemon;
use crate::access::Peer;

/// Requests one connection may have running at once; waits and streams hold no slot here.
pub const MAX_IN_FLIGHT: usize = 64;
/// `build.wait` calls one connection may have pending at once.
pub const MAX_WAITS: usize = 64;
/// Connections root and the admin group keep beyond `max_connections`.
pub const PRIVILEGED_RESERVE: usize = 8;
/// A line must be finished this long after its first byte arrived.
pub const LINE_DEADLINE: Duration = Duration::from_secs(10);
/// What all connections' unfinished lines may hold together beyond [`LINE_ALLOWANCE`] each, in
/// bytes.
pub const PARTIAL_LINE_BUDGET: usize = 64 * MAX_LINE_BYTES;
/// The part of each connection's line buffer that needs no budget: ordinary requests never
/// wait on, or fail for, what other clients hold (the connection limit bounds this part).
pub const LINE_ALLOWANCE: usize = 64 * 1024;
/// Each connection's read buffer (a line longer than this grows in its budgeted line buffer).
const READ_BUFFER: usize = 8 * 1024;
/// How long a refused client gets to take its error line.
const REFUSAL_WRITE: Duration = Duration::from_secs(1);

/// What all connections share: how many are open, and how many bytes their partial lines hold.
pub struct Connections {
    max: usize,
    open: AtomicUsize,
    partial: AtomicUsize,
    refused: AtomicUsize,
}

impl Connections {
    /// At most `max` connections for everyone, and [`PRIVILEGED_RESERVE`] more for root and the
    /// admin group.
    pub fn new(max: usize) -> Connections {
        Connections {
            max,
            open: AtomicUsize::new(0),
            partial: AtomicUsize::new(0),
            refused: AtomicUsize::new(0),
        }
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// Counts one more connection, unless that would pass the limit for this caller.
    fn admit(self: &Arc<Self>, privileged: bool) -> Option<Admitted> {
        let limit = if privileged {
            self.max + PRIVILEGED_RESERVE
        } else {
            self.max
        };
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()
            .map(|_| Admitted(self.clone()))
    }

    /// Takes `n` bytes of the partial-line budget; false when it does not have them.
    fn take_partial(&self, n: usize) -> bool {
        self.partial
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(n).filter(|&t| t <= PARTIAL_LINE_BUDGET)
            })
            .is_ok()
    }

    fn give_back_partial(&self, n: usize) {
        self.partial.fetch_sub(n, Ordering::AcqRel);
    }
}

/// One admitted connection; leaving frees its place.
struct Admitted(Arc<Connections>);

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What a reader task hands to the writer: a finished line, or the order to close.
enum Outgoing {
    Line(Vec<u8>),
    Close,
}

/// Serves one connection until the client hangs up or breaks a limit that closes it.
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
    let privileged = crate::catalog::is_admin(&peer, daemon.config.file.admin_group.as_deref());
    let Some(_admitted) = daemon.connections.admit(privileged) else {
        let refused = daemon.connections.refused.fetch_add(1, Ordering::Relaxed) + 1;
        // A flood of clients logs the 1st, 2nd, 4th, 8th... refusal, not every one.
        if refused.is_power_of_two() {
            tracing::warn!(
                uid = peer.user.uid,
                refused,
                "connection refused: {} clients connected, the limit",
                daemon.connections.max()
            );
        }
        refuse(stream, daemon.connections.max()).await;
        return;
    };
    tracing::debug!(uid = peer.user.uid, pid = ?peer.pid, "client connected");
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

    let hello = Notification::of(&Hello {
        server: "kilnd".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        protocol: PROTOCOL_VERSION,
    });
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
            closed: CancellationToken::new(),
        }
    };
    let conn = Conn {
        daemon: daemon.clone(),
        peer: peer.clone(),
        sink: sink.clone(),
        tx: tx.clone(),
        in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        waits: Arc::new(Semaphore::new(MAX_WAITS)),
    };
    let mut reader = BufReader::with_capacity(READ_BUFFER, read);
    let mut line = LineBuf::new(&daemon.connections);
    loop {
        let refusal = match read_line(&mut reader, &mut line).await {
            Ok(LineRead::Line) => None,
            Ok(LineRead::Eof) | Err(_) => break,
            Ok(LineRead::TooLong) => Some(RpcError::new(
                ErrorKind::TooLarge,
                format!("line longer than {MAX_LINE_BYTES} bytes; closing the connection"),
            )),
            Ok(LineRead::TooSlow) => Some(RpcError::new(
                ErrorKind::Busy,
                format!(
                    "a line was not finished within {} s of its first byte; closing the \
                     connection (send each request as one whole line)",
                    LINE_DEADLINE.as_secs()
                ),
            )),
            Ok(LineRead::OverBudget) => Some(RpcError::new(
                ErrorKind::Busy,
                format!(
                    "kilnd already holds {} MiB of unfinished lines from its clients, the limit; \
                     closing this connection: retry later",
                    PARTIAL_LINE_BUDGET / (1024 * 1024)
                ),
            )),
        };
        if let Some(err) = refusal {
            tracing::debug!(uid = peer.user.uid, "closing a connection: {}", err.message);
            let _ = tx
                .send(Outgoing::Line(to_line(&Response::err(Id::null(), err))))
                .await;
            let _ = tx.send(Outgoing::Close).await;
            break;
        }
        let bytes = line.take();
        if bytes.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match Incoming::parse(&bytes) {
            Incoming::Reply(r) => {
                let _ = tx.send(Outgoing::Line(to_line(&r))).await;
            }
            Incoming::One(call) => conn.one(call).await,
            Incoming::Batch(calls) => conn.batch(calls),
        }
    }
    // Subscriptions and waits end now, not at their next event; replies to requests already
    // running still go out (a client may half-close after its last request).
    sink.closed.cancel();
    drop(conn);
    drop(sink);
    drop(tx);
    let _ = writer.await;
    tracing::debug!(uid = peer.user.uid, "client disconnected");
}

/// Tells a client over the connection limit why, in one error line, and closes.
async fn refuse(mut stream: Stream, max: usize) {
    let err = RpcError::new(
        ErrorKind::Busy,
        format!(
            "kilnd is serving its maximum of {max} connections (max_connections in kilnd.toml; \
             root and the admin group keep {PRIVILEGED_RESERVE} more); close one or retry later"
        ),
    );
    let line = to_line(&Response::err(Id::null(), err));
    let _ = tokio::time::timeout(REFUSAL_WRITE, async {
        let _ = stream.write_all(&line).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// What the calls of one connection run with.
struct Conn {
    daemon: Arc<Daemon>,
    peer: Peer,
    sink: Sink,
    tx: mpsc::Sender<Outgoing>,
    in_flight: Arc<Semaphore>,
    waits: Arc<Semaphore>,
}

/// A request holding its slot, or the reply a call gets without running.
enum Admission {
    Run(Request, OwnedSemaphorePermit),
    Answer(Option<Response>),
}

impl Conn {
    /// Gives `call` a slot: a wait slot for [`WAITS`], a request slot for the rest; `busy`
    /// when this connection has none left (a notification then gets nothing, as always).
    fn admit(&self, call: Call) -> Admission {
        let request = match call {
            Call::Invalid(r) => return Admission::Answer(Some(r)),
            Call::Request(r) => r,
        };
        let waits = Name::parse(&request.method).is_some_and(|m| WAITS.contains(&m));
        let (slots, max, what) = if waits {
            (&self.waits, MAX_WAITS, "waits (build.wait)")
        } else {
            (&self.in_flight, MAX_IN_FLIGHT, "requests")
        };
        match slots.clone().try_acquire_owned() {
            Ok(permit) => Admission::Run(request, permit),
            Err(_) => Admission::Answer(request.id.map(|id| {
                let message = format!(
                    "this connection has {max} {what} in flight, the limit; read their replies \
                     before sending more, or use another connection"
                );
                Response::err(id, RpcError::new(ErrorKind::Busy, message))
            })),
        }
    }

    /// Runs `request` for this connection.
    fn run(
        &self,
        request: Request,
    ) -> impl std::future::Future<Output = (Option<Response>, Option<FollowUp>)> + Send + 'static
    {
        let (daemon, peer, sink) = (self.daemon.clone(), self.peer.clone(), self.sink.clone());
        async move { daemon.handle(&peer, request, &sink).await }
    }

    /// A single request: its reply, then its stream if it opened one. The slot is held until
    /// the reply is handed to the writer, so a client that reads nothing runs out of slots.
    async fn one(&self, call: Call) {
        match self.admit(call) {
            Admission::Answer(reply) => {
                if let Some(r) = reply {
                    let _ = self.tx.send(Outgoing::Line(to_line(&r))).await;
                }
            }
            Admission::Run(request, permit) => {
                let (run, tx) = (self.run(request), self.tx.clone());
                tokio::spawn(async move {
                    let (reply, follow_up) = run.await;
                    if let Some(r) = reply {
                        // The client may be gone; that is its business.
                        let _ = tx.send(Outgoing::Line(to_line(&r))).await;
                    }
                    drop(permit);
                    start(follow_up);
                });
            }
        }
    }

    /// A batch: its members run concurrently, each in its own slot; their replies go out as one
    /// array (none when every member was a notification), then the streams they opened.
    fn batch(&self, calls: Vec<Call>) {
        let mut replies = Vec::new();
        let mut jobs = JoinSet::new();
        for call in calls {
            match self.admit(call) {
                Admission::Answer(reply) => replies.extend(reply),
                Admission::Run(request, permit) => {
                    let run = self.run(request);
                    jobs.spawn(async move { (run.await, permit) });
                }
            }
        }
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let mut follow_ups = Vec::new();
            let mut permits = Vec::new();
            while let Some(done) = jobs.join_next().await {
                if let Ok(((reply, follow_up), permit)) = done {
                    replies.extend(reply);
                    follow_ups.extend(follow_up);
                    permits.push(permit);
                }
            }
            if !replies.is_empty() {
                let _ = tx.send(Outgoing::Line(to_line(&replies))).await;
            }
            drop(permits);
            for f in follow_ups {
                start(Some(f));
            }
        });
    }
}

/// Starts a stream as its own small task (the request's task, sized for every method, ends).
fn start(follow_up: Option<FollowUp>) {
    if let Some(f) = follow_up {
        tokio::spawn(f);
    }
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
    /// Not finished within [`LINE_DEADLINE`] of its first byte.
    TooSlow,
    /// The partial-line budget shared by all connections is used up.
    OverBudget,
}

/// The line being read on one connection, and the share of [`PARTIAL_LINE_BUDGET`] its buffer
/// holds (its capacity beyond [`LINE_ALLOWANCE`]), given back when the line is taken or the
/// connection ends.
struct LineBuf<'a> {
    bytes: Vec<u8>,
    held: usize,
    connections: &'a Connections,
}

impl<'a> LineBuf<'a> {
    fn new(connections: &'a Connections) -> LineBuf<'a> {
        LineBuf {
            bytes: Vec::new(),
            held: 0,
            connections,
        }
    }

    /// Appends `data`, growing the buffer only with budget; false when there is none.
    fn extend(&mut self, data: &[u8]) -> bool {
        let need = self.bytes.len() + data.len();
        if need > self.bytes.capacity() {
            let target = need.max(self.bytes.capacity() * 2).min(MAX_LINE_BYTES);
            let target = target.max(need);
            let charge = |capacity: usize| capacity.saturating_sub(LINE_ALLOWANCE);
            let wanted = charge(target);
            if wanted > self.held {
                if !self.connections.take_partial(wanted - self.held) {
                    return false;
                }
                self.held = wanted;
            }
            self.bytes.reserve_exact(target - self.bytes.len());
            let actual = charge(self.bytes.capacity());
            if actual > self.held {
                // The allocator's rounding: tiny, counted all the same.
                self.connections
                    .partial
                    .fetch_add(actual - self.held, Ordering::AcqRel);
                self.held = actual;
            }
        }
        self.bytes.extend_from_slice(data);
        true
    }

    /// The finished line; its budget is free again.
    fn take(&mut self) -> Vec<u8> {
        self.connections.give_back_partial(self.held);
        self.held = 0;
        std::mem::take(&mut self.bytes)
    }
}

impl Drop for LineBuf<'_> {
    fn drop(&mut self) {
        self.connections.give_back_partial(self.held);
    }
}

/// Reads up to and excluding `\n` into `line`: at most `MAX_LINE_BYTES`, finished within
/// [`LINE_DEADLINE`] once started, and only while the partial-line budget lasts.
async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(
    reader: &mut R,
    line: &mut LineBuf<'_>,
) -> std::io::Result<LineRead> {
    let mut deadline: Option<Instant> = None;
    loop {
        let buf = match deadline {
            None => reader.fill_buf().await?,
            Some(at) => match tokio::time::timeout_at(at, reader.fill_buf()).await {
                Ok(read) => read?,
                Err(_) => return Ok(LineRead::TooSlow),
            },
        };
        if buf.is_empty() {
            return Ok(if line.bytes.is_empty() {
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
        if line.bytes.len() + content > MAX_LINE_BYTES {
            return Ok(LineRead::TooLong);
        }
        if !line.extend(&buf[..content]) {
            return Ok(LineRead::OverBudget);
        }
        reader.consume(take);
        if done {
            return Ok(LineRead::Line);
        }
        deadline.get_or_insert_with(|| Instant::now() + LINE_DEADLINE);
    }
}
