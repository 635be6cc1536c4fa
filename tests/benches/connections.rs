//! What clients cost kilnd: its resident memory idle, with 1,000 connections tried (up to
//! `max_connections` admitted, the rest refused with `busy`), with 10,000 subscriptions over the
//! admitted connections, with every admitted connection holding a ~1 MiB unfinished line, with
//! 20,000 subscribes pipelined on one connection, and after every client closed (twice over).
//! Prints figures;
//! times nothing. Run: `cargo build --release --bins && cargo bench -p kiln-tests --bench
//! connections`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use kiln_tests::Kilnd;
use serde_json::{json, Value};

const CONNECTIONS: usize = 1000;
const SUBSCRIPTIONS: usize = 10_000;
const PER_CONNECTION: usize = 64;

/// kilnd's resident set, in MB.
fn rss_mb(k: &Kilnd) -> f64 {
    let pid = k.child.as_ref().unwrap().id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb / 1024.0
}

fn report(k: &Kilnd, what: &str) {
    // Let kilnd finish what the last step started.
    std::thread::sleep(Duration::from_secs(1));
    println!("{what:<68} RSS {:>7.1} MB", rss_mb(k));
}

/// A connection and its reader.
struct Client {
    stream: UnixStream,
    reader: BufReader<UnixStream>,
}

impl Client {
    fn line(&mut self) -> Value {
        let mut text = String::new();
        if self.reader.read_line(&mut text).unwrap_or(0) == 0 {
            return Value::Null;
        }
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }
}

/// Connects; `None` when kilnd refused (its one `busy` line).
fn connect(k: &Kilnd) -> Option<Client> {
    let stream = UnixStream::connect(&k.socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let reader = BufReader::new(stream.try_clone().unwrap());
    let mut c = Client { stream, reader };
    let first = c.line();
    if first["method"] == "hello" {
        Some(c)
    } else {
        assert_eq!(first["error"]["data"]["kind"], "busy", "{first}");
        None
    }
}

fn subscribe_lines(n: usize) -> Vec<u8> {
    let mut lines = Vec::new();
    for id in 0..n {
        let line = json!({"jsonrpc": "2.0", "id": id, "method": "events.subscribe"});
        lines.extend_from_slice(format!("{line}\n").as_bytes());
    }
    lines
}

/// Lets this process hold as many sockets as its hard limit allows.
fn raise_own_fd_limit() {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    let hard = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(4))
        .unwrap()
        .to_string();
    let _ = std::process::Command::new("prlimit")
        .arg(format!("--pid={}", std::process::id()))
        .arg(format!("--nofile={hard}:{hard}"))
        .status();
}

fn main() {
    raise_own_fd_limit();
    let k = Kilnd::start();
    report(&k, "kilnd idle (default max_connections = 256)");
    round(&k, true);
    // Again: what the first round left is reused, not added to.
    round(&k, false);
    report(&k, "every client closed, after the same again");
}

/// Every step once; `loud` reports each, otherwise only the last.
fn round(k: &Kilnd, loud: bool) {
    let report = |k: &Kilnd, what: &str| {
        if loud {
            report(k, what);
        }
    };

    let mut clients: Vec<Client> = Vec::new();
    let mut refused = 0;
    for _ in 0..CONNECTIONS {
        match connect(k) {
            Some(c) => clients.push(c),
            None => refused += 1,
        }
    }
    report(
        k,
        &format!(
            "{CONNECTIONS} connections tried: {} admitted (root: 256 + 8), {refused} refused",
            clients.len()
        ),
    );

    let mut subs = 0;
    let mut used = 0;
    for c in clients.iter_mut() {
        if subs >= SUBSCRIPTIONS {
            break;
        }
        let n = PER_CONNECTION.min(SUBSCRIPTIONS - subs);
        c.stream.write_all(&subscribe_lines(n)).unwrap();
        for _ in 0..n {
            let r = c.line();
            assert!(r["result"]["sub"].is_u64(), "{r}");
        }
        subs += n;
        used += 1;
    }
    report(k, &format!("+ {subs} subscriptions on {used} of them"));

    let mut partial = br#"{"jsonrpc":"2.0","id":1,"method":"template.list","pad":""#.to_vec();
    partial.resize(1_000_000, b'x');
    for c in clients.iter_mut() {
        let _ = c.stream.write_all(&partial);
    }
    std::thread::sleep(Duration::from_millis(500));
    let mut over_budget = 0;
    for c in clients.iter_mut() {
        c.stream.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 512];
        if matches!((&c.stream).read(&mut buf), Ok(n) if n > 0) {
            over_budget += 1;
        }
    }
    report(
        k,
        &format!(
            "+ a 1 MB unfinished line on each: {} held, {over_budget} refused",
            clients.len() - over_budget
        ),
    );

    let subscribing = std::thread::spawn({
        let mut c = connect(k).unwrap_or_else(|| {
            // Every place is taken: make one.
            drop(clients.pop());
            std::thread::sleep(Duration::from_millis(200));
            connect(k).expect("a freed place")
        });
        let mut writer = c.stream.try_clone().unwrap();
        std::thread::spawn(move || writer.write_all(&subscribe_lines(20_000)).unwrap());
        move || {
            let (mut ok, mut busy) = (0, 0);
            for _ in 0..20_000 {
                let r = c.line();
                if r["result"]["sub"].is_u64() {
                    ok += 1;
                } else if r["error"]["data"]["kind"] == "busy" {
                    busy += 1;
                }
            }
            (c, ok, busy)
        }
    });
    let (one, ok, busy) = subscribing.join().unwrap();
    report(
        k,
        &format!("+ 20000 subscribes pipelined on one connection: {ok} ok, {busy} busy"),
    );

    drop(one);
    drop(clients);
    // The partial lines still held end at their 10 s deadline.
    std::thread::sleep(Duration::from_secs(10));
    report(k, "every client closed");
}
