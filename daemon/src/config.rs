//! The daemon's configuration: paths chosen by flags or by user/system mode, and `kilnd.toml`.

use std::path::{Path, PathBuf};

use serde::de::IgnoredAny;
use serde::Deserialize;

/// `max_connections` when kilnd.toml does not set it.
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;

/// Everything `kilnd` needs to run, resolved from flags, environment and the config file.
#[derive(Debug, Clone)]
pub struct Config {
    pub socket: PathBuf,
    pub data_dir: PathBuf,
    /// The config file that was read, if one existed.
    pub config_file: Option<PathBuf>,
    /// System mode: socket 0660 with group `kiln` in a root-owned directory (root, default socket).
    pub system_mode: bool,
    pub file: FileConfig,
}

/// `kilnd.toml`; every key optional.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Default: half the cores, at least 1.
    pub max_concurrent_builds: Option<u32>,
    /// Members may manage public images.
    pub admin_group: Option<String>,
    /// Read by nothing: it was to size the step cache, a later issue. Still accepted, with any
    /// value, so that a kilnd.toml that sets it starts kilnd; [`FileConfig::warnings`] says so.
    pub cache_max_gb: Option<IgnoredAny>,
    /// Caps every build's timeout, in seconds (tests use it to reach `timed_out` quickly).
    pub build_timeout_cap_seconds: Option<u64>,
    /// Instances a project may have at once (default 4).
    pub max_instances: Option<u32>,
    /// Keep a saved, booted VM of each base image and start builds from it (default true).
    pub warm_start: Option<bool>,
    /// Group that owns the socket in system mode (default `kiln`).
    pub socket_group: Option<String>,
    /// Socket clients at once (default 256); root and the admin group keep 8 more. kilnd lowers
    /// it when its file-descriptor limit leaves no room for that many.
    pub max_connections: Option<u32>,
    #[serde(default, rename = "project")]
    pub projects: Vec<ProjectConfig>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ProjectConfig {
    pub name: String,
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default)]
    pub groups: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is invalid: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl FileConfig {
    /// Reads the config file; a missing file at the default location means all defaults.
    pub fn load(path: &Path, must_exist: bool) -> Result<Option<FileConfig>, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !must_exist => return Ok(None),
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.into(),
                    source,
                })
            }
        };
        let cfg = FileConfig::parse(&text).map_err(|message| ConfigError::Invalid {
            path: path.into(),
            message,
        })?;
        for warning in cfg.warnings() {
            tracing::warn!("config file {}: {warning}", path.display());
        }
        Ok(Some(cfg))
    }

    /// What the file sets that has no effect, one message per key; `load` logs them.
    pub fn warnings(&self) -> Vec<&'static str> {
        let mut warnings = Vec::new();
        if self.cache_max_gb.is_some() {
            warnings.push("cache_max_gb has no effect: kiln has no step cache yet");
        }
        warnings
    }

    pub fn parse(text: &str) -> Result<FileConfig, String> {
        let cfg: FileConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        if cfg.max_concurrent_builds == Some(0) {
            return Err("max_concurrent_builds must be at least 1".into());
        }
        if cfg.max_connections == Some(0) {
            return Err("max_connections must be at least 1".into());
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, p) in cfg.projects.iter().enumerate() {
            if let Err(e) = kiln_shared::names::check(&p.name) {
                return Err(format!("project[{i}].name {e}"));
            }
            if !seen.insert(p.name.as_str()) {
                return Err(format!("project[{i}].name {:?} is defined twice", p.name));
            }
        }
        Ok(cfg)
    }
}

impl Config {
    /// Builds the configuration from optional overrides, falling back to user or system mode.
    pub fn resolve(
        socket: Option<PathBuf>,
        data_dir: Option<PathBuf>,
        config_file: Option<PathBuf>,
    ) -> Result<Config, ConfigError> {
        // System mode's socket permissions (0660, group `kiln`) apply to the system socket; an
        // explicit --socket is private to the daemon's user like any user-mode socket.
        let system_mode = kiln_shared::paths::system_mode() && socket.is_none();
        let explicit = config_file.is_some();
        let path = config_file.unwrap_or_else(kiln_shared::paths::default_config_path);
        let file = FileConfig::load(&path, explicit)?;
        Ok(Config {
            socket: socket.unwrap_or_else(kiln_shared::paths::default_socket_path),
            data_dir: data_dir.unwrap_or_else(kiln_shared::paths::default_data_dir),
            config_file: file.as_ref().map(|_| path),
            system_mode,
            file: file.unwrap_or_default(),
        })
    }

    /// A configuration for tests and embedding: explicit paths, default file settings.
    pub fn at(socket: PathBuf, data_dir: PathBuf) -> Config {
        Config {
            socket,
            data_dir,
            config_file: None,
            system_mode: false,
            file: FileConfig::default(),
        }
    }

    /// `max_connections`, before the fd limit has its say (see `kiln_daemon::connection_limit`).
    pub fn max_connections(&self) -> usize {
        self.file
            .max_connections
            .map_or(DEFAULT_MAX_CONNECTIONS, |n| n as usize)
    }

    pub fn max_concurrent_builds(&self) -> u32 {
        self.file.max_concurrent_builds.unwrap_or_else(|| {
            let cores = std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2);
            (cores as u32 / 2).max(1)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_design_example() {
        let cfg = FileConfig::parse(
            "max_concurrent_builds = 1\nadmin_group = \"kiln-admin\"\ncache_max_gb = 50\n\
             [[project]]\nname = \"web\"\nusers = [\"alice\"]\ngroups = [\"webteam\"]\n",
        )
        .expect("valid");
        assert_eq!(cfg.max_concurrent_builds, Some(1));
        assert_eq!(cfg.projects[0].users, vec!["alice".to_string()]);
        assert_eq!(
            cfg.warnings(),
            ["cache_max_gb has no effect: kiln has no step cache yet"]
        );
    }

    /// `cache_max_gb` does nothing, whatever its value; other keys give no warning.
    #[test]
    fn cache_max_gb_is_accepted_with_a_warning() {
        for value in ["50", "0", "\"50G\""] {
            let cfg = FileConfig::parse(&format!("cache_max_gb = {value}\n")).expect(value);
            assert_eq!(cfg.warnings().len(), 1, "{value}");
            assert!(cfg.warnings()[0].starts_with("cache_max_gb "), "{value}");
        }
        let cfg =
            FileConfig::parse("max_concurrent_builds = 1\nwarm_start = false\n").expect("valid");
        assert!(cfg.warnings().is_empty());
    }

    #[test]
    fn rejects_bad_values() {
        assert!(FileConfig::parse("max_concurrent_builds = 0").is_err());
        assert!(FileConfig::parse("max_connections = 0").is_err());
        assert!(FileConfig::parse("max_connections = -1").is_err());
        assert!(FileConfig::parse("bogus = 1").is_err());
        assert!(FileConfig::parse("[[project]]\nname=\"a\"\n[[project]]\nname=\"a\"").is_err());
        for bad in ["", "..", "-web", "web\\u200B", "a/b", " web"] {
            let text = format!("[[project]]\nname = \"{bad}\"\n");
            let e = FileConfig::parse(&text).expect_err(bad);
            assert!(e.starts_with("project[0].name \""), "{bad}: {e}");
        }
    }
}
