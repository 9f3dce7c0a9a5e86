//! The tables, the triggers that log every change of a Neutron object, and
//! the schema version: what [`super::Db::open`] sets up and checks.

use anyhow::{bail, Result};
use rusqlite::Connection;

use crate::neutron::model::Kind;
use crate::store::changes::{CHANGES_KEPT, PRUNE_EVERY};

/// `PRAGMA user_version` of the schema this code writes.
pub(super) const SCHEMA_VERSION: i64 = 1;

/// One table of Neutron objects: its name, kind and columns besides `id`.
pub(super) struct Table {
    pub name: &'static str,
    pub kind: Kind,
    pub cols: &'static [&'static str],
}

pub(super) const NETWORKS: Table = Table {
    name: "networks",
    kind: Kind::Network,
    cols: &["name", "mtu"],
};

pub(super) const SUBNETS: Table = Table {
    name: "subnets",
    kind: Kind::Subnet,
    cols: &[
        "network_id",
        "ip_version",
        "cidr",
        "gateway_ip",
        "enable_dhcp",
        "dns_nameservers",
        "host_routes",
        "allocation_pools",
    ],
};

pub(super) const PORTS: Table = Table {
    name: "ports",
    kind: Kind::Port,
    cols: &[
        "network_id",
        "mac_address",
        "fixed_ips",
        "device_owner",
        "dns_name",
        "extra_dhcp_opts",
        "admin_state_up",
    ],
};

/// Tables; list fields are JSON text.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS networks (
    id TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL DEFAULT '',
    mtu INTEGER
);
CREATE TABLE IF NOT EXISTS subnets (
    id TEXT PRIMARY KEY NOT NULL,
    network_id TEXT NOT NULL,
    ip_version INTEGER NOT NULL DEFAULT 4,
    cidr TEXT NOT NULL,
    gateway_ip TEXT,
    enable_dhcp INTEGER NOT NULL DEFAULT 1,
    dns_nameservers TEXT NOT NULL DEFAULT '[]',
    host_routes TEXT NOT NULL DEFAULT '[]',
    allocation_pools TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX IF NOT EXISTS subnets_network ON subnets(network_id);
CREATE TABLE IF NOT EXISTS ports (
    id TEXT PRIMARY KEY NOT NULL,
    network_id TEXT NOT NULL,
    mac_address TEXT NOT NULL,
    fixed_ips TEXT NOT NULL DEFAULT '[]',
    device_owner TEXT NOT NULL DEFAULT '',
    dns_name TEXT,
    extra_dhcp_opts TEXT NOT NULL DEFAULT '[]',
    admin_state_up INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS ports_network ON ports(network_id);
CREATE TABLE IF NOT EXISTS changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    id TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS net_ids (
    net_id INTEGER PRIMARY KEY AUTOINCREMENT,
    network_id TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS leases (
    network_id TEXT NOT NULL,
    mac TEXT NOT NULL,
    ip TEXT NOT NULL,
    port_id TEXT NOT NULL,
    expires INTEGER,
    state TEXT NOT NULL,
    updated INTEGER NOT NULL,
    PRIMARY KEY (network_id, mac)
);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY NOT NULL,
    value INTEGER NOT NULL DEFAULT 0
);
";

/// Brings the database `conn` (inside a write transaction) to
/// [`SCHEMA_VERSION`]: creates what is missing, refuses a newer schema.
pub(super) fn migrate(conn: &Connection) -> Result<()> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        bail!("schema version {version} is newer than this xdhcp knows ({SCHEMA_VERSION})");
    }
    conn.execute_batch(SCHEMA)?;
    for t in [&NETWORKS, &SUBNETS, &PORTS] {
        conn.execute_batch(&triggers(t))?;
    }
    conn.execute_batch(&prune_trigger())?;
    conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    Ok(())
}

/// `a.c1 IS NOT b.c1 OR …`: some column of the table differs between rows `a` and `b`.
fn differs(t: &Table, a: &str, b: &str) -> String {
    t.cols
        .iter()
        .map(|c| format!("{a}.{c} IS NOT {b}.{c}"))
        .collect::<Vec<_>>()
        .join(" OR ")
}

/// The triggers that log every change of a table's rows, whoever writes them.
fn triggers(t: &Table) -> String {
    let (name, kind) = (t.name, t.kind.as_str());
    let differs = differs(t, "OLD", "NEW");
    format!(
        "
CREATE TRIGGER IF NOT EXISTS {name}_insert AFTER INSERT ON {name} BEGIN
    INSERT INTO changes (kind, id) VALUES ('{kind}', NEW.id);
END;
CREATE TRIGGER IF NOT EXISTS {name}_update AFTER UPDATE ON {name}
WHEN OLD.id IS NOT NEW.id OR {differs} BEGIN
    INSERT INTO changes (kind, id) SELECT '{kind}', OLD.id WHERE OLD.id IS NOT NEW.id;
    INSERT INTO changes (kind, id) VALUES ('{kind}', NEW.id);
END;
CREATE TRIGGER IF NOT EXISTS {name}_delete AFTER DELETE ON {name} BEGIN
    INSERT INTO changes (kind, id) VALUES ('{kind}', OLD.id);
END;
"
    )
}

/// The trigger that prunes the change log; in SQL so every writer prunes.
fn prune_trigger() -> String {
    format!(
        "
CREATE TRIGGER IF NOT EXISTS changes_prune AFTER INSERT ON changes
WHEN NEW.seq % {PRUNE_EVERY} = 0 BEGIN
    DELETE FROM changes WHERE seq <= NEW.seq - {CHANGES_KEPT};
END;
"
    )
}

/// Inserts a row, or updates it only when some column differs (so that
/// re-importing the same object logs no change).
pub(super) fn upsert_sql(t: &Table) -> String {
    let cols = t.cols.join(", ");
    let marks = (2..=t.cols.len() + 1)
        .map(|i| format!("?{i}"))
        .collect::<Vec<_>>()
        .join(", ");
    let sets = t
        .cols
        .iter()
        .map(|c| format!("{c} = excluded.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    let differs = differs(t, t.name, "excluded");
    format!(
        "INSERT INTO {} (id, {cols}) VALUES (?1, {marks})
         ON CONFLICT (id) DO UPDATE SET {sets} WHERE {differs}",
        t.name
    )
}

/// `id` and the columns of `t`, for the rows `filter` (a WHERE clause, or "") selects, by id.
pub(super) fn select_sql(t: &Table, filter: &str) -> String {
    format!(
        "SELECT id, {} FROM {} {filter} ORDER BY id",
        t.cols.join(", "),
        t.name
    )
}
