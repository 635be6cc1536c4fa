//! `kiln template trigger NAME --on|--off`: switches a template's `[trigger]` in one command,
//! as a new revision; and the line `kiln template show` prints about it.

use std::process::ExitCode;

use kiln_shared::methods as m;
use kiln_shared::protocol::{TemplateRef, TemplateUpdateParams};
use kiln_shared::Template;

use super::template::{get, say, to_wire};
use super::{call, output, CmdResult, Settings};

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("switch").required(true).args(["on", "off"])))]
pub struct TriggerArgs {
    name: String,
    /// Rebuild on each new base version
    #[arg(long)]
    on: bool,
    /// Stop rebuilding (the image name pattern is kept)
    #[arg(long)]
    off: bool,
    /// The image name pattern, e.g. 'web-{version}' (required the first time with --on)
    #[arg(long, value_name = "PATTERN")]
    image_name: Option<String>,
}

/// One comment line saying what the template's trigger does, or nothing when it has none.
pub fn comment(t: &Template) -> String {
    match t.trigger_summary() {
        Some(line) => format!("# trigger: {line}\n"),
        None => String::new(),
    }
}

/// `kiln template trigger NAME --on|--off`: a new revision with the trigger switched.
pub async fn run(settings: &Settings, args: TriggerArgs) -> CmdResult {
    let TriggerArgs {
        name,
        on,
        off: _,
        image_name,
    } = args;
    let name = name.as_str();
    let client = settings.connect().await?;
    let (_, record) = get(&client, name, None).await?;
    let mut template = record.template.clone();
    template.trigger.on_base_change = on;
    if let Some(pattern) = image_name {
        template.trigger.image_name = pattern;
    }
    if template == record.template {
        say(
            settings,
            &format!(
                "the trigger of {name} is {} already; nothing stored",
                if on { "on" } else { "off" }
            ),
        );
        if settings.json {
            output::print_json(&TemplateRef {
                name: name.to_string(),
                revision: record.revision,
            });
        }
        return Ok(ExitCode::SUCCESS);
    }
    let params = TemplateUpdateParams {
        name: name.to_string(),
        template: to_wire(&template)?,
        expected_revision: Some(record.revision),
    };
    let (value, stored) = call::<m::TemplateUpdate>(&client, &params).await?;
    if settings.json {
        output::print_json(&value);
    } else {
        output::println(&format!(
            "updated {} revision {}: trigger {}",
            stored.name,
            stored.revision,
            template.trigger_summary().unwrap_or_else(|| "off".into())
        ));
    }
    Ok(ExitCode::SUCCESS)
}
