//! The dashboard's calls to kilnd, typed by kiln-shared's method table: a `Request` holds the
//! params of one method the dashboard uses, and the `Reply` of the same variant holds that
//! method's result (or why there is none). The shell puts a request on the wire under the table's
//! name and decodes the answer with `Request::reply`; `update` only ever sees the types.

use kiln_shared::methods::{self, Method, Name};
use kiln_shared::protocol::{NameParams, TemplateGetParams};
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
        /// error kilnd (or the way to it) gave instead.
        #[derive(Debug, Clone)]
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
    BuildList,
    BuildStart,
    BuildCancel,
    BuildLogs,
    BuildLogsUnsubscribe,
    EventsSubscribe,
    ImageList,
    ImageDelete,
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

fn decode<T: DeserializeOwned>(value: Value) -> Result<T, CallError> {
    serde_json::from_value(value)
        .map_err(|e| CallError::from(format!("unexpected reply from kilnd: {e}")))
}
