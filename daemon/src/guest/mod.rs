//! The SSH communicator: ssh2 sessions on blocking threads, pinned host keys, streamed commands and
//! file uploads into a build VM.
//!
//! libssh2 is blocking C code, so every ssh2 call runs on `tokio::task::spawn_blocking`. One
//! session serves one guest; a mutex serializes the operations on it (an `exec` holds it for the
//! whole command, because it switches the session to non-blocking mode to interleave stdout,
//! stderr and cancellation).

pub mod os;
pub mod probe;

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use base64::Engine as _;
use sha2::Digest as _;
use ssh2::Session;
use tokio_util::sync::CancellationToken;

/// How long one TCP connect to the forwarded port may take. slirp accepts at once even while the
/// guest is down, so this only matters when the host itself is overloaded.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Upper bound of one blocking libssh2 call during the handshake and login.
const HANDSHAKE_TIMEOUT_MS: u32 = 10_000;
/// Upper bound of one blocking libssh2 call afterwards (a slow TCG guest can stall for a while).
const CALL_TIMEOUT_MS: u32 = 120_000;
/// A line longer than this is handed out in pieces, so a guest printing without newlines cannot
/// grow the buffer without bound.
const MAX_LINE: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    #[error("pinned host key {key:?} is not an OpenSSH public key line (\"ssh-ed25519 AAAA...\")")]
    BadPinnedKey { key: String },
    #[error("cannot connect to the guest's SSH forward on 127.0.0.1:{port}: {source}")]
    Connect { port: u16, source: io::Error },
    #[error("SSH handshake with 127.0.0.1:{port} failed: {source} (the guest's sshd is not up yet, or the VM is gone)")]
    Handshake { port: u16, source: ssh2::Error },
    #[error("host key mismatch on 127.0.0.1:{port}: the guest presented {got}, the build pinned {expected}; the VM is not the one this build prepared (stale port forward or a base image that ships its own host keys)")]
    HostKeyMismatch {
        port: u16,
        expected: String,
        got: String,
    },
    #[error("SSH login as {user:?} with key {key} failed: {source} (cloud-init has not installed the build key yet, or the image's default user is not {user:?})")]
    Auth {
        user: String,
        key: PathBuf,
        source: ssh2::Error,
    },
    #[error("running {command:?} in the guest failed: {source}")]
    Exec {
        command: String,
        source: ssh2::Error,
    },
    #[error("reading the output of {command:?} from the guest failed: {source} (the connection dropped: did the VM reboot or die?)")]
    Stream { command: String, source: io::Error },
    #[error("{command:?} was killed by signal {signal} in the guest{message}")]
    Signaled {
        command: String,
        signal: String,
        message: String,
    },
    #[error("reading local file {path} for upload failed: {source}")]
    LocalFile { path: PathBuf, source: io::Error },
    #[error("uploading to {remote} in the guest failed: {message}")]
    Upload { remote: String, message: String },
    #[error("canceled")]
    Canceled,
    #[error("the SSH session to 127.0.0.1:{port} was shut down because an abandoned command (canceled, or its connection failed) would not stop; connect again")]
    Closed { port: u16 },
    #[error("the SSH worker thread failed: {0}")]
    Worker(String),
}

/// Which output stream of a guest command a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// A logged-in SSH session to a build VM whose host key matched the pinned one.
#[derive(Clone)]
pub struct Guest {
    inner: Arc<Inner>,
}

struct Inner {
    session: Mutex<Session>,
    /// A second handle on the session's socket, only to wait for readability with poll(2).
    socket: TcpStream,
    /// Set when a canceled command would not end: the socket was shut down to free the session.
    closed: AtomicBool,
    port: u16,
    user: String,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // libssh2_session_free waits for open channels to close; never stall a runtime thread
        // for the full call timeout.
        self.session
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .set_timeout(2_000);
    }
}

impl Inner {
    /// Locks the session for one operation, unless it was shut down.
    fn session(&self) -> Result<MutexGuard<'_, Session>, GuestError> {
        let session = lock(&self.session);
        if self.closed.load(Ordering::SeqCst) {
            return Err(GuestError::Closed { port: self.port });
        }
        Ok(session)
    }
}

impl std::fmt::Debug for Guest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guest")
            .field("port", &self.inner.port)
            .field("closed", &self.inner.closed.load(Ordering::SeqCst))
            .field("user", &self.inner.user)
            .finish_non_exhaustive()
    }
}

/// The key blob of an OpenSSH public key line ("TYPE BASE64 [comment]").
fn key_blob(line: &str) -> Result<Vec<u8>, GuestError> {
    let bad = || GuestError::BadPinnedKey {
        key: line.to_owned(),
    };
    let mut fields = line.split_whitespace();
    let (Some(_kind), Some(b64)) = (fields.next(), fields.next()) else {
        return Err(bad());
    };
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| bad())
}

/// The fingerprint of an OpenSSH public key line, `None` when it is not one.
pub fn key_fingerprint(line: &str) -> Option<String> {
    key_blob(line).ok().map(|b| fingerprint(&b))
}

/// OpenSSH's fingerprint notation, "SHA256:..." as `ssh-keygen -l` prints it.
pub fn fingerprint(blob: &[u8]) -> String {
    let digest = sha2::Sha256::digest(blob);
    format!(
        "SHA256:{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest)
    )
}

// A panic in another operation leaves a session usable or broken; either way the next libssh2
// call reports it, so poisoning carries no extra information.
use crate::sync::lock;

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, GuestError> + Send + 'static,
) -> Result<T, GuestError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| GuestError::Worker(e.to_string()))?
}

impl Guest {
    /// Connects to 127.0.0.1:`port`, checks that the server's host key is exactly
    /// `pinned_host_key` ("ssh-ed25519 AAAA..."), then logs in as `user` with `client_key`.
    pub async fn connect(
        port: u16,
        user: &str,
        client_key: &Path,
        pinned_host_key: &str,
    ) -> Result<Guest, GuestError> {
        let pinned = key_blob(pinned_host_key)?;
        let user = user.to_owned();
        let client_key = client_key.to_owned();
        blocking(move || {
            let (session, socket) = probe::pinned_session(port, &pinned)?;
            session
                .userauth_pubkey_file(&user, None, &client_key, None)
                .map_err(|source| GuestError::Auth {
                    user: user.clone(),
                    key: client_key.clone(),
                    source,
                })?;
            session.set_timeout(CALL_TIMEOUT_MS);
            session.set_keepalive(true, 15);
            Ok(Guest {
                inner: Arc::new(Inner {
                    session: Mutex::new(session),
                    socket,
                    closed: AtomicBool::new(false),
                    port,
                    user,
                }),
            })
        })
        .await
    }

    pub fn port(&self) -> u16 {
        self.inner.port
    }

    pub fn user(&self) -> &str {
        &self.inner.user
    }

    /// Runs `command` through the login user's shell (sshd's `$SHELL -c`) and calls `on_line` for
    /// every line of stdout and stderr as it arrives; returns the exit code. When `cancel` fires
    /// (or this future is dropped) the command's process group gets SIGKILL and the result is
    /// [`GuestError::Canceled`]; if its channel still does not close within 3 s, the session
    /// is shut down and later calls fail with [`GuestError::Closed`]. A lost connection (guest
    /// rebooted or died) is [`GuestError::Stream`] and also closes the session.
    pub async fn exec(
        &self,
        command: &str,
        on_line: impl FnMut(Stream, &str) + Send + 'static,
        cancel: &CancellationToken,
    ) -> Result<i32, GuestError> {
        let token = cancel.child_token();
        let _cancel_on_drop = token.clone().drop_guard();
        let inner = self.inner.clone();
        let command = command.to_owned();
        let mut on_line = on_line;
        blocking(move || {
            let session = inner.session()?;
            if token.is_cancelled() {
                return Err(GuestError::Canceled);
            }
            run_command(&session, &inner, &command, &mut on_line, &token)
        })
        .await
    }

    /// Runs `command` as [`exec`](Self::exec) does, uncancelable, and returns its exit code
    /// with every line it printed (stdout and stderr, in order), for a short command whose
    /// output matters only when it fails.
    pub async fn exec_collect(&self, command: &str) -> Result<(i32, String), GuestError> {
        let output = Arc::new(Mutex::new(Vec::<String>::new()));
        let sink = output.clone();
        let code = self
            .exec(
                command,
                move |_, line| lock(&sink).push(line.to_owned()),
                &CancellationToken::new(),
            )
            .await?;
        let text = lock(&output).join("\n");
        Ok((code, text))
    }

    /// Copies the local file `local` to `remote` in the guest (SFTP) and sets its mode.
    pub async fn upload(&self, local: &Path, remote: &str, mode: i32) -> Result<(), GuestError> {
        let local_err = {
            let path = local.to_owned();
            move |source| GuestError::LocalFile { path, source }
        };
        let mut file = std::fs::File::open(local).map_err(local_err.clone())?;
        self.sftp_write(remote, mode, move |out| {
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                let n = file.read(&mut buf).map_err(local_err.clone())?;
                if n == 0 {
                    return Ok(());
                }
                out.write_all(&buf[..n])?;
            }
        })
        .await
    }

    /// Writes `data` to `remote` in the guest (SFTP) and sets its mode.
    pub async fn upload_bytes(
        &self,
        data: Vec<u8>,
        remote: &str,
        mode: i32,
    ) -> Result<(), GuestError> {
        self.sftp_write(remote, mode, move |out| Ok(out.write_all(&data)?))
            .await
    }

    async fn sftp_write(
        &self,
        remote: &str,
        mode: i32,
        fill: impl FnOnce(&mut ssh2::File) -> Result<(), FillError> + Send + 'static,
    ) -> Result<(), GuestError> {
        let inner = self.inner.clone();
        let remote = remote.to_owned();
        blocking(move || {
            let session = inner.session()?;
            let fail = |message: String| GuestError::Upload {
                remote: remote.clone(),
                message,
            };
            let sftp = session
                .sftp()
                .map_err(|e| fail(format!("cannot start SFTP: {e}")))?;
            let path = Path::new(&remote);
            let mut file = sftp
                .open_mode(
                    path,
                    ssh2::OpenFlags::WRITE | ssh2::OpenFlags::TRUNCATE,
                    mode,
                    ssh2::OpenType::File,
                )
                .map_err(|e| fail(format!("cannot create it: {e}")))?;
            fill(&mut file).map_err(|e| match e {
                FillError::Local(e) => e,
                FillError::Remote(e) => fail(format!("writing: {e}")),
            })?;
            file.close().map_err(|e| fail(format!("closing it: {e}")))?;
            drop(file);
            // open_mode's mode is only used on creation and is filtered by the umask.
            let stat = ssh2::FileStat {
                size: None,
                uid: None,
                gid: None,
                perm: Some(mode as u32),
                atime: None,
                mtime: None,
            };
            sftp.setstat(path, stat)
                .map_err(|e| fail(format!("setting mode {mode:o}: {e}")))?;
            Ok(())
        })
        .await
    }
}

/// Why filling a remote file stopped: the local side (already a [`GuestError`]) or the guest.
enum FillError {
    Local(GuestError),
    Remote(io::Error),
}

impl From<GuestError> for FillError {
    fn from(e: GuestError) -> Self {
        FillError::Local(e)
    }
}

impl From<io::Error> for FillError {
    fn from(e: io::Error) -> Self {
        FillError::Remote(e)
    }
}

/// Splits a byte stream into lines for `on_line`.
struct Lines {
    stream: Stream,
    buf: Vec<u8>,
}

impl Lines {
    fn new(stream: Stream) -> Lines {
        Lines {
            stream,
            buf: Vec::new(),
        }
    }

    fn push(&mut self, data: &[u8], on_line: &mut dyn FnMut(Stream, &str)) {
        self.buf.extend_from_slice(data);
        let mut start = 0;
        while let Some(pos) = self.buf[start..].iter().position(|&b| b == b'\n') {
            let end = start + pos;
            emit(self.stream, &self.buf[start..end], on_line);
            start = end + 1;
        }
        while self.buf.len() - start > MAX_LINE {
            emit(self.stream, &self.buf[start..start + MAX_LINE], on_line);
            start += MAX_LINE;
        }
        self.buf.drain(..start);
    }

    fn finish(&mut self, on_line: &mut dyn FnMut(Stream, &str)) {
        if !self.buf.is_empty() {
            emit(self.stream, &self.buf, on_line);
            self.buf.clear();
        }
    }
}

fn emit(stream: Stream, line: &[u8], on_line: &mut dyn FnMut(Stream, &str)) {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    on_line(stream, &String::from_utf8_lossy(line));
}

fn run_command(
    session: &Session,
    inner: &Inner,
    command: &str,
    on_line: &mut dyn FnMut(Stream, &str),
    cancel: &CancellationToken,
) -> Result<i32, GuestError> {
    let exec_err = |source| GuestError::Exec {
        command: command.to_owned(),
        source,
    };
    session.set_blocking(true);
    let mut channel = session.channel_session().map_err(exec_err)?;
    channel.exec(command).map_err(exec_err)?;

    session.set_blocking(false);
    let pumped = pump(
        session,
        &inner.socket,
        &mut channel,
        command,
        on_line,
        cancel,
    );
    match pumped {
        Ok(()) => {}
        Err(e @ GuestError::Stream { .. }) => {
            // The connection is gone (guest rebooted or died): nothing to kill or close.
            shut_down(inner);
            session.set_blocking(true);
            drop(channel);
            return Err(e);
        }
        Err(e) => {
            abandon(session, inner, channel);
            return Err(e);
        }
    }
    session.set_blocking(true);
    channel.wait_close().map_err(exec_err)?;
    let exit = channel.exit_signal().map_err(exec_err)?;
    if let Some(signal) = exit.exit_signal {
        return Err(GuestError::Signaled {
            command: command.to_owned(),
            signal,
            message: signal_message(exit.error_message),
        });
    }
    channel.exit_status().map_err(exec_err)
}

/// Kills the process groups of every other child of this connection's sshd, i.e. of the
/// command being abandoned (sshd starts each channel's command with setsid, and the session
/// mutex guarantees no other command runs).
/// sudo first: the group may hold root processes (`sudo apt-get ...`), and the build user has
/// passwordless sudo on kiln's images.
const KILL_SIBLINGS: &str = r#"for p in $(ps -o pid= --ppid "$PPID"); do [ "$p" = "$$" ] || sudo -n kill -KILL -- "-$p" 2>/dev/null || kill -KILL -- "-$p" 2>/dev/null; done; true"#;

/// Ends a command that is canceled or whose stream failed, within a few seconds. sshd sends the
/// channel close only once the command has exited, libssh2 cannot free a channel before that
/// close arrives, and Debian's sshd (9.2) refuses SSH `signal` requests. So: kill the command's
/// process group from a second channel, wait for the close, else shut the socket down.
fn abandon(session: &Session, inner: &Inner, mut channel: ssh2::Channel) {
    session.set_timeout(3_000);
    session.set_blocking(true);
    let killed = session.channel_session().and_then(|mut killer| {
        killer.exec(KILL_SIBLINGS)?;
        let mut sink = String::new();
        let _ = killer.read_to_string(&mut sink);
        killer.wait_close()
    });
    if let Err(e) = killed {
        tracing::debug!(
            port = inner.port,
            "killing the abandoned guest command failed: {e}"
        );
    }
    if channel.close().is_err() {
        tracing::warn!(
            port = inner.port,
            "an abandoned guest command did not stop; shutting the SSH session down"
        );
        shut_down(inner);
    }
    drop(channel);
    session.set_timeout(CALL_TIMEOUT_MS);
}

/// Marks the session unusable and shuts its socket down, so libssh2 stops waiting on it.
fn shut_down(inner: &Inner) {
    inner.closed.store(true, Ordering::SeqCst);
    let _ = inner.socket.shutdown(std::net::Shutdown::Both);
}

fn signal_message(message: Option<String>) -> String {
    match message {
        Some(m) if !m.is_empty() => format!(": {m}"),
        _ => String::new(),
    }
}

/// Reads stdout and stderr until the remote end sends EOF; the session is non-blocking here.
fn pump(
    session: &Session,
    socket: &TcpStream,
    channel: &mut ssh2::Channel,
    command: &str,
    on_line: &mut dyn FnMut(Stream, &str),
    cancel: &CancellationToken,
) -> Result<(), GuestError> {
    let mut out = Lines::new(Stream::Stdout);
    let mut err = Lines::new(Stream::Stderr);
    let mut buf = vec![0u8; 32 * 1024];
    let mut last_keepalive = Instant::now();
    loop {
        if cancel.is_cancelled() {
            return Err(GuestError::Canceled);
        }
        let mut progressed = false;
        for (id, lines) in [(0, &mut out), (1, &mut err)] {
            loop {
                match channel.stream(id).read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        lines.push(&buf[..n], on_line);
                        progressed = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(source) => {
                        return Err(GuestError::Stream {
                            command: command.to_owned(),
                            source,
                        })
                    }
                }
            }
        }
        if channel.eof() {
            break;
        }
        if last_keepalive.elapsed() > Duration::from_secs(15) {
            // Also makes a dead peer surface as a read error instead of silence.
            let _ = session.keepalive_send();
            last_keepalive = Instant::now();
        }
        if !progressed {
            wait_socket(session, socket);
        }
    }
    out.finish(on_line);
    err.finish(on_line);
    Ok(())
}

/// Sleeps until the socket is ready in the direction libssh2 is waiting for, at most 50 ms (a
/// packet for the other stream may already sit in libssh2's buffer, and cancel must be seen).
fn wait_socket(session: &Session, socket: &TcpStream) {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let dirs = session.block_directions();
    let mut flags = PollFlags::IN;
    if matches!(
        dirs,
        ssh2::BlockDirections::Outbound | ssh2::BlockDirections::Both
    ) {
        flags |= PollFlags::OUT;
    }
    let mut fds = [PollFd::new(socket, flags)];
    let timeout = Timespec {
        tv_sec: 0,
        tv_nsec: 50_000_000,
    };
    if poll(&mut fds, Some(&timeout)).is_err() {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Where a [`Shell`] sends each line a command prints.
pub type OnLine = Box<dyn for<'a> FnMut(Stream, &'a str) + Send>;

/// A shell in a guest: what a build's steps, generalize and the boot test run on. [`Guest`] (SSH)
/// is the one kilnd uses; the queue's tests bring a scripted one.
#[async_trait::async_trait]
pub trait Shell: Send + Sync {
    /// Runs `command` like [`Guest::exec`]: every output line to `on_line`, the exit code back,
    /// [`GuestError::Canceled`] when `cancel` fires.
    async fn run(
        &self,
        command: &str,
        on_line: OnLine,
        cancel: &CancellationToken,
    ) -> Result<i32, GuestError>;

    /// Writes `data` to `remote` with `mode`, like [`Guest::upload_bytes`].
    async fn write_file(&self, data: Vec<u8>, remote: &str, mode: i32) -> Result<(), GuestError>;
}

#[async_trait::async_trait]
impl Shell for Guest {
    async fn run(
        &self,
        command: &str,
        on_line: OnLine,
        cancel: &CancellationToken,
    ) -> Result<i32, GuestError> {
        self.exec(command, on_line, cancel).await
    }

    async fn write_file(&self, data: Vec<u8>, remote: &str, mode: i32) -> Result<(), GuestError> {
        self.upload_bytes(data, remote, mode).await
    }
}

/// `s` as one word for a POSIX shell: bare when it holds only characters no shell treats
/// specially, else single-quoted. Every command kilnd builds for a guest or a person uses it.
pub fn shell_quote(s: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "/._-+=:,@%".contains(c);
    if !s.is_empty() && s.chars().all(safe) {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_lines(chunks: &[&str], expected: &[&str]) {
        let mut got = Vec::new();
        let mut lines = Lines::new(Stream::Stdout);
        let mut sink = |_: Stream, l: &str| got.push(l.to_owned());
        for chunk in chunks {
            lines.push(chunk.as_bytes(), &mut sink);
        }
        lines.finish(&mut sink);
        assert_eq!(got, expected);
    }

    #[test]
    fn lines_split_across_chunks() {
        check_lines(&["a\nb", "c\r\n", "\nd"], &["a", "bc", "", "d"]);
        check_lines(&["", "x"], &["x"]);
        check_lines(&["\n\n"], &["", ""]);
    }

    #[test]
    fn pinned_key_parsing() {
        assert!(key_blob("ssh-ed25519").is_err());
        assert!(key_blob("ssh-ed25519 !!!").is_err());
        assert_eq!(
            key_blob("ssh-ed25519 AAAA kiln-build").ok(),
            Some(vec![0, 0, 0])
        );
    }
}
