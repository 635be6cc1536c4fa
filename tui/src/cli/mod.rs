//! The scripting CLI: the argument grammar, dispatch to one module per noun, and the contract every
//! command keeps (one JSON document on stdout with `--json`, errors on stderr, exit codes 0/1/2).

pub mod build;
pub mod daemon;
pub mod editor;
pub mod gallery;
pub mod image;
mod image_details;
mod image_sources;
pub mod instance;
pub mod output;
pub mod project;
pub mod template;
mod template_azure;
pub mod template_file;
pub mod template_trigger;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use kiln_shared::client::{Client, ClientError};
use kiln_shared::methods::Method;
use kiln_shared::protocol::ErrorKind;
use kiln_shared::Violation;
use serde_json::Value;

/// Exit code of a usage error (clap's own, and refusals such as `delete` without `--yes`).
pub const EXIT_USAGE: u8 = 2;
/// Exit code of every other failure.
pub const EXIT_FAILURE: u8 = 1;

#[derive(Debug, Parser)]
#[command(
    name = "kiln",
    version,
    about = "Build virtual machine images from image templates (client of kilnd)",
    long_about = "Build virtual machine images from image templates.\n\n\
        Run bare to open the dashboard; with a subcommand, kiln is a scripting CLI. Every command \
        takes --json and then prints one JSON document on stdout; errors go to stderr \
        (as {\"error\": {...}} with --json). Exit codes: 0 ok, 1 error, 2 usage error."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Options every command takes.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// kilnd's socket [default: $XDG_RUNTIME_DIR/kiln/kiln.sock, or /run/kiln/kiln.sock as root]
    #[arg(long, global = true, env = "KILN_SOCKET", value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Project to act in [default: default]
    #[arg(long, global = true, env = "KILN_PROJECT", value_name = "NAME")]
    pub project: Option<String>,
    /// Print the result as one JSON document on stdout (errors as JSON on stderr)
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create, show, list, edit, export, validate and delete image templates
    #[command(subcommand)]
    Template(template::TemplateCommand),
    /// Start builds, list them, show one, read its logs, wait for it, cancel it
    #[command(subcommand)]
    Build(build::BuildCommand),
    /// List, show, share, delete, import and bootstrap images
    #[command(subcommand)]
    Image(image::ImageCommand),
    /// Run images as VMs, log in, stop, start and delete them
    #[command(subcommand)]
    Instance(instance::InstanceCommand),
    /// Galleries: image definitions (GALLERY/IMAGE) and their numbered versions
    #[command(subcommand)]
    Gallery(gallery::GalleryCommand),
    /// Ask kilnd about itself
    #[command(subcommand)]
    Daemon(daemon::DaemonCommand),
    /// List the projects kilnd knows and whether you may act in them
    #[command(subcommand)]
    Project(project::ProjectCommand),
    /// Print a shell completion script
    ///
    /// For example: `kiln completions bash > ~/.local/share/bash-completion/completions/kiln`.
    Completions {
        #[arg(value_enum)]
        shell: CompletionShell,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}

/// The global options with their defaults applied.
#[derive(Debug, Clone)]
pub struct Settings {
    pub socket: PathBuf,
    pub project: String,
    pub json: bool,
}

impl Settings {
    pub fn from_args(args: &GlobalArgs) -> Settings {
        Settings {
            socket: args
                .socket
                .clone()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or_else(kiln_shared::paths::client_socket_path),
            project: args
                .project
                .clone()
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| kiln_shared::protocol::DEFAULT_PROJECT.to_string()),
            json: args.json,
        }
    }

    /// Opens a connection to kilnd acting in the chosen project.
    pub async fn connect(&self) -> Result<Client, Failure> {
        let (client, _notifications) =
            Client::connect(&self.socket, Some(self.project.clone())).await?;
        Ok(client)
    }
}

/// Why a command failed, in the shape it is shown: a stable `kind`, a message a person can act on,
/// and the violations of a template (with the file they are about, when there is one).
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// One of the daemon's error kinds (`not_found`, `invalid_template`, ...) or a client-side
    /// one: `usage`, `io` (a local file or the editor), `unavailable` (cannot reach kilnd),
    /// `protocol` (a reply kiln does not understand), `declined` (answered no to a question).
    pub kind: String,
    pub message: String,
    pub violations: Vec<Violation>,
    /// The template file the violations are about, shown as `FILE: path: message`.
    pub file: Option<String>,
    pub exit: u8,
}

impl Failure {
    pub fn new(kind: &str, message: impl Into<String>) -> Failure {
        Failure {
            kind: kind.to_string(),
            message: message.into(),
            violations: Vec::new(),
            file: None,
            exit: EXIT_FAILURE,
        }
    }

    pub fn usage(message: impl Into<String>) -> Failure {
        Failure {
            exit: EXIT_USAGE,
            ..Failure::new("usage", message)
        }
    }

    pub fn io(message: impl Into<String>) -> Failure {
        Failure::new("io", message)
    }

    /// A template that kiln rejected before sending it.
    pub fn invalid_template(file: &str, violations: Vec<Violation>) -> Failure {
        let n = violations.len();
        Failure {
            violations,
            file: Some(file.to_string()),
            ..Failure::new(
                ErrorKind::InvalidTemplate.as_str(),
                format!(
                    "{file}: invalid template ({n} {})",
                    plural(n, "problem", "problems")
                ),
            )
        }
    }

    /// Names the file the violations are about.
    pub fn in_file(mut self, file: &str) -> Failure {
        self.file = Some(file.to_string());
        self
    }
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Failure {
        match e {
            ClientError::Rpc(rpc) => Failure {
                violations: rpc.data.violations.clone(),
                ..Failure::new(rpc.data.kind.as_str(), rpc.message)
            },
            e @ (ClientError::Connect { .. }
            | ClientError::Untrusted { .. }
            | ClientError::Io(_)
            | ClientError::Closed) => Failure::new(ErrorKind::Unavailable.as_str(), e.to_string()),
            e @ (ClientError::Protocol(_) | ClientError::Result { .. }) => {
                Failure::new("protocol", e.to_string())
            }
        }
    }
}

/// What a command returns: the exit code it wants, or why it failed.
pub type CmdResult = Result<ExitCode, Failure>;

/// Runs one subcommand to the end and returns the process's exit code.
pub fn run(settings: &Settings, command: Command) -> ExitCode {
    // Completions need neither a runtime nor the daemon, nor a project.
    let project = match command {
        Command::Completions { .. } => Ok(()),
        _ => check_name("--project", &settings.project),
    };
    let result = project.and_then(|()| match command {
        Command::Completions { shell } => completions(shell),
        Command::Template(cmd) => block_on(template::run(settings, cmd)),
        Command::Image(cmd) => block_on(image::run(settings, cmd)),
        Command::Build(cmd) => block_on(build::run(settings, cmd)),
        Command::Instance(cmd) => block_on(instance::run(settings, cmd)),
        Command::Gallery(cmd) => block_on(gallery::run(settings, cmd)),
        Command::Daemon(cmd) => block_on(daemon::run(settings, cmd)),
        Command::Project(cmd) => block_on(project::run(settings, cmd)),
    });
    match result {
        Ok(code) => code,
        Err(failure) => {
            output::report_failure(&failure, settings.json);
            ExitCode::from(failure.exit)
        }
    }
}

fn block_on(fut: impl std::future::Future<Output = CmdResult>) -> CmdResult {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::new("internal", format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(fut)
}

fn completions(shell: CompletionShell) -> CmdResult {
    let shell = match shell {
        CompletionShell::Bash => clap_complete::Shell::Bash,
        CompletionShell::Zsh => clap_complete::Shell::Zsh,
        CompletionShell::Fish => clap_complete::Shell::Fish,
    };
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "kiln", &mut script);
    output::print(&String::from_utf8_lossy(&script));
    Ok(ExitCode::SUCCESS)
}

/// Calls method `M` and returns the raw result (printed as is with `--json`) and its typed form.
pub async fn call<M: Method>(
    client: &Client,
    params: &M::Params,
) -> Result<(Value, M::Result), Failure> {
    Ok(client.call_both::<M>(params).await?)
}

/// A name given on the command line, checked with kiln-shared's one rule for names before
/// anything is sent: a usage error naming the option, with the rule's message.
pub fn check_name(option: &str, name: &str) -> Result<(), Failure> {
    kiln_shared::names::check(name).map_err(|e| Failure::usage(format!("{option} {e}")))
}

pub fn plural<'a>(n: usize, one: &'a str, many: &'a str) -> &'a str {
    if n == 1 {
        one
    } else {
        many
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_shared::protocol::RpcError;

    #[test]
    fn grammar_is_consistent() {
        Cli::command().debug_assert();
    }

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("kiln").chain(args.iter().copied()))
    }

    #[test]
    fn global_options_go_anywhere() {
        let cli = parse(&["template", "list", "--json", "--project", "web"]).expect("parses");
        assert!(cli.global.json);
        assert_eq!(cli.global.project.as_deref(), Some("web"));
        let cli = parse(&["--json", "daemon", "status"]).expect("parses");
        assert!(cli.global.json);
    }

    #[test]
    fn usage_errors_exit_2() {
        let err = parse(&["template", "create"]).expect_err("needs -f");
        assert_eq!(err.exit_code(), 2);
        let err = parse(&["template", "show", "x", "--revision", "abc"]).expect_err("not a number");
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn empty_project_and_socket_fall_back_to_defaults() {
        let settings = Settings::from_args(&GlobalArgs {
            socket: Some(PathBuf::new()),
            project: Some(String::new()),
            json: false,
        });
        assert_eq!(settings.project, "default");
        assert!(!settings.socket.as_os_str().is_empty());
    }

    #[test]
    fn names_are_checked_before_anything_is_sent() {
        let f = check_name("--image-name", "web\u{200b}").expect_err("zero width");
        assert_eq!((f.kind.as_str(), f.exit), ("usage", EXIT_USAGE));
        assert!(
            f.message
                .starts_with(r#"--image-name "web\u{200b}" contains U+200B"#),
            "{}",
            f.message
        );
        assert_eq!(check_name("--name", "web base $(id)"), Ok(()));
        // A bad --project is a usage error before kiln connects (nothing listens here).
        let settings = Settings {
            socket: PathBuf::from("/nonexistent/kiln.sock"),
            project: "..".into(),
            json: true,
        };
        let code = run(&settings, Command::Daemon(daemon::DaemonCommand::Status));
        assert_eq!(code, ExitCode::from(EXIT_USAGE));
    }

    #[test]
    fn daemon_errors_keep_kind_and_violations() {
        let rpc = RpcError::invalid_template(
            "template is invalid",
            vec![Violation {
                path: "os".into(),
                message: "required".into(),
            }],
        );
        let f = Failure::from(ClientError::Rpc(rpc));
        assert_eq!(f.kind, "invalid_template");
        assert_eq!(f.message, "template is invalid");
        assert_eq!(f.violations.len(), 1);
        assert_eq!(f.exit, 1);
        let f = Failure::from(ClientError::Closed);
        assert_eq!(f.kind, "unavailable");
    }
}
