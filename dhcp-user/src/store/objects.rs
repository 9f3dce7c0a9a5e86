//! Neutron's objects in their tables: rows to the model and back, and the
//! writes of whole documents (import, an agent's replace) and of deletes.
//!
//! Rows are parsed into the model's types as they are read. A row that does
//! not parse (another writer, such as a sqlite3 script, put a bad MAC or
//! broken JSON in it) is left out, with a warning naming it and the field: the
//! other objects are still served, and the object is as if absent until it is
//! written right.

use std::collections::HashSet;

use anyhow::{anyhow, bail, Context, Result};
use ipnet::IpNet;
use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use rusqlite::{params, Connection, Row};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::neutron::import;
use crate::neutron::model::{ImportDoc, Kind, MacAddr, Network, Port, Snapshot, Subnet};
use crate::store::changes::last_seq;
use crate::store::schema::{select_sql, upsert_sql, Table, NETWORKS, PORTS, SUBNETS};
use crate::store::Db;

/// What [`Db::import`] wrote: the number of objects of each kind in the document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportSummary {
    pub networks: usize,
    pub subnets: usize,
    pub ports: usize,
}

/// MACs are stored as they are written in JSON ("fa:16:3e:12:34:56").
impl ToSql for MacAddr {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.to_string()))
    }
}

impl FromSql for MacAddr {
    fn column_result(v: ValueRef<'_>) -> FromSqlResult<MacAddr> {
        v.as_str()?
            .parse()
            .map_err(|e| FromSqlError::Other(Box::new(e)))
    }
}

fn to_json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("model types serialize")
}

/// A column parsed with `parse`, the error naming the column and its text.
fn text_as<T>(
    row: &Row,
    idx: usize,
    col: &str,
    parse: impl FnOnce(&str) -> Result<T>,
) -> Result<T> {
    let s: String = row.get(idx).with_context(|| col.to_string())?;
    parse(&s).with_context(|| format!("{col} {s:?}"))
}

fn json_col<T: DeserializeOwned>(row: &Row, idx: usize, col: &str) -> Result<T> {
    text_as(row, idx, col, |s| Ok(serde_json::from_str(s)?))
}

fn network_of(row: &Row) -> Result<Network> {
    Ok(Network {
        id: row.get(0)?,
        name: row.get(1).context("name")?,
        mtu: row.get(2).context("mtu")?,
    })
}

fn subnet_of(row: &Row) -> Result<Subnet> {
    let gateway: Option<String> = row.get(4).context("gateway_ip")?;
    Ok(Subnet {
        id: row.get(0)?,
        network_id: row.get(1).context("network_id")?,
        ip_version: row.get(2).context("ip_version")?,
        cidr: text_as(row, 3, "cidr", |s| Ok(s.parse::<IpNet>()?))?,
        gateway_ip: gateway
            .map(|g| {
                g.parse()
                    .map_err(|_| anyhow!("gateway_ip {g:?} is not an IP address"))
            })
            .transpose()?,
        enable_dhcp: row.get(5).context("enable_dhcp")?,
        dns_nameservers: json_col(row, 6, "dns_nameservers")?,
        host_routes: json_col(row, 7, "host_routes")?,
        allocation_pools: json_col(row, 8, "allocation_pools")?,
    })
}

fn port_of(row: &Row) -> Result<Port> {
    Ok(Port {
        id: row.get(0)?,
        network_id: row.get(1).context("network_id")?,
        mac_address: row.get(2).context("mac_address")?,
        fixed_ips: json_col(row, 3, "fixed_ips")?,
        device_owner: row.get(4).context("device_owner")?,
        dns_name: row.get(5).context("dns_name")?,
        extra_dhcp_opts: json_col(row, 6, "extra_dhcp_opts")?,
        admin_state_up: row.get(7).context("admin_state_up")?,
    })
}

/// Rows of `t` matching `filter` (a WHERE clause using `?1`, or "" for all);
/// rows that do not parse are left out with a warning.
fn read<T>(
    conn: &Connection,
    t: &Table,
    filter: &str,
    arg: Option<&str>,
    of: fn(&Row) -> Result<T>,
) -> Result<Vec<T>> {
    let mut stmt = conn.prepare_cached(&select_sql(t, filter))?;
    let mut rows = match arg {
        Some(a) => stmt.query([a])?,
        None => stmt.query([])?,
    };
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let id: String = row.get(0)?;
        match of(row) {
            Ok(v) => out.push(v),
            Err(e) => tracing::warn!("{} {id} is left out, it does not read: {e:#}", t.kind),
        }
    }
    Ok(out)
}

fn read_one<T>(
    conn: &Connection,
    t: &Table,
    id: &str,
    of: fn(&Row) -> Result<T>,
) -> Result<Option<T>> {
    Ok(read(conn, t, "WHERE id = ?1", Some(id), of)?.pop())
}

fn read_snapshot(conn: &Connection) -> Result<Snapshot> {
    Ok(Snapshot {
        networks: read(conn, &NETWORKS, "", None, network_of)?,
        subnets: read(conn, &SUBNETS, "", None, subnet_of)?,
        ports: read(conn, &PORTS, "", None, port_of)?,
    })
}

/// What validating `doc` needs of the store: every network and subnet, and
/// the ports of the networks `doc` touches (its ports' and its subnets',
/// before and after). Reading a million ports to check one took seconds; a
/// document touching many networks reads them all at once.
fn read_scope(conn: &Connection, doc: &ImportDoc) -> Result<Snapshot> {
    let networks = read(conn, &NETWORKS, "", None, network_of)?;
    let subnets = read(conn, &SUBNETS, "", None, subnet_of)?;
    let mut touched: HashSet<&str> = doc.ports.iter().map(|p| p.network_id.as_str()).collect();
    let doc_subnets: HashSet<&str> = doc.subnets.iter().map(|s| s.id.as_str()).collect();
    touched.extend(doc.subnets.iter().map(|s| s.network_id.as_str()));
    let stored_nets: Vec<String> = subnets
        .iter()
        .filter(|s| doc_subnets.contains(s.id.as_str()))
        .map(|s| s.network_id.clone())
        .collect();
    touched.extend(stored_nets.iter().map(String::as_str));
    let ports = if touched.len() > 64 {
        read(conn, &PORTS, "", None, port_of)?
    } else {
        let mut ports = Vec::new();
        for net in touched {
            ports.extend(read(
                conn,
                &PORTS,
                "WHERE network_id = ?1",
                Some(net),
                port_of,
            )?);
        }
        ports
    };
    Ok(Snapshot {
        networks,
        subnets,
        ports,
    })
}

/// Writes the row `id` of `t`: `row` is its id and then `t`'s columns, in order.
fn upsert(conn: &Connection, t: &Table, id: &str, row: &[&dyn ToSql]) -> Result<()> {
    conn.prepare_cached(&upsert_sql(t))?
        .execute(row)
        .with_context(|| format!("writing {} {id}", t.kind))?;
    Ok(())
}

fn write_network(conn: &Connection, n: &Network) -> Result<()> {
    upsert(conn, &NETWORKS, &n.id, params![n.id, n.name, n.mtu])
}

fn write_subnet(conn: &Connection, s: &Subnet) -> Result<()> {
    upsert(
        conn,
        &SUBNETS,
        &s.id,
        params![
            s.id,
            s.network_id,
            s.ip_version,
            s.cidr.to_string(),
            s.gateway_ip.map(|g| g.to_string()),
            s.enable_dhcp,
            to_json(&s.dns_nameservers),
            to_json(&s.host_routes),
            to_json(&s.allocation_pools),
        ],
    )
}

fn write_port(conn: &Connection, p: &Port) -> Result<()> {
    upsert(
        conn,
        &PORTS,
        &p.id,
        params![
            p.id,
            p.network_id,
            p.mac_address,
            to_json(&p.fixed_ips),
            p.device_owner,
            p.dns_name,
            to_json(&p.extra_dhcp_opts),
            p.admin_state_up,
        ],
    )
}

/// Checks `doc` against what `conn` sees (plus `doc` itself), then writes it.
fn validate_and_write(conn: &Connection, doc: &ImportDoc) -> Result<()> {
    let existing = read_scope(conn, doc)?;
    import::validate(doc, &existing)?;
    doc.networks
        .iter()
        .try_for_each(|n| write_network(conn, n))?;
    doc.subnets.iter().try_for_each(|s| write_subnet(conn, s))?;
    doc.ports.iter().try_for_each(|p| write_port(conn, p))
}

/// `doc` as it is when it validates; otherwise what of it validates, object by
/// object (networks, then subnets, then ports, so that what depends on a left-out
/// object is left out too), with a warning naming each object left out and why.
fn sift(doc: &ImportDoc, existing: &Snapshot) -> (ImportDoc, Vec<String>) {
    if import::validate(doc, existing).is_ok() {
        return (doc.clone(), Vec::new());
    }
    let mut kept = ImportDoc::default();
    let mut left_out = Vec::new();
    fn keep_if_valid<T: Clone>(
        kept: &mut ImportDoc,
        list: fn(&mut ImportDoc) -> &mut Vec<T>,
        item: &T,
        kind: &str,
        id: &str,
        existing: &Snapshot,
        left_out: &mut Vec<String>,
    ) {
        list(kept).push(item.clone());
        if let Err(e) = import::validate(kept, existing) {
            list(kept).pop();
            tracing::warn!(kind, id, "left out of the store: {e:#}");
            left_out.push(id.to_string());
        }
    }
    for n in &doc.networks {
        keep_if_valid(
            &mut kept,
            |d| &mut d.networks,
            n,
            "network",
            &n.id,
            existing,
            &mut left_out,
        );
    }
    for s in &doc.subnets {
        keep_if_valid(
            &mut kept,
            |d| &mut d.subnets,
            s,
            "subnet",
            &s.id,
            existing,
            &mut left_out,
        );
    }
    for p in &doc.ports {
        keep_if_valid(
            &mut kept,
            |d| &mut d.ports,
            p,
            "port",
            &p.id,
            existing,
            &mut left_out,
        );
    }
    (kept, left_out)
}

/// Deletes the ports and subnets of network `network_id` whose ids `doc` does not list.
fn prune_network(conn: &Connection, network_id: &str, doc: &ImportDoc) -> Result<()> {
    let ports = doc
        .ports
        .iter()
        .filter(|p| p.network_id == network_id)
        .map(|p| p.id.as_str());
    let subnets = doc
        .subnets
        .iter()
        .filter(|s| s.network_id == network_id)
        .map(|s| s.id.as_str());
    for (table, kept) in [
        ("ports", ports.collect::<HashSet<_>>()),
        ("subnets", subnets.collect()),
    ] {
        let ids: Vec<String> = {
            let mut stmt =
                conn.prepare_cached(&format!("SELECT id FROM {table} WHERE network_id = ?1"))?;
            let rows = stmt.query_map([network_id], |r| r.get(0))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        for id in ids.iter().filter(|id| !kept.contains(id.as_str())) {
            conn.execute(&format!("DELETE FROM {table} WHERE id = ?1"), [id])?;
        }
    }
    Ok(())
}

/// Deletes an object and what depends on it; false when there was no such object.
fn delete(conn: &Connection, kind: Kind, id: &str) -> Result<bool> {
    Ok(match kind {
        Kind::Network => {
            conn.execute("DELETE FROM ports WHERE network_id = ?1", [id])?;
            conn.execute("DELETE FROM subnets WHERE network_id = ?1", [id])?;
            conn.execute("DELETE FROM networks WHERE id = ?1", [id])? > 0
        }
        Kind::Subnet => {
            // A cheap superset of the ports using the subnet, then the exact test.
            let users = read(
                conn,
                &PORTS,
                "WHERE instr(fixed_ips, ?1) > 0",
                Some(id),
                port_of,
            )?;
            for mut p in users {
                let before = p.fixed_ips.len();
                p.fixed_ips.retain(|f| f.subnet_id != id);
                if p.fixed_ips.len() != before {
                    write_port(conn, &p)?;
                }
            }
            conn.execute("DELETE FROM subnets WHERE id = ?1", [id])? > 0
        }
        Kind::Port => conn.execute("DELETE FROM ports WHERE id = ?1", [id])? > 0,
    })
}

impl Db {
    /// All networks, subnets and ports, each sorted by id.
    pub fn snapshot(&self) -> Result<Snapshot> {
        Ok(self.snapshot_at()?.0)
    }

    /// All networks, subnets and ports, and the change-log position they
    /// include: poll [`Db::changes_since`] from it to miss nothing.
    pub fn snapshot_at(&self) -> Result<(Snapshot, u64)> {
        self.read("reading networks, subnets and ports", |c| {
            // One read transaction: the snapshot and the position agree.
            let tx = c.unchecked_transaction()?;
            let seq = last_seq(&tx)?;
            Ok((read_snapshot(&tx)?, seq))
        })
    }

    /// The network `id`, if stored (and readable).
    pub fn network(&self, id: &str) -> Result<Option<Network>> {
        self.read("reading a network", |c| {
            read_one(c, &NETWORKS, id, network_of)
        })
    }

    /// The subnet `id`, if stored (and readable).
    pub fn subnet(&self, id: &str) -> Result<Option<Subnet>> {
        self.read("reading a subnet", |c| read_one(c, &SUBNETS, id, subnet_of))
    }

    /// The port `id`, if stored (and readable).
    pub fn port(&self, id: &str) -> Result<Option<Port>> {
        self.read("reading a port", |c| read_one(c, &PORTS, id, port_of))
    }

    /// Every network id in the store.
    pub fn network_ids(&self) -> Result<Vec<String>> {
        self.read("listing networks", |c| {
            let mut stmt = c.prepare_cached("SELECT id FROM networks ORDER BY id")?;
            let rows = stmt.query_map([], |r| r.get(0))?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }

    /// Validates `doc` against the stored objects, then writes all of it in
    /// one transaction: on any error nothing is written.
    pub fn import(&mut self, doc: &ImportDoc) -> Result<ImportSummary> {
        self.write("importing", |tx| validate_and_write(tx, doc))?;
        Ok(ImportSummary {
            networks: doc.networks.len(),
            subnets: doc.subnets.len(),
            ports: doc.ports.len(),
        })
    }

    /// Makes the store hold exactly what `doc` says of the networks it lists
    /// (an agent's resync of a network): their subnets and ports that `doc`
    /// lacks are removed, the rest validated and upserted, in one transaction.
    /// Unlike an import, an object that fails validation does not stop the
    /// rest (neutron-server's data is what the cloud has, and one odd port
    /// must not take DHCP from its whole network): it is left out with a
    /// warning naming it. Returns the ids of the objects left out.
    pub fn replace_networks(&mut self, doc: &ImportDoc) -> Result<Vec<String>> {
        self.write("replacing networks", |tx| {
            for n in &doc.networks {
                prune_network(tx, &n.id, doc)?;
            }
            let existing = read_scope(tx, doc)?;
            let (kept, left_out) = sift(doc, &existing);
            if !left_out.is_empty() {
                // A stored version of what was left out is stale: not kept either.
                for n in &kept.networks {
                    prune_network(tx, &n.id, &kept)?;
                }
            }
            validate_and_write(tx, &kept)?;
            Ok(left_out)
        })
    }

    /// Deletes an object. A network takes its subnets and ports with it; a
    /// subnet is removed from the fixed_ips of the ports that use it.
    pub fn delete(&mut self, kind: Kind, id: &str) -> Result<()> {
        self.write(&format!("deleting {kind} {id}"), |tx| {
            if !delete(tx, kind, id)? {
                bail!("no {kind} {id}");
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::neutron::import::parse;
    use crate::neutron::model::Change;
    use crate::store::testdb::{base, changes, loaded, TempDb};

    fn sorted(mut doc: ImportDoc) -> Snapshot {
        doc.networks.sort_by(|a, b| a.id.cmp(&b.id));
        doc.subnets.sort_by(|a, b| a.id.cmp(&b.id));
        doc.ports.sort_by(|a, b| a.id.cmp(&b.id));
        Snapshot {
            networks: doc.networks,
            subnets: doc.subnets,
            ports: doc.ports,
        }
    }

    #[test]
    fn import_round_trips() {
        let mut t = TempDb::new("roundtrip");
        let db = t.db();
        assert_eq!(db.last_seq().unwrap(), 0);
        assert_eq!(db.snapshot().unwrap(), Snapshot::default());
        let summary = db.import(&base()).unwrap();
        assert_eq!(
            summary,
            ImportSummary {
                networks: 2,
                subnets: 3,
                ports: 3
            }
        );
        assert_eq!(db.snapshot().unwrap(), sorted(base()));
        assert_eq!(db.port("p2").unwrap(), Some(base().ports[1].clone()));
        assert_eq!(db.subnet("s1").unwrap(), Some(base().subnets[0].clone()));
        assert_eq!(db.network("n1").unwrap(), Some(base().networks[0].clone()));
        assert_eq!(db.port("nope").unwrap(), None);
        // One change per object, in write order.
        let logged = changes(db, 0);
        assert_eq!(logged.len(), 8);
        assert_eq!(logged[0], (Kind::Network, "n1".to_string()));
        assert_eq!(logged[7], (Kind::Port, "p3".to_string()));
        assert_eq!(db.last_seq().unwrap(), 8);
        let (snap, seq) = db.snapshot_at().unwrap();
        assert_eq!((snap, seq), (sorted(base()), 8));
    }

    #[test]
    fn an_agents_replace_leaves_out_only_the_objects_that_fail() {
        let mut t = loaded("sift");
        // n1 resynced from neutron-server: p2 now claims p1's address, and a
        // new port sits on a subnet nobody has; p1 and the subnets are fine.
        let mut doc = base();
        doc.networks.retain(|n| n.id == "n1");
        doc.subnets.retain(|s| s.network_id == "n1");
        doc.ports.retain(|p| p.network_id == "n1");
        doc.ports[1].fixed_ips[0].ip_address = doc.ports[0].fixed_ips[0].ip_address;
        let mut orphan = doc.ports[0].clone();
        orphan.id = "p9".into();
        orphan.mac_address = "fa:16:3e:00:00:09".parse().unwrap();
        orphan.fixed_ips[0].subnet_id = "s-gone".into();
        doc.ports.push(orphan);
        let mut left_out = t.db().replace_networks(&doc).unwrap();
        left_out.sort();
        assert_eq!(left_out, ["p2", "p9"]);
        let stored = t.db().snapshot().unwrap();
        let ids: Vec<&str> = stored.ports.iter().map(|p| p.id.as_str()).collect();
        // The stored p2 is stale (neutron-server says otherwise): it goes too,
        // rather than being served an address Neutron no longer gives it.
        assert_eq!(ids, ["p1", "p3"]);
        // A document that validates is written whole, nothing left out.
        assert!(t.db().replace_networks(&base()).unwrap().is_empty());
        assert_eq!(t.db().snapshot().unwrap().ports.len(), 3);
    }

    #[test]
    fn reimport_logs_nothing() {
        let mut t = loaded("reimport");
        let seq = t.db().last_seq().unwrap();
        t.db().import(&base()).unwrap();
        assert_eq!(t.db().last_seq().unwrap(), seq);
        assert!(changes(t.db(), seq).is_empty());
    }

    #[test]
    fn updating_one_port_logs_one_change() {
        let mut t = loaded("update");
        let seq = t.db().last_seq().unwrap();
        let mut p2 = base().ports[1].clone();
        p2.dns_name = Some("renamed".into());
        let doc = ImportDoc {
            ports: vec![p2.clone()],
            ..Default::default()
        };
        t.db().import(&doc).unwrap();
        let got = t.db().changes_since(seq).unwrap();
        assert_eq!(
            got,
            vec![Change {
                seq: seq + 1,
                kind: Kind::Port,
                id: "p2".into()
            }]
        );
        assert_eq!(t.db().port("p2").unwrap(), Some(p2));
    }

    /// Documents that parse but must not import: (what is wrong, JSON, text the error must contain).
    #[test]
    fn bad_imports_change_nothing() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "subnet on an unknown network",
                r#"{"subnets": [{"id": "sx", "network_id": "nope", "cidr": "10.9.0.0/24"}]}"#,
                r#"subnets[0] (id sx): network_id "nope" is not a known network"#,
            ),
            (
                "a good new network, then a port on an unknown network",
                r#"{"networks": [{"id": "n9"}],
                   "ports": [{"id": "px", "network_id": "nope", "mac_address": "fa:16:3e:00:00:09"}]}"#,
                r#"ports[0] (id px): network_id "nope" is not a known network"#,
            ),
            (
                "fixed IP on an unknown subnet",
                r#"{"ports": [{"id": "px", "network_id": "n1", "mac_address": "fa:16:3e:00:00:09",
                              "fixed_ips": [{"subnet_id": "nope", "ip_address": "10.0.0.9"}]}]}"#,
                r#"ports[0] (id px): fixed_ips[0].subnet_id "nope" is not a known subnet"#,
            ),
            (
                "fixed IP on a subnet of another network",
                r#"{"ports": [{"id": "px", "network_id": "n1", "mac_address": "fa:16:3e:00:00:09",
                              "fixed_ips": [{"subnet_id": "s2", "ip_address": "10.1.0.9"}]}]}"#,
                r#"ports[0] (id px): fixed_ips[0].subnet_id "s2" is a subnet of network n2"#,
            ),
            (
                "IPv4 address outside its subnet",
                r#"{"ports": [{"id": "px", "network_id": "n1", "mac_address": "fa:16:3e:00:00:09",
                              "fixed_ips": [{"subnet_id": "s1", "ip_address": "10.9.0.5"}]}]}"#,
                "ports[0] (id px): fixed_ips[0].ip_address 10.9.0.5 is outside cidr 10.0.0.0/24",
            ),
            (
                "IPv6 address outside its subnet",
                r#"{"ports": [{"id": "px", "network_id": "n1", "mac_address": "fa:16:3e:00:00:09",
                              "fixed_ips": [{"subnet_id": "s6", "ip_address": "fd01::5"}]}]}"#,
                "ports[0] (id px): fixed_ips[0].ip_address fd01::5 is outside cidr fd00::/64",
            ),
            (
                "same MAC twice on one network in the document",
                r#"{"ports": [{"id": "px", "network_id": "n1", "mac_address": "fa:16:3e:00:00:09"},
                              {"id": "py", "network_id": "n1", "mac_address": "FA:16:3E:00:00:09"}]}"#,
                "ports[1] (id py): mac_address fa:16:3e:00:00:09 is already used by ports[0] (id px)",
            ),
            (
                "MAC of a stored port with another id",
                r#"{"ports": [{"id": "px", "network_id": "n1", "mac_address": "fa:16:3e:00:00:02"}]}"#,
                "ports[0] (id px): mac_address fa:16:3e:00:00:02 is already used by port p2",
            ),
            (
                "the same id twice",
                r#"{"ports": [{"id": "px", "network_id": "n1", "mac_address": "fa:16:3e:00:00:09"},
                              {"id": "px", "network_id": "n1", "mac_address": "fa:16:3e:00:00:0a"}]}"#,
                "ports[1] (id px): id is also that of ports[0]",
            ),
            (
                "unknown extra DHCP option",
                r#"{"ports": [{"id": "px", "network_id": "n1", "mac_address": "fa:16:3e:00:00:09",
                              "extra_dhcp_opts": [{"opt_name": "no-such-option", "opt_value": "x"}]}]}"#,
                r#"ports[0] (id px): extra_dhcp_opts[0] (no-such-option="x")"#,
            ),
            (
                "bad extra DHCP option value",
                r#"{"ports": [{"id": "px", "network_id": "n1", "mac_address": "fa:16:3e:00:00:09",
                              "extra_dhcp_opts": [{"opt_name": "router", "opt_value": "not-an-ip"}]}]}"#,
                r#"ports[0] (id px): extra_dhcp_opts[0] (router="not-an-ip")"#,
            ),
            (
                "gateway outside the CIDR",
                r#"{"subnets": [{"id": "sx", "network_id": "n1", "cidr": "10.4.0.0/24", "gateway_ip": "10.5.0.1"}]}"#,
                "subnets[0] (id sx): gateway_ip 10.5.0.1 is outside cidr 10.4.0.0/24",
            ),
            (
                "allocation pool outside the CIDR",
                r#"{"subnets": [{"id": "sx", "network_id": "n1", "cidr": "10.4.0.0/24",
                                "allocation_pools": [{"start": "10.4.0.10", "end": "10.4.1.10"}]}]}"#,
                "subnets[0] (id sx): allocation_pools[0].end 10.4.1.10 is outside cidr 10.4.0.0/24",
            ),
            (
                "allocation pool backwards",
                r#"{"subnets": [{"id": "sx", "network_id": "n1", "cidr": "10.4.0.0/24",
                                "allocation_pools": [{"start": "10.4.0.10", "end": "10.4.0.2"}]}]}"#,
                "subnets[0] (id sx): allocation_pools[0] start 10.4.0.10 is after end 10.4.0.2",
            ),
            (
                "CIDR with host bits",
                r#"{"subnets": [{"id": "sx", "network_id": "n1", "cidr": "10.4.0.7/24"}]}"#,
                r#"subnets[0] (id sx): cidr "10.4.0.7/24" has host bits set"#,
            ),
            (
                "a subnet shrunk so that a stored port falls outside it",
                r#"{"subnets": [{"id": "s1", "network_id": "n1", "cidr": "10.0.0.128/25"}]}"#,
                "port p1 (in the database): fixed_ips[0].ip_address 10.0.0.5 is outside cidr 10.0.0.128/25",
            ),
            (
                "a subnet moved to another network under its ports",
                r#"{"subnets": [{"id": "s6", "network_id": "n2", "ip_version": 6, "cidr": "fd00::/64"}]}"#,
                r#"port p2 (in the database): fixed_ips[1].subnet_id "s6" is a subnet of network n2"#,
            ),
        ];
        let mut t = loaded("bad");
        let before = t.db().snapshot_at().unwrap();
        for (what, json, want) in cases {
            let doc = parse(json).unwrap_or_else(|e| panic!("{what}: does not parse: {e:#}"));
            let err = match t.db().import(&doc) {
                Ok(_) => panic!("{what}: imported"),
                Err(e) => format!("{e:#}"),
            };
            assert!(
                err.contains(want),
                "{what}: error {err:?} does not contain {want:?}"
            );
            assert_eq!(
                t.db().snapshot_at().unwrap(),
                before,
                "{what}: database changed"
            );
        }
    }

    #[test]
    fn a_failing_write_rolls_back_the_whole_import() {
        let mut t = loaded("rollback");
        let before = t.db().snapshot_at().unwrap();
        t.db()
            .conn
            .execute_batch(
                "CREATE TRIGGER boom BEFORE INSERT ON ports WHEN NEW.id = 'boom'
                 BEGIN SELECT RAISE(ABORT, 'boom'); END;",
            )
            .unwrap();
        let doc = parse(
            r#"{"networks": [{"id": "n9"}], "subnets": [{"id": "s9", "network_id": "n9", "cidr": "10.9.0.0/24"}],
                "ports": [{"id": "boom", "network_id": "n9", "mac_address": "fa:16:3e:00:00:09"}]}"#,
        )
        .unwrap();
        let err = format!("{:#}", t.db().import(&doc).unwrap_err());
        assert!(err.contains("writing port boom"), "{err}");
        assert_eq!(t.db().snapshot_at().unwrap(), before);
    }

    #[test]
    fn delete_cascades() {
        let mut t = loaded("delete");
        let db = t.db();
        let seq = db.last_seq().unwrap();

        db.delete(Kind::Subnet, "s6").unwrap();
        let mut got = changes(db, seq);
        got.sort_by(|a, b| a.1.cmp(&b.1));
        assert_eq!(
            got,
            [(Kind::Port, "p2".into()), (Kind::Subnet, "s6".into())]
        );
        assert_eq!(db.subnet("s6").unwrap(), None);
        let p2 = db.port("p2").unwrap().unwrap();
        assert_eq!(p2.fixed_ips, base().ports[1].fixed_ips[..1]);

        let seq = db.last_seq().unwrap();
        db.delete(Kind::Network, "n1").unwrap();
        let mut got = changes(db, seq);
        got.sort_by(|a, b| a.1.cmp(&b.1));
        assert_eq!(
            got,
            [
                (Kind::Network, "n1".into()),
                (Kind::Port, "p1".into()),
                (Kind::Port, "p2".into()),
                (Kind::Subnet, "s1".into())
            ]
        );
        let snap = db.snapshot().unwrap();
        assert_eq!(
            snap.networks.iter().map(|n| &n.id).collect::<Vec<_>>(),
            ["n2"]
        );
        assert_eq!(
            snap.subnets.iter().map(|s| &s.id).collect::<Vec<_>>(),
            ["s2"]
        );
        assert_eq!(snap.ports.iter().map(|p| &p.id).collect::<Vec<_>>(), ["p3"]);

        db.delete(Kind::Port, "p3").unwrap();
        assert_eq!(db.port("p3").unwrap(), None);

        let seq = db.last_seq().unwrap();
        let before = db.snapshot().unwrap();
        for (kind, want) in [
            (Kind::Port, "no port p3"),
            (Kind::Subnet, "no subnet p3"),
            (Kind::Network, "no network p3"),
        ] {
            let err = format!("{:#}", db.delete(kind, "p3").unwrap_err());
            assert!(err.contains(want), "{err}");
        }
        assert_eq!(db.last_seq().unwrap(), seq);
        assert_eq!(db.snapshot().unwrap(), before);
    }

    /// Rows another writer broke are left out, and the rest is read.
    #[test]
    fn rows_that_do_not_parse_are_left_out() {
        let cases: &[(&str, &str, Kind, &str)] = &[
            (
                "a bad MAC",
                "UPDATE ports SET mac_address = 'fa:16' WHERE id = 'p2'",
                Kind::Port,
                "p2",
            ),
            (
                "broken JSON",
                "UPDATE ports SET fixed_ips = '[{' WHERE id = 'p2'",
                Kind::Port,
                "p2",
            ),
            (
                "an address that is none",
                r#"UPDATE ports SET fixed_ips = '[{"subnet_id": "s1", "ip_address": "10.0.0"}]' WHERE id = 'p2'"#,
                Kind::Port,
                "p2",
            ),
            (
                "a bad CIDR",
                "UPDATE subnets SET cidr = '10.0.0.0/33' WHERE id = 's1'",
                Kind::Subnet,
                "s1",
            ),
            (
                "a bad route",
                r#"UPDATE subnets SET host_routes = '[{"destination": "x", "nexthop": "10.0.0.1"}]' WHERE id = 's1'"#,
                Kind::Subnet,
                "s1",
            ),
            (
                "a name that is a blob",
                "UPDATE networks SET name = x'00' WHERE id = 'n1'",
                Kind::Network,
                "n1",
            ),
        ];
        for (what, sql, kind, id) in cases {
            let mut t = loaded("unreadable");
            t.other().execute(sql, []).unwrap();
            let snap = t.db().snapshot().unwrap();
            let mut want = sorted(base());
            match kind {
                Kind::Network => want.networks.retain(|n| n.id != *id),
                Kind::Subnet => want.subnets.retain(|s| s.id != *id),
                Kind::Port => want.ports.retain(|p| p.id != *id),
            }
            assert_eq!(snap, want, "{what}");
            let one = match kind {
                Kind::Network => t.db().network(id).unwrap().is_some(),
                Kind::Subnet => t.db().subnet(id).unwrap().is_some(),
                Kind::Port => t.db().port(id).unwrap().is_some(),
            };
            assert!(!one, "{what}: read alone");
            // Written right again, it is back.
            t.db().import(&base()).unwrap();
            assert_eq!(
                t.db().snapshot().unwrap(),
                sorted(base()),
                "{what}: rewritten"
            );
        }
    }

    /// The text columns hold what the JSON holds: canonical strings.
    #[test]
    fn typed_fields_are_stored_as_text() {
        let mut t = loaded("text");
        let (mac, cidr, routes): (String, String, String) = t
            .other()
            .query_row(
                "SELECT p.mac_address, s.cidr, s.host_routes FROM ports p, subnets s
                 WHERE p.id = 'p1' AND s.id = 's1'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!(mac, "fa:16:3e:00:00:01");
        assert_eq!(cidr, "10.0.0.0/24");
        assert_eq!(
            routes,
            r#"[{"destination":"192.168.7.0/24","nexthop":"10.0.0.254"}]"#
        );
    }
}
