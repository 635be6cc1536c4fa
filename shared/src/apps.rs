//! The application catalog: which applications a template may select, the OSes each supports, its
//! install script and what it conflicts with. Loaded from `data/applications.toml`.

use std::sync::LazyLock;

use serde::{Deserialize, Serialize};

use crate::validate::is_os_id;

/// The catalog compiled into kiln; `builtin_catalog_is_consistent` below keeps it loadable.
const BUILTIN_TOML: &str = include_str!("../data/applications.toml");

static BUILTIN: LazyLock<AppCatalog> =
    LazyLock::new(|| match AppCatalog::from_toml(BUILTIN_TOML) {
        Ok(catalog) => catalog,
        // The text is compiled in and checked by this module's tests, so this is a bug in kiln, not
        // something a user can cause or fix.
        Err(e) => panic!("kiln's built-in {e}"),
    });

/// One application a template can select.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct App {
    pub name: String,
    pub description: String,
    /// The OS ids (`debian-12`, `ubuntu-24.04`) whose archives have every package `install` needs.
    pub os: Vec<String>,
    /// A script with a shebang, run in the build VM as the default user (who has passwordless
    /// sudo) before the customize steps.
    pub install: String,
    /// Applications that cannot be installed beside this one. A conflict declared on either side
    /// counts for both: use [`AppCatalog::conflicts_between`] rather than reading this directly.
    #[serde(default)]
    pub conflicts: Vec<String>,
}

impl App {
    /// Whether the app can be installed on the OS with this id.
    pub fn supports(&self, os: &str) -> bool {
        self.os.iter().any(|o| o == os)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AppCatalog {
    #[serde(rename = "app", default)]
    pub apps: Vec<App>,
}

/// Why a catalog file cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    #[error("application catalog is not valid: {0}")]
    Toml(String),
    #[error("application catalog: app {app:?}: {problem}")]
    Invalid { app: String, problem: String },
}

impl AppCatalog {
    /// The catalog shipped with kiln (`shared/data/applications.toml`).
    pub fn builtin() -> AppCatalog {
        BUILTIN.clone()
    }

    /// Parses a catalog (`[[app]]` tables) and checks it is self-consistent: names unique and
    /// non-empty, OS ids well formed, install scripts start with a shebang, and every conflict
    /// names another app of the catalog.
    pub fn from_toml(text: &str) -> Result<AppCatalog, CatalogError> {
        let catalog: AppCatalog =
            toml::from_str(text).map_err(|e| CatalogError::Toml(e.to_string()))?;
        catalog.check()?;
        Ok(catalog)
    }

    fn check(&self) -> Result<(), CatalogError> {
        let invalid = |app: &App, problem: String| CatalogError::Invalid {
            app: app.name.clone(),
            problem,
        };
        for (i, app) in self.apps.iter().enumerate() {
            if app.name.is_empty() {
                return Err(invalid(app, format!("app number {} has no name", i + 1)));
            }
            if self.apps[..i].iter().any(|a| a.name == app.name) {
                return Err(invalid(app, "is listed twice".into()));
            }
            if app.os.is_empty() {
                return Err(invalid(app, "supports no OS: list at least one".into()));
            }
            if let Some(os) = app.os.iter().find(|os| !is_os_id(os)) {
                return Err(invalid(
                    app,
                    format!("{os:?} is not an OS id like \"debian-12\""),
                ));
            }
            if !app.install.starts_with("#!") {
                return Err(invalid(
                    app,
                    "install script must start with a shebang such as #!/bin/bash".into(),
                ));
            }
        }
        for app in &self.apps {
            for other in &app.conflicts {
                if *other == app.name {
                    return Err(invalid(app, "conflicts with itself".into()));
                }
                if self.get(other).is_none() {
                    return Err(invalid(
                        app,
                        format!("conflicts with {other:?}, which is not in the catalog"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The apps that can be installed on the OS with this id, in catalog order.
    pub fn for_os<'a>(&'a self, os: &'a str) -> impl Iterator<Item = &'a App> + 'a {
        self.apps.iter().filter(move |a| a.supports(os))
    }

    pub fn get(&self, name: &str) -> Option<&App> {
        self.apps.iter().find(|a| a.name == name)
    }

    /// The names of all apps, in catalog order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.apps.iter().map(|a| a.name.as_str())
    }

    /// Whether `a` and `b` cannot be selected together: a conflict declared by either counts.
    pub fn conflicts_between(&self, a: &str, b: &str) -> bool {
        let declares = |x: &str, y: &str| {
            self.get(x)
                .is_some_and(|app| app.conflicts.iter().any(|c| c == y))
        };
        a != b && (declares(a, b) || declares(b, a))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn builtin_catalog_is_consistent() {
        let catalog = AppCatalog::from_toml(BUILTIN_TOML).unwrap();
        let names: Vec<&str> = catalog.names().collect();
        for required in [
            "nginx",
            "apache2",
            "docker",
            "mariadb",
            "mysql",
            "postgresql",
            "redis",
            "nodejs",
            "openjdk",
        ] {
            assert!(names.contains(&required), "{required} missing from catalog");
        }
        for app in &catalog.apps {
            assert!(app.install.starts_with("#!"), "{}: no shebang", app.name);
            assert!(!app.description.is_empty(), "{}: no description", app.name);
            for other in &app.conflicts {
                assert!(
                    catalog.get(other).is_some(),
                    "{} conflicts with unknown {other}",
                    app.name
                );
            }
        }
        assert_eq!(AppCatalog::builtin(), catalog);
    }

    #[test]
    fn builtin_conflicts_are_symmetric() {
        let catalog = AppCatalog::builtin();
        for (a, b) in [("nginx", "apache2"), ("mariadb", "mysql")] {
            assert!(catalog.conflicts_between(a, b), "{a} vs {b}");
            assert!(catalog.conflicts_between(b, a), "{b} vs {a}");
        }
        assert!(!catalog.conflicts_between("nginx", "postgresql"));
        assert!(!catalog.conflicts_between("nginx", "nginx"));
    }

    #[test]
    fn mysql_is_not_offered_on_debian() {
        let mysql = AppCatalog::builtin().get("mysql").cloned().unwrap();
        assert!(!mysql.supports("debian-12"));
        assert!(mysql.supports("ubuntu-24.04"));
    }

    #[test]
    fn apps_for_debian_13() {
        let catalog = AppCatalog::builtin();
        let names: Vec<&str> = catalog
            .for_os("debian-13")
            .map(|a| a.name.as_str())
            .collect();
        assert_eq!(
            names,
            [
                "nginx",
                "apache2",
                "docker",
                "mariadb",
                "postgresql",
                "redis",
                "nodejs"
            ]
        );
        assert_eq!(catalog.for_os("plan9-4").count(), 0);
    }

    const ONE_SIDED: &str = r##"
[[app]]
name = "a"
description = "A"
os = ["debian-12"]
install = "#!/bin/sh\n"
conflicts = ["b"]

[[app]]
name = "b"
description = "B"
os = ["debian-12"]
install = "#!/bin/sh\n"
"##;

    #[test]
    fn a_conflict_declared_on_one_side_counts_for_both() {
        let catalog = AppCatalog::from_toml(ONE_SIDED).unwrap();
        assert!(catalog.conflicts_between("a", "b"));
        assert!(catalog.conflicts_between("b", "a"));
    }

    #[test]
    fn inconsistent_catalogs_are_rejected() {
        let cases = [
            (
                ONE_SIDED.replace("[\"b\"]", "[\"c\"]"),
                "not in the catalog",
            ),
            (ONE_SIDED.replace("#!/bin/sh", "echo"), "shebang"),
            (ONE_SIDED.replace("name = \"b\"", "name = \"a\""), "twice"),
            (
                ONE_SIDED.replace("[\"debian-12\"]", "[\"Debian 12\"]"),
                "OS id",
            ),
            (ONE_SIDED.replace("[\"debian-12\"]", "[]"), "supports no OS"),
            (ONE_SIDED.replace("[\"b\"]", "[\"a\"]"), "itself"),
            (ONE_SIDED.replace("install =", "instal ="), "instal"),
        ];
        for (text, expected) in cases {
            let err = AppCatalog::from_toml(&text).unwrap_err().to_string();
            assert!(
                err.contains(expected),
                "{err:?} should mention {expected:?}"
            );
        }
    }
}
