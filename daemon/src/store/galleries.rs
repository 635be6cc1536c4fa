//! Gallery records in the store: a project's gallery and its image definitions. Versions are
//! image records (`ImageRecord::gallery` says where they sit), so a version is held, leased,
//! shared and deleted as any image is.

use chrono::{DateTime, Utc};
use kiln_shared::protocol::{Retention, ShareMember, ShareStatus};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use super::{db_err, decode, encode, Store, StoreError};

/// (project, name) -> gallery record (owned by `catalog::galleries`)
pub const GALLERIES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("galleries");

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GalleryRecord {
    pub name: String,
    pub project: String,
    #[serde(default)]
    pub description: String,
    pub created_at: DateTime<Utc>,
    #[serde(default)]
    pub images: Vec<DefinitionRecord>,
    /// The projects it is shared with and their answers: an `accepted` one sees every version
    /// (the catalog keeps each version's own share list in step).
    #[serde(default, deserialize_with = "super::image_record::members")]
    pub members: Vec<ShareMember>,
}

/// An image definition: the versions of `GALLERY/NAME` are images of `os`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DefinitionRecord {
    pub name: String,
    pub os: String,
    pub created_at: DateTime<Utc>,
    #[serde(default)]
    pub retention: Retention,
}

impl GalleryRecord {
    pub fn definition(&self, image: &str) -> Option<&DefinitionRecord> {
        self.images.iter().find(|d| d.name == image)
    }

    /// `project`'s answer to a share of this gallery, if it was offered one.
    pub fn share_status(&self, project: &str) -> Option<ShareStatus> {
        super::image_record::member_status(&self.members, project)
    }
}

impl Store {
    /// Stores a new gallery; `Ok(false)` when the project has one of that name already.
    pub fn insert_gallery(&self, record: &GalleryRecord) -> Result<bool, StoreError> {
        let tx = self.db.begin_write().map_err(db_err)?;
        {
            let mut table = tx.open_table(GALLERIES).map_err(db_err)?;
            let key = (record.project.as_str(), record.name.as_str());
            if table.get(key).map_err(db_err)?.is_some() {
                return Ok(false);
            }
            table
                .insert(key, encode(record).as_slice())
                .map_err(db_err)?;
        }
        tx.commit().map_err(db_err)?;
        Ok(true)
    }

    pub fn get_gallery(
        &self,
        project: &str,
        name: &str,
    ) -> Result<Option<GalleryRecord>, StoreError> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let table = tx.open_table(GALLERIES).map_err(db_err)?;
        let row = table.get((project, name)).map_err(db_err)?;
        row.map(|v| decode(v.value(), || format!("gallery {name} of project {project}")))
            .transpose()
    }

    /// The galleries of `project`, by name.
    pub fn list_galleries(&self, project: &str) -> Result<Vec<GalleryRecord>, StoreError> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let table = tx.open_table(GALLERIES).map_err(db_err)?;
        let mut out = Vec::new();
        for row in table.range((project, "")..).map_err(db_err)? {
            let (k, v) = row.map_err(db_err)?;
            let (p, name) = k.value();
            if p != project {
                break;
            }
            out.push(decode(v.value(), || {
                format!("gallery {name} of project {p}")
            })?);
        }
        Ok(out)
    }

    /// The galleries of other projects offered to `project` (any answer), by owner and name.
    pub fn galleries_shared_with(&self, project: &str) -> Result<Vec<GalleryRecord>, StoreError> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let table = tx.open_table(GALLERIES).map_err(db_err)?;
        let mut out = Vec::new();
        for row in table.iter().map_err(db_err)? {
            let (k, v) = row.map_err(db_err)?;
            let (p, name) = k.value();
            let record: GalleryRecord =
                decode(v.value(), || format!("gallery {name} of project {p}"))?;
            if p != project && record.share_status(project).is_some() {
                out.push(record);
            }
        }
        Ok(out)
    }

    /// Reads gallery (project, name), lets `change` edit it and writes it back in one
    /// transaction; `Ok(None)` when there is none, and an error from `change` writes nothing.
    pub fn update_gallery<E: From<StoreError>>(
        &self,
        project: &str,
        name: &str,
        change: impl FnOnce(&mut GalleryRecord) -> Result<(), E>,
    ) -> Result<Option<GalleryRecord>, E> {
        let tx = self.db.begin_write().map_err(db_err)?;
        let record = {
            let mut table = tx.open_table(GALLERIES).map_err(db_err)?;
            let mut record: GalleryRecord = match table.get((project, name)).map_err(db_err)? {
                Some(v) => decode(v.value(), || format!("gallery {name} of project {project}"))?,
                None => return Ok(None),
            };
            change(&mut record)?;
            table
                .insert((project, name), encode(&record).as_slice())
                .map_err(db_err)?;
            record
        };
        tx.commit().map_err(db_err)?;
        Ok(Some(record))
    }

    pub fn delete_gallery(&self, project: &str, name: &str) -> Result<bool, StoreError> {
        let tx = self.db.begin_write().map_err(db_err)?;
        let removed = tx
            .open_table(GALLERIES)
            .map_err(db_err)?
            .remove((project, name))
            .map_err(db_err)?
            .is_some();
        tx.commit().map_err(db_err)?;
        Ok(removed)
    }
}
