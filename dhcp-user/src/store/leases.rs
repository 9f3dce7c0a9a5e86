//! Leases the server handed out (what `xdhcp leases` shows) and the slow
//! path's counters. Not Neutron objects: nothing here is in the change log.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use anyhow::{anyhow, Context, Result};
use rusqlite::params;
use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use serde::{Serialize, Serializer};

use crate::neutron::model::MacAddr;
use crate::store::{to_i64, Db};

/// What became of a lease; the same word in the database and in `xdhcp leases [--json]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LeaseState {
    /// ACKed (by the fast path or the slow path).
    Bound,
    /// The client sent DHCPRELEASE.
    Released,
    /// The client sent DHCPDECLINE (its address is in use).
    Declined,
}

impl LeaseState {
    /// Every state.
    pub const ALL: [LeaseState; 3] = [
        LeaseState::Bound,
        LeaseState::Released,
        LeaseState::Declined,
    ];

    /// "bound", "released", "declined".
    pub fn as_str(self) -> &'static str {
        match self {
            LeaseState::Bound => "bound",
            LeaseState::Released => "released",
            LeaseState::Declined => "declined",
        }
    }
}

impl fmt::Display for LeaseState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for LeaseState {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<LeaseState> {
        LeaseState::ALL
            .into_iter()
            .find(|l| l.as_str() == s)
            .ok_or_else(|| anyhow!("state {s:?} is not bound, released or declined"))
    }
}

impl Serialize for LeaseState {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl ToSql for LeaseState {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

impl FromSql for LeaseState {
    fn column_result(v: ValueRef<'_>) -> FromSqlResult<LeaseState> {
        v.as_str()?
            .parse()
            .map_err(|e: anyhow::Error| FromSqlError::Other(e.into()))
    }
}

/// A lease handed out by the DHCP server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeaseRecord {
    pub network_id: String,
    pub mac: MacAddr,
    pub ip: Ipv4Addr,
    pub port_id: String,
    /// Unix seconds; `None` = infinite.
    pub expires: Option<u64>,
    pub state: LeaseState,
    /// Unix seconds.
    pub updated: u64,
}

impl Db {
    /// Records a lease, replacing the one of the same (network_id, mac).
    pub fn record_lease(&mut self, l: &LeaseRecord) -> Result<()> {
        self.record_leases(std::slice::from_ref(l))
    }

    /// Records leases in one transaction, each replacing the one of the same
    /// (network_id, mac). A record that does not fit fails the whole batch, naming it.
    pub fn record_leases(&mut self, leases: &[LeaseRecord]) -> Result<()> {
        let what = format!("recording {} lease(s)", leases.len());
        self.write(&what, |tx| {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO leases (network_id, mac, ip, port_id, expires, state, updated)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (network_id, mac) DO UPDATE SET ip = excluded.ip,
                     port_id = excluded.port_id, expires = excluded.expires,
                     state = excluded.state, updated = excluded.updated",
            )?;
            for l in leases {
                let mut write = || -> Result<()> {
                    let expires = l.expires.map(|e| to_i64(e, "expires")).transpose()?;
                    stmt.execute(params![
                        l.network_id,
                        l.mac,
                        l.ip.to_string(),
                        l.port_id,
                        expires,
                        l.state,
                        to_i64(l.updated, "updated")?
                    ])?;
                    Ok(())
                };
                write().with_context(|| {
                    format!("the lease of {} on network {}", l.mac, l.network_id)
                })?;
            }
            Ok(())
        })
    }

    /// Every recorded lease, by network and MAC.
    pub fn leases(&self) -> Result<Vec<LeaseRecord>> {
        self.read("reading leases", |c| {
            let mut stmt = c.prepare_cached(
                "SELECT network_id, mac, ip, port_id, expires, state, updated
                 FROM leases ORDER BY network_id, mac",
            )?;
            let mut rows = stmt.query([])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                let (network_id, mac): (String, String) = (r.get(0)?, r.get(1)?);
                let lease = || -> Result<LeaseRecord> {
                    let ip: String = r.get(2)?;
                    let expires: Option<i64> = r.get(4)?;
                    let updated: i64 = r.get(6)?;
                    Ok(LeaseRecord {
                        network_id: network_id.clone(),
                        mac: mac.parse()?,
                        ip: ip
                            .parse()
                            .with_context(|| format!("ip {ip:?} is not an IPv4 address"))?,
                        port_id: r.get(3)?,
                        expires: expires.map(|e| e as u64),
                        state: r.get::<_, String>(5)?.parse()?,
                        updated: updated as u64,
                    })
                };
                out.push(
                    lease()
                        .with_context(|| format!("the lease of {mac:?} on network {network_id}"))?,
                );
            }
            Ok(out)
        })
    }

    /// Adds to named counters (the slow path's), creating them at 0.
    pub fn add_counters(&mut self, counts: &[(String, u64)]) -> Result<()> {
        self.write("saving counters", |tx| {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO counters (name, value) VALUES (?1, ?2)
                 ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
            )?;
            for (name, v) in counts {
                stmt.execute(params![name, to_i64(*v, name)?])?;
            }
            Ok(())
        })
    }

    /// Every named counter, by name.
    pub fn counters(&self) -> Result<Vec<(String, u64)>> {
        self.read("reading counters", |c| {
            let mut stmt = c.prepare_cached("SELECT name, value FROM counters ORDER BY name")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testdb::TempDb;

    fn lease(i: u8) -> LeaseRecord {
        LeaseRecord {
            network_id: "n1".into(),
            mac: MacAddr([0xfa, 0x16, 0x3e, 0, 0, i]),
            ip: Ipv4Addr::new(10, 0, 0, i),
            port_id: format!("p{i}"),
            expires: Some(1_700_000_000),
            state: LeaseState::Bound,
            updated: 1_699_990_000,
        }
    }

    #[test]
    fn a_batch_of_leases_is_written_whole_or_not_at_all() {
        let mut t = TempDb::new("lease-batch");
        let good: Vec<_> = (1..=3).map(lease).collect();
        t.db().record_leases(&good).unwrap();
        // One record that does not fit the table, after one that does.
        let mut with_bad = vec![lease(4), lease(5)];
        with_bad[1].updated = u64::MAX;
        let err = format!("{:#}", t.db().record_leases(&with_bad).unwrap_err());
        assert!(
            err.contains("the lease of fa:16:3e:00:00:05 on network n1: updated 18446744073709551615 is too large"),
            "{err}"
        );
        // One the database itself refuses, after one that it took.
        t.db()
            .conn
            .execute_batch(
                "CREATE TRIGGER boom BEFORE INSERT ON leases WHEN NEW.port_id = 'p7'
                 BEGIN SELECT RAISE(ABORT, 'boom'); END;",
            )
            .unwrap();
        let err = format!(
            "{:#}",
            t.db().record_leases(&[lease(6), lease(7)]).unwrap_err()
        );
        assert!(
            err.contains("the lease of fa:16:3e:00:00:07 on network n1: boom"),
            "{err}"
        );
        t.reopen();
        assert_eq!(t.db().leases().unwrap(), good, "nothing of the bad batches");
    }

    #[test]
    fn leases_round_trip() {
        let mut t = TempDb::new("leases");
        let a = lease(5);
        let b = LeaseRecord {
            network_id: "n2".into(),
            expires: None,
            ..a.clone()
        };
        t.db().record_lease(&a).unwrap();
        t.db().record_lease(&b).unwrap();
        let a2 = LeaseRecord {
            state: LeaseState::Released,
            updated: 1_700_000_100,
            ..a.clone()
        };
        t.db().record_lease(&a2).unwrap();
        t.reopen();
        assert_eq!(t.db().leases().unwrap(), [a2, b]);
        // Leases are not objects of the change log.
        assert_eq!(t.db().last_seq().unwrap(), 0);
    }

    /// The rows hold the words `xdhcp leases` shows, and the JSON is as it was.
    #[test]
    fn states_and_macs_are_text_in_the_table_and_the_json() {
        let mut t = TempDb::new("lease-text");
        let mut l = lease(0xab);
        for state in LeaseState::ALL {
            l.state = state;
            t.db().record_lease(&l).unwrap();
            let (mac, text): (String, String) = t
                .other()
                .query_row("SELECT mac, state FROM leases", [], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .unwrap();
            assert_eq!(
                (mac.as_str(), text.as_str()),
                ("fa:16:3e:00:00:ab", state.as_str())
            );
            assert_eq!(text.parse::<LeaseState>().unwrap(), state);
        }
        l.state = LeaseState::Declined;
        assert_eq!(
            serde_json::to_string(&l).unwrap(),
            r#"{"network_id":"n1","mac":"fa:16:3e:00:00:ab","ip":"10.0.0.171","port_id":"p171","expires":1700000000,"state":"declined","updated":1699990000}"#
        );
        assert_eq!(
            LeaseState::ALL.map(LeaseState::as_str),
            ["bound", "released", "declined"]
        );
    }

    /// Rows another writer made unreadable: `leases` names the row and the field.
    #[test]
    fn unreadable_lease_rows_are_named() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "an unknown state",
                "UPDATE leases SET state = 'stolen'",
                r#"the lease of "fa:16:3e:00:00:05" on network n1: state "stolen" is not bound, released or declined"#,
            ),
            (
                "a bad MAC",
                "UPDATE leases SET mac = 'nope'",
                r#"the lease of "nope" on network n1: "nope" is not a MAC address"#,
            ),
            (
                "a bad IP",
                "UPDATE leases SET ip = '10.0.0'",
                r#"ip "10.0.0" is not an IPv4 address"#,
            ),
        ];
        for (what, sql, want) in cases {
            let mut t = TempDb::new("lease-bad");
            t.db().record_lease(&lease(5)).unwrap();
            t.other().execute(sql, []).unwrap();
            let err = format!("{:#}", t.db().leases().unwrap_err());
            assert!(err.contains(want), "{what}: {err}");
        }
        assert!("stolen".parse::<LeaseState>().is_err());
    }

    #[test]
    fn counters_add_up() {
        let mut t = TempDb::new("counters");
        assert!(t.db().counters().unwrap().is_empty());
        t.db()
            .add_counters(&[("b".into(), 2), ("a".into(), 1)])
            .unwrap();
        t.db().add_counters(&[("b".into(), 3)]).unwrap();
        t.reopen();
        assert_eq!(
            t.db().counters().unwrap(),
            [("a".to_string(), 1), ("b".to_string(), 5)]
        );
    }
}
