//! Errors on the wire: the stable error kinds, their JSON-RPC codes and the error object.

use serde::{Deserialize, Serialize};

use crate::validate::Violation;

/// The stable, snake_case error kinds in `error.data.kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    ParseError,
    InvalidRequest,
    MethodNotFound,
    InvalidParams,
    InvalidTemplate,
    NotFound,
    Conflict,
    Forbidden,
    TooLarge,
    Unavailable,
    /// Over a limit of connections, requests in flight, subscriptions or buffered input.
    Busy,
    Internal,
}

impl ErrorKind {
    /// The JSON-RPC `code` that goes with each kind.
    pub fn code(self) -> i64 {
        match self {
            ErrorKind::ParseError => -32700,
            ErrorKind::InvalidRequest => -32600,
            ErrorKind::MethodNotFound => -32601,
            ErrorKind::InvalidParams => -32602,
            ErrorKind::Internal => -32603,
            ErrorKind::InvalidTemplate => -32001,
            ErrorKind::NotFound => -32002,
            ErrorKind::Conflict => -32003,
            ErrorKind::Forbidden => -32004,
            ErrorKind::TooLarge => -32005,
            ErrorKind::Unavailable => -32006,
            ErrorKind::Busy => -32007,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::ParseError => "parse_error",
            ErrorKind::InvalidRequest => "invalid_request",
            ErrorKind::MethodNotFound => "method_not_found",
            ErrorKind::InvalidParams => "invalid_params",
            ErrorKind::InvalidTemplate => "invalid_template",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::TooLarge => "too_large",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Busy => "busy",
            ErrorKind::Internal => "internal",
        }
    }
}

/// `error.data`: the kind and, for validation failures, every violation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorData {
    pub kind: ErrorKind,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub violations: Vec<Violation>,
}

/// A JSON-RPC error object; also the error type of daemon request handlers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct RpcError {
    pub code: i64,
    pub message: String,
    pub data: ErrorData,
}

impl RpcError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> RpcError {
        RpcError {
            code: kind.code(),
            message: message.into(),
            data: ErrorData {
                kind,
                violations: Vec::new(),
            },
        }
    }

    pub fn invalid_template(message: impl Into<String>, violations: Vec<Violation>) -> RpcError {
        let mut e = RpcError::new(ErrorKind::InvalidTemplate, message);
        e.data.violations = violations;
        e
    }

    pub fn kind(&self) -> ErrorKind {
        self.data.kind
    }
}
