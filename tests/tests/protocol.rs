//! Raw protocol lines against a real kilnd, with the exact replies checked.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};

use kiln_tests::{template, Kilnd};
use serde_json::{json, Value};

#[test]
fn hello_is_the_first_line() {
    let k = Kilnd::start();
    let stream = std::os::unix::net::UnixStream::connect(&k.socket).unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stream), &mut line).unwrap();
    let hello: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(hello["jsonrpc"], "2.0");
    assert_eq!(hello["method"], "hello");
    assert_eq!(hello["params"]["server"], "kilnd");
    assert_eq!(hello["params"]["protocol"], 1);
    assert!(hello.get("id").is_none());
}

#[test]
fn template_lifecycle() {
    let k = Kilnd::start();
    let mut c = k.connect();
    assert_eq!(
        c.call("template.create", json!({"template": template("web")})),
        json!({"name": "web", "revision": 1})
    );
    let (kind, _) = c.call_err("template.create", json!({"template": template("web")}));
    assert_eq!(kind, "conflict");

    let got = c.call("template.get", json!({"name": "web"}));
    assert_eq!(got["revision"], 1);
    assert_eq!(got["template"]["name"], "web");
    assert_eq!(got["template"]["applications"], json!(["nginx"]));

    let list = c.call("template.list", json!({}));
    assert_eq!(list["templates"].as_array().unwrap().len(), 1);
    assert_eq!(list["templates"][0]["name"], "web");
    assert_eq!(list["templates"][0]["os"], "debian-12");

    let mut t2 = template("web");
    t2["description"] = json!("second");
    assert_eq!(
        c.call("template.update", json!({"name": "web", "template": t2})),
        json!({"name": "web", "revision": 2})
    );
    assert_eq!(
        c.call("template.get", json!({"name": "web"}))["template"]["description"],
        "second"
    );
    assert_eq!(
        c.call("template.get", json!({"name": "web", "revision": 1}))["template"]["description"],
        "test template"
    );
    let revs = c.call("template.revisions", json!({"name": "web"}));
    let numbers: Vec<u64> = revs["revisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["revision"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, vec![1, 2]);
    assert_eq!(
        c.call_err("template.get", json!({"name": "web", "revision": 9}))
            .0,
        "not_found"
    );

    assert_eq!(c.call("template.delete", json!({"name": "web"})), json!({}));
    assert_eq!(
        c.call_err("template.get", json!({"name": "web"})).0,
        "not_found"
    );
    assert_eq!(
        c.call_err("template.delete", json!({"name": "web"})).0,
        "not_found"
    );
    assert_eq!(c.call("template.list", json!({})), json!({"templates": []}));
}

#[test]
fn invalid_template_reports_every_violation() {
    let k = Kilnd::start();
    let mut c = k.connect();
    let mut bad = template("x");
    bad["vm"] = json!({"cpus": 0});
    bad["build_timeout_minutes"] = json!(3);
    bad["distribute"] = json!([]);
    let (kind, err) = c.call_err("template.create", json!({"template": bad}));
    assert_eq!(kind, "invalid_template");
    assert_eq!(err["code"], -32001);
    let paths: Vec<&str> = err["data"]["violations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["path"].as_str().unwrap())
        .collect();
    for p in ["vm.cpus", "build_timeout_minutes", "distribute"] {
        assert!(paths.contains(&p), "{p} missing from {paths:?}");
    }
    // Nothing invalid is stored.
    assert_eq!(c.call("template.list", json!({})), json!({"templates": []}));

    let v = c.call("template.validate", json!({"template": bad}));
    assert_eq!(v["valid"], false);
    assert!(v["violations"].as_array().unwrap().len() >= 3);
    assert_eq!(
        c.call("template.validate", json!({"template": template("ok")})),
        json!({"valid": true, "violations": []})
    );

    // A shape error (wrong type) names the field.
    let mut wrong = template("y");
    wrong["vm"] = json!({"cpus": "two"});
    let (kind, err) = c.call_err("template.create", json!({"template": wrong}));
    assert_eq!(kind, "invalid_template");
    assert_eq!(err["data"]["violations"][0]["path"], "vm.cpus");
}

#[test]
fn malformed_lines_keep_the_connection() {
    let k = Kilnd::start();
    let mut c = k.connect();
    c.send_raw(b"{not json\n");
    let r = c.read();
    assert_eq!(r["id"], serde_json::Value::Null);
    assert_eq!(r["error"]["code"], -32700);
    assert_eq!(r["error"]["data"]["kind"], "parse_error");

    c.send_raw(b"[1,2]\n");
    let batch = c.read();
    assert_eq!(
        batch[0]["error"]["data"]["kind"], "invalid_request",
        "{batch}"
    );
    assert_eq!(
        batch[1]["error"]["data"]["kind"], "invalid_request",
        "{batch}"
    );
    c.send_raw(b"{\"jsonrpc\":\"1.0\",\"id\":5,\"method\":\"template.list\"}\n");
    let r = c.read();
    assert_eq!(
        (r["id"].clone(), r["error"]["data"]["kind"].clone()),
        (json!(5), json!("invalid_request"))
    );

    let (kind, err) = c.call_err("no.such.method", json!({}));
    assert_eq!(
        (kind.as_str(), err["code"].clone()),
        ("method_not_found", json!(-32601))
    );
    assert_eq!(
        c.call_err("template.get", json!({"nom": "x"})).0,
        "invalid_params"
    );

    // Still usable after all of that.
    assert_eq!(c.call("template.list", json!({})), json!({"templates": []}));
}

#[test]
fn oversized_line_is_refused_and_closed() {
    let k = Kilnd::start();
    let mut c = k.connect();
    let big = vec![b'x'; 2 * 1024 * 1024];
    // The daemon may close before we finish writing; that is the point.
    let _ = c.stream.write_all(&big);
    let r = c.read();
    assert_eq!(r["error"]["data"]["kind"], "too_large", "{r}");
    assert!(c.read().is_null(), "connection should be closed");
    // The daemon itself is fine.
    let mut c2 = k.connect();
    assert_eq!(
        c2.call("template.list", json!({})),
        json!({"templates": []})
    );
}

#[test]
fn requests_in_flight_on_one_connection() {
    let k = Kilnd::start();
    let mut c = k.connect();
    let mut lines = String::new();
    for i in 0..20 {
        let t = template(&format!("t{i}"));
        lines.push_str(&format!(
            "{}\n",
            json!({"jsonrpc":"2.0","id": i,"method":"template.create","params":{"template": t}})
        ));
    }
    // All twenty are written before any reply is read.
    c.send_raw(lines.as_bytes());
    let mut ids: Vec<u64> = (0..20).map(|_| c.read()["id"].as_u64().unwrap()).collect();
    ids.sort_unstable();
    assert_eq!(ids, (0..20).collect::<Vec<_>>());
    assert_eq!(
        c.call("template.list", json!({}))["templates"]
            .as_array()
            .unwrap()
            .len(),
        20
    );
}

#[test]
fn client_hanging_up_mid_reply_harms_nothing() {
    let k = Kilnd::start();
    let mut c = k.connect();
    for i in 0..200 {
        c.call(
            "template.create",
            json!({"template": template(&format!("tpl-{i:03}"))}),
        );
    }
    // Ask for large replies many times and vanish without reading them.
    for _ in 0..20 {
        let mut c = k.connect();
        for id in 0..50 {
            c.send_raw(
                format!(
                    "{}\n",
                    json!({"jsonrpc":"2.0","id":id,"method":"template.list"})
                )
                .as_bytes(),
            );
        }
        c.stream.shutdown(std::net::Shutdown::Both).unwrap();
    }
    let mut c2 = k.connect();
    assert_eq!(
        c2.call("template.list", json!({}))["templates"]
            .as_array()
            .unwrap()
            .len(),
        200
    );
    assert_eq!(c2.call("daemon.status", json!({}))["templates"], 200);
}

#[test]
fn notifications_get_no_reply() {
    let k = Kilnd::start();
    let mut c = k.connect();
    c.send_raw(b"{\"jsonrpc\":\"2.0\",\"method\":\"template.list\"}\n");
    // The next reply on the wire is for the request below, not for the notification.
    let r = c.request("daemon.status", json!({}));
    assert_eq!(r["result"]["protocol"], 1);
}

#[test]
fn daemon_status_and_projects() {
    let k = Kilnd::start_with_config(Some(
        "max_concurrent_builds = 3\n[[project]]\nname = \"web\"\nusers = [\"root\"]\n\
         [[project]]\nname = \"closed\"\nusers = [\"nobody-here-4242\"]\n",
    ));
    let mut c = k.connect();
    let s = c.call("daemon.status", json!({}));
    assert_eq!(s["max_concurrent_builds"], 3);
    assert_eq!(s["protocol"], 1);
    assert_eq!(s["caller"]["project"], "default");
    assert_eq!(s["socket"], k.socket.display().to_string());
    let p = c.call("project.list", json!({}));
    let names: Vec<&str> = p["projects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["closed", "default", "web"]);

    // Projects keep their templates apart.
    c.call(
        "template.create",
        json!({"template": template("same"), "project": "web"}),
    );
    c.call("template.create", json!({"template": template("same")}));
    assert_eq!(
        c.call("template.list", json!({"project": "web"}))["templates"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        c.call_err("template.get", json!({"name": "same", "project": "closed"}))
            .0,
        "not_found"
    );
}

#[test]
fn socket_and_directory_are_private() {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let k = Kilnd::start();
    let sock = std::fs::metadata(&k.socket).unwrap();
    assert!(sock.file_type().is_socket());
    assert_eq!(sock.mode() & 0o777, 0o600);
    let dir = std::fs::metadata(k.socket.parent().unwrap()).unwrap();
    assert_eq!(dir.mode() & 0o777, 0o700);
    // A file path, never the abstract namespace.
    let unix = std::fs::read_to_string("/proc/net/unix").unwrap();
    assert!(unix.contains(&k.socket.display().to_string()));
    assert!(!unix.lines().any(|l| l.ends_with("@kiln.sock")));
}

/// The next `event` notification of subscription `sub` (skipping anything else).
fn next_event(c: &mut kiln_tests::Conn, sub: &Value) -> Value {
    loop {
        let m = c.read();
        assert!(!m.is_null(), "connection closed");
        if m["method"] == "event" && m["params"]["sub"] == *sub {
            return m["params"].clone();
        }
    }
}

#[test]
fn events_tell_of_template_and_build_changes() {
    let k = Kilnd::start();
    k.import_empty_base();
    let mut events = k.connect();
    let sub = events.call("events.subscribe", json!({}))["sub"].clone();
    let mut c = k.connect();

    c.call("template.create", json!({"template": template("ev")}));
    let e = next_event(&mut events, &sub);
    assert_eq!(
        (&e["kind"], &e["name"], &e["template"]["revision"]),
        (&json!("template"), &json!("ev"), &json!(1)),
        "{e}"
    );

    let id =
        c.call("build.start", json!({"template": "ev", "image_name": "x"}))["build"]["id"].clone();
    let e = next_event(&mut events, &sub);
    assert_eq!(
        (&e["kind"], &e["build"]["id"]),
        (&json!("build"), &id),
        "{e}"
    );
    c.call("build.cancel", json!({"id": id}));
    loop {
        let e = next_event(&mut events, &sub);
        assert_eq!(e["kind"], "build", "{e}");
        if e["build"]["state"] == "canceled" {
            break;
        }
    }

    c.call("template.delete", json!({"name": "ev"}));
    // The canceled build may still be saved once more as its cleanup ends (a build event).
    let e = loop {
        let e = next_event(&mut events, &sub);
        if e["kind"] != "build" {
            break e;
        }
        assert_eq!(e["build"]["state"], "canceled", "{e}");
    };
    assert_eq!((&e["kind"], &e["name"]), (&json!("template"), &json!("ev")));
    assert!(
        e.get("template").is_none(),
        "a deleted template has no summary: {e}"
    );

    // Unsubscribed: the stream ends, and later changes send nothing.
    assert_eq!(
        events.call("events.unsubscribe", json!({"sub": sub})),
        json!({})
    );
    c.call("template.create", json!({"template": template("quiet")}));
    let request = json!({"jsonrpc": "2.0", "id": 7, "method": "daemon.status", "params": {}});
    events.send_raw(format!("{request}\n").as_bytes());
    loop {
        let m = events.read();
        assert_ne!(m["method"], "event", "an event after unsubscribing: {m}");
        if m["id"] == 7 {
            break;
        }
    }
    let (kind, _) = events.call_err("events.unsubscribe", json!({"sub": sub}));
    assert_eq!(kind, "not_found");
}

/// One name rule for every method (kiln-shared's `names`): a name with a zero-width space is
/// refused by template.create, image.import and build.start with the same message, and a name
/// the rule allows (spaces inside, `$(id)`) is taken by all of them alike. Paths sent over the
/// socket are absolute: a relative one is a violation naming its field.
#[test]
fn one_name_rule_for_every_method() {
    let k = Kilnd::start();
    k.import_empty_base();
    let disk = k.dir.path().join("empty.qcow2");
    let mut c = k.connect();
    c.call("template.create", json!({"template": template("web")}));

    let bad = "web-base\u{200b}";
    let rule = kiln_shared::names::check(bad).unwrap_err().to_string();
    assert!(
        rule.starts_with(r#""web-base\u{200b}" contains U+200B"#),
        "{rule}"
    );

    let (kind, err) = c.call_err("template.create", json!({"template": template(bad)}));
    assert_eq!(kind, "invalid_template");
    assert_eq!(
        err["data"]["violations"],
        json!([{"path": "name", "message": rule}])
    );
    let import =
        |name: &str| json!({"path": disk, "name": name, "os": "debian-12", "user": "debian"});
    let (kind, err) = c.call_err("image.import", import(bad));
    assert_eq!(kind, "invalid_params");
    assert_eq!(err["message"], format!("name {rule}"));
    let (kind, err) = c.call_err("build.start", json!({"template": "web", "image_name": bad}));
    assert_eq!(kind, "invalid_params");
    assert_eq!(err["message"], format!("image_name {rule}"));
    let (kind, err) = c.call_err("daemon.status", json!({"project": bad}));
    assert_eq!(kind, "invalid_params");
    assert_eq!(err["message"], format!("project {rule}"));

    // The other names of the issue, each refused by all three methods.
    for bad in [
        "web\u{202e}",
        "\u{feff}web",
        "web\u{2028}",
        ".",
        "..",
        "-x",
        "a/b",
    ] {
        let rule = kiln_shared::names::check(bad).unwrap_err().to_string();
        let (_, err) = c.call_err("template.create", json!({"template": template(bad)}));
        assert_eq!(err["data"]["violations"][0]["message"], rule, "{bad:?}");
        let (_, err) = c.call_err("image.import", import(bad));
        assert_eq!(err["message"], format!("name {rule}"), "{bad:?}");
        let (_, err) = c.call_err("build.start", json!({"template": "web", "image_name": bad}));
        assert_eq!(err["message"], format!("image_name {rule}"), "{bad:?}");
    }

    // What import took, build.start takes too (it used to refuse spaces and `$`).
    let fine = "web base $(id)";
    assert_eq!(c.call("image.import", import(fine))["image"]["name"], fine);
    let build = c.call(
        "build.start",
        json!({"template": "web", "image_name": fine}),
    )["build"]
        .clone();
    assert_eq!(build["image_name"], fine);
    c.call("build.cancel", json!({"id": build["id"]}));

    // A relative path means nothing to kilnd: refused with the field's path.
    let mut relative = template("rel");
    relative["customize"] =
        json!([{"type": "file", "name": "motd", "source": "rel/path", "destination": "/tmp/motd"}]);
    let (kind, err) = c.call_err("template.create", json!({"template": relative}));
    assert_eq!(kind, "invalid_template");
    assert_eq!(err["data"]["violations"][0]["path"], "customize[0].source");
    let message = err["data"]["violations"][0]["message"].as_str().unwrap();
    assert!(message.contains("is relative"), "{message}");
}

/// Writes `input` (one or more lines) on a fresh connection, half-closes it, and describes every
/// reply line until kilnd closes: `ID ok` or `ID KIND` per reply, with ID exactly as kilnd wrote
/// it; a batch reply as `[...]` of its members (sorted: a batch's replies come in any order);
/// lines joined by `; `. Nothing at all is "".
fn replies(k: &kiln_tests::Kilnd, input: &str) -> String {
    use serde_json::value::RawValue;
    let describe = |raw: &RawValue| {
        let members: std::collections::BTreeMap<String, &RawValue> =
            serde_json::from_str(raw.get()).unwrap_or_else(|e| panic!("{raw}: {e}"));
        let kind = members.get("error").map_or("ok".to_string(), |e| {
            let e: Value = serde_json::from_str(e.get()).unwrap();
            e["data"]["kind"].as_str().unwrap().to_string()
        });
        format!("{} {kind}", members["id"].get())
    };
    let mut s = std::os::unix::net::UnixStream::connect(&k.socket).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    s.write_all(input.as_bytes()).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let mut lines = text.lines();
    assert!(lines.next().unwrap().contains("\"hello\""));
    lines
        .map(|line| {
            if line.starts_with('[') {
                let members: Vec<&RawValue> = serde_json::from_str(line).unwrap();
                let mut d: Vec<String> = members.into_iter().map(describe).collect();
                d.sort();
                format!("[{}]", d.join(", "))
            } else {
                describe(serde_json::from_str::<&RawValue>(line).unwrap())
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// `input` gets exactly `expected` (see [`replies`]).
fn check(k: &kiln_tests::Kilnd, input: &str, expected: &str) {
    assert_eq!(replies(k, &format!("{input}\n")), expected, "for {input}");
}

#[test]
fn json_rpc_ids_come_back_byte_for_byte() {
    let k = Kilnd::start();
    let status = |id: &str| format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"daemon.status"}}"#);
    for id in [
        "123456789012345678901234567890",
        "-7",
        "1.50",
        "1e400",
        "0",
        r#""abc""#,
        r#""caf\u00e9 \"q\"""#,
        r#""""#,
        "null",
    ] {
        check(&k, &status(id), &format!("{id} ok"));
    }
    // Any other id type is refused, and the reply cannot carry it.
    for id in ["[1]", "{}", "true", "false", r#"{"a":1}"#] {
        check(&k, &status(id), "null invalid_request");
    }
    // A notification (no id member) gets nothing, even when it fails.
    check(&k, r#"{"jsonrpc":"2.0","method":"daemon.status"}"#, "");
    check(&k, r#"{"jsonrpc":"2.0","method":"no.such"}"#, "");
    // Not a request at all: answered with id null.
    check(&k, r#"{"jsonrpc":"2.0","id":3}"#, "3 invalid_request");
    check(
        &k,
        r#"{"id":4,"method":"daemon.status"}"#,
        "4 invalid_request",
    );
    check(&k, "7", "null invalid_request");
    check(&k, "{bad", "null parse_error");
}

#[test]
fn json_rpc_batches_are_answered_as_an_array() {
    let k = Kilnd::start();
    let req = |id: u32, method: &str| {
        format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"{method}","params":{{}}}}"#)
    };
    let note = r#"{"jsonrpc":"2.0","method":"template.list"}"#;
    check(
        &k,
        &format!(
            "[{},{note},{},{}]",
            req(1, "template.list"),
            req(2, "no.such"),
            req(3, "daemon.status")
        ),
        "[1 ok, 2 method_not_found, 3 ok]",
    );
    check(&k, "[]", "null invalid_request");
    check(&k, &format!("[{note},{note}]"), "");
    check(
        &k,
        "[1, true]",
        "[null invalid_request, null invalid_request]",
    );
    check(
        &k,
        &format!("[{},", req(1, "template.list")),
        "null parse_error",
    );
    // Each member takes a request slot: of 70, 64 run (and fail, with no template) and 6 are
    // `busy`; all 70 are answered.
    let big: Vec<String> = (0..70).map(|i| req(i, "template.create")).collect();
    let reply = replies(&k, &format!("[{}]\n", big.join(",")));
    let count = |kind: &str| reply.matches(&format!(" {kind}")).count();
    assert_eq!((count("invalid_params"), count("busy")), (64, 6), "{reply}");
    // A stream opened in a batch starts after the batch's reply.
    let mut c = k.connect();
    c.send_raw(format!("[{}]\n", req(9, "events.subscribe")).as_bytes());
    let r = c.read();
    assert_eq!(r[0]["id"], 9, "{r}");
    assert!(r[0]["result"]["sub"].is_u64(), "{r}");
}
