//! What one client may cost kilnd, and what it may see of others: connections, partial lines,
//! requests and waits in flight, subscriptions, the fd limit, and per-project counts. Raw
//! sockets against the real kilnd; other users are real uids (`setpriv`) on the same socket.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kiln_tests::{template, Conn, Kilnd};
use serde_json::{json, Value};

/// Users that are neither root nor kilnd's user nor in its admin group (numeric ids: kilnd
/// accepts them in kilnd.toml, and `setpriv` needs no passwd entry).
const ALICE: u32 = 48101;
const BOB: u32 = 48102;
const STRANGER: u32 = 48103;
/// In `ADMIN_GROUP` only.
const CAROL: u32 = 48104;
const ADMIN_GROUP: u32 = 48777;

/// One VM at a time for the tests that need a build in progress (the machine is small).
static VM: Mutex<()> = Mutex::new(());

/// Lets every local user reach the test kilnd's socket, as system mode's group `kiln` would.
fn open_to_all(k: &Kilnd) {
    use std::os::unix::fs::PermissionsExt;
    let run = k.socket.parent().unwrap();
    std::fs::set_permissions(run, std::fs::Permissions::from_mode(0o711)).unwrap();
    std::fs::set_permissions(&k.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    std::fs::set_permissions(k.dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
}

/// A connection held by a process running as `uid` with supplementary `groups` (socat under
/// setpriv), so kilnd sees that user in the peer credentials.
struct UserConn {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl UserConn {
    fn open(k: &Kilnd, uid: u32, groups: &[u32]) -> UserConn {
        let mut cmd = Command::new("setpriv");
        cmd.arg(format!("--reuid={uid}"))
            .arg(format!("--regid={uid}"));
        if groups.is_empty() {
            cmd.arg("--clear-groups");
        } else {
            let g: Vec<String> = groups.iter().map(u32::to_string).collect();
            cmd.arg(format!("--groups={}", g.join(",")));
        }
        let mut child = cmd
            .args(["--", "socat", "-t", "5", "-"])
            .arg(format!("UNIX-CONNECT:{}", k.socket.display()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("setpriv and socat (scripts/install-deps.sh installs socat)");
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        UserConn { child, lines }
    }

    /// The next line, `Value::Null` once the connection is closed.
    fn read(&mut self) -> Value {
        match self.lines.recv_timeout(Duration::from_secs(20)) {
            Ok(line) => serde_json::from_str(&line).unwrap(),
            Err(mpsc::RecvTimeoutError::Disconnected) => Value::Null,
            Err(mpsc::RecvTimeoutError::Timeout) => panic!("no line from kilnd within 20 s"),
        }
    }

    fn call(&mut self, method: &str, params: Value) -> Value {
        let line = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        loop {
            let m = self.read();
            assert!(!m.is_null(), "connection closed while waiting for {method}");
            if m["id"] == 1 {
                assert!(m.get("error").is_none(), "{method} failed: {m}");
                return m["result"].clone();
            }
        }
    }
}

impl Drop for UserConn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What kilnd says first on a new connection: `hello`, or the one error line of a refusal.
fn first_line(conn: &mut UserConn) -> Value {
    conn.read()
}

/// Connects as root (this test) and returns the stream and kilnd's first line (`Null` if none).
fn raw_first_line(k: &Kilnd) -> (UnixStream, Value) {
    let s = UnixStream::connect(&k.socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut line = String::new();
    BufReader::new(s.try_clone().unwrap())
        .read_line(&mut line)
        .unwrap();
    (s, serde_json::from_str(&line).unwrap_or(Value::Null))
}

/// `line` is a refusal: one `busy` error and the connection closed after it.
fn assert_refused(first: &Value, mut rest: impl Read) {
    assert_eq!(first["error"]["data"]["kind"], "busy", "{first}");
    assert_eq!(first["error"]["code"], -32007);
    let mut tail = Vec::new();
    rest.read_to_end(&mut tail).unwrap();
    assert!(tail.is_empty(), "more after a refusal: {tail:?}");
}

fn log_count(k: &Kilnd, needle: &str) -> usize {
    k.log_text().matches(needle).count()
}

/// Waits up to `secs` for `ok`.
fn eventually(secs: u64, mut ok: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    ok()
}

/// Starts kilnd with `config` under `prlimit --nofile=SOFT:HARD`.
fn start_with_nofile(config: &str, soft: u64, hard: u64) -> Kilnd {
    let mut k = Kilnd::start_with_config(Some(config));
    k.terminate();
    let plain = k.command();
    let mut cmd = Command::new("prlimit");
    cmd.arg(format!("--nofile={soft}:{hard}"))
        .arg("--")
        .arg(plain.get_program())
        .args(plain.get_args());
    for (key, value) in plain.get_envs() {
        if let Some(v) = value {
            cmd.env(key, v);
        }
    }
    let log = std::fs::OpenOptions::new()
        .append(true)
        .open(&k.log)
        .unwrap();
    k.child = Some(cmd.stdout(Stdio::null()).stderr(log).spawn().unwrap());
    assert!(
        eventually(20, || UnixStream::connect(&k.socket).is_ok()),
        "kilnd did not listen: {}",
        k.log_text()
    );
    k
}

/// Two builds of `project` in progress under `max_concurrent_builds = 1`: one running (an empty
/// disk boots nothing, so it stays `booting` until canceled) and one queued behind it.
fn builds_in_progress(k: &Kilnd, c: &mut Conn, project: &str) -> (Value, Value) {
    if !k.dir.path().join("empty.qcow2").exists() {
        k.import_empty_base();
    }
    c.call(
        "template.create",
        json!({"template": template("spin"), "project": project}),
    );
    let start = |c: &mut Conn, name: &str| {
        c.call(
            "build.start",
            json!({"template": "spin", "image_name": name, "project": project}),
        )["build"]["id"]
            .clone()
    };
    let running = start(c, "a");
    let queued = start(c, "b");
    let state = |c: &mut Conn, id: &Value| {
        c.call("build.get", json!({"id": id, "project": project}))["build"]["state"].clone()
    };
    assert!(
        eventually(60, || state(c, &running) != "queued"),
        "the first build never left the queue"
    );
    assert_eq!(state(c, &queued), "queued");
    (running, queued)
}

fn cancel(c: &mut Conn, project: &str, ids: &[&Value]) {
    for id in ids {
        c.call("build.cancel", json!({"id": id, "project": project}));
    }
}

// ---- defect 6: subscriptions ----

#[test]
fn subscriptions_are_capped_per_connection() {
    let k = Kilnd::start();
    let mut c = k.connect();
    let subs: Vec<Value> = (0..64)
        .map(|_| c.call("events.subscribe", json!({}))["sub"].clone())
        .collect();
    let (kind, err) = c.call_err("events.subscribe", json!({}));
    assert_eq!(kind, "busy", "{err}");
    assert!(err["message"].as_str().unwrap().contains("64"), "{err}");
    // Another connection has its own 64.
    k.connect().call("events.subscribe", json!({}));
    // Ending one frees its place.
    c.call("events.unsubscribe", json!({"sub": subs[0]}));
    c.call("events.subscribe", json!({}));
}

#[test]
fn subscriptions_end_when_their_connection_closes() {
    let k = Kilnd::start();
    let mut c = k.connect();
    for _ in 0..20 {
        c.call("events.subscribe", json!({}));
    }
    let before = log_count(&k, "client disconnected");
    drop(c);
    // The connection is over only once every stream on it has ended: at once, not at the
    // project's next event (there is none here).
    assert!(
        eventually(5, || log_count(&k, "client disconnected") > before),
        "subscriptions outlived their connection: {}",
        k.log_text()
    );
}

// ---- defect 7: connections ----

#[test]
fn connections_over_the_limit_get_busy_and_close() {
    let k = Kilnd::start_with_config(Some("max_connections = 2\n"));
    open_to_all(&k);
    let mut users: Vec<UserConn> = (0..2)
        .map(|_| {
            let mut u = UserConn::open(&k, ALICE, &[]);
            assert_eq!(first_line(&mut u)["method"], "hello");
            u
        })
        .collect();
    let mut third = UserConn::open(&k, ALICE, &[]);
    let refused = first_line(&mut third);
    assert_eq!(refused["error"]["data"]["kind"], "busy", "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_connections"),
        "{refused}"
    );
    assert!(third.read().is_null(), "a refused connection is closed");

    // Root keeps 8 more, and no more.
    let held: Vec<UnixStream> = (0..8)
        .map(|_| {
            let (s, first) = raw_first_line(&k);
            assert_eq!(first["method"], "hello", "{first}");
            s
        })
        .collect();
    let (s, first) = raw_first_line(&k);
    assert_refused(&first, s);
    // The CLI says why.
    let out = k.kiln(&["daemon", "status"]);
    assert!(!out.status.success());
    let err = kiln_tests::stderr(&out);
    assert!(err.contains("max_connections"), "{err}");

    // A place freed is a place taken.
    drop(held);
    users[0].call("daemon.status", json!({}));
    drop(users.remove(0));
    assert!(
        eventually(5, || {
            let mut u = UserConn::open(&k, BOB, &[]);
            first_line(&mut u)["method"] == "hello"
        }),
        "a closed connection's place was not freed"
    );
}

#[test]
fn an_unfinished_line_is_dropped_after_10_seconds() {
    let k = Kilnd::start();
    let mut c = k.connect();
    let started = Instant::now();
    c.send_raw(br#"{"jsonrpc":"2.0","id":1,"method":"daemon.st"#);
    let r = c.read();
    let waited = started.elapsed();
    assert_eq!(r["error"]["data"]["kind"], "busy", "{r}");
    assert!(
        waited >= Duration::from_secs(9) && waited < Duration::from_secs(15),
        "{waited:?}"
    );
    assert!(c.read().is_null(), "connection should be closed");
    // Lines finished in time are unaffected, however slowly the connection is used.
    let mut c = k.connect();
    std::thread::sleep(Duration::from_secs(1));
    c.send_raw(br#"{"jsonrpc":"2.0","#);
    std::thread::sleep(Duration::from_secs(1));
    c.send_raw(b"\"id\":2,\"method\":\"daemon.status\"}\n");
    assert_eq!(c.read()["id"], 2);
}

/// Opens `n` connections, each sending `bytes` of an unfinished line; returns them with whether
/// kilnd refused each (a `busy` line waiting to be read).
fn partial_lines(k: &Kilnd, n: usize, bytes: usize) -> Vec<(UnixStream, bool)> {
    let mut start = br#"{"jsonrpc":"2.0","id":1,"method":"template.list","pad":""#.to_vec();
    start.resize(bytes, b'x');
    let conns: Vec<UnixStream> = (0..n)
        .map(|_| {
            let (mut s, first) = raw_first_line(k);
            assert_eq!(first["method"], "hello");
            // A refused connection may close before all of it is written.
            let _ = s.write_all(&start);
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    conns
        .into_iter()
        .map(|s| {
            s.set_nonblocking(true).unwrap();
            let mut buf = [0u8; 4096];
            let refused = match (&s).read(&mut buf) {
                Ok(n) if n > 0 => {
                    let text = String::from_utf8_lossy(&buf[..n]).to_string();
                    assert!(text.contains("\"busy\""), "{text}");
                    assert!(text.contains("unfinished lines"), "{text}");
                    true
                }
                _ => false,
            };
            (s, refused)
        })
        .collect()
}

#[test]
fn partial_lines_share_one_budget() {
    let k = Kilnd::start();
    // 64 MiB for all, beyond the first 64 KiB of each line: 70 lines of ~1 MiB do not fit.
    let first = partial_lines(&k, 70, 1_000_000);
    let refused = first.iter().filter(|(_, r)| *r).count();
    assert!((1..=70 - 60).contains(&refused), "{refused} refused");
    // Ordinary lines (up to 64 KiB) need no budget: others' partial lines cannot starve them.
    let mut c = k.connect();
    assert_eq!(c.call("template.list", json!({})), json!({"templates": []}));
    drop(first);
    std::thread::sleep(Duration::from_millis(500));
    // Closed connections gave their share back: 60 fit again.
    let second = partial_lines(&k, 60, 1_000_000);
    assert_eq!(second.iter().filter(|(_, r)| *r).count(), 0);
    drop(second);
    let mut c = k.connect();
    assert_eq!(c.call("template.list", json!({})), json!({"templates": []}));
}

#[test]
fn soft_fd_limit_is_raised_to_the_hard_one() {
    let k = start_with_nofile("", 256, 4096);
    let pid = k.child.as_ref().unwrap().id();
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let numbers: Vec<&str> = line.split_whitespace().skip(3).take(2).collect();
    assert_eq!(numbers, vec!["4096", "4096"], "{line}");
}

#[test]
fn connections_fit_in_the_fd_limit() {
    // 200 fds, 160 kept back for the store and one build: 40 connections, 8 of them root's.
    let k = start_with_nofile("max_concurrent_builds = 1\n", 200, 200);
    let mut admitted = Vec::new();
    let mut refused = 0;
    for _ in 0..80 {
        let (s, first) = raw_first_line(&k);
        if first["method"] == "hello" {
            admitted.push(s);
        } else {
            assert_refused(&first, s);
            refused += 1;
        }
    }
    assert_eq!((admitted.len(), refused), (40, 40));
    // Everyone admitted is still served, and a place freed is taken again.
    assert_eq!(
        raw_call(&admitted[0], "daemon.status")["result"]["protocol"],
        1
    );
    drop(admitted.pop());
    assert!(eventually(5, || raw_first_line(&k).1["method"] == "hello"));
    assert!(
        !k.log_text().contains("Too many open files"),
        "{}",
        k.log_text()
    );
}

#[test]
fn accept_failures_back_off() {
    let k = Kilnd::start();
    let pid = k.child.as_ref().unwrap().id();
    // The fd limit drops below what kilnd planned for at start: accepts fail (EMFILE).
    let ok = Command::new("prlimit")
        .arg(format!("--pid={pid}"))
        .arg("--nofile=48:48")
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let held: Vec<UnixStream> = (0..60)
        .map(|_| UnixStream::connect(&k.socket).unwrap())
        .collect();
    std::thread::sleep(Duration::from_secs(3));
    // Retried with growing pauses (10 ms doubling to 1 s) and logged at the 1st, 2nd, 4th, 8th
    // failure: a handful of lines, not one per 50 ms.
    let logged = log_count(&k, "accept failed");
    assert!(
        (1..=6).contains(&logged),
        "{logged} lines:\n{}",
        k.log_text()
    );
    drop(held);
    assert!(eventually(10, || raw_first_line(&k).1["method"] == "hello"));
}

/// Sends one request on a raw stream and returns its reply.
fn raw_call(s: &UnixStream, method: &str) -> Value {
    let line = json!({"jsonrpc": "2.0", "id": 77, "method": method});
    (&*s).write_all(format!("{line}\n").as_bytes()).unwrap();
    let mut reader = BufReader::new(s);
    loop {
        let mut text = String::new();
        assert!(reader.read_line(&mut text).unwrap() > 0, "closed");
        let m: Value = serde_json::from_str(&text).unwrap();
        if m["id"] == 77 {
            return m;
        }
    }
}

// ---- defect 8: requests and waits in flight ----

#[test]
fn requests_over_the_limit_get_busy_not_silence() {
    let k = Kilnd::start();
    let mut c = k.connect();
    for i in 0..200 {
        c.call(
            "template.create",
            json!({"template": template(&format!("t-{i:03}"))}),
        );
    }
    // 600 large replies asked for and none read yet: the socket and the writer's queue fill,
    // 64 requests hold their slots waiting to hand their reply over, the rest are refused.
    let mut lines = String::new();
    for id in 0..600 {
        lines.push_str(&format!(
            "{}\n",
            json!({"jsonrpc": "2.0", "id": id, "method": "template.list"})
        ));
    }
    c.send_raw(lines.as_bytes());
    std::thread::sleep(Duration::from_secs(1));
    let mut seen = vec![0; 600];
    let mut busy = 0;
    for _ in 0..600 {
        let r = c.read();
        seen[r["id"].as_u64().unwrap() as usize] += 1;
        match r["error"]["data"]["kind"].as_str() {
            None => assert_eq!(r["result"]["templates"].as_array().unwrap().len(), 200),
            Some("busy") => busy += 1,
            Some(other) => panic!("unexpected {other}: {r}"),
        }
    }
    assert!(seen.iter().all(|&n| n == 1), "every request gets one reply");
    assert!(busy > 0, "none refused");
    assert_eq!(c.call("daemon.status", json!({}))["templates"], 200);
}

#[test]
fn waits_hold_no_request_slot() {
    let _vm = VM.lock().unwrap_or_else(|p| p.into_inner());
    let k = Kilnd::start_with_config(Some("max_concurrent_builds = 1\n"));
    let mut c = k.connect();
    let (running, queued) = builds_in_progress(&k, &mut c, "default");
    let mut w = k.connect();
    let mut lines = String::new();
    for id in 0..64 {
        lines.push_str(&format!(
            "{}\n",
            json!({"jsonrpc": "2.0", "id": id, "method": "build.wait", "params": {"id": queued}})
        ));
    }
    w.send_raw(lines.as_bytes());
    // 64 waits pending: requests still run, a 65th wait is refused.
    assert_eq!(w.call("daemon.status", json!({}))["queue"], 1);
    assert_eq!(
        w.call_err("build.wait", json!({"id": queued})).0,
        "busy",
        "the 65th wait"
    );
    cancel(&mut c, "default", &[&queued, &running]);
    let mut ids: Vec<u64> = (0..64)
        .map(|_| {
            let r = w.read();
            assert_eq!(r["result"]["build"]["state"], "canceled", "{r}");
            r["id"].as_u64().unwrap()
        })
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, (0..64).collect::<Vec<_>>());
}

// ---- defect 9: what a caller sees of other projects ----

const PROJECTS: &str = "max_concurrent_builds = 1\nadmin_group = \"48777\"\n\
    [[project]]\nname = \"alpha\"\nusers = [\"48101\"]\n\
    [[project]]\nname = \"beta\"\nusers = [\"48102\"]\ngroups = [\"48555\"]\n";

/// `uid` (in `groups`) asks for `daemon.status` and `project.list`: the template count, and
/// each listed project as `name` or `name:users` when users are shown.
fn seen_by(k: &Kilnd, uid: u32, groups: &[u32]) -> (u64, u64, u64, Vec<String>) {
    let mut u = UserConn::open(k, uid, groups);
    assert_eq!(first_line(&mut u)["method"], "hello");
    let status = u.call("daemon.status", json!({}));
    let projects = u.call("project.list", json!({}))["projects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let users = p["users"].as_array().unwrap();
            let groups = p["groups"].as_array().unwrap();
            if users.is_empty() && groups.is_empty() {
                p["name"].as_str().unwrap().to_string()
            } else {
                format!(
                    "{}:{}",
                    p["name"].as_str().unwrap(),
                    users.len() + groups.len()
                )
            }
        })
        .collect();
    let n = |key: &str| status[key].as_u64().unwrap();
    (n("templates"), n("queue"), n("running"), projects)
}

#[test]
fn status_and_project_list_show_only_the_callers_projects() {
    let _vm = VM.lock().unwrap_or_else(|p| p.into_inner());
    let k = Kilnd::start_with_config(Some(PROJECTS));
    open_to_all(&k);
    let mut root = k.connect();
    for (project, n) in [("alpha", 2), ("beta", 3), ("default", 1), ("rootonly", 4)] {
        for i in 0..n {
            root.call(
                "template.create",
                json!({"template": template(&format!("t{i}")), "project": project}),
            );
        }
    }
    let (running, queued) = builds_in_progress(&k, &mut root, "beta");
    let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert_eq!(seen_by(&k, ALICE, &[]), (3, 0, 0, v(&["alpha", "default"])));
    assert_eq!(seen_by(&k, BOB, &[]), (5, 1, 1, v(&["beta", "default"])));
    assert_eq!(
        seen_by(&k, STRANGER, &[48555]),
        (5, 1, 1, v(&["beta", "default"]))
    );
    assert_eq!(seen_by(&k, STRANGER, &[]), (1, 0, 0, v(&["default"])));
    let all = v(&["alpha:1", "beta:2", "default", "rootonly"]);
    assert_eq!(seen_by(&k, CAROL, &[ADMIN_GROUP]), (11, 1, 1, all.clone()));
    assert_eq!(seen_by(&k, 0, &[]), (11, 1, 1, all));
    cancel(&mut root, "beta", &[&queued, &running]);
}
