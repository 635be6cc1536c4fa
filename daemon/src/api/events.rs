//! `events.subscribe` / `events.unsubscribe`: a connection asks to be told when a build, a
//! template or an instance of its project changes, instead of listing everything again and again. Each change
//! goes out as an `event` notification carrying the changed build or template summary; a
//! subscriber that falls behind gets one `resync` event and lists again.

use std::sync::Arc;

use kiln_shared::build::SubReply;
use kiln_shared::protocol::{Event, EventKind, RpcError};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use super::builds::{FollowUp, Sink};
use super::dispatch::Daemon;

/// A template of `project` named `name` was created, changed or deleted.
#[derive(Debug, Clone)]
pub struct TemplateChanged {
    pub project: String,
    pub name: String,
}

/// `events.subscribe`: opens a subscription; its events go out once the reply naming it has.
pub fn subscribe(
    daemon: &Daemon,
    project: &str,
    sink: &Sink,
    follow_up: &mut Option<FollowUp>,
) -> Result<SubReply, RpcError> {
    let (sub, token) = sink.open_sub()?;
    // Subscribed now, before the reply: no change after it can be missed.
    let builds = daemon.queue.changes();
    let templates = daemon.template_changes.subscribe();
    let instance_changes = daemon.instances.changes();
    let (queue, store) = (daemon.queue.clone(), daemon.store.clone());
    let instances = daemon.instances.clone();
    let (project, sink) = (project.to_string(), sink.clone());
    *follow_up = Some(Box::pin(async move {
        let sources = Sources {
            queue,
            store,
            builds,
            templates,
            instances,
            instance_changes,
        };
        stream(sources, &project, sub, &sink, token).await;
        sink.closed(sub);
    }));
    Ok(SubReply { sub })
}

/// Where a subscription's events come from.
struct Sources {
    queue: Arc<crate::queue::Queue>,
    store: Arc<crate::store::Store>,
    builds: tokio::sync::broadcast::Receiver<u64>,
    templates: tokio::sync::broadcast::Receiver<TemplateChanged>,
    instances: Arc<crate::instances::Instances>,
    instance_changes: tokio::sync::broadcast::Receiver<(String, String)>,
}

async fn stream(mut src: Sources, project: &str, sub: u64, sink: &Sink, stop: CancellationToken) {
    let event = |kind| Event { sub, kind };
    loop {
        let e = tokio::select! {
            () = stop.cancelled() => return,
            id = src.builds.recv() => match id {
                Ok(id) => match src.queue.get(project, id) {
                    Ok(build) => event(EventKind::Build { build: Box::new(build) }),
                    // Another project's build, or gone.
                    Err(_) => continue,
                },
                Err(RecvError::Lagged(_)) => event(EventKind::Resync),
                Err(RecvError::Closed) => return,
            },
            t = src.templates.recv() => match t {
                Ok(t) if t.project == project => {
                    let store = src.store.clone();
                    let name = t.name.clone();
                    let summary = tokio::task::spawn_blocking(move || {
                        store.template_summary(&t.project, &t.name)
                    })
                    .await;
                    match summary {
                        Ok(Ok(template)) => event(EventKind::Template { name, template }),
                        _ => event(EventKind::Resync),
                    }
                }
                Ok(_) => continue,
                Err(RecvError::Lagged(_)) => event(EventKind::Resync),
                Err(RecvError::Closed) => return,
            },
            i = src.instance_changes.recv() => match i {
                Ok((p, name)) if p == project => {
                    let instance = src.instances.get(&p, &name).ok().map(Box::new);
                    event(EventKind::Instance { name, instance })
                }
                Ok(_) => continue,
                Err(RecvError::Lagged(_)) => event(EventKind::Resync),
                Err(RecvError::Closed) => return,
            },
        };
        if !sink.note(&e).await {
            return;
        }
    }
}
