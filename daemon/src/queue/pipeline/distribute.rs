//! Distributing a finished disk: each of the template's targets, its run output recorded
//! whether it worked or not.

use kiln_shared::build::RunOutput;
use kiln_shared::template::Distribute;

use super::Run;

impl Run {
    /// Publishes every target; true when all succeeded.
    pub(super) async fn distribute(&mut self, template: &kiln_shared::Template) -> bool {
        let Some(overlay) = self.disk.as_ref().and_then(|d| d.canonicalize().ok()) else {
            self.log.kiln("distribute: the build disk is missing");
            return false;
        };
        let mut all_ok = true;
        for target in &template.distribute {
            let name = target.run_output_name().to_string();
            // A new gallery version: its definition's retention is applied after it.
            let mut pruned: Option<(String, String)> = None;
            let result = match target {
                Distribute::Image { .. } => {
                    self.log.kiln(&format!(
                        "distribute {name}: image {:?} into the catalog (zstd qcow2)",
                        self.rec.build.image_name
                    ));
                    self.queue
                        .catalog
                        .publish_build(&overlay, &self.rec.build, template, self.login())
                        .await
                        .map(|img| RunOutput {
                            run_output_name: name.clone(),
                            kind: "image".into(),
                            artifact_id: img.id,
                            path: img.path,
                            size: img.file_size,
                            sha256: img.sha256,
                            error: None,
                        })
                        .map_err(|e| e.to_string())
                }
                Distribute::Export {
                    format,
                    path,
                    overwrite,
                    ..
                } => {
                    self.log
                        .kiln(&format!("distribute {name}: export {format} to {path}"));
                    self.queue
                        .catalog
                        .export(
                            &overlay,
                            format,
                            std::path::Path::new(path),
                            self.rec.started_by.as_ref(),
                            *overwrite,
                        )
                        .await
                        .map(|(p, size, sha256)| RunOutput {
                            run_output_name: name.clone(),
                            kind: "export".into(),
                            artifact_id: p.display().to_string(),
                            path: p.display().to_string(),
                            size,
                            sha256,
                            error: None,
                        })
                        .map_err(|e| e.to_string())
                }
                Distribute::Gallery {
                    gallery,
                    image,
                    version,
                    exclude_from_latest,
                    share_with,
                    ..
                } => {
                    self.log.kiln(&format!(
                        "distribute {name}: version {version} of gallery image {gallery}/{image} (zstd qcow2)"
                    ));
                    let target = crate::catalog::VersionTarget {
                        gallery: gallery.clone(),
                        image: image.clone(),
                        version: version.clone(),
                        exclude_from_latest: *exclude_from_latest,
                        share_with: share_with.clone(),
                    };
                    self.queue
                        .catalog
                        .publish_version(&overlay, &self.rec.build, template, target, self.login())
                        .await
                        .map(|img| {
                            self.log
                                .kiln(&format!("distribute {name}: published {}", img.name));
                            pruned = Some((gallery.clone(), image.clone()));
                            RunOutput {
                                run_output_name: name.clone(),
                                kind: "gallery".into(),
                                artifact_id: img.id,
                                path: img.path,
                                size: img.file_size,
                                sha256: img.sha256,
                                error: None,
                            }
                        })
                        .map_err(|e| e.to_string())
                }
            };
            let output = match result {
                Ok(o) => {
                    self.log.kiln(&format!(
                        "distribute {name}: {} ({} bytes, sha256 {})",
                        o.path, o.size, o.sha256
                    ));
                    o
                }
                Err(e) => {
                    all_ok = false;
                    self.log.kiln(&format!("distribute {name}: failed: {e}"));
                    RunOutput {
                        run_output_name: name.clone(),
                        kind: match target {
                            Distribute::Image { .. } => "image",
                            Distribute::Gallery { .. } => "gallery",
                            Distribute::Export { .. } => "export",
                        }
                        .into(),
                        artifact_id: String::new(),
                        path: String::new(),
                        size: 0,
                        sha256: String::new(),
                        error: Some(e),
                    }
                }
            };
            self.rec.build.run_outputs.push(output);
            self.save();
            if let Some((gallery, image)) = pruned {
                let project = self.rec.build.project.clone();
                match self
                    .queue
                    .catalog
                    .gallery_prune(&project, &gallery, Some(&image), false)
                    .await
                {
                    Ok(actions) => {
                        for a in actions {
                            self.log.kiln(&format!(
                                "distribute {name}: retention: {} {} ({})",
                                a.action, a.version, a.reason
                            ));
                        }
                    }
                    Err(e) => self
                        .log
                        .kiln(&format!("distribute {name}: retention not applied: {e}")),
                }
            }
        }
        all_ok
    }
}
