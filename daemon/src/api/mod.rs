//! The local-socket API: listener setup (permissions, stale sockets), connections, dispatch.

mod azure;
mod builds;
mod conn;
mod dispatch;
mod events;
mod galleries;
mod images;
mod instances;
mod socket;

pub use conn::{serve_connection, Connections, PRIVILEGED_RESERVE};
pub use dispatch::Daemon;
pub use events::TemplateChanged;
pub use socket::{bind, SocketError};
