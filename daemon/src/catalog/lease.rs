//! Leases: an available image held for a build that reads it (its base, or a warm start being
//! saved), so that it is neither deleted nor replaced while the lease lives.

use std::path::Path;

use super::access::Manage;
use super::{blocking, Catalog, CatalogError, ImageRecord, Requester, State};
use crate::sync::Hold;

/// An available image held for a build that reads it (as its base): while any lease on it
/// lives, the image is not deleted, and a newer image of the same name does not remove it.
#[derive(Debug)]
pub struct ImageLease {
    record: ImageRecord,
    _hold: Hold,
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
            _hold: self.leases.hold(&found.id),
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
