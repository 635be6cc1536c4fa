//! The base-image picker: a window over the view that opened it, listing the images a template
//! can start from (available, and of the template's OS), for a build or for a template's source.

use kiln_shared::protocol::{ImageInfo, ImageState, Visibility};

/// What the chosen image is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PickFor {
    /// Start a build of `template` producing `image_name`.
    Build {
        template: String,
        image_name: String,
    },
    /// The source image of the template in the editor form.
    Source,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Picker {
    pub purpose: PickFor,
    /// Only images of this OS are offered.
    pub os: String,
    /// Index into `compatible(images, os)`.
    pub sel: usize,
    /// The person moved the selection: a default that arrives late does not move it again.
    pub touched: bool,
}

/// The images a template for `os` can start from: available ones of that OS, public first,
/// then the project's own, then shared ones, each by name.
pub fn compatible<'a>(images: &'a [ImageInfo], os: &str) -> Vec<&'a ImageInfo> {
    let rank = |v: Visibility| match v {
        Visibility::Public => 0,
        Visibility::Private => 1,
        Visibility::Shared => 2,
    };
    let mut out: Vec<&ImageInfo> = images
        .iter()
        .filter(|i| i.os == os && i.state == ImageState::Available)
        .collect();
    out.sort_by(|a, b| {
        (rank(a.visibility), &a.name, &a.id).cmp(&(rank(b.visibility), &b.name, &b.id))
    });
    out
}
