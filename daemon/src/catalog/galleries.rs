//! Galleries: a project's named collections of image definitions (`GALLERY/IMAGE`, each of one
//! OS) and their numbered versions (`GALLERY/IMAGE:MAJOR.MINOR.PATCH`). A version is an image of
//! the catalog like any other (held, leased, shared and deleted as one); its record says where it
//! sits. A `gallery` distribute target publishes the next version (`auto`) or a new explicit
//! one; `latest` resolves, when a build is queued, to the highest available version not
//! excluded from latest.

use std::path::Path;

use chrono::Utc;
use kiln_shared::names::gallery_version;
use kiln_shared::protocol::{
    Gallery, GalleryImage, GalleryRef, GalleryVersion, ImageInfo, Retention,
};

use super::names::{check_name, check_os, new_id};
use super::{blocking, files, Catalog, CatalogError, ImageRecord, Requester, State};
use crate::qemu_img;
use crate::store::{DefinitionRecord, GalleryRecord};

/// What a `gallery` target asks for.
#[derive(Debug, Clone)]
pub struct VersionTarget {
    pub gallery: String,
    pub image: String,
    /// "auto" or MAJOR.MINOR.PATCH.
    pub version: String,
    pub exclude_from_latest: bool,
    pub share_with: Vec<String>,
}

pub(super) fn split_full(full: &str) -> Result<(&str, &str), CatalogError> {
    full.split_once('/').ok_or_else(|| {
        CatalogError::Invalid(format!(
            "{full:?} is not GALLERY/IMAGE (e.g. \"web/nginx\")"
        ))
    })
}

pub(super) fn not_found(project: &str, gallery: &str) -> CatalogError {
    CatalogError::NotFound {
        project: project.into(),
        image: format!("gallery {gallery}"),
    }
}

/// The versions of `gallery`/`image` among `images` (every state), owned by `project`.
pub(super) fn versions_of<'a>(
    images: &'a [ImageRecord],
    project: &'a str,
    gallery: &'a str,
    image: &'a str,
) -> impl Iterator<Item = (&'a ImageRecord, &'a GalleryRef)> + 'a {
    images.iter().filter_map(move |r| {
        let g = r.gallery.as_ref()?;
        (r.owner.as_deref() == Some(project) && g.gallery == gallery && g.image == image)
            .then_some((r, g))
    })
}

/// The version `latest` means: the highest available one not excluded from latest.
fn latest<'a>(
    versions: impl Iterator<Item = (&'a ImageRecord, &'a GalleryRef)>,
) -> Option<&'a ImageRecord> {
    versions
        .filter(|(r, g)| r.state == State::Available && !g.exclude_from_latest)
        .max_by_key(|(_, g)| gallery_version(&g.version))
        .map(|(r, _)| r)
}

/// The number a new version takes: the next patch after the highest (1.0.0 for the first), or
/// `asked`, which must not exist yet.
fn next_version<'a>(
    mut versions: impl Iterator<Item = (&'a ImageRecord, &'a GalleryRef)>,
    asked: &str,
    full_name: &str,
) -> Result<String, CatalogError> {
    if asked != "auto" {
        if gallery_version(asked).is_none() {
            return Err(CatalogError::Invalid(format!(
                "version {asked:?} of {full_name}: use \"auto\" or MAJOR.MINOR.PATCH"
            )));
        }
        return match versions.find(|(_, g)| g.version == asked) {
            Some((r, _)) => Err(CatalogError::Conflict(format!(
                "{full_name}:{asked} exists already (image {}, {}); a version is published once: \
                 use version = \"auto\" or a new number",
                r.id,
                r.state.as_str()
            ))),
            None => Ok(asked.to_owned()),
        };
    }
    let highest = versions
        .filter_map(|(_, g)| gallery_version(&g.version))
        .max();
    Ok(match highest {
        Some([major, minor, patch]) => format!("{major}.{minor}.{}", patch + 1),
        None => "1.0.0".into(),
    })
}

impl Catalog {
    pub(super) fn gallery_view(&self, record: GalleryRecord, images: &[ImageRecord]) -> Gallery {
        let definitions = record
            .images
            .iter()
            .map(|d| {
                let mut versions: Vec<GalleryVersion> =
                    versions_of(images, &record.project, &record.name, &d.name)
                        .map(|(r, g)| GalleryVersion {
                            version: g.version.clone(),
                            image_id: r.id.clone(),
                            state: r
                                .info_for(&record.project)
                                .map_or(kiln_shared::protocol::ImageState::Available, |i| i.state),
                            exclude_from_latest: g.exclude_from_latest,
                            deprecated_at: g.deprecated_at,
                            created_at: r.created_at,
                            build: r.build,
                            file_size: r.file_size,
                            sha256: r.sha256.clone(),
                        })
                        .collect();
                versions.sort_by_key(|v| std::cmp::Reverse(gallery_version(&v.version)));
                GalleryImage {
                    name: d.name.clone(),
                    os: d.os.clone(),
                    created_at: d.created_at,
                    retention: d.retention,
                    latest: latest(versions_of(images, &record.project, &record.name, &d.name))
                        .and_then(|r| r.gallery.as_ref())
                        .map(|g| g.version.clone()),
                    versions,
                }
            })
            .collect();
        Gallery {
            name: record.name,
            project: record.project,
            description: record.description,
            created_at: record.created_at,
            images: definitions,
            members: record.members,
            share_status: None,
        }
    }

    pub(super) async fn gallery_record(
        &self,
        project: &str,
        name: &str,
    ) -> Result<GalleryRecord, CatalogError> {
        let (store, p, n) = (self.store.clone(), project.to_owned(), name.to_owned());
        blocking(move || Ok(store.get_gallery(&p, &n)?))
            .await?
            .ok_or_else(|| not_found(project, name))
    }

    pub(super) async fn all_images(&self) -> Result<Vec<ImageRecord>, CatalogError> {
        let store = self.store.clone();
        blocking(move || Ok(store.list_images()?)).await
    }

    pub async fn gallery_create(
        &self,
        who: &Requester,
        name: &str,
        description: &str,
    ) -> Result<Gallery, CatalogError> {
        check_name(name).map_err(|e| CatalogError::Invalid(format!("gallery {e}")))?;
        let record = GalleryRecord {
            name: name.to_owned(),
            project: who.project.clone(),
            description: description.to_owned(),
            created_at: Utc::now(),
            images: Vec::new(),
            members: Vec::new(),
        };
        let (store, row) = (self.store.clone(), record.clone());
        if !blocking(move || Ok(store.insert_gallery(&row)?)).await? {
            return Err(CatalogError::Conflict(format!(
                "project {} has a gallery {name} already",
                who.project
            )));
        }
        tracing::info!(project = %who.project, gallery = name, "gallery created");
        Ok(self.gallery_view(record, &[]))
    }

    pub async fn gallery_list(&self, who: &Requester) -> Result<Vec<Gallery>, CatalogError> {
        let (store, p) = (self.store.clone(), who.project.clone());
        let records = blocking(move || Ok(store.list_galleries(&p)?)).await?;
        let images = self.all_images().await?;
        let mut out: Vec<Gallery> = records
            .into_iter()
            .map(|r| self.gallery_view(r, &images))
            .collect();
        // Then the galleries other projects offered it, with its answer.
        out.extend(self.shared_galleries(&who.project, &images).await?);
        Ok(out)
    }

    /// The project's own gallery `name`, else the one of that name another project shared with
    /// it (as it sees it; several are refused as ambiguous).
    pub async fn gallery_get(&self, who: &Requester, name: &str) -> Result<Gallery, CatalogError> {
        let images = self.all_images().await?;
        let own = self.gallery_record(&who.project, name).await;
        let Err(CatalogError::NotFound { .. }) = own else {
            return Ok(self.gallery_view(own?, &images));
        };
        let mut shared: Vec<Gallery> = self
            .shared_galleries(&who.project, &images)
            .await?
            .into_iter()
            .filter(|g| g.name == name)
            .collect();
        match shared.len() {
            0 => Err(not_found(&who.project, name)),
            1 => Ok(shared.remove(0)),
            _ => {
                Err(CatalogError::Conflict(format!(
                "projects {} each shared a gallery {name} with {}; `kiln gallery list` shows them",
                shared.iter().map(|g| g.project.as_str()).collect::<Vec<_>>().join(", "),
                who.project
            )))
            }
        }
    }

    /// Adds the image definition `GALLERY/IMAGE` of `os` with `retention`.
    pub async fn gallery_image_create(
        &self,
        who: &Requester,
        full: &str,
        os: &str,
        retention: Retention,
    ) -> Result<Gallery, CatalogError> {
        let (gallery, image) = split_full(full)?;
        check_name(image).map_err(|e| CatalogError::Invalid(format!("gallery image {e}")))?;
        check_os(os)?;
        super::retention::check(&retention)?;
        self.define(&who.project, gallery, image, os, true).await?;
        self.gallery_image_update(who, full, retention).await
    }

    /// Makes sure `gallery` has the definition `image` of `os` (adding it unless `must_be_new`
    /// and it exists); a definition of another OS is an error.
    async fn define(
        &self,
        project: &str,
        gallery: &str,
        image: &str,
        os: &str,
        must_be_new: bool,
    ) -> Result<GalleryRecord, CatalogError> {
        let (store, p, g) = (self.store.clone(), project.to_owned(), gallery.to_owned());
        let (image, os) = (image.to_owned(), os.to_owned());
        blocking(move || {
            store.update_gallery(&p, &g, |rec| match rec.definition(&image) {
                Some(_) if must_be_new => Err(CatalogError::Conflict(format!(
                    "{g}/{image} exists already"
                ))),
                Some(d) if d.os != os => Err(CatalogError::Invalid(format!(
                    "{g}/{image} holds {} images; this one is {os}",
                    d.os
                ))),
                Some(_) => Ok(()),
                None => {
                    rec.images.push(DefinitionRecord {
                        name: image.clone(),
                        os: os.clone(),
                        created_at: Utc::now(),
                        retention: Retention::default(),
                    });
                    Ok(())
                }
            })
        })
        .await?
        .ok_or_else(|| not_found(project, gallery))
    }

    /// Deletes a gallery; one holding versions only with `recursive`, which deletes them too.
    /// Refused, deleting nothing, while the gallery is shared (with a project that did not
    /// reject it) or any version is shared or used, naming who uses what, unless `force` (as
    /// `image.delete`: instances still refuse it).
    pub async fn gallery_delete(
        &self,
        who: &Requester,
        name: &str,
        recursive: bool,
        force: bool,
    ) -> Result<(), CatalogError> {
        let record = self.gallery_record(&who.project, name).await?;
        let images = self.all_images().await?;
        let versions: Vec<&ImageRecord> = record
            .images
            .iter()
            .flat_map(|d| versions_of(&images, &who.project, name, &d.name).map(|(r, _)| r))
            .collect();
        if !versions.is_empty() && !recursive {
            return Err(CatalogError::Conflict(format!(
                "gallery {name} holds {} version{}; delete them first or pass --recursive",
                versions.len(),
                if versions.len() == 1 { "" } else { "s" }
            )));
        }
        let members: Vec<String> = record
            .members
            .iter()
            .filter(|m| m.status != kiln_shared::protocol::ShareStatus::Rejected)
            .map(|m| format!("{} ({})", m.project, m.status.as_str()))
            .collect();
        let mut refusals = Vec::new();
        if !members.is_empty() && !force {
            refusals.push(format!(
                "gallery {name} is shared with project{} {}; unshare it (`kiln gallery unshare`) \
                 or pass --force",
                if members.len() == 1 { "" } else { "s" },
                members.join(", ")
            ));
        }
        let how = super::lifecycle::Removal::Delete { force };
        for v in &versions {
            if let Some(r) = self.users_of(v).await?.refusal(&v.name, how) {
                refusals.push(r);
            }
        }
        if !refusals.is_empty() {
            return Err(CatalogError::Conflict(format!(
                "not deleting gallery {name}: {}",
                refusals.join("; ")
            )));
        }
        for v in versions {
            self.remove_as(v, how).await?;
        }
        let (store, p, n) = (self.store.clone(), who.project.clone(), name.to_owned());
        blocking(move || Ok(store.delete_gallery(&p, &n)?)).await?;
        tracing::info!(project = %who.project, gallery = name, "gallery deleted");
        Ok(())
    }

    /// The version of `GALLERY/IMAGE` a build of `project` uses: `latest` or an explicit one.
    /// `GALLERY` is the project's own gallery of that name, else the one of that name another
    /// project shared with it and it accepted (several such are refused as ambiguous).
    pub(super) fn resolve_version(
        &self,
        project: &str,
        full: &str,
        version: &str,
    ) -> Result<ImageRecord, CatalogError> {
        let (gallery, image) = full.split_once('/').unwrap_or((full, ""));
        let Some(owner) = self.gallery_owner_for(project, gallery)? else {
            return Err(not_found(project, gallery));
        };
        let images = self.store.list_images()?;
        let seen = || {
            versions_of(&images, &owner, gallery, image)
                .filter(|(r, _)| r.visibility_for(project).is_some())
        };
        let found = if version == "latest" {
            latest(seen())
        } else {
            seen().find(|(_, g)| g.version == version).map(|(r, _)| r)
        };
        found.cloned().ok_or_else(|| CatalogError::NotFound {
            project: project.into(),
            image: if version == "latest" {
                format!("{full} (no available version that is not excluded from latest)")
            } else {
                format!("{full}:{version}")
            },
        })
    }

    /// The distribute step for `gallery` targets: like [`Catalog::publish`], as version
    /// `target.version` of `GALLERY/IMAGE` (its definition made for the template's OS when
    /// missing; the gallery must exist).
    pub async fn publish_version(
        &self,
        source: &Path,
        build: &kiln_shared::build::Build,
        template: &kiln_shared::Template,
        target: VersionTarget,
        login: crate::store::Login,
    ) -> Result<ImageInfo, CatalogError> {
        let project = build.project.clone();
        self.define(
            &project,
            &target.gallery,
            &target.image,
            &template.os,
            false,
        )
        .await
        .map_err(|e| match e {
            CatalogError::NotFound { .. } => CatalogError::NotFound {
                project: project.clone(),
                image: format!(
                    "gallery {} (create it with `kiln gallery create {}`)",
                    target.gallery, target.gallery
                ),
            },
            e => e,
        })?;
        let id = new_id();
        let full = format!("{}/{}", target.gallery, target.image);
        let mut record = ImageRecord::new(
            &id,
            &full,
            &template.os,
            Some(&project),
            self.image_path(&id),
        );
        record.template = Some(build.template.clone());
        record.template_revision = Some(build.revision);
        record.build = Some(build.id);
        record.parent_image = Some(build.base_image.clone());
        record.trigger = build.triggered_by.clone();
        record.set_login(login);
        record.min_disk_gb = u64::from(template.min_disk_gb);
        record.shared_with = super::sharing::offered(&target.share_with, &project);
        let (p, asked, exclude) = (
            project.clone(),
            target.version.clone(),
            target.exclude_from_latest,
        );
        let (g, i) = (target.gallery.clone(), target.image.clone());
        let creation = self
            .begin(record, move |existing, record| {
                let version = next_version(versions_of(existing, &p, &g, &i), &asked, &full)?;
                // The projects offered it keep the answer they gave the highest version so far.
                if let Some((prev, _)) = versions_of(existing, &p, &g, &i)
                    .max_by_key(|(_, g)| gallery_version(&g.version))
                {
                    for m in &mut record.shared_with {
                        if let Some(s) = prev.share_status(&m.project) {
                            m.status = s;
                        }
                    }
                }
                record.name = format!("{full}:{version}");
                record.gallery = Some(GalleryRef {
                    gallery: g.clone(),
                    image: i.clone(),
                    version,
                    exclude_from_latest: exclude,
                    deprecated_at: None,
                });
                Ok(())
            })
            .await?;
        let written = files::partial_of(&creation.record.path);
        qemu_img::convert(source, "qcow2", qemu_img::Format::Qcow2Zstd, &written).await?;
        let record = creation.finish(&written).await?;
        let record = self.with_gallery_members(record).await;
        tracing::info!(image = %record.id, name = %record.name, "gallery version published");
        self.announce(&record);
        record
            .info_for(&project)
            .ok_or_else(|| CatalogError::Conflict("image vanished".into()))
    }
}

#[cfg(test)]
pub(super) mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    pub(in crate::catalog) fn version(v: &str, state: State, exclude: bool) -> ImageRecord {
        let mut r = ImageRecord::new(
            &format!("img-{v}"),
            "g/i",
            "debian-12",
            Some("p"),
            "/x".into(),
        );
        r.state = state;
        r.gallery = Some(GalleryRef {
            gallery: "g".into(),
            image: "i".into(),
            version: v.into(),
            exclude_from_latest: exclude,
            deprecated_at: None,
        });
        r
    }

    #[test]
    fn auto_takes_the_next_patch_and_latest_skips_excluded_and_unavailable() {
        let mut images = vec![
            version("1.0.0", State::Available, false),
            version("1.0.9", State::Available, false),
            version("1.0.10", State::Available, true),
        ];
        let v = |imgs: &[ImageRecord], asked: &str| {
            next_version(versions_of(imgs, "p", "g", "i"), asked, "g/i")
        };
        assert_eq!(v(&images, "auto").unwrap(), "1.0.11");
        assert_eq!(v(&[], "auto").unwrap(), "1.0.0");
        assert_eq!(v(&images, "2.0.0").unwrap(), "2.0.0");
        let err = v(&images, "1.0.9").unwrap_err().to_string();
        assert!(err.contains("g/i:1.0.9 exists already"), "{err}");
        assert!(v(&images, "1.0").is_err());
        let l = latest(versions_of(&images, "p", "g", "i")).unwrap();
        assert_eq!(l.id, "img-1.0.9");
        images.push(version("1.0.12", State::Creating, false));
        let l = latest(versions_of(&images, "p", "g", "i")).unwrap();
        assert_eq!(
            l.id, "img-1.0.9",
            "a version still being made is not latest"
        );
        assert!(latest(versions_of(&images, "other", "g", "i")).is_none());
    }
}
