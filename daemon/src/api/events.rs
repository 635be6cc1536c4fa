//! `events.subscribe` / `events.unsubscribe`: a connection asks to be told when a build or a
//! template of its project changes, instead of listing everything again and again. Each change
//! goes out as an `event` notification carrying the changed build or template summary; a
//! subscriber that falls behind gets one `resync` event and lists again.

use std::sync::Arc;

use kiln_shared::build::SubReply;
use kiln_shared::protocol::{Event, EventKind, Notification, RpcError};
use serde_json::Value;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use super::builds::{FollowUp, Sink};
use super::dispatch::{to_value, Daemon};

/// A template of `project` named `name` was created, changed or deleted.
#[derive(Debug, Clone)]
pub struct TemplateChanged {
    pub project: String,
    pub name: String,
}

/// Runs an `events.*` method; `None` when `method` is not one.
pub fn call(
    daemon: &Daemon,
    project: &str,
    method: &str,
    p: &Value,
    sink: &Sink,
    follow_up: &mut Option<FollowUp>,
) -> Option<Result<Value, RpcError>> {
    let r = match method {
        "events.subscribe" => {
            let (sub, token) = match sink.open_sub() {
                Ok(opened) => opened,
                Err(e) => return Some(Err(e)),
            };
            // Subscribed now, before the reply: no change after it can be missed.
            let builds = daemon.queue.changes();
            let templates = daemon.template_changes.subscribe();
            let (queue, store) = (daemon.queue.clone(), daemon.store.clone());
            let (project, sink) = (project.to_string(), sink.clone());
            *follow_up = Some(Box::pin(async move {
                let sources = Sources {
                    queue,
                    store,
                    builds,
                    templates,
                };
                stream(sources, &project, sub, &sink, token).await;
                sink.closed(sub);
            }));
            to_value(SubReply { sub })
        }
        "events.unsubscribe" => sink.unsubscribe(method, p, "subscription"),
        _ => return None,
    };
    Some(r)
}

/// Where a subscription's events come from.
struct Sources {
    queue: Arc<crate::queue::Queue>,
    store: Arc<crate::store::Store>,
    builds: tokio::sync::broadcast::Receiver<u64>,
    templates: tokio::sync::broadcast::Receiver<TemplateChanged>,
}

async fn stream(mut src: Sources, project: &str, sub: u64, sink: &Sink, stop: CancellationToken) {
    let event = |kind| Event {
        sub,
        kind,
        build: None,
        name: None,
        template: None,
    };
    loop {
        let e = tokio::select! {
            () = stop.cancelled() => return,
            id = src.builds.recv() => match id {
                Ok(id) => match src.queue.get(project, id) {
                    Ok(build) => Event { build: Some(build), ..event(EventKind::Build) },
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
                        Ok(Ok(template)) => Event {
                            name: Some(name),
                            template,
                            ..event(EventKind::Template)
                        },
                        _ => event(EventKind::Resync),
                    }
                }
                Ok(_) => continue,
                Err(RecvError::Lagged(_)) => event(EventKind::Resync),
                Err(RecvError::Closed) => return,
            },
        };
        let params = serde_json::to_value(e).unwrap_or_default();
        if !(sink.send)(Notification::new("event", params)).await {
            return;
        }
    }
}
