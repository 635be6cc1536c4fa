//! `kiln project ...`: the projects kilnd's config defines and whether the caller is in them.

use std::process::ExitCode;

use clap::Subcommand;
use kiln_shared::methods::{self as m, Empty};
use kiln_shared::protocol::ProjectInfo;

use super::output::{self, Column, Table};
use super::{call, CmdResult, Settings};

#[derive(Debug, Subcommand)]
pub enum ProjectCommand {
    /// List the projects, their users and groups, and whether you may act in each
    #[command(visible_alias = "ls")]
    List,
}

pub async fn run(settings: &Settings, command: ProjectCommand) -> CmdResult {
    match command {
        ProjectCommand::List => list(settings).await,
    }
}

/// The `project list` table.
pub fn project_table(projects: &[ProjectInfo]) -> Table {
    let mut table = Table::new(vec![
        Column::flexible("NAME", 12),
        Column::fixed("MEMBER", output::Align::Left),
        Column::flexible("USERS", 10),
        Column::flexible("GROUPS", 10),
    ]);
    let dash = |v: &[String]| {
        if v.is_empty() {
            "-".to_string()
        } else {
            v.join(",")
        }
    };
    for p in projects {
        table.push(vec![
            p.name.clone(),
            if p.member { "yes" } else { "no" }.to_string(),
            dash(&p.users),
            dash(&p.groups),
        ]);
    }
    table
}

async fn list(settings: &Settings) -> CmdResult {
    let client = settings.connect().await?;
    let (value, list) = call::<m::ProjectList>(&client, &Empty {}).await?;
    if settings.json {
        output::print_json(&value);
    } else {
        output::print_table(&project_table(&list.projects));
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_rows() {
        let projects = vec![
            ProjectInfo {
                name: "default".into(),
                users: vec![],
                groups: vec![],
                member: true,
            },
            ProjectInfo {
                name: "web".into(),
                users: vec!["alice".into(), "bob".into()],
                groups: vec!["webteam".into()],
                member: false,
            },
        ];
        assert_eq!(
            project_table(&projects).render(80, false),
            "NAME     MEMBER  USERS      GROUPS\n\
             default  yes     -          -\n\
             web      no      alice,bob  webteam\n"
        );
    }
}
