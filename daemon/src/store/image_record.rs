//! An image as the store keeps it (an internal type: the wire shows `ImageInfo`; the catalog
//! decides what goes in it) and the visibility rule that decides who sees it.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use kiln_shared::protocol::{GalleryRef, ImageInfo, ImageState, Visibility};
use serde::{Deserialize, Serialize};

/// Where a stored image is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// A row exists, its file is being written (as `*.partial`).
    Creating,
    Available,
    /// Its file is being removed; the row goes last.
    Deleting,
    /// Creation did not finish; the file is gone, the row stays to say why until deleted.
    Failed,
}

impl State {
    pub fn as_str(self) -> &'static str {
        self.wire().as_str()
    }

    fn wire(self) -> ImageState {
        match self {
            State::Creating => ImageState::Creating,
            State::Available => ImageState::Available,
            State::Deleting => ImageState::Deleting,
            State::Failed => ImageState::Failed,
        }
    }
}

/// One image as stored in the `images` table, keyed by `id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageRecord {
    pub id: String,
    pub name: String,
    pub os: String,
    /// The owning project; `None` for a public image.
    pub owner: Option<String>,
    #[serde(default)]
    pub template: Option<String>,
    #[serde(default)]
    pub template_revision: Option<u64>,
    #[serde(default)]
    pub build: Option<u64>,
    /// The final file (`IMAGES/ID.qcow2`); it exists only once the image is available.
    pub path: PathBuf,
    pub format: String,
    #[serde(default)]
    pub virtual_size: u64,
    #[serde(default)]
    pub file_size: u64,
    #[serde(default)]
    pub sha256: String,
    #[serde(default)]
    pub min_disk_gb: u64,
    pub created_at: DateTime<Utc>,
    pub state: State,
    #[serde(default)]
    pub shared_with: Vec<String>,
    /// Why the image failed.
    #[serde(default)]
    pub message: Option<String>,
    /// Captured from this instance, which ran the image `parent_image` (an id).
    #[serde(default)]
    pub from_instance: Option<String>,
    #[serde(default)]
    pub parent_image: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    /// A gallery version: where it sits (its name is then `GALLERY/IMAGE:VERSION`).
    #[serde(default)]
    pub gallery: Option<GalleryRef>,
    #[serde(default)]
    pub parent_sha256: Option<String>,
    /// The new base version whose trigger queued the build that made it.
    #[serde(default)]
    pub trigger: Option<kiln_shared::build::TriggeredBy>,
}

impl ImageRecord {
    /// A new image in state `creating`, its file to be written at `path`.
    pub fn new(id: &str, name: &str, os: &str, owner: Option<&str>, path: PathBuf) -> ImageRecord {
        ImageRecord {
            id: id.to_string(),
            name: name.to_string(),
            os: os.to_string(),
            owner: owner.map(str::to_string),
            template: None,
            template_revision: None,
            build: None,
            path,
            format: "qcow2".to_string(),
            virtual_size: 0,
            file_size: 0,
            sha256: String::new(),
            min_disk_gb: 0,
            created_at: Utc::now(),
            state: State::Creating,
            shared_with: Vec::new(),
            message: None,
            from_instance: None,
            parent_image: None,
            description: None,
            gallery: None,
            parent_sha256: None,
            trigger: None,
        }
    }

    /// How `project` sees this image, or `None` when it may not see it at all: public images
    /// are seen by every project, private ones by their owner, shared ones by the projects they
    /// were shared with.
    pub fn visibility_for(&self, project: &str) -> Option<Visibility> {
        match &self.owner {
            None => Some(Visibility::Public),
            Some(owner) if owner == project => Some(Visibility::Private),
            Some(_) if self.shared_with.iter().any(|p| p == project) => Some(Visibility::Shared),
            Some(_) => None,
        }
    }

    /// The wire form as `project` sees it; the share list is shown to the owner only.
    pub fn info_for(&self, project: &str) -> Option<ImageInfo> {
        let visibility = self.visibility_for(project)?;
        Some(ImageInfo {
            id: self.id.clone(),
            name: self.name.clone(),
            os: self.os.clone(),
            visibility,
            owner_project: self.owner.clone(),
            template: self.template.clone(),
            template_revision: self.template_revision,
            build: self.build,
            path: self.path.display().to_string(),
            format: self.format.clone(),
            virtual_size: self.virtual_size,
            file_size: self.file_size,
            sha256: self.sha256.clone(),
            min_disk_gb: self.min_disk_gb,
            created_at: self.created_at,
            state: self.state.wire(),
            shared_with: if visibility == Visibility::Private {
                self.shared_with.clone()
            } else {
                Vec::new()
            },
            message: self.message.clone(),
            from_instance: self.from_instance.clone(),
            parent_image: self.parent_image.clone(),
            description: self.description.clone(),
            warm: None,
            gallery: self.gallery.clone(),
            parent_sha256: self.parent_sha256.clone(),
            trigger: self.trigger.clone(),
            lineage: Vec::new(),
        })
    }

    /// Whether `other` lives in the same name space (the public one, or the same project's).
    pub fn same_scope(&self, other: &ImageRecord) -> bool {
        self.owner == other.owner
    }

    /// Whether the image holds or will hold its name (it is neither failed nor going away).
    pub fn is_live(&self) -> bool {
        matches!(self.state, State::Creating | State::Available)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(owner: Option<&str>, shared: &[&str]) -> ImageRecord {
        let mut r = ImageRecord::new("img-1", "web", "debian-12", owner, "/x".into());
        r.shared_with = shared.iter().map(|s| s.to_string()).collect();
        r
    }

    #[test]
    fn visibility_rules() {
        let check = |owner, shared: &[&str], project, expected| {
            assert_eq!(
                image(owner, shared).visibility_for(project),
                expected,
                "{owner:?} {shared:?} {project}"
            );
        };
        check(None, &[], "any", Some(Visibility::Public));
        check(Some("web"), &[], "web", Some(Visibility::Private));
        check(Some("web"), &[], "db", None);
        check(Some("web"), &["db"], "db", Some(Visibility::Shared));
        check(Some("web"), &["db"], "ops", None);
    }

    #[test]
    fn share_list_is_shown_to_the_owner_only() {
        let r = image(Some("web"), &["db"]);
        assert_eq!(
            r.info_for("web").map(|i| i.shared_with),
            Some(vec!["db".into()])
        );
        assert_eq!(r.info_for("db").map(|i| i.shared_with), Some(vec![]));
        assert_eq!(r.info_for("ops"), None);
    }
}
