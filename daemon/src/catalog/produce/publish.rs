//! Publish: a build's disk becomes a private image of its project, replacing an older one of
//! the same name once it is available.

use std::path::Path;

use kiln_shared::protocol::ImageInfo;

use crate::catalog::names::{check_name, check_os, check_project_name, new_id};
use crate::catalog::{files, Catalog, CatalogError, ImageRecord};
use crate::qemu_img;
use crate::store::Login;

/// What the build pipeline knows about an image it publishes (a `distribute` target of type
/// `image`): a private image of `project`.
#[derive(Debug, Clone)]
pub struct PublishMeta {
    pub name: String,
    pub os: String,
    /// The base image's family and default user, which the new image inherits.
    pub login: Login,
    pub project: String,
    pub template: Option<String>,
    pub template_revision: Option<u64>,
    pub build: Option<u64>,
    /// Raised to the image's virtual size (rounded up to whole GiB) when smaller.
    pub min_disk_gb: u64,
    pub share_with: Vec<String>,
    /// Captured from this instance, which ran this image (an id).
    pub from_instance: Option<String>,
    pub parent_image: Option<String>,
    pub description: Option<String>,
    /// The trigger that queued the build.
    pub trigger: Option<kiln_shared::build::TriggeredBy>,
}

impl Catalog {
    /// The distribute step for `image` targets: converts the build's qcow2 `source` (an overlay
    /// is read through its backing chain) into a zstd-compressed, self-contained qcow2 in the
    /// catalog as a private image of `meta.project`. The row is stored (`creating`) first; the
    /// file is hashed, fsynced and renamed into place before the row becomes `available`. An
    /// older available image of the same name in the project is then replaced (its shares
    /// carry over). Dropping the future kills qemu-img and removes the row and files.
    pub async fn publish(
        &self,
        source: &Path,
        meta: PublishMeta,
    ) -> Result<ImageInfo, CatalogError> {
        check_name(&meta.name)?;
        check_os(&meta.os)?;
        check_project_name(&meta.project)?;
        let id = new_id();
        let mut record = ImageRecord::new(
            &id,
            &meta.name,
            &meta.os,
            Some(&meta.project),
            self.image_path(&id),
        );
        record.set_login(meta.login);
        record.template = meta.template;
        record.template_revision = meta.template_revision;
        record.build = meta.build;
        record.min_disk_gb = meta.min_disk_gb;
        record.shared_with = crate::catalog::sharing::offered(&meta.share_with, &meta.project);
        record.from_instance = meta.from_instance;
        record.parent_image = meta.parent_image;
        record.description = meta.description;
        record.trigger = meta.trigger;
        let creation = self.begin(record, |_, _| Ok(())).await?;
        let written = files::partial_of(&creation.record.path);
        qemu_img::convert(source, "qcow2", qemu_img::Format::Qcow2Zstd, &written).await?;
        let record = creation.finish(&written).await?;
        let record = self.supersede(record).await;
        record
            .info_for(&meta.project)
            .ok_or_else(|| CatalogError::Conflict("image vanished".into()))
    }

    /// `publish` for a build of `template`: a private image of the build's project named as the
    /// build asked, recording template, revision and build id, logged into as its base was.
    pub async fn publish_build(
        &self,
        source: &Path,
        build: &kiln_shared::build::Build,
        template: &kiln_shared::Template,
        login: Login,
    ) -> Result<ImageInfo, CatalogError> {
        let meta = PublishMeta {
            name: build.image_name.clone(),
            os: template.os.clone(),
            login,
            project: build.project.clone(),
            template: Some(build.template.clone()),
            template_revision: Some(build.revision),
            build: Some(build.id),
            min_disk_gb: u64::from(template.min_disk_gb),
            share_with: Vec::new(),
            from_instance: None,
            parent_image: Some(build.base_image.clone()),
            description: None,
            trigger: build.triggered_by.clone(),
        };
        self.publish(source, meta).await
    }
}
