//! The attachment manager and plumber: every written network's DHCP device
//! found (or, with --plumb, made) in its qdhcp namespace and served by the
//! fast path, or by the slow path alone when XDP cannot be attached.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    path::{Path, PathBuf},
    sync::{mpsc, Arc},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

use crate::{
    daemon::{health::NetworkHealth, links_dir, RunOptions, Served},
    loader::{self, links, AttachMode, FastPath},
    mapsync::Sync,
    netns,
    netns::plumb::{self, VethPeer},
    netns::{names, ovs::OvsBridge},
    plan::PlannedNet,
    slowpath::{self, Event, SlowPath},
};

/// Pin name prefix of the xdhcp_pass link on a plumbed veth's host side
/// (bpffs refuses names with a dot).
const PEER_PREFIX: &str = "peer_";

/// Networks plumbed at once in a scan.
const PLUMB_PARALLEL: usize = 8;

/// A device found in a namespace: (name, ifindex).
type Device = (String, u32);

/// What a network needs, found by [`Devices::look`].
enum Look {
    /// Served as it should be.
    Fine,
    /// To be plumbed (--plumb), then settled; its device as found before.
    Plumb(Option<Device>),
    /// Its device (if any) served, or the network let go.
    Settle(Option<Device>),
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
    slow: SlowPath,
}

/// The networks' DHCP devices: attached, plumbed, and what to unplumb.
pub(super) struct Devices {
    /// Where the links are pinned (`links_dir(bpffs)`).
    links: PathBuf,
    /// --plumb, and how.
    plumb: bool,
    unplumb: bool,
    bridge: Option<String>,
    ovs: Option<OvsBridge>,
    fast: FastPath,
    /// The maps, for every slow path.
    maps: Arc<loader::Maps>,
    /// Where the slow paths send what they saw.
    events: mpsc::Sender<Event>,
    /// What is served, for the agent (None for `xdhcp run`).
    served: Option<Served>,
    attached: HashMap<String, Attached>,
    plumbed: HashSet<String>,
    /// network id → the DHCP port plumbed for it (with `unplumb`).
    plumbed_ports: HashMap<String, String>,
    /// (network, DHCP port, whole namespace) to unplumb at the next scan.
    unplumb_queue: Vec<(String, String, bool)>,
    /// The last attach/plumb error logged per network (logged once per change).
    device_errors: HashMap<String, String>,
    /// The networks the scan in progress has yet to look at (None: no pass
    /// in progress).
    pass: Option<VecDeque<String>>,
}

impl Devices {
    /// Serves devices with `fast` as `opts` say, slow paths reporting to
    /// `events`, what is served published to `served`.
    pub(super) fn new(
        opts: &RunOptions,
        fast: FastPath,
        events: mpsc::Sender<Event>,
        served: Option<Served>,
    ) -> Result<Self> {
        Ok(Devices {
            maps: Arc::new(fast.maps()?),
            links: links_dir(&opts.bpffs),
            plumb: opts.plumb,
            unplumb: opts.unplumb,
            bridge: opts.bridge.clone(),
            ovs: opts.ovs.clone(),
            fast,
            events,
            served,
            attached: HashMap::new(),
            plumbed: HashSet::new(),
            plumbed_ports: HashMap::new(),
            unplumb_queue: Vec::new(),
            device_errors: HashMap::new(),
            pass: None,
        })
    }

    /// Devices served (by XDP or by the slow path alone).
    pub(super) fn served_count(&self) -> usize {
        self.attached.len()
    }

    /// What `network_id` (net id `net`) looks like to the health report.
    pub(super) fn health(
        &self,
        network_id: &str,
        net: u32,
        last_applied_unix: Option<f64>,
    ) -> NetworkHealth {
        let a = self.attached.get(network_id);
        NetworkHealth {
            net,
            namespace: names::namespace_name(network_id),
            device: a.map(|a| a.device.clone()),
            xdp: a.and_then(|a| a.mode).map(|m| match m {
                AttachMode::Native => "native".to_string(),
                AttachMode::Generic => "generic".to_string(),
            }),
            slow_path_alive: a.is_some_and(|a| a.slow.alive()),
            last_applied_unix,
        }
    }

    /// `network_id`'s plan was rewritten with DHCP port `new_port` (None: it
    /// is no longer served): its device is let go, found again at the next
    /// scan, and what was plumbed for another port is unplumbed. When only the
    /// port's addresses changed (the same port, the same MAC: the same
    /// device), the attachment stays and the next scan plumbs the addresses
    /// again, so the network is served throughout.
    pub(super) fn dhcp_port_changed(
        &mut self,
        sync: &Sync,
        network_id: &str,
        new_port: Option<&str>,
        same_device: bool,
    ) {
        if same_device {
            self.plumbed.remove(network_id);
            return;
        }
        self.detach(sync, network_id);
        self.plumbed.remove(network_id);
        if let Some(old) = self.plumbed_ports.get(network_id).cloned() {
            if new_port != Some(old.as_str()) {
                self.plumbed_ports.remove(network_id);
                self.unplumb_queue
                    .push((network_id.to_string(), old, new_port.is_none()));
            }
        }
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
    /// them again). `sync` says which networks are served, with what plan.
    ///
    /// One pass over every network takes as many calls as it needs: each call
    /// stops once `budget` is spent (after the step it is in: plumbing, which
    /// runs up to PLUMB_PARALLEL networks at once, may overrun it) and the next
    /// call goes on where it stopped, so the daemon applies database changes
    /// between them even while thousands of networks are plumbed at start-up.
    /// True when the pass is complete.
    pub(super) async fn scan(&mut self, sync: &Sync, budget: Duration) -> bool {
        let started = Instant::now();
        if self.pass.is_none() {
            self.start_pass(sync).await;
        }
        loop {
            let mut to_plumb = Vec::new();
            while to_plumb.len() < PLUMB_PARALLEL {
                if started.elapsed() >= budget && to_plumb.is_empty() {
                    return false;
                }
                let Some(id) = self.pass.as_mut().and_then(|q| q.pop_front()) else {
                    break;
                };
                let Some((net, plan)) = sync.written(&id) else {
                    continue;
                };
                match self.look(&id, plan) {
                    Look::Fine => {}
                    Look::Plumb(device) => {
                        let spec = self.plumb_spec(plan);
                        to_plumb.push((id, *net, spec, device));
                    }
                    Look::Settle(device) => self.settle(sync, &id, *net, device).await,
                }
            }
            if !to_plumb.is_empty() {
                self.plumb_all(sync, to_plumb).await;
            }
            if self.pass.as_ref().is_none_or(|q| q.is_empty()) {
                self.pass = None;
                return true;
            }
        }
    }

    /// The start of a pass: networks no longer served let go (their pinned
    /// links removed, which detaches them; their slow paths stopped; with
    /// `unplumb`, what was plumbed for them removed), and every written
    /// network queued to be looked at.
    async fn start_pass(&mut self, sync: &Sync) {
        let served = |id: &str| sync.written(id).is_some();
        if let Ok(dir) = std::fs::read_dir(&self.links) {
            for entry in dir.flatten() {
                let name = entry.file_name().to_string_lossy().to_string();
                let network = name.strip_prefix(PEER_PREFIX).unwrap_or(&name);
                if !served(network) {
                    let _ = std::fs::remove_file(entry.path());
                    tracing::info!(network, "detached (network no longer served)");
                }
            }
        }
        let gone: Vec<String> = self
            .attached
            .keys()
            .filter(|id| !served(id))
            .cloned()
            .collect();
        for id in gone {
            self.attached.remove(&id);
            self.plumbed.remove(&id);
            self.device_errors.remove(&id);
            self.publish(sync, &id);
            if let Some(port) = self.plumbed_ports.remove(&id) {
                self.unplumb_queue.push((id, port, true));
            }
        }
        for (network_id, port, whole) in std::mem::take(&mut self.unplumb_queue) {
            match plumb::unplug(&network_id, &port, self.ovs.as_ref(), whole).await {
                Ok(()) => tracing::info!(network = %network_id, port = %port, whole, "unplumbed"),
                Err(e) => self.device_error(&network_id, "unplumbing", &e),
            }
        }
        self.pass = Some(sync.networks().map(|(id, _)| id.clone()).collect());
    }

    /// What network `network_id` (planned as `plan`) needs.
    fn look(&mut self, network_id: &str, plan: &PlannedNet) -> Look {
        let namespace = names::namespace_name(network_id);
        let ns_exists = Path::new("/run/netns").join(&namespace).exists();
        // Attached and its link still on the device (deleting the device,
        // or its namespace, detaches the link): nothing to look at. This
        // keeps the scan cheap with thousands of networks.
        if let Some(a) = self.attached.get(network_id) {
            let pin = self.links.join(network_id);
            let fine = match a.mode {
                Some(_) => links::ifindex(&pin).ok() == Some(a.ifindex),
                None => Instant::now() < a.retry_at,
            };
            if ns_exists && fine && (!self.plumb || self.plumbed.contains(network_id)) {
                return Look::Fine;
            }
        }
        let device = if ns_exists {
            find_device(&namespace, plan.server_mac)
        } else {
            None
        };
        if self.plumb && (device.is_none() || !self.plumbed.contains(network_id)) {
            // Never plumbed, or its namespace or device was removed under us.
            self.plumbed.remove(network_id);
            return Look::Plumb(device);
        }
        Look::Settle(device)
    }

    /// Plumbs these networks (id, net id, how, its device as found before)
    /// side by side (each is a few netlink requests and, on Open vSwitch,
    /// ovs-vsctl runs: mostly waiting), then settles each: its device found
    /// again and served.
    async fn plumb_all(
        &mut self,
        sync: &Sync,
        networks: Vec<(String, u32, plumb::PlumbSpec, Option<Device>)>,
    ) {
        let results =
            futures::future::join_all(networks.iter().map(|(_, _, spec, _)| plumb::plumb(spec)))
                .await;
        for ((network_id, net, spec, mut device), result) in networks.into_iter().zip(results) {
            match result {
                Ok(done) => {
                    self.plumbed.insert(network_id.clone());
                    if self.unplumb {
                        self.plumbed_ports
                            .insert(network_id.clone(), spec.port_id.clone());
                    }
                    tracing::info!(network = %network_id, namespace = %done.namespace, tap = %done.tap, bridge = %done.bridge, "plumbed");
                    device = find_device(&done.namespace, spec.mac);
                }
                Err(e) => self.device_error(&network_id, "plumbing", &e),
            }
            self.settle(sync, &network_id, net, device).await;
        }
    }

    /// Here an attachment is missing, or its link left the device (the
    /// device or namespace was removed, maybe created anew at the same
    /// ifindex), or a slow-path-only device is due another try: serves
    /// `device` if there is one, else lets the network go.
    async fn settle(
        &mut self,
        sync: &Sync,
        network_id: &str,
        net: u32,
        device: Option<(String, u32)>,
    ) {
        let namespace = names::namespace_name(network_id);
        match (device, self.attached.get(network_id)) {
            (Some((ifname, ifindex)), _) => {
                let slow = self.attached.remove(network_id).and_then(|a| {
                    (a.ifindex == ifindex && a.namespace == namespace).then_some(a.slow)
                });
                match self
                    .attach(network_id, net, &namespace, &ifname, ifindex, slow)
                    .await
                {
                    Ok(()) => self.publish(sync, network_id),
                    Err(e) => {
                        self.device_error(network_id, &format!("serving device {ifname}"), &e)
                    }
                }
            }
            (None, Some(_)) => {
                self.detach(sync, network_id);
                tracing::info!(network = %network_id, "namespace or device gone: detached");
            }
            (None, None) => {}
        }
    }

    /// How `plan`'s DHCP device is plumbed.
    fn plumb_spec(&self, plan: &PlannedNet) -> plumb::PlumbSpec {
        let mut addresses = plan.server_addrs.clone();
        if plan.metadata_addr {
            addresses.extend(ipnet::Ipv4Net::new(crate::plan::METADATA_IP, 32));
        }
        plumb::PlumbSpec {
            network_id: plan.network_id.clone(),
            port_id: plan.dhcp_port_id.clone(),
            mac: plan.server_mac,
            addresses,
            mtu: plan.mtu,
            bridge: self.bridge.clone(),
            ovs: self.ovs.clone(),
        }
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
        let pin = self.links.join(network_id);
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
                self.maps.clone(),
                self.events.clone(),
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
                slow,
            },
        );
        Ok(())
    }

    /// Tells the agent (if any) which of a network's ports are served now:
    /// those of its written plan, while its device is served.
    pub(super) fn publish(&self, sync: &Sync, network_id: &str) {
        let Some(served) = &self.served else {
            return;
        };
        let ports: Option<HashSet<String>> = self
            .attached
            .contains_key(network_id)
            .then(|| sync.written(network_id))
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
        let mut prog = self.fast.entry(net)?;
        let (id, mode) = netns::run_in(namespace, || loader::attach(&mut prog, ifname, want))?;
        let link = loader::take_link(&mut prog, id)?;
        link.pin(pin)
            .with_context(|| format!("pinning {}", pin.display()))?;
        Ok(mode)
    }

    /// Puts `xdhcp_pass` on `peer` (in the daemon's namespace) unless the
    /// pinned link is still there.
    fn pass_on_peer(&mut self, network_id: &str, peer: &str) -> Result<()> {
        let pin = self.links.join(format!("{PEER_PREFIX}{network_id}"));
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

    fn detach(&mut self, sync: &Sync, network_id: &str) {
        self.attached.remove(network_id);
        self.publish(sync, network_id);
        let _ = std::fs::remove_file(self.links.join(network_id));
        let _ = std::fs::remove_file(self.links.join(format!("{PEER_PREFIX}{network_id}")));
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
