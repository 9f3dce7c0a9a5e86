//! The change log: every committed insert, update or delete of a network,
//! subnet or port, by position (`seq`), as the triggers of [`super::schema`]
//! record it for any writer.

use anyhow::{Context, Result};
use rusqlite::Connection;

use crate::neutron::model::{Change, Kind};
use crate::store::{to_i64, Db};

/// How many rows of the change log are kept, at least.
pub const CHANGES_KEPT: u64 = 100_000;

/// The log is pruned when a change's seq is a multiple of this.
pub(super) const PRUNE_EVERY: u64 = 1_000;

/// [`Db::changes_since`] cannot answer: the changes after `since` were pruned
/// from the log (or the database was replaced by one with an older log).
/// The caller must reload everything.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the change log no longer holds the changes after {since} (it holds {oldest}..={newest}): reload everything")]
pub struct ChangeLogGap {
    /// The position the caller asked from.
    pub since: u64,
    /// The oldest position still logged.
    pub oldest: u64,
    /// The newest position.
    pub newest: u64,
}

/// The newest change-log position: what AUTOINCREMENT last handed out, so it
/// does not go back when rows are deleted.
pub(super) fn last_seq(conn: &Connection) -> Result<u64> {
    let seq: i64 = conn.query_row(
        "SELECT max(
             coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'changes'), 0),
             coalesce((SELECT max(seq) FROM changes), 0))",
        [],
        |r| r.get(0),
    )?;
    Ok(seq as u64)
}

fn oldest_seq(conn: &Connection) -> Result<u64> {
    let oldest: Option<i64> = conn.query_row("SELECT min(seq) FROM changes", [], |r| r.get(0))?;
    match oldest {
        Some(s) => Ok(s as u64),
        None => Ok(last_seq(conn)? + 1),
    }
}

/// The changes after `seq`, or the gap that keeps the log from answering.
fn changes_after(conn: &Connection, seq: u64) -> Result<Result<Vec<Change>, ChangeLogGap>> {
    // One read transaction: the bounds and the rows agree.
    let tx = conn.unchecked_transaction()?;
    let newest = last_seq(&tx)?;
    let oldest = oldest_seq(&tx)?;
    if seq > newest || seq + 1 < oldest {
        return Ok(Err(ChangeLogGap {
            since: seq,
            oldest,
            newest,
        }));
    }
    let mut stmt =
        tx.prepare_cached("SELECT seq, kind, id FROM changes WHERE seq > ?1 ORDER BY seq")?;
    let mut rows = stmt.query([to_i64(seq, "seq")?])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let (s, kind, id): (i64, String, String) = (row.get(0)?, row.get(1)?, row.get(2)?);
        let kind: Kind = kind.parse().with_context(|| format!("change {s}: kind"))?;
        out.push(Change {
            seq: s as u64,
            kind,
            id,
        });
    }
    Ok(Ok(out))
}

impl Db {
    /// The newest change-log position (0 when nothing was ever logged).
    pub fn last_seq(&self) -> Result<u64> {
        self.read("reading the change log", last_seq)
    }

    /// The oldest change-log position still logged (`last_seq() + 1` when the
    /// log is empty): a reader at `seq` can catch up iff `seq + 1 >= oldest_seq()`.
    pub fn oldest_seq(&self) -> Result<u64> {
        self.read("reading the change log", oldest_seq)
    }

    /// Every change with a position after `seq`, in order.
    ///
    /// Fails with a [`ChangeLogGap`] (test with `err.is::<ChangeLogGap>()`)
    /// when some of them were pruned, or when `seq` is past the newest
    /// position (the database was replaced): the caller must reload everything.
    pub fn changes_since(&self, seq: u64) -> Result<Vec<Change>> {
        Ok(self.read("reading the change log", |c| changes_after(c, seq))??)
    }

    /// SQLite's `PRAGMA data_version`: changes when another connection commits
    /// (never for this connection's own writes).
    pub fn data_version(&self) -> Result<i64> {
        self.read("reading data_version", |c| {
            Ok(c.query_row("PRAGMA data_version", [], |r| r.get(0))?)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testdb::{changes, loaded};

    #[test]
    fn other_writers_are_seen() {
        let mut t = loaded("others");
        let seq = t.db().last_seq().unwrap();
        let version = t.db().data_version().unwrap();
        let other = t.other();
        // An update that changes nothing logs nothing, whoever writes it.
        other
            .execute("UPDATE ports SET device_owner = device_owner", [])
            .unwrap();
        assert!(changes(t.db(), seq).is_empty());
        other
            .execute("UPDATE ports SET device_owner = 'x' WHERE id = 'p1'", [])
            .unwrap();
        other
            .execute("DELETE FROM networks WHERE id = 'n2'", [])
            .unwrap();
        other
            .execute("UPDATE subnets SET id = 's7' WHERE id = 's6'", [])
            .unwrap();
        assert_ne!(t.db().data_version().unwrap(), version);
        assert_eq!(
            changes(t.db(), seq),
            [
                (Kind::Port, "p1".into()),
                (Kind::Network, "n2".into()),
                (Kind::Subnet, "s6".into()),
                (Kind::Subnet, "s7".into())
            ]
        );
        assert_eq!(t.db().port("p1").unwrap().unwrap().device_owner, "x");
    }

    #[test]
    fn pruned_log_asks_for_a_reload() {
        let mut t = loaded("prune");
        let db = t.db();
        assert_eq!(db.oldest_seq().unwrap(), 1);
        // Far more changes than are kept, as any writer might make them.
        db.conn
            .execute_batch(
                "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 101500)
                 INSERT INTO changes (kind, id) SELECT 'network', 'n' || i FROM c;",
            )
            .unwrap();
        let newest = db.last_seq().unwrap();
        assert_eq!(newest, 8 + 101_500);
        let oldest = db.oldest_seq().unwrap();
        assert!(
            oldest > 1 && newest - oldest < CHANGES_KEPT + PRUNE_EVERY,
            "{oldest}..={newest}"
        );
        assert!(newest - oldest + 1 >= CHANGES_KEPT, "{oldest}..={newest}");

        for since in [0, oldest - 2, newest + 1] {
            let err = db.changes_since(since).unwrap_err();
            let gap = err.downcast_ref::<ChangeLogGap>().expect("a ChangeLogGap");
            assert_eq!(
                *gap,
                ChangeLogGap {
                    since,
                    oldest,
                    newest
                }
            );
        }
        assert_eq!(
            db.changes_since(oldest - 1).unwrap().len() as u64,
            newest - oldest + 1
        );
        let tail = db.changes_since(newest - 2).unwrap();
        assert_eq!(
            tail.iter().map(|c| c.seq).collect::<Vec<_>>(),
            [newest - 1, newest]
        );
        assert!(db.changes_since(newest).unwrap().is_empty());
    }

    #[test]
    fn empty_log_after_a_manual_purge_asks_for_a_reload() {
        let mut t = loaded("purge");
        let db = t.db();
        db.conn.execute("DELETE FROM changes", []).unwrap();
        assert_eq!(db.last_seq().unwrap(), 8, "positions never go back");
        assert_eq!(db.oldest_seq().unwrap(), 9);
        assert!(db.changes_since(8).unwrap().is_empty());
        assert!(db.changes_since(7).unwrap_err().is::<ChangeLogGap>());
    }

    #[test]
    fn a_change_of_an_unknown_kind_is_an_error_naming_it() {
        let mut t = loaded("kind");
        let seq = t.db().last_seq().unwrap();
        t.other()
            .execute("INSERT INTO changes (kind, id) VALUES ('router', 'r1')", [])
            .unwrap();
        let err = format!("{:#}", t.db().changes_since(seq).unwrap_err());
        assert!(
            err.contains(&format!(
                r#"change {}: kind: "router" is not network, subnet or port"#,
                seq + 1
            )),
            "{err}"
        );
    }
}
