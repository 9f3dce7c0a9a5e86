//! `xdhcp run`: load (or adopt) the fast path, fill its maps from the port
//! database and keep them in sync, attach to every qdhcp namespace's DHCP
//! device, serve the slow path, record leases.

pub mod health;
pub mod metrics;
pub mod notify;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fs::File,
    io::{Read, Write},
    net::Ipv4Addr,
    os::{fd::AsRawFd, unix::fs::MetadataExt},
    path::{Path, PathBuf},
    sync::mpsc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{anyhow, bail, Context, Result};
use dhcp_ebpf::{map_name, AckRecord, ClientKey, EXPIRES_NEVER};

use crate::{
    config::AgentConfig,
    daemon::health::{Health, NetworkHealth},
    loader::bpffs,
    loader::links,
    loader::{self, AttachMode, FastPath},
    mapsync::Sync,
    netns,
    netns::plumb,
    netns::plumb::VethPeer,
    neutron::model::{format_mac, Change, Kind, MacAddr},
    plan::{Model, PlannedNet},
    slowpath::{self, Event, SlowPath},
    store::{ChangeLogGap, Db, LeaseRecord, LeaseState},
};

/// How `xdhcp run` was asked to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub db: PathBuf,
    pub bpffs: PathBuf,
    pub config: Option<PathBuf>,
    pub plumb: bool,
    pub bridge: Option<String>,
    /// Start even when the database is missing or empty while the pinned
    /// fast path serves clients (it then stops serving them).
    pub allow_empty_db: bool,
    /// With `plumb`: plug DHCP devices into this Open vSwitch bridge (the
    /// agent's openvswitch interface driver) instead of a Linux bridge.
    pub ovs: Option<plumb::OvsBridge>,
    /// With `plumb`: also remove what was plumbed for a network that is no
    /// longer served, or for a DHCP port replaced by another (the agent).
    pub unplumb: bool,
    /// Serve Prometheus metrics (GET /metrics) here.
    pub metrics: Option<std::net::SocketAddr>,
    /// Per-network metric series for at most this many networks.
    pub metrics_max_networks: usize,
    /// What the daemon says about itself (metrics, status file); the agent
    /// adds its RPC state to it.
    pub health: Health,
}

/// Pin name prefix of the xdhcp_pass link on a plumbed veth's host side
/// (bpffs refuses names with a dot).
const PEER_PREFIX: &str = "peer_";
/// A client's lease row is rewritten for a renewal of the same address at most
/// this often; `xdhcp leases` shows the live ACK records on top of the rows.
const LEASE_REFRESH_NS: u64 = 60_000_000_000;

/// Where the pinned links live.
pub fn links_dir(bpffs: &Path) -> PathBuf {
    bpffs.join("links")
}

/// The pid file of the daemon that owns `bpffs`.
pub fn pid_file(bpffs: &Path) -> PathBuf {
    let flat = bpffs
        .to_string_lossy()
        .trim_start_matches('/')
        .replace('/', "_");
    PathBuf::from("/run/xdhcp").join(format!("{flat}.pid"))
}

/// A network's device being served: by the fast path in `mode`, or (`None`,
/// when attaching failed) by the slow path alone.
struct Attached {
    namespace: String,
    device: String,
    ifindex: u32,
    mode: Option<AttachMode>,
    /// With `mode` None: when to try attaching XDP again.
    retry_at: Instant,
    _slow: SlowPath,
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
fn file_identity(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

struct Daemon {
    opts: RunOptions,
    cfg: AgentConfig,
    db: Db,
    model: Model,
    seq: u64,
    data_version: i64,
    fast: FastPath,
    sync: Sync,
    net_ids: HashMap<String, u32>,
    attached: HashMap<String, Attached>,
    plumbed: HashSet<String>,
    /// network id → the DHCP port plumbed for it (with `unplumb`).
    plumbed_ports: HashMap<String, String>,
    /// (network, DHCP port, whole namespace) to unplumb at the next scan.
    unplumb_queue: Vec<(String, String, bool)>,
    /// Networks whose changes still have to reach the maps (retried with backoff).
    dirty: HashMap<String, Pending>,
    /// The last attach/plumb error logged per network (logged once per change).
    device_errors: HashMap<String, String>,
    events_tx: mpsc::Sender<Event>,
    events_rx: mpsc::Receiver<Event>,
    /// Slow-path counts not yet saved in the database.
    slow_counts: HashMap<&'static str, u64>,
    counters_failing: bool,
    /// The ACK record last written to the database, per client still in ACKS.
    acks_seen: HashMap<ClientKey, AckRecord>,
    /// (device, inode) of the database file as opened, and whether a change
    /// of it was reported.
    db_identity: Option<(u64, u64)>,
    db_moved_reported: bool,
    served: Option<Served>,
    /// When each network's changes last reached the maps (unix seconds).
    applied_at: HashMap<String, f64>,
    /// The status file's last write error (logged once).
    status_error: Option<String>,
    _lock: PidLock,
}

/// What the daemon serves, for `xdhcp agent`'s dhcp_ready_on_ports: network
/// id → the ports whose leases are in the maps, for networks whose device is
/// served (by XDP, or by the slow path alone).
pub type Served = std::sync::Arc<std::sync::Mutex<HashMap<String, HashSet<String>>>>;

/// Runs until SIGTERM or SIGINT; the pinned fast path keeps answering after.
pub fn run(opts: RunOptions) -> Result<()> {
    let cfg = match &opts.config {
        Some(path) => AgentConfig::load(path)?,
        None => AgentConfig::default(),
    };
    run_with(opts, cfg, None)
}

/// [`run`] with the agent options given, publishing what it serves to `served`.
pub fn run_with(opts: RunOptions, cfg: AgentConfig, served: Option<Served>) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(run_async(opts, cfg, served))
}

async fn run_async(opts: RunOptions, cfg: AgentConfig, served: Option<Served>) -> Result<()> {
    let started = Instant::now();
    let lock = PidLock::acquire(&opts.bpffs)?;
    let db_existed = opts.db.exists();
    if !db_existed && !opts.allow_empty_db {
        refuse_if_pins_serve(&opts, "does not exist")?;
    }
    let db = Db::open(&opts.db)?;
    let db_identity = file_identity(&opts.db);
    bpffs::ensure_dir(&opts.bpffs)?;
    std::fs::create_dir_all(links_dir(&opts.bpffs)).context("creating the links directory")?;
    // The verifier's pass over the fast path and reading the database take
    // similar time: do them side by side.
    let bpffs_dir = opts.bpffs.clone();
    let loading = std::thread::spawn(move || FastPath::open(&bpffs_dir));
    let data_version = db.data_version()?;
    let (snapshot, seq) = db.snapshot_at()?;
    let model = Model::from_snapshot(snapshot);
    if db_existed && model.networks.is_empty() && !opts.allow_empty_db {
        refuse_if_pins_serve(&opts, "holds no networks")?;
    }
    tracing::info!(
        ports = model.ports.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "database loaded"
    );
    let (fast, adopted) = loading
        .join()
        .map_err(|_| anyhow::anyhow!("the fast-path loader panicked"))??;
    tracing::info!(
        bpffs = %opts.bpffs.display(),
        adopted,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "fast path {} (maps and programs pinned)",
        if adopted { "adopted" } else { "loaded" }
    );
    let sync = Sync::adopt(fast.maps()?, &cfg)?;
    let mut net_ids = HashMap::new();
    for (network, id) in db.net_ids()? {
        net_ids.insert(network, id);
    }
    let (events_tx, events_rx) = mpsc::channel();
    let mut d = Daemon {
        opts,
        cfg,
        db,
        model,
        seq,
        data_version,
        fast,
        sync,
        net_ids,
        attached: HashMap::new(),
        plumbed: HashSet::new(),
        plumbed_ports: HashMap::new(),
        unplumb_queue: Vec::new(),
        dirty: HashMap::new(),
        device_errors: HashMap::new(),
        events_tx,
        events_rx,
        slow_counts: HashMap::new(),
        counters_failing: false,
        acks_seen: HashMap::new(),
        db_identity,
        db_moved_reported: false,
        served,
        applied_at: HashMap::new(),
        status_error: None,
        _lock: lock,
    };
    {
        let mut h = d.opts.health.daemon();
        h.started_unix = health::unix_now_f64();
        h.slow = d.db.counters()?.into_iter().collect();
    }
    if let Some(addr) = d.opts.metrics {
        crate::daemon::metrics::serve(
            addr,
            d.opts.bpffs.clone(),
            d.opts.health.clone(),
            d.opts.metrics_max_networks,
        )?;
    }
    d.full_sync()?;
    // Reading and planning every port at once leaves freed memory in malloc's
    // arenas (tens of MiB at 100k ports): give it back.
    // SAFETY: malloc_trim only releases free memory of this process.
    unsafe { libc::malloc_trim(0) };
    tracing::info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "maps in sync with the database"
    );
    d.scan_namespaces().await;
    tracing::info!(
        attached = d.attached.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "serving"
    );
    crate::daemon::notify::ready(&format!("serving {} device(s)", d.attached.len()));
    let mut watchdog = crate::daemon::notify::Watchdog::from_env();

    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    // logrotate and process managers send SIGHUP: it must not kill the daemon.
    let mut hup = signal(SignalKind::hangup())?;
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut last_scan = Instant::now();
    let mut last_leases = Instant::now();
    let mut last_status: Option<Instant> = None;
    loop {
        watchdog.tick();
        tokio::select! {
            _ = tick.tick() => {}
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
            _ = hup.recv() => {
                // Logs go to stderr (the service manager's journal): nothing to reopen.
                tracing::info!("SIGHUP: reloading every network from the database");
                if let Err(e) = d.reload() {
                    tracing::error!("reload on SIGHUP: {e:#}");
                }
            }
        }
        if let Err(e) = d.poll_db() {
            tracing::error!("database sync: {e:#}");
        }
        d.apply_dirty();
        d.drain_events();
        if last_scan.elapsed() >= Duration::from_millis(500) {
            d.check_db_file();
            d.scan_namespaces().await;
            d.publish_health();
            last_scan = Instant::now();
        }
        if last_status.is_none_or(|t| t.elapsed() >= health::STATUS_EVERY) {
            d.publish_health();
            d.write_status();
            last_status = Some(Instant::now());
        }
        if last_leases.elapsed() >= Duration::from_secs(1) {
            if let Err(e) = d.poll_acks() {
                tracing::warn!("recording leases: {e:#}");
            }
            d.flush_counters();
            last_leases = Instant::now();
        }
    }
    d.drain_events();
    let _ = d.poll_acks();
    d.flush_counters();
    crate::daemon::notify::stopping();
    tracing::info!("stopping; the pinned fast path keeps answering (`xdhcp down` removes it)");
    Ok(())
}

/// Refuses to start on a missing or empty database (a typo in --db, a lost
/// file) while the pinned fast path serves clients: syncing would remove them.
fn refuse_if_pins_serve(opts: &RunOptions, what: &str) -> Result<()> {
    let Ok(maps) = loader::Maps::open(&opts.bpffs) else {
        return Ok(());
    };
    let clients = maps.leases.keys().count();
    if clients == 0 {
        return Ok(());
    }
    bail!(
        "database {} {what}, but the fast path pinned at {} serves {clients} client(s); \
         starting would remove them all. Check --db (a typo?), or pass --allow-empty-db \
         to start from an empty database on purpose",
        opts.db.display(),
        opts.bpffs.display()
    )
}

/// The daemon's lock: an flock on its pid file, held for the daemon's whole
/// life. A second daemon on the same bpffs is refused; `xdhcp down` signals
/// only a process that holds it (a stale pid file names nobody).
pub struct PidLock {
    file: File,
    path: PathBuf,
}

/// Takes an exclusive flock on `file` without waiting; false if another holds it.
fn try_flock(file: &File) -> Result<bool> {
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(err).context("flock")
    }
}

fn read_pid(file: &mut File) -> Option<i32> {
    let mut raw = String::new();
    file.read_to_string(&mut raw).ok()?;
    raw.trim().parse().ok()
}

impl PidLock {
    /// Takes the lock of the daemon serving `bpffs`, or says who holds it.
    pub fn acquire(bpffs: &Path) -> Result<PidLock> {
        let path = pid_file(bpffs);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let mut file = loop {
            let mut file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .with_context(|| format!("opening {}", path.display()))?;
            if !try_flock(&file).with_context(|| format!("locking {}", path.display()))? {
                let holder = read_pid(&mut file).map_or("unknown".to_string(), |p| p.to_string());
                bail!(
                    "another xdhcp daemon (pid {holder}) is serving {}: it holds the lock on {}",
                    bpffs.display(),
                    path.display()
                );
            }
            // A daemon that was exiting may have removed the file we locked:
            // the lock counts only on the file at the path.
            let here = std::fs::metadata(&path).ok().map(|m| m.ino());
            if here == Some(file.metadata()?.ino()) {
                break file;
            }
        };
        file.set_len(0)?;
        file.write_all(format!("{}\n", std::process::id()).as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(PidLock { file, path })
    }
}

impl Drop for PidLock {
    fn drop(&mut self) {
        // Removed while still locked: a daemon starting now locks a new file.
        // The status file goes first: it describes the lock holder.
        let _ = std::fs::remove_file(self.path.with_extension("status.json"));
        let _ = std::fs::remove_file(&self.path);
        let _ = &self.file;
    }
}

impl Daemon {
    fn net_id(&mut self, network_id: &str) -> Result<u32> {
        if let Some(id) = self.net_ids.get(network_id) {
            return Ok(*id);
        }
        let id = self.db.net_id(network_id)?;
        self.net_ids.insert(network_id.to_string(), id);
        Ok(id)
    }

    /// Start-up (and reload): every network planned and written, stale
    /// entries and networks no longer planned removed. A network whose writes
    /// fail stays served with what it had and is retried.
    fn full_sync(&mut self) -> Result<()> {
        let mut ids: Vec<String> = self.model.networks.keys().cloned().collect();
        ids.sort();
        let mut plans = BTreeMap::new();
        let mut last_progress = Instant::now();
        for (i, id) in ids.iter().enumerate() {
            if let Some(plan) = self.model.plan(id, &self.cfg) {
                let net = self.net_id(id)?;
                plans.insert(id.clone(), (net, plan));
            }
            if last_progress.elapsed() > Duration::from_secs(1) {
                tracing::info!("planning: {}/{} networks", i + 1, ids.len());
                last_progress = Instant::now();
            }
        }
        let ports: usize = plans.values().map(|(_, p)| p.leases.len()).sum();
        tracing::info!(networks = plans.len(), ports, "writing the maps");
        let now = health::unix_now_f64();
        for id in plans.keys() {
            self.applied_at.insert(id.clone(), now);
        }
        self.opts.health.daemon().last_applied_unix = Some(now);
        for (network_id, error) in self.sync.reconcile(plans)? {
            tracing::error!(network = %network_id, "writing the maps: {error:#}; retrying with backoff");
            self.dirty.insert(
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
    fn reload(&mut self) -> Result<()> {
        let (snapshot, seq) = self.db.snapshot_at()?;
        self.model = Model::from_snapshot(snapshot);
        self.seq = seq;
        self.data_version = self.db.data_version()?;
        self.full_sync()
    }

    /// Follows committed database changes into the model and marks the
    /// networks they touch dirty. The position (seq, data_version) advances
    /// only once every change read was taken in: a failure re-reads them all
    /// next time (taking one in again is harmless).
    fn poll_db(&mut self) -> Result<()> {
        let version = self.db.data_version()?;
        if version == self.data_version {
            return Ok(());
        }
        let changes = match self.db.changes_since(self.seq) {
            Ok(c) => c,
            Err(e) if e.is::<ChangeLogGap>() => {
                // Fell behind the pruned change log: start over from a snapshot.
                tracing::warn!("{e:#}; reloading everything");
                return self.reload();
            }
            Err(e) => return Err(e),
        };
        let mut affected: HashSet<String> = HashSet::new();
        let mut seq = self.seq;
        for Change { seq: s, kind, id } in &changes {
            self.take_change(*kind, id, &mut affected)?;
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
        Ok(())
    }

    /// Takes one change into the model, noting the networks it touches.
    fn take_change(&mut self, kind: Kind, id: &str, affected: &mut HashSet<String>) -> Result<()> {
        match kind {
            Kind::Network => {
                match self.db.network(id)? {
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
                let now = self.db.subnet(id)?;
                if let Some(old) = self.model.subnets.remove(id) {
                    affected.insert(old.network_id);
                }
                if let Some(s) = now {
                    affected.insert(s.network_id.clone());
                    self.model.subnets.insert(id.to_string(), s);
                }
            }
            Kind::Port => {
                let now = self.db.port(id)?;
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

    /// Writes the dirty networks whose turn it is; a network leaves the set
    /// only once its writes succeeded. Errors are logged once per network and
    /// error, and retried with backoff.
    fn apply_dirty(&mut self) {
        if self.dirty.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut due: Vec<String> = self
            .dirty
            .iter()
            .filter(|(_, p)| p.next_try <= now)
            .map(|(id, _)| id.clone())
            .collect();
        if due.is_empty() {
            return;
        }
        due.sort();
        let t0 = Instant::now();
        let before = self.sync.updates;
        let mut applied = 0;
        for network_id in due {
            match self.resync(&network_id) {
                Ok(()) => {
                    applied += 1;
                    self.applied_at
                        .insert(network_id.clone(), health::unix_now_f64());
                    self.publish(&network_id);
                    if let Some(p) = self.dirty.remove(&network_id) {
                        if p.failures > 0 {
                            tracing::info!(network = %network_id, failures = p.failures, "changes applied after failing");
                        }
                    }
                }
                Err(e) => {
                    let msg = format!("{e:#}");
                    let p = self.dirty.get_mut(&network_id).expect("a dirty network");
                    p.failures += 1;
                    p.next_try = Instant::now() + backoff(p.failures);
                    if p.last_error.as_deref() != Some(msg.as_str()) {
                        tracing::error!(network = %network_id, "applying changes: {msg}; retrying with backoff");
                        p.last_error = Some(msg);
                    }
                }
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

    fn resync(&mut self, network_id: &str) -> Result<()> {
        let plan = self.model.plan(network_id, &self.cfg);
        let net = self.net_id(network_id)?;
        let served = plan.is_some();
        let dhcp_changed = self
            .sync
            .written(network_id)
            .map(|(_, p)| (p.dhcp_port_id.clone(), p.server_mac, p.server_addrs.clone()))
            != plan
                .as_ref()
                .map(|p| (p.dhcp_port_id.clone(), p.server_mac, p.server_addrs.clone()));
        let new_port = plan.as_ref().map(|p| p.dhcp_port_id.clone());
        self.sync.apply(network_id, net, plan)?;
        if !served || dhcp_changed {
            // Not served any more, or its DHCP device may have changed.
            self.detach(network_id);
            self.plumbed.remove(network_id);
            if let Some(old) = self.plumbed_ports.get(network_id).cloned() {
                if new_port.as_ref() != Some(&old) {
                    self.plumbed_ports.remove(network_id);
                    self.unplumb_queue
                        .push((network_id.to_string(), old, !served));
                }
            }
        }
        Ok(())
    }

    /// Reports (once per change) the database file being deleted or replaced
    /// under the daemon: it keeps serving what it has, but imports into a new
    /// file at that path do not reach it until it is restarted.
    fn check_db_file(&mut self) {
        let now = file_identity(&self.opts.db);
        let moved = now != self.db_identity;
        if moved && !self.db_moved_reported {
            let what = if now.is_none() {
                "was deleted"
            } else {
                "was replaced by another file"
            };
            tracing::error!(
                db = %self.opts.db.display(),
                "the database file {what} while the daemon runs: it keeps serving what it \
                 had, but changes written at that path do not reach it; restart xdhcp to \
                 follow the file now there"
            );
        } else if !moved && self.db_moved_reported {
            tracing::info!(db = %self.opts.db.display(), "the database file is back");
        }
        self.db_moved_reported = moved;
    }

    /// Logs a network's device error once per distinct error.
    fn device_error(&mut self, network_id: &str, what: &str, e: &anyhow::Error) {
        let msg = format!("{what}: {e:#}");
        if self.device_errors.get(network_id) != Some(&msg) {
            tracing::error!(network = %network_id, "{msg}");
            self.device_errors.insert(network_id.to_string(), msg);
        }
    }

    /// Attaches to networks whose namespace and device appeared; detaches from
    /// those whose namespace or device vanished (and, with --plumb, plumbs
    /// them again).
    async fn scan_namespaces(&mut self) {
        let served: Vec<(String, u32)> = self
            .sync
            .networks()
            .map(|(id, (net, _))| (id.clone(), *net))
            .collect();
        let served_ids: HashSet<&str> = served.iter().map(|(id, _)| id.as_str()).collect();
        // Networks no longer served: pinned links removed (detaches), slow path stopped.
        if let Ok(dir) = std::fs::read_dir(links_dir(&self.opts.bpffs)) {
            for entry in dir.flatten() {
                let name = entry.file_name().to_string_lossy().to_string();
                let network = name.strip_prefix(PEER_PREFIX).unwrap_or(&name);
                if !served_ids.contains(network) {
                    let _ = std::fs::remove_file(entry.path());
                    tracing::info!(network, "detached (network no longer served)");
                }
            }
        }
        let gone: Vec<String> = self
            .attached
            .keys()
            .filter(|id| !served_ids.contains(id.as_str()))
            .cloned()
            .collect();
        for id in gone {
            self.attached.remove(&id);
            self.plumbed.remove(&id);
            self.device_errors.remove(&id);
            self.publish(&id);
            if let Some(port) = self.plumbed_ports.remove(&id) {
                self.unplumb_queue.push((id, port, true));
            }
        }
        for (network_id, port, whole) in std::mem::take(&mut self.unplumb_queue) {
            match plumb::unplug(&network_id, &port, self.opts.ovs.as_ref(), whole).await {
                Ok(()) => tracing::info!(network = %network_id, port = %port, whole, "unplumbed"),
                Err(e) => self.device_error(&network_id, "unplumbing", &e),
            }
        }
        for (network_id, net) in served {
            let namespace = plumb::namespace_name(&network_id);
            let ns_exists = Path::new("/run/netns").join(&namespace).exists();
            // Attached and its link still on the device (deleting the device,
            // or its namespace, detaches the link): nothing to look at. This
            // keeps the scan cheap with thousands of networks.
            if let Some(a) = self.attached.get(&network_id) {
                let pin = links_dir(&self.opts.bpffs).join(&network_id);
                let fine = match a.mode {
                    Some(_) => links::ifindex(&pin).ok() == Some(a.ifindex),
                    None => Instant::now() < a.retry_at,
                };
                if ns_exists && fine {
                    continue;
                }
            }
            let Some((_, plan)) = self.sync.written(&network_id) else {
                continue;
            };
            let server_mac = plan.server_mac;
            let mut device = if ns_exists {
                find_device(&namespace, server_mac)
            } else {
                None
            };
            if self.opts.plumb && (device.is_none() || !self.plumbed.contains(&network_id)) {
                // Never plumbed, or its namespace or device was removed under us.
                self.plumbed.remove(&network_id);
                let plan = plan.clone();
                match self.plumb(&plan).await {
                    Ok(()) => {
                        self.plumbed.insert(network_id.clone());
                        device = find_device(&namespace, server_mac);
                    }
                    Err(e) => self.device_error(&network_id, "plumbing", &e),
                }
            }
            // Here an attachment is missing, or its link left the device (the
            // device or namespace was removed, maybe created anew at the
            // same ifindex), or a slow-path-only device is due another try.
            match (device, self.attached.get(&network_id)) {
                (Some((ifname, ifindex)), _) => {
                    let slow = self.attached.remove(&network_id).and_then(|a| {
                        (a.ifindex == ifindex && a.namespace == namespace).then_some(a._slow)
                    });
                    if let Err(e) = self
                        .attach(&network_id, net, &namespace, &ifname, ifindex, slow)
                        .await
                    {
                        self.device_error(&network_id, &format!("serving device {ifname}"), &e);
                    }
                }
                (None, Some(_)) => {
                    self.detach(&network_id);
                    tracing::info!(network = %network_id, "namespace or device gone: detached");
                }
                (None, None) => {}
            }
        }
    }

    async fn plumb(&mut self, plan: &PlannedNet) -> Result<()> {
        let spec = plumb::PlumbSpec {
            network_id: plan.network_id.clone(),
            port_id: plan.dhcp_port_id.clone(),
            mac: plan.server_mac,
            addresses: plan.server_addrs.clone(),
            mtu: plan.mtu,
            bridge: self.opts.bridge.clone(),
            ovs: self.opts.ovs.clone(),
        };
        let done = plumb::plumb(&spec).await?;
        if self.opts.unplumb {
            self.plumbed_ports
                .insert(plan.network_id.clone(), plan.dhcp_port_id.clone());
        }
        tracing::info!(network = %plan.network_id, namespace = %done.namespace, tap = %done.tap, bridge = %done.bridge, "plumbed");
        Ok(())
    }

    /// Serves `ifname`: by the fast path, natively when its XDP_TX replies
    /// reach the other end (no veth, or a veth peer in this namespace, which
    /// gets `xdhcp_pass`), in generic mode when they would not (a veth peer in
    /// another namespace), and by the slow path alone when XDP cannot be
    /// attached at all. One log line says which and why.
    async fn attach(
        &mut self,
        network_id: &str,
        net: u32,
        namespace: &str,
        ifname: &str,
        ifindex: u32,
        slow: Option<SlowPath>,
    ) -> Result<()> {
        let device = plumb::dhcp_device(namespace, ifname).await;
        let (mut want, mut why) = match &device {
            Ok(d) => match &d.peer {
                VethPeer::NotVeth => (AttachMode::Native, "it is no veth".to_string()),
                VethPeer::InHost(peer) => (
                    AttachMode::Native,
                    format!(
                        "its veth peer {peer} is in the daemon's namespace and runs xdhcp_pass"
                    ),
                ),
                VethPeer::Elsewhere { index, nsid } => (
                    AttachMode::Generic,
                    format!(
                        "its veth peer (ifindex {index} in namespace {}) is outside the daemon's \
                         namespace, where native XDP_TX frames are dropped unless it runs XDP; \
                         generic mode sends the replies through the stack",
                        nsid.map_or("of the device itself".to_string(), |id| format!("id {id}"))
                    ),
                ),
            },
            Err(e) => (
                AttachMode::Generic,
                format!("where its veth peer is could not be told ({e:#})"),
            ),
        };
        // veth hands native XDP_TX frames only to a peer that runs XDP.
        if let Ok(plumb::DhcpDevice {
            peer: VethPeer::InHost(peer),
            ..
        }) = &device
        {
            if let Err(e) = self.pass_on_peer(network_id, peer) {
                want = AttachMode::Generic;
                why = format!("xdhcp_pass could not go on its veth peer {peer} ({e:#})");
            }
        }
        let pin = links_dir(&self.opts.bpffs).join(network_id);
        let generic_now = device.as_ref().is_ok_and(|d| d.generic_xdp);
        // A pinned link still on this device, in the wanted mode: adopt it (a restart).
        let adopt = pin.exists()
            && links::ifindex(&pin).ok() == Some(ifindex)
            && (want == AttachMode::Native || generic_now);
        let mode = if adopt {
            tracing::info!(network = %network_id, namespace, device = ifname, "adopted the pinned attachment");
            Ok(if generic_now {
                AttachMode::Generic
            } else {
                AttachMode::Native
            })
        } else {
            let _ = std::fs::remove_file(&pin);
            self.attach_entry(net, namespace, ifname, want, &pin)
        };
        let slow = match slow {
            Some(s) => s,
            None => slowpath::spawn(
                namespace,
                ifname,
                net,
                self.opts.bpffs.clone(),
                self.events_tx.clone(),
            )?,
        };
        let mode = match mode {
            Ok(mode) => {
                if mode != want {
                    why = format!("{why}; the kernel refused {want:?} mode");
                }
                tracing::info!(network = %network_id, namespace, device = ifname, ?mode, "served by the fast path in {mode:?} mode: {why}");
                self.device_errors.remove(network_id);
                Some(mode)
            }
            Err(e) => {
                self.device_error(
                    network_id,
                    &format!("served by the slow path alone on {ifname} in {namespace}: attaching XDP failed"),
                    &e,
                );
                None
            }
        };
        self.attached.insert(
            network_id.to_string(),
            Attached {
                namespace: namespace.to_string(),
                device: ifname.to_string(),
                ifindex,
                mode,
                retry_at: Instant::now() + Duration::from_secs(5),
                _slow: slow,
            },
        );
        self.publish(network_id);
        Ok(())
    }

    /// Puts what is served, and how, into the shared health (metrics, status).
    fn publish_health(&mut self) {
        let networks: BTreeMap<String, NetworkHealth> = self
            .sync
            .networks()
            .map(|(id, (net, _))| {
                let a = self.attached.get(id);
                let n = NetworkHealth {
                    net: *net,
                    namespace: plumb::namespace_name(id),
                    device: a.map(|a| a.device.clone()),
                    xdp: a.and_then(|a| a.mode).map(|m| match m {
                        AttachMode::Native => "native".to_string(),
                        AttachMode::Generic => "generic".to_string(),
                    }),
                    slow_path_alive: a.is_some_and(|a| a._slow.alive()),
                    last_applied_unix: self.applied_at.get(id).copied(),
                };
                (id.clone(), n)
            })
            .collect();
        self.applied_at.retain(|id, _| networks.contains_key(id));
        let mut h = self.opts.health.daemon();
        h.networks = networks;
        h.pending_networks = self.dirty.len();
    }

    /// Writes the status file for `xdhcp status` (logged once while it fails).
    fn write_status(&mut self) {
        let status = health::StatusFile {
            version: env!("CARGO_PKG_VERSION").to_string(),
            pid: std::process::id(),
            written_unix: health::unix_now_f64(),
            bpffs: self.opts.bpffs.clone(),
            db: self.opts.db.clone(),
            daemon: self.opts.health.daemon().clone(),
            agent: self.opts.health.agent().clone(),
        };
        let path = health::status_file(&self.opts.bpffs);
        match health::write_status(&path, &status) {
            Ok(()) => self.status_error = None,
            Err(e) => {
                let msg = format!("{e:#}");
                if self.status_error.as_ref() != Some(&msg) {
                    tracing::warn!("status file: {msg}");
                    self.status_error = Some(msg);
                }
            }
        }
    }

    /// Tells the agent (if any) which of a network's ports are served now.
    fn publish(&self, network_id: &str) {
        let Some(served) = &self.served else {
            return;
        };
        let ports: Option<HashSet<String>> = self
            .attached
            .contains_key(network_id)
            .then(|| self.sync.written(network_id))
            .flatten()
            .map(|(_, plan)| plan.leases.iter().map(|l| l.port_id.clone()).collect());
        let mut served = served.lock().expect("the served map");
        match ports {
            Some(ports) => {
                served.insert(network_id.to_string(), ports);
            }
            None => {
                served.remove(network_id);
            }
        }
    }

    /// Loads network `net`'s entry program, attaches it to `ifname` inside
    /// `namespace` and pins the link at `pin`.
    fn attach_entry(
        &mut self,
        net: u32,
        namespace: &str,
        ifname: &str,
        want: AttachMode,
        pin: &Path,
    ) -> Result<AttachMode> {
        let mut entry = self.fast.entry(net)?;
        let prog = loader::program(&mut entry, dhcp_ebpf::ENTRY_PROGRAM)?;
        let (id, mode) = netns::run_in(namespace, || loader::attach(prog, ifname, want))?;
        let link = loader::take_link(prog, id)?;
        link.pin(pin)
            .with_context(|| format!("pinning {}", pin.display()))?;
        Ok(mode)
    }

    /// Puts `xdhcp_pass` on `peer` (in the daemon's namespace) unless the
    /// pinned link is still there.
    fn pass_on_peer(&mut self, network_id: &str, peer: &str) -> Result<()> {
        let pin = links_dir(&self.opts.bpffs).join(format!("{PEER_PREFIX}{network_id}"));
        if pin.exists() && links::ifindex(&pin).map(|i| i != 0).unwrap_or(false) {
            return Ok(());
        }
        let _ = std::fs::remove_file(&pin);
        let (id, _) = loader::attach(self.fast.pass_program()?, peer, AttachMode::Native)?;
        let link = loader::take_link(self.fast.pass_program()?, id)?;
        link.pin(&pin)
            .with_context(|| format!("pinning {}", pin.display()))?;
        tracing::info!(network = %network_id, device = %peer, "xdhcp_pass on the veth peer");
        Ok(())
    }

    fn detach(&mut self, network_id: &str) {
        self.attached.remove(network_id);
        self.publish(network_id);
        let dir = links_dir(&self.opts.bpffs);
        let _ = std::fs::remove_file(dir.join(network_id));
        let _ = std::fs::remove_file(dir.join(format!("{PEER_PREFIX}{network_id}")));
    }

    fn network_of(&self, net: u32) -> Option<String> {
        self.net_ids
            .iter()
            .find(|(_, id)| **id == net)
            .map(|(n, _)| n.clone())
    }

    fn port_of(&self, network_id: &str, mac: [u8; 6]) -> String {
        self.sync
            .written(network_id)
            .and_then(|(_, p)| p.leases.iter().find(|l| l.mac == mac))
            .map(|l| l.port_id.clone())
            .unwrap_or_default()
    }

    fn drain_events(&mut self) {
        while let Ok(ev) = self.events_rx.try_recv() {
            let result = match ev {
                Event::Count(c) => {
                    *self.slow_counts.entry(c.name()).or_default() += 1;
                    *self
                        .opts
                        .health
                        .daemon()
                        .slow
                        .entry(c.name().to_string())
                        .or_default() += 1;
                    Ok(())
                }
                Event::Released { net, mac, ip } => {
                    self.record_event(net, mac, ip, LeaseState::Released)
                }
                Event::Declined { net, mac, ip } => {
                    let network = self.network_of(net).unwrap_or_default();
                    let port = self.port_of(&network, mac);
                    tracing::warn!(network = %network, port = %port, ip = %ip, mac = %format_mac(&mac), "DHCPDECLINE: the client says its address is in use");
                    self.record_event(net, mac, ip, LeaseState::Declined)
                }
            };
            if let Err(e) = result {
                tracing::warn!("recording a slow-path event: {e:#}");
            }
        }
    }

    fn record_event(
        &mut self,
        net: u32,
        mac: [u8; 6],
        ip: Ipv4Addr,
        state: LeaseState,
    ) -> Result<()> {
        let network = self.network_of(net).unwrap_or_default();
        let port_id = self.port_of(&network, mac);
        let now = unix_now();
        self.db.record_lease(&LeaseRecord {
            network_id: network,
            mac: MacAddr(mac),
            ip,
            port_id,
            expires: Some(now),
            state,
            updated: now,
        })?;
        let key = ClientKey::new(net, mac);
        let _ = self.sync.maps.acks.remove(&key);
        self.acks_seen.remove(&key);
        Ok(())
    }

    /// Records the leases the fast path granted since the last look, in one
    /// transaction. Under load that is thousands a second: network and port
    /// are looked up in indexes built once per poll, not by scanning.
    fn poll_acks(&mut self) -> Result<()> {
        let boot_now = boottime_ns();
        let unix = unix_now();
        let all = self.sync.maps.all_acks()?;
        forget_evicted(&mut self.acks_seen, &all);
        let fresh: Vec<(ClientKey, AckRecord)> = all
            .into_iter()
            .filter(|(key, rec)| match self.acks_seen.get(key) {
                None => true,
                // A renewal of the same address: refreshed at most every
                // LEASE_REFRESH_NS (a client re-ACKed many times a second
                // would otherwise be one write each time).
                Some(seen) => {
                    seen.ip != rec.ip
                        || rec.acked_ns.saturating_sub(seen.acked_ns) >= LEASE_REFRESH_NS
                        || (seen.expires_ns == EXPIRES_NEVER) != (rec.expires_ns == EXPIRES_NEVER)
                }
            })
            .collect();
        if fresh.is_empty() {
            return Ok(());
        }
        let networks: HashMap<u32, &String> = self.net_ids.iter().map(|(n, id)| (*id, n)).collect();
        let mut ports: HashMap<u32, HashMap<[u8; 6], &str>> = HashMap::new();
        let mut records = Vec::with_capacity(fresh.len());
        for (key, rec) in &fresh {
            let network = networks.get(&key.net).map(|n| n.as_str()).unwrap_or("");
            let by_mac = ports.entry(key.net).or_insert_with(|| {
                self.sync
                    .written(network)
                    .map(|(_, p)| {
                        p.leases
                            .iter()
                            .map(|l| (l.mac, l.port_id.as_str()))
                            .collect()
                    })
                    .unwrap_or_default()
            });
            let expires = (rec.expires_ns != EXPIRES_NEVER).then(|| {
                unix.saturating_add_signed(
                    ((rec.expires_ns as i128 - boot_now as i128) / 1_000_000_000) as i64,
                )
            });
            let updated =
                unix.saturating_sub((boot_now.saturating_sub(rec.acked_ns)) / 1_000_000_000);
            records.push(LeaseRecord {
                network_id: network.to_string(),
                mac: MacAddr(key.mac),
                ip: Ipv4Addr::from(rec.ip),
                port_id: by_mac.get(&key.mac).unwrap_or(&"").to_string(),
                expires,
                state: LeaseState::Bound,
                updated,
            });
        }
        self.db.record_leases(&records)?;
        for (key, rec) in fresh {
            self.acks_seen.insert(key, rec);
        }
        Ok(())
    }

    /// Saves the slow-path counts; they are kept (and added to) until a
    /// write succeeds, so a full disk loses none.
    fn flush_counters(&mut self) {
        if self.slow_counts.is_empty() {
            return;
        }
        let counts: Vec<(String, u64)> = self
            .slow_counts
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect();
        match self.db.add_counters(&counts) {
            Ok(()) => {
                self.slow_counts.clear();
                if self.counters_failing {
                    tracing::info!("slow-path counters saved again");
                    self.counters_failing = false;
                }
            }
            Err(e) => {
                if !self.counters_failing {
                    tracing::warn!("saving slow-path counters (kept in memory, retried): {e:#}");
                    self.counters_failing = true;
                }
            }
        }
    }
}

/// Forgets the clients whose ACK records left the map (the LRU map evicted
/// them, the slow path removed them), so `seen` stays the size of the map.
fn forget_evicted(seen: &mut HashMap<ClientKey, AckRecord>, live: &[(ClientKey, AckRecord)]) {
    if seen.len() > live.len() {
        let live: HashSet<ClientKey> = live.iter().map(|(k, _)| *k).collect();
        seen.retain(|k, _| live.contains(k));
    }
}

/// The device in `namespace` whose MAC is `mac`: (name, ifindex).
pub fn find_device(namespace: &str, mac: [u8; 6]) -> Option<(String, u32)> {
    netns::run_in(namespace, || {
        for a in nix::ifaddrs::getifaddrs()? {
            let Some(link) = a.address.as_ref().and_then(|s| s.as_link_addr()) else {
                continue;
            };
            if link.addr() == Some(mac) {
                let index = nix::net::if_::if_nametoindex(a.interface_name.as_str())?;
                return Ok(Some((a.interface_name, index)));
            }
        }
        Ok(None)
    })
    .ok()
    .flatten()
}

/// Seconds since the epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// CLOCK_BOOTTIME in ns (what the fast path stamps ACKs with).
pub fn boottime_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// `xdhcp down`: stops a running daemon, then detaches and unpins what xdhcp
/// pinned (nothing else: a bpffs mount root holds the kernel's own entries).
pub fn down(bpffs_dir: &Path) -> Result<()> {
    stop_daemon(bpffs_dir)?;
    // Left by a daemon killed with SIGKILL.
    let _ = std::fs::remove_file(health::status_file(bpffs_dir));
    if !bpffs_dir.exists() {
        println!("nothing pinned under {}", bpffs_dir.display());
        return Ok(());
    }
    let links = links_dir(bpffs_dir);
    let n = std::fs::read_dir(&links).map(|d| d.count()).unwrap_or(0);
    let left = remove_pins(bpffs_dir)?;
    println!(
        "detached {n} attachment(s) and removed xdhcp's pins under {}{}",
        bpffs_dir.display(),
        if left.is_empty() {
            String::new()
        } else {
            format!(" (left what xdhcp did not pin: {})", left.join(", "))
        }
    );
    Ok(())
}

/// Signals the daemon holding `bpffs_dir`'s lock and waits for it to let go.
/// A pid file nobody holds the lock of is stale: nobody is signalled.
fn stop_daemon(bpffs_dir: &Path) -> Result<()> {
    let path = pid_file(bpffs_dir);
    let Ok(mut file) = File::open(&path) else {
        return Ok(());
    };
    if try_flock(&file).with_context(|| format!("locking {}", path.display()))? {
        let _ = std::fs::remove_file(&path);
        println!(
            "removed a stale pid file {} (no daemon holds its lock)",
            path.display()
        );
        return Ok(());
    }
    let pid = read_pid(&mut file).ok_or_else(|| {
        anyhow!(
            "a daemon holds the lock on {} but the file names no pid",
            path.display()
        )
    })?;
    let pid = nix::unistd::Pid::from_raw(pid);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)
        .with_context(|| format!("signalling the daemon (pid {pid})"))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !try_flock(&file)? {
        if Instant::now() > deadline {
            bail!(
                "the daemon (pid {pid}) still runs 10 s after SIGTERM: nothing unpinned under it"
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    println!("stopped the daemon (pid {pid})");
    Ok(())
}

/// Removes what xdhcp pins in `dir` (its maps, programs of any build, the
/// links directory) and `dir` itself when that leaves it empty and it is not
/// a mount point. Returns the names of what it left there.
fn remove_pins(dir: &Path) -> Result<Vec<String>> {
    let ours = |name: &str| {
        map_name::ALL.contains(&name) || loader::is_program_pin(name) || name == "links"
    };
    let mut left = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().to_string();
        if !ours(&name) {
            left.push(name);
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            bpffs::remove_dir(&path)?;
        } else {
            std::fs::remove_file(&path).with_context(|| format!("unpinning {}", path.display()))?;
        }
    }
    let mount_point = dir
        .parent()
        .and_then(|p| std::fs::metadata(p).ok())
        .zip(std::fs::metadata(dir).ok())
        .is_none_or(|(parent, here)| parent.dev() != here.dev());
    if left.is_empty() && !mount_point {
        std::fs::remove_dir(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    left.sort();
    Ok(left)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seen_acks_stay_the_size_of_the_map() {
        let key = |i: u8| ClientKey::new(1, [0xfa, 0x16, 0x3e, 0, 0, i]);
        let rec = AckRecord::default();
        let mut seen: HashMap<ClientKey, AckRecord> = (0..100).map(|i| (key(i), rec)).collect();
        // The LRU map kept 10 of them, and took 5 new ones.
        let live: Vec<(ClientKey, AckRecord)> = (90..105).map(|i| (key(i), rec)).collect();
        forget_evicted(&mut seen, &live);
        let mut left: Vec<u8> = seen.keys().map(|k| k.mac[5]).collect();
        left.sort();
        assert_eq!(
            left,
            (90..100).collect::<Vec<u8>>(),
            "only records still in the map"
        );
    }
}
