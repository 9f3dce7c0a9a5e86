//! The embedded SQLite store of networks, subnets, ports, network ids and leases.
//!
//! All SQL lives here, behind plain methods, so that another backend (Neutron's
//! own database) can be added without touching the sync logic.
//!
//! Every insert, update or delete of a network, subnet or port is logged in the
//! `changes` table by SQLite triggers, so a daemon polling [`Db::changes_since`]
//! sees the writes of any writer: this process, another xdhcp, or a script using
//! sqlite3. An update that changes no column logs nothing. The log keeps about
//! the newest [`CHANGES_KEPT`] rows; a reader that fell further behind gets a
//! [`ChangeLogGap`] error from [`Db::changes_since`] and must reload everything
//! (see [`Db::snapshot_at`]).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use rusqlite::{
    params, Connection, OpenFlags, OptionalExtension, Row, Transaction, TransactionBehavior,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::neutron::import;
use crate::neutron::model::{parse_mac, Change, ImportDoc, Kind, Network, Port, Snapshot, Subnet};

/// How many rows of the change log are kept, at least.
pub const CHANGES_KEPT: u64 = 100_000;

/// The log is pruned when a change's seq is a multiple of this.
const PRUNE_EVERY: u64 = 1_000;

/// How long a statement waits for another connection's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// `PRAGMA user_version` of the schema this code writes.
const SCHEMA_VERSION: i64 = 1;

/// The states a lease can be recorded in.
const LEASE_STATES: [&str; 3] = ["bound", "released", "declined"];

/// The store.
pub struct Db {
    conn: Connection,
    path: PathBuf,
}

/// What [`Db::import`] wrote: the number of objects of each kind in the document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportSummary {
    pub networks: usize,
    pub subnets: usize,
    pub ports: usize,
}

/// A lease handed out by the DHCP server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeaseRecord {
    pub network_id: String,
    pub mac: String,
    pub ip: Ipv4Addr,
    pub port_id: String,
    /// Unix seconds; `None` = infinite.
    pub expires: Option<u64>,
    /// "bound" | "released" | "declined".
    pub state: String,
    /// Unix seconds.
    pub updated: u64,
}

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

/// One table of Neutron objects: its name, kind and columns besides `id`.
struct Table {
    name: &'static str,
    kind: Kind,
    cols: &'static [&'static str],
}

const NETWORKS: Table = Table {
    name: "networks",
    kind: Kind::Network,
    cols: &["name", "mtu"],
};

const SUBNETS: Table = Table {
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

const PORTS: Table = Table {
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

/// `a.c1 IS NOT b.c1 OR …`: some column of the table differs between rows `a` and `b`.
fn differs(t: &Table, a: &str, b: &str) -> String {
    t.cols
        .iter()
        .map(|c| format!("{a}.{c} IS NOT {b}.{c}"))
        .collect::<Vec<_>>()
        .join(" OR ")
}

/// The triggers that log every change of a table's rows.
fn triggers(t: &Table) -> String {
    let (name, kind) = (t.name, kind_str(t.kind));
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
fn upsert_sql(t: &Table) -> String {
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

fn select_sql(t: &Table, filter: &str) -> String {
    format!(
        "SELECT id, {} FROM {} {filter} ORDER BY id",
        t.cols.join(", "),
        t.name
    )
}

fn kind_str(k: Kind) -> &'static str {
    match k {
        Kind::Network => "network",
        Kind::Subnet => "subnet",
        Kind::Port => "port",
    }
}

fn kind_of(s: &str) -> Option<Kind> {
    match s {
        "network" => Some(Kind::Network),
        "subnet" => Some(Kind::Subnet),
        "port" => Some(Kind::Port),
        _ => None,
    }
}

fn to_json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("model types serialize")
}

fn from_json<T: DeserializeOwned>(row: &Row, idx: usize, col: &str) -> Result<T> {
    let s: String = row.get(idx)?;
    serde_json::from_str(&s).with_context(|| format!("{col} {s:?} is not valid"))
}

fn network_of(row: &Row) -> Result<Network> {
    Ok(Network {
        id: row.get(0)?,
        name: row.get(1)?,
        mtu: row.get(2)?,
    })
}

fn subnet_of(row: &Row) -> Result<Subnet> {
    let gateway: Option<String> = row.get(4)?;
    Ok(Subnet {
        id: row.get(0)?,
        network_id: row.get(1)?,
        ip_version: row.get(2)?,
        cidr: row.get(3)?,
        gateway_ip: gateway
            .map(|g| {
                g.parse()
                    .map_err(|_| anyhow!("gateway_ip {g:?} is not an IP address"))
            })
            .transpose()?,
        enable_dhcp: row.get(5)?,
        dns_nameservers: from_json(row, 6, "dns_nameservers")?,
        host_routes: from_json(row, 7, "host_routes")?,
        allocation_pools: from_json(row, 8, "allocation_pools")?,
    })
}

fn port_of(row: &Row) -> Result<Port> {
    Ok(Port {
        id: row.get(0)?,
        network_id: row.get(1)?,
        mac_address: row.get(2)?,
        fixed_ips: from_json(row, 3, "fixed_ips")?,
        device_owner: row.get(4)?,
        dns_name: row.get(5)?,
        extra_dhcp_opts: from_json(row, 6, "extra_dhcp_opts")?,
        admin_state_up: row.get(7)?,
    })
}

/// Rows of `t` matching `filter` (a WHERE clause using `?1`, or "" for all).
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
        out.push(of(row).with_context(|| format!("{} {id} is unreadable", kind_str(t.kind)))?);
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

fn write_network(conn: &Connection, n: &Network) -> Result<()> {
    conn.prepare_cached(&upsert_sql(&NETWORKS))?
        .execute(params![n.id, n.name, n.mtu])
        .with_context(|| format!("writing network {}", n.id))?;
    Ok(())
}

fn write_subnet(conn: &Connection, s: &Subnet) -> Result<()> {
    conn.prepare_cached(&upsert_sql(&SUBNETS))?
        .execute(params![
            s.id,
            s.network_id,
            s.ip_version,
            s.cidr,
            s.gateway_ip.map(|g| g.to_string()),
            s.enable_dhcp,
            to_json(&s.dns_nameservers),
            to_json(&s.host_routes),
            to_json(&s.allocation_pools),
        ])
        .with_context(|| format!("writing subnet {}", s.id))?;
    Ok(())
}

fn write_port(conn: &Connection, p: &Port) -> Result<()> {
    conn.prepare_cached(&upsert_sql(&PORTS))?
        .execute(params![
            p.id,
            p.network_id,
            p.mac_address,
            to_json(&p.fixed_ips),
            p.device_owner,
            p.dns_name,
            to_json(&p.extra_dhcp_opts),
            p.admin_state_up,
        ])
        .with_context(|| format!("writing port {}", p.id))?;
    Ok(())
}

/// The newest change-log position: what AUTOINCREMENT last handed out, so it
/// does not go back when rows are deleted.
fn last_seq(conn: &Connection) -> Result<u64> {
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

/// Checks `doc` against what `tx` sees (plus `doc` itself), then writes it.
fn validate_and_write(tx: &Transaction, doc: &ImportDoc, ctx: &str) -> Result<()> {
    let existing = read_snapshot(tx).with_context(|| ctx.to_string())?;
    import::validate(doc, &existing)?;
    let write = || -> Result<()> {
        doc.networks.iter().try_for_each(|n| write_network(tx, n))?;
        doc.subnets.iter().try_for_each(|s| write_subnet(tx, s))?;
        doc.ports.iter().try_for_each(|p| write_port(tx, p))?;
        Ok(())
    };
    write().with_context(|| ctx.to_string())
}

fn to_i64(v: u64, what: &str) -> Result<i64> {
    i64::try_from(v).map_err(|_| anyhow!("{what} {v} is too large"))
}

impl Db {
    /// Opens (creating it, its directory and its schema if missing) the database at `path`.
    pub fn open(path: &Path) -> Result<Db> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating directory {}", dir.display()))?;
        }
        let conn = Connection::open(path)
            .with_context(|| format!("opening database {}", path.display()))?;
        let mut db = Db {
            conn,
            path: path.to_owned(),
        };
        db.init()
            .with_context(|| format!("setting up database {}", path.display()))?;
        Ok(db)
    }

    /// Opens an existing database for reading only: creates, migrates and
    /// locks nothing, so the read-only commands work on a read-only
    /// filesystem, a full disk, or while an import holds the write lock.
    pub fn open_read_only(path: &Path) -> Result<Db> {
        if !path.exists() {
            bail!("database {} does not exist", path.display());
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags)
            .and_then(|c| {
                // WAL needs its -shm file; on a read-only filesystem without one,
                // read the file as it is (nothing can be writing to it there).
                c.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))
                    .map(|_| c)
            })
            .or_else(|_| {
                let uri = format!("file:{}?immutable=1", path.display());
                Connection::open_with_flags(uri, flags | OpenFlags::SQLITE_OPEN_URI)
            })
            .with_context(|| format!("opening database {} read-only", path.display()))?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .with_context(|| format!("reading database {}", path.display()))?;
        if version > SCHEMA_VERSION {
            bail!(
                "schema version {version} of {} is newer than this xdhcp knows ({SCHEMA_VERSION})",
                path.display()
            );
        }
        if version == 0 {
            bail!("{} is not an xdhcp database (no schema)", path.display());
        }
        Ok(Db {
            conn,
            path: path.to_owned(),
        })
    }

    fn init(&mut self) -> Result<()> {
        self.conn.busy_timeout(BUSY_TIMEOUT)?;
        // Readers (the daemon) never block writers (import, scripts) and vice versa.
        let mode: String = self
            .conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(path = %self.path.display(), mode, "database is not in WAL mode");
        }
        self.conn.pragma_update(None, "synchronous", "NORMAL")?;
        let tx = self.write_tx()?;
        let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version > SCHEMA_VERSION {
            bail!("schema version {version} is newer than this xdhcp knows ({SCHEMA_VERSION})");
        }
        tx.execute_batch(SCHEMA)?;
        for t in [&NETWORKS, &SUBNETS, &PORTS] {
            tx.execute_batch(&triggers(t))?;
        }
        tx.execute_batch(&prune_trigger())?;
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        tx.commit()?;
        Ok(())
    }

    /// A write transaction that takes the lock at once, so it never fails
    /// half-way for want of it.
    fn write_tx(&mut self) -> Result<Transaction<'_>> {
        Ok(self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?)
    }

    /// "… in /var/lib/xdhcp/xdhcp.db", for error context.
    fn ctx(&self, what: &str) -> String {
        format!("{what} in {}", self.path.display())
    }

    /// The file this store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// All networks, subnets and ports, each sorted by id.
    pub fn snapshot(&self) -> Result<Snapshot> {
        Ok(self.snapshot_at()?.0)
    }

    /// All networks, subnets and ports, and the change-log position they
    /// include: poll [`Db::changes_since`] from it to miss nothing.
    pub fn snapshot_at(&self) -> Result<(Snapshot, u64)> {
        let read = || -> Result<(Snapshot, u64)> {
            // One read transaction: the snapshot and the position agree.
            let tx = self.conn.unchecked_transaction()?;
            let seq = last_seq(&tx)?;
            Ok((read_snapshot(&tx)?, seq))
        };
        read().with_context(|| self.ctx("reading networks, subnets and ports"))
    }

    /// The network `id`, if stored.
    pub fn network(&self, id: &str) -> Result<Option<Network>> {
        read_one(&self.conn, &NETWORKS, id, network_of)
            .with_context(|| self.ctx("reading a network"))
    }

    /// The subnet `id`, if stored.
    pub fn subnet(&self, id: &str) -> Result<Option<Subnet>> {
        read_one(&self.conn, &SUBNETS, id, subnet_of).with_context(|| self.ctx("reading a subnet"))
    }

    /// The port `id`, if stored.
    pub fn port(&self, id: &str) -> Result<Option<Port>> {
        read_one(&self.conn, &PORTS, id, port_of).with_context(|| self.ctx("reading a port"))
    }

    /// The newest change-log position (0 when nothing was ever logged).
    pub fn last_seq(&self) -> Result<u64> {
        last_seq(&self.conn).with_context(|| self.ctx("reading the change log"))
    }

    /// The oldest change-log position still logged (`last_seq() + 1` when the
    /// log is empty): a reader at `seq` can catch up iff `seq + 1 >= oldest_seq()`.
    pub fn oldest_seq(&self) -> Result<u64> {
        oldest_seq(&self.conn).with_context(|| self.ctx("reading the change log"))
    }

    /// Every change with a position after `seq`, in order.
    ///
    /// Fails with a [`ChangeLogGap`] (test with `err.is::<ChangeLogGap>()`)
    /// when some of them were pruned, or when `seq` is past the newest
    /// position (the database was replaced): the caller must reload everything.
    pub fn changes_since(&self, seq: u64) -> Result<Vec<Change>> {
        let read = || -> Result<std::result::Result<Vec<Change>, ChangeLogGap>> {
            let tx = self.conn.unchecked_transaction()?;
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
                let kind =
                    kind_of(&kind).ok_or_else(|| anyhow!("change {s}: unknown kind {kind:?}"))?;
                out.push(Change {
                    seq: s as u64,
                    kind,
                    id,
                });
            }
            Ok(Ok(out))
        };
        Ok(read().with_context(|| self.ctx("reading the change log"))??)
    }

    /// SQLite's `PRAGMA data_version`: changes when another connection commits
    /// (never for this connection's own writes).
    pub fn data_version(&self) -> Result<i64> {
        self.conn
            .query_row("PRAGMA data_version", [], |r| r.get(0))
            .with_context(|| self.ctx("reading data_version"))
    }

    /// Validates `doc` against the stored objects, then writes all of it in
    /// one transaction: on any error nothing is written.
    pub fn import(&mut self, doc: &ImportDoc) -> Result<ImportSummary> {
        let ctx = self.ctx("importing");
        let tx = self.write_tx().with_context(|| ctx.clone())?;
        validate_and_write(&tx, doc, &ctx)?;
        tx.commit().with_context(|| ctx.clone())?;
        Ok(ImportSummary {
            networks: doc.networks.len(),
            subnets: doc.subnets.len(),
            ports: doc.ports.len(),
        })
    }

    /// Makes the store hold exactly what `doc` says of the networks it lists
    /// (an agent's resync of a network): their subnets and ports that `doc`
    /// lacks are removed, the rest validated and upserted, in one transaction.
    pub fn replace_networks(&mut self, doc: &ImportDoc) -> Result<()> {
        let ctx = self.ctx("replacing networks");
        let tx = self.write_tx().with_context(|| ctx.clone())?;
        let prune = || -> Result<()> {
            for n in &doc.networks {
                for (table, kept) in [
                    (
                        "ports",
                        doc.ports
                            .iter()
                            .filter(|p| p.network_id == n.id)
                            .map(|p| p.id.as_str())
                            .collect::<std::collections::HashSet<_>>(),
                    ),
                    (
                        "subnets",
                        doc.subnets
                            .iter()
                            .filter(|s| s.network_id == n.id)
                            .map(|s| s.id.as_str())
                            .collect(),
                    ),
                ] {
                    let ids: Vec<String> = {
                        let mut stmt = tx.prepare_cached(&format!(
                            "SELECT id FROM {table} WHERE network_id = ?1"
                        ))?;
                        let rows = stmt.query_map([&n.id], |r| r.get(0))?;
                        rows.collect::<rusqlite::Result<_>>()?
                    };
                    for id in ids.iter().filter(|id| !kept.contains(id.as_str())) {
                        tx.execute(&format!("DELETE FROM {table} WHERE id = ?1"), [id])?;
                    }
                }
            }
            Ok(())
        };
        prune().with_context(|| ctx.clone())?;
        validate_and_write(&tx, doc, &ctx)?;
        tx.commit().with_context(|| ctx.clone())?;
        Ok(())
    }

    /// Every network id in the store.
    pub fn network_ids(&self) -> Result<Vec<String>> {
        let read = || -> Result<Vec<String>> {
            let mut stmt = self
                .conn
                .prepare_cached("SELECT id FROM networks ORDER BY id")?;
            let rows = stmt.query_map([], |r| r.get(0))?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        };
        read().with_context(|| self.ctx("listing networks"))
    }

    /// Deletes an object. A network takes its subnets and ports with it; a
    /// subnet is removed from the fixed_ips of the ports that use it.
    pub fn delete(&mut self, kind: Kind, id: &str) -> Result<()> {
        let ctx = self.ctx(&format!("deleting {} {id}", kind_str(kind)));
        let tx = self.write_tx().with_context(|| ctx.clone())?;
        let found = match kind {
            Kind::Network => (|| -> Result<bool> {
                tx.execute("DELETE FROM ports WHERE network_id = ?1", [id])?;
                tx.execute("DELETE FROM subnets WHERE network_id = ?1", [id])?;
                Ok(tx.execute("DELETE FROM networks WHERE id = ?1", [id])? > 0)
            })(),
            Kind::Subnet => (|| -> Result<bool> {
                // A cheap superset of the ports using the subnet, then the exact test.
                let users = read(
                    &tx,
                    &PORTS,
                    "WHERE instr(fixed_ips, ?1) > 0",
                    Some(id),
                    port_of,
                )?;
                for mut p in users {
                    let before = p.fixed_ips.len();
                    p.fixed_ips.retain(|f| f.subnet_id != id);
                    if p.fixed_ips.len() != before {
                        write_port(&tx, &p)?;
                    }
                }
                Ok(tx.execute("DELETE FROM subnets WHERE id = ?1", [id])? > 0)
            })(),
            Kind::Port => (|| -> Result<bool> {
                Ok(tx.execute("DELETE FROM ports WHERE id = ?1", [id])? > 0)
            })(),
        }
        .with_context(|| ctx.clone())?;
        if !found {
            bail!("no {} {id}", kind_str(kind));
        }
        tx.commit().with_context(|| ctx.clone())?;
        Ok(())
    }

    /// The small id (>= 1) of a network, allocated on first use and never reused.
    pub fn net_id(&mut self, network_id: &str) -> Result<u32> {
        let ctx = self.ctx(&format!("allocating an id for network {network_id}"));
        let alloc = |tx: &Transaction| -> Result<i64> {
            let get = |tx: &Transaction| {
                tx.query_row(
                    "SELECT net_id FROM net_ids WHERE network_id = ?1",
                    [network_id],
                    |r| r.get(0),
                )
                .optional()
            };
            if let Some(id) = get(tx)? {
                return Ok(id);
            }
            // Only when missing: an upsert that does nothing still uses up an AUTOINCREMENT value.
            tx.execute("INSERT INTO net_ids (network_id) VALUES (?1)", [network_id])?;
            Ok(tx.last_insert_rowid())
        };
        let tx = self.write_tx().with_context(|| ctx.clone())?;
        let id = alloc(&tx).with_context(|| ctx.clone())?;
        tx.commit().with_context(|| ctx.clone())?;
        u32::try_from(id)
            .map_err(|_| anyhow!("net_id {id} of network {network_id} is out of range"))
    }

    /// Every allocated (network_id, net_id), by net_id.
    pub fn net_ids(&self) -> Result<Vec<(String, u32)>> {
        let read = || -> Result<Vec<(String, u32)>> {
            let mut stmt = self
                .conn
                .prepare_cached("SELECT network_id, net_id FROM net_ids ORDER BY net_id")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        };
        read().with_context(|| self.ctx("reading net_ids"))
    }

    /// Records a lease, replacing the one of the same (network_id, mac).
    pub fn record_lease(&mut self, l: &LeaseRecord) -> Result<()> {
        self.record_leases(std::slice::from_ref(l))
    }

    /// Records leases in one transaction, each replacing the one of the same
    /// (network_id, mac). A malformed record fails the whole batch, naming it.
    pub fn record_leases(&mut self, leases: &[LeaseRecord]) -> Result<()> {
        let mut rows = Vec::with_capacity(leases.len());
        for l in leases {
            if parse_mac(&l.mac).is_none() {
                bail!(
                    "lease on network {}: mac {:?} is not a MAC address",
                    l.network_id,
                    l.mac
                );
            }
            if !LEASE_STATES.contains(&l.state.as_str()) {
                bail!(
                    "lease of {} on network {}: state {:?} is not one of {LEASE_STATES:?}",
                    l.mac,
                    l.network_id,
                    l.state
                );
            }
            let expires = l.expires.map(|e| to_i64(e, "expires")).transpose()?;
            rows.push((l, expires, to_i64(l.updated, "updated")?));
        }
        let ctx = self.ctx(&format!("recording {} lease(s)", leases.len()));
        let write = |tx: &Transaction| -> Result<()> {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO leases (network_id, mac, ip, port_id, expires, state, updated)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (network_id, mac) DO UPDATE SET ip = excluded.ip,
                     port_id = excluded.port_id, expires = excluded.expires,
                     state = excluded.state, updated = excluded.updated",
            )?;
            for (l, expires, updated) in &rows {
                stmt.execute(params![
                    l.network_id,
                    l.mac,
                    l.ip.to_string(),
                    l.port_id,
                    expires,
                    l.state,
                    updated
                ])
                .with_context(|| format!("the lease of {} on network {}", l.mac, l.network_id))?;
            }
            Ok(())
        };
        let tx = self.write_tx().with_context(|| ctx.clone())?;
        write(&tx).with_context(|| ctx.clone())?;
        tx.commit().with_context(|| ctx.clone())?;
        Ok(())
    }

    /// Adds to named counters (the slow path's), creating them at 0.
    pub fn add_counters(&mut self, counts: &[(String, u64)]) -> Result<()> {
        let ctx = self.ctx("saving counters");
        let add = |tx: &Transaction| -> Result<()> {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO counters (name, value) VALUES (?1, ?2)
                 ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
            )?;
            for (name, v) in counts {
                stmt.execute(params![name, to_i64(*v, name)?])?;
            }
            Ok(())
        };
        let tx = self.write_tx().with_context(|| ctx.clone())?;
        add(&tx).with_context(|| ctx.clone())?;
        tx.commit().with_context(|| ctx.clone())?;
        Ok(())
    }

    /// Every named counter, by name.
    pub fn counters(&self) -> Result<Vec<(String, u64)>> {
        let read = || -> Result<Vec<(String, u64)>> {
            let mut stmt = self
                .conn
                .prepare_cached("SELECT name, value FROM counters ORDER BY name")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        };
        read().with_context(|| self.ctx("reading counters"))
    }

    /// Every recorded lease, by network and MAC.
    pub fn leases(&self) -> Result<Vec<LeaseRecord>> {
        let read = || -> Result<Vec<LeaseRecord>> {
            let mut stmt = self.conn.prepare_cached(
                "SELECT network_id, mac, ip, port_id, expires, state, updated
                 FROM leases ORDER BY network_id, mac",
            )?;
            let mut rows = stmt.query([])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                let ip: String = r.get(2)?;
                let expires: Option<i64> = r.get(4)?;
                let updated: i64 = r.get(6)?;
                out.push(LeaseRecord {
                    network_id: r.get(0)?,
                    mac: r.get(1)?,
                    ip: ip
                        .parse()
                        .with_context(|| format!("lease ip {ip:?} is not an IPv4 address"))?,
                    port_id: r.get(3)?,
                    expires: expires.map(|e| e as u64),
                    state: r.get(5)?,
                    updated: updated as u64,
                });
            }
            Ok(out)
        };
        read().with_context(|| self.ctx("reading leases"))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::neutron::import::parse;

    /// A database in a fresh directory under /tmp, removed on drop.
    struct TempDb {
        dir: PathBuf,
        db: Option<Db>,
    }

    impl TempDb {
        fn new(name: &str) -> TempDb {
            static N: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "xdhcp-db-test-{}-{}-{name}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&dir);
            // A subdirectory, so open() has to create it.
            let db = Db::open(&dir.join("sub").join("xdhcp.db")).unwrap();
            TempDb { dir, db: Some(db) }
        }

        fn db(&mut self) -> &mut Db {
            self.db.as_mut().unwrap()
        }

        fn reopen(&mut self) {
            let path = self.db.take().unwrap().path;
            self.db = Some(Db::open(&path).unwrap());
        }

        /// A second, plain connection: another writer, such as a sqlite3 script.
        fn other(&mut self) -> Connection {
            let c = Connection::open(self.db().path()).unwrap();
            c.busy_timeout(BUSY_TIMEOUT).unwrap();
            c
        }
    }

    impl Drop for TempDb {
        fn drop(&mut self) {
            self.db = None;
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// Two networks; a v4 and a v6 subnet on n1, a v4 one on n2; three ports.
    const BASE: &str = r#"{
      "networks": [{"id": "n1", "name": "one", "mtu": 1450}, {"id": "n2", "name": "two"}],
      "subnets": [
        {"id": "s1", "network_id": "n1", "cidr": "10.0.0.0/24", "gateway_ip": "10.0.0.1",
         "dns_nameservers": ["10.0.0.53"], "allocation_pools": [{"start": "10.0.0.2", "end": "10.0.0.250"}],
         "host_routes": [{"destination": "192.168.7.0/24", "nexthop": "10.0.0.254"}]},
        {"id": "s6", "network_id": "n1", "ip_version": 6, "cidr": "fd00::/64"},
        {"id": "s2", "network_id": "n2", "cidr": "10.1.0.0/24", "enable_dhcp": false}
      ],
      "ports": [
        {"id": "p1", "network_id": "n1", "mac_address": "fa:16:3e:00:00:01",
         "fixed_ips": [{"subnet_id": "s1", "ip_address": "10.0.0.5"}], "device_owner": "compute:nova",
         "dns_name": "vm1", "extra_dhcp_opts": [{"opt_name": "tftp-server", "opt_value": "10.0.0.9"},
                                                 {"opt_name": "server-ip-address", "opt_value": "10.0.0.9"}]},
        {"id": "p2", "network_id": "n1", "mac_address": "fa:16:3e:00:00:02",
         "fixed_ips": [{"subnet_id": "s1", "ip_address": "10.0.0.6"}, {"subnet_id": "s6", "ip_address": "fd00::6"}]},
        {"id": "p3", "network_id": "n2", "mac_address": "fa:16:3e:00:00:01",
         "fixed_ips": [{"subnet_id": "s2", "ip_address": "10.1.0.5"}], "admin_state_up": false}
      ]
    }"#;

    fn base() -> ImportDoc {
        parse(BASE).unwrap()
    }

    fn loaded(name: &str) -> TempDb {
        let mut t = TempDb::new(name);
        t.db().import(&base()).unwrap();
        t
    }

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

    fn changes(db: &Db, since: u64) -> Vec<(Kind, String)> {
        db.changes_since(since)
            .unwrap()
            .into_iter()
            .map(|c| (c.kind, c.id))
            .collect()
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

    #[test]
    fn a_batch_of_leases_is_written_whole_or_not_at_all() {
        let mut t = TempDb::new("lease-batch");
        let lease = |i: u8| LeaseRecord {
            network_id: "n1".into(),
            mac: format!("fa:16:3e:00:00:{i:02x}"),
            ip: Ipv4Addr::new(10, 0, 0, i),
            port_id: format!("p{i}"),
            expires: Some(1_700_000_000),
            state: "bound".into(),
            updated: 1_699_990_000,
        };
        let good: Vec<_> = (1..=3).map(lease).collect();
        t.db().record_leases(&good).unwrap();
        let mut with_bad = vec![lease(4), lease(5)];
        with_bad[1].mac = "fa:16:3e:zz".into();
        let err = format!("{:#}", t.db().record_leases(&with_bad).unwrap_err());
        assert!(err.contains(r#""fa:16:3e:zz""#), "{err}");
        t.reopen();
        assert_eq!(t.db().leases().unwrap(), good, "nothing of the bad batch");
    }

    #[test]
    fn leases_round_trip() {
        let mut t = TempDb::new("leases");
        let a = LeaseRecord {
            network_id: "n1".into(),
            mac: "fa:16:3e:00:00:01".into(),
            ip: Ipv4Addr::new(10, 0, 0, 5),
            port_id: "p1".into(),
            expires: Some(1_700_000_000),
            state: "bound".into(),
            updated: 1_699_990_000,
        };
        let b = LeaseRecord {
            network_id: "n2".into(),
            expires: None,
            ..a.clone()
        };
        t.db().record_lease(&a).unwrap();
        t.db().record_lease(&b).unwrap();
        let a2 = LeaseRecord {
            state: "released".into(),
            updated: 1_700_000_100,
            ..a.clone()
        };
        t.db().record_lease(&a2).unwrap();
        t.reopen();
        assert_eq!(t.db().leases().unwrap(), [a2, b]);
        // Leases are not objects of the change log.
        assert_eq!(t.db().last_seq().unwrap(), 0);

        let bad = LeaseRecord {
            state: "stolen".into(),
            ..a.clone()
        };
        let err = format!("{:#}", t.db().record_lease(&bad).unwrap_err());
        assert!(err.contains(r#"state "stolen""#), "{err}");
        let bad = LeaseRecord {
            mac: "nope".into(),
            ..a
        };
        assert!(t.db().record_lease(&bad).is_err());
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

    #[test]
    fn open_names_the_file() {
        let t = TempDb::new("open");
        // A directory where the file should be.
        let path = t.dir.join("sub");
        let err = format!(
            "{:#}",
            Db::open(&path).err().expect("opening a directory fails")
        );
        assert!(err.contains(&*path.to_string_lossy()), "{err}");
    }
}
