//! The `instance.*` methods and `image.create_from_instance`, over `crate::instances`.

use std::sync::Arc;

use kiln_shared::build::SubReply;
use kiln_shared::methods::Empty;
use kiln_shared::protocol::{
    ErrorKind, ImageFromInstanceParams, ImageResult, InstanceConsoleParams, InstanceList,
    InstanceParams, InstanceReply, InstanceRunParams, InstanceState, RpcError,
};

use super::builds::{FollowUp, Sink};
use super::dispatch::Daemon;
use super::images::Progress;
use crate::catalog::Requester;
use crate::instances::InstanceError;

impl From<InstanceError> for RpcError {
    fn from(e: InstanceError) -> RpcError {
        let kind = match &e {
            InstanceError::NotFound { .. } => ErrorKind::NotFound,
            InstanceError::Conflict(_) => ErrorKind::Conflict,
            InstanceError::Invalid(_) => ErrorKind::InvalidParams,
            InstanceError::Limit(_) => ErrorKind::Conflict,
            InstanceError::Catalog(c) => return RpcError::new(c.kind(), c.to_string()),
            InstanceError::Store(_) | InstanceError::Driver(_) => ErrorKind::Internal,
        };
        RpcError::new(kind, e.to_string())
    }
}

pub async fn run(
    d: &Daemon,
    who: &Requester,
    p: InstanceRunParams,
) -> Result<InstanceReply, RpcError> {
    Ok(InstanceReply {
        instance: d.instances.run(who, p).await?,
    })
}

pub fn list(d: &Daemon, project: &str) -> Result<InstanceList, RpcError> {
    Ok(InstanceList {
        instances: d.instances.list(project)?,
    })
}

pub fn get(d: &Daemon, project: &str, p: InstanceParams) -> Result<InstanceReply, RpcError> {
    Ok(InstanceReply {
        instance: d.instances.get(project, &p.name)?,
    })
}

pub async fn stop(d: &Daemon, project: &str, p: InstanceParams) -> Result<InstanceReply, RpcError> {
    Ok(InstanceReply {
        instance: d.instances.stop(project, &p.name, p.force).await?,
    })
}

pub async fn start(
    d: &Daemon,
    project: &str,
    p: InstanceParams,
) -> Result<InstanceReply, RpcError> {
    Ok(InstanceReply {
        instance: d.instances.start(project, &p.name).await?,
    })
}

pub async fn restart(
    d: &Daemon,
    project: &str,
    p: InstanceParams,
) -> Result<InstanceReply, RpcError> {
    Ok(InstanceReply {
        instance: d.instances.restart(project, &p.name, p.force).await?,
    })
}

pub async fn delete(d: &Daemon, project: &str, p: InstanceParams) -> Result<Empty, RpcError> {
    d.instances.delete(project, &p.name).await?;
    Ok(Empty {})
}

/// `instance.console`: the serial console's lines as `build.log` notifications, then
/// `build.log.end` (with `follow`, once the instance is no longer running).
pub fn console(
    d: &Daemon,
    project: &str,
    p: InstanceConsoleParams,
    sink: &Sink,
    follow_up: &mut Option<FollowUp>,
) -> Result<SubReply, RpcError> {
    let path = d.instances.console(project, &p.name)?;
    let instances = d.instances.clone();
    let (project, name) = (project.to_owned(), p.name.clone());
    let running = move || {
        instances.get(&project, &name).is_ok_and(|i| {
            matches!(
                i.state,
                InstanceState::Starting | InstanceState::Running | InstanceState::Stopping
            )
        })
    };
    super::builds::stream_file(path, Arc::new(running), p.follow, sink, follow_up)
}

pub async fn capture(
    d: &Daemon,
    who: &Requester,
    p: ImageFromInstanceParams,
    progress: &Progress,
) -> Result<ImageResult, RpcError> {
    let say = progress.say();
    Ok(ImageResult {
        image: d.instances.capture(who, p, say).await?,
    })
}
