//! Request dispatch: checks the caller's project and runs the method of a decoded request
//! (`kiln_shared::protocol::Incoming` decodes lines; `conn` gives each request its slot).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use kiln_shared::apps::AppCatalog;
use kiln_shared::protocol::{
    Caller, DaemonStatus, ErrorKind, NameParams, ProjectList, Request, Response, RevisionList,
    RpcError, TemplateGetParams, TemplateList, TemplateParams, TemplateRef, TemplateUpdateParams,
    ValidationResult, DEFAULT_PROJECT, PROTOCOL_VERSION,
};
use kiln_shared::validate::validate;
use kiln_shared::Template;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use super::builds::{FollowUp, Sink};
use crate::access::{Access, Peer};
use crate::config::Config;
use crate::store::{Store, StoreError};

/// Everything a request handler can reach.
pub struct Daemon {
    pub config: Config,
    pub store: Arc<Store>,
    pub catalog: Arc<crate::catalog::Catalog>,
    pub queue: Arc<crate::queue::Queue>,
    pub access: Access,
    pub apps: AppCatalog,
    pub started_at: DateTime<Utc>,
    /// Told whenever a template is created, changed or deleted (for `events.subscribe`).
    pub template_changes: tokio::sync::broadcast::Sender<super::TemplateChanged>,
    /// How many clients are connected, and what their unfinished lines hold.
    pub connections: Arc<super::Connections>,
}

impl From<StoreError> for RpcError {
    fn from(e: StoreError) -> RpcError {
        let kind = match &e {
            StoreError::TemplateNotFound { .. } | StoreError::RevisionNotFound { .. } => {
                ErrorKind::NotFound
            }
            StoreError::TemplateExists { .. } | StoreError::StaleRevision { .. } => {
                ErrorKind::Conflict
            }
            _ => ErrorKind::Internal,
        };
        if kind == ErrorKind::Internal {
            tracing::error!("store: {e}");
        }
        RpcError::new(kind, e.to_string())
    }
}

pub(super) fn params<T: DeserializeOwned>(method: &str, value: &Value) -> Result<T, RpcError> {
    let value = if value.is_null() {
        json!({})
    } else {
        value.clone()
    };
    serde_json::from_value(value).map_err(|e| {
        RpcError::new(
            ErrorKind::InvalidParams,
            format!("invalid params for {method}: {e}"),
        )
    })
}

/// Parses and validates a template from the wire; all violations at once.
fn checked_template(value: Value, apps: &AppCatalog) -> Result<Template, RpcError> {
    let template = Template::from_json_value(value)
        .map_err(|v| RpcError::invalid_template(format!("template is malformed: {v}"), vec![v]))?;
    let violations = validate(&template, apps);
    if violations.is_empty() {
        Ok(template)
    } else {
        let n = violations.len();
        Err(RpcError::invalid_template(
            format!(
                "template {:?} is invalid: {n} problem{}",
                template.name,
                if n == 1 { "" } else { "s" }
            ),
            violations,
        ))
    }
}

impl Daemon {
    /// Runs one request; no reply for a notification (a request without `id`). A stream's
    /// follow-up must start only after the reply is written, so `sub` is known first.
    pub async fn handle(
        &self,
        peer: &Peer,
        request: Request,
        sink: &Sink,
    ) -> (Option<Response>, Option<FollowUp>) {
        let mut follow_up = None;
        let result = self
            .call(peer, &request.method, request.params, sink, &mut follow_up)
            .await;
        if let Err(e) = &result {
            tracing::debug!(method = %request.method, kind = e.kind().as_str(), "{}", e.message);
        }
        let response = request.id.map(|id| match result {
            Ok(v) => Response::ok(id, v),
            Err(e) => Response::err(id, e),
        });
        (response, follow_up)
    }

    /// Runs one method for `peer`.
    pub async fn call(
        &self,
        peer: &Peer,
        method: &str,
        params_v: Value,
        sink: &Sink,
        follow_up: &mut Option<FollowUp>,
    ) -> Result<Value, RpcError> {
        if !params_v.is_null() && !params_v.is_object() {
            return Err(RpcError::new(
                ErrorKind::InvalidParams,
                "params must be an object",
            ));
        }
        let project = match params_v.get("project") {
            None | Some(Value::Null) => DEFAULT_PROJECT.to_string(),
            Some(Value::String(p)) => match kiln_shared::names::check(p) {
                Ok(()) => p.clone(),
                Err(e) => {
                    return Err(RpcError::new(
                        ErrorKind::InvalidParams,
                        format!("project {e}"),
                    ))
                }
            },
            Some(_) => {
                return Err(RpcError::new(
                    ErrorKind::InvalidParams,
                    "project must be a string: the name of a project",
                ))
            }
        };
        self.access.check(peer, &project)?;
        let store = self.store.clone();
        if method.starts_with("image.") {
            // Bootstrap progress goes out as `image.progress` notifications while it happens.
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
            let forward = {
                let sink = sink.clone();
                tokio::spawn(async move {
                    while let Some(line) = rx.recv().await {
                        let note = kiln_shared::protocol::Notification::new(
                            "image.progress",
                            json!({ "line": line }),
                        );
                        if !(sink.send)(note).await {
                            break;
                        }
                    }
                })
            };
            let progress = move |line: String| {
                let _ = tx.send(line);
            };
            let r = super::images::call_with_progress(
                self, peer, &project, method, &params_v, &progress,
            )
            .await;
            drop(progress);
            let _ = forward.await;
            if let Some(r) = r {
                return r;
            }
        }
        if let Some(r) =
            super::builds::call(self, peer, &project, method, &params_v, sink, follow_up).await
        {
            return r;
        }
        if let Some(r) = super::events::call(self, &project, method, &params_v, sink, follow_up) {
            return r;
        }
        let changed = |name: &str| {
            // Nobody subscribed is no error.
            let _ = self.template_changes.send(super::TemplateChanged {
                project: project.clone(),
                name: name.to_string(),
            });
        };
        match method {
            "template.create" => {
                let p: TemplateParams = params(method, &params_v)?;
                let t = checked_template(p.template, &self.apps)?;
                let owner = project.clone();
                let revision = blocking(move || store.create_template(&owner, &t)).await?;
                let name = t_name(&params_v);
                changed(&name);
                to_value(TemplateRef { name, revision })
            }
            "template.get" => {
                let p: TemplateGetParams = params(method, &params_v)?;
                to_value(blocking(move || store.get_template(&project, &p.name, p.revision)).await?)
            }
            "template.list" => {
                let templates = blocking(move || store.list_templates(&project)).await?;
                to_value(TemplateList { templates })
            }
            "template.update" => {
                let p: TemplateUpdateParams = params(method, &params_v)?;
                let t = checked_template(p.template, &self.apps)?;
                let name = t.name.clone();
                let (owner, old) = (project.clone(), p.name.clone());
                let revision = blocking(move || {
                    store.update_template(&owner, &p.name, &t, p.expected_revision)
                })
                .await?;
                // A rename changes two entries: the old name is gone.
                if old != name {
                    changed(&old);
                }
                changed(&name);
                to_value(TemplateRef { name, revision })
            }
            "template.delete" => {
                let p: NameParams = params(method, &params_v)?;
                let (owner, name) = (project.clone(), p.name.clone());
                blocking(move || store.delete_template(&owner, &p.name)).await?;
                changed(&name);
                Ok(json!({}))
            }
            "template.validate" => {
                let p: TemplateParams = params(method, &params_v)?;
                let violations = match checked_template(p.template, &self.apps) {
                    Ok(_) => Vec::new(),
                    Err(e) => e.data.violations,
                };
                to_value(ValidationResult {
                    valid: violations.is_empty(),
                    violations,
                })
            }
            "template.revisions" => {
                let p: NameParams = params(method, &params_v)?;
                let revisions =
                    blocking(move || store.template_revisions(&project, &p.name)).await?;
                to_value(RevisionList { revisions })
            }
            "project.list" => {
                let stored = blocking(move || store.list_projects()).await?;
                let names: Vec<String> = stored.into_iter().map(|p| p.name).collect();
                to_value(ProjectList {
                    projects: self.access.projects(peer, &names, self.is_admin(peer)),
                })
            }
            "daemon.status" => {
                // Counts of the projects this caller may act in; others' stay theirs.
                let admin = self.is_admin(peer);
                let visible = |p: &str| admin || self.access.is_member(peer, p);
                let per_project = blocking(move || store.count_templates_by_project()).await?;
                let templates = per_project
                    .iter()
                    .filter(|(p, _)| visible(p))
                    .map(|(_, n)| n)
                    .sum();
                let (queue, running) = self.queue.counts_where(visible);
                let now = Utc::now();
                to_value(DaemonStatus {
                    version: env!("CARGO_PKG_VERSION").into(),
                    protocol: PROTOCOL_VERSION,
                    pid: std::process::id(),
                    socket: self.config.socket.display().to_string(),
                    data_dir: self.config.data_dir.display().to_string(),
                    started_at: self.started_at,
                    uptime_seconds: (now - self.started_at).num_seconds().max(0) as u64,
                    queue: queue as u64,
                    running: running as u64,
                    max_concurrent_builds: self.config.max_concurrent_builds(),
                    accel: self
                        .queue
                        .accel
                        .current()
                        .map_or("unknown", |a| a.as_str())
                        .into(),
                    templates,
                    caller: Caller {
                        uid: peer.uid,
                        gids: peer.gids.clone(),
                        project,
                    },
                })
            }
            m if KNOWN_LATER.iter().any(|k| m.starts_with(k)) => Err(RpcError::new(
                ErrorKind::MethodNotFound,
                format!("{m} is not available in this kilnd yet"),
            )),
            m => Err(RpcError::new(
                ErrorKind::MethodNotFound,
                format!("unknown method {m:?}"),
            )),
        }
    }
}

impl Daemon {
    /// Root, kilnd's own user, or a member of `admin_group`: sees every project.
    fn is_admin(&self, peer: &Peer) -> bool {
        crate::catalog::is_admin(peer, self.config.file.admin_group.as_deref())
    }
}

/// Method families DESIGN.md promises that this daemon does not serve yet.
const KNOWN_LATER: &[&str] = &[];

fn t_name(params: &Value) -> String {
    params
        .get("template")
        .and_then(|t| t.get("name"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

pub(super) fn to_value<T: serde::Serialize>(v: T) -> Result<Value, RpcError> {
    serde_json::to_value(v).map_err(|e| RpcError::new(ErrorKind::Internal, e.to_string()))
}

/// Runs a store call on the blocking pool (redb does file I/O and fsync).
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, RpcError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(RpcError::from),
        Err(e) => Err(RpcError::new(
            ErrorKind::Internal,
            format!("store task failed: {e}"),
        )),
    }
}
