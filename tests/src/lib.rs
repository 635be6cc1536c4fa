//! Test harness: starts the real `kilnd` binary on a temp socket and data dir, speaks raw protocol
//! lines to it, and runs the real `kiln` binary against it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub mod base_image;
pub mod image_scan;

/// The directory holding the workspace's built binaries (`target/debug`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/debug/deps/test-xxxx -> target/debug
    exe.parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf()
}

/// Path of a workspace binary, with a clear message when it was not built.
pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --workspace --bins` before the tests",
        p.display()
    );
    p
}

/// A running kilnd on its own temp socket and data dir.
pub struct Kilnd {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub data_dir: PathBuf,
    pub child: Option<Child>,
    pub log: PathBuf,
    /// Searched before `$PATH` for the programs kilnd runs (a test's stand-in tools).
    pub path_first: Option<PathBuf>,
}

impl Kilnd {
    pub fn start() -> Kilnd {
        Self::start_with_config(None)
    }

    /// Starts kilnd with `config` written to kilnd.toml, if given.
    pub fn start_with_config(config: Option<&str>) -> Kilnd {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("run").join("kiln.sock");
        let data_dir = dir.path().join("data");
        let log = dir.path().join("kilnd.log");
        if let Some(c) = config {
            std::fs::write(dir.path().join("kilnd.toml"), c).unwrap();
        }
        let mut k = Kilnd {
            dir,
            socket,
            data_dir,
            child: None,
            log,
            path_first: None,
        };
        k.spawn();
        k
    }

    /// Imports the disk image `file` as the public image `debian-12`; `warm` also saves a
    /// booted VM of it (which boots it: only for a real base image).
    pub fn import_base(&self, file: &Path, warm: bool) {
        let mut args = vec![
            "image",
            "import",
            file.to_str().unwrap(),
            "--name",
            "debian-12",
            "--os",
            "debian-12",
            "--public",
        ];
        if warm {
            args.push("--warm");
        }
        let out = self.kiln(&args);
        assert!(
            out.status.success(),
            "importing {}: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The command line kilnd runs with, without spawning it.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(bin("kilnd"));
        cmd.arg("--socket")
            .arg(&self.socket)
            .arg("--data-dir")
            .arg(&self.data_dir);
        let config = self.dir.path().join("kilnd.toml");
        if config.exists() {
            cmd.arg("--config").arg(config);
        }
        cmd.env("RUST_LOG", "debug");
        if let Some(dir) = &self.path_first {
            let path = std::env::var_os("PATH").unwrap_or_default();
            let mut dirs = vec![dir.clone()];
            dirs.extend(std::env::split_paths(&path));
            cmd.env("PATH", std::env::join_paths(dirs).unwrap());
        }
        cmd
    }

    /// Spawns the daemon and waits until its socket answers.
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = self
            .command()
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn kilnd");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if UnixStream::connect(&self.socket).is_ok() {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("kilnd exited with {status}: {}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("kilnd did not listen within 20 s: {}", self.log_text());
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// SIGTERM and wait for a clean exit; returns the exit status's success.
    pub fn terminate(&mut self) -> bool {
        let Some(mut c) = self.child.take() else {
            return true;
        };
        Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status()
            .unwrap();
        c.wait().unwrap().success()
    }

    pub fn connect(&self) -> Conn {
        Conn::open(&self.socket)
    }

    /// Runs the real `kiln` binary against this daemon.
    pub fn kiln(&self, args: &[&str]) -> Output {
        self.kiln_cmd(args).output().unwrap()
    }

    pub fn kiln_cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin("kiln"));
        cmd.args(args)
            .env("KILN_SOCKET", &self.socket)
            .env("NO_COLOR", "1");
        cmd.env_remove("KILN_PROJECT").stdin(Stdio::null());
        cmd
    }
}

impl Drop for Kilnd {
    /// SIGTERM first, so kilnd ends its builds' VMs (a failed test must not leave qemu running),
    /// then SIGKILL if it takes too long.
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A raw connection writing protocol lines and reading replies.
pub struct Conn {
    pub stream: UnixStream,
    reader: BufReader<UnixStream>,
    next_id: u64,
}

impl Conn {
    pub fn open(socket: &Path) -> Conn {
        let stream = UnixStream::connect(socket).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        let mut c = Conn {
            stream,
            reader,
            next_id: 1000,
        };
        let hello = c.read();
        assert_eq!(hello["method"], "hello", "{hello}");
        c
    }

    /// How long a read may wait (20 s by default); `build.wait` needs much longer.
    pub fn set_timeout(&mut self, d: Duration) {
        self.stream.set_read_timeout(Some(d)).unwrap();
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// Reads one line; `Value::Null` at end of stream.
    pub fn read(&mut self) -> Value {
        let mut line = String::new();
        if self.reader.read_line(&mut line).unwrap() == 0 {
            return Value::Null;
        }
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad line {line:?}: {e}"))
    }

    /// Sends a request and returns its whole response object.
    pub fn request(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let line = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        self.send_raw(format!("{line}\n").as_bytes());
        loop {
            let msg = self.read();
            assert!(
                !msg.is_null(),
                "connection closed while waiting for {method}"
            );
            if msg["id"] == json!(id) {
                return msg;
            }
        }
    }

    /// Sends a request and returns its result, panicking on an error reply.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        let r = self.request(method, params);
        assert!(r.get("error").is_none(), "{method} failed: {r}");
        r["result"].clone()
    }

    /// Sends a request that must fail and returns `error.data.kind`.
    pub fn call_err(&mut self, method: &str, params: Value) -> (String, Value) {
        let r = self.request(method, params);
        let kind = r["error"]["data"]["kind"]
            .as_str()
            .unwrap_or_else(|| panic!("{method} should fail: {r}"));
        (kind.to_string(), r["error"].clone())
    }
}

/// A valid template in its wire form, named `name`.
pub fn template(name: &str) -> Value {
    json!({
        "name": name,
        "os": "debian-12",
        "description": "test template",
        "applications": ["nginx"],
        "source": {"image": "debian-12"},
        "customize": [{"type": "shell", "name": "hello", "inline": ["echo hello"]}],
        "distribute": [{"type": "image", "run_output_name": "local"}],
    })
}

/// The JSON document a successful `kiln --json` printed on stdout.
pub fn json_out(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "kiln failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The dashboard (`kiln` run bare) in a detached tmux pane against a kilnd: driven with
/// send-keys, read with capture-pane.
pub struct Pane {
    pub session: String,
}

impl Pane {
    /// Runs the dashboard against `k` in a `width`x`height` pane, with `env` (`NAME=value`
    /// words, shell-quoted by the caller) set; `None` without tmux.
    pub fn start(k: &Kilnd, width: u16, height: u16, env: &str) -> Option<Pane> {
        if Command::new("tmux").arg("-V").output().is_err() {
            eprintln!("tmux is not installed: skipping a dashboard test");
            return None;
        }
        let session = format!("kiln-test-{}", std::process::id());
        let cmd = format!(
            "{env} KILN_SOCKET={} {}",
            k.socket.display(),
            bin("kiln").display()
        );
        let ok = Command::new("tmux")
            .args([
                "new-session",
                "-d",
                "-s",
                &session,
                "-x",
                &width.to_string(),
                "-y",
                &height.to_string(),
                &cmd,
            ])
            .status()
            .unwrap()
            .success();
        assert!(ok, "tmux new-session failed");
        Some(Pane { session })
    }

    pub fn keys(&self, keys: &[&str]) {
        for key in keys {
            let ok = Command::new("tmux")
                .args(["send-keys", "-t", &self.session, key])
                .status()
                .unwrap()
                .success();
            assert!(ok);
            std::thread::sleep(Duration::from_millis(150));
        }
    }

    pub fn screen(&self) -> String {
        let out = Command::new("tmux")
            .args(["capture-pane", "-p", "-t", &self.session])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until the screen shows `text`.
    pub fn expect(&self, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let s = self.screen();
            if s.contains(text) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "screen never showed {text:?}:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Pane {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.session])
            .status();
    }
}
