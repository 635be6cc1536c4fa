//! An image as the store keeps it (an internal type: the wire shows `ImageInfo`; the catalog
//! decides what goes in it) and the visibility rule that decides who sees it.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use kiln_shared::protocol::{
    GalleryRef, ImageInfo, ImageState, ShareMember, ShareStatus, Visibility,
};
use serde::{Deserialize, Deserializer, Serialize};

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
    /// The OS family whose guest commands kiln types (`debian` for Debian and Ubuntu); records
    /// written before families were recorded are Debian's.
    #[serde(default = "debian")]
    pub family: String,
    /// The cloud image's login user, who gets kiln's key in builds, warm starts and instances;
    /// records written before it was recorded are bootstrapped Debian images: `debian`.
    #[serde(default = "debian")]
    pub default_user: String,
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
    /// The projects it is offered to and their answers; only `accepted` ones see it.
    #[serde(default, deserialize_with = "members")]
    pub shared_with: Vec<ShareMember>,
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

/// Who logs into an image and which guest commands it takes: what an image made from another
/// (a build, a capture) inherits from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    pub family: String,
    pub default_user: String,
}

fn debian() -> String {
    "debian".to_string()
}

/// A share list as stored: members with a status, or (records written before shares needed an
/// answer) bare project names, which saw the image at once and so count as accepted.
pub fn members<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ShareMember>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Stored {
        Member(ShareMember),
        Accepted(String),
    }
    Ok(Vec::<Stored>::deserialize(d)?
        .into_iter()
        .map(|m| match m {
            Stored::Member(m) => m,
            Stored::Accepted(project) => ShareMember {
                project,
                status: ShareStatus::Accepted,
            },
        })
        .collect())
}

/// Sets `project`'s status in `members` (adding it), keeping them sorted by project.
pub fn set_member(members: &mut Vec<ShareMember>, project: &str, status: ShareStatus) {
    match members.iter_mut().find(|m| m.project == project) {
        Some(m) => m.status = status,
        None => members.push(ShareMember {
            project: project.to_owned(),
            status,
        }),
    }
    members.sort_by(|a, b| a.project.cmp(&b.project));
}

/// `project`'s status in `members`, if the share was offered to it.
pub fn member_status(members: &[ShareMember], project: &str) -> Option<ShareStatus> {
    members
        .iter()
        .find(|m| m.project == project)
        .map(|m| m.status)
}

impl ImageRecord {
    /// A new image in state `creating`, its file to be written at `path`.
    pub fn new(id: &str, name: &str, os: &str, owner: Option<&str>, path: PathBuf) -> ImageRecord {
        ImageRecord {
            id: id.to_string(),
            name: name.to_string(),
            os: os.to_string(),
            family: crate::guest::os::family_of(os).to_string(),
            default_user: debian(),
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

    /// Its family and default user, for the images made from it.
    pub fn login(&self) -> Login {
        Login {
            family: self.family.clone(),
            default_user: self.default_user.clone(),
        }
    }

    pub fn set_login(&mut self, login: Login) {
        self.family = login.family;
        self.default_user = login.default_user;
    }

    /// How `project` sees this image, or `None` when it may not see it at all: public images
    /// are seen by every project, private ones by their owner, shared ones by the projects that
    /// accepted the share (a pending or rejected share is as if there were none).
    pub fn visibility_for(&self, project: &str) -> Option<Visibility> {
        match &self.owner {
            None => Some(Visibility::Public),
            Some(owner) if owner == project => Some(Visibility::Private),
            Some(_) => (self.share_status(project) == Some(ShareStatus::Accepted))
                .then_some(Visibility::Shared),
        }
    }

    /// `project`'s answer to a share of this image, if it was offered one.
    pub fn share_status(&self, project: &str) -> Option<ShareStatus> {
        member_status(&self.shared_with, project)
    }

    /// The wire form as `project` sees it; the share list is shown to the owner only.
    pub fn info_for(&self, project: &str) -> Option<ImageInfo> {
        self.info_as(project, self.visibility_for(project)?)
    }

    /// The wire form of an image shared with `project` that still waits for its answer: what
    /// `image.list {pending: true}` shows, and nothing else.
    pub fn pending_info_for(&self, project: &str) -> Option<ImageInfo> {
        self.offered_info_for(project)
            .filter(|i| i.share_status == Some(ShareStatus::Pending))
    }

    /// The wire form of an image of another project offered to `project`, whatever it
    /// answered (the reply to its answer).
    pub fn offered_info_for(&self, project: &str) -> Option<ImageInfo> {
        let theirs = self.owner.as_deref().is_some_and(|o| o != project);
        (theirs && self.share_status(project).is_some())
            .then(|| self.info_as(project, Visibility::Shared))
            .flatten()
    }

    fn info_as(&self, project: &str, visibility: Visibility) -> Option<ImageInfo> {
        Some(ImageInfo {
            id: self.id.clone(),
            name: self.name.clone(),
            os: self.os.clone(),
            family: self.family.clone(),
            default_user: self.default_user.clone(),
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
            share_status: (visibility == Visibility::Shared)
                .then(|| self.share_status(project))
                .flatten(),
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
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// An image of `owner` shared with `shared`: `"db"` accepted, `"db?"` pending, `"db!"`
    /// rejected.
    fn image(owner: Option<&str>, shared: &[&str]) -> ImageRecord {
        let mut r = ImageRecord::new("img-1", "web", "debian-12", owner, "/x".into());
        for s in shared {
            let (project, status) = if let Some(p) = s.strip_suffix('?') {
                (p, ShareStatus::Pending)
            } else if let Some(p) = s.strip_suffix('!') {
                (p, ShareStatus::Rejected)
            } else {
                (*s, ShareStatus::Accepted)
            };
            set_member(&mut r.shared_with, project, status);
        }
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
        check(Some("web"), &["db?"], "db", None);
        check(Some("web"), &["db!"], "db", None);
        check(
            Some("web"),
            &["db?", "ops"],
            "ops",
            Some(Visibility::Shared),
        );
        check(Some("web"), &["web?"], "web", Some(Visibility::Private));
    }

    #[test]
    fn only_a_pending_share_is_listed_as_pending() {
        let pending = |shared: &[&str], project| {
            image(Some("web"), shared)
                .pending_info_for(project)
                .map(|i| i.share_status)
        };
        assert_eq!(pending(&["db?"], "db"), Some(Some(ShareStatus::Pending)));
        assert_eq!(pending(&["db"], "db"), None);
        assert_eq!(pending(&["db!"], "db"), None);
        assert_eq!(pending(&["db?"], "web"), None);
        assert_eq!(pending(&["db?"], "ops"), None);
        assert_eq!(image(None, &[]).pending_info_for("db"), None);
    }

    #[test]
    fn old_share_lists_of_names_read_as_accepted() {
        let mut stored = serde_json::to_value(image(Some("web"), &[])).unwrap();
        stored["shared_with"] = serde_json::json!(["db", "ops"]);
        let r: ImageRecord = serde_json::from_value(stored.clone()).unwrap();
        assert_eq!(r.visibility_for("db"), Some(Visibility::Shared));
        assert_eq!(r.share_status("ops"), Some(ShareStatus::Accepted));
        stored["shared_with"] = serde_json::json!([
            "db",
            {"project": "ops", "status": "pending"}
        ]);
        let r: ImageRecord = serde_json::from_value(stored.clone()).unwrap();
        assert_eq!(r.share_status("db"), Some(ShareStatus::Accepted));
        assert_eq!(r.share_status("ops"), Some(ShareStatus::Pending));
        stored.as_object_mut().unwrap().remove("shared_with");
        let r: ImageRecord = serde_json::from_value(stored).unwrap();
        assert!(r.shared_with.is_empty());
    }

    #[test]
    fn old_records_without_a_user_read_as_debian() {
        let mut stored = serde_json::to_value(image(None, &[])).unwrap();
        let fields = stored.as_object_mut().unwrap();
        fields.remove("family");
        fields.remove("default_user");
        let r: ImageRecord = serde_json::from_value(stored).unwrap();
        assert_eq!(
            (r.family.as_str(), r.default_user.as_str()),
            ("debian", "debian")
        );
        let info = r.info_for("web").unwrap();
        assert_eq!(
            (info.family, info.default_user),
            ("debian".into(), "debian".into())
        );
    }

    #[test]
    fn share_list_is_shown_to_the_owner_only() {
        let r = image(Some("web"), &["db", "ops?"]);
        let member = |project: &str, status| ShareMember {
            project: project.into(),
            status,
        };
        assert_eq!(
            r.info_for("web").map(|i| i.shared_with),
            Some(vec![
                member("db", ShareStatus::Accepted),
                member("ops", ShareStatus::Pending)
            ])
        );
        let seen = r.info_for("db").unwrap();
        assert_eq!(seen.shared_with, vec![]);
        assert_eq!(seen.share_status, Some(ShareStatus::Accepted));
        assert_eq!(r.info_for("ops"), None);
    }
}
