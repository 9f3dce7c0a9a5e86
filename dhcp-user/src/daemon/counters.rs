//! The slow path's counters, kept in memory until the database takes them.

use std::collections::HashMap;

use crate::store::Db;

/// Slow-path counts not yet saved in the database.
#[derive(Debug, Default)]
pub(super) struct SlowCounts {
    unsaved: HashMap<&'static str, u64>,
    /// The last save failed (logged once until one succeeds).
    failing: bool,
}

impl SlowCounts {
    /// Counts one `name` event.
    pub(super) fn add(&mut self, name: &'static str) {
        *self.unsaved.entry(name).or_default() += 1;
    }

    /// Saves the counts; they are kept (and added to) until a write
    /// succeeds, so a full disk loses none.
    pub(super) fn flush(&mut self, db: &mut Db) {
        if self.unsaved.is_empty() {
            return;
        }
        let counts: Vec<(String, u64)> = self
            .unsaved
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect();
        match db.add_counters(&counts) {
            Ok(()) => {
                self.unsaved.clear();
                if self.failing {
                    tracing::info!("slow-path counters saved again");
                    self.failing = false;
                }
            }
            Err(e) => {
                if !self.failing {
                    tracing::warn!("saving slow-path counters (kept in memory, retried): {e:#}");
                    self.failing = true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testdb::TempDb;

    fn saved(db: &Db) -> Vec<(String, u64)> {
        let mut c = db.counters().unwrap();
        c.sort();
        c
    }

    #[test]
    fn counts_are_kept_until_a_save_succeeds() {
        let mut t = TempDb::new("counters");
        let mut counts = SlowCounts::default();
        counts.add("slow_discover");
        counts.add("slow_discover");
        counts.add("slow_inform");
        // A connection that cannot write: the save fails, nothing is lost.
        let mut read_only = Db::open_read_only(t.db().path()).unwrap();
        counts.flush(&mut read_only);
        assert!(counts.failing, "the failure is noted");
        assert_eq!(saved(t.db()), vec![], "nothing saved");
        counts.add("slow_discover");
        counts.flush(t.db());
        assert!(!counts.failing, "saved again");
        assert!(counts.unsaved.is_empty(), "nothing left to save");
        assert_eq!(
            saved(t.db()),
            vec![("slow_discover".into(), 3), ("slow_inform".into(), 1)],
            "the counts of before and after the failure"
        );
        counts.add("slow_inform");
        counts.flush(t.db());
        assert_eq!(
            saved(t.db()),
            vec![("slow_discover".into(), 3), ("slow_inform".into(), 2)],
            "added to what was saved"
        );
    }
}
