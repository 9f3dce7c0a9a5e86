//! The network-id allocator: the small number (`net_id`) that stands for a
//! network's uuid (`network_id`) in the fast path's map keys.

use anyhow::{anyhow, Result};
use rusqlite::OptionalExtension;

use crate::store::Db;

impl Db {
    /// The small id (>= 1) of a network, allocated on first use and never reused.
    pub fn net_id(&mut self, network_id: &str) -> Result<u32> {
        let what = format!("allocating an id for network {network_id}");
        let net_id = self.write(&what, |tx| {
            let stored: Option<i64> = tx
                .query_row(
                    "SELECT net_id FROM net_ids WHERE network_id = ?1",
                    [network_id],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(net_id) = stored {
                return Ok(net_id);
            }
            // Only when missing: an upsert that does nothing still uses up an AUTOINCREMENT value.
            tx.execute("INSERT INTO net_ids (network_id) VALUES (?1)", [network_id])?;
            Ok(tx.last_insert_rowid())
        })?;
        u32::try_from(net_id)
            .map_err(|_| anyhow!("net_id {net_id} of network {network_id} is out of range"))
    }

    /// Every allocated (network_id, net_id), by net_id.
    pub fn net_ids(&self) -> Result<Vec<(String, u32)>> {
        self.read("reading net_ids", |c| {
            let mut stmt =
                c.prepare_cached("SELECT network_id, net_id FROM net_ids ORDER BY net_id")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::neutron::model::Kind;
    use crate::store::testdb::loaded;

    #[test]
    fn net_ids_are_stable_and_never_reused() {
        let mut t = loaded("netids");
        assert_eq!(t.db().net_id("n1").unwrap(), 1);
        assert_eq!(t.db().net_id("n2").unwrap(), 2);
        assert_eq!(t.db().net_id("n1").unwrap(), 1);
        t.db().delete(Kind::Network, "n2").unwrap();
        t.reopen();
        assert_eq!(t.db().net_id("n2").unwrap(), 2);
        assert_eq!(t.db().net_id("n3").unwrap(), 3);
        t.db()
            .conn
            .execute("DELETE FROM net_ids WHERE network_id = 'n3'", [])
            .unwrap();
        assert_eq!(t.db().net_id("n4").unwrap(), 4, "3 is not handed out again");
        assert_eq!(
            t.db().net_ids().unwrap(),
            [
                ("n1".to_string(), 1),
                ("n2".to_string(), 2),
                ("n4".to_string(), 4)
            ]
        );
    }
}
