//! Params and results of the `image.*` methods, and the image as a project sees it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// How an image relates to the project that asks about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Visibility {
    /// A base image every project sees (bootstrapped or imported by an admin).
    Public,
    /// Owned by the asking project.
    Private,
    /// Owned by another project that shared it with the asking one.
    Shared,
}

impl Visibility {
    pub fn as_str(self) -> &'static str {
        match self {
            Visibility::Public => "public",
            Visibility::Private => "private",
            Visibility::Shared => "shared",
        }
    }
}

/// Where a project a share was offered to stands (Glance's image members): the image is seen
/// and used there only once the project `accepted`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShareStatus {
    Pending,
    Accepted,
    Rejected,
}

impl ShareStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ShareStatus::Pending => "pending",
            ShareStatus::Accepted => "accepted",
            ShareStatus::Rejected => "rejected",
        }
    }
}

/// One project an image or gallery is shared with, and its answer.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ShareMember {
    pub project: String,
    pub status: ShareStatus,
}

/// Where an image is in its life. Only `available` images can be built from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageState {
    Creating,
    Available,
    Deleting,
    Failed,
}

impl ImageState {
    pub fn as_str(self) -> &'static str {
        match self {
            ImageState::Creating => "creating",
            ImageState::Available => "available",
            ImageState::Deleting => "deleting",
            ImageState::Failed => "failed",
        }
    }
}

/// One image of the catalog as a project sees it (`image.get`, `image.list`, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageInfo {
    pub id: String,
    pub name: String,
    pub os: String,
    /// The OS family whose guest commands kiln uses (`debian` for Debian and Ubuntu).
    #[serde(default)]
    pub family: String,
    /// The user builds, warm starts and instances log in as.
    #[serde(default)]
    pub default_user: String,
    pub visibility: Visibility,
    /// `None` for public images.
    pub owner_project: Option<String>,
    /// The template (and revision, build) the image was built from; `None` when bootstrapped or
    /// imported.
    pub template: Option<String>,
    pub template_revision: Option<u64>,
    pub build: Option<u64>,
    /// The image file on the daemon's host.
    pub path: String,
    /// Always `qcow2` for catalog images.
    pub format: String,
    /// Size of the disk the image describes, in bytes.
    pub virtual_size: u64,
    /// Size of the image file, in bytes.
    pub file_size: u64,
    /// Hex SHA-256 of the image file; empty until the image is available.
    pub sha256: String,
    pub min_disk_gb: u64,
    pub created_at: DateTime<Utc>,
    pub state: ImageState,
    /// The projects the owner shared the image with and where each stands (shown to the owner
    /// only).
    #[serde(default)]
    pub shared_with: Vec<ShareMember>,
    /// For an image shared with the asking project: whether it accepted the share (`pending`
    /// ones are listed only by `image.list {pending: true}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share_status: Option<ShareStatus>,
    /// Why the image is `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The instance it was captured from (`image.create_from_instance`), and that instance's
    /// image: where it came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_instance: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The saved, booted VM builds from this image resume from (warm start), if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warm: Option<WarmInfo>,
    /// A gallery version (`name` is then `GALLERY/IMAGE:VERSION`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gallery: Option<super::GalleryRef>,
    /// The SHA-256 of `parent_image` when this image was made from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_sha256: Option<String>,
    /// The new base version whose trigger queued the build that made it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<crate::build::TriggeredBy>,
    /// `image.get` only: the chain of parents back to a base (parent first).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lineage: Vec<LineageEntry>,
}

/// A base image's saved VM: builds with the same vCPUs and memory start from it in seconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WarmInfo {
    pub created_at: DateTime<Utc>,
    /// `kvm` or `tcg`: the accelerator it was saved under (and can only be resumed under).
    pub accel: String,
    pub cpus: u32,
    pub memory_mb: u32,
    /// The cold boot it was made from, and saving its memory.
    pub boot_seconds: f64,
    pub save_seconds: f64,
    /// Size of the saved memory file.
    pub state_bytes: u64,
}

/// Params of `image.warm`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageWarmParams {
    /// Id or name.
    pub image: String,
}

/// Params of `image.list`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ImageListParams {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visibility: Option<Visibility>,
    /// Only the images shared with the project that wait for its `image.accept` (which no
    /// other call shows).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pending: bool,
}

/// Result of `image.list`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageList {
    pub images: Vec<ImageInfo>,
}

/// Params of `image.get` and `image.delete`: an image id or name.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageParams {
    pub image: String,
}

/// Params of `image.delete`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageDeleteParams {
    pub image: String,
    /// Delete even when the image is shared (with a project that did not reject it) or used by
    /// queued or running builds; those builds keep reading it until they end. Instances still
    /// refuse it (their disks are overlays on its file).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force: bool,
}

/// Params of `image.share` and `image.unshare`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageShareParams {
    pub image: String,
    pub projects: Vec<String>,
}

/// Params of `image.bootstrap`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageBootstrapParams {
    /// An OS kiln can bootstrap, such as `debian-12`.
    pub os: String,
    /// Save a booted VM of it afterwards (warm start); default: kilnd.toml's `warm_start`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warm: Option<bool>,
}

/// Result of `image.bootstrap_list`: every OS kiln can bootstrap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootstrapList {
    pub oses: Vec<BootstrapOs>,
}

/// One OS `image.bootstrap` knows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootstrapOs {
    /// `debian-13`: the OS id and the name of the public image it makes.
    pub os: String,
    /// The distribution's release name: `trixie`.
    pub suite: String,
    pub family: String,
    /// The user the bootstrapped image logs in as.
    pub default_user: String,
    /// Programs kilnd's host lacks for it, as `PROGRAM (package PACKAGE)`; empty when ready.
    #[serde(default)]
    pub missing_tools: Vec<String>,
    /// Whether kilnd runs as root, which bootstrapping needs.
    pub as_root: bool,
}

/// Params of `image.import`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageImportParams {
    /// Absolute path of a qcow2 or raw file on the daemon's host.
    pub path: String,
    pub name: String,
    pub os: String,
    /// The image's login user; default: the one its cloud-init config names
    /// (`system_info.default_user.name`), else the import is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Import as a public image (needs the admin group) instead of a private one.
    #[serde(default)]
    pub public: bool,
    /// Save a booted VM of it afterwards (warm start); off by default, since an imported image
    /// may not boot here the way kiln expects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warm: Option<bool>,
}

/// Result of `image.get`, `image.share`, `image.unshare` and `image.import`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageResult {
    pub image: ImageInfo,
}

/// Result of `image.bootstrap` and `image.warm`: the image and the progress lines printed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageBootstrapResult {
    pub image: ImageInfo,
    #[serde(default)]
    pub progress: Vec<String>,
}

/// One ancestor of an image: what it was made from, as far as the asking project may see.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineageEntry {
    pub id: String,
    /// Empty when the image is gone or not visible to the asking project.
    #[serde(default)]
    pub name: String,
    /// As its child recorded it.
    #[serde(default)]
    pub sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_revision: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_instance: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<crate::build::TriggeredBy>,
    /// "public", "private", "shared"; "deleted" or "not visible" when it cannot be shown.
    pub visibility: String,
}
