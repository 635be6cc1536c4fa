//! The dashboard's imperative shell: the terminal (raw mode, alternate screen, restored on exit and
//! on panic), the connection to kilnd (kept up with backoff), and one loop that turns key presses,
//! replies, notifications and a 1 s tick into `app::update` calls and performs their effects,
//! including handing the terminal to `$EDITOR` or to a login to a VM (`kiln instance ssh`, a kept
//! build VM's attach command) and taking it back. All state and decisions live in `crate::app`;
//! all drawing in `crate::views`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossterm::event::{Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use kiln_shared::client::{Client, ClientError};
use kiln_shared::methods::Name;
use ratatui::backend::CrosstermBackend;
use ratatui::Terminal;
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};

use crate::app::attach::Attach;
use crate::app::form::EditWhat;
use crate::app::keymap::Key;
use crate::app::{update, Action, App, CallError, Effect, Note, Request};
use crate::cli::{editor, Settings};

/// How long a request may take before the dashboard gives up on its reply (but see `timeout`).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// The reconnect backoff: from the first to the longest wait between attempts.
const BACKOFF_FIRST: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// The dashboard's terminal: crossterm on a buffered stdout, flushed once per frame.
type Term = Terminal<CrosstermBackend<std::io::BufWriter<std::io::Stdout>>>;
/// Bytes a frame may take before the buffer writes early (a full 250x80 redraw fits).
const FRAME_BUFFER: usize = 256 * 1024;
/// Actions applied between two frames at most (a burst of log lines draws once, not per line).
const ACTIONS_PER_FRAME: usize = 2_000;
/// At most 60 frames a second: a chatty log redraws when the eye can tell, and the terminal
/// (often a remote one) is not flooded. A key waits at most this long to show. (30 a second
/// measured worse here: more lines per frame, no less work for the terminal.)
const MIN_FRAME_INTERVAL: Duration = Duration::from_millis(16);

type Slot = Arc<Mutex<Option<Arc<Client>>>>;

/// Runs the dashboard against the daemon named in `settings` until the person quits.
pub fn run(settings: &Settings) -> ExitCode {
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        eprintln!(
            "kiln: the dashboard needs a terminal; in scripts use a subcommand (see `kiln --help`)"
        );
        return ExitCode::from(crate::cli::EXIT_USAGE);
    }
    // One thread: reading kilnd's lines and drawing take turns instead of competing for a core
    // while a frame is laid out (the terminal's input has a thread of its own).
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kiln: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let color = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    // Installs a panic hook that restores the terminal before the panic message prints; the
    // terminal drawn on writes each frame with one write (stdout alone flushes every 1 KiB).
    let mut terminal = match ratatui::try_init().and_then(|_| {
        let out = std::io::BufWriter::with_capacity(FRAME_BUFFER, std::io::stdout());
        Terminal::new(CrosstermBackend::new(out))
    }) {
        Ok(t) => t,
        Err(e) => {
            ratatui::restore();
            eprintln!("kiln: cannot set up the terminal: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(event_loop(&mut terminal, settings, color));
    ratatui::restore();
    // The input thread may sit in a blocking read; it ends with the process.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kiln: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn event_loop(terminal: &mut Term, settings: &Settings, color: bool) -> std::io::Result<()> {
    let mut app = App::new(&settings.project, chrono::Utc::now(), color);
    app.cwd = std::env::current_dir().unwrap_or_default();
    let size = terminal.size()?;
    update(
        &mut app,
        Action::Resize {
            width: size.width,
            height: size.height,
        },
    );

    let gate = InputGate::default();
    let mut input = spawn_input(gate.clone());
    let (tx, mut actions) = mpsc::unbounded_channel();
    let slot: Slot = Arc::default();
    tokio::spawn(keep_connected(
        settings.socket.clone(),
        settings.project.clone(),
        slot.clone(),
        tx.clone(),
    ));
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut stats = crate::stats::Stats::from_env();
    let mut last_frame = std::time::Instant::now()
        .checked_sub(MIN_FRAME_INTERVAL)
        .unwrap_or_else(std::time::Instant::now);

    loop {
        let since = last_frame.elapsed();
        if since < MIN_FRAME_INTERVAL {
            tokio::time::sleep(MIN_FRAME_INTERVAL - since).await;
        }
        let drawing = std::time::Instant::now();
        let cpu = stats.as_ref().map(|_| crate::stats::thread_cpu_time());
        let mut render = Duration::ZERO;
        terminal.draw(|f| {
            crate::views::draw(f, &app);
            render = drawing.elapsed();
        })?;
        last_frame = std::time::Instant::now();
        if let (Some(s), Some(cpu)) = (stats.as_mut(), cpu) {
            let cpu = crate::stats::thread_cpu_time().saturating_sub(cpu);
            s.on_frame(render, drawing.elapsed(), cpu);
        }
        let first = tokio::select! {
            ev = input.recv() => match ev {
                Some(ev) => action_of(ev),
                None => return Err(std::io::Error::other("the terminal's input closed")),
            },
            Some(a) = actions.recv() => Some(a),
            _ = ticker.tick() => Some(Action::Tick { now: chrono::Utc::now() }),
        };
        let mut batch: Vec<Action> = first.into_iter().collect();
        while batch.len() < ACTIONS_PER_FRAME {
            match actions.try_recv() {
                Ok(a) => batch.push(a),
                Err(_) => break,
            }
        }
        for action in batch {
            if let Some(s) = stats.as_mut() {
                s.on_action(&app, &action);
            }
            for effect in update(&mut app, action) {
                match effect {
                    Effect::Quit => {
                        if let Some(s) = stats.as_mut() {
                            s.write()?;
                        }
                        return Ok(());
                    }
                    Effect::Call { tag, request } => perform_call(&slot, &tx, tag, request),
                    Effect::Edit { what, text } => {
                        let result = run_editor(terminal, &gate, what, &text).await?;
                        let _ = tx.send(Action::Edited { what, result });
                    }
                    Effect::Attach(what) => {
                        let result = run_attached(terminal, &gate, settings, &what).await?;
                        let _ = tx.send(Action::Attached { what, result });
                    }
                    Effect::ReadFile { path, shown } => {
                        let text = read_small(&path, crate::app::import::MAX_FILE);
                        let _ = tx.send(Action::FileRead { shown, text });
                    }
                    Effect::ReadPublicKey(run) => {
                        let key = crate::ssh_key::default_key();
                        let _ = tx.send(Action::PublicKey { run, key });
                    }
                }
            }
        }
    }
}

/// The text of the file at `path`, refused past `max` bytes.
fn read_small(path: &std::path::Path, max: u64) -> Result<String, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut text = String::new();
    file.take(max + 1)
        .read_to_string(&mut text)
        .map_err(|e| e.to_string())?;
    if text.len() as u64 > max {
        return Err(format!("larger than {} MiB", max / (1024 * 1024)));
    }
    Ok(text)
}

/// Lets the shell take the terminal's input away from the input thread while `$EDITOR` or a login
/// runs: the thread reads only while holding `reading`, and stops taking it while `paused` is
/// set.
#[derive(Clone, Default)]
struct InputGate {
    paused: Arc<AtomicBool>,
    reading: Arc<Mutex<()>>,
}

/// How long the input thread waits for an event before it lets the editor have the terminal.
const INPUT_POLL: Duration = Duration::from_millis(50);

/// Reads terminal events on a thread of its own (crossterm's read blocks).
fn spawn_input(gate: InputGate) -> UnboundedReceiver<Event> {
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || loop {
        if gate.paused.load(Ordering::SeqCst) {
            std::thread::sleep(INPUT_POLL);
            continue;
        }
        let event = {
            let _reading = lock(&gate.reading);
            match crossterm::event::poll(INPUT_POLL) {
                Ok(true) => match crossterm::event::read() {
                    Ok(ev) => Some(ev),
                    Err(_) => break,
                },
                Ok(false) => None,
                Err(_) => break,
            }
        };
        if let Some(ev) = event {
            if tx.send(ev).is_err() {
                break;
            }
        }
    });
    rx
}

/// Leaves the terminal to `work` and takes it back: the input thread paused, raw mode and the
/// alternate screen left and the cursor shown while `work` runs (on a blocking thread, so that
/// kilnd's lines are still read meanwhile), then all re-entered and the screen redrawn whole.
/// Only a terminal that cannot be restored is an error.
async fn suspended<T: Send + 'static>(
    terminal: &mut Term,
    gate: &InputGate,
    work: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<T> {
    gate.paused.store(true, Ordering::SeqCst);
    let input = gate.clone();
    let handed = tokio::task::spawn_blocking(move || {
        // Waits for the input thread's current poll to end, so that `work` gets every key.
        let _input = lock(&input.reading);
        ratatui::restore();
        crossterm::execute!(std::io::stdout(), crossterm::cursor::Show)?;
        let out = work();
        crossterm::terminal::enable_raw_mode()?;
        crossterm::execute!(std::io::stdout(), crossterm::terminal::EnterAlternateScreen)?;
        Ok::<T, std::io::Error>(out)
    })
    .await;
    gate.paused.store(false, Ordering::SeqCst);
    let out = handed.map_err(std::io::Error::other)??;
    terminal.clear()?;
    Ok(out)
}

/// Hands the terminal to the person's editor on a temp file holding `text`, then takes it back.
/// The editor's failure is the result's error.
async fn run_editor(
    terminal: &mut Term,
    gate: &InputGate,
    what: EditWhat,
    text: &str,
) -> std::io::Result<Result<String, String>> {
    let command = match editor::editor_from_env() {
        Ok(c) => c,
        Err(f) => return Ok(Err(f.message)),
    };
    let suffix = match what {
        EditWhat::Template => ".toml",
        EditWhat::UserScript => ".sh",
    };
    let file = match tempfile::Builder::new()
        .prefix("kiln-")
        .suffix(suffix)
        .tempfile()
        .and_then(|f| std::fs::write(f.path(), text).map(|()| f))
    {
        Ok(f) => f,
        Err(e) => return Ok(Err(format!("cannot write a temporary file: {e}"))),
    };
    let path = file.path().to_owned();
    let outcome = suspended(terminal, gate, move || editor::open(&command, &path)).await?;
    Ok(match outcome {
        Ok(()) => std::fs::read_to_string(file.path())
            .map_err(|e| format!("cannot read back {}: {e}", file.path().display())),
        Err(f) => Err(f.message),
    })
}

/// Hands the terminal to `what` (`kiln instance ssh NAME` as this dashboard's socket and project,
/// or a kept build VM's attach command through `sh -c`) until it exits, then takes it back. When
/// it fails, enter is awaited first, so that what it printed can be read. The result is its exit
/// status (`None`: killed by a signal), or why it did not run.
async fn run_attached(
    terminal: &mut Term,
    gate: &InputGate,
    settings: &Settings,
    what: &Attach,
) -> std::io::Result<Result<Option<i32>, String>> {
    let mut command = match what {
        Attach::Instance { name } => {
            let exe = match std::env::current_exe() {
                Ok(exe) => exe,
                Err(e) => return Ok(Err(format!("cannot find the kiln program: {e}"))),
            };
            let mut c = std::process::Command::new(exe);
            c.args(["instance", "ssh", name])
                .env("KILN_SOCKET", &settings.socket)
                .env("KILN_PROJECT", &settings.project);
            c
        }
        Attach::Build { command, .. } => {
            let mut c = std::process::Command::new("sh");
            c.arg("-c").arg(command);
            c
        }
    };
    // A ctrl-c typed in the terminal meanwhile is the program's: the dashboard waits for it.
    // (The handler stays for the process's life; in raw mode ctrl-c is a key, never a signal.)
    let _interrupts =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).ok();
    let shown = what.command_line();
    suspended(terminal, gate, move || {
        let status = command
            .status()
            .map_err(|e| format!("cannot run `{shown}`: {e}"))?;
        if !status.success() {
            let how = match status.code() {
                Some(code) => format!("exited with status {code}"),
                None => "was killed by a signal".into(),
            };
            println!("\n[kiln: `{shown}` {how}; press enter to return to the dashboard]");
            let _ = std::io::stdin().read_line(&mut String::new());
        }
        Ok(status.code())
    })
    .await
}

fn action_of(ev: Event) -> Option<Action> {
    match ev {
        Event::Key(k) => key_of(k).map(Action::Key),
        Event::Resize(width, height) => Some(Action::Resize { width, height }),
        _ => None,
    }
}

fn key_of(k: KeyEvent) -> Option<Key> {
    if k.kind == KeyEventKind::Release {
        return None;
    }
    Some(match k.code {
        KeyCode::Char(c) if k.modifiers.contains(KeyModifiers::CONTROL) => Key::Ctrl(c),
        KeyCode::Char(c) => Key::Char(c),
        KeyCode::Enter => Key::Enter,
        KeyCode::Esc => Key::Esc,
        KeyCode::Tab => Key::Tab,
        KeyCode::BackTab => Key::BackTab,
        KeyCode::Backspace => Key::Backspace,
        KeyCode::Up => Key::Up,
        KeyCode::Down => Key::Down,
        KeyCode::Left => Key::Left,
        KeyCode::Right => Key::Right,
        KeyCode::PageUp => Key::PageUp,
        KeyCode::PageDown => Key::PageDown,
        KeyCode::Home => Key::Home,
        KeyCode::End => Key::End,
        _ => return None,
    })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Sends one request on a task of its own; the reply comes back as an action, so the loop never
/// waits on the socket.
fn perform_call(slot: &Slot, tx: &UnboundedSender<Action>, tag: u64, request: Request) {
    let client = lock(slot).clone();
    let tx = tx.clone();
    tokio::spawn(async move {
        let result = match client {
            Some(client) => send(&client, &request).await,
            None => Err(CallError::from("not connected to kilnd")),
        };
        let reply = Box::new(request.reply(result));
        let _ = tx.send(Action::Reply { tag, reply });
    });
}

/// Puts `request` on the wire under the method table's name and waits (a while) for its result.
async fn send(client: &Client, request: &Request) -> Result<serde_json::Value, CallError> {
    let method = request.method().as_str();
    let params = request
        .params()
        .map_err(|e| CallError::from(format!("cannot encode the params: {e}")))?;
    let patience = timeout(request.method());
    match tokio::time::timeout(patience, client.call_value(method, params)).await {
        Ok(result) => result.map_err(call_error),
        Err(_) => Err(CallError::from(format!(
            "kilnd did not answer within {} s",
            patience.as_secs()
        ))),
    }
}

/// How long a call to `method` may take. Most are answered at once; an instance's stop waits
/// for its guest to power off (killed after 120 s), its start or run for its VM to start, and a
/// capture boots a helper VM, generalizes the disk and compresses it (minutes per GiB).
fn timeout(method: Name) -> Duration {
    match method {
        Name::InstanceStop | Name::InstanceStart | Name::InstanceRun => Duration::from_secs(300),
        Name::ImageCreateFromInstance => Duration::from_secs(4 * 3600),
        _ => CALL_TIMEOUT,
    }
}

/// A failed call as the app sees it: kilnd's error kind and violations kept.
fn call_error(e: ClientError) -> CallError {
    match e {
        ClientError::Rpc(rpc) => CallError {
            kind: Some(rpc.kind()),
            message: rpc.message,
            violations: rpc.data.violations,
        },
        other => CallError::from(other.to_string()),
    }
}

/// Connects to kilnd, forwards its notifications, and when the connection drops (kilnd restarted
/// or stopped) reports it and connects again, waiting longer after each failure.
async fn keep_connected(socket: PathBuf, project: String, slot: Slot, tx: UnboundedSender<Action>) {
    let mut backoff = BACKOFF_FIRST;
    loop {
        let report = match Client::connect(&socket, Some(project.clone())).await {
            Ok((client, mut notes)) => {
                backoff = BACKOFF_FIRST;
                let version = client.hello().version.clone();
                *lock(&slot) = Some(Arc::new(client));
                if tx.send(Action::Connected { version }).is_err() {
                    return;
                }
                // The stream ends when the client's reader stops: kilnd closed the socket.
                while let Some(n) = notes.recv().await {
                    // Those the dashboard does not read end here.
                    let Some(note) = Note::decode(&n.method, n.params) else {
                        continue;
                    };
                    if tx.send(Action::Notification(note)).is_err() {
                        return;
                    }
                }
                *lock(&slot) = None;
                "kilnd closed the connection".to_string()
            }
            Err(e) => e.to_string(),
        };
        if tx.send(Action::Disconnected { error: report }).is_err() {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[test]
    fn terminal_keys_become_dashboard_keys() {
        let k = |code, modifiers| key_of(KeyEvent::new(code, modifiers));
        assert_eq!(
            k(KeyCode::Char('c'), KeyModifiers::CONTROL),
            Some(Key::Ctrl('c'))
        );
        assert_eq!(
            k(KeyCode::Char('G'), KeyModifiers::SHIFT),
            Some(Key::Char('G'))
        );
        assert_eq!(k(KeyCode::End, KeyModifiers::NONE), Some(Key::End));
        assert_eq!(k(KeyCode::F(1), KeyModifiers::NONE), None);
        let mut release = KeyEvent::new(KeyCode::Char('q'), KeyModifiers::NONE);
        release.kind = KeyEventKind::Release;
        assert_eq!(key_of(release), None);
    }

    async fn next(rx: &mut UnboundedReceiver<Action>) -> Action {
        match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
            Ok(Some(a)) => a,
            other => panic!("no action: {other:?}"),
        }
    }

    /// A daemon that says hello, then hangs up, then comes back: the shell reports each step.
    #[tokio::test]
    async fn the_connection_comes_back_after_the_daemon_restarts() {
        let Ok(dir) = tempfile::tempdir() else {
            panic!("no temp dir");
        };
        let path = dir.path().join("kiln.sock");
        let Ok(listener) = tokio::net::UnixListener::bind(&path) else {
            panic!("cannot bind");
        };
        let (tx, mut rx) = mpsc::unbounded_channel();
        let slot: Slot = Arc::default();
        let task = tokio::spawn(keep_connected(
            path.clone(),
            "default".into(),
            slot.clone(),
            tx,
        ));
        let hello = b"{\"jsonrpc\":\"2.0\",\"method\":\"hello\",\"params\":{\"server\":\"kilnd\",\"version\":\"9.9\",\"protocol\":1}}\n";
        for round in 0..2 {
            let Ok((mut conn, _)) = listener.accept().await else {
                panic!("accept failed");
            };
            let _ = conn.write_all(hello).await;
            match next(&mut rx).await {
                Action::Connected { version } => assert_eq!(version, "9.9"),
                other => panic!("round {round}: expected Connected, got {other:?}"),
            }
            assert!(lock(&slot).is_some());
            drop(conn);
            match next(&mut rx).await {
                Action::Disconnected { error } => assert!(error.contains("closed"), "{error}"),
                other => panic!("round {round}: expected Disconnected, got {other:?}"),
            }
            assert!(lock(&slot).is_none());
        }
        task.abort();
    }
}
