//! Galleries: a project's named collections of image definitions (`GALLERY/IMAGE`, each of one
//! OS) and their numbered versions (`GALLERY/IMAGE:MAJOR.MINOR.PATCH`). A version is an image of
//! the catalog like any other (held, leased, shared and deleted as one); its record says where it
//! sits. A `gallery` distribute target publishes the next version (`auto`) or a new explicit
//! one; `latest` resolves, when a build is queued, to the highest available version not
//! excluded from latest.

use std::path::Path;

use chrono::{DateTime, Utc};
use kiln_shared::names::gallery_version;
use kiln_shared::protocol::{
    Gallery, GalleryImage, GalleryRef, GalleryVersion, ImageInfo, PruneAction, Retention,
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

fn split_full(full: &str) -> Result<(&str, &str), CatalogError> {
    full.split_once('/').ok_or_else(|| {
        CatalogError::Invalid(format!(
            "{full:?} is not GALLERY/IMAGE (e.g. \"web/nginx\")"
        ))
    })
}

fn check_retention(r: &Retention) -> Result<(), CatalogError> {
    if r.keep_latest == Some(0) || r.max_age_days == Some(0) {
        return Err(CatalogError::Invalid(
            "keep_latest and max_age_days are at least 1 (leave one out for no limit)".into(),
        ));
    }
    Ok(())
}

/// What a prune does to each version of one definition, highest first: `(image id, action)`.
/// `in_use` says who uses a version (a deprecated one in use is kept).
fn prune_plan(
    mut versions: Vec<(&ImageRecord, &GalleryRef)>,
    retention: Retention,
    now: DateTime<Utc>,
    in_use: impl Fn(&ImageRecord) -> Option<String>,
) -> Vec<(String, PruneAction)> {
    versions.retain(|(r, _)| r.state == State::Available);
    versions.sort_by_key(|(_, g)| std::cmp::Reverse(gallery_version(&g.version)));
    let mut out = Vec::new();
    for (rank, (r, g)) in versions.into_iter().enumerate() {
        let beyond_count = retention
            .keep_latest
            .filter(|&n| rank >= n as usize)
            .map(|n| format!("beyond keep_latest = {n}"));
        let age_days = (now - r.created_at).num_days();
        let too_old = retention
            .max_age_days
            .filter(|&d| age_days > i64::from(d))
            .map(|d| format!("{age_days} days old, max_age_days = {d}"));
        // The highest version always stays: never the last one.
        let Some(why) = beyond_count.or(too_old).filter(|_| rank > 0) else {
            continue;
        };
        let (action, reason) = match (g.deprecated_at, in_use(r)) {
            (None, _) => ("deprecate", why),
            (Some(_), Some(user)) => ("keep", format!("{why}, deprecated, but in use by {user}")),
            (Some(_), None) => ("delete", format!("{why}, deprecated by an earlier prune")),
        };
        out.push((
            r.id.clone(),
            PruneAction {
                version: r.name.clone(),
                action: action.into(),
                reason,
            },
        ));
    }
    out
}

fn not_found(project: &str, gallery: &str) -> CatalogError {
    CatalogError::NotFound {
        project: project.into(),
        image: format!("gallery {gallery}"),
    }
}

/// The versions of `gallery`/`image` among `images` (every state), owned by `project`.
fn versions_of<'a>(
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
    fn gallery_view(&self, record: GalleryRecord, images: &[ImageRecord]) -> Gallery {
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
        }
    }

    async fn gallery_record(
        &self,
        project: &str,
        name: &str,
    ) -> Result<GalleryRecord, CatalogError> {
        let (store, p, n) = (self.store.clone(), project.to_owned(), name.to_owned());
        blocking(move || Ok(store.get_gallery(&p, &n)?))
            .await?
            .ok_or_else(|| not_found(project, name))
    }

    async fn all_images(&self) -> Result<Vec<ImageRecord>, CatalogError> {
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
        Ok(records
            .into_iter()
            .map(|r| self.gallery_view(r, &images))
            .collect())
    }

    pub async fn gallery_get(&self, who: &Requester, name: &str) -> Result<Gallery, CatalogError> {
        let record = self.gallery_record(&who.project, name).await?;
        Ok(self.gallery_view(record, &self.all_images().await?))
    }

    /// Adds the image definition `GALLERY/IMAGE` of `os`.
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
        check_retention(&retention)?;
        self.define(&who.project, gallery, image, os, true).await?;
        self.gallery_image_update(who, full, retention).await
    }

    /// Sets the retention of `GALLERY/IMAGE` (applied by the next prune).
    pub async fn gallery_image_update(
        &self,
        who: &Requester,
        full: &str,
        retention: Retention,
    ) -> Result<Gallery, CatalogError> {
        let (gallery, image) = split_full(full)?;
        check_retention(&retention)?;
        let (store, p, g, i) = (
            self.store.clone(),
            who.project.clone(),
            gallery.to_owned(),
            image.to_owned(),
        );
        let record = blocking(move || {
            store.update_gallery(&p, &g, |rec| {
                match rec.images.iter_mut().find(|d| d.name == i) {
                    Some(d) => {
                        d.retention = retention;
                        Ok(())
                    }
                    None => Err(CatalogError::NotFound {
                        project: p.clone(),
                        image: format!("gallery image {g}/{i}"),
                    }),
                }
            })
        })
        .await?
        .ok_or_else(|| not_found(&who.project, gallery))?;
        Ok(self.gallery_view(record, &self.all_images().await?))
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

    /// Deletes a gallery; one holding versions only with `recursive`, which deletes them first
    /// (refused, and nothing more deleted, at the first one a build or instance uses).
    pub async fn gallery_delete(
        &self,
        who: &Requester,
        name: &str,
        recursive: bool,
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
        for v in versions {
            self.remove(v).await?;
        }
        let (store, p, n) = (self.store.clone(), who.project.clone(), name.to_owned());
        blocking(move || Ok(store.delete_gallery(&p, &n)?)).await?;
        tracing::info!(project = %who.project, gallery = name, "gallery deleted");
        Ok(())
    }

    /// Applies each definition's retention in gallery `name` of `project` (only `image`'s when
    /// given): deprecates versions past it, deletes those an earlier prune deprecated (never one
    /// a build or an instance uses), and returns what it did; with `dry_run`, only what it would.
    pub async fn gallery_prune(
        &self,
        project: &str,
        name: &str,
        image: Option<&str>,
        dry_run: bool,
    ) -> Result<Vec<PruneAction>, CatalogError> {
        let record = self.gallery_record(project, name).await?;
        let images = self.all_images().await?;
        let store = self.store.clone();
        let instances = blocking(move || Ok(store.list_instances()?)).await?;
        let in_use = |r: &ImageRecord| {
            let mut users: Vec<String> = instances
                .iter()
                .filter(|i| i.instance.image_id == r.id)
                .map(|i| {
                    format!(
                        "instance {} (project {})",
                        i.instance.name, i.instance.project
                    )
                })
                .collect();
            match self.leased(&r.id) {
                0 => {}
                n => users.push(format!("{n} build{}", if n == 1 { "" } else { "s" })),
            }
            (!users.is_empty()).then(|| users.join(", "))
        };
        let mut done = Vec::new();
        for d in record
            .images
            .iter()
            .filter(|d| image.is_none_or(|i| i == d.name))
        {
            let versions: Vec<_> = versions_of(&images, project, name, &d.name).collect();
            for (id, mut action) in prune_plan(versions, d.retention, Utc::now(), in_use) {
                if !dry_run {
                    match action.action.as_str() {
                        "deprecate" => {
                            self.update(&id, |r| {
                                if let Some(g) = r.gallery.as_mut() {
                                    g.deprecated_at = Some(Utc::now());
                                }
                                Ok(())
                            })
                            .await?;
                        }
                        "delete" => {
                            let Some(r) = images.iter().find(|r| r.id == id) else {
                                continue;
                            };
                            if let Err(e) = self.remove(r).await {
                                action.action = "keep".into();
                                action.reason = format!("{}; not deleted: {e}", action.reason);
                            }
                        }
                        _ => {}
                    }
                }
                tracing::info!(version = %action.version, action = %action.action, dry_run, "prune: {}", action.reason);
                done.push(action);
            }
        }
        Ok(done)
    }

    /// The version of `GALLERY/IMAGE` a build of `project` uses: `latest` or an explicit one.
    pub(super) fn resolve_version(
        &self,
        project: &str,
        full: &str,
        version: &str,
    ) -> Result<ImageRecord, CatalogError> {
        let (gallery, image) = full.split_once('/').unwrap_or((full, ""));
        if self.store.get_gallery(project, gallery)?.is_none() {
            return Err(not_found(project, gallery));
        }
        let images = self.store.list_images()?;
        let found = if version == "latest" {
            latest(versions_of(&images, project, gallery, image))
        } else {
            versions_of(&images, project, gallery, image)
                .find(|(_, g)| g.version == version)
                .map(|(r, _)| r)
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
        record.min_disk_gb = u64::from(template.min_disk_gb);
        record.shared_with = target.share_with.clone();
        record.shared_with.retain(|p| p != &project);
        record.shared_with.sort();
        record.shared_with.dedup();
        let (p, asked, exclude) = (
            project.clone(),
            target.version.clone(),
            target.exclude_from_latest,
        );
        let (g, i) = (target.gallery.clone(), target.image.clone());
        let creation = self
            .begin(record, move |existing, record| {
                let version = next_version(versions_of(existing, &p, &g, &i), &asked, &full)?;
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
        tracing::info!(image = %record.id, name = %record.name, "gallery version published");
        self.announce(&record);
        record
            .info_for(&project)
            .ok_or_else(|| CatalogError::Conflict("image vanished".into()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn version(v: &str, state: State, exclude: bool) -> ImageRecord {
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
    fn prune_keeps_the_newest_deprecates_then_deletes_and_spares_what_is_in_use() {
        let now = Utc::now();
        let mut images: Vec<ImageRecord> = (0..5)
            .map(|p| {
                let mut r = version(&format!("1.0.{p}"), State::Available, false);
                r.created_at = now - chrono::Duration::days(10 - i64::from(p));
                r
            })
            .collect();
        // 1.0.1 was deprecated by an earlier prune, 1.0.0 too but an instance uses it.
        for i in [0, 1] {
            images[i].gallery.as_mut().unwrap().deprecated_at = Some(now);
        }
        let in_use = |r: &ImageRecord| (r.id == "img-1.0.0").then(|| "instance box".to_owned());
        let keep2 = Retention {
            keep_latest: Some(2),
            max_age_days: None,
        };
        let plan = prune_plan(
            versions_of(&images, "p", "g", "i").collect(),
            keep2,
            now,
            in_use,
        );
        let got: Vec<(&str, &str)> = plan
            .iter()
            .map(|(_, a)| (a.version.as_str(), a.action.as_str()))
            .collect();
        // Names are "g/i" in these records; the order is highest first.
        assert_eq!(
            got,
            [("g/i", "deprecate"), ("g/i", "delete"), ("g/i", "keep")]
        );
        assert_eq!(plan[0].0, "img-1.0.2");
        assert!(
            plan[2].1.reason.contains("in use by instance box"),
            "{:?}",
            plan[2]
        );
        // By age: 1.0.4 is 6 days old and the highest, so it stays even at max_age_days = 1.
        let young = Retention {
            keep_latest: None,
            max_age_days: Some(1),
        };
        let plan = prune_plan(
            versions_of(&images, "p", "g", "i").collect(),
            young,
            now,
            |_| None,
        );
        assert_eq!(plan.len(), 4);
        assert!(!plan.iter().any(|(id, _)| id == "img-1.0.4"));
        assert!(prune_plan(vec![], keep2, now, |_| None).is_empty());
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
