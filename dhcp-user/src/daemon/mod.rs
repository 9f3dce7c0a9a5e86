//! `xdhcp run`: load (or adopt) the fast path, fill its maps from the port
//! database and keep them in sync, attach to every qdhcp namespace's DHCP
//! device, serve the slow path, record leases.
//!
//! One file per role: `follow` follows the store and drives the plans into
//! the maps, `attach` finds, plumbs and serves the networks' devices,
//! `leases` takes in slow-path events and records leases, `counters` saves
//! the slow path's counts, `pidlock` is the daemon's lock and `xdhcp down`.
//! This file holds the loop and its timers, and the health it publishes.

mod attach;
mod counters;
mod follow;
pub mod health;
pub mod leases;
pub mod metrics;
pub mod notify;
mod pidlock;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    path::{Path, PathBuf},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

pub use attach::find_device;
pub use pidlock::{down, pid_file, PidLock};

use crate::{
    config::AgentConfig,
    daemon::{
        attach::Devices,
        counters::SlowCounts,
        follow::{file_identity, Follower, NetIds},
        health::{Health, NetworkHealth},
        leases::LeaseRecorder,
    },
    loader::{self, bpffs, FastPath},
    mapsync::Sync,
    netns::ovs::OvsBridge,
    plan::Model,
    slowpath::Event,
    store::Db,
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
    pub ovs: Option<OvsBridge>,
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

/// How long one step of a namespace scan may take before the loop applies
/// database changes and slow-path events again (see `Devices::scan`).
const SCAN_BUDGET: Duration = Duration::from_millis(50);

/// Where the pinned links live.
pub fn links_dir(bpffs: &Path) -> PathBuf {
    bpffs.join("links")
}

/// The daemon: one struct per role, and what they share (the options, the
/// store, the map writer).
struct Daemon {
    opts: RunOptions,
    cfg: AgentConfig,
    db: Db,
    /// The map writer: what every network has in the maps.
    sync: Sync,
    /// The store's net ids (the maps' network numbers), both ways.
    net_ids: NetIds,
    follow: Follower,
    devices: Devices,
    /// What the slow paths report.
    events: mpsc::Receiver<Event>,
    leases: LeaseRecorder,
    counters: SlowCounts,
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
    raise_open_files_limit();
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
    let net_ids = NetIds::load(&db)?;
    let (events_tx, events) = mpsc::channel();
    let mut d = Daemon {
        follow: Follower::new(model, seq, data_version, opts.db.clone(), db_identity),
        devices: Devices::new(&opts, fast, events_tx, served)?,
        opts,
        cfg,
        db,
        sync,
        net_ids,
        events,
        leases: LeaseRecorder::default(),
        counters: SlowCounts::default(),
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
    let mut watchdog = crate::daemon::notify::Watchdog::from_env();

    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    // logrotate and process managers send SIGHUP: it must not kill the daemon.
    let mut hup = signal(SignalKind::hangup())?;
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut last_scan = Instant::now();
    // A scan pass in progress (the first starts at once); ready once it ends.
    let mut scanning = true;
    let mut ready = false;
    let mut last_leases = Instant::now();
    let mut last_status: Option<Instant> = None;
    loop {
        // systemd arms the watchdog at READY=1: pings start then.
        if ready {
            watchdog.tick();
        }
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
        if scanning || last_scan.elapsed() >= Duration::from_millis(500) {
            if !scanning {
                d.follow.check_db_file();
            }
            scanning = !d.devices.scan(&d.sync, SCAN_BUDGET).await;
            if !scanning {
                d.publish_health();
                last_scan = Instant::now();
                if !ready {
                    ready = true;
                    let attached = d.devices.served_count();
                    tracing::info!(
                        attached,
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "serving"
                    );
                    crate::daemon::notify::ready(&format!("serving {attached} device(s)"));
                }
            }
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
            d.counters.flush(&mut d.db);
            last_leases = Instant::now();
        }
    }
    d.drain_events();
    let _ = d.poll_acks();
    d.counters.flush(&mut d.db);
    crate::daemon::notify::stopping();
    tracing::info!("stopping; the pinned fast path keeps answering (`xdhcp down` removes it)");
    Ok(())
}

/// Every served device holds two sockets (its slow path's packet and UDP
/// sockets): thousands of networks need more descriptors than the usual soft
/// limit of 1,024 (or a unit's 65,535). Raises the limit to what the kernel
/// allows (fs.nr_open) when the daemon may (root), else to its hard limit.
fn raise_open_files_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(hard);
    let raised = [nr_open.max(hard), hard]
        .into_iter()
        .find(|&to| setrlimit(Resource::RLIMIT_NOFILE, to, to.max(hard)).is_ok());
    match raised {
        Some(to) if to != soft => tracing::debug!(from = soft, to, "raised the open files limit"),
        Some(_) => {}
        None => tracing::warn!(
            soft,
            hard,
            "could not raise the open files limit: at most ~{} devices can be served",
            soft / 2
        ),
    }
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

impl Daemon {
    /// Puts what is served, and how, into the shared health (metrics, status).
    fn publish_health(&mut self) {
        let networks: BTreeMap<String, NetworkHealth> = self
            .sync
            .networks()
            .map(|(id, (net, _))| {
                let n = self.devices.health(id, *net, self.follow.applied_at(id));
                (id.clone(), n)
            })
            .collect();
        self.follow.keep_applied_at(|id| networks.contains_key(id));
        let mut h = self.opts.health.daemon();
        h.networks = networks;
        h.pending_networks = self.follow.pending();
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
}
