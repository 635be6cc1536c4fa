//! The `images` table: image records by id, name lookup within what a project can see, and
//! read-check-write updates in one transaction (the catalog's state transitions).

use kiln_shared::protocol::Visibility;
use redb::{ReadableDatabase, ReadableTable};

use super::ImageRecord;
use super::{db_err, decode, encode, Store, StoreError, IMAGES};

impl Store {
    /// Writes `record` under its id, replacing what was there.
    pub fn put_image(&self, record: &ImageRecord) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(db_err)?;
        tx.open_table(IMAGES)
            .map_err(db_err)?
            .insert(record.id.as_str(), encode(record).as_slice())
            .map_err(db_err)?;
        tx.commit().map_err(db_err)
    }

    /// Inserts `record` after `check` accepted the images stored so far (and perhaps completed
    /// the record from them, as a gallery version takes its number), in one transaction, so two
    /// concurrent inserts cannot both pass a uniqueness check. An error from `check` stores
    /// nothing. Returns the record as stored.
    pub fn insert_image_checked<E: From<StoreError>>(
        &self,
        record: &ImageRecord,
        check: impl FnOnce(&[ImageRecord], &mut ImageRecord) -> Result<(), E>,
    ) -> Result<ImageRecord, E> {
        let tx = self.db.begin_write().map_err(db_err)?;
        let mut record = record.clone();
        {
            let mut table = tx.open_table(IMAGES).map_err(db_err)?;
            let existing = all_images(&table)?;
            check(&existing, &mut record)?;
            table
                .insert(record.id.as_str(), encode(&record).as_slice())
                .map_err(db_err)?;
        }
        tx.commit().map_err(db_err)?;
        Ok(record)
    }

    pub fn get_image(&self, id: &str) -> Result<Option<ImageRecord>, StoreError> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let table = tx.open_table(IMAGES).map_err(db_err)?;
        let found = table.get(id).map_err(db_err)?;
        found
            .map(|v| decode(v.value(), || format!("image {id}")))
            .transpose()
    }

    /// Every image of every project, in id order.
    pub fn list_images(&self) -> Result<Vec<ImageRecord>, StoreError> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let table = tx.open_table(IMAGES).map_err(db_err)?;
        all_images(&table)
    }

    /// The images `project` may see: public ones, its own and those shared with it.
    pub fn visible_images(&self, project: &str) -> Result<Vec<ImageRecord>, StoreError> {
        let mut images = self.list_images()?;
        images.retain(|r| r.visibility_for(project).is_some());
        Ok(images)
    }

    /// The image `key` names for `project`: the visible image with that id, else the visible
    /// image with that name, the project's own first, then shared ones, then public ones, and
    /// within each an available image before others, the newest first.
    pub fn find_image(&self, project: &str, key: &str) -> Result<Option<ImageRecord>, StoreError> {
        let visible = self.visible_images(project)?;
        if let Some(by_id) = visible.iter().find(|r| r.id == key) {
            return Ok(Some(by_id.clone()));
        }
        let rank = |r: &ImageRecord| {
            let tier = match r.visibility_for(project) {
                Some(Visibility::Private) => 0,
                Some(Visibility::Shared) => 1,
                _ => 2,
            };
            let unavailable = r.state != super::State::Available;
            (tier, unavailable, std::cmp::Reverse(r.created_at))
        };
        Ok(visible
            .into_iter()
            .filter(|r| r.name == key)
            .min_by_key(|r| rank(r)))
    }

    /// Reads image `id`, lets `change` edit it and writes it back, all in one transaction.
    /// `Ok(None)` when there is no such image; an error from `change` writes nothing.
    pub fn update_image<E: From<StoreError>>(
        &self,
        id: &str,
        change: impl FnOnce(&mut ImageRecord) -> Result<(), E>,
    ) -> Result<Option<ImageRecord>, E> {
        let tx = self.db.begin_write().map_err(db_err)?;
        let record = {
            let mut table = tx.open_table(IMAGES).map_err(db_err)?;
            let mut record: ImageRecord = match table.get(id).map_err(db_err)? {
                Some(current) => decode(current.value(), || format!("image {id}"))?,
                None => return Ok(None),
            };
            change(&mut record)?;
            table
                .insert(id, encode(&record).as_slice())
                .map_err(db_err)?;
            record
        };
        tx.commit().map_err(db_err)?;
        Ok(Some(record))
    }

    /// Removes image `id`'s row; false when there was none.
    pub fn delete_image(&self, id: &str) -> Result<bool, StoreError> {
        let tx = self.db.begin_write().map_err(db_err)?;
        let removed = tx
            .open_table(IMAGES)
            .map_err(db_err)?
            .remove(id)
            .map_err(db_err)?
            .is_some();
        tx.commit().map_err(db_err)?;
        Ok(removed)
    }
}

fn all_images(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
) -> Result<Vec<ImageRecord>, StoreError> {
    let mut out = Vec::new();
    for row in table.iter().map_err(db_err)? {
        let (k, v) = row.map_err(db_err)?;
        out.push(decode(v.value(), || format!("image {}", k.value()))?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::store::State;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("kiln.redb")).unwrap();
        (dir, store)
    }

    fn image(id: &str, name: &str, owner: Option<&str>) -> ImageRecord {
        let mut r = ImageRecord::new(id, name, "debian-12", owner, format!("/i/{id}").into());
        r.state = State::Available;
        r
    }

    #[test]
    fn put_get_list_delete() {
        let (_d, s) = store();
        s.put_image(&image("a", "web", Some("p"))).unwrap();
        s.put_image(&image("b", "base", None)).unwrap();
        assert_eq!(s.get_image("a").unwrap().unwrap().name, "web");
        assert_eq!(s.list_images().unwrap().len(), 2);
        assert!(s.delete_image("a").unwrap());
        assert!(!s.delete_image("a").unwrap());
        assert!(s.get_image("a").unwrap().is_none());
    }

    #[test]
    fn names_resolve_within_what_a_project_sees() {
        let (_d, s) = store();
        s.put_image(&image("pub", "web", None)).unwrap();
        s.put_image(&image("own", "web", Some("p"))).unwrap();
        let mut shared = image("sh", "db", Some("q"));
        crate::store::set_member(
            &mut shared.shared_with,
            "p",
            kiln_shared::protocol::ShareStatus::Accepted,
        );
        s.put_image(&shared).unwrap();
        s.put_image(&image("hidden", "secret", Some("q"))).unwrap();

        let find = |project, key| s.find_image(project, key).unwrap().map(|r| r.id);
        assert_eq!(find("p", "web").as_deref(), Some("own"));
        assert_eq!(find("other", "web").as_deref(), Some("pub"));
        assert_eq!(find("p", "db").as_deref(), Some("sh"));
        assert_eq!(find("p", "secret"), None);
        assert_eq!(
            find("p", "hidden"),
            None,
            "ids of invisible images are not found"
        );
        assert_eq!(find("q", "hidden").as_deref(), Some("hidden"));
        assert_eq!(s.visible_images("p").unwrap().len(), 3);
    }

    #[test]
    fn update_is_all_or_nothing() {
        let (_d, s) = store();
        s.put_image(&image("a", "web", Some("p"))).unwrap();
        let r: Result<_, StoreError> = s.update_image("a", |r| {
            r.state = State::Deleting;
            Ok(())
        });
        assert_eq!(r.unwrap().unwrap().state, State::Deleting);
        let refused: Result<Option<ImageRecord>, StoreError> = s.update_image("a", |r| {
            r.state = State::Failed;
            Err(StoreError::Corrupt {
                what: "test".into(),
                message: "refused".into(),
            })
        });
        assert!(refused.is_err());
        assert_eq!(s.get_image("a").unwrap().unwrap().state, State::Deleting);
        let missing: Result<_, StoreError> = s.update_image("zz", |_| Ok(()));
        assert!(missing.unwrap().is_none());
    }

    #[test]
    fn checked_insert_sees_existing_rows() {
        let (_d, s) = store();
        s.put_image(&image("a", "web", Some("p"))).unwrap();
        let dup = image("b", "web", Some("p"));
        let r: Result<ImageRecord, StoreError> = s.insert_image_checked(&dup, |existing, _| {
            if existing.iter().any(|e| e.name == dup.name) {
                Err(StoreError::Corrupt {
                    what: "dup".into(),
                    message: "exists".into(),
                })
            } else {
                Ok(())
            }
        });
        assert!(r.is_err());
        assert!(s.get_image("b").unwrap().is_none());
    }
}
