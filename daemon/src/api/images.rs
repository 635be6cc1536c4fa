//! The `image.*` methods: the image catalog over the socket, each call acting as a
//! [`Requester`] (the caller's project, and whether they may manage public images).

use std::sync::{Arc, Mutex};

use kiln_shared::methods::Empty;
use kiln_shared::protocol::{
    ErrorKind, ImageBootstrapParams, ImageBootstrapResult, ImageDeleteParams, ImageImportParams,
    ImageInfo, ImageList, ImageListParams, ImageParams, ImageProgress, ImageResult,
    ImageShareParams, ImageWarmParams, RpcError, ShareStatus, WarmInfo,
};

use super::builds::Sink;
use super::Daemon;
use crate::access::Peer;
use crate::catalog::Requester;
use crate::driver::qemu::warm::{WarmShape, WarmState};
use crate::driver::DriverError;

/// Sends the progress lines of one `image.*` call to its caller as `image.progress`
/// notifications, in order, while the call runs.
pub struct Progress {
    tx: tokio::sync::mpsc::UnboundedSender<String>,
    forward: tokio::task::JoinHandle<()>,
}

impl Progress {
    pub fn to(sink: &Sink) -> Progress {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let sink = sink.clone();
        let forward = tokio::spawn(async move {
            while let Some(line) = rx.recv().await {
                if !sink.note(&ImageProgress { line }).await {
                    break;
                }
            }
        });
        Progress { tx, forward }
    }

    fn line(&self, line: String) {
        let _ = self.tx.send(line);
    }

    /// A function that sends lines through this progress (drop it before `finish`).
    pub fn say(&self) -> crate::driver::Say {
        let tx = self.tx.clone();
        std::sync::Arc::new(move |line: String| {
            let _ = tx.send(line);
        })
    }

    /// Waits until every line is sent, so all of them come before the reply.
    pub async fn finish(self) {
        drop(self.tx);
        let _ = self.forward.await;
    }
}

/// The caller of an `image.*` method as the catalog sees it.
pub fn requester(daemon: &Daemon, peer: &Peer, project: &str) -> Requester {
    Requester::new(peer, project, daemon.config.file.admin_group.as_deref())
}

pub async fn list(
    daemon: &Daemon,
    who: &Requester,
    p: ImageListParams,
) -> Result<ImageList, RpcError> {
    let mut images = if p.pending {
        daemon.catalog.list_pending(who).await?
    } else {
        daemon.catalog.list(who, p.visibility).await?
    };
    for image in &mut images {
        image.warm = warm_info(daemon, image).await;
    }
    Ok(ImageList { images })
}

pub async fn get(
    daemon: &Daemon,
    who: &Requester,
    p: ImageParams,
) -> Result<ImageResult, RpcError> {
    let mut image = daemon.catalog.get(who, &p.image).await?;
    image.warm = warm_info(daemon, &image).await;
    image.lineage = daemon.catalog.lineage(who, &image).await;
    Ok(ImageResult { image })
}

pub async fn delete(
    daemon: &Daemon,
    who: &Requester,
    p: ImageDeleteParams,
) -> Result<Empty, RpcError> {
    let catalog = &daemon.catalog;
    let id = catalog.get(who, &p.image).await?.id;
    catalog.delete(who, &p.image, p.force).await?;
    if let Err(e) = daemon.warm.remove(&id) {
        tracing::warn!(image = %id, "removing the deleted image's warm state: {e}");
    }
    Ok(Empty {})
}

/// `image.share` (`share`) or `image.unshare`.
pub async fn share(
    daemon: &Daemon,
    who: &Requester,
    p: ImageShareParams,
    share: bool,
) -> Result<ImageResult, RpcError> {
    let catalog = &daemon.catalog;
    let image = if share {
        catalog.share(who, &p.image, &p.projects).await?
    } else {
        catalog.unshare(who, &p.image, &p.projects).await?
    };
    Ok(ImageResult { image })
}

/// `image.accept` or `image.reject` (`status`), in a project the image was shared with.
pub async fn answer(
    daemon: &Daemon,
    who: &Requester,
    p: ImageParams,
    status: ShareStatus,
) -> Result<ImageResult, RpcError> {
    Ok(ImageResult {
        image: daemon.catalog.answer(who, &p.image, status).await?,
    })
}

pub async fn warm_image(
    daemon: &Daemon,
    who: &Requester,
    p: ImageWarmParams,
    progress: &Progress,
) -> Result<ImageBootstrapResult, RpcError> {
    let progress = |line| progress.line(line);
    let (lines, log) = collecting(&progress);
    warm(daemon, who, &p.image, &log).await?;
    let mut image = daemon.catalog.get(who, &p.image).await?;
    image.warm = warm_info(daemon, &image).await;
    let progress = take(&lines);
    Ok(ImageBootstrapResult { image, progress })
}

pub async fn bootstrap(
    daemon: &Daemon,
    who: &Requester,
    p: ImageBootstrapParams,
    progress: &Progress,
) -> Result<ImageBootstrapResult, RpcError> {
    let progress = |line| progress.line(line);
    let lines = Arc::new(Mutex::new(Vec::new()));
    let kept = lines.clone();
    let os = p.os.clone();
    let mut image = daemon
        .catalog
        .bootstrap(who, &p.os, |line| {
            tracing::info!(os = %os, "bootstrap: {line}");
            progress(line.clone());
            kept.lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .push(line);
        })
        .await?;
    if p.warm.unwrap_or(daemon.warm_start()) {
        let (warm_lines, log) = collecting(&progress);
        warm_after(daemon, who, &mut image, &log).await;
        lock(&lines).extend(take(&warm_lines));
    }
    let progress = take(&lines);
    Ok(ImageBootstrapResult { image, progress })
}

pub async fn import(
    daemon: &Daemon,
    who: &Requester,
    p: ImageImportParams,
    progress: &Progress,
) -> Result<ImageResult, RpcError> {
    let progress = |line| progress.line(line);
    let mut image = daemon
        .catalog
        .import(who, &p.path, &p.name, &p.os, p.user.as_deref(), p.public)
        .await?;
    if p.warm.unwrap_or(false) {
        let (_, log) = collecting(&progress);
        warm_after(daemon, who, &mut image, &log).await;
    }
    Ok(ImageResult { image })
}

type Lines = Arc<Mutex<Vec<String>>>;

use crate::sync::lock;

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
    let os = crate::guest::os::of_family(&lease.record().family)
        .map_err(|e| RpcError::new(ErrorKind::InvalidParams, format!("image {key}: {e}")))?;
    daemon
        .warm
        .make(
            &lease.record().id,
            lease.path(),
            WarmShape::default(),
            (os, &lease.record().default_user),
            &daemon.accel,
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
