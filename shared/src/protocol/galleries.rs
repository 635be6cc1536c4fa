//! Galleries on the wire (`gallery.*`): a project's galleries, the image definitions in them
//! (`GALLERY/IMAGE`, with an OS) and their numbered versions (`GALLERY/IMAGE:1.2.3`), each
//! version an image of the catalog.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{ImageState, ShareMember, ShareStatus};

/// A gallery as `gallery.get` returns it: its definitions, each with its versions (highest
/// first).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gallery {
    pub name: String,
    pub project: String,
    #[serde(default)]
    pub description: String,
    pub created_at: DateTime<Utc>,
    #[serde(default)]
    pub images: Vec<GalleryImage>,
    /// The projects it is shared with and their answers (shown to the owner only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<ShareMember>,
    /// For a gallery of another project shared with the asking one: its answer (the versions
    /// are listed once it `accepted`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share_status: Option<ShareStatus>,
}

/// An image definition: `GALLERY/IMAGE`, the OS its versions are of, and its retention.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GalleryImage {
    pub name: String,
    pub os: String,
    pub created_at: DateTime<Utc>,
    #[serde(default)]
    pub retention: Retention,
    #[serde(default)]
    pub versions: Vec<GalleryVersion>,
    /// The version `latest` resolves to now (the highest one available and not excluded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest: Option<String>,
}

/// Which versions of a definition a prune keeps: the `keep_latest` highest and those at most
/// `max_age_days` old (either alone, or both: a version must pass both to stay). The highest
/// version always stays. Others are deprecated, and deleted by the next prune.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retention {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_latest: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_days: Option<u32>,
}

/// One version: an image of the catalog named `GALLERY/IMAGE:VERSION`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GalleryVersion {
    pub version: String,
    pub image_id: String,
    pub state: ImageState,
    #[serde(default)]
    pub exclude_from_latest: bool,
    /// Set when a prune deprecated it: never `latest` again, still buildable when pinned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deprecated_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<u64>,
    #[serde(default)]
    pub file_size: u64,
    #[serde(default)]
    pub sha256: String,
}

/// Where an image sits in a gallery (`ImageInfo::gallery`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GalleryRef {
    pub gallery: String,
    pub image: String,
    pub version: String,
    #[serde(default)]
    pub exclude_from_latest: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deprecated_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GalleryCreateParams {
    pub name: String,
    #[serde(default)]
    pub description: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GalleryParams {
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GalleryDeleteParams {
    pub name: String,
    /// Also delete every version in it (without it, a gallery holding versions is refused).
    #[serde(default)]
    pub recursive: bool,
    /// With `recursive`: delete versions even when shared or used by builds (see
    /// `image.delete`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force: bool,
}

/// `gallery.share` / `gallery.unshare`: offer every version of gallery `name` (present and
/// future) to `projects`, or withdraw it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GalleryShareParams {
    pub name: String,
    pub projects: Vec<String>,
}

/// `gallery.accept` / `gallery.reject`, in the member project: gallery `name` of project `from`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GalleryAnswerParams {
    pub name: String,
    pub from: String,
}

/// `gallery.image.create`: `image` is `GALLERY/IMAGE`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GalleryImageCreateParams {
    pub image: String,
    pub os: String,
    #[serde(default)]
    pub retention: Retention,
}

/// `gallery.image.update`: a definition's new retention (both fields replace the old ones).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GalleryImageUpdateParams {
    pub image: String,
    pub retention: Retention,
}

/// `gallery.prune`: applies the retention of every definition in the gallery (or says what it
/// would do, with `dry_run`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GalleryPruneParams {
    pub name: String,
    #[serde(default)]
    pub dry_run: bool,
}

/// What a prune did (or would do) to one version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PruneAction {
    /// `GALLERY/IMAGE:VERSION`.
    pub version: String,
    /// "deprecate", "delete" or "keep" (a version the rules let go that is still in use).
    pub action: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GalleryPruneResult {
    pub dry_run: bool,
    pub actions: Vec<PruneAction>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GalleryReply {
    pub gallery: Gallery,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GalleryList {
    pub galleries: Vec<Gallery>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GalleryImageList {
    pub images: Vec<GalleryImage>,
}
