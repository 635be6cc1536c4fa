//! The build queue: build records, FIFO scheduling with a concurrency limit, cancellation,
//! timeouts, kept VMs, and restart recovery. What a build runs is its `plan`; `pipeline` runs it
//! on the VMs of one [`VmDriver`].

mod pipeline;
pub mod plan;

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use chrono::Utc;
use kiln_shared::apps::AppCatalog;
use kiln_shared::build::{
    Build, BuildListParams, BuildStartParams, BuildState, StepState, TriggeredBy,
};
use tokio::sync::{broadcast, Notify};
use tokio_util::sync::CancellationToken;

use crate::as_user::User;
use crate::catalog::{Catalog, CatalogError};
use crate::driver::VmDriver;
use crate::logs::Logs;
use crate::store::{BuildRecord, Store, StoreError};
use crate::sync::lock;
use pipeline::{KeptVm, Outcome};
use plan::PlannedStep;

/// Why the queue refused a request; api turns each into an RPC error.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("image_name {0}")]
    ImageName(String),
    /// The template is missing (or the store failed reading it).
    #[error(transparent)]
    Template(StoreError),
    /// The base image is missing, not visible, not available or of another OS.
    #[error(transparent)]
    Base(CatalogError),
    #[error("build {id} not found in project {project:?}")]
    NotFound { project: String, id: u64 },
    #[error("the store failed: {0}")]
    Store(#[from] StoreError),
}

/// What to build: a template, on another base than its source, for a trigger.
struct Wanted<'a> {
    template: &'a str,
    base: Option<&'a str>,
    triggered_by: Option<TriggeredBy>,
}

/// Limits that tests shorten.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_concurrent: usize,
    /// Caps every build's timeout (seconds); for tests that cannot wait six minutes.
    pub timeout_cap_secs: Option<u64>,
    /// Builds resume from a base image's saved VM when it has one (kilnd.toml `warm_start`).
    pub warm_start: bool,
}

pub struct Queue {
    store: Arc<Store>,
    logs: Arc<Logs>,
    catalog: Arc<Catalog>,
    driver: Arc<dyn VmDriver>,
    builds_dir: PathBuf,
    limits: Limits,
    state: Mutex<QueueState>,
    wake: Notify,
    /// Sends a build id whenever that build changes.
    changes: broadcast::Sender<u64>,
}

#[derive(Default)]
struct QueueState {
    waiting: VecDeque<u64>,
    running: HashMap<u64, CancellationToken>,
    /// VMs kept running after a failed step (`on_customizer_error = "abort"`), until canceled.
    kept: HashMap<u64, KeptVm>,
}

impl Queue {
    pub fn new(
        store: Arc<Store>,
        logs: Arc<Logs>,
        catalog: Arc<Catalog>,
        driver: Arc<dyn VmDriver>,
        builds_dir: PathBuf,
        limits: Limits,
    ) -> Arc<Queue> {
        let (changes, _) = broadcast::channel(1024);
        Arc::new(Queue {
            store,
            logs,
            catalog,
            driver,
            builds_dir,
            limits,
            state: Mutex::default(),
            wake: Notify::new(),
            changes,
        })
    }

    /// Ends every build a dead daemon left unfinished: `interrupted`, its VM ended, work removed.
    pub fn recover(&self) -> Result<(), StoreError> {
        for mut rec in self.store.list_builds()? {
            if rec.build.state.is_terminal() && rec.work_dir.is_none() {
                continue;
            }
            if let (Some(vm), Some(dir)) = (rec.vm_handle(), rec.work_dir.as_ref()) {
                if self.driver.reap(&vm, dir) {
                    tracing::info!(
                        build = rec.build.id,
                        vm = %vm.data,
                        "ended the VM a previous kilnd left running"
                    );
                }
            }
            if let Some(dir) = rec.work_dir.take() {
                let _ = std::fs::remove_dir_all(&dir);
            }
            rec.vm_gone();
            if !rec.build.state.is_terminal() {
                let was = rec.build.state;
                rec.build.state = BuildState::Interrupted;
                rec.build.sub_state = None;
                rec.build.finished_at = Some(Utc::now());
                rec.build.message = format!(
                    "kilnd stopped while this build was {}; its VM and files were removed",
                    was.as_str()
                );
                for s in &mut rec.build.steps {
                    if matches!(s.state, StepState::Running | StepState::Pending) {
                        s.state = StepState::Canceled;
                    }
                }
            }
            rec.build.attach_command = None;
            self.store.put_build(&rec)?;
            tracing::info!(
                build = rec.build.id,
                "recovered build: {}",
                rec.build.message
            );
        }
        Ok(())
    }

    /// Runs the scheduler until the process ends.
    pub fn spawn_scheduler(self: &Arc<Self>) {
        let queue = self.clone();
        tokio::spawn(async move {
            loop {
                let notified = queue.wake.notified();
                queue.schedule();
                notified.await;
            }
        });
    }

    fn schedule(self: &Arc<Self>) {
        let mut st = lock(&self.state);
        while st.running.len() < self.limits.max_concurrent {
            let Some(id) = st.waiting.pop_front() else {
                break;
            };
            let token = CancellationToken::new();
            st.running.insert(id, token.clone());
            let queue = self.clone();
            tokio::spawn(async move {
                let outcome = pipeline::run(queue.clone(), id, token.clone()).await;
                let canceled = {
                    let mut st = lock(&queue.state);
                    st.running.remove(&id);
                    match outcome {
                        // A cancel that came while the pipeline was ending ends the VM too (the
                        // token is canceled under this lock, so no cancel slips between).
                        Outcome::Kept(kept) if token.is_cancelled() => Some(kept),
                        Outcome::Kept(kept) => {
                            st.kept.insert(id, kept);
                            None
                        }
                        Outcome::Ended => None,
                    }
                };
                if let Some(kept) = canceled {
                    queue.end_kept(id, kept).await;
                }
                queue.wake.notify_one();
            });
        }
    }

    /// Saves a changed record and tells waiters.
    fn save(&self, rec: &BuildRecord) {
        if let Err(e) = self.store.put_build(rec) {
            tracing::error!(build = rec.build.id, "cannot store build: {e}");
        }
        let _ = self.changes.send(rec.build.id);
    }

    /// Queues a build of `params.template` in `project`, pinning its latest revision.
    pub async fn submit(
        &self,
        project: &str,
        started_by: User,
        params: BuildStartParams,
    ) -> Result<Build, QueueError> {
        if let Err(e) = kiln_shared::names::check(&params.image_name) {
            return Err(QueueError::ImageName(e.to_string()));
        }
        let BuildStartParams {
            template,
            image_name,
            base_image,
        } = params;
        let wanted = Wanted {
            template: &template,
            base: base_image.as_deref(),
            triggered_by: None,
        };
        self.queue(project, started_by, wanted, |_, _| Ok(image_name))
    }

    /// Queues the build a template's `[trigger]` asks for: its latest revision on the new base
    /// `by.image_id`, named by `trigger.image_name` with `{version}`, `{date}` and `{build}`
    /// replaced, run as `started_by` (who stored that revision).
    pub fn submit_triggered(
        &self,
        project: &str,
        started_by: User,
        template: &str,
        by: TriggeredBy,
    ) -> Result<Build, QueueError> {
        let (base, version) = (by.image_id.clone(), by.version.clone());
        let wanted = Wanted {
            template,
            base: Some(&base),
            triggered_by: Some(by),
        };
        self.queue(project, started_by, wanted, |t, id| {
            let today = Utc::now().format("%Y%m%d").to_string();
            let name = t
                .trigger
                .image_name_for(&version, &today, id)
                .map_err(|e| QueueError::ImageName(format!("(trigger.image_name) {e}")))?;
            kiln_shared::names::check(&name)
                .map_err(|e| QueueError::ImageName(format!("(from trigger.image_name) {e}")))?;
            Ok(name)
        })
    }

    /// Stores and queues a build of the latest revision of `wanted.template`, on its source or
    /// `wanted.base`, named by `image_name(template, build id)`.
    fn queue(
        &self,
        project: &str,
        started_by: User,
        wanted: Wanted<'_>,
        image_name: impl FnOnce(&kiln_shared::Template, u64) -> Result<String, QueueError>,
    ) -> Result<Build, QueueError> {
        let record = self
            .store
            .get_template(project, wanted.template, None)
            .map_err(QueueError::Template)?;
        let template = record.template;
        // `--base-image` names one image (a gallery image without a version is its latest);
        // the template's source may pin a gallery version.
        let (base_name, version) = match wanted.base {
            Some(b) => (b.to_owned(), "latest"),
            None => (
                template.source.image.clone(),
                template.source.version.as_str(),
            ),
        };
        // The base image must exist, be visible to the project and match the template's OS.
        let base = self
            .catalog
            .resolve_base(project, &base_name, version, &template.os)
            .map_err(QueueError::Base)?;
        let id = self.store.next_build_id()?;
        let image_name = image_name(&template, id)?;
        let plan = plan::plan(&template, &AppCatalog::builtin());
        let build = Build {
            id,
            project: project.into(),
            template: template.name.clone(),
            revision: record.revision,
            image_name,
            base_image: base.id,
            base_image_name: Some(base.name),
            state: BuildState::Queued,
            sub_state: None,
            step: None,
            steps: plan.iter().map(PlannedStep::pending).collect(),
            created_at: Utc::now(),
            started_at: None,
            finished_at: None,
            message: String::new(),
            run_outputs: Vec::new(),
            queue_position: None,
            attach_command: None,
            accel: None,
            triggered_by: wanted.triggered_by,
        };
        let rec = BuildRecord::new(build, template, plan, started_by);
        self.save(&rec);
        lock(&self.state).waiting.push_back(id);
        self.wake.notify_one();
        Ok(self.view(rec.build))
    }

    /// Adds the live queue position (derived here, never stored: records are saved without it).
    fn view(&self, mut build: Build) -> Build {
        if build.state == BuildState::Queued {
            let st = lock(&self.state);
            build.queue_position = st
                .waiting
                .iter()
                .position(|&w| w == build.id)
                .map(|p| p + 1);
        }
        build
    }

    fn record(&self, project: &str, id: u64) -> Result<BuildRecord, QueueError> {
        match self.store.get_build(id)? {
            Some(r) if r.build.project == project => Ok(r),
            _ => Err(QueueError::NotFound {
                project: project.into(),
                id,
            }),
        }
    }

    pub fn get(&self, project: &str, id: u64) -> Result<Build, QueueError> {
        Ok(self.view(self.record(project, id)?.build))
    }

    pub fn list(&self, project: &str, filter: &BuildListParams) -> Result<Vec<Build>, QueueError> {
        let all = self.store.list_builds()?;
        Ok(all
            .into_iter()
            .map(|r| r.build)
            .filter(|b| b.project == project)
            .filter(|b| filter.template.as_ref().is_none_or(|t| &b.template == t))
            .filter(|b| filter.state.is_none_or(|s| b.state == s))
            .map(|b| self.view(b))
            .collect())
    }

    /// The stored state of a build, whatever its project (for log streams already authorized).
    pub fn store_build_state(&self, id: u64) -> Option<BuildState> {
        self.store
            .get_build(id)
            .ok()
            .flatten()
            .map(|r| r.build.state)
    }

    /// Number of builds waiting and running in the projects `counted` accepts.
    pub fn counts_where(&self, counted: impl Fn(&str) -> bool) -> (usize, usize) {
        let (waiting, running): (Vec<u64>, Vec<u64>) = {
            let st = lock(&self.state);
            (
                st.waiting.iter().copied().collect(),
                st.running.keys().copied().collect(),
            )
        };
        let count = |ids: Vec<u64>| {
            ids.into_iter()
                .filter(|&id| {
                    matches!(self.store.get_build(id), Ok(Some(r)) if counted(&r.build.project))
                })
                .count()
        };
        (count(waiting), count(running))
    }

    /// Cancels a build in any state; a kept VM is ended too. Returns once the build is terminal.
    pub async fn cancel(&self, project: &str, id: u64) -> Result<Build, QueueError> {
        let mut rec = self.record(project, id)?;
        let (was_waiting, running, kept) = {
            let mut st = lock(&self.state);
            let waiting = st
                .waiting
                .iter()
                .position(|&w| w == id)
                .map(|p| st.waiting.remove(p));
            let running = st.running.get(&id).cloned();
            // Canceled under the lock: the scheduler sees it when the pipeline ends.
            if let Some(token) = &running {
                token.cancel();
            }
            (waiting.is_some(), running.is_some(), st.kept.remove(&id))
        };
        if was_waiting {
            rec.build.state = BuildState::Canceled;
            rec.build.finished_at = Some(Utc::now());
            rec.build.message = "canceled while queued".into();
            self.save(&rec);
            return Ok(rec.build);
        }
        if running {
            return self.wait(project, id).await;
        }
        if let Some(kept) = kept {
            return Ok(self.end_kept(id, kept).await.unwrap_or(rec.build));
        }
        Ok(rec.build)
    }

    /// Ends a kept VM and says so in its build's record.
    async fn end_kept(&self, id: u64, kept: KeptVm) -> Option<Build> {
        kept.end(&self.logs).await;
        let mut rec = self.store.get_build(id).ok().flatten()?;
        rec.vm_gone();
        if let Some(dir) = rec.work_dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
        rec.build.attach_command = None;
        rec.build.message = format!("{} (kept VM ended by cancel)", rec.build.message);
        self.save(&rec);
        Some(rec.build)
    }

    /// Waits until the build is in a terminal state.
    pub async fn wait(&self, project: &str, id: u64) -> Result<Build, QueueError> {
        let mut rx = self.changes.subscribe();
        loop {
            let b = self.get(project, id)?;
            if b.state.is_terminal() {
                return Ok(b);
            }
            match rx.recv().await {
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return Ok(b),
            }
        }
    }

    /// Resolves once the build changes (for followers of a running build's serial log).
    pub fn changes(&self) -> broadcast::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Ends every running build and kept VM (daemon shutdown).
    pub async fn shutdown(&self) {
        let (tokens, kept): (Vec<_>, Vec<_>) = {
            let mut st = lock(&self.state);
            (
                st.running.values().cloned().collect(),
                st.kept.drain().collect(),
            )
        };
        for t in tokens {
            t.cancel();
        }
        for (_, k) in kept {
            k.end(&self.logs).await;
        }
        // Give pipelines a moment to clean up; a restarted daemon finishes what remains.
        for _ in 0..100 {
            if lock(&self.state).running.is_empty() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    /// A build's serial console: the VM's while it runs, else the copy kept with its logs.
    pub fn serial_path(&self, id: u64) -> PathBuf {
        let live = self
            .store
            .get_build(id)
            .ok()
            .flatten()
            .and_then(|r| r.console);
        match live {
            Some(live) if live.exists() => live,
            _ => self.logs.serial_path(id),
        }
    }
}
