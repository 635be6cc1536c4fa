//! Triggers: a template whose latest revision says `[trigger] on_base_change = true` gets one
//! build, through the queue's normal submit, whenever its source gets a new version.
//!
//! The catalog announces each image as it becomes available ([`Catalog::published`]); this task
//! matches it against every template's latest revision. A template matches when the new image is
//! exactly what its source resolves to now, for its project: the new `latest` of its gallery
//! image (a pinned version never matches, nor one excluded from latest or lower than the
//! highest), or the newest image of its plain source's name (a re-bootstrap or re-import
//! supersedes the old one). The triggered build runs as whoever stored that revision.
//!
//! Announcements live in memory: a version is announced once, when it becomes available, so it
//! queues one build per template, never again after a kilnd restart (and none for a version
//! published while no kilnd ran). A build never triggers its own template, so a template that
//! publishes into the gallery image it is built on does not loop.

use std::sync::Arc;

use kiln_shared::build::TriggeredBy;
use kiln_shared::Template;
use tokio::sync::broadcast::error::RecvError;

use crate::catalog::{Catalog, ImageRecord, Published, State};
use crate::queue::Queue;
use crate::store::Store;

/// Starts the trigger task; it subscribes now, so every image published after this call counts.
pub fn spawn(store: Arc<Store>, catalog: Arc<Catalog>, queue: Arc<Queue>) {
    let mut published = catalog.published();
    tokio::spawn(async move {
        loop {
            match published.recv().await {
                Ok(p) => {
                    let (store, catalog, queue) = (store.clone(), catalog.clone(), queue.clone());
                    let fired =
                        tokio::task::spawn_blocking(move || fire(&store, &catalog, &queue, &p))
                            .await;
                    if let Err(e) = fired {
                        tracing::error!("trigger task failed: {e}");
                    }
                }
                Err(RecvError::Lagged(n)) => tracing::warn!(
                    missed = n,
                    "triggers missed {n} newly published images (too many at once); templates \
                     built on them were not rebuilt: start those builds by hand"
                ),
                Err(RecvError::Closed) => return,
            }
        }
    });
}

/// The version a new image is of its source: a gallery version, or for a plain image its
/// creation time (UTC, YYYYMMDDHHMM), which sorts and reads as a date.
pub fn version_of(record: &ImageRecord) -> String {
    match &record.gallery {
        Some(g) => g.version.clone(),
        None => record.created_at.format("%Y%m%d%H%M").to_string(),
    }
}

/// The source name a template would give for `record`: `GALLERY/IMAGE` or the image's name.
fn source_name(record: &ImageRecord) -> String {
    match &record.gallery {
        Some(g) => format!("{}/{}", g.gallery, g.image),
        None => record.name.clone(),
    }
}

/// Whether `template` (of `project`) asks to be rebuilt on `record`, newly available.
fn asks_for(catalog: &Catalog, project: &str, template: &Template, record: &ImageRecord) -> bool {
    if !template.trigger.on_base_change || template.source.image != source_name(record) {
        return false;
    }
    if record.gallery.is_some() && template.source.version != "latest" {
        return false;
    }
    if record.owner.as_deref() == Some(project)
        && record.template.as_deref() == Some(template.name.as_str())
    {
        tracing::debug!(
            template = %template.name,
            image = %record.id,
            "not triggering a template on an image it built"
        );
        return false;
    }
    // Exactly what a build queued now would resolve the source to (visibility, latest,
    // exclusion, the newest of a name, the OS).
    match catalog.resolve_base(project, &template.source.image, "latest", &template.os) {
        Ok(base) => base.id == record.id,
        Err(_) => false,
    }
}

/// Queues a build of every template that asks for `published`.
fn fire(store: &Store, catalog: &Catalog, queue: &Queue, published: &Published) {
    let record = match store.get_image(&published.id) {
        Ok(Some(r)) if r.state == State::Available => r,
        Ok(_) => return,
        Err(e) => {
            tracing::error!(image = %published.id, "triggers cannot read the new image: {e}");
            return;
        }
    };
    let projects = match store.list_projects() {
        Ok(p) => p,
        Err(e) => {
            tracing::error!("triggers cannot list projects: {e}");
            return;
        }
    };
    for project in projects.iter().map(|p| p.name.as_str()) {
        let Ok(summaries) = store.list_templates(project) else {
            continue;
        };
        for summary in summaries {
            let Ok(latest) = store.get_template(project, &summary.name, None) else {
                continue;
            };
            if !asks_for(catalog, project, &latest.template, &record) {
                continue;
            }
            fire_one(store, queue, project, &latest.template, &record);
        }
    }
}

fn fire_one(
    store: &Store,
    queue: &Queue,
    project: &str,
    template: &Template,
    record: &ImageRecord,
) {
    let name = &template.name;
    let user = match store.template_saved_by(project, name) {
        Ok(Some(user)) => user,
        Ok(None) => {
            tracing::warn!(
                project,
                template = %name,
                "not triggering: the template's latest revision was stored before kiln recorded \
                 who stored it; store it again (kiln template edit) so its builds run as you"
            );
            return;
        }
        Err(e) => {
            tracing::error!(project, template = %name, "triggers cannot read the template: {e}");
            return;
        }
    };
    let by = TriggeredBy {
        image: template.source.image.clone(),
        version: version_of(record),
        image_id: record.id.clone(),
    };
    match queue.submit_triggered(project, user, name, by) {
        Ok(build) => tracing::info!(
            project,
            template = %name,
            build = build.id,
            base = %record.name,
            "triggered by a new version of its source"
        ),
        Err(e) => tracing::warn!(
            project,
            template = %name,
            base = %record.name,
            "trigger could not queue a build: {e}"
        ),
    }
}
