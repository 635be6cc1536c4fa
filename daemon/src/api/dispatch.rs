//! Request dispatch: checks the caller's project and runs the method of a decoded request
//! (`kiln_shared::protocol::Incoming` decodes lines; `conn` gives each request its slot).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use kiln_shared::apps::AppCatalog;
use kiln_shared::methods::{self as m, Empty, Method, Name};
use kiln_shared::protocol::{
    Caller, DaemonStatus, ErrorKind, NameParams, ProjectList, Request, Response, RevisionList,
    RpcError, ShareStatus, TemplateGetParams, TemplateList, TemplateParams, TemplateRecord,
    TemplateRef, TemplateUpdateParams, ValidationResult, DEFAULT_PROJECT, PROTOCOL_VERSION,
};
use kiln_shared::validate::validate;
use kiln_shared::Template;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use super::azure;
use super::builds::{self, FollowUp, Sink};
use super::events;
use super::galleries;
use super::images::{self, Progress};
use super::instances;
use crate::access::{Access, Peer};
use crate::config::Config;
use crate::store::{Store, StoreError};

/// Everything a request handler can reach.
pub struct Daemon {
    pub config: Config,
    pub store: Arc<Store>,
    pub catalog: Arc<crate::catalog::Catalog>,
    pub queue: Arc<crate::queue::Queue>,
    pub instances: Arc<crate::instances::Instances>,
    pub logs: Arc<crate::logs::Logs>,
    /// Saved VMs of base images (QEMU's warm start), made by `image.warm`.
    pub warm: Arc<crate::driver::qemu::warm::WarmStates>,
    /// The accelerator verdict builds run under.
    pub accel: Arc<crate::driver::AccelProbe>,
    pub access: Access,
    pub apps: AppCatalog,
    pub started_at: DateTime<Utc>,
    /// Told whenever a template is created, changed or deleted (for `events.subscribe`).
    pub template_changes: tokio::sync::broadcast::Sender<super::TemplateChanged>,
    /// How many clients are connected, and what their unfinished lines hold.
    pub connections: Arc<super::Connections>,
}

impl From<crate::queue::QueueError> for RpcError {
    fn from(e: crate::queue::QueueError) -> RpcError {
        use crate::queue::QueueError;
        match e {
            QueueError::ImageName(_) => RpcError::new(ErrorKind::InvalidParams, e.to_string()),
            QueueError::Template(e) => e.into(),
            QueueError::Base(e) => e.into(),
            QueueError::NotFound { .. } => RpcError::new(ErrorKind::NotFound, e.to_string()),
            QueueError::Store(e) => {
                tracing::error!("store: {e}");
                RpcError::new(ErrorKind::Internal, e.to_string())
            }
        }
    }
}

impl Daemon {
    /// Whether builds resume from saved VMs and new base images get one (kilnd.toml).
    pub fn warm_start(&self) -> bool {
        self.config.file.warm_start.unwrap_or(true)
    }
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

fn params<T: DeserializeOwned>(method: &str, value: &Value) -> Result<T, RpcError> {
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
        let Some(method) = Name::parse(method) else {
            return Err(unknown_method(method));
        };
        let (params, p) = (&params_v, project.as_str());
        match method {
            Name::TemplateCreate => {
                serve::<m::TemplateCreate, _>(params, |t| self.template_create(peer, p, t)).await
            }
            Name::TemplateGet => {
                serve::<m::TemplateGet, _>(params, |t| self.template_get(p, t)).await
            }
            Name::TemplateList => {
                serve::<m::TemplateList, _>(params, |_| self.template_list(p)).await
            }
            Name::TemplateUpdate => {
                serve::<m::TemplateUpdate, _>(params, |t| self.template_update(peer, p, t)).await
            }
            Name::TemplateDelete => {
                serve::<m::TemplateDelete, _>(params, |t| self.template_delete(p, t)).await
            }
            Name::TemplateValidate => {
                serve::<m::TemplateValidate, _>(params, |t| async { Ok(self.template_validate(t)) })
                    .await
            }
            Name::TemplateRevisions => {
                serve::<m::TemplateRevisions, _>(params, |t| self.template_revisions(p, t)).await
            }
            Name::TemplateImportAzure => {
                serve::<m::TemplateImportAzure, _>(params, |t| azure::import(self, peer, p, t))
                    .await
            }
            Name::BuildStart => {
                serve::<m::BuildStart, _>(params, |b| builds::start(self, peer, p, b)).await
            }
            Name::BuildGet => {
                serve::<m::BuildGet, _>(params, |b| async { builds::get(self, p, b) }).await
            }
            Name::BuildList => {
                serve::<m::BuildList, _>(params, |b| async { builds::list(self, p, b) }).await
            }
            Name::BuildCancel => {
                serve::<m::BuildCancel, _>(params, |b| builds::cancel(self, p, b)).await
            }
            Name::BuildWait => {
                serve::<m::BuildWait, _>(params, |b| builds::wait(self, p, b, sink)).await
            }
            Name::BuildLogs => {
                serve::<m::BuildLogs, _>(params, |b| async {
                    builds::logs(self, p, b, sink, follow_up)
                })
                .await
            }
            Name::BuildLogsUnsubscribe => {
                serve::<m::BuildLogsUnsubscribe, _>(params, |s| async {
                    sink.unsubscribe(s, "log stream")
                })
                .await
            }
            Name::EventsSubscribe => {
                serve::<m::EventsSubscribe, _>(params, |_| async {
                    events::subscribe(self, p, sink, follow_up)
                })
                .await
            }
            Name::EventsUnsubscribe => {
                serve::<m::EventsUnsubscribe, _>(params, |s| async {
                    sink.unsubscribe(s, "subscription")
                })
                .await
            }
            Name::ImageList => {
                let who = images::requester(self, peer, p);
                serve::<m::ImageList, _>(params, |i| images::list(self, &who, i)).await
            }
            Name::ImageGet => {
                let who = images::requester(self, peer, p);
                serve::<m::ImageGet, _>(params, |i| images::get(self, &who, i)).await
            }
            Name::ImageDelete => {
                let who = images::requester(self, peer, p);
                serve::<m::ImageDelete, _>(params, |i| images::delete(self, &who, i)).await
            }
            Name::ImageShare => {
                let who = images::requester(self, peer, p);
                serve::<m::ImageShare, _>(params, |i| images::share(self, &who, i, true)).await
            }
            Name::ImageUnshare => {
                let who = images::requester(self, peer, p);
                serve::<m::ImageUnshare, _>(params, |i| images::share(self, &who, i, false)).await
            }
            Name::ImageAccept => {
                let who = images::requester(self, peer, p);
                serve::<m::ImageAccept, _>(params, |i| {
                    images::answer(self, &who, i, ShareStatus::Accepted)
                })
                .await
            }
            Name::ImageReject => {
                let who = images::requester(self, peer, p);
                serve::<m::ImageReject, _>(params, |i| {
                    images::answer(self, &who, i, ShareStatus::Rejected)
                })
                .await
            }
            // The three that make or warm an image send `image.progress` notifications while
            // they run, every one before the reply.
            Name::ImageBootstrap => {
                let (who, progress) = (images::requester(self, peer, p), Progress::to(sink));
                let r = serve::<m::ImageBootstrap, _>(params, |i| {
                    images::bootstrap(self, &who, i, &progress)
                })
                .await;
                progress.finish().await;
                r
            }
            Name::ImageImport => {
                let (who, progress) = (images::requester(self, peer, p), Progress::to(sink));
                let r = serve::<m::ImageImport, _>(params, |i| {
                    images::import(self, &who, i, &progress)
                })
                .await;
                progress.finish().await;
                r
            }
            Name::ImageWarm => {
                let (who, progress) = (images::requester(self, peer, p), Progress::to(sink));
                let r = serve::<m::ImageWarm, _>(params, |i| {
                    images::warm_image(self, &who, i, &progress)
                })
                .await;
                progress.finish().await;
                r
            }
            Name::ImageCreateFromInstance => {
                let (who, progress) = (images::requester(self, peer, p), Progress::to(sink));
                let r = serve::<m::ImageCreateFromInstance, _>(params, |i| {
                    instances::capture(self, &who, i, &progress)
                })
                .await;
                progress.finish().await;
                r
            }
            Name::InstanceRun => {
                let who = images::requester(self, peer, p);
                serve::<m::InstanceRun, _>(params, |i| instances::run(self, &who, i)).await
            }
            Name::InstanceList => {
                serve::<m::InstanceList, _>(params, |_| async { instances::list(self, p) }).await
            }
            Name::InstanceGet => {
                serve::<m::InstanceGet, _>(params, |i| async { instances::get(self, p, i) }).await
            }
            Name::InstanceStop => {
                serve::<m::InstanceStop, _>(params, |i| instances::stop(self, p, i)).await
            }
            Name::InstanceStart => {
                serve::<m::InstanceStart, _>(params, |i| instances::start(self, p, i)).await
            }
            Name::InstanceRestart => {
                serve::<m::InstanceRestart, _>(params, |i| instances::restart(self, p, i)).await
            }
            Name::InstanceDelete => {
                serve::<m::InstanceDelete, _>(params, |i| instances::delete(self, p, i)).await
            }
            Name::InstanceConsole => {
                serve::<m::InstanceConsole, _>(params, |i| async {
                    instances::console(self, p, i, sink, follow_up)
                })
                .await
            }
            Name::GalleryCreate => {
                let who = images::requester(self, peer, p);
                serve::<m::GalleryCreate, _>(params, |i| galleries::create(self, &who, i)).await
            }
            Name::GalleryList => {
                let who = images::requester(self, peer, p);
                serve::<m::GalleryList, _>(params, |_| galleries::list(self, &who)).await
            }
            Name::GalleryGet => {
                let who = images::requester(self, peer, p);
                serve::<m::GalleryGet, _>(params, |i| galleries::get(self, &who, i)).await
            }
            Name::GalleryDelete => {
                let who = images::requester(self, peer, p);
                serve::<m::GalleryDelete, _>(params, |i| galleries::delete(self, &who, i)).await
            }
            Name::GalleryShare => {
                let who = images::requester(self, peer, p);
                serve::<m::GalleryShare, _>(params, |i| galleries::share(self, &who, i, true)).await
            }
            Name::GalleryUnshare => {
                let who = images::requester(self, peer, p);
                serve::<m::GalleryUnshare, _>(params, |i| galleries::share(self, &who, i, false))
                    .await
            }
            Name::GalleryAccept => {
                let who = images::requester(self, peer, p);
                serve::<m::GalleryAccept, _>(params, |i| {
                    galleries::answer(self, &who, i, ShareStatus::Accepted)
                })
                .await
            }
            Name::GalleryReject => {
                let who = images::requester(self, peer, p);
                serve::<m::GalleryReject, _>(params, |i| {
                    galleries::answer(self, &who, i, ShareStatus::Rejected)
                })
                .await
            }
            Name::GalleryImageCreate => {
                let who = images::requester(self, peer, p);
                serve::<m::GalleryImageCreate, _>(params, |i| {
                    galleries::image_create(self, &who, i)
                })
                .await
            }
            Name::GalleryImageList => {
                let who = images::requester(self, peer, p);
                serve::<m::GalleryImageList, _>(params, |i| galleries::image_list(self, &who, i))
                    .await
            }
            Name::GalleryImageUpdate => {
                let who = images::requester(self, peer, p);
                serve::<m::GalleryImageUpdate, _>(params, |i| {
                    galleries::image_update(self, &who, i)
                })
                .await
            }
            Name::GalleryPrune => {
                let who = images::requester(self, peer, p);
                serve::<m::GalleryPrune, _>(params, |i| galleries::prune(self, &who, i)).await
            }
            Name::ProjectList => {
                serve::<m::ProjectList, _>(params, |_| self.project_list(peer)).await
            }
            Name::DaemonStatus => {
                serve::<m::DaemonStatus, _>(params, |_| self.status(peer, project.clone())).await
            }
        }
    }

    /// Tells `events.subscribe` subscribers of `project` that template `name` changed.
    pub(super) fn template_changed(&self, project: &str, name: &str) {
        // Nobody subscribed is no error.
        let _ = self.template_changes.send(super::TemplateChanged {
            project: project.to_string(),
            name: name.to_string(),
        });
    }

    async fn template_create(
        &self,
        peer: &Peer,
        project: &str,
        p: TemplateParams,
    ) -> Result<TemplateRef, RpcError> {
        let t = checked_template(p.template, &self.apps)?;
        let name = t.name.clone();
        let (store, owner, by) = (self.store.clone(), project.to_string(), peer.user.clone());
        let revision = blocking(move || store.create_template(&owner, &t, Some(&by))).await?;
        self.template_changed(project, &name);
        Ok(TemplateRef { name, revision })
    }

    async fn template_get(
        &self,
        project: &str,
        p: TemplateGetParams,
    ) -> Result<TemplateRecord, RpcError> {
        let (store, project) = (self.store.clone(), project.to_string());
        blocking(move || store.get_template(&project, &p.name, p.revision)).await
    }

    async fn template_list(&self, project: &str) -> Result<TemplateList, RpcError> {
        let (store, project) = (self.store.clone(), project.to_string());
        let templates = blocking(move || store.list_templates(&project)).await?;
        Ok(TemplateList { templates })
    }

    async fn template_update(
        &self,
        peer: &Peer,
        project: &str,
        p: TemplateUpdateParams,
    ) -> Result<TemplateRef, RpcError> {
        let t = checked_template(p.template, &self.apps)?;
        let name = t.name.clone();
        let old = p.name.clone();
        let (store, owner, by) = (self.store.clone(), project.to_string(), peer.user.clone());
        let revision = blocking(move || {
            store.update_template(&owner, &p.name, &t, p.expected_revision, Some(&by))
        })
        .await?;
        // A rename changes two entries: the old name is gone.
        if old != name {
            self.template_changed(project, &old);
        }
        self.template_changed(project, &name);
        Ok(TemplateRef { name, revision })
    }

    async fn template_delete(&self, project: &str, p: NameParams) -> Result<Empty, RpcError> {
        let name = p.name.clone();
        let (store, owner) = (self.store.clone(), project.to_string());
        blocking(move || store.delete_template(&owner, &p.name)).await?;
        self.template_changed(project, &name);
        Ok(Empty {})
    }

    fn template_validate(&self, p: TemplateParams) -> ValidationResult {
        let violations = match checked_template(p.template, &self.apps) {
            Ok(_) => Vec::new(),
            Err(e) => e.data.violations,
        };
        ValidationResult {
            valid: violations.is_empty(),
            violations,
        }
    }

    async fn template_revisions(
        &self,
        project: &str,
        p: NameParams,
    ) -> Result<RevisionList, RpcError> {
        let (store, project) = (self.store.clone(), project.to_string());
        let revisions = blocking(move || store.template_revisions(&project, &p.name)).await?;
        Ok(RevisionList { revisions })
    }

    async fn project_list(&self, peer: &Peer) -> Result<ProjectList, RpcError> {
        let store = self.store.clone();
        let stored = blocking(move || store.list_projects()).await?;
        let names: Vec<String> = stored.into_iter().map(|p| p.name).collect();
        Ok(ProjectList {
            projects: self.access.projects(peer, &names, self.is_admin(peer)),
        })
    }

    /// `daemon.status`: counts of the projects this caller may act in; others' stay theirs.
    async fn status(&self, peer: &Peer, project: String) -> Result<DaemonStatus, RpcError> {
        let admin = self.is_admin(peer);
        let visible = |p: &str| admin || self.access.is_member(peer, p);
        let store = self.store.clone();
        let per_project = blocking(move || store.count_templates_by_project()).await?;
        let templates = per_project
            .iter()
            .filter(|(p, _)| visible(p))
            .map(|(_, n)| n)
            .sum();
        let (queue, running) = self.queue.counts_where(visible);
        let now = Utc::now();
        Ok(DaemonStatus {
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
                .accel
                .current()
                .map_or("unknown", |a| a.as_str())
                .into(),
            templates,
            caller: Caller {
                uid: peer.user.uid,
                gids: peer.user.gids.clone(),
                project,
            },
        })
    }
}

/// The error for a method the table does not have; for `image.*`, it lists the image methods.
fn unknown_method(method: &str) -> RpcError {
    let message = if method.starts_with("image.") {
        let images: Vec<&str> = Name::ALL
            .iter()
            .map(|m| m.as_str())
            .filter(|m| m.starts_with("image."))
            .collect();
        format!(
            "unknown method {method:?}; the image methods are {}",
            images.join(", ")
        )
    } else {
        format!("unknown method {method:?}")
    };
    RpcError::new(ErrorKind::MethodNotFound, message)
}

/// Decodes the params of method `M`, runs `handler` on them and encodes its result.
async fn serve<M: Method, F>(
    params: &Value,
    handler: impl FnOnce(M::Params) -> F,
) -> Result<Value, RpcError>
where
    F: std::future::Future<Output = Result<M::Result, RpcError>>,
{
    let p = self::params::<M::Params>(M::NAME, params)?;
    to_value(handler(p).await?)
}

impl Daemon {
    /// Root, kilnd's own user, or a member of `admin_group`: sees every project.
    fn is_admin(&self, peer: &Peer) -> bool {
        crate::catalog::is_admin(peer, self.config.file.admin_group.as_deref())
    }
}

fn to_value<T: serde::Serialize>(v: T) -> Result<Value, RpcError> {
    serde_json::to_value(v).map_err(|e| RpcError::new(ErrorKind::Internal, e.to_string()))
}

/// Runs a store call on the blocking pool (redb does file I/O and fsync).
pub(super) async fn blocking<T: Send + 'static>(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_methods_are_named() {
        let check = |method: &str, message: &str| {
            let e = unknown_method(method);
            assert_eq!(
                (e.kind(), e.message.as_str()),
                (ErrorKind::MethodNotFound, message)
            );
        };
        check("nope", r#"unknown method "nope""#);
        check(
            "image.nope",
            "unknown method \"image.nope\"; the image methods are image.list, image.get, \
             image.delete, image.share, image.unshare, image.accept, image.reject, image.bootstrap, image.import, image.warm, \
             image.create_from_instance",
        );
    }
}
