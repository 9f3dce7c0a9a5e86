//! `xdhcp leases`, `xdhcp stats`, `xdhcp ports`, `xdhcp status`: what the
//! maps, the lease store and the daemon's status file hold, as a table or as JSON.

use std::{
    collections::{btree_map::Entry, BTreeMap},
    net::Ipv4Addr,
    path::Path,
};

use anyhow::{Context, Result};
use dhcp_ebpf::{stat, LEASE_INFINITE, OPTS_MAX};
use serde::Serialize;
use xdhcp::{
    daemon::health,
    daemon::{
        self,
        leases::{lease_row, Clocks},
    },
    loader::Maps,
    neutron::model::{format_mac, MacAddr},
    slowpath::Counter,
    store::{Db, LeaseRecord},
};

/// The pinned maps, if a fast path is pinned at `bpffs`.
fn maps(bpffs: &Path) -> Option<Maps> {
    Maps::open(bpffs).ok()
}

fn net_names(db: &Db) -> Result<BTreeMap<u32, String>> {
    Ok(db.net_ids()?.into_iter().map(|(n, id)| (id, n)).collect())
}

/// Lease store rows, updated with what the fast path granted since the daemon last recorded.
pub fn leases(db_path: &Path, bpffs: &Path, json: bool) -> Result<()> {
    let db = Db::open_read_only(db_path)?;
    let mut rows: BTreeMap<(String, MacAddr), LeaseRecord> = db
        .leases()?
        .into_iter()
        .map(|l| ((l.network_id.clone(), l.mac), l))
        .collect();
    if let Some(maps) = maps(bpffs) {
        let names = net_names(&db)?;
        let at = Clocks::now();
        for (key, rec) in maps.all_acks()? {
            let network_id = names
                .get(&key.net)
                .cloned()
                .unwrap_or_else(|| format!("net-{}", key.net));
            // The port is the stored row's: the maps do not know it.
            let acked = lease_row(&key, &rec, network_id, String::new(), at);
            match rows.entry((acked.network_id.clone(), acked.mac)) {
                Entry::Vacant(e) => {
                    e.insert(acked);
                }
                Entry::Occupied(mut e) => {
                    let row = e.get_mut();
                    if acked.updated > row.updated {
                        *row = LeaseRecord {
                            port_id: std::mem::take(&mut row.port_id),
                            ..acked
                        };
                    }
                }
            }
        }
    }
    let rows: Vec<LeaseRecord> = rows.into_values().collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "{:<17} {:<15} {:<36} {:<36} {:>11} STATE",
        "MAC", "IP", "NETWORK", "PORT", "EXPIRES"
    );
    for r in rows {
        let expires = r.expires.map_or("never".to_string(), |e| e.to_string());
        println!(
            "{:<17} {:<15} {:<36} {:<36} {:>11} {}",
            r.mac, r.ip, r.network_id, r.port_id, expires, r.state
        );
    }
    Ok(())
}

/// Fast-path counters (summed over CPUs) and slow-path counters.
pub fn stats(db_path: &Path, bpffs: &Path, json: bool) -> Result<()> {
    let mut out: BTreeMap<String, u64> = BTreeMap::new();
    let fast = match maps(bpffs) {
        Some(m) => m.counters()?,
        None => [0; stat::COUNT as usize],
    };
    for (name, v) in stat::NAMES.iter().zip(fast) {
        out.insert(name.to_string(), v);
    }
    let db = Db::open_read_only(db_path)?;
    let slow: BTreeMap<String, u64> = db.counters()?.into_iter().collect();
    for c in Counter::ALL {
        out.insert(
            c.name().to_string(),
            slow.get(c.name()).copied().unwrap_or(0),
        );
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        for (k, v) in out {
            println!("{k:<24} {v}");
        }
    }
    Ok(())
}

#[derive(Serialize)]
struct PortRow {
    network_id: String,
    net: u32,
    mac: String,
    ip: Ipv4Addr,
    server_ip: Ipv4Addr,
    hostname: String,
    lease_secs: Option<u32>,
    opts_id: u32,
    opts_len: usize,
}

/// The LEASES map, one row per client.
pub fn ports(db_path: &Path, bpffs: &Path, json: bool) -> Result<()> {
    let maps = Maps::open(bpffs)
        .with_context(|| format!("no fast path pinned under {}", bpffs.display()))?;
    let names = net_names(&Db::open_read_only(db_path)?)?;
    let mut rows = Vec::new();
    for entry in maps.leases.iter() {
        let (key, lease) = entry.context("reading LEASES")?;
        let opts_len = maps
            .opts
            .get(&lease.opts_id, 0)
            .map(|b| (b.len as usize).min(OPTS_MAX))
            .unwrap_or(0);
        rows.push(PortRow {
            network_id: names.get(&key.net).cloned().unwrap_or_default(),
            net: key.net,
            mac: format_mac(&key.mac),
            ip: Ipv4Addr::from(lease.ip),
            server_ip: Ipv4Addr::from(lease.server_ip),
            hostname: String::from_utf8_lossy(&maps.hostname(&key, &lease).unwrap_or_default())
                .into(),
            lease_secs: (lease.lease_secs != LEASE_INFINITE).then_some(lease.lease_secs),
            opts_id: lease.opts_id,
            opts_len,
        });
    }
    rows.sort_by(|a, b| (&a.network_id, &a.mac).cmp(&(&b.network_id, &b.mac)));
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "{:<36} {:<17} {:<15} {:<15} {:<24} {:>8} OPTS",
        "NETWORK", "MAC", "IP", "SERVER", "HOSTNAME", "LEASE"
    );
    for r in rows {
        let lease = r
            .lease_secs
            .map_or("infinite".to_string(), |s| s.to_string());
        println!(
            "{:<36} {:<17} {:<15} {:<15} {:<24} {:>8} #{} ({} bytes)",
            r.network_id, r.mac, r.ip, r.server_ip, r.hostname, lease, r.opts_id, r.opts_len
        );
    }
    Ok(())
}

#[derive(Serialize)]
struct StatusNetwork {
    network_id: String,
    namespace: String,
    device: Option<String>,
    attached: bool,
    /// "native", "generic", or None when XDP is not attached.
    mode: Option<String>,
    leases_in_maps: u64,
    acked_clients: u64,
    last_change_applied_unix: Option<f64>,
    slow_path_alive: bool,
}

#[derive(Serialize)]
struct StatusAgent {
    broker_connected: bool,
    last_report_unix: Option<f64>,
    last_report_age_secs: Option<f64>,
    report_interval: f64,
    pending_ready_ports: usize,
    resyncs: u64,
}

#[derive(Serialize)]
struct StatusReport {
    healthy: bool,
    problems: Vec<String>,
    pid: Option<u32>,
    version: Option<String>,
    status_file: String,
    status_age_secs: Option<f64>,
    last_change_applied_unix: Option<f64>,
    pending_networks: usize,
    networks: Vec<StatusNetwork>,
    agent: Option<StatusAgent>,
}

/// `xdhcp status`: the daemon's status file and the pinned maps; an error
/// (exit status 1) when something is wrong.
pub fn status(bpffs: &Path, json: bool) -> Result<()> {
    let path = health::status_file(bpffs);
    let holder = health::lock_holder(&daemon::pid_file(bpffs));
    let file = health::read_status(&path).ok();
    let now = health::unix_now_f64();
    let problems = health::problems(file.as_ref(), holder, now);
    let fill = maps(bpffs).and_then(|m| m.fill().ok()).unwrap_or_default();
    // A status file nobody holds the lock of is from a daemon that died: its
    // networks are not served by it any more.
    let alive = holder.is_some();
    let networks = file
        .iter()
        .filter(|_| alive)
        .flat_map(|f| &f.daemon.networks)
        .map(|(id, n)| StatusNetwork {
            network_id: id.clone(),
            namespace: n.namespace.clone(),
            device: n.device.clone(),
            attached: n.xdp.is_some(),
            mode: n.xdp.clone(),
            leases_in_maps: fill.leases_by_net.get(&n.net).copied().unwrap_or(0),
            acked_clients: fill.acks_by_net.get(&n.net).copied().unwrap_or(0),
            last_change_applied_unix: n.last_applied_unix,
            slow_path_alive: n.slow_path_alive,
        })
        .collect();
    let agent = file
        .as_ref()
        .filter(|_| alive)
        .and_then(|f| f.agent.as_ref())
        .map(|a| StatusAgent {
            broker_connected: a.connected,
            last_report_unix: a.last_report_unix,
            last_report_age_secs: a.last_report_unix.map(|t| now - t),
            report_interval: a.report_interval,
            pending_ready_ports: a.pending_ready,
            resyncs: a.resyncs,
        });
    let report = StatusReport {
        healthy: problems.is_empty(),
        problems,
        pid: holder,
        version: file.as_ref().map(|f| f.version.clone()),
        status_file: path.display().to_string(),
        status_age_secs: file.as_ref().map(|f| now - f.written_unix),
        last_change_applied_unix: file.as_ref().and_then(|f| f.daemon.last_applied_unix),
        pending_networks: file.as_ref().map_or(0, |f| f.daemon.pending_networks),
        networks,
        agent,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        match report.pid {
            Some(pid) => println!(
                "daemon: pid {pid}, version {}, status written {:.1} s ago, {} network(s) with changes pending",
                report.version.as_deref().unwrap_or("?"),
                report.status_age_secs.unwrap_or(f64::NAN),
                report.pending_networks
            ),
            None => println!("daemon: none holds the lock of {}", bpffs.display()),
        }
        if !report.networks.is_empty() {
            println!(
                "{:<36} {:<16} {:<8} {:>7} {:>7} {:>12} SLOW PATH",
                "NETWORK", "DEVICE", "XDP", "LEASES", "ACKED", "LAST CHANGE"
            );
        }
        for n in &report.networks {
            println!(
                "{:<36} {:<16} {:<8} {:>7} {:>7} {:>12} {}",
                n.network_id,
                n.device.as_deref().unwrap_or("-"),
                n.mode.as_deref().unwrap_or("none"),
                n.leases_in_maps,
                n.acked_clients,
                n.last_change_applied_unix
                    .map_or("-".to_string(), |t| format!(
                        "{:.0} s ago",
                        (xdhcp::daemon::health::unix_now_f64() - t).max(0.0)
                    )),
                if n.slow_path_alive {
                    "alive"
                } else {
                    "stopped"
                }
            );
        }
        if let Some(a) = &report.agent {
            println!(
                "agent: broker {}, last report {}, {} port(s) pending ready, {} resync(s)",
                if a.broker_connected {
                    "connected"
                } else {
                    "disconnected"
                },
                a.last_report_age_secs
                    .map_or("never".to_string(), |s| format!("{s:.0} s ago")),
                a.pending_ready_ports,
                a.resyncs
            );
        }
        for p in &report.problems {
            println!("problem: {p}");
        }
    }
    if report.healthy {
        Ok(())
    } else {
        anyhow::bail!("{}", report.problems.join("; "))
    }
}
