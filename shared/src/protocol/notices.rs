//! Params of the notifications kilnd sends: `hello`, `image.progress`, the lines and end of a
//! `build.logs` stream and the events of an `events.subscribe` subscription.

use serde::{Deserialize, Serialize};

use super::TemplateSummary;

/// Params of `hello`, the daemon's first line on every connection.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hello {
    pub server: String,
    pub version: String,
    pub protocol: u32,
}

/// Params of the `image.progress` notification sent while an image is being made.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageProgress {
    pub line: String,
}

/// Params of a `build.log` notification: one line of the stream `sub`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogNote {
    pub sub: u64,
    #[serde(flatten)]
    pub line: crate::build::LogLine,
}

/// Params of `build.log.end`, the last notification of a `build.logs` stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogEnd {
    pub sub: u64,
    /// The build's state when the stream ended (`null` if the build is gone).
    pub state: Option<crate::build::BuildState>,
    /// The sequence number of the next line: how many lines the build log had sent so far.
    pub lines: u64,
    /// Whether `build.logs.unsubscribe` ended it (rather than the build ending).
    pub unsubscribed: bool,
}

/// Params of an `event` notification, sent to an `events.subscribe` subscription whenever
/// something of its project changes: `kind` says what, and the changed thing rides along.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub sub: u64,
    #[serde(flatten)]
    pub kind: EventKind,
}

/// What an [`Event`] is about, tagged by `kind` on the wire, with what goes with it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventKind {
    /// The build as `build.get` returns it now.
    Build { build: Box<crate::build::Build> },
    /// The template's name, and its summary as `template.list` has it (`None` once deleted).
    Template {
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        template: Option<TemplateSummary>,
    },
    /// The instance's name, and the instance as `instance.get` returns it (`None` once deleted).
    Instance {
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        instance: Option<Box<super::Instance>>,
    },
    /// Events were lost (the subscriber fell behind): list everything again.
    Resync,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Notification;

    /// A notification's params on the wire, as kilnd writes them (through a `Value`).
    fn wire<N: crate::methods::Notice>(params: &N) -> String {
        serde_json::to_string(&Notification::of(params)).unwrap_or_default()
    }

    #[test]
    fn log_notifications_keep_their_json() {
        let line: crate::build::LogLine = serde_json::from_str(
            r#"{"seq":4,"ts":"2026-12-01T10:00:00Z","stream":"stdout","step":"motd","line":"hi"}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let note = LogNote { sub: 7, line };
        let text = wire(&note);
        assert_eq!(
            text,
            r#"{"jsonrpc":"2.0","method":"build.log","params":{"line":"hi","seq":4,"step":"motd","stream":"stdout","sub":7,"ts":"2026-12-01T10:00:00Z"}}"#
        );
        let back: Notification = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back.decode::<LogNote>(), Some(note));
        assert_eq!(back.decode::<LogEnd>(), None);
        let end = |state, unsubscribed| LogEnd {
            sub: 7,
            state,
            lines: 5,
            unsubscribed,
        };
        assert_eq!(
            wire(&end(Some(crate::build::BuildState::TimedOut), false)),
            r#"{"jsonrpc":"2.0","method":"build.log.end","params":{"lines":5,"state":"timed_out","sub":7,"unsubscribed":false}}"#
        );
        assert_eq!(
            wire(&end(None, true)),
            r#"{"jsonrpc":"2.0","method":"build.log.end","params":{"lines":5,"state":null,"sub":7,"unsubscribed":true}}"#
        );
        assert_eq!(
            wire(&ImageProgress {
                line: "==> x".into()
            }),
            r#"{"jsonrpc":"2.0","method":"image.progress","params":{"line":"==> x"}}"#
        );
    }

    #[test]
    fn events_keep_their_json() {
        let check = |kind: EventKind, json: &str| {
            let event = Event { sub: 3, kind };
            let text = wire(&event);
            assert_eq!(
                text,
                format!(r#"{{"jsonrpc":"2.0","method":"event","params":{json}}}"#)
            );
            let back: Notification = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(back.decode::<Event>(), Some(event));
        };
        check(EventKind::Resync, r#"{"kind":"resync","sub":3}"#);
        check(
            EventKind::Template {
                name: "web".into(),
                template: None,
            },
            r#"{"kind":"template","name":"web","sub":3}"#,
        );
        let summary: TemplateSummary = serde_json::from_str(
            r#"{"name":"web","os":"debian-12","revision":2,"updated_at":"2026-12-01T10:00:00Z"}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        check(
            EventKind::Template {
                name: "web".into(),
                template: Some(summary),
            },
            r#"{"kind":"template","name":"web","sub":3,"template":{"applications":[],"name":"web","os":"debian-12","revision":2,"updated_at":"2026-12-01T10:00:00Z"}}"#,
        );
        let build: crate::build::Build = serde_json::from_str(
            r#"{"id":9,"project":"default","template":"web","revision":2,"image_name":"w1",
                "base_image":"debian-12","state":"queued","steps":[],
                "created_at":"2026-12-01T10:00:00Z","queue_position":1}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        check(
            EventKind::Build {
                build: Box::new(build),
            },
            r#"{"build":{"base_image":"debian-12","created_at":"2026-12-01T10:00:00Z","id":9,"image_name":"w1","message":"","project":"default","queue_position":1,"revision":2,"run_outputs":[],"state":"queued","steps":[],"template":"web"},"kind":"build","sub":3}"#,
        );
    }
}
