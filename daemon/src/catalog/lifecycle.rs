//! An image's life in the catalog: the `creating` row and its files ([`Creation`], sealed into an
//! available image or removed when dropped), older images of a name superseded, deletion, shares,
//! and the repair of what a daemon that died left unfinished.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use kiln_shared::protocol::{ImageInfo, LineageEntry};

use super::access::Manage;
use super::names::{check_project_name, gib_ceil};
use super::{blocking, files, io_err, Catalog, CatalogError, ImageRecord, Requester, State};
use crate::qemu_img;
use crate::store::StoreError;

/// A `creating` row and its files. Dropped before [`Creation::finish`] succeeded (an error, a
/// canceled build, shutdown), it removes the files and the row.
pub(super) struct Creation<'a> {
    catalog: &'a Catalog,
    pub(super) record: ImageRecord,
    done: bool,
    /// Set when the creation is dropped unfinished; the row's insert, which may still be
    /// running on a blocking thread, then removes the row itself.
    abandoned: Arc<AtomicBool>,
}

impl Drop for Creation<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        self.abandoned.store(true, Ordering::SeqCst);
        let r = &self.record;
        tracing::info!(image = %r.id, name = %r.name, "image not created; removing its files");
        if let Err(e) = files::remove_image_files(&self.catalog.dir, &r.id, &r.path) {
            tracing::warn!(image = %r.id, "cannot remove files of an unfinished image: {e}");
        }
        if let Err(e) = self.catalog.store.delete_image(&r.id) {
            tracing::warn!(image = %r.id, "cannot remove the row of an unfinished image: {e}");
        }
    }
}

impl Creation<'_> {
    /// Seals `written` as the image's file and marks the image available.
    pub(super) async fn finish(mut self, written: &Path) -> Result<ImageRecord, CatalogError> {
        let (src, dest) = (written.to_path_buf(), self.record.path.clone());
        let (file_size, sha256) = blocking(move || {
            files::seal(&src, &dest).map_err(io_err(format!("write image {}", dest.display())))
        })
        .await?;
        let info = qemu_img::info(&self.record.path, Some("qcow2")).await?;
        if info.backing_file.is_some() || info.data_file.is_some() {
            return Err(CatalogError::Tool(format!(
                "{} came out with a backing or data file; refusing to publish it",
                self.record.path.display()
            )));
        }
        let store = self.catalog.store.clone();
        let id = self.record.id.clone();
        let record = blocking(move || {
            store
                .update_image(&id, |r| {
                    if r.state != State::Creating {
                        return Err(CatalogError::Conflict(format!(
                            "image {id} became {} while it was being created",
                            r.state.as_str()
                        )));
                    }
                    r.state = State::Available;
                    r.file_size = file_size;
                    r.sha256 = sha256;
                    r.virtual_size = info.virtual_size;
                    r.min_disk_gb = r.min_disk_gb.max(gib_ceil(info.virtual_size));
                    Ok(())
                })?
                .ok_or_else(|| CatalogError::Conflict(format!("image {id} vanished")))
        })
        .await?;
        self.done = true;
        tracing::info!(image = %record.id, name = %record.name, size = record.file_size, "image available");
        Ok(record)
    }
}

impl Catalog {
    /// Repairs what a daemon that died left behind; call only while no catalog work runs.
    /// Images still `creating` lose their files and become `failed`; images being deleted are
    /// deleted; an available image whose file is gone becomes `failed`; leftover temporary
    /// files and bootstrap work directories are removed. Never leaves a half-written image
    /// listed as available.
    pub fn recover(&self) -> Result<(), CatalogError> {
        for r in self.store.list_images()? {
            match r.state {
                State::Creating => {
                    files::remove_image_files(&self.dir, &r.id, &r.path)
                        .map_err(io_err(format!("remove the unfinished image {}", r.id)))?;
                    self.store.update_image(&r.id, |r| {
                        r.state = State::Failed;
                        r.message = Some(
                            "kilnd stopped while this image was being created; its partial \
                             file was removed. Delete it and create it again"
                                .into(),
                        );
                        Ok::<_, StoreError>(())
                    })?;
                    tracing::warn!(image = %r.id, name = %r.name, "unfinished image marked failed");
                }
                State::Deleting => {
                    files::remove_image_files(&self.dir, &r.id, &r.path)
                        .map_err(io_err(format!("remove the image {} being deleted", r.id)))?;
                    self.store.delete_image(&r.id)?;
                    tracing::info!(image = %r.id, name = %r.name, "finished deleting image");
                }
                State::Available if !r.path.is_file() => {
                    self.store.update_image(&r.id, |r| {
                        r.state = State::Failed;
                        r.message = Some(format!(
                            "the image file {} is missing; delete the image and create it again",
                            r.path.display()
                        ));
                        Ok::<_, StoreError>(())
                    })?;
                    tracing::warn!(image = %r.id, path = %r.path.display(), "image file missing; marked failed");
                }
                State::Available | State::Failed => {}
            }
        }
        for p in files::sweep(&self.dir) {
            tracing::info!("removed leftover {}", p.display());
        }
        Ok(())
    }

    /// Deletes an image: its owner project may delete a private image, an admin a public one.
    pub async fn delete(&self, who: &Requester, key: &str) -> Result<(), CatalogError> {
        let r = self.find(&who.project, key).await?;
        who.may_manage(&r, Manage::Delete)?;
        self.remove(&r).await
    }

    /// `deleting` → file removed → row removed. Refuses images being created or in use.
    pub(super) async fn remove(&self, r: &ImageRecord) -> Result<(), CatalogError> {
        let name = r.name.clone();
        let marked = self
            .update(&r.id, move |r| match r.state {
                State::Available | State::Failed => {
                    r.state = State::Deleting;
                    Ok(())
                }
                State::Creating => Err(CatalogError::Conflict(format!(
                    "image {name} is still being created; wait until it is available or failed"
                ))),
                State::Deleting => Err(CatalogError::Conflict(format!(
                    "image {name} is being deleted already"
                ))),
            })
            .await;
        let deleting = marked?;
        let users = self.leased(&r.id);
        let store = self.store.clone();
        let id = r.id.clone();
        let instances: Vec<String> = blocking(move || Ok(store.list_instances()?))
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|i| i.instance.image_id == id)
            .map(|i| format!("{} (project {})", i.instance.name, i.instance.project))
            .collect();
        // In use: back to the state it had, the image stays as it was.
        let state = r.state;
        let restore = || {
            self.update(&r.id, move |x| {
                x.state = state;
                Ok(())
            })
        };
        if !instances.is_empty() {
            restore().await?;
            return Err(CatalogError::Conflict(format!(
                "image {} is in use by instance {}; delete {} first (`kiln instance delete`)",
                r.name,
                instances.join(", "),
                if instances.len() == 1 { "it" } else { "them" }
            )));
        }
        if users > 0 {
            restore().await?;
            return Err(CatalogError::Conflict(format!(
                "image {} is in use by {users} build{}; delete it once they have finished",
                r.name,
                if users == 1 { "" } else { "s" }
            )));
        }
        let (store, dir) = (self.store.clone(), self.dir.clone());
        blocking(move || {
            files::remove_image_files(&dir, &deleting.id, &deleting.path)
                .map_err(io_err(format!("remove {}", deleting.path.display())))?;
            store.delete_image(&deleting.id)?;
            Ok(())
        })
        .await?;
        tracing::info!(image = %r.id, name = %r.name, "image deleted");
        Ok(())
    }

    /// Lets `projects` see a private image of `who`'s project (as `shared`).
    pub async fn share(
        &self,
        who: &Requester,
        key: &str,
        projects: &[String],
    ) -> Result<ImageInfo, CatalogError> {
        self.change_shares(who, key, projects, true).await
    }

    /// Stops `projects` from seeing a private image of `who`'s project.
    pub async fn unshare(
        &self,
        who: &Requester,
        key: &str,
        projects: &[String],
    ) -> Result<ImageInfo, CatalogError> {
        self.change_shares(who, key, projects, false).await
    }

    async fn change_shares(
        &self,
        who: &Requester,
        key: &str,
        projects: &[String],
        add: bool,
    ) -> Result<ImageInfo, CatalogError> {
        let verb = if add { "share" } else { "unshare" };
        if projects.is_empty() {
            return Err(CatalogError::Invalid(format!(
                "name at least one project to {verb} the image with"
            )));
        }
        for p in projects {
            check_project_name(p)?;
        }
        let r = self.find(&who.project, key).await?;
        who.may_manage(&r, if add { Manage::Share } else { Manage::Unshare })?;
        if add && projects.iter().any(|p| p == &who.project) {
            return Err(CatalogError::Invalid(format!(
                "image {} belongs to project {:?} already",
                r.name, who.project
            )));
        }
        let projects = projects.to_vec();
        let updated = self
            .update(&r.id, move |r| {
                if add {
                    r.shared_with.extend(projects);
                } else {
                    r.shared_with.retain(|p| !projects.contains(p));
                }
                r.shared_with.sort();
                r.shared_with.dedup();
                Ok(())
            })
            .await?;
        tracing::info!(image = %updated.id, shared_with = ?updated.shared_with, "image {verb}d");
        updated
            .info_for(&who.project)
            .ok_or_else(|| CatalogError::Conflict("image changed owner meanwhile".into()))
    }

    /// Stores the row of a new image (state `creating`) after `check` accepted the rows there
    /// (it may complete the record from them: a gallery version's number; never its id or path).
    pub(super) async fn begin(
        &self,
        record: ImageRecord,
        check: impl FnOnce(&[ImageRecord], &mut ImageRecord) -> Result<(), CatalogError>
            + Send
            + 'static,
    ) -> Result<Creation<'_>, CatalogError> {
        let store = self.store.clone();
        let mut row = record.clone();
        // Lineage: the parent's hash as it is now (it may be replaced or deleted later).
        if let Some(parent) = row.parent_image.clone() {
            let s = store.clone();
            row.parent_sha256 = blocking(move || Ok(s.get_image(&parent)?))
                .await
                .ok()
                .flatten()
                .map(|p| p.sha256);
        }
        // Made before the insert: a future dropped while the insert runs still cleans up.
        let creation = Creation {
            catalog: self,
            record,
            done: false,
            abandoned: Arc::new(AtomicBool::new(false)),
        };
        let abandoned = creation.abandoned.clone();
        let inserted = blocking(move || {
            let stored = store.insert_image_checked(&row, check)?;
            if abandoned.load(Ordering::SeqCst) {
                let _ = store.delete_image(&row.id);
            }
            Ok(stored)
        })
        .await;
        let mut creation = creation;
        match inserted {
            Ok(stored) => creation.record = stored,
            Err(e) => {
                // Nothing was stored: no row or file to remove.
                creation.done = true;
                return Err(e);
            }
        }
        tracing::info!(image = %creation.record.id, name = %creation.record.name, "creating image");
        Ok(creation)
    }

    /// The parents of `r` back to a base (at most 32), as `who` may see them.
    pub async fn lineage(&self, who: &Requester, r: &ImageInfo) -> Vec<LineageEntry> {
        let store = self.store.clone();
        let Ok(all) = blocking(move || Ok(store.list_images()?)).await else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut next = r
            .parent_image
            .clone()
            .zip(Some(r.parent_sha256.clone().unwrap_or_default()));
        while let Some((id, sha256)) = next.take() {
            if out.len() >= 32 || out.iter().any(|e: &LineageEntry| e.id == id) {
                break;
            }
            let found = all.iter().find(|x| x.id == id);
            let seen = found.and_then(|x| x.info_for(&who.project));
            let entry = match (&seen, found) {
                (Some(i), _) => LineageEntry {
                    id: id.clone(),
                    name: i.name.clone(),
                    sha256,
                    template: i.template.clone(),
                    template_revision: i.template_revision,
                    build: i.build,
                    from_instance: i.from_instance.clone(),
                    trigger: i.trigger.clone(),
                    visibility: i.visibility.as_str().into(),
                },
                (None, found) => LineageEntry {
                    id: id.clone(),
                    name: String::new(),
                    sha256,
                    template: None,
                    template_revision: None,
                    build: None,
                    from_instance: None,
                    trigger: None,
                    visibility: if found.is_some() {
                        "not visible"
                    } else {
                        "deleted"
                    }
                    .into(),
                },
            };
            out.push(entry);
            next = seen.and_then(|i| {
                i.parent_image
                    .clone()
                    .zip(Some(i.parent_sha256.unwrap_or_default()))
            });
        }
        out
    }

    /// Once `new` is available, removes the older available images of its name in its scope
    /// (their shares carry over to `new`). Ones in use by builds stay until deleted by hand.
    pub(super) async fn supersede(&self, new: ImageRecord) -> ImageRecord {
        let store = self.store.clone();
        let Ok(all) = blocking(move || Ok(store.list_images()?)).await else {
            return new;
        };
        let older: Vec<ImageRecord> = all
            .into_iter()
            .filter(|o| {
                o.id != new.id
                    && o.name == new.name
                    && o.same_scope(&new)
                    && o.state == State::Available
                    && o.created_at <= new.created_at
            })
            .collect();
        let inherited: Vec<String> = older.iter().flat_map(|o| o.shared_with.clone()).collect();
        let mut new = new;
        if !inherited.is_empty() && new.owner.is_some() {
            let merged = self
                .update(&new.id, move |r| {
                    r.shared_with.extend(inherited);
                    r.shared_with.sort();
                    r.shared_with.dedup();
                    Ok(())
                })
                .await;
            match merged {
                Ok(r) => new = r,
                Err(e) => tracing::warn!(image = %new.id, "cannot carry shares over: {e}"),
            }
        }
        for o in older {
            match self.remove(&o).await {
                Ok(()) => {
                    tracing::info!(old = %o.id, new = %new.id, name = %o.name, "replaced older image")
                }
                Err(e) => {
                    tracing::warn!(old = %o.id, new = %new.id, "kept older image of the same name: {e}")
                }
            }
        }
        new
    }
}
