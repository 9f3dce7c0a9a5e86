//! The embedded SQLite store of networks, subnets, ports, network ids and leases.
//!
//! All SQL lives here, behind plain methods, so that another backend (Neutron's
//! own database) can be added without touching the sync logic. By role:
//! [`schema`] the tables and triggers, [`objects`] Neutron's objects (import,
//! replace, delete, snapshot), [`changes`] the change log, [`netids`] the
//! small network ids of the maps, [`leases`] leases and counters. Every write
//! goes through one transaction helper, [`Db::write`].
//!
//! Every insert, update or delete of a network, subnet or port is logged in the
//! `changes` table by SQLite triggers, so a daemon polling [`Db::changes_since`]
//! sees the writes of any writer: this process, another xdhcp, or a script using
//! sqlite3. An update that changes no column logs nothing. The log keeps about
//! the newest [`CHANGES_KEPT`] rows; a reader that fell further behind gets a
//! [`ChangeLogGap`] error from [`Db::changes_since`] and must reload everything
//! (see [`Db::snapshot_at`]).

mod changes;
mod leases;
mod netids;
mod objects;
mod schema;
#[cfg(test)]
pub(crate) mod testdb;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use rusqlite::{Connection, OpenFlags, TransactionBehavior};

pub use changes::{ChangeLogGap, CHANGES_KEPT};
pub use leases::{LeaseRecord, LeaseState};
pub use objects::ImportSummary;

use schema::SCHEMA_VERSION;

/// How long a statement waits for another connection's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The store.
pub struct Db {
    conn: Connection,
    path: PathBuf,
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
        db.init()?;
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
        let pragmas = || -> Result<()> {
            self.conn.busy_timeout(BUSY_TIMEOUT)?;
            // Readers (the daemon) never block writers (import, scripts) and vice versa.
            let mode: String = self
                .conn
                .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
            if !mode.eq_ignore_ascii_case("wal") {
                tracing::warn!(path = %self.path.display(), mode, "database is not in WAL mode");
            }
            self.conn.pragma_update(None, "synchronous", "NORMAL")?;
            Ok(())
        };
        pragmas().with_context(|| self.ctx("setting up the database"))?;
        self.write("setting up the schema", schema::migrate)
    }

    /// "… in /var/lib/xdhcp/xdhcp.db", for error context.
    fn ctx(&self, what: &str) -> String {
        format!("{what} in {}", self.path.display())
    }

    /// Runs `f` in one write transaction, committed only when `f` succeeds:
    /// on any error nothing of it is written. The transaction takes the write
    /// lock at once, so it never fails half-way for want of it. Errors say
    /// `what` was being done ("importing"), and in which file. Every write of
    /// the store goes through here.
    fn write<T>(&mut self, what: &str, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let ctx = self.ctx(what);
        let conn = &mut self.conn;
        let run = move || -> Result<T> {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let out = f(&tx)?;
            tx.commit()?;
            Ok(out)
        };
        run().with_context(|| ctx)
    }

    /// Runs the reads `f`; errors say `what` was being read, and in which file.
    /// Reads that must agree with each other open a read transaction inside `f`.
    fn read<T>(&self, what: &str, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        f(&self.conn).with_context(|| self.ctx(what))
    }

    /// The file this store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// A count or time as SQLite's integer; an error naming it when it does not fit.
fn to_i64(v: u64, what: &str) -> Result<i64> {
    i64::try_from(v).map_err(|_| anyhow!("{what} {v} is too large"))
}

#[cfg(test)]
mod tests {
    use super::testdb::TempDb;
    use super::*;

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

    #[test]
    fn a_newer_schema_is_refused() {
        let mut t = TempDb::new("newer");
        t.other()
            .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        let path = t.db().path().to_owned();
        for err in [
            Db::open(&path).err().expect("open refuses it"),
            Db::open_read_only(&path)
                .err()
                .expect("open_read_only refuses it"),
        ] {
            let err = format!("{err:#}");
            assert!(
                err.contains(&format!("schema version {} ", SCHEMA_VERSION + 1)),
                "{err}"
            );
            assert!(err.contains(&*path.to_string_lossy()), "{err}");
        }
    }

    #[test]
    fn a_failed_write_commits_nothing_and_names_what_and_where() {
        let mut t = TempDb::new("write");
        let err = t
            .db()
            .write("testing", |tx| -> Result<()> {
                tx.execute("INSERT INTO counters (name, value) VALUES ('x', 1)", [])?;
                bail!("boom")
            })
            .unwrap_err();
        let err = format!("{err:#}");
        let path = t.db().path().display().to_string();
        assert!(err.starts_with(&format!("testing in {path}: ")), "{err}");
        assert!(err.ends_with("boom"), "{err}");
        assert!(t.db().counters().unwrap().is_empty(), "rolled back");
    }
}
