//! JSON-RPC 2.0 framing: ids kept byte for byte, requests and batches as the daemon decodes them,
//! responses, notifications and the client's view of any line the daemon sends.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

use super::{ErrorKind, RpcError};

/// A request id exactly as the client wrote it: a string, a number or null (JSON-RPC 2.0's
/// three id types), sent back byte for byte, so `123456789012345678901234567890` stays itself.
#[derive(Debug, Clone)]
pub struct Id(Box<RawValue>);

impl Id {
    /// The id of a reply to a line whose id could not be read.
    pub fn null() -> Id {
        Id::from_text("null")
    }

    pub fn number(n: u64) -> Id {
        Id::from_text(&n.to_string())
    }

    /// `raw` as an id; `None` unless it is a string, a number or null.
    pub fn from_raw(raw: &RawValue) -> Option<Id> {
        match raw.get().as_bytes().first() {
            Some(b'"' | b'-' | b'0'..=b'9' | b'n') => Some(Id(raw.to_owned())),
            _ => None,
        }
    }

    fn from_text(text: &str) -> Id {
        // Only called with valid JSON; the default is `null`.
        Id(RawValue::from_string(text.to_string()).unwrap_or_default())
    }

    /// The id as written on the wire.
    pub fn as_json(&self) -> &str {
        self.0.get()
    }

    pub fn as_u64(&self) -> Option<u64> {
        self.0.get().parse().ok()
    }

    pub fn is_null(&self) -> bool {
        self.0.get() == "null"
    }
}

impl PartialEq for Id {
    fn eq(&self, other: &Id) -> bool {
        self.0.get() == other.0.get()
    }
}

impl Serialize for Id {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

/// Through a `Value`, so it works inside untagged enums (the client's [`ServerMessage`]); a number
/// beyond f64 loses digits here. The daemon reads ids exactly with [`Incoming::parse`].
impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Id, D::Error> {
        let v = Value::deserialize(d)?;
        match v {
            Value::Null | Value::String(_) | Value::Number(_) => Ok(Id::from_text(&v.to_string())),
            _ => Err(serde::de::Error::custom(
                "an id is a string, a number or null",
            )),
        }
    }
}

/// A present `"id": null` is `Some(null)`, not a missing id.
fn present_id<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Id>, D::Error> {
    Id::deserialize(d).map(Some)
}

/// A request (with `id`) or a notification (without) sent to the daemon.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    pub jsonrpc: String,
    #[serde(
        default,
        deserialize_with = "present_id",
        skip_serializing_if = "Option::is_none"
    )]
    pub id: Option<Id>,
    pub method: String,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub params: Value,
}

impl Request {
    pub fn new(id: u64, method: &str, params: Value) -> Request {
        Request {
            jsonrpc: "2.0".into(),
            id: Some(Id::number(id)),
            method: method.into(),
            params,
        }
    }
}

/// One line as the daemon reads it (JSON-RPC 2.0, section 6 for batches).
#[derive(Debug)]
pub enum Incoming {
    One(Call),
    /// A non-empty JSON array: answered with an array of the replies its requests get (none
    /// at all when every member is a notification).
    Batch(Vec<Call>),
    /// Nothing to run: the line is not JSON, or an empty batch.
    Reply(Response),
}

/// One member of a line: a request to run, or the error reply an invalid one gets.
#[derive(Debug)]
pub enum Call {
    Request(Request),
    Invalid(Response),
}

/// The members of a request object, read without deciding anything yet.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, default, deserialize_with = "present_raw")]
    id: Option<&'a RawValue>,
    #[serde(default)]
    jsonrpc: Option<Value>,
    #[serde(default)]
    method: Option<Value>,
    #[serde(default)]
    params: Option<Value>,
}

fn present_raw<'de: 'a, 'a, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<&'a RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

impl Incoming {
    /// Decodes one line; ids are kept exactly as written.
    pub fn parse(line: &[u8]) -> Incoming {
        let parse_error = |e: &dyn std::fmt::Display| {
            Incoming::Reply(Response::err(
                Id::null(),
                RpcError::new(ErrorKind::ParseError, format!("not valid JSON: {e}")),
            ))
        };
        let text = match std::str::from_utf8(line) {
            Ok(t) => t,
            Err(e) => return parse_error(&e),
        };
        if text.trim_start().starts_with('[') {
            match serde_json::from_str::<Vec<&RawValue>>(text) {
                Err(e) => parse_error(&e),
                Ok(members) if members.is_empty() => Incoming::Reply(Response::err(
                    Id::null(),
                    RpcError::new(
                        ErrorKind::InvalidRequest,
                        "an empty batch: send at least one request in the array",
                    ),
                )),
                Ok(members) => Incoming::Batch(members.into_iter().map(Call::from_raw).collect()),
            }
        } else {
            match serde_json::from_str::<&RawValue>(text) {
                Err(e) => parse_error(&e),
                Ok(raw) => Incoming::One(Call::from_raw(raw)),
            }
        }
    }
}

impl Call {
    fn from_raw(raw: &RawValue) -> Call {
        let invalid = |id: Option<Id>, message: String| {
            Call::Invalid(Response::err(
                id.unwrap_or_else(Id::null),
                RpcError::new(ErrorKind::InvalidRequest, message),
            ))
        };
        let env: Envelope<'_> = match serde_json::from_str(raw.get()) {
            Ok(e) => e,
            Err(e) => return invalid(None, format!("not a JSON-RPC 2.0 request object: {e}")),
        };
        let id = match env.id.map(Id::from_raw) {
            None => None,
            Some(Some(id)) => Some(id),
            Some(None) => {
                return invalid(None, "id must be a string, a number or null".to_string())
            }
        };
        if env.jsonrpc.as_ref().and_then(Value::as_str) != Some("2.0") {
            return invalid(id, "jsonrpc must be \"2.0\"".to_string());
        }
        let method = match env.method {
            Some(Value::String(m)) => m,
            _ => return invalid(id, "method must be a string".to_string()),
        };
        Call::Request(Request {
            jsonrpc: "2.0".into(),
            id,
            method,
            params: env.params.unwrap_or(Value::Null),
        })
    }
}

/// A reply to one request: exactly one of `result` and `error`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    pub jsonrpc: String,
    pub id: Id,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<RpcError>,
}

impl Response {
    pub fn ok(id: Id, result: Value) -> Response {
        Response {
            jsonrpc: "2.0".into(),
            id,
            result: Some(result),
            error: None,
        }
    }
    pub fn err(id: Id, error: RpcError) -> Response {
        Response {
            jsonrpc: "2.0".into(),
            id,
            result: None,
            error: Some(error),
        }
    }
}

/// A message from the daemon that answers no request (`hello`, `build.log`, events).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Notification {
    pub jsonrpc: String,
    pub method: String,
    #[serde(default)]
    pub params: Value,
}

impl Notification {
    pub fn new(method: &str, params: Value) -> Notification {
        Notification {
            jsonrpc: "2.0".into(),
            method: method.into(),
            params,
        }
    }

    /// The notification that carries `params`, named by the method table.
    pub fn of<N: crate::methods::Notice>(params: &N) -> Notification {
        Notification::new(N::NAME, serde_json::to_value(params).unwrap_or_default())
    }

    /// The params of this notification as `N`; `None` when it is another one (or malformed).
    pub fn decode<N: crate::methods::Notice>(&self) -> Option<N> {
        if self.method != N::NAME {
            return None;
        }
        serde_json::from_value(self.params.clone()).ok()
    }
}

/// Any line the daemon sends: a response has an `id`, a notification a `method`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ServerMessage {
    Response(Response),
    Notification(Notification),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn describe(call: &Call) -> String {
        match call {
            Call::Request(r) => {
                let id = r.id.as_ref().map_or("-", Id::as_json);
                format!("{} {id}", r.method)
            }
            Call::Invalid(r) => format!("invalid {}", r.id.as_json()),
        }
    }

    /// `line` decodes to `expected`: `METHOD ID` (`-` for a notification), `invalid ID`, a
    /// batch as `[a, b]`, or `reply KIND` for a line answered without running anything.
    fn check(line: &str, expected: &str) {
        let got = match Incoming::parse(line.as_bytes()) {
            Incoming::One(c) => describe(&c),
            Incoming::Batch(cs) => {
                let d: Vec<String> = cs.iter().map(describe).collect();
                format!("[{}]", d.join(", "))
            }
            Incoming::Reply(r) => format!("reply {}", r.error.map_or("?", |e| e.kind().as_str())),
        };
        assert_eq!(got, expected, "for {line}");
    }

    #[test]
    fn decodes_lines() {
        check(r#"{"jsonrpc":"2.0","id":7,"method":"a"}"#, "a 7");
        check(r#"{"jsonrpc":"2.0","id":null,"method":"a"}"#, "a null");
        check(r#"{"jsonrpc":"2.0","method":"a"}"#, "a -");
        check(
            r#"{"jsonrpc":"2.0","id":123456789012345678901234567890,"method":"a"}"#,
            "a 123456789012345678901234567890",
        );
        check(
            r#"{"jsonrpc":"2.0","id":"x\u0041","method":"a"}"#,
            r#"a "x\u0041""#,
        );
        check(r#"{"jsonrpc":"2.0","id":-1.5e3,"method":"a"}"#, "a -1.5e3");
        check(r#"{"jsonrpc":"2.0","id":[1],"method":"a"}"#, "invalid null");
        check(
            r#"{"jsonrpc":"2.0","id":true,"method":"a"}"#,
            "invalid null",
        );
        check(r#"{"jsonrpc":"2.0","id":{},"method":"a"}"#, "invalid null");
        check(r#"{"jsonrpc":"1.0","id":5,"method":"a"}"#, "invalid 5");
        check(r#"{"jsonrpc":"2.0","id":5,"method":5}"#, "invalid 5");
        check(r#"{"jsonrpc":"2.0","id":5}"#, "invalid 5");
        check("3", "invalid null");
        check(
            r#"[{"jsonrpc":"2.0","id":1,"method":"a"}, 2, {"jsonrpc":"2.0","method":"b"}]"#,
            "[a 1, invalid null, b -]",
        );
        check("  [ ]", "reply invalid_request");
        check("[1,", "reply parse_error");
        check("{", "reply parse_error");
        check("\u{0}", "reply parse_error");
    }

    #[test]
    fn ids_serialize_as_written() {
        let raw: Box<RawValue> =
            RawValue::from_string("123456789012345678901234567890".into()).unwrap_or_default();
        let id = Id::from_raw(&raw).unwrap_or_else(Id::null);
        let line = serde_json::to_string(&Response::ok(id, Value::Null)).unwrap_or_default();
        assert!(
            line.contains(r#""id":123456789012345678901234567890"#),
            "{line}"
        );
        // The client reads its own (u64) ids back through untagged ServerMessage.
        let back: ServerMessage = serde_json::from_str(r#"{"jsonrpc":"2.0","id":42,"result":{}}"#)
            .unwrap_or_else(|e| {
                panic!("{e}");
            });
        assert!(matches!(back, ServerMessage::Response(r) if r.id.as_u64() == Some(42)));
    }
}
