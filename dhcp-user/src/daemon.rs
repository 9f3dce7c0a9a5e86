//! `xdhcp run`: load (or adopt) the fast path, fill its maps from the port
//! database and keep them in sync, attach to every qdhcp namespace's DHCP
//! device, serve the slow path, record leases.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::Ipv4Addr,
    path::{Path, PathBuf},
    sync::mpsc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result};
use dhcp_ebpf::{AckRecord, ClientKey, EXPIRES_NEVER};

use crate::{
    bpffs,
    config::AgentConfig,
    db::{ChangeLogGap, Db, LeaseRecord},
    ebpf::{self, FastPath},
    links,
    model::{format_mac, Change, Kind},
    netns, plumb,
    slowpath::{self, Event, SlowPath},
    sync::{Model, PlannedNet, Sync},
};

/// How `xdhcp run` was asked to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub db: PathBuf,
    pub bpffs: PathBuf,
    pub config: Option<PathBuf>,
    pub plumb: bool,
    pub bridge: Option<String>,
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

/// A network attached to its device.
struct Attached {
    namespace: String,
    ifindex: u32,
    _slow: SlowPath,
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
    events_tx: mpsc::Sender<Event>,
    events_rx: mpsc::Receiver<Event>,
    slow_counts: HashMap<&'static str, u64>,
    /// The ACK record last written to the database, per client.
    acks_seen: HashMap<ClientKey, AckRecord>,
    /// Changes seen → applied: the sync delay the bench reads from the log.
    last_apply: Option<Instant>,
}

/// Runs until SIGTERM or SIGINT; the pinned fast path keeps answering after.
pub fn run(opts: RunOptions) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(run_async(opts))
}

async fn run_async(opts: RunOptions) -> Result<()> {
    let started = Instant::now();
    let cfg = match &opts.config {
        Some(path) => AgentConfig::load(path)?,
        None => AgentConfig::default(),
    };
    let db = Db::open(&opts.db)?;
    bpffs::ensure_dir(&opts.bpffs)?;
    std::fs::create_dir_all(links_dir(&opts.bpffs)).context("creating the links directory")?;
    write_pid_file(&opts.bpffs)?;
    // The verifier's pass over the fast path and reading the database take
    // similar time: do them side by side.
    let bpffs_dir = opts.bpffs.clone();
    let loading = std::thread::spawn(move || FastPath::open(&bpffs_dir));
    let data_version = db.data_version()?;
    let (snapshot, seq) = db.snapshot_at()?;
    let model = Model::from_snapshot(snapshot);
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
    let sync = Sync::adopt(fast.maps()?, cfg.enable_relay)?;
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
        events_tx,
        events_rx,
        slow_counts: HashMap::new(),
        acks_seen: HashMap::new(),
        last_apply: None,
    };
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

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut last_scan = Instant::now();
    let mut last_leases = Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
        if let Err(e) = d.poll_db() {
            tracing::error!("database sync: {e:#}");
        }
        d.drain_events();
        if last_scan.elapsed() >= Duration::from_millis(500) {
            d.scan_namespaces().await;
            last_scan = Instant::now();
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
    tracing::info!("stopping; the pinned fast path keeps answering (`xdhcp down` removes it)");
    let _ = std::fs::remove_file(pid_file(&d.opts.bpffs));
    Ok(())
}

fn write_pid_file(bpffs: &Path) -> Result<()> {
    let path = pid_file(bpffs);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&path, format!("{}\n", std::process::id()))
        .with_context(|| format!("writing {}", path.display()))
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

    /// Start-up: every network planned and written, stale entries removed.
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
        self.sync.reconcile(plans)?;
        Ok(())
    }

    /// Applies committed database changes.
    fn poll_db(&mut self) -> Result<()> {
        let version = self.db.data_version()?;
        if version == self.data_version {
            return Ok(());
        }
        self.data_version = version;
        let changes = match self.db.changes_since(self.seq) {
            Ok(c) => c,
            Err(e) if e.is::<ChangeLogGap>() => {
                // Fell behind the pruned change log: start over from a snapshot.
                tracing::warn!("{e:#}; reloading everything");
                let (snapshot, seq) = self.db.snapshot_at()?;
                self.model = Model::from_snapshot(snapshot);
                self.seq = seq;
                return self.full_sync();
            }
            Err(e) => return Err(e),
        };
        if changes.is_empty() {
            return Ok(());
        }
        let t0 = Instant::now();
        let mut affected: HashSet<String> = HashSet::new();
        for Change { seq, kind, id } in &changes {
            self.seq = self.seq.max(*seq);
            match kind {
                Kind::Network => {
                    match self.db.network(id)? {
                        Some(n) => {
                            self.model.networks.insert(id.clone(), n);
                        }
                        None => {
                            self.model.networks.remove(id);
                        }
                    }
                    affected.insert(id.clone());
                }
                Kind::Subnet => {
                    if let Some(old) = self.model.subnets.remove(id) {
                        affected.insert(old.network_id);
                    }
                    if let Some(s) = self.db.subnet(id)? {
                        affected.insert(s.network_id.clone());
                        self.model.subnets.insert(id.clone(), s);
                    }
                }
                Kind::Port => {
                    if let Some(old) = self.model.remove_port(id) {
                        affected.insert(old.network_id);
                    }
                    if let Some(p) = self.db.port(id)? {
                        affected.insert(p.network_id.clone());
                        self.model.put_port(p);
                    }
                }
            }
        }
        let before = self.sync.updates;
        for network_id in &affected {
            self.resync(network_id)?;
        }
        self.last_apply = Some(Instant::now());
        tracing::info!(
            changes = changes.len(),
            networks = affected.len(),
            map_updates = self.sync.updates - before,
            apply_us = t0.elapsed().as_micros() as u64,
            "applied database changes"
        );
        Ok(())
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
        self.sync.apply(network_id, net, plan)?;
        if !served || dhcp_changed {
            // Not served any more, or its DHCP device may have changed.
            self.detach(network_id);
            self.plumbed.remove(network_id);
        }
        Ok(())
    }

    /// Attaches to networks whose namespace and device appeared; detaches from
    /// those whose namespace or device vanished.
    async fn scan_namespaces(&mut self) {
        let served: Vec<(String, u32, PlannedNet)> = self
            .sync
            .networks()
            .map(|(id, (net, plan))| (id.clone(), *net, plan.clone()))
            .collect();
        let served_ids: HashSet<&str> = served.iter().map(|(id, _, _)| id.as_str()).collect();
        // Pinned links of networks no longer served: remove (detaches).
        if let Ok(dir) = std::fs::read_dir(links_dir(&self.opts.bpffs)) {
            for entry in dir.flatten() {
                let name = entry.file_name().to_string_lossy().to_string();
                let network = name.strip_prefix(PEER_PREFIX).unwrap_or(&name);
                if !served_ids.contains(network) {
                    self.attached.remove(network);
                    let _ = std::fs::remove_file(entry.path());
                    tracing::info!(network, "detached (network no longer served)");
                }
            }
        }
        for (network_id, net, plan) in served {
            if self.opts.plumb && !self.plumbed.contains(&network_id) {
                match self.plumb(&plan).await {
                    Ok(()) => {
                        self.plumbed.insert(network_id.clone());
                    }
                    Err(e) => tracing::error!(network = %network_id, "plumbing: {e:#}"),
                }
            }
            let namespace = plumb::namespace_name(&network_id);
            let ns_exists = Path::new("/run/netns").join(&namespace).exists();
            // Attached and its link still on the device (deleting the device,
            // or its namespace, detaches the link): nothing to look at. This
            // keeps the scan cheap with thousands of networks.
            if let Some(a) = self.attached.get(&network_id) {
                let pin = links_dir(&self.opts.bpffs).join(&network_id);
                if ns_exists && links::ifindex(&pin).ok() == Some(a.ifindex) {
                    continue;
                }
            }
            let device = if ns_exists {
                find_device(&namespace, plan.server_mac)
            } else {
                None
            };
            match (device, self.attached.get(&network_id)) {
                (Some((_, ifindex)), Some(a))
                    if a.ifindex == ifindex && a.namespace == namespace => {}
                (Some((ifname, ifindex)), _) => {
                    self.attached.remove(&network_id);
                    if let Err(e) = self
                        .attach(&network_id, net, &namespace, &ifname, ifindex)
                        .await
                    {
                        tracing::error!(network = %network_id, device = %ifname, "attaching: {e:#}");
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
        };
        let done = plumb::plumb(&spec).await?;
        tracing::info!(network = %plan.network_id, namespace = %done.namespace, tap = %done.tap, bridge = %done.bridge, "plumbed");
        Ok(())
    }

    async fn attach(
        &mut self,
        network_id: &str,
        net: u32,
        namespace: &str,
        ifname: &str,
        ifindex: u32,
    ) -> Result<()> {
        let pin = links_dir(&self.opts.bpffs).join(network_id);
        // A pinned link still on this device: adopt it (a restart).
        let adopted = pin.exists() && links::ifindex(&pin).ok() == Some(ifindex);
        if !adopted {
            let _ = std::fs::remove_file(&pin);
            let mut entry = self.fast.entry(net)?;
            let prog = ebpf::program(&mut entry, dhcp_ebpf::ENTRY_PROGRAM)?;
            let _inside = netns::enter(namespace)?;
            let (id, mode) = ebpf::attach(prog, ifname)?;
            let link = ebpf::take_link(prog, id)?;
            link.pin(&pin)
                .with_context(|| format!("pinning {}", pin.display()))?;
            tracing::info!(network = %network_id, namespace, device = ifname, ?mode, "attached");
        } else {
            tracing::info!(network = %network_id, namespace, device = ifname, "adopted the pinned attachment");
        }
        // veth hands XDP_TX frames only to a peer that runs XDP.
        match plumb::veth_peer_in_host(namespace, ifname).await {
            Ok(Some(peer)) => {
                let pin = links_dir(&self.opts.bpffs).join(format!("{PEER_PREFIX}{network_id}"));
                let on_peer = pin.exists() && links::ifindex(&pin).map(|i| i != 0).unwrap_or(false);
                if !on_peer {
                    let _ = std::fs::remove_file(&pin);
                    let (id, _) = ebpf::attach(self.fast.pass_program()?, &peer)?;
                    let link = ebpf::take_link(self.fast.pass_program()?, id)?;
                    link.pin(&pin)
                        .with_context(|| format!("pinning {}", pin.display()))?;
                    tracing::info!(network = %network_id, device = %peer, "xdhcp_pass on the veth peer");
                }
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(network = %network_id, device = ifname, "finding the veth peer: {e:#}")
            }
        }
        let slow = slowpath::spawn(
            namespace,
            ifname,
            net,
            self.opts.bpffs.clone(),
            self.events_tx.clone(),
        )?;
        self.attached.insert(
            network_id.to_string(),
            Attached {
                namespace: namespace.to_string(),
                ifindex,
                _slow: slow,
            },
        );
        Ok(())
    }

    fn detach(&mut self, network_id: &str) {
        self.attached.remove(network_id);
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
                    Ok(())
                }
                Event::Released { net, mac, ip } => self.record_event(net, mac, ip, "released"),
                Event::Declined { net, mac, ip } => {
                    let network = self.network_of(net).unwrap_or_default();
                    let port = self.port_of(&network, mac);
                    tracing::warn!(network = %network, port = %port, ip = %ip, mac = %format_mac(&mac), "DHCPDECLINE: the client says its address is in use");
                    self.record_event(net, mac, ip, "declined")
                }
            };
            if let Err(e) = result {
                tracing::warn!("recording a slow-path event: {e:#}");
            }
        }
    }

    fn record_event(&mut self, net: u32, mac: [u8; 6], ip: Ipv4Addr, state: &str) -> Result<()> {
        let network = self.network_of(net).unwrap_or_default();
        let port_id = self.port_of(&network, mac);
        let now = unix_now();
        self.db.record_lease(&LeaseRecord {
            network_id: network,
            mac: format_mac(&mac),
            ip,
            port_id,
            expires: Some(now),
            state: state.to_string(),
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
        let fresh: Vec<(ClientKey, AckRecord)> = self
            .sync
            .maps
            .all_acks()?
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
                mac: format_mac(&key.mac),
                ip: Ipv4Addr::from(rec.ip),
                port_id: by_mac.get(&key.mac).unwrap_or(&"").to_string(),
                expires,
                state: "bound".into(),
                updated,
            });
        }
        self.db.record_leases(&records)?;
        for (key, rec) in fresh {
            self.acks_seen.insert(key, rec);
        }
        Ok(())
    }

    fn flush_counters(&mut self) {
        if self.slow_counts.is_empty() {
            return;
        }
        let counts: Vec<(String, u64)> = self
            .slow_counts
            .drain()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        if let Err(e) = self.db.add_counters(&counts) {
            tracing::warn!("saving slow-path counters: {e:#}");
        }
    }
}

/// The device in `namespace` whose MAC is `mac`: (name, ifindex).
pub fn find_device(namespace: &str, mac: [u8; 6]) -> Option<(String, u32)> {
    let _inside = netns::enter(namespace).ok()?;
    let addrs = nix::ifaddrs::getifaddrs().ok()?;
    for a in addrs {
        let Some(link) = a.address.as_ref().and_then(|s| s.as_link_addr()) else {
            continue;
        };
        if link.addr() == Some(mac) {
            let name = std::ffi::CString::new(a.interface_name.clone()).ok()?;
            // SAFETY: a valid C string.
            let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
            return (index != 0).then_some((a.interface_name, index));
        }
    }
    None
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

/// `xdhcp down`: stops a running daemon, then detaches and unpins everything.
pub fn down(bpffs_dir: &Path) -> Result<()> {
    let pid_path = pid_file(bpffs_dir);
    if let Ok(raw) = std::fs::read_to_string(&pid_path) {
        if let Ok(pid) = raw.trim().parse::<i32>() {
            let pid = nix::unistd::Pid::from_raw(pid);
            if nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).is_ok() {
                let deadline = Instant::now() + Duration::from_secs(10);
                while nix::sys::signal::kill(pid, None).is_ok() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(50));
                }
                println!("stopped the daemon (pid {pid})");
            }
        }
        let _ = std::fs::remove_file(&pid_path);
    }
    if !bpffs_dir.exists() {
        println!("nothing pinned under {}", bpffs_dir.display());
        return Ok(());
    }
    let links = links_dir(bpffs_dir);
    let n = std::fs::read_dir(&links).map(|d| d.count()).unwrap_or(0);
    bpffs::remove_dir(bpffs_dir)?;
    println!(
        "detached {n} attachment(s) and removed every pin under {}",
        bpffs_dir.display()
    );
    Ok(())
}
