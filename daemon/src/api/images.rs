//! The `image.*` methods: the image catalog over the socket, each call acting as a
//! [`Requester`] (the caller's project, and whether they may manage public images).

use std::sync::{Arc, Mutex};

use kiln_shared::protocol::{
    ErrorKind, ImageBootstrapParams, ImageBootstrapResult, ImageImportParams, ImageList,
    ImageListParams, ImageParams, ImageResult, ImageShareParams, RpcError,
};
use serde_json::{json, Value};

use super::dispatch::params as decode;
use super::Daemon;
use crate::access::Peer;
use crate::catalog::Requester;

const METHODS: &str = "image.list, image.get, image.delete, image.share, image.unshare, \
                       image.bootstrap, image.import";

/// [`call`], also handing each bootstrap progress line to `progress` as it happens (for an
/// `image.progress` notification to the caller).
pub async fn call_with_progress(
    daemon: &Daemon,
    peer: &Peer,
    project: &str,
    method: &str,
    params: &Value,
    progress: &(dyn Fn(String) + Send + Sync),
) -> Option<Result<Value, RpcError>> {
    let name = method.strip_prefix("image.")?;
    let who = Requester::new(peer, project, daemon.config.file.admin_group.as_deref());
    Some(run(daemon, &who, method, name, params, progress).await)
}

async fn run(
    daemon: &Daemon,
    who: &Requester,
    method: &str,
    name: &str,
    params: &Value,
    progress: &(dyn Fn(String) + Send + Sync),
) -> Result<Value, RpcError> {
    let catalog = &daemon.catalog;
    match name {
        "list" => {
            let p: ImageListParams = decode(method, params)?;
            let images = catalog.list(who, p.visibility).await?;
            to_value(ImageList { images })
        }
        "get" => {
            let p: ImageParams = decode(method, params)?;
            let image = catalog.get(who, &p.image).await?;
            to_value(ImageResult { image })
        }
        "delete" => {
            let p: ImageParams = decode(method, params)?;
            catalog.delete(who, &p.image).await?;
            Ok(json!({}))
        }
        "share" | "unshare" => {
            let p: ImageShareParams = decode(method, params)?;
            let image = if name == "share" {
                catalog.share(who, &p.image, &p.projects).await?
            } else {
                catalog.unshare(who, &p.image, &p.projects).await?
            };
            to_value(ImageResult { image })
        }
        "bootstrap" => {
            let p: ImageBootstrapParams = decode(method, params)?;
            let lines = Arc::new(Mutex::new(Vec::new()));
            let kept = lines.clone();
            let os = p.os.clone();
            let image = catalog
                .bootstrap(who, &p.os, move |line| {
                    tracing::info!(os = %os, "bootstrap: {line}");
                    progress(line.clone());
                    kept.lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner())
                        .push(line);
                })
                .await?;
            let progress = std::mem::take(
                &mut *lines
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()),
            );
            to_value(ImageBootstrapResult { image, progress })
        }
        "import" => {
            let p: ImageImportParams = decode(method, params)?;
            let image = catalog
                .import(who, &p.path, &p.name, &p.os, p.public)
                .await?;
            to_value(ImageResult { image })
        }
        _ => Err(RpcError::new(
            ErrorKind::MethodNotFound,
            format!("unknown method {method:?}; the image methods are {METHODS}"),
        )),
    }
}

fn to_value<T: serde::Serialize>(v: T) -> Result<Value, RpcError> {
    serde_json::to_value(v).map_err(|e| RpcError::new(ErrorKind::Internal, e.to_string()))
}
