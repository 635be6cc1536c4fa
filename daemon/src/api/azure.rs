//! `template.import_azure`: maps an Azure Image Builder template (kiln_shared::azure) and stores
//! it as a new template, with the same checks and errors as `template.create`.

use kiln_shared::azure;
use kiln_shared::protocol::{
    RpcError, TemplateImportAzureParams, TemplateImportAzureResult, TemplateRef,
};

use super::dispatch::{blocking, Daemon};
use crate::access::Peer;

pub async fn import(
    d: &Daemon,
    peer: &Peer,
    project: &str,
    p: TemplateImportAzureParams,
) -> Result<TemplateImportAzureResult, RpcError> {
    let imported = azure::import(
        &p.azure,
        p.parameters.as_ref(),
        p.name.as_deref(),
        p.base_image.as_deref(),
        &d.apps,
    )
    .map_err(|violations| {
        let n = violations.len();
        RpcError::invalid_template(
            format!(
                "the Azure template cannot be imported: {n} problem{}",
                if n == 1 { "" } else { "s" }
            ),
            violations,
        )
    })?;
    let stored = if p.dry_run {
        None
    } else {
        let t = imported.template.clone();
        let name = t.name.clone();
        let (store, owner, by) = (d.store.clone(), project.to_string(), peer.user.clone());
        let revision = blocking(move || store.create_template(&owner, &t, Some(&by))).await?;
        d.template_changed(project, &name);
        Some(TemplateRef { name, revision })
    };
    Ok(TemplateImportAzureResult {
        template: imported.template,
        warnings: imported.warnings,
        stored,
    })
}
