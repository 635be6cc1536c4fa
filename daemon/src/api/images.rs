//! The `image.*` methods: the image catalog over the socket, each call acting as a
//! [`Requester`] (the caller's project, and whether they may manage public images).

use std::sync::{Arc, Mutex};

use kiln_shared::protocol::{
    ErrorKind, ImageBootstrapParams, ImageBootstrapResult, ImageImportParams, ImageInfo, ImageList,
    ImageListParams, ImageParams, ImageResult, ImageShareParams, ImageWarmParams, RpcError,
    WarmInfo,
};
use serde_json::{json, Value};

use super::dispatch::params as decode;
use super::Daemon;
use crate::access::Peer;
use crate::catalog::Requester;
use crate::driver::warm::{Machine, WarmState};
use crate::driver::DriverError;

const METHODS: &str = "image.list, image.get, image.delete, image.share, image.unshare, \
                       image.bootstrap, image.import, image.warm";

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
            let mut images = catalog.list(who, p.visibility).await?;
            for image in &mut images {
                image.warm = warm_info(daemon, image).await;
            }
            to_value(ImageList { images })
        }
        "get" => {
            let p: ImageParams = decode(method, params)?;
            let mut image = catalog.get(who, &p.image).await?;
            image.warm = warm_info(daemon, &image).await;
            to_value(ImageResult { image })
        }
        "delete" => {
            let p: ImageParams = decode(method, params)?;
            let id = catalog.get(who, &p.image).await?.id;
            catalog.delete(who, &p.image).await?;
            if let Err(e) = daemon.queue.warm.remove(&id) {
                tracing::warn!(image = %id, "removing the deleted image's warm state: {e}");
            }
            Ok(json!({}))
        }
        "warm" => {
            let p: ImageWarmParams = decode(method, params)?;
            let (lines, log) = collecting(progress);
            warm(daemon, who, &p.image, &log).await?;
            let mut image = catalog.get(who, &p.image).await?;
            image.warm = warm_info(daemon, &image).await;
            let progress = take(&lines);
            to_value(ImageBootstrapResult { image, progress })
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
            let mut image = catalog
                .bootstrap(who, &p.os, move |line| {
                    tracing::info!(os = %os, "bootstrap: {line}");
                    progress(line.clone());
                    kept.lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner())
                        .push(line);
                })
                .await?;
            if p.warm.unwrap_or(daemon.queue.warm_start()) {
                let (warm_lines, log) = collecting(progress);
                warm_after(daemon, who, &mut image, &log).await;
                lock(&lines).extend(take(&warm_lines));
            }
            let progress = take(&lines);
            to_value(ImageBootstrapResult { image, progress })
        }
        "import" => {
            let p: ImageImportParams = decode(method, params)?;
            let mut image = catalog
                .import(who, &p.path, &p.name, &p.os, p.public)
                .await?;
            if p.warm.unwrap_or(false) {
                let (_, log) = collecting(progress);
                warm_after(daemon, who, &mut image, &log).await;
            }
            to_value(ImageResult { image })
        }
        _ => Err(RpcError::new(
            ErrorKind::MethodNotFound,
            format!("unknown method {method:?}; the image methods are {METHODS}"),
        )),
    }
}

type Lines = Arc<Mutex<Vec<String>>>;

fn lock(lines: &Lines) -> std::sync::MutexGuard<'_, Vec<String>> {
    lines
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn take(lines: &Lines) -> Vec<String> {
    std::mem::take(&mut *lock(lines))
}

/// A progress function that sends each line on and keeps a copy for the result.
fn collecting(
    progress: &(dyn Fn(String) + Send + Sync),
) -> (Lines, impl Fn(String) + Send + Sync + '_) {
    let lines = Lines::default();
    let kept = lines.clone();
    (lines, move |line: String| {
        tracing::info!("{line}");
        progress(line.clone());
        lock(&kept).push(line);
    })
}

/// Saves a booted VM of image `key` (warm start), replacing the one it had.
async fn warm(
    daemon: &Daemon,
    who: &Requester,
    key: &str,
    progress: &(dyn Fn(String) + Send + Sync),
) -> Result<WarmState, RpcError> {
    let lease = daemon.catalog.lease_to_manage(who, key).await?;
    let queue = &daemon.queue;
    queue
        .warm
        .make(
            &lease.record().id,
            lease.path(),
            Machine::default(),
            &queue.accel,
            progress,
        )
        .await
        .map_err(|e| match e {
            DriverError::Busy(message) => RpcError::new(ErrorKind::Conflict, message),
            e => RpcError::new(
                ErrorKind::Internal,
                format!("warming image {key} failed: {e}"),
            ),
        })
}

/// Warms a just bootstrapped or imported image; a failure leaves the image as it is (builds
/// from it boot cold) and is reported as a progress line.
async fn warm_after(
    daemon: &Daemon,
    who: &Requester,
    image: &mut ImageInfo,
    progress: &(dyn Fn(String) + Send + Sync),
) {
    match warm(daemon, who, &image.id, progress).await {
        Ok(state) => image.warm = Some(info_of(&state)),
        Err(e) => progress(format!(
            "==> warm start: {}; builds from {} boot cold (retry with `kiln image warm {}`)",
            e.message, image.name, image.name
        )),
    }
}

async fn warm_info(daemon: &Daemon, image: &ImageInfo) -> Option<WarmInfo> {
    let state = daemon
        .queue
        .warm
        .peek(&image.id, std::path::Path::new(&image.path))
        .await?;
    Some(info_of(&state))
}

fn info_of(state: &WarmState) -> WarmInfo {
    let m = &state.meta;
    WarmInfo {
        created_at: m.created_at,
        accel: m.accel.as_str().to_owned(),
        cpus: m.cpus,
        memory_mb: m.memory_mb,
        boot_seconds: m.boot_ms as f64 / 1000.0,
        save_seconds: m.save_ms as f64 / 1000.0,
        state_bytes: m.state_bytes,
    }
}

fn to_value<T: serde::Serialize>(v: T) -> Result<Value, RpcError> {
    serde_json::to_value(v).map_err(|e| RpcError::new(ErrorKind::Internal, e.to_string()))
}
