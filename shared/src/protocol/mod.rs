//! The wire protocol: JSON-RPC 2.0 envelopes, error kinds and the params/results of each method.
//!
//! These types are the IPC boundary: the daemon's internal types never go on the wire. One module
//! per concern, all re-exported here, so every type is `kiln_shared::protocol::Name`.

mod daemon;
mod envelope;
mod error;
mod galleries;
mod images;
mod instances;
mod notices;
mod templates;

pub use daemon::*;
pub use envelope::*;
pub use error::*;
pub use galleries::*;
pub use images::*;
pub use instances::*;
pub use notices::*;
pub use templates::*;

/// Protocol version announced in `hello`.
pub const PROTOCOL_VERSION: u32 = 1;
/// A line longer than this is answered with `too_large` and the connection is closed.
pub const MAX_LINE_BYTES: usize = 1024 * 1024;
/// Project used when a request names none.
pub const DEFAULT_PROJECT: &str = "default";
