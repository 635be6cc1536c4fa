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
pub mod fake_driver;
pub mod image_scan;
pub mod in_process;

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
            "--user",
            "debian",
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

    /// Imports an empty 1 GiB qcow2 (made once in the test's dir) as the public `debian-12`: a
    /// build from it boots nothing and waits in `booting` until canceled.
    pub fn import_empty_base(&self) {
        let empty = self.dir.path().join("empty.qcow2");
        if !empty.exists() {
            let ok = Command::new("qemu-img")
                .args(["create", "-q", "-f", "qcow2"])
                .arg(&empty)
                .arg("1G")
                .status()
                .unwrap()
                .success();
            assert!(ok, "qemu-img create {}", empty.display());
        }
        self.import_base(&empty, false);
    }

    /// Restarts kilnd with `script` standing in for the program `tool` (found first on its
    /// PATH), e.g. a qemu-img that misbehaves at a chosen moment.
    pub fn restart_with_stand_in(&mut self, tool: &str, script: &str) {
        let tools = self.dir.path().join("tools");
        std::fs::create_dir_all(&tools).unwrap();
        std::fs::write(tools.join(tool), script).unwrap();
        std::fs::set_permissions(
            tools.join(tool),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        assert!(self.terminate());
        self.path_first = Some(tools);
        self.spawn();
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

    /// `kiln instance ssh NAME -i KEY -- CMD` with `HOME` at `home` (where it keeps known_hosts).
    pub fn instance_ssh(&self, home: &Path, key: &Path, name: &str, cmd: &str) -> Output {
        self.kiln_cmd(&[
            "instance",
            "ssh",
            name,
            "-i",
            key.to_str().unwrap(),
            "--",
            cmd,
        ])
        .env("HOME", home)
        .output()
        .unwrap()
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

/// Ends a kilnd: SIGTERM first, so it ends its builds' VMs (a failed test must not leave qemu
/// running), then SIGKILL if it takes longer than 15 s.
fn stop(mut c: Child) {
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

impl Drop for Kilnd {
    /// SIGTERM first, so kilnd ends its builds' VMs (a failed test must not leave qemu running),
    /// then SIGKILL if it takes too long.
    fn drop(&mut self) {
        if let Some(c) = self.child.take() {
            stop(c);
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

    /// Stores `template` (its wire form) in the connection's project.
    pub fn create_template(&mut self, template: Value) {
        self.call("template.create", json!({ "template": template }));
    }

    /// Starts a build of `template` making `image`; returns its id.
    pub fn start_build(&mut self, template: &str, image: &str) -> u64 {
        self.call(
            "build.start",
            json!({"template": template, "image_name": image}),
        )["build"]["id"]
            .as_u64()
            .unwrap()
    }

    /// The build log's lines so far (`build.logs` without follow, read to its end).
    pub fn log_lines(&mut self, id: u64) -> Vec<String> {
        let sub = self.call("build.logs", json!({"id": id, "follow": false}))["sub"].clone();
        let mut lines = Vec::new();
        loop {
            let n = self.read();
            assert!(!n.is_null(), "connection closed during build.logs");
            if n["params"]["sub"] != sub {
                continue;
            }
            match n["method"].as_str() {
                Some("build.log.end") => return lines,
                Some("build.log") => {
                    lines.push(n["params"]["line"].as_str().unwrap_or_default().to_string())
                }
                _ => {}
            }
        }
    }

    /// Polls `instance.get` until instance `name` is `state` (failing early when it failed, and
    /// after `limit`), returning it.
    pub fn until_instance(&mut self, name: &str, state: &str, limit: Duration) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let i = self.call("instance.get", json!({ "name": name }))["instance"].clone();
            if i["state"] == state {
                return i;
            }
            assert!(
                Instant::now() < deadline && !(i["state"] == "failed" && state != "failed"),
                "instance {name} never got {state}: {i}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
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

/// A new ed25519 key pair at `path` (and `path.pub`), without a passphrase.
pub fn ssh_keypair(path: &Path) {
    let ok = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .status()
        .unwrap()
        .success();
    assert!(ok, "ssh-keygen {}", path.display());
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
        // Tests of one binary run in parallel in one process: each pane its own session.
        static PANES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = PANES.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let session = format!("kiln-test-{}-{n}", std::process::id());
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
        // Gone already when the dashboard quit (and with it the tmux server, if it was the last).
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.session])
            .stderr(Stdio::null())
            .status();
    }
}

// ---------------------------------------------------------------- system mode, real users

/// Whether a test that needs root (real users, a root kilnd) can run: `false` (with the
/// reason printed) when not root, and a failure under `CI=true`, where the tests run as root.
pub fn root_or_skip(test: &str) -> bool {
    if kiln_shared::paths::current_uid() == 0 {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test} needs root, and CI runs the tests as root"
    );
    eprintln!("skipping {test}: it needs root (it creates users and runs kilnd in system mode)");
    false
}

/// Runs an administration command (groupadd, useradd, chmod ...), panicking with its stderr.
pub fn admin(program: &str, args: &[&str]) {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A group's id from the group database (`getent`, so NSS sources count).
pub fn group_id(name: &str) -> Option<u32> {
    let out = Command::new("getent").args(["group", name]).output().ok()?;
    String::from_utf8_lossy(&out.stdout)
        .split(':')
        .nth(2)?
        .trim()
        .parse()
        .ok()
}

/// Makes the system group `name` unless it exists (another test may make it at the same time).
pub fn ensure_group(name: &str) -> u32 {
    if let Some(gid) = group_id(name) {
        return gid;
    }
    let _ = Command::new("groupadd")
        .args(["--system", name])
        .output()
        .unwrap();
    group_id(name).unwrap_or_else(|| panic!("groupadd --system {name} made no group"))
}

/// A Unix account the tests made.
#[derive(Debug, Clone)]
pub struct TestUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// Its home, 0700.
    pub home: PathBuf,
}

impl TestUser {
    /// Runs `program` as this user (`runuser`, no login shell), failing the test if it fails.
    pub fn run(&self, program: &str, args: &[&str]) -> Output {
        let out = self.command(program, args).output().unwrap();
        assert!(
            out.status.success(),
            "{program} {args:?} as {}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// `runuser -u NAME -- PROGRAM ARGS`, stdin closed.
    pub fn command(&self, program: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", &self.name, "--", program])
            .args(args)
            .stdin(Stdio::null());
        cmd
    }

    /// A fresh directory of this user's in their home (mode `mode`), removed when dropped.
    pub fn scratch(&self, mode: u32) -> Scratch {
        use std::os::unix::fs::PermissionsExt;
        let path = tempfile::Builder::new()
            .prefix("kiln-test-")
            .tempdir_in(&self.home)
            .unwrap()
            .keep();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        std::os::unix::fs::chown(&path, Some(self.uid), Some(self.gid)).unwrap();
        Scratch { path }
    }

    /// A tiny qcow2 (16 MiB virtual, empty) made by this user at `path`, with `mode`.
    pub fn qcow2(&self, path: &Path, mode: u32) {
        let p = path.to_str().unwrap();
        self.run("qemu-img", &["create", "-q", "-f", "qcow2", p, "16M"]);
        self.run("chmod", &[&format!("{mode:o}"), p]);
    }
}

/// A directory a test made, removed with everything in it when dropped.
pub struct Scratch {
    pub path: PathBuf,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Makes the user `name` (with a 0700 home, its own group, in `groups`) unless it exists;
/// an existing one is added to `groups`. Idempotent, and safe for tests running in parallel.
pub fn ensure_user(name: &str, groups: &[&str]) -> TestUser {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    static ACCOUNTS: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = ACCOUNTS.lock().unwrap_or_else(|e| e.into_inner());
    for g in groups {
        ensure_group(g);
    }
    let exists = Command::new("id")
        .arg(name)
        .output()
        .unwrap()
        .status
        .success();
    let groups = groups.join(",");
    if !exists {
        let mut args = vec!["--create-home", "--user-group", "--shell", "/bin/sh"];
        if !groups.is_empty() {
            args.extend(["--groups", &groups]);
        }
        args.push(name);
        admin("useradd", &args);
    } else if !groups.is_empty() {
        admin("usermod", &["--append", "--groups", &groups, name]);
    }
    let home = PathBuf::from(
        String::from_utf8_lossy(
            &Command::new("getent")
                .args(["passwd", name])
                .output()
                .unwrap()
                .stdout,
        )
        .split(':')
        .nth(5)
        .expect("home in passwd")
        .trim(),
    );
    std::fs::create_dir_all(&home).unwrap();
    let meta = std::fs::metadata(&home).unwrap();
    let (uid, gid) = (meta.uid(), meta.gid());
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).unwrap();
    let id = |flag: &str| -> u32 {
        String::from_utf8_lossy(
            &Command::new("id")
                .args([flag, name])
                .output()
                .unwrap()
                .stdout,
        )
        .trim()
        .parse()
        .unwrap()
    };
    assert_eq!(
        (uid, gid),
        (id("-u"), id("-g")),
        "{} is not {name}'s",
        home.display()
    );
    TestUser {
        name: name.to_string(),
        uid,
        gid,
        home,
    }
}

/// The `kilnd` and `kiln` a system-mode test drives: the workspace's, or installed ones.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub kilnd: PathBuf,
    pub kiln: PathBuf,
}

impl Binaries {
    pub fn workspace() -> Binaries {
        Binaries {
            kilnd: bin("kilnd"),
            kiln: bin("kiln"),
        }
    }
}

/// A root kilnd in system mode (`--system`) on private paths: the socket in `run/`, made
/// root:kiln 0750 as /run/kiln is, so members of `kiln` reach the 0660 socket and nobody else
/// does; the data dir private to root. Driven as real users with [`SystemKilnd::kiln_as`].
pub struct SystemKilnd {
    /// 0755, so that users reach `run/` in it.
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    pub bins: Binaries,
    child: Option<Child>,
}

impl SystemKilnd {
    /// Starts `bins.kilnd` as root with `config` as its kilnd.toml, once its socket answers.
    pub fn start(bins: Binaries, config: &str) -> SystemKilnd {
        use std::os::unix::fs::PermissionsExt;
        let kiln_gid = ensure_group("kiln");
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let run = dir.path().join("run");
        std::fs::create_dir(&run).unwrap();
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o750)).unwrap();
        std::os::unix::fs::chown(&run, Some(0), Some(kiln_gid)).unwrap();
        let config_file = dir.path().join("kilnd.toml");
        std::fs::write(&config_file, config).unwrap();
        let mut k = SystemKilnd {
            socket: run.join("kiln.sock"),
            data_dir: dir.path().join("data"),
            log: dir.path().join("kilnd.log"),
            dir,
            bins,
            child: None,
        };
        let log = std::fs::File::create(&k.log).unwrap();
        let child = Command::new(&k.bins.kilnd)
            .arg("--system")
            .arg("--socket")
            .arg(&k.socket)
            .arg("--data-dir")
            .arg(&k.data_dir)
            .arg("--config")
            .arg(&config_file)
            .env("RUST_LOG", "debug")
            .env_remove("KILN_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn kilnd");
        let child = k.child.insert(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while UnixStream::connect(&k.socket).is_err() {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("kilnd exited with {status}: {}", k.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "kilnd did not listen within 20 s: {}",
                k.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        k
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs `kiln ARGS` as `user` (`runuser`), with `KILN_SOCKET` and no `KILN_PROJECT`.
    pub fn kiln_as(&self, user: &str, args: &[&str]) -> Output {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", user, "--"])
            .arg(&self.bins.kiln)
            .args(args)
            .env("KILN_SOCKET", &self.socket)
            .env("NO_COLOR", "1")
            .env_remove("KILN_PROJECT")
            .stdin(Stdio::null());
        cmd.output().unwrap()
    }

    /// Sends one raw request line as `user` (through `socat`, run with `runuser`) and returns
    /// the whole response object: the daemon's own answer, with no client in between.
    pub fn request_as(&self, user: &str, project: &str, method: &str, params: Value) -> Value {
        let mut child = Command::new("runuser")
            .args(["-u", user, "--", "socat", "-t", "5", "-"])
            .arg(format!("UNIX-CONNECT:{}", self.socket.display()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("runuser socat (package socat)");
        let mut params = params;
        params["project"] = json!(project);
        let line = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, "{line}").unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let Ok(msg) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                if msg["id"] == json!(1) {
                    let _ = tx.send(msg);
                    break;
                }
            }
        });
        let reply = rx.recv_timeout(Duration::from_secs(120));
        drop(stdin);
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        reply.unwrap_or_else(|_| {
            panic!(
                "no reply to {method} as {user}: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }

    /// Runs `kiln ARGS` as root (this test's own user).
    pub fn kiln_as_root(&self, args: &[&str]) -> Output {
        Command::new(&self.bins.kiln)
            .args(args)
            .env("KILN_SOCKET", &self.socket)
            .env("NO_COLOR", "1")
            .env_remove("KILN_PROJECT")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }
}

impl Drop for SystemKilnd {
    fn drop(&mut self) {
        if let Some(c) = self.child.take() {
            stop(c);
        }
    }
}

/// The `{"error": {...}}` document a failed `kiln --json` printed on stderr.
pub fn json_err(out: &Output) -> Value {
    assert!(
        !out.status.success(),
        "kiln should have failed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    serde_json::from_slice(&out.stderr).unwrap_or_else(|e| {
        panic!(
            "stderr is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Kills every qemu whose command line names `dir` when dropped: instances outlive kilnd, so a
/// test that fails midway must not leave them running.
pub struct KillVms(pub PathBuf);

impl Drop for KillVms {
    fn drop(&mut self) {
        for pid in qemus_in(&self.0) {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    }
}

/// The live (not zombie) qemu processes whose command line names `dir`.
pub fn qemus_in(dir: &Path) -> Vec<u32> {
    let needle = dir.display().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmd = String::from_utf8_lossy(&cmd);
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let zombie = stat
                .rsplit(')')
                .next()
                .is_some_and(|r| r.trim_start().starts_with('Z'));
            cmd.starts_with("qemu-system") && cmd.contains(&needle) && !zombie
        })
        .collect()
}
