//! An image's life in the catalog: the `creating` row and its files ([`Creation`], sealed into an
//! available image or removed when dropped), older images of a name superseded, deletion, shares,
//! and the repair of what a daemon that died left unfinished.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use kiln_shared::protocol::{ImageInfo, LineageEntry, ShareStatus};

use super::access::Manage;
use super::names::gib_ceil;
use super::{blocking, files, io_err, Catalog, CatalogError, ImageRecord, Requester, State};
use crate::qemu_img;
use crate::store::{set_member, StoreError};

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
    /// Refused while it is shared (with a project that did not reject it) or used by builds or
    /// instances, naming them; `force` deletes despite shares and builds (the builds reading it
    /// keep its file until they end), never under an instance.
    pub async fn delete(
        &self,
        who: &Requester,
        key: &str,
        force: bool,
    ) -> Result<(), CatalogError> {
        let r = self.find(&who.project, key).await?;
        who.may_manage(&r, Manage::Delete)?;
        self.remove_as(&r, Removal::Delete { force }).await
    }

    /// Removes an image that a newer one replaced (its shares carried over): refused while
    /// builds or instances use it.
    pub(super) async fn remove(&self, r: &ImageRecord) -> Result<(), CatalogError> {
        self.remove_as(r, Removal::Replaced).await
    }

    /// Who uses image `r` now: the projects it is shared with (not rejected), the builds queued
    /// or running on it, the instances made from it and how many leases hold it.
    pub(super) async fn users_of(&self, r: &ImageRecord) -> Result<Users, CatalogError> {
        let (store, id) = (self.store.clone(), r.id.clone());
        let (builds, instances) = blocking(move || {
            let builds = store
                .list_builds()?
                .into_iter()
                .filter(|b| b.build.base_image == id && !b.build.state.is_terminal())
                .map(|b| format!("{} (project {})", b.build.id, b.build.project))
                .collect();
            let instances = store
                .list_instances()?
                .into_iter()
                .filter(|i| i.instance.image_id == id)
                .map(|i| format!("{} (project {})", i.instance.name, i.instance.project))
                .collect();
            Ok((builds, instances))
        })
        .await?;
        Ok(Users {
            members: r
                .shared_with
                .iter()
                .filter(|m| m.status != ShareStatus::Rejected)
                .map(|m| format!("{} ({})", m.project, m.status.as_str()))
                .collect(),
            builds,
            instances,
            leases: self.leased(&r.id),
        })
    }

    /// `deleting` → file removed → row removed, unless `how` finds users to refuse for. A
    /// forced delete of an image builds still read leaves the file and the row (`deleting`)
    /// to the last lease, which removes them when it drops.
    pub(super) async fn remove_as(
        &self,
        r: &ImageRecord,
        how: Removal,
    ) -> Result<(), CatalogError> {
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
        // Counted after marking: a lease taken from now on sees `deleting` and lets go.
        let users = self.users_of(r).await;
        // In use: back to the state it had, the image stays as it was.
        let state = r.state;
        let restore = || {
            self.update(&r.id, move |x| {
                x.state = state;
                Ok(())
            })
        };
        let users = match users {
            Ok(u) => u,
            Err(e) => {
                restore().await?;
                return Err(e);
            }
        };
        if let Some(refusal) = users.refusal(&r.name, how) {
            restore().await?;
            return Err(CatalogError::Conflict(refusal));
        }
        if users.leases > 0 {
            // Only a forced delete gets here: the last lease to drop finishes it.
            self.doomed.insert(&r.id);
            if self.leased(&r.id) > 0 || !self.doomed.remove(&r.id) {
                tracing::info!(image = %r.id, name = %r.name, builds = ?users.builds, "image deleted by force; its file stays until the builds reading it end");
                return Ok(());
            }
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
        // Oldest first, so the newest older image's answers win.
        let mut inherited: Vec<&ImageRecord> = older.iter().collect();
        inherited.sort_by_key(|o| o.created_at);
        let inherited: Vec<_> = inherited
            .iter()
            .flat_map(|o| o.shared_with.clone())
            .collect();
        let mut new = new;
        if !inherited.is_empty() && new.owner.is_some() {
            let merged = self
                .update(&new.id, move |r| {
                    for m in inherited {
                        set_member(&mut r.shared_with, &m.project, m.status);
                    }
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

/// Why an image is being removed, which decides who may stop it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Removal {
    /// A newer image of its name took its place and its shares: builds and instances stop it.
    Replaced,
    /// Someone deletes it: shares, builds and instances stop it, unless `force` (then only
    /// instances, whose disks are overlays on its file).
    Delete { force: bool },
}

/// Who uses an image (see [`Catalog::users_of`]), each named for the error that refuses a
/// delete.
#[derive(Debug, Default)]
pub(super) struct Users {
    pub members: Vec<String>,
    pub builds: Vec<String>,
    pub instances: Vec<String>,
    pub leases: usize,
}

impl Users {
    /// The error for removing image `name` the way `how` says, or `None` when nothing stops it.
    pub fn refusal(&self, name: &str, how: Removal) -> Option<String> {
        let list = |what: &str, v: &[String]| {
            format!(
                "{what}{} {}",
                if v.len() == 1 { "" } else { "s" },
                v.join(", ")
            )
        };
        let mut uses = Vec::new();
        let (shares_count, builds_count) = match how {
            Removal::Replaced => (false, true),
            Removal::Delete { force } => (!force, !force),
        };
        if !self.instances.is_empty() {
            uses.push(list("instance", &self.instances));
        }
        if builds_count && !self.builds.is_empty() {
            uses.push(list("build", &self.builds));
        } else if builds_count && self.leases > 0 {
            uses.push(format!(
                "{} build{} or warm start{} reading it",
                self.leases,
                if self.leases == 1 { "" } else { "s" },
                if self.leases == 1 { "" } else { "s" }
            ));
        }
        if shares_count && !self.members.is_empty() {
            uses.push(format!("shared with {}", list("project", &self.members)));
        }
        if uses.is_empty() {
            return None;
        }
        let what_to_do = if !self.instances.is_empty() {
            "delete the instances first (`kiln instance delete`); --force does not cover them"
        } else if how == Removal::Replaced {
            "it stays until they are done"
        } else {
            "wait for the builds, unshare it (`kiln image unshare`), or pass --force (running \
             builds keep reading it until they end)"
        };
        Some(format!(
            "image {name} is in use: {}; {what_to_do}",
            uses.join("; ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The refusal for removing an image with `users` the way `how` says: `None`, or a message
    /// holding every piece of `expected`.
    fn check(users: Users, how: Removal, expected: Option<&[&str]>) {
        let got = users.refusal("web", how);
        match (&got, expected) {
            (None, None) => {}
            (Some(text), Some(parts)) => {
                for p in parts {
                    assert!(text.contains(p), "{p:?} in {text:?} ({how:?})");
                }
            }
            _ => panic!("{how:?}: {got:?}, not {expected:?}"),
        }
    }

    fn users(members: &[&str], builds: &[&str], instances: &[&str], leases: usize) -> Users {
        let own = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
        Users {
            members: own(members),
            builds: own(builds),
            instances: own(instances),
            leases,
        }
    }

    #[test]
    fn who_stops_a_removal() {
        let delete = Removal::Delete { force: false };
        let force = Removal::Delete { force: true };
        let replaced = Removal::Replaced;
        check(users(&[], &[], &[], 0), delete, None);
        check(
            users(&["b (accepted)"], &[], &[], 0),
            delete,
            Some(&["shared with project b (accepted)", "--force"]),
        );
        check(users(&["b (accepted)"], &[], &[], 0), force, None);
        check(users(&["b (accepted)"], &[], &[], 0), replaced, None);
        check(
            users(&[], &["7 (project b)", "8 (project c)"], &[], 1),
            delete,
            Some(&["builds 7 (project b), 8 (project c)"]),
        );
        check(users(&[], &["7 (project b)"], &[], 1), force, None);
        check(
            users(&[], &[], &[], 2),
            replaced,
            Some(&[
                "2 builds or warm starts reading it",
                "it stays until they are done",
            ]),
        );
        check(
            users(
                &["b (pending)"],
                &["7 (project b)"],
                &["box (project b)"],
                1,
            ),
            force,
            Some(&["instance box (project b)", "--force does not cover them"]),
        );
    }
}
