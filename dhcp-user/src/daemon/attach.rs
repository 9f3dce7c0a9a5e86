//! The attachment manager and plumber: every written network's DHCP device
//! found (or, with --plumb, made) in its qdhcp namespace and served by the
//! fast path, or by the slow path alone when XDP cannot be attached.

use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
    sync::mpsc,
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
    bpffs: PathBuf,
    /// Where the links are pinned (`links_dir(bpffs)`).
    links: PathBuf,
    /// --plumb, and how.
    plumb: bool,
    unplumb: bool,
    bridge: Option<String>,
    ovs: Option<OvsBridge>,
    fast: FastPath,
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
}

impl Devices {
    /// Serves devices with `fast` as `opts` say, slow paths reporting to
    /// `events`, what is served published to `served`.
    pub(super) fn new(
        opts: &RunOptions,
        fast: FastPath,
        events: mpsc::Sender<Event>,
        served: Option<Served>,
    ) -> Self {
        Devices {
            bpffs: opts.bpffs.clone(),
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
        }
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
    pub(super) async fn scan(&mut self, sync: &Sync) {
        let served = |id: &str| sync.written(id).is_some();
        // Networks no longer served: pinned links removed (detaches), slow path stopped.
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
        for (network_id, (net, plan)) in sync.networks() {
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
                    continue;
                }
            }
            let mut device = if ns_exists {
                find_device(&namespace, plan.server_mac)
            } else {
                None
            };
            if self.plumb && (device.is_none() || !self.plumbed.contains(network_id)) {
                // Never plumbed, or its namespace or device was removed under us.
                self.plumbed.remove(network_id);
                match self.plumb(plan).await {
                    Ok(()) => {
                        self.plumbed.insert(network_id.clone());
                        device = find_device(&namespace, plan.server_mac);
                    }
                    Err(e) => self.device_error(network_id, "plumbing", &e),
                }
            }
            // Here an attachment is missing, or its link left the device (the
            // device or namespace was removed, maybe created anew at the
            // same ifindex), or a slow-path-only device is due another try.
            match (device, self.attached.get(network_id)) {
                (Some((ifname, ifindex)), _) => {
                    let slow = self.attached.remove(network_id).and_then(|a| {
                        (a.ifindex == ifindex && a.namespace == namespace).then_some(a.slow)
                    });
                    match self
                        .attach(network_id, *net, &namespace, &ifname, ifindex, slow)
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
    }

    async fn plumb(&mut self, plan: &PlannedNet) -> Result<()> {
        let mut addresses = plan.server_addrs.clone();
        if plan.metadata_addr {
            addresses.extend(ipnet::Ipv4Net::new(crate::plan::METADATA_IP, 32));
        }
        let spec = plumb::PlumbSpec {
            network_id: plan.network_id.clone(),
            port_id: plan.dhcp_port_id.clone(),
            mac: plan.server_mac,
            addresses,
            mtu: plan.mtu,
            bridge: self.bridge.clone(),
            ovs: self.ovs.clone(),
        };
        let done = plumb::plumb(&spec).await?;
        if self.unplumb {
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
                self.bpffs.clone(),
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
