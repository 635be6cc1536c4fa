//! The `gallery.*` methods, over the catalog's galleries.

use kiln_shared::methods::Empty;
use kiln_shared::protocol::{
    GalleryAnswerParams, GalleryCreateParams, GalleryDeleteParams, GalleryImageCreateParams,
    GalleryImageList, GalleryImageUpdateParams, GalleryList, GalleryParams, GalleryPruneParams,
    GalleryPruneResult, GalleryReply, GalleryShareParams, RpcError, ShareStatus,
};

use super::dispatch::Daemon;
use crate::catalog::Requester;

pub async fn create(
    d: &Daemon,
    who: &Requester,
    p: GalleryCreateParams,
) -> Result<GalleryReply, RpcError> {
    Ok(GalleryReply {
        gallery: d
            .catalog
            .gallery_create(who, &p.name, &p.description)
            .await?,
    })
}

pub async fn list(d: &Daemon, who: &Requester) -> Result<GalleryList, RpcError> {
    Ok(GalleryList {
        galleries: d.catalog.gallery_list(who).await?,
    })
}

pub async fn get(d: &Daemon, who: &Requester, p: GalleryParams) -> Result<GalleryReply, RpcError> {
    Ok(GalleryReply {
        gallery: d.catalog.gallery_get(who, &p.name).await?,
    })
}

pub async fn delete(
    d: &Daemon,
    who: &Requester,
    p: GalleryDeleteParams,
) -> Result<Empty, RpcError> {
    d.catalog
        .gallery_delete(who, &p.name, p.recursive, p.force)
        .await?;
    Ok(Empty {})
}

pub async fn image_create(
    d: &Daemon,
    who: &Requester,
    p: GalleryImageCreateParams,
) -> Result<GalleryReply, RpcError> {
    Ok(GalleryReply {
        gallery: d
            .catalog
            .gallery_image_create(who, &p.image, &p.os, p.retention)
            .await?,
    })
}

pub async fn image_list(
    d: &Daemon,
    who: &Requester,
    p: GalleryParams,
) -> Result<GalleryImageList, RpcError> {
    Ok(GalleryImageList {
        images: d.catalog.gallery_get(who, &p.name).await?.images,
    })
}

/// `gallery.share` (`add`) or `gallery.unshare`.
pub async fn share(
    d: &Daemon,
    who: &Requester,
    p: GalleryShareParams,
    add: bool,
) -> Result<GalleryReply, RpcError> {
    Ok(GalleryReply {
        gallery: d
            .catalog
            .gallery_share(who, &p.name, &p.projects, add)
            .await?,
    })
}

/// `gallery.accept` or `gallery.reject` (`status`), in a project the gallery was shared with.
pub async fn answer(
    d: &Daemon,
    who: &Requester,
    p: GalleryAnswerParams,
    status: ShareStatus,
) -> Result<GalleryReply, RpcError> {
    Ok(GalleryReply {
        gallery: d
            .catalog
            .gallery_answer(who, &p.name, &p.from, status)
            .await?,
    })
}

pub async fn image_update(
    d: &Daemon,
    who: &Requester,
    p: GalleryImageUpdateParams,
) -> Result<GalleryReply, RpcError> {
    Ok(GalleryReply {
        gallery: d
            .catalog
            .gallery_image_update(who, &p.image, p.retention)
            .await?,
    })
}

pub async fn prune(
    d: &Daemon,
    who: &Requester,
    p: GalleryPruneParams,
) -> Result<GalleryPruneResult, RpcError> {
    Ok(GalleryPruneResult {
        dry_run: p.dry_run,
        actions: d
            .catalog
            .gallery_prune(&who.project, &p.name, None, p.dry_run)
            .await?,
    })
}
