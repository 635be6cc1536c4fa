//! Socket round-trip benchmark: 1,000 templates stored, then `template.get` and `template.list`
//! from 1 and from 32 concurrent clients against a real kilnd. Prints p50/p99 and requests/s.
//! Run: `cargo build --release --bins && cargo bench -p kiln-tests --bench socket`.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use kiln_tests::{template, Conn, Kilnd};
use serde_json::json;

const TEMPLATES: usize = 1000;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn run(k: &Kilnd, method: &str, clients: usize, per_client: usize) {
    let socket = k.socket.clone();
    let start = Instant::now();
    let handles: Vec<_> = (0..clients)
        .map(|c| {
            let socket = socket.clone();
            let method = method.to_string();
            std::thread::spawn(move || {
                let mut conn = Conn::open(&socket);
                let mut lat = Vec::with_capacity(per_client);
                for i in 0..per_client {
                    let params = if method == "template.get" {
                        json!({"name": format!("bench-{:04}", (c * 7919 + i) % TEMPLATES)})
                    } else {
                        json!({})
                    };
                    let t = Instant::now();
                    let r = conn.request(&method, params);
                    lat.push(t.elapsed());
                    assert!(r.get("result").is_some(), "{r}");
                }
                lat
            })
        })
        .collect();
    let mut all: Vec<Duration> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    let wall = start.elapsed();
    all.sort_unstable();
    println!(
        "{method:<14} clients={clients:<3} requests={:<6} p50={:>8.3} ms  p99={:>8.3} ms  {:>9.0} req/s",
        all.len(),
        percentile(&all, 0.50).as_secs_f64() * 1e3,
        percentile(&all, 0.99).as_secs_f64() * 1e3,
        all.len() as f64 / wall.as_secs_f64(),
    );
}

fn main() {
    let k = Kilnd::start();
    let mut c = k.connect();
    let t = Instant::now();
    for i in 0..TEMPLATES {
        c.call(
            "template.create",
            json!({"template": template(&format!("bench-{i:04}"))}),
        );
    }
    println!(
        "stored {TEMPLATES} templates in {:.2} s (one fsync'd transaction each)",
        t.elapsed().as_secs_f64()
    );
    // Warm up.
    for _ in 0..200 {
        c.call("template.get", json!({"name": "bench-0001"}));
    }
    run(&k, "template.get", 1, 5000);
    run(&k, "template.get", 32, 500);
    run(&k, "template.list", 1, 100);
    run(&k, "template.list", 32, 20);
}
