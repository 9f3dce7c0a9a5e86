//! The slow-path event sink and the lease recorder: what the slow paths
//! report (counts, releases, declines) and the leases the fast path granted
//! (its ACK records), written to the lease store.

use std::{
    collections::{HashMap, HashSet},
    net::Ipv4Addr,
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::Result;
use dhcp_ebpf::{AckRecord, ClientKey, EXPIRES_NEVER};

use crate::{
    daemon::{follow::NetIds, Daemon},
    mapsync::Sync,
    neutron::model::MacAddr,
    ratelimit::{suppressed, RateLimit},
    slowpath::Event,
    store::{Db, LeaseRecord, LeaseState},
};

/// A client's lease row is rewritten for a renewal of the same address at most
/// this often; `xdhcp leases` shows the live ACK records on top of the rows.
const LEASE_REFRESH_NS: u64 = 60_000_000_000;

/// The fast path's clock (CLOCK_BOOTTIME, which stamps ACK records) and the
/// wall clock (unix seconds, which lease rows are in), read together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clocks {
    pub boot_ns: u64,
    pub unix: u64,
}

impl Clocks {
    /// Both clocks now.
    pub fn now() -> Self {
        Clocks {
            boot_ns: boottime_ns(),
            unix: unix_now(),
        }
    }
}

/// The lease row an ACK record stands for: `key`'s client bound to the
/// record's address on `network_id` (as `port_id`), its times in unix
/// seconds as of `at`.
pub fn lease_row(
    key: &ClientKey,
    rec: &AckRecord,
    network_id: String,
    port_id: String,
    at: Clocks,
) -> LeaseRecord {
    let expires = (rec.expires_ns != EXPIRES_NEVER).then(|| {
        at.unix.saturating_add_signed(
            ((rec.expires_ns as i128 - at.boot_ns as i128) / 1_000_000_000) as i64,
        )
    });
    let updated = at
        .unix
        .saturating_sub(at.boot_ns.saturating_sub(rec.acked_ns) / 1_000_000_000);
    LeaseRecord {
        network_id,
        mac: MacAddr(key.mac),
        ip: Ipv4Addr::from(rec.ip),
        port_id,
        expires,
        state: LeaseState::Bound,
        updated,
    }
}

/// Seconds since the epoch.
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// CLOCK_BOOTTIME in ns (what the fast path stamps ACKs with).
fn boottime_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The lease recorder: which ACK records are in the lease store already.
#[derive(Debug, Default)]
pub(super) struct LeaseRecorder {
    /// The ACK record last written to the database, per client still in ACKS.
    acks_seen: HashMap<ClientKey, AckRecord>,
    /// The per-client lines (a DECLINE flood must not fill the log).
    log_limit: RateLimit<(EventLine, ClientKey)>,
}

/// The kinds of per-client line the event sink writes, each limited on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum EventLine {
    Declined,
    RecordFailed,
}

impl LeaseRecorder {
    /// Records the leases the fast path granted since the last look, in one
    /// transaction. Under load that is thousands a second: network and port
    /// are lookups in indexes (`net_ids`, `sync`'s written plans).
    pub(super) fn poll(&mut self, db: &mut Db, sync: &Sync, net_ids: &NetIds) -> Result<()> {
        let at = Clocks::now();
        let all = sync.maps.all_acks()?;
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
        let records: Vec<LeaseRecord> = fresh
            .iter()
            .map(|(key, rec)| {
                let network = net_ids.network_of(key.net).unwrap_or("");
                let port = sync.port_of(network, key.mac).unwrap_or("");
                lease_row(key, rec, network.to_string(), port.to_string(), at)
            })
            .collect();
        db.record_leases(&records)?;
        for (key, rec) in fresh {
            self.acks_seen.insert(key, rec);
        }
        Ok(())
    }

    /// Records a client's lease as `state` (released, declined) as of now,
    /// and removes its ACK record: the fast path stops renewing it.
    fn record_event(
        &mut self,
        db: &mut Db,
        sync: &mut Sync,
        network: &str,
        key: ClientKey,
        ip: Ipv4Addr,
        state: LeaseState,
    ) -> Result<()> {
        let port_id = sync.port_of(network, key.mac).unwrap_or("").to_string();
        let now = unix_now();
        db.record_lease(&LeaseRecord {
            network_id: network.to_string(),
            mac: MacAddr(key.mac),
            ip,
            port_id,
            expires: Some(now),
            state,
            updated: now,
        })?;
        let _ = sync.maps.acks.remove(&key);
        self.acks_seen.remove(&key);
        Ok(())
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

/// The slow-path event sink.
impl Daemon {
    /// Takes in what the slow paths reported since the last look.
    pub(super) fn drain_events(&mut self) {
        while let Ok(ev) = self.events.try_recv() {
            let result = match ev {
                Event::Count(c) => {
                    self.counters.add(c.name());
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
                    let network = self.net_ids.network_of(net).unwrap_or("");
                    let port = self.sync.port_of(network, mac).unwrap_or("");
                    let key = (EventLine::Declined, ClientKey::new(net, mac));
                    if let Some(n) = self.leases.log_limit.allow(key) {
                        tracing::warn!(network = %network, port = %port, ip = %ip, mac = %MacAddr(mac), "DHCPDECLINE: the client says its address is in use{}", suppressed(n));
                    }
                    self.record_event(net, mac, ip, LeaseState::Declined)
                }
            };
            if let Err(e) = result {
                // A broken store fails every event: one line per interval says so.
                let key = (EventLine::RecordFailed, ClientKey::default());
                if let Some(n) = self.leases.log_limit.allow(key) {
                    tracing::warn!("recording a slow-path event: {e:#}{}", suppressed(n));
                }
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
        let network = self.net_ids.network_of(net).unwrap_or("");
        self.leases.record_event(
            &mut self.db,
            &mut self.sync,
            network,
            ClientKey::new(net, mac),
            ip,
            state,
        )
    }

    /// Records the leases the fast path granted since the last look.
    pub(super) fn poll_acks(&mut self) -> Result<()> {
        self.leases.poll(&mut self.db, &self.sync, &self.net_ids)
    }
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

    #[test]
    fn an_ack_record_becomes_a_bound_lease_row_in_unix_time() {
        const S: u64 = 1_000_000_000;
        let at = Clocks {
            boot_ns: 1_000 * S,
            unix: 1_700_000_000,
        };
        let key = ClientKey::new(3, [0xfa, 0x16, 0x3e, 0, 0, 9]);
        // (description, acked_ns, expires_ns, updated, expires)
        let cases: [(&str, u64, u64, u64, Option<u64>); 5] = [
            (
                "acked 10 s ago, 3600 s lease",
                990 * S,
                4_590 * S,
                at.unix - 10,
                Some(at.unix + 3_590),
            ),
            (
                "acked just now, infinite lease",
                at.boot_ns,
                EXPIRES_NEVER,
                at.unix,
                None,
            ),
            (
                "expired 20 s ago",
                900 * S,
                980 * S,
                at.unix - 100,
                Some(at.unix - 20),
            ),
            (
                "fractions of a second are dropped",
                990 * S - S / 2,
                1_000 * S + S / 2,
                at.unix - 10,
                Some(at.unix),
            ),
            (
                "stamped after the clocks were read: now",
                1_001 * S,
                1_001 * S,
                at.unix,
                Some(at.unix + 1),
            ),
        ];
        for (what, acked_ns, expires_ns, updated, expires) in cases {
            let rec = AckRecord {
                ip: [10, 0, 0, 9],
                acked_ns,
                expires_ns,
                ..Default::default()
            };
            let row = lease_row(&key, &rec, "net-a".into(), "port-9".into(), at);
            assert_eq!(
                row,
                LeaseRecord {
                    network_id: "net-a".into(),
                    mac: "fa:16:3e:00:00:09".parse().unwrap(),
                    ip: Ipv4Addr::new(10, 0, 0, 9),
                    port_id: "port-9".into(),
                    expires,
                    state: LeaseState::Bound,
                    updated,
                },
                "{what}"
            );
        }
    }
}
