//! `kiln instance ...`: run an image as a VM, log in with the system `ssh` (host key pinned),
//! read its console, list, show, stop, start, restart and delete instances; and `kiln image
//! create --from-instance`, which captures a stopped one.

use std::io::IsTerminal;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;
use kiln_shared::client::Client;
use kiln_shared::methods as m;
use kiln_shared::protocol::{
    ImageFromInstanceParams, Instance, InstanceConsoleParams, InstanceParams, InstanceRunParams,
};

use super::output::{self, local_time, local_time_long, Align, Column, Table};
use super::{call, check_name, CmdResult, Failure, Settings};

#[derive(Debug, Subcommand)]
pub enum InstanceCommand {
    /// Run an image (public, private or shared) as a VM you log in to with your SSH key
    Run {
        /// The image, by name or id
        image: String,
        #[arg(long)]
        name: String,
        #[arg(long)]
        cpus: Option<u32>,
        #[arg(long)]
        memory_mb: Option<u32>,
        /// Disk size in GiB (never less than the image's)
        #[arg(long)]
        disk_gb: Option<u64>,
        /// Public key the image's default user gets [default: ~/.ssh/id_ed25519.pub, then
        /// ~/.ssh/id_rsa.pub]
        #[arg(long, value_name = "FILE")]
        ssh_key: Option<PathBuf>,
        /// Return once it is running (sshd answers with its pinned host key), or failed
        #[arg(long)]
        wait: bool,
    },
    /// Log in with ssh (the instance's host key pinned, the right port and user)
    Ssh {
        name: String,
        /// The private key to log in with [default: ssh's own; when $HOME is not your passwd
        /// home, where ssh looks, the private half of the key `instance run` gives by default]
        #[arg(short = 'i', long, value_name = "FILE")]
        identity: Option<PathBuf>,
        /// A command to run instead of a login shell
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// Print the serial console (with -f, follow it while the instance runs)
    Console {
        name: String,
        #[arg(short, long)]
        follow: bool,
    },
    /// List the project's instances
    #[command(visible_alias = "ls")]
    List,
    /// Show one instance in full
    Show { name: String },
    /// Power it off (ACPI; killed after 120 s, or at once with --force)
    Stop {
        name: String,
        #[arg(long)]
        force: bool,
    },
    /// Start a stopped instance again, on the disk it had
    Start { name: String },
    /// Stop, then start
    Restart {
        name: String,
        #[arg(long)]
        force: bool,
    },
    /// Delete an instance: its VM is killed and every file of it removed
    #[command(visible_alias = "rm")]
    Delete {
        name: String,
        /// Do not ask for confirmation (needed when stdin is not a terminal)
        #[arg(short = 'y', long)]
        yes: bool,
    },
}

pub async fn run(settings: &Settings, command: InstanceCommand) -> CmdResult {
    match command {
        InstanceCommand::Run {
            image,
            name,
            cpus,
            memory_mb,
            disk_gb,
            ssh_key,
            wait,
        } => {
            check_name("--name", &name)?;
            let key_file = match ssh_key {
                Some(f) => f,
                None => crate::ssh_key::default_file()
                    .map_err(|e| Failure::usage(format!("{e} or pass --ssh-key FILE")))?,
            };
            let ssh_public_key =
                crate::ssh_key::read(&key_file).map_err(|e| Failure::io(e.to_string()))?;
            let params = InstanceRunParams {
                image,
                name,
                cpus,
                memory_mb,
                disk_gb,
                ssh_public_key,
            };
            let client = settings.connect().await?;
            let (mut value, mut reply) = call::<m::InstanceRun>(&client, &params).await?;
            if wait {
                (value, reply) = until_up(&client, &reply.instance.name).await?;
            }
            print_one(settings, &value, &reply.instance, "started");
            if reply.instance.state == kiln_shared::protocol::InstanceState::Failed {
                return Err(Failure::new(
                    "failed",
                    format!(
                        "instance {} failed: {}",
                        reply.instance.name, reply.instance.message
                    ),
                ));
            }
            Ok(ExitCode::SUCCESS)
        }
        InstanceCommand::Ssh {
            name,
            identity,
            command,
        } => ssh(settings, &name, identity.as_deref(), &command).await,
        InstanceCommand::Console { name, follow } => {
            let (client, mut notes) =
                Client::connect(&settings.socket, Some(settings.project.clone())).await?;
            let params = InstanceConsoleParams { name, follow };
            let (_, reply) = call::<m::InstanceConsole>(&client, &params).await?;
            super::build::print_notes(settings, &mut notes, reply.sub, false).await?;
            Ok(ExitCode::SUCCESS)
        }
        InstanceCommand::List => {
            let client = settings.connect().await?;
            let (value, list) = call::<m::InstanceList>(&client, &m::Empty {}).await?;
            if settings.json {
                output::print_json(&value);
            } else {
                output::print_table(&table(&list.instances));
            }
            Ok(ExitCode::SUCCESS)
        }
        InstanceCommand::Show { name } => {
            let client = settings.connect().await?;
            let (value, reply) = call::<m::InstanceGet>(&client, &named(&name, false)).await?;
            if settings.json {
                output::print_json(&value);
            } else {
                output::print(&details(&reply.instance));
            }
            Ok(ExitCode::SUCCESS)
        }
        InstanceCommand::Stop { name, force } => {
            let client = settings.connect().await?;
            let (value, reply) = call::<m::InstanceStop>(&client, &named(&name, force)).await?;
            print_one(settings, &value, &reply.instance, "stopped");
            Ok(ExitCode::SUCCESS)
        }
        InstanceCommand::Start { name } => {
            let client = settings.connect().await?;
            let (value, reply) = call::<m::InstanceStart>(&client, &named(&name, false)).await?;
            print_one(settings, &value, &reply.instance, "started");
            Ok(ExitCode::SUCCESS)
        }
        InstanceCommand::Restart { name, force } => {
            let client = settings.connect().await?;
            let (value, reply) = call::<m::InstanceRestart>(&client, &named(&name, force)).await?;
            print_one(settings, &value, &reply.instance, "restarted");
            Ok(ExitCode::SUCCESS)
        }
        InstanceCommand::Delete { name, yes } => delete(settings, &name, yes).await,
    }
}

/// Polls until the instance is no longer `starting`.
async fn until_up(
    client: &Client,
    name: &str,
) -> Result<(serde_json::Value, kiln_shared::protocol::InstanceReply), Failure> {
    loop {
        let got = call::<m::InstanceGet>(client, &named(name, false)).await?;
        if got.1.instance.state != kiln_shared::protocol::InstanceState::Starting {
            return Ok(got);
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

fn named(name: &str, force: bool) -> InstanceParams {
    InstanceParams {
        name: name.to_owned(),
        force,
    }
}

/// The one-line answer of run/stop/start/restart, or the instance as JSON.
fn print_one(settings: &Settings, value: &serde_json::Value, i: &Instance, did: &str) {
    if settings.json {
        output::print_json(value);
    } else {
        output::println(&format!(
            "{did} instance {} ({}): {}; ssh: kiln instance ssh {}{}",
            i.name,
            i.image,
            i.state,
            i.name,
            if i.message.is_empty() {
                String::new()
            } else {
                format!(" ({})", i.message)
            }
        ));
    }
}

pub fn table(instances: &[Instance]) -> Table {
    let mut t = Table::new(vec![
        Column::flexible("NAME", 8),
        Column::flexible("IMAGE", 8),
        Column::fixed("STATE", Align::Left),
        Column::fixed("CPUS", Align::Right),
        Column::fixed("MEMORY", Align::Right),
        Column::fixed("SSH", Align::Right),
        Column::fixed("STARTED", Align::Left),
    ]);
    for i in instances {
        t.push(vec![
            i.name.clone(),
            i.image.clone(),
            i.state.to_string(),
            i.cpus.to_string(),
            format!("{} MB", i.memory_mb),
            if i.ssh.port == 0 {
                "-".into()
            } else {
                format!("127.0.0.1:{}", i.ssh.port)
            },
            i.started_at.as_ref().map_or("-".into(), local_time),
        ]);
    }
    t
}

pub fn details(i: &Instance) -> String {
    let rows = [
        ("name", i.name.clone()),
        ("project", i.project.clone()),
        ("image", format!("{} ({})", i.image, i.image_id)),
        ("os", i.os.clone()),
        ("state", i.state.to_string()),
        ("cpus", i.cpus.to_string()),
        ("memory", format!("{} MB", i.memory_mb)),
        ("disk", format!("{} GiB", i.disk_gb)),
        (
            "ssh",
            format!("{}@{} port {}", i.ssh.user, i.ssh.host, i.ssh.port),
        ),
        ("host key", i.ssh.host_key.clone()),
        ("created", local_time_long(&i.created_at)),
        (
            "started",
            i.started_at.as_ref().map_or("-".into(), local_time_long),
        ),
        ("owner uid", i.owner.to_string()),
        ("message", i.message.clone()),
    ];
    rows.iter()
        .map(|(k, v)| format!("{:<13} {v}\n", format!("{k}:")))
        .collect()
}

/// The known_hosts file pinning instance `name`'s host key on its port, written for `ssh`.
fn known_hosts(settings: &Settings, i: &Instance) -> Result<PathBuf, Failure> {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    let dir = home.join(".cache/kiln/known_hosts");
    std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)))
        .map_err(|e| Failure::io(format!("cannot make {}: {e}", dir.display())))?;
    let file = dir.join(format!("{}.{}", settings.project, i.name));
    let line = format!("[{}]:{} {}\n", i.ssh.host, i.ssh.port, i.ssh.host_key);
    std::fs::write(&file, line)
        .map_err(|e| Failure::io(format!("cannot write {}: {e}", file.display())))?;
    Ok(file)
}

/// The `ssh` command line that logs in to `i` with its host key pinned by `known_hosts`.
pub fn ssh_args(i: &Instance, known_hosts: &Path, identity: Option<&Path>) -> Vec<String> {
    let mut args = vec![
        "-p".to_string(),
        i.ssh.port.to_string(),
        "-o".into(),
        format!("UserKnownHostsFile={}", known_hosts.display()),
        "-o".into(),
        "GlobalKnownHostsFile=/dev/null".into(),
        "-o".into(),
        "StrictHostKeyChecking=yes".into(),
    ];
    if let Some(key) = identity {
        args.extend(["-i".into(), key.display().to_string()]);
        args.extend(["-o".into(), "IdentitiesOnly=yes".into()]);
    }
    args.push(format!("{}@{}", i.ssh.user, i.ssh.host));
    args
}

async fn ssh(
    settings: &Settings,
    name: &str,
    identity: Option<&Path>,
    command: &[String],
) -> CmdResult {
    let client = settings.connect().await?;
    let (_, reply) = call::<m::InstanceGet>(&client, &named(name, false)).await?;
    let i = reply.instance;
    if i.ssh.port == 0 || i.state != kiln_shared::protocol::InstanceState::Running {
        return Err(Failure::new(
            "conflict",
            format!(
                "instance {name} is {}; ssh works once it is running (`kiln instance show {name}`)",
                i.state
            ),
        ));
    }
    let file = known_hosts(settings, &i)?;
    let mut args = ssh_args(&i, &file, identity);
    if identity.is_none() {
        if let Some(key) = crate::ssh_key::login_identity() {
            // As with -i, but without IdentitiesOnly: agent keys and the ssh config's
            // IdentityFile are still tried too.
            args.splice(0..0, ["-i".to_string(), key.display().to_string()]);
        }
    }
    // After the destination, ssh takes every word as the remote command.
    args.extend(command.iter().cloned());
    let status = std::process::Command::new("ssh")
        .args(&args)
        .status()
        .map_err(|e| Failure::new("unavailable", format!("cannot run ssh: {e}")))?;
    Ok(ExitCode::from(
        status.code().unwrap_or(255).clamp(0, 255) as u8
    ))
}

async fn delete(settings: &Settings, name: &str, yes: bool) -> CmdResult {
    if !yes && !std::io::stdin().is_terminal() {
        return Err(Failure::usage(format!(
            "not deleting instance {name}: stdin is not a terminal to confirm on; pass --yes"
        )));
    }
    let client = settings.connect().await?;
    let (_, reply) = call::<m::InstanceGet>(&client, &named(name, false)).await?;
    let i = reply.instance;
    let question = format!(
        "Delete instance {} ({}, {})? Its disk and every file go. [y/N] ",
        i.name, i.image, i.state
    );
    if !yes && !output::confirm(&question)? {
        return Err(Failure::new(
            "declined",
            format!("instance {name} not deleted"),
        ));
    }
    let (value, _) = call::<m::InstanceDelete>(&client, &named(name, true)).await?;
    if settings.json {
        output::print_json(&value);
    } else {
        output::println(&format!("deleted instance {name}"));
    }
    Ok(ExitCode::SUCCESS)
}

/// `kiln image create --from-instance NAME --name IMAGE`: progress on stderr as it goes.
pub async fn create_image(
    settings: &Settings,
    instance: &str,
    name: &str,
    generalize: bool,
    description: Option<String>,
) -> CmdResult {
    check_name("--name", name)?;
    let params = ImageFromInstanceParams {
        instance: instance.to_owned(),
        name: name.to_owned(),
        generalize,
        description,
    };
    let (value, result, _) =
        super::image::with_progress::<m::ImageCreateFromInstance>(settings, &params).await?;
    if settings.json {
        output::print_json(&value);
    } else {
        output::println(&format!(
            "created image {} ({}) from instance {instance}",
            result.image.name, result.image.id
        ));
    }
    Ok(ExitCode::SUCCESS)
}
