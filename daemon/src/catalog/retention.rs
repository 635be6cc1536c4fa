//! Retention of gallery versions (EC2 Image Builder's lifecycle rules): per image definition,
//! `keep_latest` and `max_age_days`. A prune deprecates each version past them (never `latest`
//! again, still buildable when pinned) and deletes the versions an earlier prune deprecated,
//! never the highest one nor one a build holds or an instance runs.

use chrono::{DateTime, Utc};
use kiln_shared::names::gallery_version;
use kiln_shared::protocol::{Gallery, GalleryRef, PruneAction, Retention};

use super::galleries::{not_found, split_full, versions_of};
use super::{blocking, Catalog, CatalogError, ImageRecord, Requester, State};

pub(super) fn check(r: &Retention) -> Result<(), CatalogError> {
    if r.keep_latest == Some(0) || r.max_age_days == Some(0) {
        return Err(CatalogError::Invalid(
            "keep_latest and max_age_days are at least 1 (leave one out for no limit)".into(),
        ));
    }
    Ok(())
}

/// What a prune does to each version of one definition, highest first: `(image id, action)`.
/// `in_use` says who uses a version (a deprecated one in use is kept).
fn prune_plan(
    mut versions: Vec<(&ImageRecord, &GalleryRef)>,
    retention: Retention,
    now: DateTime<Utc>,
    in_use: impl Fn(&ImageRecord) -> Option<String>,
) -> Vec<(String, PruneAction)> {
    versions.retain(|(r, _)| r.state == State::Available);
    versions.sort_by_key(|(_, g)| std::cmp::Reverse(gallery_version(&g.version)));
    let mut out = Vec::new();
    for (rank, (r, g)) in versions.into_iter().enumerate() {
        let beyond_count = retention
            .keep_latest
            .filter(|&n| rank >= n as usize)
            .map(|n| format!("beyond keep_latest = {n}"));
        let age_days = (now - r.created_at).num_days();
        let too_old = retention
            .max_age_days
            .filter(|&d| age_days > i64::from(d))
            .map(|d| format!("{age_days} days old, max_age_days = {d}"));
        // The highest version always stays: never the last one.
        let Some(why) = beyond_count.or(too_old).filter(|_| rank > 0) else {
            continue;
        };
        let (action, reason) = match (g.deprecated_at, in_use(r)) {
            (None, _) => ("deprecate", why),
            (Some(_), Some(user)) => ("keep", format!("{why}, deprecated, but in use by {user}")),
            (Some(_), None) => ("delete", format!("{why}, deprecated by an earlier prune")),
        };
        out.push((
            r.id.clone(),
            PruneAction {
                version: r.name.clone(),
                action: action.into(),
                reason,
            },
        ));
    }
    out
}

impl Catalog {
    /// Sets the retention of `GALLERY/IMAGE` (applied by the next prune).
    pub async fn gallery_image_update(
        &self,
        who: &Requester,
        full: &str,
        retention: Retention,
    ) -> Result<Gallery, CatalogError> {
        let (gallery, image) = split_full(full)?;
        check(&retention)?;
        let (store, p, g, i) = (
            self.store.clone(),
            who.project.clone(),
            gallery.to_owned(),
            image.to_owned(),
        );
        let record = blocking(move || {
            store.update_gallery(&p, &g, |rec| {
                match rec.images.iter_mut().find(|d| d.name == i) {
                    Some(d) => {
                        d.retention = retention;
                        Ok(())
                    }
                    None => Err(CatalogError::NotFound {
                        project: p.clone(),
                        image: format!("gallery image {g}/{i}"),
                    }),
                }
            })
        })
        .await?
        .ok_or_else(|| not_found(&who.project, gallery))?;
        Ok(self.gallery_view(record, &self.all_images().await?))
    }

    /// Applies each definition's retention in gallery `name` of `project` (only `image`'s when
    /// given): deprecates versions past it, deletes those an earlier prune deprecated (never one
    /// a build or an instance uses), and returns what it did; with `dry_run`, only what it would.
    pub async fn gallery_prune(
        &self,
        project: &str,
        name: &str,
        image: Option<&str>,
        dry_run: bool,
    ) -> Result<Vec<PruneAction>, CatalogError> {
        let record = self.gallery_record(project, name).await?;
        let images = self.all_images().await?;
        let store = self.store.clone();
        let instances = blocking(move || Ok(store.list_instances()?)).await?;
        let in_use = |r: &ImageRecord| {
            let mut users: Vec<String> = instances
                .iter()
                .filter(|i| i.instance.image_id == r.id)
                .map(|i| {
                    format!(
                        "instance {} (project {})",
                        i.instance.name, i.instance.project
                    )
                })
                .collect();
            match self.leased(&r.id) {
                0 => {}
                n => users.push(format!("{n} build{}", if n == 1 { "" } else { "s" })),
            }
            (!users.is_empty()).then(|| users.join(", "))
        };
        let mut done = Vec::new();
        for d in record
            .images
            .iter()
            .filter(|d| image.is_none_or(|i| i == d.name))
        {
            let versions: Vec<_> = versions_of(&images, project, name, &d.name).collect();
            for (id, mut action) in prune_plan(versions, d.retention, Utc::now(), in_use) {
                if !dry_run {
                    match action.action.as_str() {
                        "deprecate" => {
                            self.update(&id, |r| {
                                if let Some(g) = r.gallery.as_mut() {
                                    g.deprecated_at = Some(Utc::now());
                                }
                                Ok(())
                            })
                            .await?;
                        }
                        "delete" => {
                            let Some(r) = images.iter().find(|r| r.id == id) else {
                                continue;
                            };
                            if let Err(e) = self.remove(r).await {
                                action.action = "keep".into();
                                action.reason = format!("{}; not deleted: {e}", action.reason);
                            }
                        }
                        _ => {}
                    }
                }
                tracing::info!(version = %action.version, action = %action.action, dry_run, "prune: {}", action.reason);
                done.push(action);
            }
        }
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::catalog::galleries::tests::version;

    #[test]
    fn prune_keeps_the_newest_deprecates_then_deletes_and_spares_what_is_in_use() {
        let now = Utc::now();
        let mut images: Vec<ImageRecord> = (0..5)
            .map(|p| {
                let mut r = version(&format!("1.0.{p}"), State::Available, false);
                r.created_at = now - chrono::Duration::days(10 - i64::from(p));
                r
            })
            .collect();
        // 1.0.1 was deprecated by an earlier prune, 1.0.0 too but an instance uses it.
        for i in [0, 1] {
            images[i].gallery.as_mut().unwrap().deprecated_at = Some(now);
        }
        let in_use = |r: &ImageRecord| (r.id == "img-1.0.0").then(|| "instance box".to_owned());
        let keep2 = Retention {
            keep_latest: Some(2),
            max_age_days: None,
        };
        let plan = prune_plan(
            versions_of(&images, "p", "g", "i").collect(),
            keep2,
            now,
            in_use,
        );
        let got: Vec<(&str, &str)> = plan
            .iter()
            .map(|(_, a)| (a.version.as_str(), a.action.as_str()))
            .collect();
        // Names are "g/i" in these records; the order is highest first.
        assert_eq!(
            got,
            [("g/i", "deprecate"), ("g/i", "delete"), ("g/i", "keep")]
        );
        assert_eq!(plan[0].0, "img-1.0.2");
        assert!(
            plan[2].1.reason.contains("in use by instance box"),
            "{:?}",
            plan[2]
        );
        // By age: 1.0.4 is 6 days old and the highest, so it stays even at max_age_days = 1.
        let young = Retention {
            keep_latest: None,
            max_age_days: Some(1),
        };
        let plan = prune_plan(
            versions_of(&images, "p", "g", "i").collect(),
            young,
            now,
            |_| None,
        );
        assert_eq!(plan.len(), 4);
        assert!(!plan.iter().any(|(id, _)| id == "img-1.0.4"));
        assert!(prune_plan(vec![], keep2, now, |_| None).is_empty());
    }
}
