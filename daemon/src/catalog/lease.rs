//! Leases: an available image held for a build that reads it (its base, or a warm start being
//! saved), so that it is neither deleted nor replaced while the lease lives. An image deleted
//! by force while leased is removed by its last lease, when that drops.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::access::Manage;
use super::{blocking, files, Catalog, CatalogError, ImageRecord, Requester, State};
use crate::store::Store;
use crate::sync::{lock, Hold, Holds};

/// An available image held for a build that reads it (as its base): while any lease on it
/// lives, the image is not deleted, and a newer image of the same name does not remove it.
#[derive(Debug)]
pub struct ImageLease {
    record: ImageRecord,
    hold: Option<Hold>,
    release: Release,
}

/// What the last lease of an image deleted by force needs to finish deleting it.
#[derive(Clone)]
struct Release {
    store: Arc<Store>,
    dir: PathBuf,
    leases: Holds,
    doomed: Doomed,
}

impl std::fmt::Debug for Release {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Release")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// Images deleted by force while leased (`deleting`, by id): the last lease removes them.
#[derive(Debug, Default, Clone)]
pub(super) struct Doomed(Arc<Mutex<HashSet<String>>>);

impl Doomed {
    pub(super) fn insert(&self, id: &str) {
        lock(&self.0).insert(id.to_owned());
    }

    /// Whether `id` was doomed (and is no longer: one caller finishes it).
    pub(super) fn remove(&self, id: &str) -> bool {
        lock(&self.0).remove(id)
    }
}

impl Drop for ImageLease {
    fn drop(&mut self) {
        drop(self.hold.take());
        let (r, rel) = (&self.record, &self.release);
        if rel.leases.count(&r.id) > 0 || !rel.doomed.remove(&r.id) {
            return;
        }
        tracing::info!(image = %r.id, name = %r.name, "last build reading an image deleted by force ended; removing it");
        if let Err(e) = files::remove_image_files(&rel.dir, &r.id, &r.path) {
            tracing::warn!(image = %r.id, "cannot remove the files of a deleted image: {e}");
        }
        if let Err(e) = rel.store.delete_image(&r.id) {
            tracing::warn!(image = %r.id, "cannot remove the row of a deleted image: {e}");
        }
    }
}

impl ImageLease {
    pub fn record(&self) -> &ImageRecord {
        &self.record
    }

    /// The qcow2 file to read (e.g. as the backing file of an overlay).
    pub fn path(&self) -> &Path {
        &self.record.path
    }
}

impl Catalog {
    /// Holds the available image `key` names for `project` (a build's base image) until the
    /// lease is dropped.
    pub async fn lease(&self, project: &str, key: &str) -> Result<ImageLease, CatalogError> {
        let found = self.find(project, key).await?;
        let mut lease = ImageLease {
            record: found.clone(),
            hold: Some(self.leases.hold(&found.id)),
            release: Release {
                store: self.store.clone(),
                dir: self.dir.clone(),
                leases: self.leases.clone(),
                doomed: self.doomed.clone(),
            },
        };
        // Re-read after taking the lease: a delete that began meanwhile either sees the lease
        // or has already left a state this check refuses.
        let (store, id) = (self.store.clone(), found.id.clone());
        let now = blocking(move || Ok(store.get_image(&id)?)).await?;
        match now {
            Some(r) if r.state == State::Available => {
                lease.record = r;
                Ok(lease)
            }
            Some(r) => Err(CatalogError::Conflict(format!(
                "image {} ({}) is {}; only available images can be built from",
                r.name,
                r.id,
                r.state.as_str()
            ))),
            None => Err(CatalogError::NotFound {
                project: project.to_string(),
                image: key.to_string(),
            }),
        }
    }

    pub(super) fn leased(&self, id: &str) -> usize {
        self.leases.count(id)
    }

    /// Holds image `key` for saving a booted VM of it (warm start): like deleting, its owner
    /// project may do this to a private image, an admin to a public one.
    pub async fn lease_to_manage(
        &self,
        who: &Requester,
        key: &str,
    ) -> Result<ImageLease, CatalogError> {
        let lease = self.lease(&who.project, key).await?;
        who.may_manage(lease.record(), Manage::Warm)?;
        Ok(lease)
    }
}
