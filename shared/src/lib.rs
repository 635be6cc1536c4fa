//! kiln-shared: the template model and its validation, the one rule for names, the wire protocol
//! types and its method table, the application catalog and the async client. Depended on by the daemon and the
//! terminal client alike; no I/O beyond the client.

pub mod apps;
pub mod azure;
pub mod build;
pub mod client;
pub mod methods;
pub mod names;
pub mod paths;
pub mod protocol;
pub mod template;
pub mod validate;

pub use template::Template;
pub use validate::Violation;
