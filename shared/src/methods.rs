//! The method table: every method of the protocol with its wire name, params type and result
//! type, and every notification kilnd sends with its params type. The daemon's dispatch, the
//! client's typed `call` and the README's method table all follow this one list.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::build as b;
use crate::protocol as p;

/// Params or result with no members: `{}` on the wire (any members sent are ignored).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Empty {}

/// One method: its wire name and the types of its params and result.
pub trait Method {
    const NAME: &'static str;
    type Params: Serialize + DeserializeOwned + Send + Sync;
    type Result: Serialize + DeserializeOwned + Send + Sync;
}

/// A notification kilnd sends: its wire name (the type is its params).
pub trait Notice: Serialize + DeserializeOwned {
    const NAME: &'static str;
}

macro_rules! methods {
    ($($(#[$doc:meta])* $ty:ident = $name:literal ($params:ty) -> $result:ty;)*) => {
        $(
            $(#[$doc])*
            #[derive(Debug, Clone, Copy)]
            pub enum $ty {}
            impl Method for $ty {
                const NAME: &'static str = $name;
                type Params = $params;
                type Result = $result;
            }
        )*

        /// Every method, as a value: a `match` on it is exhaustive, so a method added to the
        /// table does not compile until every such match handles it.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Name {
            $($ty,)*
        }

        impl Name {
            /// Every method, in the table's order.
            pub const ALL: &'static [Name] = &[$(Name::$ty,)*];

            /// The wire name, such as `template.create`.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Name::$ty => $name,)*
                }
            }

            /// The method a wire name names; `None` for an unknown one.
            pub fn parse(name: &str) -> Option<Name> {
                match name {
                    $($name => Some(Name::$ty),)*
                    _ => None,
                }
            }
        }
    };
}

methods! {
    TemplateCreate = "template.create" (p::TemplateParams) -> p::TemplateRef;
    TemplateGet = "template.get" (p::TemplateGetParams) -> p::TemplateRecord;
    TemplateList = "template.list" (Empty) -> p::TemplateList;
    TemplateUpdate = "template.update" (p::TemplateUpdateParams) -> p::TemplateRef;
    TemplateDelete = "template.delete" (p::NameParams) -> Empty;
    TemplateValidate = "template.validate" (p::TemplateParams) -> p::ValidationResult;
    TemplateRevisions = "template.revisions" (p::NameParams) -> p::RevisionList;
    /// Maps an Azure Image Builder template and stores it as a new template (unless `dry_run`).
    TemplateImportAzure = "template.import_azure" (p::TemplateImportAzureParams) -> p::TemplateImportAzureResult;
    BuildStart = "build.start" (b::BuildStartParams) -> b::BuildReply;
    BuildGet = "build.get" (b::BuildIdParams) -> b::BuildReply;
    BuildList = "build.list" (b::BuildListParams) -> b::BuildList;
    BuildCancel = "build.cancel" (b::BuildIdParams) -> b::BuildReply;
    /// Waits for the build to end (a wait slot of the connection, not a request slot).
    BuildWait = "build.wait" (b::BuildIdParams) -> b::BuildReply;
    /// Then [`p::LogNote`]s and one [`p::LogEnd`] on the subscription.
    BuildLogs = "build.logs" (b::BuildLogsParams) -> b::SubReply;
    BuildLogsUnsubscribe = "build.logs.unsubscribe" (b::SubReply) -> Empty;
    /// Then an [`p::Event`] per change in the project.
    EventsSubscribe = "events.subscribe" (Empty) -> b::SubReply;
    EventsUnsubscribe = "events.unsubscribe" (b::SubReply) -> Empty;
    // The image methods stay in this order: the unknown-`image.*` error lists them so.
    ImageList = "image.list" (p::ImageListParams) -> p::ImageList;
    ImageGet = "image.get" (p::ImageParams) -> p::ImageResult;
    /// Refused while shared or in use, unless `force`.
    ImageDelete = "image.delete" (p::ImageDeleteParams) -> Empty;
    /// Offers the image to the projects: `pending` there until they accept.
    ImageShare = "image.share" (p::ImageShareParams) -> p::ImageResult;
    ImageUnshare = "image.unshare" (p::ImageShareParams) -> p::ImageResult;
    /// In a project the image was shared with: see and use it.
    ImageAccept = "image.accept" (p::ImageParams) -> p::ImageResult;
    /// In a project the image was shared with: hide it again.
    ImageReject = "image.reject" (p::ImageParams) -> p::ImageResult;
    /// [`p::ImageProgress`] notifications while it runs.
    ImageBootstrap = "image.bootstrap" (p::ImageBootstrapParams) -> p::ImageBootstrapResult;
    /// The OSes `image.bootstrap` knows, and whether kilnd's host has their tools.
    ImageBootstrapList = "image.bootstrap_list" (Empty) -> p::BootstrapList;
    /// [`p::ImageProgress`] notifications while it warms (`warm: true`).
    ImageImport = "image.import" (p::ImageImportParams) -> p::ImageResult;
    /// [`p::ImageProgress`] notifications while it runs.
    ImageWarm = "image.warm" (p::ImageWarmParams) -> p::ImageBootstrapResult;
    /// [`p::ImageProgress`] notifications while it runs.
    ImageCreateFromInstance = "image.create_from_instance" (p::ImageFromInstanceParams) -> p::ImageResult;
    InstanceRun = "instance.run" (p::InstanceRunParams) -> p::InstanceReply;
    InstanceList = "instance.list" (Empty) -> p::InstanceList;
    InstanceGet = "instance.get" (p::InstanceParams) -> p::InstanceReply;
    InstanceStop = "instance.stop" (p::InstanceParams) -> p::InstanceReply;
    InstanceStart = "instance.start" (p::InstanceParams) -> p::InstanceReply;
    InstanceRestart = "instance.restart" (p::InstanceParams) -> p::InstanceReply;
    InstanceDelete = "instance.delete" (p::InstanceParams) -> Empty;
    /// Then [`p::LogNote`]s of its serial console and one [`p::LogEnd`] on the subscription.
    InstanceConsole = "instance.console" (p::InstanceConsoleParams) -> b::SubReply;
    GalleryCreate = "gallery.create" (p::GalleryCreateParams) -> p::GalleryReply;
    GalleryList = "gallery.list" (Empty) -> p::GalleryList;
    GalleryGet = "gallery.get" (p::GalleryParams) -> p::GalleryReply;
    /// Refused while it holds versions, unless `recursive`.
    GalleryDelete = "gallery.delete" (p::GalleryDeleteParams) -> Empty;
    /// Offers every version (present and future) to the projects, pending until they accept.
    GalleryShare = "gallery.share" (p::GalleryShareParams) -> p::GalleryReply;
    GalleryUnshare = "gallery.unshare" (p::GalleryShareParams) -> p::GalleryReply;
    GalleryAccept = "gallery.accept" (p::GalleryAnswerParams) -> p::GalleryReply;
    GalleryReject = "gallery.reject" (p::GalleryAnswerParams) -> p::GalleryReply;
    GalleryImageCreate = "gallery.image.create" (p::GalleryImageCreateParams) -> p::GalleryReply;
    GalleryImageList = "gallery.image.list" (p::GalleryParams) -> p::GalleryImageList;
    GalleryImageUpdate = "gallery.image.update" (p::GalleryImageUpdateParams) -> p::GalleryReply;
    /// Deprecates, then deletes, versions past each definition's retention.
    GalleryPrune = "gallery.prune" (p::GalleryPruneParams) -> p::GalleryPruneResult;
    ProjectList = "project.list" (Empty) -> p::ProjectList;
    DaemonStatus = "daemon.status" (Empty) -> p::DaemonStatus;
}

impl Notice for p::Hello {
    const NAME: &'static str = "hello";
}
impl Notice for p::LogNote {
    const NAME: &'static str = "build.log";
}
impl Notice for p::LogEnd {
    const NAME: &'static str = "build.log.end";
}
impl Notice for p::ImageProgress {
    const NAME: &'static str = "image.progress";
}
impl Notice for p::Event {
    const NAME: &'static str = "event";
}
