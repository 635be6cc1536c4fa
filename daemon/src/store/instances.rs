//! Instance records in the store: the instance as clients see it plus what kilnd must remember
//! to reach, stop and clean up its VM (work directory, the VM's handle, the user's key).

use std::path::PathBuf;

use kiln_shared::protocol::Instance;
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use super::{db_err, decode, encode, Store, StoreError};
use crate::driver::VmHandle;

/// (project, name) -> instance record (owned by `instances`)
pub const INSTANCES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("instances");

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InstanceRecord {
    pub instance: Instance,
    /// Its disk, seed, console and sockets; recorded before any of them exists.
    pub work_dir: PathBuf,
    /// Its running VM, as the driver identifies it.
    #[serde(default)]
    pub vm: Option<VmHandle>,
    /// The public key line its default user logs in with.
    pub ssh_public_key: String,
    /// Its image's OS family, whose guest commands a resume and a capture type (records written
    /// before families were recorded ran Debian images).
    #[serde(default = "debian")]
    pub family: String,
}

fn debian() -> String {
    "debian".to_string()
}

impl Store {
    pub fn put_instance(&self, record: &InstanceRecord) -> Result<(), StoreError> {
        let i = &record.instance;
        let tx = self.db.begin_write().map_err(db_err)?;
        tx.open_table(INSTANCES)
            .map_err(db_err)?
            .insert(
                (i.project.as_str(), i.name.as_str()),
                encode(record).as_slice(),
            )
            .map_err(db_err)?;
        tx.commit().map_err(db_err)
    }

    pub fn get_instance(
        &self,
        project: &str,
        name: &str,
    ) -> Result<Option<InstanceRecord>, StoreError> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let table = tx.open_table(INSTANCES).map_err(db_err)?;
        let row = table.get((project, name)).map_err(db_err)?;
        row.map(|v| {
            decode(v.value(), || {
                format!("instance {name} of project {project}")
            })
        })
        .transpose()
    }

    /// Every instance of every project.
    pub fn list_instances(&self) -> Result<Vec<InstanceRecord>, StoreError> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let table = tx.open_table(INSTANCES).map_err(db_err)?;
        let mut out = Vec::new();
        for row in table.iter().map_err(db_err)? {
            let (k, v) = row.map_err(db_err)?;
            let (project, name) = k.value();
            out.push(decode(v.value(), || {
                format!("instance {name} of project {project}")
            })?);
        }
        Ok(out)
    }

    pub fn delete_instance(&self, project: &str, name: &str) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(db_err)?;
        tx.open_table(INSTANCES)
            .map_err(db_err)?
            .remove((project, name))
            .map_err(db_err)?;
        tx.commit().map_err(db_err)
    }
}
