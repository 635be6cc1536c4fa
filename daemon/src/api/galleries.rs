//! The `gallery.*` methods, over the catalog's galleries.

use kiln_shared::methods::Empty;
use kiln_shared::protocol::{
    GalleryCreateParams, GalleryDeleteParams, GalleryImageCreateParams, GalleryImageList,
    GalleryImageUpdateParams, GalleryList, GalleryParams, GalleryPruneParams, GalleryPruneResult,
    GalleryReply, RpcError,
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
    d.catalog.gallery_delete(who, &p.name, p.recursive).await?;
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
