//! Build records in the store: the build as clients see it plus what the daemon must remember to
//! clean up after it (work directory, the VM's handle), and the pinned template revision.

use std::path::PathBuf;

use kiln_shared::build::Build;
use kiln_shared::Template;
use redb::{ReadableDatabase, ReadableTable};
use serde::{Deserialize, Serialize};

use crate::as_user::User;
use crate::driver::VmHandle;
use crate::queue::plan::PlannedStep;

use super::{db_err, decode, encode, Store, StoreError, BUILDS, META};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BuildRecord {
    pub build: Build,
    /// The template revision the build pinned when it started.
    pub template_body: Template,
    /// The steps the build runs, made from `template_body` when it was submitted; `build.steps`
    /// shows them. Empty in records from before kiln kept it (those builds never run again).
    #[serde(default)]
    pub plan: Vec<PlannedStep>,
    /// Resources recorded before they are created, so a restarted daemon can remove them.
    #[serde(default)]
    pub work_dir: Option<PathBuf>,
    /// The running VM, as its driver identifies it.
    #[serde(default)]
    pub vm: Option<VmHandle>,
    /// A qemu pid, as records from before VM handles held it; read by [`BuildRecord::vm`].
    #[serde(default, rename = "qemu_pid", skip_serializing)]
    pub legacy_qemu_pid: Option<u32>,
    /// The build VM's serial console while it runs.
    #[serde(default)]
    pub console: Option<PathBuf>,
    /// Who started the build (None in records from before kiln kept it). kilnd reads the
    /// local files a template names, and writes its export files, only where this user may: in
    /// system mode kilnd runs as root and must not be anyone's way around file permissions.
    #[serde(default)]
    pub started_by: Option<User>,
}

impl BuildRecord {
    /// The record of a build just submitted: nothing made for it yet.
    pub fn new(build: Build, template: Template, plan: Vec<PlannedStep>, by: User) -> BuildRecord {
        BuildRecord {
            build,
            template_body: template,
            plan,
            work_dir: None,
            vm: None,
            legacy_qemu_pid: None,
            console: None,
            started_by: Some(by),
        }
    }

    /// Forgets the VM (it is gone): its handle, in either form, and its console.
    pub fn vm_gone(&mut self) {
        self.vm = None;
        self.legacy_qemu_pid = None;
        self.console = None;
    }

    /// The VM a restarted kilnd must end, whichever form the record holds it in.
    pub fn vm_handle(&self) -> Option<VmHandle> {
        self.vm
            .clone()
            .or_else(|| self.legacy_qemu_pid.map(crate::driver::qemu::legacy_handle))
    }
}

impl Store {
    /// Allocates the next build id (1, 2, ...), durable across restarts.
    pub fn next_build_id(&self) -> Result<u64, StoreError> {
        let tx = self.db.begin_write().map_err(db_err)?;
        let id;
        {
            let mut meta = tx.open_table(META).map_err(db_err)?;
            id = meta
                .get("next_build_id")
                .map_err(db_err)?
                .map(|v| v.value())
                .unwrap_or(1);
            meta.insert("next_build_id", id + 1).map_err(db_err)?;
        }
        tx.commit().map_err(db_err)?;
        Ok(id)
    }

    pub fn put_build(&self, record: &BuildRecord) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(db_err)?;
        tx.open_table(BUILDS)
            .map_err(db_err)?
            .insert(record.build.id, encode(record).as_slice())
            .map_err(db_err)?;
        tx.commit().map_err(db_err)
    }

    /// Stores `records` in one transaction, each under the next build id (written into it):
    /// for seeding a store with many builds at once (the dashboard benchmark).
    pub fn add_builds(&self, records: &mut [BuildRecord]) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(db_err)?;
        {
            let mut meta = tx.open_table(META).map_err(db_err)?;
            let mut next = meta
                .get("next_build_id")
                .map_err(db_err)?
                .map(|v| v.value())
                .unwrap_or(1);
            let mut table = tx.open_table(BUILDS).map_err(db_err)?;
            for record in records.iter_mut() {
                record.build.id = next;
                next += 1;
                table
                    .insert(record.build.id, encode(record).as_slice())
                    .map_err(db_err)?;
            }
            meta.insert("next_build_id", next).map_err(db_err)?;
        }
        tx.commit().map_err(db_err)
    }

    pub fn get_build(&self, id: u64) -> Result<Option<BuildRecord>, StoreError> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let table = tx.open_table(BUILDS).map_err(db_err)?;
        let row = table.get(id).map_err(db_err)?;
        row.map(|v| decode(v.value(), || format!("build {id}")))
            .transpose()
    }

    /// Every build, oldest first.
    pub fn list_builds(&self) -> Result<Vec<BuildRecord>, StoreError> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let table = tx.open_table(BUILDS).map_err(db_err)?;
        let mut out = Vec::new();
        for row in table.iter().map_err(db_err)? {
            let (k, v) = row.map_err(db_err)?;
            out.push(decode(v.value(), || format!("build {}", k.value()))?);
        }
        Ok(out)
    }
}
