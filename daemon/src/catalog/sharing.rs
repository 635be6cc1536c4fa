//! Sharing, as Glance's image members: the owner offers an image or a whole gallery to other
//! projects (`pending` there), each of which accepts (then sees and uses it as `shared`) or
//! rejects it; the owner sees every member's answer and withdraws the offer with unshare.
//!
//! A gallery's members are kept on the gallery and copied onto each of its versions (each
//! version's own share list is what visibility reads, as for any image): answering or
//! withdrawing a gallery share rewrites every version's entry for that project, and a new
//! version takes the gallery's members when it becomes available.

use kiln_shared::protocol::{Gallery, ImageInfo, ShareMember, ShareStatus};

use super::access::Manage;
use super::names::check_project_name;
use super::{blocking, Catalog, CatalogError, ImageRecord, Requester};
use crate::store::{set_member, GalleryRecord};

/// The members a new image offered to `projects` starts with (all pending; never its owner).
pub(super) fn offered(projects: &[String], owner: &str) -> Vec<ShareMember> {
    let mut members = Vec::new();
    for p in projects.iter().filter(|p| *p != owner) {
        set_member(&mut members, p, ShareStatus::Pending);
    }
    members
}

/// `projects` checked as the projects of a share (`verb`: share, unshare), for `what`.
fn check_projects(projects: &[String], verb: &str, what: &str) -> Result<(), CatalogError> {
    if projects.is_empty() {
        return Err(CatalogError::Invalid(format!(
            "name at least one project to {verb} the {what} with"
        )));
    }
    for p in projects {
        check_project_name(p)?;
    }
    Ok(())
}

impl Catalog {
    /// Offers a private image of `who`'s project to `projects`: pending there until each
    /// accepts. A project that answered already keeps its answer.
    pub async fn share(
        &self,
        who: &Requester,
        key: &str,
        projects: &[String],
    ) -> Result<ImageInfo, CatalogError> {
        self.change_shares(who, key, projects, true).await
    }

    /// Withdraws a private image of `who`'s project from `projects` (whatever they answered).
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
        check_projects(projects, verb, "image")?;
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
                for p in &projects {
                    if add {
                        if r.share_status(p).is_none() {
                            set_member(&mut r.shared_with, p, ShareStatus::Pending);
                        }
                    } else {
                        r.shared_with.retain(|m| &m.project != p);
                    }
                }
                Ok(())
            })
            .await?;
        tracing::info!(image = %updated.id, shared_with = ?updated.shared_with, "image {verb}d");
        updated
            .info_for(&who.project)
            .ok_or_else(|| CatalogError::Conflict("image changed owner meanwhile".into()))
    }

    /// The images offered to `who`'s project that wait for its answer, by name.
    pub async fn list_pending(&self, who: &Requester) -> Result<Vec<ImageInfo>, CatalogError> {
        let store = self.store.clone();
        let records = blocking(move || Ok(store.list_images()?)).await?;
        let mut out: Vec<ImageInfo> = records
            .iter()
            .filter_map(|r| r.pending_info_for(&who.project))
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name).then(b.created_at.cmp(&a.created_at)));
        Ok(out)
    }

    /// `who`'s project answers the share of image `key` (an id, or the name of images one
    /// project offered it): `accepted` to see and use it, `rejected` to hide it again.
    pub async fn answer(
        &self,
        who: &Requester,
        key: &str,
        status: ShareStatus,
    ) -> Result<ImageInfo, CatalogError> {
        let project = who.project.clone();
        let (store, k) = (self.store.clone(), key.to_owned());
        let offered: Vec<ImageRecord> = blocking(move || Ok(store.list_images()?))
            .await?
            .into_iter()
            .filter(|r| r.owner.as_deref() != Some(&project) && r.share_status(&project).is_some())
            .filter(|r| r.id == k || r.name == k)
            .collect();
        let by_id: Vec<&ImageRecord> = offered.iter().filter(|r| r.id == key).collect();
        let targets: Vec<&ImageRecord> = if by_id.is_empty() {
            offered.iter().collect()
        } else {
            by_id
        };
        let mut owners: Vec<&str> = targets.iter().filter_map(|r| r.owner.as_deref()).collect();
        owners.sort_unstable();
        owners.dedup();
        match owners.as_slice() {
            [] => {
                return Err(CatalogError::NotFound {
                    project: who.project.clone(),
                    image: format!("{key} (no image of that id or name was shared with it)"),
                })
            }
            [_] => {}
            many => {
                return Err(CatalogError::Conflict(format!(
                    "projects {} each shared an image named {key} with {}; name it by id (`kiln \
                     image list --pending` or `--visibility shared` shows the ids)",
                    many.join(", "),
                    who.project
                )))
            }
        }
        let mut answered = None;
        for r in targets {
            let p = who.project.clone();
            let updated = self
                .update(&r.id, move |r| {
                    if r.share_status(&p).is_none() {
                        return Err(CatalogError::Conflict(format!(
                            "image {} is no longer shared with {p}",
                            r.name
                        )));
                    }
                    set_member(&mut r.shared_with, &p, status);
                    Ok(())
                })
                .await?;
            tracing::info!(image = %updated.id, project = %who.project, status = status.as_str(), "share answered");
            if answered
                .as_ref()
                .is_none_or(|a: &ImageRecord| a.created_at < updated.created_at)
            {
                answered = Some(updated);
            }
        }
        answered
            .and_then(|r| r.offered_info_for(&who.project))
            .ok_or_else(|| CatalogError::Conflict(format!("image {key} vanished meanwhile")))
    }

    /// Offers gallery `name` of `who`'s project (every version, present and future) to
    /// `projects`, or withdraws it (`add` false: from the gallery and each version).
    pub async fn gallery_share(
        &self,
        who: &Requester,
        name: &str,
        projects: &[String],
        add: bool,
    ) -> Result<Gallery, CatalogError> {
        let verb = if add { "share" } else { "unshare" };
        check_projects(projects, verb, "gallery")?;
        if add && projects.iter().any(|p| p == &who.project) {
            return Err(CatalogError::Invalid(format!(
                "gallery {name} belongs to project {:?} already",
                who.project
            )));
        }
        let (store, owner, n, ps) = (
            self.store.clone(),
            who.project.clone(),
            name.to_owned(),
            projects.to_vec(),
        );
        let record = blocking(move || {
            store.update_gallery(&owner, &n, |g| {
                for p in &ps {
                    if !add {
                        g.members.retain(|m| &m.project != p);
                    } else if g.share_status(p).is_none() {
                        set_member(&mut g.members, p, ShareStatus::Pending);
                    }
                }
                Ok::<_, CatalogError>(())
            })
        })
        .await?
        .ok_or_else(|| CatalogError::NotFound {
            project: who.project.clone(),
            image: format!("gallery {name}"),
        })?;
        for p in projects {
            self.sync_versions(&record, p).await?;
        }
        tracing::info!(project = %who.project, gallery = name, members = ?record.members, "gallery {verb}d");
        self.gallery_get(who, name).await
    }

    /// `who`'s project answers the share of gallery `name` of project `from`.
    pub async fn gallery_answer(
        &self,
        who: &Requester,
        name: &str,
        from: &str,
        status: ShareStatus,
    ) -> Result<Gallery, CatalogError> {
        check_project_name(from)?;
        let (store, f, n, p) = (
            self.store.clone(),
            from.to_owned(),
            name.to_owned(),
            who.project.clone(),
        );
        let record = blocking(move || {
            store.update_gallery(&f, &n, |g| {
                if f == p || g.share_status(&p).is_none() {
                    return Err(CatalogError::NotFound {
                        project: p.clone(),
                        image: format!("gallery {n} of project {f} (it is not shared with {p})"),
                    });
                }
                set_member(&mut g.members, &p, status);
                Ok(())
            })
        })
        .await?
        .ok_or_else(|| CatalogError::NotFound {
            project: who.project.clone(),
            image: format!(
                "gallery {name} of project {from} (it is not shared with {})",
                who.project
            ),
        })?;
        self.sync_versions(&record, &who.project).await?;
        tracing::info!(owner = from, gallery = name, project = %who.project, status = status.as_str(), "gallery share answered");
        Ok(self.member_view(record, &who.project, &self.all_images().await?))
    }

    /// Makes every version of `gallery` carry `project`'s gallery answer (or no entry, when the
    /// gallery no longer lists it).
    async fn sync_versions(
        &self,
        gallery: &GalleryRecord,
        project: &str,
    ) -> Result<(), CatalogError> {
        let status = gallery.share_status(project);
        let versions: Vec<String> = self
            .all_images()
            .await?
            .into_iter()
            .filter(|r| {
                r.owner.as_deref() == Some(gallery.project.as_str())
                    && r.gallery
                        .as_ref()
                        .is_some_and(|g| g.gallery == gallery.name)
            })
            .map(|r| r.id)
            .collect();
        for id in versions {
            let p = project.to_owned();
            self.update(&id, move |r| {
                match status {
                    Some(s) => set_member(&mut r.shared_with, &p, s),
                    None => r.shared_with.retain(|m| m.project != p),
                }
                Ok(())
            })
            .await?;
        }
        Ok(())
    }

    /// Gives a just published version of a gallery the gallery's members (their answers win
    /// over what the version was offered with). Read after the version is stored, so a gallery
    /// answer given meanwhile reaches it either way.
    pub(super) async fn with_gallery_members(&self, r: ImageRecord) -> ImageRecord {
        let (Some(owner), Some(g)) = (r.owner.clone(), r.gallery.clone()) else {
            return r;
        };
        let store = self.store.clone();
        let members = match blocking(move || Ok(store.get_gallery(&owner, &g.gallery)?)).await {
            Ok(Some(g)) => g.members,
            Ok(None) => return r,
            Err(e) => {
                tracing::warn!(image = %r.id, "cannot read its gallery's members: {e}");
                return r;
            }
        };
        if members.is_empty() {
            return r;
        }
        match self
            .update(&r.id, move |r| {
                for m in members {
                    set_member(&mut r.shared_with, &m.project, m.status);
                }
                Ok(())
            })
            .await
        {
            Ok(updated) => updated,
            Err(e) => {
                tracing::warn!(image = %r.id, "cannot give it its gallery's members: {e}");
                r
            }
        }
    }

    /// The galleries of other projects offered to `project`, as it sees them.
    pub(super) async fn shared_galleries(
        &self,
        project: &str,
        images: &[ImageRecord],
    ) -> Result<Vec<Gallery>, CatalogError> {
        let (store, p) = (self.store.clone(), project.to_owned());
        let records = blocking(move || Ok(store.galleries_shared_with(&p)?)).await?;
        Ok(records
            .into_iter()
            .map(|g| self.member_view(g, project, images))
            .collect())
    }

    /// A gallery shared with `project` as it sees it: its answer, no member list, and versions
    /// only once it accepted (and only those it sees).
    fn member_view(&self, record: GalleryRecord, project: &str, images: &[ImageRecord]) -> Gallery {
        let status = record.share_status(project);
        let mut view = self.gallery_view(record, images);
        view.members.clear();
        view.share_status = status;
        for d in &mut view.images {
            if status != Some(ShareStatus::Accepted) {
                d.versions.clear();
                d.latest = None;
            }
            d.versions.retain(|v| {
                images
                    .iter()
                    .any(|r| r.id == v.image_id && r.visibility_for(project).is_some())
            });
        }
        view
    }

    /// The owner of the gallery `gallery` that `project` means: its own, else the one accepted
    /// shared gallery of that name (`None` when there is neither; an error when several
    /// projects shared one of that name and it accepted more than one). (Blocking.)
    pub(super) fn gallery_owner_for(
        &self,
        project: &str,
        gallery: &str,
    ) -> Result<Option<String>, CatalogError> {
        if self.store.get_gallery(project, gallery)?.is_some() {
            return Ok(Some(project.to_owned()));
        }
        let owners: Vec<String> = self
            .store
            .galleries_shared_with(project)?
            .into_iter()
            .filter(|g| g.name == gallery && g.share_status(project) == Some(ShareStatus::Accepted))
            .map(|g| g.project)
            .collect();
        match owners.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(one.clone())),
            many => Err(CatalogError::Conflict(format!(
                "gallery {gallery} is ambiguous in project {project}: projects {} each shared a \
                 gallery of that name and {project} accepted both; reject all but one (`kiln \
                 gallery reject {gallery} --from PROJECT`) or name a version by image id",
                many.join(", ")
            ))),
        }
    }
}
