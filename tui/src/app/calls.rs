//! The dashboard's calls to kilnd, typed by kiln-shared's method table: a `Request` holds the
//! params of one method the dashboard uses, and the `Reply` of the same variant holds that
//! method's result (or why there is none). The shell puts a request on the wire under the table's
//! name and decodes the answer with `Request::reply`, and decodes the notifications the dashboard
//! reads into a `Note` by the table's notification names; `update` only ever sees the types.

use kiln_shared::methods::{self, Method, Name, Notice};
use kiln_shared::protocol::{Event, ImageProgress, LogEnd, LogNote, NameParams, TemplateGetParams};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::CallError;

macro_rules! calls {
    ($($method:ident),* $(,)?) => {
        /// A request to kilnd: the params of one method of the table.
        #[derive(Debug, Clone)]
        pub enum Request {
            $($method(<methods::$method as Method>::Params),)*
        }

        /// kilnd's answer to the `Request` of the same variant: the method's result, or the
        /// error kilnd (or the way to it) gave instead. Each is made once and moved once into
        /// the app, so the size of the largest result (an image) costs nothing worth a box.
        #[derive(Debug, Clone)]
        #[allow(clippy::large_enum_variant)]
        pub enum Reply {
            $($method(Result<<methods::$method as Method>::Result, CallError>),)*
        }

        impl Request {
            /// The method, as the table names it.
            pub fn method(&self) -> Name {
                match self {
                    $(Request::$method(_) => Name::$method,)*
                }
            }

            /// The params as they go on the wire.
            pub fn params(&self) -> Result<Value, serde_json::Error> {
                match self {
                    $(Request::$method(p) => serde_json::to_value(p),)*
                }
            }

            /// The reply to this request, from what the call returned: kilnd's result decoded
            /// as the method's result type.
            pub fn reply(&self, result: Result<Value, CallError>) -> Reply {
                match self {
                    $(Request::$method(_) => Reply::$method(result.and_then(decode)),)*
                }
            }
        }

        impl Reply {
            /// The method this answers.
            pub fn method(&self) -> Name {
                match self {
                    $(Reply::$method(_) => Name::$method,)*
                }
            }
        }
    };
}

calls! {
    TemplateList,
    TemplateGet,
    TemplateRevisions,
    TemplateCreate,
    TemplateUpdate,
    TemplateDelete,
    TemplateImportAzure,
    BuildList,
    BuildStart,
    BuildCancel,
    BuildLogs,
    BuildLogsUnsubscribe,
    EventsSubscribe,
    ImageList,
    ImageDelete,
    ImageShare,
    ImageAccept,
    ImageReject,
    ImageCreateFromInstance,
    InstanceRun,
    InstanceList,
    InstanceStop,
    InstanceStart,
    InstanceDelete,
    GalleryList,
    GalleryShare,
    GalleryAccept,
    GalleryReject,
}

impl Request {
    /// `template.get` of the latest revision of template `name`.
    pub fn template_get(name: &str) -> Request {
        Request::TemplateGet(TemplateGetParams {
            name: name.into(),
            revision: None,
        })
    }

    /// `template.revisions` of template `name`.
    pub fn template_revisions(name: &str) -> Request {
        Request::TemplateRevisions(NameParams { name: name.into() })
    }
}

/// Two requests are the same when they put the same call on the wire (the params types of the
/// table do not all compare).
impl PartialEq for Request {
    fn eq(&self, other: &Request) -> bool {
        self.method() == other.method() && self.params().ok() == other.params().ok()
    }
}

/// A notification the dashboard reads.
#[derive(Debug, Clone)]
pub enum Note {
    /// A change in the project, on the events subscription.
    Event(Event),
    /// A line of a `build.logs` stream.
    Log(LogNote),
    /// The end of a `build.logs` stream.
    LogEnd(LogEnd),
    /// A line about an image being made (here: captured from an instance).
    Progress(ImageProgress),
}

impl Note {
    /// The notification `method` with `params`; `None` for one the dashboard does not read
    /// (`hello`) or whose params do not decode.
    pub fn decode(method: &str, params: Value) -> Option<Note> {
        fn params_of<T: Notice>(params: Value) -> Option<T> {
            serde_json::from_value(params).ok()
        }
        if method == Event::NAME {
            params_of(params).map(Note::Event)
        } else if method == LogNote::NAME {
            params_of(params).map(Note::Log)
        } else if method == LogEnd::NAME {
            params_of(params).map(Note::LogEnd)
        } else if method == ImageProgress::NAME {
            params_of(params).map(Note::Progress)
        } else {
            None
        }
    }
}

fn decode<T: DeserializeOwned>(value: Value) -> Result<T, CallError> {
    serde_json::from_value(value)
        .map_err(|e| CallError::from(format!("unexpected reply from kilnd: {e}")))
}

#[cfg(test)]
mod tests {
    use kiln_shared::build::{BuildIdParams, SubReply};
    use kiln_shared::methods::Empty;
    use kiln_shared::protocol::Hello;
    use serde_json::json;

    use super::*;

    #[test]
    fn a_request_goes_out_as_its_params_and_its_reply_is_decoded_as_its_result() {
        let r = Request::BuildCancel(BuildIdParams { id: 4 });
        assert_eq!(r.method(), Name::BuildCancel);
        assert_eq!(r.params().ok(), Some(json!({"id": 4})));
        let logs = Request::BuildLogsUnsubscribe(SubReply { sub: 9 });
        assert!(matches!(
            logs.reply(Ok(json!({}))),
            Reply::BuildLogsUnsubscribe(Ok(Empty {}))
        ));
        let Reply::BuildCancel(Err(e)) = r.reply(Ok(json!({"build": 4}))) else {
            panic!("a result that does not decode is an error");
        };
        assert!(
            e.message.starts_with("unexpected reply from kilnd: "),
            "{e}"
        );
        let refused = CallError::from("not_found: no build 4");
        let Reply::BuildCancel(Err(e)) = r.reply(Err(refused.clone())) else {
            panic!("kilnd's error is the reply's");
        };
        assert_eq!(e, refused);
    }

    #[test]
    fn notifications_are_read_by_the_table_s_names_and_others_dropped() {
        let line = json!({"sub": 9, "seq": 0, "ts": "2026-11-26T10:00:00Z", "stream": "stdout",
            "line": "hi"});
        assert!(matches!(
            Note::decode(LogNote::NAME, line.clone()),
            Some(Note::Log(LogNote { sub: 9, .. }))
        ));
        let end = json!({"sub": 9, "state": "succeeded", "lines": 1, "unsubscribed": false});
        assert!(matches!(
            Note::decode(LogEnd::NAME, end),
            Some(Note::LogEnd(LogEnd { sub: 9, .. }))
        ));
        let resync = json!({"sub": 3, "kind": "resync"});
        assert!(matches!(
            Note::decode(Event::NAME, resync),
            Some(Note::Event(Event { sub: 3, .. }))
        ));
        assert!(matches!(
            Note::decode(ImageProgress::NAME, json!({"line": "==> publishing"})),
            Some(Note::Progress(ImageProgress { .. }))
        ));
        assert!(Note::decode(Hello::NAME, line.clone()).is_none());
        assert!(
            Note::decode(Event::NAME, line).is_none(),
            "params that do not decode"
        );
    }
}
