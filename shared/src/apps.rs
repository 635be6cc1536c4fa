//! The application catalog: which applications a template may select, the OSes each supports, its
//! install script and what it conflicts with. Loaded from `data/applications.toml`.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct App {
    pub name: String,
    pub description: String,
    pub os: Vec<String>,
    pub install: String,
    #[serde(default)]
    pub conflicts: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct AppCatalog {
    #[serde(rename = "app")]
    pub apps: Vec<App>,
}

impl AppCatalog {
    pub fn builtin() -> AppCatalog {
        AppCatalog::default()
    }

    pub fn get(&self, name: &str) -> Option<&App> {
        self.apps.iter().find(|a| a.name == name)
    }
}
