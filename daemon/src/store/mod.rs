//! The redb store: templates with their revisions, projects, builds, images, instances and
//! galleries; the schema version.
//!
//! Values are JSON documents of the records below (internal types, not wire types). Every write is
//! one redb transaction, so a daemon killed at any moment leaves either the old or the new state.

mod builds;
mod galleries;
mod image_record;
mod images;
mod instances;

pub use builds::BuildRecord;
pub use galleries::{DefinitionRecord, GalleryRecord, GALLERIES};
pub use image_record::{member_status, set_member, ImageRecord, Login, State};
pub use instances::{InstanceRecord, INSTANCES};

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use kiln_shared::protocol::{RevisionInfo, TemplateRecord, TemplateSummary};
use kiln_shared::Template;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::as_user::User;

/// The schema this kilnd writes. Bump it with a migration in `migrate`.
pub const SCHEMA_VERSION: u64 = 1;

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// (project, name) -> TemplateHead
const TEMPLATES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("templates");
/// (project, name, revision) -> StoredRevision
const REVISIONS: TableDefinition<(&str, &str, u64), &[u8]> =
    TableDefinition::new("template_revisions");
/// project name -> ProjectRecord
const PROJECTS: TableDefinition<&str, &[u8]> = TableDefinition::new("projects");
/// build id -> build record (owned by the queue)
pub const BUILDS: TableDefinition<u64, &[u8]> = TableDefinition::new("builds");
/// image id -> image record (owned by the catalog)
pub const IMAGES: TableDefinition<&str, &[u8]> = TableDefinition::new("images");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("another kilnd is already using the data directory {0} (one daemon per data dir); stop it or pass another --data-dir")]
    Locked(PathBuf),
    #[error("the store {path} was written by a newer kilnd (schema {found}; this kilnd knows up to {SCHEMA_VERSION}); upgrade kilnd or use another --data-dir")]
    NewerSchema { path: PathBuf, found: u64 },
    #[error("template {name:?} not found in project {project:?}")]
    TemplateNotFound { project: String, name: String },
    #[error("template {name:?} has no revision {revision} in project {project:?}")]
    RevisionNotFound {
        project: String,
        name: String,
        revision: u64,
    },
    #[error("template {name:?} already exists in project {project:?}; use `kiln template edit` (template.update) to change it")]
    TemplateExists { project: String, name: String },
    #[error("template {name:?} is at revision {current}, not {expected}: it was changed meanwhile; look at the new revision and try again")]
    StaleRevision {
        name: String,
        expected: u64,
        current: u64,
    },
    #[error("stored record {what} is unreadable: {message}")]
    Corrupt { what: String, message: String },
    #[error("store error: {0}")]
    Db(#[from] redb::Error),
}

fn db_err(e: impl Into<redb::Error>) -> StoreError {
    StoreError::Db(e.into())
}

/// The latest state of one template; its content lives in the revisions table.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TemplateHead {
    revision: u64,
    os: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    applications: Vec<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredRevision {
    template: Template,
    created_at: DateTime<Utc>,
    /// Who stored this revision: a build its `[trigger]` queues runs as them (reads their
    /// files, writes their exports). None for revisions stored before kiln recorded it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    saved_by: Option<User>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProjectRecord {
    pub name: String,
    pub created_at: DateTime<Utc>,
}

/// The daemon's database. Cheap to share behind an `Arc`; redb serializes writers.
pub struct Store {
    db: Database,
    path: PathBuf,
}

fn decode<T: DeserializeOwned>(
    bytes: &[u8],
    what: impl FnOnce() -> String,
) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        what: what(),
        message: e.to_string(),
    })
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Records are plain data (strings, numbers, maps): serializing them cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

impl Store {
    /// Opens (or creates) the store at `path`, creating tables and checking the schema version.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let db = match Database::create(path) {
            Ok(db) => db,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                return Err(StoreError::Locked(
                    path.parent().unwrap_or(path).to_path_buf(),
                ))
            }
            Err(e) => return Err(db_err(e)),
        };
        let store = Store {
            db,
            path: path.to_path_buf(),
        };
        store.migrate()?;
        Ok(store)
    }

    /// Test hook: opens without the schema check, to repair what `set_schema_version` did.
    #[doc(hidden)]
    pub fn open_unchecked_for_tests(path: &Path) -> Result<Store, StoreError> {
        Ok(Store {
            db: Database::create(path).map_err(db_err)?,
            path: path.to_path_buf(),
        })
    }

    fn migrate(&self) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(db_err)?;
        {
            let mut meta = tx.open_table(META).map_err(db_err)?;
            let found = meta
                .get("schema_version")
                .map_err(db_err)?
                .map(|v| v.value());
            match found {
                Some(v) if v > SCHEMA_VERSION => {
                    return Err(StoreError::NewerSchema {
                        path: self.path.clone(),
                        found: v,
                    })
                }
                Some(_) => {}
                None => {
                    meta.insert("schema_version", SCHEMA_VERSION)
                        .map_err(db_err)?;
                }
            }
            tx.open_table(TEMPLATES).map_err(db_err)?;
            tx.open_table(REVISIONS).map_err(db_err)?;
            tx.open_table(PROJECTS).map_err(db_err)?;
            tx.open_table(BUILDS).map_err(db_err)?;
            tx.open_table(IMAGES).map_err(db_err)?;
            tx.open_table(INSTANCES).map_err(db_err)?;
            tx.open_table(GALLERIES).map_err(db_err)?;
        }
        tx.commit().map_err(db_err)
    }

    /// The schema version recorded in the file.
    pub fn schema_version(&self) -> Result<u64, StoreError> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let meta = tx.open_table(META).map_err(db_err)?;
        Ok(meta
            .get("schema_version")
            .map_err(db_err)?
            .map(|v| v.value())
            .unwrap_or(0))
    }

    /// Test hook: pretend a newer kilnd wrote this file.
    #[doc(hidden)]
    pub fn set_schema_version(&self, version: u64) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(db_err)?;
        tx.open_table(META)
            .map_err(db_err)?
            .insert("schema_version", version)
            .map_err(db_err)?;
        tx.commit().map_err(db_err)
    }

    /// Stores a new template as revision 1.
    pub fn create_template(
        &self,
        project: &str,
        template: &Template,
        saved_by: Option<&User>,
    ) -> Result<u64, StoreError> {
        let now = Utc::now();
        let tx = self.db.begin_write().map_err(db_err)?;
        {
            let mut heads = tx.open_table(TEMPLATES).map_err(db_err)?;
            if heads
                .get((project, template.name.as_str()))
                .map_err(db_err)?
                .is_some()
            {
                return Err(StoreError::TemplateExists {
                    project: project.into(),
                    name: template.name.clone(),
                });
            }
            let mut revs = tx.open_table(REVISIONS).map_err(db_err)?;
            let rev = Revision {
                template,
                revision: 1,
                created_at: now,
                now,
                saved_by,
            };
            write_revision(&mut heads, &mut revs, project, rev)?;
            ensure_project(&tx, project, now)?;
        }
        tx.commit().map_err(db_err)?;
        Ok(1)
    }

    /// Stores `template` as the next revision of `name`; a changed name renames the template and
    /// carries its revisions along. With `expected`, refuses unless that is the latest revision.
    pub fn update_template(
        &self,
        project: &str,
        name: &str,
        template: &Template,
        expected: Option<u64>,
        saved_by: Option<&User>,
    ) -> Result<u64, StoreError> {
        let now = Utc::now();
        let tx = self.db.begin_write().map_err(db_err)?;
        let revision;
        {
            let mut heads = tx.open_table(TEMPLATES).map_err(db_err)?;
            let head: TemplateHead = match heads.get((project, name)).map_err(db_err)? {
                Some(v) => decode(v.value(), || format!("template {project}/{name}"))?,
                None => return Err(not_found(project, name)),
            };
            if let Some(expected) = expected.filter(|e| *e != head.revision) {
                return Err(StoreError::StaleRevision {
                    name: name.into(),
                    expected,
                    current: head.revision,
                });
            }
            let mut revs = tx.open_table(REVISIONS).map_err(db_err)?;
            let new_name = template.name.as_str();
            if new_name != name {
                if heads.get((project, new_name)).map_err(db_err)?.is_some() {
                    return Err(StoreError::TemplateExists {
                        project: project.into(),
                        name: new_name.into(),
                    });
                }
                let old: Vec<(u64, Vec<u8>)> = revs
                    .range((project, name, 0)..=(project, name, u64::MAX))
                    .map_err(db_err)?
                    .map(|r| r.map(|(k, v)| (k.value().2, v.value().to_vec())))
                    .collect::<Result<_, _>>()
                    .map_err(db_err)?;
                for (rev, bytes) in old {
                    revs.remove((project, name, rev)).map_err(db_err)?;
                    revs.insert((project, new_name, rev), bytes.as_slice())
                        .map_err(db_err)?;
                }
                heads.remove((project, name)).map_err(db_err)?;
            }
            revision = head.revision + 1;
            let rev = Revision {
                template,
                revision,
                created_at: head.created_at,
                now,
                saved_by,
            };
            write_revision(&mut heads, &mut revs, project, rev)?;
        }
        tx.commit().map_err(db_err)?;
        Ok(revision)
    }

    /// The latest revision of a template, or the one asked for.
    pub fn get_template(
        &self,
        project: &str,
        name: &str,
        revision: Option<u64>,
    ) -> Result<TemplateRecord, StoreError> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let heads = tx.open_table(TEMPLATES).map_err(db_err)?;
        let head: TemplateHead = match heads.get((project, name)).map_err(db_err)? {
            Some(v) => decode(v.value(), || format!("template {project}/{name}"))?,
            None => return Err(not_found(project, name)),
        };
        let rev = revision.unwrap_or(head.revision);
        let revs = tx.open_table(REVISIONS).map_err(db_err)?;
        let stored: StoredRevision = match revs.get((project, name, rev)).map_err(db_err)? {
            Some(v) => decode(v.value(), || {
                format!("template {project}/{name} revision {rev}")
            })?,
            None => {
                return Err(StoreError::RevisionNotFound {
                    project: project.into(),
                    name: name.into(),
                    revision: rev,
                })
            }
        };
        Ok(TemplateRecord {
            template: stored.template,
            revision: rev,
            created_at: head.created_at,
            updated_at: stored.created_at,
        })
    }

    /// Who stored the latest revision of a template (None when it was stored before kiln
    /// recorded that).
    pub fn template_saved_by(&self, project: &str, name: &str) -> Result<Option<User>, StoreError> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let heads = tx.open_table(TEMPLATES).map_err(db_err)?;
        let head: TemplateHead = match heads.get((project, name)).map_err(db_err)? {
            Some(v) => decode(v.value(), || format!("template {project}/{name}"))?,
            None => return Err(not_found(project, name)),
        };
        let revs = tx.open_table(REVISIONS).map_err(db_err)?;
        let row = revs.get((project, name, head.revision)).map_err(db_err)?;
        Ok(match row {
            Some(v) => {
                decode::<StoredRevision>(v.value(), || {
                    format!("template {project}/{name} revision {}", head.revision)
                })?
                .saved_by
            }
            None => None,
        })
    }

    /// Every template of a project, sorted by name.
    pub fn list_templates(&self, project: &str) -> Result<Vec<TemplateSummary>, StoreError> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let heads = tx.open_table(TEMPLATES).map_err(db_err)?;
        let mut out = Vec::new();
        for row in heads.range((project, "")..).map_err(db_err)? {
            let (k, v) = row.map_err(db_err)?;
            let (p, name) = k.value();
            if p != project {
                break;
            }
            let head: TemplateHead = decode(v.value(), || format!("template {p}/{name}"))?;
            out.push(summary(name, head));
        }
        Ok(out)
    }

    /// One template's entry of [`Store::list_templates`]; `None` when there is no such template.
    pub fn template_summary(
        &self,
        project: &str,
        name: &str,
    ) -> Result<Option<TemplateSummary>, StoreError> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let heads = tx.open_table(TEMPLATES).map_err(db_err)?;
        let row = heads.get((project, name)).map_err(db_err)?;
        row.map(|v| {
            decode::<TemplateHead>(v.value(), || format!("template {project}/{name}"))
                .map(|head| summary(name, head))
        })
        .transpose()
    }

    /// Removes a template and all its revisions. Builds keep their own copy of what they ran.
    pub fn delete_template(&self, project: &str, name: &str) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(db_err)?;
        {
            let mut heads = tx.open_table(TEMPLATES).map_err(db_err)?;
            if heads.remove((project, name)).map_err(db_err)?.is_none() {
                return Err(not_found(project, name));
            }
            let mut revs = tx.open_table(REVISIONS).map_err(db_err)?;
            revs.retain_in((project, name, 0)..=(project, name, u64::MAX), |_, _| false)
                .map_err(db_err)?;
        }
        tx.commit().map_err(db_err)
    }

    /// The revisions of a template, oldest first.
    pub fn template_revisions(
        &self,
        project: &str,
        name: &str,
    ) -> Result<Vec<RevisionInfo>, StoreError> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let heads = tx.open_table(TEMPLATES).map_err(db_err)?;
        if heads.get((project, name)).map_err(db_err)?.is_none() {
            return Err(not_found(project, name));
        }
        let revs = tx.open_table(REVISIONS).map_err(db_err)?;
        let mut out = Vec::new();
        for row in revs
            .range((project, name, 0)..=(project, name, u64::MAX))
            .map_err(db_err)?
        {
            let (k, v) = row.map_err(db_err)?;
            let revision = k.value().2;
            let stored: StoredRevision = decode(v.value(), || {
                format!("template {project}/{name} revision {revision}")
            })?;
            out.push(RevisionInfo {
                revision,
                created_at: stored.created_at,
            });
        }
        Ok(out)
    }

    /// Number of templates of each project that has any.
    pub fn count_templates_by_project(
        &self,
    ) -> Result<std::collections::BTreeMap<String, u64>, StoreError> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let table = tx.open_table(TEMPLATES).map_err(db_err)?;
        let mut counts = std::collections::BTreeMap::new();
        for row in table.iter().map_err(db_err)? {
            let (k, _) = row.map_err(db_err)?;
            *counts.entry(k.value().0.to_string()).or_insert(0) += 1;
        }
        Ok(counts)
    }

    /// Projects that have stored something.
    pub fn list_projects(&self) -> Result<Vec<ProjectRecord>, StoreError> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let table = tx.open_table(PROJECTS).map_err(db_err)?;
        let mut out = Vec::new();
        for row in table.iter().map_err(db_err)? {
            let (k, v) = row.map_err(db_err)?;
            out.push(decode(v.value(), || format!("project {}", k.value()))?);
        }
        Ok(out)
    }
}

fn not_found(project: &str, name: &str) -> StoreError {
    StoreError::TemplateNotFound {
        project: project.into(),
        name: name.into(),
    }
}

/// One revision to write: the template, its number, when the template was created, now.
struct Revision<'a> {
    template: &'a Template,
    revision: u64,
    created_at: DateTime<Utc>,
    now: DateTime<Utc>,
    saved_by: Option<&'a User>,
}

fn write_revision(
    heads: &mut redb::Table<(&str, &str), &[u8]>,
    revs: &mut redb::Table<(&str, &str, u64), &[u8]>,
    project: &str,
    rev: Revision<'_>,
) -> Result<(), StoreError> {
    let Revision {
        template,
        revision,
        created_at,
        now,
        saved_by,
    } = rev;
    let name = template.name.as_str();
    let stored = StoredRevision {
        template: template.clone(),
        created_at: now,
        saved_by: saved_by.cloned(),
    };
    revs.insert((project, name, revision), encode(&stored).as_slice())
        .map_err(db_err)?;
    let head = TemplateHead {
        revision,
        os: template.os.clone(),
        description: template.description.clone(),
        applications: template.applications.clone(),
        created_at,
        updated_at: now,
    };
    heads
        .insert((project, name), encode(&head).as_slice())
        .map_err(db_err)?;
    Ok(())
}

fn ensure_project(
    tx: &redb::WriteTransaction,
    project: &str,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let mut table = tx.open_table(PROJECTS).map_err(db_err)?;
    if table.get(project).map_err(db_err)?.is_none() {
        let rec = ProjectRecord {
            name: project.into(),
            created_at: now,
        };
        table
            .insert(project, encode(&rec).as_slice())
            .map_err(db_err)?;
    }
    Ok(())
}

fn summary(name: &str, head: TemplateHead) -> TemplateSummary {
    TemplateSummary {
        name: name.to_string(),
        os: head.os,
        revision: head.revision,
        description: head.description,
        applications: head.applications,
        updated_at: head.updated_at,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn template(name: &str) -> Template {
        Template {
            name: name.into(),
            os: "debian-12".into(),
            ..Template::default()
        }
    }

    #[test]
    fn revisions_rename_delete() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("kiln.redb")).unwrap();
        assert_eq!(store.create_template("p", &template("a"), None).unwrap(), 1);
        assert!(matches!(
            store.create_template("p", &template("a"), None),
            Err(StoreError::TemplateExists { .. })
        ));
        assert_eq!(store.create_template("q", &template("a"), None).unwrap(), 1);
        let mut t = template("a");
        t.description = Some("two".into());
        assert_eq!(
            store.update_template("p", "a", &t, Some(1), None).unwrap(),
            2
        );
        assert_eq!(
            store
                .get_template("p", "a", Some(1))
                .unwrap()
                .template
                .description,
            None
        );
        assert_eq!(store.template_revisions("p", "a").unwrap().len(), 2);
        assert_eq!(
            store
                .update_template("p", "a", &template("b"), None, None)
                .unwrap(),
            3
        );
        assert!(store.get_template("p", "a", None).is_err());
        assert_eq!(store.template_revisions("p", "b").unwrap().len(), 3);
        assert_eq!(store.list_templates("p").unwrap().len(), 1);
        store.delete_template("p", "b").unwrap();
        assert!(store.list_templates("p").unwrap().is_empty());
        assert_eq!(store.list_templates("q").unwrap().len(), 1);
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kiln.redb");
        Store::open(&path)
            .unwrap()
            .set_schema_version(SCHEMA_VERSION + 1)
            .unwrap();
        let err = Store::open(&path).err().unwrap();
        assert!(err.to_string().contains("newer kilnd"), "{err}");
    }
}
