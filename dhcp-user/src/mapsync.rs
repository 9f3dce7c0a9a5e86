//! Writes plans into the fast path's maps, incrementally: only the entries
//! that differ from what the maps hold, so one changed port is one LEASES
//! update (plus an OPTS insert when its option blob is new). Option blobs are
//! shared by content and reference-counted.

use std::collections::{BTreeMap, HashMap, HashSet};

use anyhow::{Context, Result};
use aya::maps::MapData;
use dhcp_ebpf::{
    ClientKey, HostName, Lease, NetConfig, NetStats, OptsBlob, LEASES_MAX, NAME_STORED, NETS_MAX,
    NET_RELAY_LISTED, NET_RELAY_OK, OPTS_MAX, OPTS_MAX_ENTRIES, RELAYS_MAX,
};

use crate::{
    config::AgentConfig,
    loader::Maps,
    plan::{Blob, PlannedLease, PlannedNet},
};

/// Option blobs shared by every lease with the same content.
#[derive(Debug, Default)]
struct Blobs {
    /// content → (OPTS id, leases using it). The key is the one copy of
    /// the content every lease using it shares.
    by_content: HashMap<Blob, (u32, usize)>,
    next_id: u32,
}

/// The plans last written in full, by network id, with an index of their
/// leases by client, so a client's port is a lookup (the lease recorder asks
/// for thousands a second).
#[derive(Debug, Default)]
struct Written {
    plans: HashMap<String, (u32, PlannedNet)>,
    /// ClientKey → where its lease is in its network's plan (the last one of
    /// a MAC listed twice: the one the map holds).
    lease_at: HashMap<ClientKey, usize>,
}

impl Written {
    fn insert(&mut self, network_id: &str, net: u32, plan: PlannedNet) {
        self.remove(network_id);
        for (i, l) in plan.leases.iter().enumerate() {
            self.lease_at.insert(ClientKey::new(net, l.mac), i);
        }
        self.plans.insert(network_id.to_string(), (net, plan));
    }

    fn remove(&mut self, network_id: &str) {
        if let Some((net, plan)) = self.plans.remove(network_id) {
            for l in &plan.leases {
                self.lease_at.remove(&ClientKey::new(net, l.mac));
            }
        }
    }

    fn port_of(&self, network_id: &str, mac: [u8; 6]) -> Option<&str> {
        let (net, plan) = self.plans.get(network_id)?;
        let i = self.lease_at.get(&ClientKey::new(*net, mac))?;
        plan.leases
            .get(*i)
            .filter(|l| l.mac == mac)
            .map(|l| l.port_id.as_str())
    }
}

/// One client as the maps hold it: its lease, its blob's content (shared
/// with [`Blobs`]), and its NAMES entry if the lease has one.
type Written1 = (Lease, Blob, Option<Box<[u8]>>);

/// Writes plans into the maps, touching only what differs.
pub struct Sync {
    pub maps: Maps,
    /// network id → (net id, planned network) as last written in full.
    written: Written,
    /// ClientKey → (lease as in the map, blob content, its NAMES entry if
    /// the lease has one).
    leases: HashMap<ClientKey, Written1>,
    /// net id → the keys of its leases in the map (what a network really
    /// holds, also after a write that failed half-way).
    by_net: HashMap<u32, HashSet<ClientKey>>,
    blobs: Blobs,
    /// Map updates made (the tests and the change-to-answer bench read it).
    pub updates: u64,
    /// `NET_*` relay flags every network gets.
    relay_flags: u16,
}

/// Removes every entry of `map` whose key is not in `wanted`.
fn sweep<V: aya::Pod>(map: &mut aya::maps::HashMap<MapData, u32, V>, wanted: &HashSet<u32>) {
    let stale: Vec<u32> = map
        .keys()
        .filter_map(|k| k.ok())
        .filter(|k| !wanted.contains(k))
        .collect();
    for k in stale {
        map.remove(&k).ok();
    }
}

/// "LEASES update: …", and when the kernel says the map is full, its capacity.
fn map_error(map: &str, capacity: u32, e: aya::maps::MapError) -> anyhow::Error {
    let full = matches!(&e, aya::maps::MapError::SyscallError(s)
        if s.io_error.raw_os_error() == Some(libc::E2BIG));
    if full {
        anyhow::anyhow!("{map} is full (capacity {capacity} entries): {e}")
    } else {
        anyhow::Error::new(e).context(format!("{map} update"))
    }
}

impl Sync {
    /// Adopts what the (pinned, possibly non-empty) maps already hold, so a
    /// restart rewrites nothing that is still right. Option blobs of equal
    /// content are merged into one (the leases pointing at a duplicate are
    /// rewritten first), unused blobs removed; RELAYS is set from `cfg`.
    pub fn adopt(mut maps: Maps, cfg: &AgentConfig) -> Result<Self> {
        let mut blobs = Blobs {
            next_id: 1,
            ..Default::default()
        };
        // id → content of every stored blob, duplicates included.
        let mut by_id: HashMap<u32, Blob> = HashMap::new();
        let mut stored: Vec<(u32, Vec<u8>)> = Vec::new();
        for entry in maps.opts.iter() {
            let (id, blob) = entry.context("reading OPTS")?;
            stored.push((id, blob.bytes[..(blob.len as usize).min(OPTS_MAX)].to_vec()));
        }
        // The lowest id of each content is the one kept.
        stored.sort();
        for (id, content) in stored {
            blobs.next_id = blobs.next_id.max(id + 1);
            let shared = match blobs.by_content.get_key_value(&content[..]) {
                Some((kept, _)) => kept.clone(),
                None => {
                    let b: Blob = content.into();
                    blobs.by_content.insert(b.clone(), (id, 0));
                    b
                }
            };
            by_id.insert(id, shared);
        }
        let mut adopted = Vec::new();
        for entry in maps.leases.iter() {
            adopted.push(entry.context("reading LEASES")?);
        }
        let mut leases = HashMap::new();
        let mut by_net: HashMap<u32, HashSet<ClientKey>> = HashMap::new();
        for (key, mut lease) in adopted {
            let content = by_id.get(&lease.opts_id).cloned().unwrap_or_default();
            if let Some((id, refs)) = blobs.by_content.get_mut(&content[..]) {
                *refs += 1;
                if lease.opts_id != *id {
                    // Points at a duplicate about to go: point it at the kept one.
                    lease.opts_id = *id;
                    maps.leases
                        .insert(key, lease, 0)
                        .map_err(|e| map_error("LEASES", LEASES_MAX, e))?;
                }
            }
            by_net.entry(key.net).or_default().insert(key);
            let name = (lease.name == NAME_STORED)
                .then(|| maps.names.get(&key, 0).ok())
                .flatten()
                .map(|h| h.as_bytes().into());
            leases.insert(key, (lease, content, name));
        }
        // Names no lease uses (a lease rewritten while the daemon was away).
        let stale_names: Vec<ClientKey> = maps
            .names
            .keys()
            .filter_map(|k| k.ok())
            .filter(|k| {
                !leases
                    .get(k)
                    .is_some_and(|(_, _, n): &Written1| n.is_some())
            })
            .collect();
        for k in stale_names {
            maps.names.remove(&k).ok();
        }
        let keep: HashSet<u32> = blobs
            .by_content
            .values()
            .filter(|(_, refs)| *refs > 0)
            .map(|(id, _)| *id)
            .collect();
        blobs.by_content.retain(|_, (id, _)| keep.contains(id));
        sweep(&mut maps.opts, &keep);
        let mut sync = Self {
            maps,
            written: Written::default(),
            leases,
            by_net,
            blobs,
            updates: 0,
            relay_flags: 0,
        };
        sync.set_relays(cfg)?;
        Ok(sync)
    }

    /// Sets the relay rule (`enable_relay`, `relay_addresses`) networks get
    /// from now on, and fills RELAYS.
    fn set_relays(&mut self, cfg: &AgentConfig) -> Result<()> {
        anyhow::ensure!(
            cfg.relay_addresses.len() <= RELAYS_MAX as usize,
            "relay_addresses lists {} addresses; at most {RELAYS_MAX} are supported",
            cfg.relay_addresses.len()
        );
        let wanted: HashSet<u32> = cfg
            .relay_addresses
            .iter()
            .map(|a| u32::from_ne_bytes(a.octets()))
            .collect();
        sweep(&mut self.maps.relays, &wanted);
        for k in &wanted {
            self.maps
                .relays
                .insert(k, 1, 0)
                .map_err(|e| map_error("RELAYS", RELAYS_MAX, e))?;
        }
        self.relay_flags = match (cfg.enable_relay, wanted.is_empty()) {
            (false, _) => 0,
            (true, true) => NET_RELAY_OK,
            (true, false) => NET_RELAY_OK | NET_RELAY_LISTED,
        };
        Ok(())
    }

    /// Makes the maps hold exactly `plans` (network id → (net id, plan)):
    /// the start-up reconcile. Networks written before but not planned now are
    /// removed. A network whose writes fail is returned with its error (it
    /// keeps what it had); the others are written.
    pub fn reconcile(
        &mut self,
        plans: BTreeMap<String, (u32, PlannedNet)>,
    ) -> Result<Vec<(String, anyhow::Error)>> {
        let wanted: HashSet<ClientKey> = plans
            .values()
            .flat_map(|(net, p)| p.leases.iter().map(move |l| ClientKey::new(*net, l.mac)))
            .collect();
        let stale: Vec<ClientKey> = self
            .leases
            .keys()
            .filter(|k| !wanted.contains(k))
            .copied()
            .collect();
        for key in stale {
            self.remove_lease(&key);
        }
        let gone: Vec<(String, u32)> = self
            .written
            .plans
            .iter()
            .filter(|(id, _)| !plans.contains_key(*id))
            .map(|(id, (net, _))| (id.clone(), *net))
            .collect();
        for (id, net) in gone {
            self.apply(&id, net, None)?;
        }
        let wanted_nets: HashSet<u32> = plans.values().map(|(n, _)| *n).collect();
        sweep(&mut self.maps.nets, &wanted_nets);
        sweep(&mut self.maps.net_stats, &wanted_nets);
        let mut failed = Vec::new();
        for (network_id, (net, plan)) in plans {
            if let Err(e) = self.apply(&network_id, net, Some(plan)) {
                failed.push((network_id, e));
            }
        }
        Ok(failed)
    }

    /// Brings one network to `plan` (`None`: no longer served). Idempotent.
    /// On a failed write the network stays written as it was (still served),
    /// the maps hold what was written before the failure, and the error says
    /// which map failed; applying again finishes the job.
    pub fn apply(&mut self, network_id: &str, net: u32, plan: Option<PlannedNet>) -> Result<()> {
        let old_keys: HashSet<ClientKey> = self.by_net.get(&net).cloned().unwrap_or_default();
        let Some(plan) = plan else {
            for key in old_keys {
                self.remove_lease(&key);
            }
            self.maps.nets.remove(&net).ok();
            self.maps.net_stats.remove(&net).ok();
            self.written.remove(network_id);
            return Ok(());
        };
        // The network's counters: made once (BPF_NOEXIST keeps what counted
        // so far across config changes and daemon restarts).
        if self.maps.net_stats.get(&net, 0).is_err() {
            const BPF_NOEXIST: u64 = 1;
            match self
                .maps
                .net_stats
                .insert(net, NetStats::default(), BPF_NOEXIST)
            {
                Ok(()) => {}
                Err(aya::maps::MapError::SyscallError(e))
                    if e.io_error.raw_os_error() == Some(libc::EEXIST) => {}
                Err(e) => {
                    return Err(map_error("NET_STATS", NETS_MAX, e))
                        .with_context(|| format!("network {network_id}"))
                }
            }
        }
        let cfg = NetConfig {
            server_mac: plan.server_mac,
            flags: self.relay_flags,
        };
        if self.maps.nets.get(&net, 0).ok() != Some(cfg) {
            self.maps
                .nets
                .insert(net, cfg, 0)
                .map_err(|e| map_error("NETS", NETS_MAX, e))
                .with_context(|| format!("network {network_id}"))?;
            self.updates += 1;
        }
        let mut new_keys = HashSet::new();
        for l in &plan.leases {
            let key = ClientKey::new(net, l.mac);
            new_keys.insert(key);
            self.put_lease(key, l)
                .with_context(|| format!("port {} on network {network_id}", l.port_id))?;
        }
        for key in old_keys.difference(&new_keys) {
            self.remove_lease(key);
        }
        self.written.insert(network_id, net, plan);
        Ok(())
    }

    fn put_lease(&mut self, key: ClientKey, l: &PlannedLease) -> Result<()> {
        let lease_now = l.map_value(0);
        let name = (lease_now.name == NAME_STORED).then(|| Box::<[u8]>::from(&l.hostname[..]));
        if let Some((lease, content, stored)) = self.leases.get(&key) {
            let blob_id = self.blobs.by_content.get(&content[..]).map(|(id, _)| *id);
            // Unchanged when the map would get the same bytes again.
            if content[..] == l.blob[..]
                && blob_id == Some(lease.opts_id)
                && bytemuck::bytes_of(lease) == bytemuck::bytes_of(&l.map_value(lease.opts_id))
                && *stored == name
            {
                return Ok(());
            }
        }
        // The name first: the fast path never sees a lease whose name is
        // not there yet.
        if let Some(n) = &name {
            self.maps
                .names
                .insert(key, HostName::new(n), 0)
                .map_err(|e| map_error("NAMES", LEASES_MAX, e))?;
            self.updates += 1;
        }
        let (opts_id, shared) = self.acquire_blob(&l.blob)?;
        let lease = l.map_value(opts_id);
        if let Err(e) = self.maps.leases.insert(key, lease, 0) {
            self.release_blob(&l.blob);
            return Err(map_error("LEASES", LEASES_MAX, e));
        }
        self.updates += 1;
        self.by_net.entry(key.net).or_default().insert(key);
        let had_name = name.is_some();
        if let Some((_, old_content, old_name)) = self.leases.insert(key, (lease, shared, name)) {
            self.release_blob(&old_content);
            if old_name.is_some() && !had_name {
                self.maps.names.remove(&key).ok();
            }
        }
        Ok(())
    }

    fn remove_lease(&mut self, key: &ClientKey) {
        if let Some((_, content, name)) = self.leases.remove(key) {
            self.maps.leases.remove(key).ok();
            if name.is_some() {
                self.maps.names.remove(key).ok();
            }
            self.updates += 1;
            self.release_blob(&content);
            if let Some(keys) = self.by_net.get_mut(&key.net) {
                keys.remove(key);
                if keys.is_empty() {
                    self.by_net.remove(&key.net);
                }
            }
        }
    }

    /// The blob id of `content` (stored in OPTS if new) and the copy of it
    /// the leases share.
    fn acquire_blob(&mut self, content: &Blob) -> Result<(u32, Blob)> {
        let kept = self
            .blobs
            .by_content
            .get_key_value(&content[..])
            .map(|(k, _)| k.clone());
        if let Some(kept) = kept {
            if let Some((id, refs)) = self.blobs.by_content.get_mut(&kept[..]) {
                *refs += 1;
                return Ok((*id, kept));
            }
        }
        let id = self.blobs.next_id;
        let blob = OptsBlob::new(content);
        self.maps
            .opts
            .insert(id, blob, 0)
            .map_err(|e| map_error("OPTS", OPTS_MAX_ENTRIES, e))?;
        self.blobs.next_id += 1;
        self.updates += 1;
        self.blobs.by_content.insert(content.clone(), (id, 1));
        Ok((id, content.clone()))
    }

    fn release_blob(&mut self, content: &[u8]) {
        if let Some((id, refs)) = self.blobs.by_content.get_mut(content) {
            *refs = refs.saturating_sub(1);
            if *refs == 0 {
                let id = *id;
                self.blobs.by_content.remove(content);
                self.maps.opts.remove(&id).ok();
            }
        }
    }

    /// The references each option blob has (id → leases using it): what the
    /// tests check for leaks.
    pub fn blob_refs(&self) -> HashMap<u32, usize> {
        self.blobs.by_content.values().copied().collect()
    }

    /// The plan last written for a network.
    pub fn written(&self, network_id: &str) -> Option<&(u32, PlannedNet)> {
        self.written.plans.get(network_id)
    }

    /// Networks currently written.
    pub fn networks(&self) -> impl Iterator<Item = (&String, &(u32, PlannedNet))> {
        self.written.plans.iter()
    }

    /// The port of the client with `mac` in `network_id`'s plan as last
    /// written in full.
    pub fn port_of(&self, network_id: &str, mac: [u8; 6]) -> Option<&str> {
        self.written.port_of(network_id, mac)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(network_id: &str, ports: &[(&str, u8)]) -> PlannedNet {
        PlannedNet {
            network_id: network_id.into(),
            dhcp_port_id: format!("dhcp-{network_id}"),
            server_mac: [0xfa, 0x16, 0x3e, 0, 0, 1],
            server_addrs: Vec::new(),
            metadata_addr: false,
            mtu: None,
            leases: ports
                .iter()
                .map(|(port, last)| PlannedLease {
                    port_id: port.to_string(),
                    mac: mac(*last),
                    ip: [10, 0, 0, *last].into(),
                    server_ip: [10, 0, 0, 1].into(),
                    siaddr: [10, 0, 0, 1].into(),
                    lease_secs: 86400,
                    hostname: Vec::new(),
                    blob: Blob::default(),
                })
                .collect(),
        }
    }

    fn mac(last: u8) -> [u8; 6] {
        [0xfa, 0x16, 0x3e, 0, 1, last]
    }

    #[test]
    fn the_port_index_follows_the_written_plans() {
        let mut w = Written::default();
        w.insert("net-a", 1, plan("net-a", &[("p1", 1), ("p2", 2)]));
        w.insert("net-b", 2, plan("net-b", &[("q1", 1)]));
        // (description, network, MAC's last byte, port expected)
        let check = |w: &Written, cases: &[(&str, &str, u8, Option<&str>)]| {
            for (what, network, last, want) in cases {
                assert_eq!(w.port_of(network, mac(*last)), *want, "{what}");
            }
        };
        check(
            &w,
            &[
                ("a client of net-a", "net-a", 2, Some("p2")),
                ("the same MAC on another network", "net-b", 1, Some("q1")),
                ("a MAC the network does not plan", "net-b", 2, None),
                ("a network never written", "net-c", 1, None),
            ],
        );
        // net-a rewritten: p1 gone, p2 moved to the front, p3 new.
        w.insert("net-a", 1, plan("net-a", &[("p2", 2), ("p3", 3)]));
        check(
            &w,
            &[
                ("a port dropped from the plan", "net-a", 1, None),
                ("a port that moved in the plan", "net-a", 2, Some("p2")),
                ("a port new in the plan", "net-a", 3, Some("p3")),
                ("the other network untouched", "net-b", 1, Some("q1")),
            ],
        );
        w.remove("net-a");
        check(
            &w,
            &[
                ("a network no longer written", "net-a", 2, None),
                ("the other network untouched", "net-b", 1, Some("q1")),
            ],
        );
        assert_eq!(w.lease_at.len(), 1, "only net-b's client is indexed");
        // A MAC listed twice: the last one is what the map holds.
        w.insert("net-d", 4, plan("net-d", &[("first", 9), ("second", 9)]));
        check(&w, &[("a MAC listed twice", "net-d", 9, Some("second"))]);
    }
}
