//! The store follower and the plan driver: committed database changes into
//! the model, the networks they touch marked dirty, and dirty networks
//! planned and written into the maps (retried with backoff until they are).

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::Result;

use crate::{
    config::AgentConfig,
    daemon::{health, Daemon},
    neutron::model::{Change, Kind},
    plan::{Model, PlannedNet},
    store::{ChangeLogGap, Db},
};

/// The maps' network numbers (the store's net ids), looked up both ways.
#[derive(Debug, Default)]
pub(super) struct NetIds {
    by_network: HashMap<String, u32>,
    by_net: HashMap<u32, String>,
}

impl NetIds {
    /// Every net id the store has assigned.
    pub(super) fn load(db: &Db) -> Result<Self> {
        let mut ids = NetIds::default();
        for (network, id) in db.net_ids()? {
            ids.insert(network, id);
        }
        Ok(ids)
    }

    fn insert(&mut self, network_id: String, id: u32) {
        self.by_net.insert(id, network_id.clone());
        self.by_network.insert(network_id, id);
    }

    /// `network_id`'s net id, assigned by the store when it has none yet.
    pub(super) fn id(&mut self, db: &mut Db, network_id: &str) -> Result<u32> {
        if let Some(id) = self.by_network.get(network_id) {
            return Ok(*id);
        }
        let id = db.net_id(network_id)?;
        self.insert(network_id.to_string(), id);
        Ok(id)
    }

    /// The network whose net id is `net`.
    pub(super) fn network_of(&self, net: u32) -> Option<&str> {
        self.by_net.get(&net).map(String::as_str)
    }
}

/// A network whose changes are not in the maps yet.
struct Pending {
    failures: u32,
    next_try: Instant,
    /// The error last logged for it (logged again only when it changes).
    last_error: Option<String>,
}

/// How long a network waits after its `failures`-th failed apply.
fn backoff(failures: u32) -> Duration {
    (Duration::from_millis(100) * 2u32.saturating_pow(failures.min(9))).min(Duration::from_secs(30))
}

/// The database file's identity, to notice it being deleted or replaced.
pub(super) fn file_identity(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// What [`Follower::poll`] found.
pub(super) enum Polled {
    /// Every committed change is in the model (or there was none).
    UpToDate,
    /// The daemon fell behind the pruned change log: only a reload catches up.
    FellBehind,
}

/// The store follower: the model as of change `seq`, and the networks whose
/// changes still have to reach the maps.
pub(super) struct Follower {
    model: Model,
    seq: u64,
    data_version: i64,
    /// Networks whose changes still have to reach the maps (retried with backoff).
    dirty: HashMap<String, Pending>,
    /// When each network's changes last reached the maps (unix seconds).
    applied_at: HashMap<String, f64>,
    /// The database file followed, its (device, inode) as opened, and
    /// whether a change of it was reported.
    db_path: PathBuf,
    db_identity: Option<(u64, u64)>,
    db_moved_reported: bool,
}

impl Follower {
    /// Follows the database at `db_path` from `model`, read at change `seq`
    /// and `data_version`; `db_identity` is the file's as it was opened.
    pub(super) fn new(
        model: Model,
        seq: u64,
        data_version: i64,
        db_path: PathBuf,
        db_identity: Option<(u64, u64)>,
    ) -> Self {
        Follower {
            model,
            seq,
            data_version,
            dirty: HashMap::new(),
            applied_at: HashMap::new(),
            db_path,
            db_identity,
            db_moved_reported: false,
        }
    }

    /// Reads the whole database again.
    fn reread(&mut self, db: &Db) -> Result<()> {
        let (snapshot, seq) = db.snapshot_at()?;
        self.model = Model::from_snapshot(snapshot);
        self.seq = seq;
        self.data_version = db.data_version()?;
        Ok(())
    }

    /// Follows committed database changes into the model and marks the
    /// networks they touch dirty. The position (seq, data_version) advances
    /// only once every change read was taken in: a failure re-reads them all
    /// next time (taking one in again is harmless).
    pub(super) fn poll(&mut self, db: &Db) -> Result<Polled> {
        let version = db.data_version()?;
        if version == self.data_version {
            return Ok(Polled::UpToDate);
        }
        let changes = match db.changes_since(self.seq) {
            Ok(c) => c,
            Err(e) if e.is::<ChangeLogGap>() => {
                // Fell behind the pruned change log: start over from a snapshot.
                tracing::warn!("{e:#}; reloading everything");
                return Ok(Polled::FellBehind);
            }
            Err(e) => return Err(e),
        };
        let mut affected: HashSet<String> = HashSet::new();
        let mut seq = self.seq;
        for Change { seq: s, kind, id } in &changes {
            self.take_change(db, *kind, id, &mut affected)?;
            seq = seq.max(*s);
        }
        self.seq = seq;
        self.data_version = version;
        let now = Instant::now();
        for network_id in affected {
            let p = self.dirty.entry(network_id).or_insert(Pending {
                failures: 0,
                next_try: now,
                last_error: None,
            });
            // A new change is worth trying at once, backoff or not.
            p.next_try = now;
        }
        Ok(Polled::UpToDate)
    }

    /// Takes one change into the model, noting the networks it touches.
    fn take_change(
        &mut self,
        db: &Db,
        kind: Kind,
        id: &str,
        affected: &mut HashSet<String>,
    ) -> Result<()> {
        match kind {
            Kind::Network => {
                match db.network(id)? {
                    Some(n) => {
                        self.model.networks.insert(id.to_string(), n);
                    }
                    None => {
                        self.model.networks.remove(id);
                    }
                }
                affected.insert(id.to_string());
            }
            Kind::Subnet => {
                let now = db.subnet(id)?;
                if let Some(old) = self.model.subnets.remove(id) {
                    affected.insert(old.network_id);
                }
                if let Some(s) = now {
                    affected.insert(s.network_id.clone());
                    self.model.subnets.insert(id.to_string(), s);
                }
            }
            Kind::Port => {
                let now = db.port(id)?;
                if let Some(old) = self.model.remove_port(id) {
                    affected.insert(old.network_id);
                }
                if let Some(p) = now {
                    affected.insert(p.network_id.clone());
                    self.model.put_port(p);
                }
            }
        }
        Ok(())
    }

    /// Every network's plan with its net id, by network id.
    fn plan_all(
        &self,
        db: &mut Db,
        net_ids: &mut NetIds,
        cfg: &AgentConfig,
    ) -> Result<BTreeMap<String, (u32, PlannedNet)>> {
        let mut ids: Vec<&String> = self.model.networks.keys().collect();
        ids.sort();
        let mut plans = BTreeMap::new();
        let mut last_progress = Instant::now();
        for (i, id) in ids.iter().enumerate() {
            if let Some(plan) = self.model.plan(id, cfg) {
                let net = net_ids.id(db, id)?;
                plans.insert(id.to_string(), (net, plan));
            }
            if last_progress.elapsed() > Duration::from_secs(1) {
                tracing::info!("planning: {}/{} networks", i + 1, ids.len());
                last_progress = Instant::now();
            }
        }
        Ok(plans)
    }

    /// The dirty networks whose turn it is, sorted.
    fn due(&self) -> Vec<String> {
        let now = Instant::now();
        let mut due: Vec<String> = self
            .dirty
            .iter()
            .filter(|(_, p)| p.next_try <= now)
            .map(|(id, _)| id.clone())
            .collect();
        due.sort();
        due
    }

    /// `network_id`'s changes reached the maps: it leaves the dirty set.
    fn applied(&mut self, network_id: &str) {
        self.applied_at
            .insert(network_id.to_string(), health::unix_now_f64());
        if let Some(p) = self.dirty.remove(network_id) {
            if p.failures > 0 {
                tracing::info!(network = %network_id, failures = p.failures, "changes applied after failing");
            }
        }
    }

    /// Writing dirty `network_id` failed: it waits its backoff; the error is
    /// logged when it differs from the last one.
    fn failed(&mut self, network_id: &str, e: &anyhow::Error) {
        let msg = format!("{e:#}");
        let p = self.dirty.get_mut(network_id).expect("a dirty network");
        p.failures += 1;
        p.next_try = Instant::now() + backoff(p.failures);
        if p.last_error.as_deref() != Some(msg.as_str()) {
            tracing::error!(network = %network_id, "applying changes: {msg}; retrying with backoff");
            p.last_error = Some(msg);
        }
    }

    /// Networks with changes pending.
    pub(super) fn pending(&self) -> usize {
        self.dirty.len()
    }

    /// When `network_id`'s changes last reached the maps (unix seconds).
    pub(super) fn applied_at(&self, network_id: &str) -> Option<f64> {
        self.applied_at.get(network_id).copied()
    }

    /// Forgets when networks `served` refuses last had changes applied.
    pub(super) fn keep_applied_at(&mut self, served: impl Fn(&str) -> bool) {
        self.applied_at.retain(|id, _| served(id));
    }

    /// Reports (once per change) the database file being deleted or replaced
    /// under the daemon: it keeps serving what it has, but imports into a new
    /// file at that path do not reach it until it is restarted.
    pub(super) fn check_db_file(&mut self) {
        let now = file_identity(&self.db_path);
        let moved = now != self.db_identity;
        if moved && !self.db_moved_reported {
            let what = if now.is_none() {
                "was deleted"
            } else {
                "was replaced by another file"
            };
            tracing::error!(
                db = %self.db_path.display(),
                "the database file {what} while the daemon runs: it keeps serving what it \
                 had, but changes written at that path do not reach it; restart xdhcp to \
                 follow the file now there"
            );
        } else if !moved && self.db_moved_reported {
            tracing::info!(db = %self.db_path.display(), "the database file is back");
        }
        self.db_moved_reported = moved;
    }
}

/// The plan driver: the follower's model written into the maps, and the
/// devices told when a network's DHCP port changed.
impl Daemon {
    /// Start-up (and reload): every network planned and written, stale
    /// entries and networks no longer planned removed. A network whose writes
    /// fail stays served with what it had and is retried.
    pub(super) fn full_sync(&mut self) -> Result<()> {
        let plans = self
            .follow
            .plan_all(&mut self.db, &mut self.net_ids, &self.cfg)?;
        let ports: usize = plans.values().map(|(_, p)| p.leases.len()).sum();
        tracing::info!(networks = plans.len(), ports, "writing the maps");
        let now = health::unix_now_f64();
        for id in plans.keys() {
            self.follow.applied_at.insert(id.clone(), now);
        }
        self.opts.health.daemon().last_applied_unix = Some(now);
        for (network_id, error) in self.sync.reconcile(plans)? {
            tracing::error!(network = %network_id, "writing the maps: {error:#}; retrying with backoff");
            self.follow.dirty.insert(
                network_id,
                Pending {
                    failures: 1,
                    next_try: Instant::now() + backoff(1),
                    last_error: Some(format!("{error:#}")),
                },
            );
        }
        Ok(())
    }

    /// Reads everything again and rewrites what differs (SIGHUP, a change log
    /// the daemon fell behind of).
    pub(super) fn reload(&mut self) -> Result<()> {
        self.follow.reread(&self.db)?;
        self.full_sync()
    }

    /// Takes in the committed changes (reloading when the change log was
    /// pruned past the daemon's position).
    pub(super) fn poll_db(&mut self) -> Result<()> {
        match self.follow.poll(&self.db)? {
            Polled::UpToDate => Ok(()),
            Polled::FellBehind => self.reload(),
        }
    }

    /// Writes the dirty networks whose turn it is; a network leaves the set
    /// only once its writes succeeded. Errors are logged once per network and
    /// error, and retried with backoff.
    pub(super) fn apply_dirty(&mut self) {
        if self.follow.dirty.is_empty() {
            return;
        }
        let due = self.follow.due();
        if due.is_empty() {
            return;
        }
        let t0 = Instant::now();
        let before = self.sync.updates;
        let mut applied = 0;
        for network_id in due {
            match self.resync(&network_id) {
                Ok(()) => {
                    applied += 1;
                    self.follow.applied(&network_id);
                    self.devices.publish(&self.sync, &network_id);
                }
                Err(e) => self.follow.failed(&network_id, &e),
            }
        }
        if applied > 0 {
            self.opts.health.daemon().last_applied_unix = Some(health::unix_now_f64());
            tracing::info!(
                networks = applied,
                map_updates = self.sync.updates - before,
                apply_us = t0.elapsed().as_micros() as u64,
                "applied database changes"
            );
        }
    }

    /// Writes one network's plan; when it is no longer served or its DHCP
    /// port changed, its device is let go.
    fn resync(&mut self, network_id: &str) -> Result<()> {
        let plan = self.follow.model.plan(network_id, &self.cfg);
        let net = self.net_ids.id(&mut self.db, network_id)?;
        let served = plan.is_some();
        let before = self
            .sync
            .written(network_id)
            .map(|(_, p)| (p.dhcp_port_id.clone(), p.server_mac, p.server_addrs.clone()));
        let after = plan
            .as_ref()
            .map(|p| (p.dhcp_port_id.clone(), p.server_mac, p.server_addrs.clone()));
        let dhcp_changed = before != after;
        let same_device =
            matches!((&before, &after), (Some(b), Some(a)) if b.0 == a.0 && b.1 == a.1);
        let new_port = plan.as_ref().map(|p| p.dhcp_port_id.clone());
        self.sync.apply(network_id, net, plan)?;
        if !served || dhcp_changed {
            // Not served any more, or its DHCP device may have changed.
            self.devices.dhcp_port_changed(
                &self.sync,
                network_id,
                new_port.as_deref(),
                same_device,
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testdb::TempDb;

    #[test]
    fn net_ids_are_looked_up_both_ways() {
        let mut t = TempDb::new("net-ids");
        let a = t.db().net_id("net-a").unwrap();
        let mut ids = NetIds::load(t.db()).unwrap();
        assert_eq!(ids.network_of(a), Some("net-a"), "loaded from the store");
        let b = ids.id(t.db(), "net-b").unwrap();
        assert_ne!(a, b, "a new network gets a new id");
        assert_eq!(ids.network_of(b), Some("net-b"), "assigned on the way");
        assert_eq!(ids.id(t.db(), "net-a").unwrap(), a, "known ids are kept");
        assert_eq!(ids.network_of(b + a + 1), None, "an id nobody has");
        let again = NetIds::load(t.db()).unwrap();
        assert_eq!(
            again.network_of(b),
            Some("net-b"),
            "the assigned id is the store's"
        );
    }

    #[test]
    fn backoff_doubles_up_to_thirty_seconds() {
        let cases = [
            (1, Duration::from_millis(200)),
            (2, Duration::from_millis(400)),
            (8, Duration::from_millis(25_600)),
            (9, Duration::from_secs(30)),
            (u32::MAX, Duration::from_secs(30)),
        ];
        for (failures, want) in cases {
            assert_eq!(backoff(failures), want, "after {failures} failure(s)");
        }
    }
}
