//! What the store's tests share: a database in a fresh directory, and a
//! document with a bit of everything.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use rusqlite::Connection;

use crate::neutron::import::parse;
use crate::neutron::model::{ImportDoc, Kind};
use crate::store::{Db, BUSY_TIMEOUT};

/// A database in a fresh directory under /tmp, removed on drop.
pub struct TempDb {
    pub dir: PathBuf,
    db: Option<Db>,
}

impl TempDb {
    pub fn new(name: &str) -> TempDb {
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

    pub fn db(&mut self) -> &mut Db {
        self.db.as_mut().unwrap()
    }

    pub fn reopen(&mut self) {
        let path = self.db.take().unwrap().path;
        self.db = Some(Db::open(&path).unwrap());
    }

    /// A second, plain connection: another writer, such as a sqlite3 script.
    pub fn other(&mut self) -> Connection {
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
pub const BASE: &str = r#"{
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

/// [`BASE`], parsed.
pub fn base() -> ImportDoc {
    parse(BASE).unwrap()
}

/// A database holding [`BASE`] (8 changes logged).
pub fn loaded(name: &str) -> TempDb {
    let mut t = TempDb::new(name);
    t.db().import(&base()).unwrap();
    t
}

/// The (kind, id) of every change after `since`.
pub fn changes(db: &Db, since: u64) -> Vec<(Kind, String)> {
    db.changes_since(since)
        .unwrap()
        .into_iter()
        .map(|c| (c.kind, c.id))
        .collect()
}
