//! The Prometheus endpoint (`GET /metrics`) of `xdhcp run` and `xdhcp agent`.
//!
//! Everything is read when scraped: the fast path's counters and the maps'
//! fill from the pinned maps, the rest from the [`Health`] the daemon and the
//! agent's RPC thread keep. Per-network series exist for the first
//! `max_networks` served networks (by network id) only, so a daemon serving
//! 10,000 networks exposes a bounded number of series; totals are always there.

use std::{
    collections::HashMap,
    fmt::Write as _,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, Result};
use dhcp_ebpf::{stat, ACKS_MAX, LEASES_MAX, NETS_MAX, OPTS_MAX_ENTRIES};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{counter::ConstCounter, gauge::ConstGauge, MetricType},
    registry::Registry,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{
    daemon::health::{unix_now_f64, Health},
    loader::{MapFill, Maps},
};

/// Per-network series by default for this many networks.
pub const DEFAULT_MAX_NETWORKS: usize = 100;

/// Reads everything on each scrape.
#[derive(Debug)]
struct Scrape {
    bpffs: PathBuf,
    health: Health,
    max_networks: usize,
}

/// A label set of string pairs.
type Labels = Vec<(&'static str, String)>;

/// One family: name, help, type, and its (labels, value) samples.
fn family(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    samples: &[(Labels, f64)],
) -> std::fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, kind)?;
    for (labels, v) in samples {
        let fam = m.encode_family(labels)?;
        match kind {
            MetricType::Counter => ConstCounter::new(*v as u64).encode(fam)?,
            _ => ConstGauge::new(*v).encode(fam)?,
        }
    }
    Ok(())
}

fn gauge(enc: &mut DescriptorEncoder, name: &str, help: &str, v: f64) -> std::fmt::Result {
    family(enc, name, help, MetricType::Gauge, &[(Vec::new(), v)])
}

fn counter(enc: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> std::fmt::Result {
    family(
        enc,
        name,
        help,
        MetricType::Counter,
        &[(Vec::new(), v as f64)],
    )
}

impl Collector for Scrape {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let now = unix_now_f64();
        let maps = Maps::open(&self.bpffs).ok();
        let fast = maps.as_ref().and_then(|m| m.counters().ok());
        let fill = maps.as_ref().and_then(|m| m.fill().ok());
        gauge(
            &mut enc,
            "xdhcp_fast_path_up",
            "1 when the fast path's pinned maps could be read",
            f64::from(u8::from(fast.is_some() && fill.is_some())),
        )?;
        let fast = fast.unwrap_or([0; stat::COUNT as usize]);
        for (i, what, help) in [
            (stat::RECEIVED, "received", "frames the XDP program saw"),
            (stat::OFFERS, "offers", "DHCPOFFERs sent by the fast path"),
            (stat::ACKS, "acks", "DHCPACKs sent by the fast path"),
            (stat::NAKS, "naks", "DHCPNAKs sent by the fast path"),
        ] {
            counter(
                &mut enc,
                &format!("xdhcp_fast_{what}"),
                &format!("Fast path: {help} (all networks)"),
                fast[i as usize],
            )?;
        }
        let passed: Vec<(Labels, f64)> = (stat::PASS_NOT_DHCP..stat::COUNT)
            .map(|i| {
                let reason = stat::NAMES[i as usize].trim_start_matches("pass_");
                (
                    vec![("reason", reason.to_string())],
                    fast[i as usize] as f64,
                )
            })
            .collect();
        family(
            &mut enc,
            "xdhcp_fast_passed",
            "Fast path: frames passed up to the stack, by reason (all networks)",
            MetricType::Counter,
            &passed,
        )?;

        let (daemon, agent) = {
            let d = self.health.daemon().clone();
            (d, self.health.agent().clone())
        };
        let slow: Vec<(Labels, f64)> = crate::slowpath::Counter::ALL
            .iter()
            .map(|c| {
                let name = c.name();
                let v = daemon.slow.get(name).copied().unwrap_or(0);
                (
                    vec![("counter", name.trim_start_matches("slow_").to_string())],
                    v as f64,
                )
            })
            .collect();
        family(
            &mut enc,
            "xdhcp_slow",
            "Slow path: replies, releases, declines, informs, unknown clients, drops",
            MetricType::Counter,
            &slow,
        )?;

        let fill = fill.unwrap_or_default();
        let maps_fill: [(&str, u64, u32); 4] = [
            ("LEASES", fill.leases, LEASES_MAX),
            ("OPTS", fill.opts, OPTS_MAX_ENTRIES),
            ("NETS", fill.nets, NETS_MAX),
            ("ACKS", fill.acks, ACKS_MAX),
        ];
        let entries: Vec<(Labels, f64)> = maps_fill
            .iter()
            .map(|(m, n, _)| (vec![("map", m.to_string())], *n as f64))
            .collect();
        let capacity: Vec<(Labels, f64)> = maps_fill
            .iter()
            .map(|(m, _, cap)| (vec![("map", m.to_string())], f64::from(*cap)))
            .collect();
        family(
            &mut enc,
            "xdhcp_map_entries",
            "Entries in a fast-path map",
            MetricType::Gauge,
            &entries,
        )?;
        family(
            &mut enc,
            "xdhcp_map_capacity",
            "Capacity (max_entries) of a fast-path map",
            MetricType::Gauge,
            &capacity,
        )?;

        let net_stats = maps
            .as_ref()
            .and_then(|m| m.network_counters().ok())
            .unwrap_or_default();
        self.networks(&mut enc, &daemon, &fill, &net_stats)?;

        gauge(
            &mut enc,
            "xdhcp_sync_last_applied_timestamp_seconds",
            "When database changes (or the start-up sync) last reached the maps",
            daemon.last_applied_unix.unwrap_or(0.0),
        )?;
        gauge(
            &mut enc,
            "xdhcp_sync_lag_seconds",
            "Seconds since database changes last reached the maps",
            daemon
                .last_applied_unix
                .map_or(now - daemon.started_unix, |t| now - t)
                .max(0.0),
        )?;
        gauge(
            &mut enc,
            "xdhcp_sync_pending_networks",
            "Networks whose changes are not in the maps yet (retried with backoff)",
            daemon.pending_networks as f64,
        )?;
        gauge(
            &mut enc,
            "xdhcp_start_time_seconds",
            "When the daemon started (unix seconds)",
            daemon.started_unix,
        )?;

        if let Some(a) = agent {
            gauge(
                &mut enc,
                "xdhcp_agent_connected",
                "1 while the agent is connected to a broker",
                f64::from(u8::from(a.connected)),
            )?;
            gauge(
                &mut enc,
                "xdhcp_agent_last_report_timestamp_seconds",
                "When report_state last succeeded (0: never)",
                a.last_report_unix.unwrap_or(0.0),
            )?;
            gauge(
                &mut enc,
                "xdhcp_agent_seconds_since_last_report",
                "Seconds since report_state last succeeded (since the start when it never did)",
                (now - a.last_report_unix.unwrap_or(daemon.started_unix)).max(0.0),
            )?;
            gauge(
                &mut enc,
                "xdhcp_agent_report_interval_seconds",
                "[agent] report_interval",
                a.report_interval,
            )?;
            gauge(
                &mut enc,
                "xdhcp_agent_pending_ready_ports",
                "Ports waiting to be reported with dhcp_ready_on_ports",
                a.pending_ready as f64,
            )?;
            counter(
                &mut enc,
                "xdhcp_agent_resyncs",
                "Full resyncs with neutron-server that succeeded",
                a.resyncs,
            )?;
        }

        family(
            &mut enc,
            "xdhcp_build_info",
            "The running build",
            MetricType::Gauge,
            &[(
                vec![("version", env!("CARGO_PKG_VERSION").to_string())],
                1.0,
            )],
        )
    }
}

impl Scrape {
    /// Totals of the served networks, and per-network series for the first
    /// `max_networks` of them.
    fn networks(
        &self,
        enc: &mut DescriptorEncoder,
        daemon: &crate::daemon::health::DaemonHealth,
        fill: &MapFill,
        net_stats: &HashMap<u32, dhcp_ebpf::NetStats>,
    ) -> std::fmt::Result {
        let mut by_mode: HashMap<&str, u64> = HashMap::new();
        for n in daemon.networks.values() {
            let mode = match (&n.device, &n.xdp) {
                (None, _) => "no_device",
                (Some(_), None) => "slow_path_only",
                (Some(_), Some(m)) => m.as_str(),
            };
            *by_mode.entry(mode).or_default() += 1;
        }
        let modes: Vec<(Labels, f64)> = ["native", "generic", "slow_path_only", "no_device"]
            .iter()
            .map(|m| {
                (
                    vec![("mode", m.to_string())],
                    by_mode.get(m).copied().unwrap_or(0) as f64,
                )
            })
            .collect();
        gauge(
            enc,
            "xdhcp_networks_served",
            "Networks in the maps",
            daemon.networks.len() as f64,
        )?;
        family(
            enc,
            "xdhcp_networks",
            "Served networks by how their DHCP device is served: XDP native or generic, \
             the slow path alone, or no device found",
            MetricType::Gauge,
            &modes,
        )?;
        let shown: Vec<(&String, &crate::daemon::health::NetworkHealth)> =
            daemon.networks.iter().take(self.max_networks).collect();
        gauge(
            enc,
            "xdhcp_networks_without_series",
            "Served networks beyond metrics_max_networks, which have no per-network series",
            daemon.networks.len().saturating_sub(shown.len()) as f64,
        )?;
        let attached: Vec<(Labels, f64)> = shown
            .iter()
            .map(|(id, n)| {
                let mode = n.xdp.clone().unwrap_or_else(|| "none".into());
                (
                    vec![
                        ("network", id.to_string()),
                        ("device", n.device.clone().unwrap_or_default()),
                        ("mode", mode),
                    ],
                    f64::from(u8::from(n.xdp.is_some())),
                )
            })
            .collect();
        family(
            enc,
            "xdhcp_network_attached",
            "1 when XDP is attached to the network's DHCP device (mode native or generic), \
             0 when not (mode none)",
            MetricType::Gauge,
            &attached,
        )?;
        let per_net = |counts: &HashMap<u32, u64>| -> Vec<(Labels, f64)> {
            shown
                .iter()
                .map(|(id, n)| {
                    (
                        vec![("network", id.to_string())],
                        counts.get(&n.net).copied().unwrap_or(0) as f64,
                    )
                })
                .collect()
        };
        family(
            enc,
            "xdhcp_network_leases",
            "Clients of the network in the LEASES map",
            MetricType::Gauge,
            &per_net(&fill.leases_by_net),
        )?;
        family(
            enc,
            "xdhcp_network_acked_clients",
            "Clients of the network with an ACK record (ACKS map)",
            MetricType::Gauge,
            &per_net(&fill.acks_by_net),
        )?;
        // The fast path's counters of each shown network (NET_STATS).
        let fast_of = |index: u32, reason: Option<&str>| -> Vec<(Labels, f64)> {
            shown
                .iter()
                .map(|(id, n)| {
                    let mut labels = vec![("network", id.to_string())];
                    if let Some(r) = reason {
                        labels.push(("reason", r.to_string()));
                    }
                    let v = net_stats
                        .get(&n.net)
                        .map_or(0, |s| s.counters[index as usize]);
                    (labels, v as f64)
                })
                .collect()
        };
        for (i, what) in [
            (stat::RECEIVED, "received"),
            (stat::OFFERS, "offers"),
            (stat::ACKS, "acks"),
            (stat::NAKS, "naks"),
        ] {
            family(
                enc,
                &format!("xdhcp_network_fast_{what}"),
                &format!("Fast path, per network: {}", stat::NAMES[i as usize]),
                MetricType::Counter,
                &fast_of(i, None),
            )?;
        }
        let passed: Vec<(Labels, f64)> = (stat::PASS_NOT_DHCP..stat::COUNT)
            .flat_map(|i| fast_of(i, Some(stat::NAMES[i as usize].trim_start_matches("pass_"))))
            .collect();
        family(
            enc,
            "xdhcp_network_fast_passed",
            "Fast path, per network: frames passed up to the stack, by reason",
            MetricType::Counter,
            &passed,
        )?;
        let applied: Vec<(Labels, f64)> = shown
            .iter()
            .map(|(id, n)| {
                (
                    vec![("network", id.to_string())],
                    n.last_applied_unix.unwrap_or(0.0),
                )
            })
            .collect();
        family(
            enc,
            "xdhcp_network_last_applied_timestamp_seconds",
            "When the network's last change reached the maps",
            MetricType::Gauge,
            &applied,
        )
    }
}

/// The exposition of one scrape (Prometheus text format 0.0.4).
pub fn render(bpffs: &Path, health: &Health, max_networks: usize) -> Result<String> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape {
        bpffs: bpffs.to_path_buf(),
        health: health.clone(),
        max_networks,
    }));
    let mut out = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)
        .context("encoding the metrics")?;
    Ok(out)
}

/// Serves `GET /metrics` on `addr` from a thread of its own (scrapes read
/// maps, which must not hold up the daemon's loop). Binding happens before
/// returning, so a bad or busy address fails the start.
pub fn serve(addr: SocketAddr, bpffs: PathBuf, health: Health, max_networks: usize) -> Result<()> {
    let listener = std::net::TcpListener::bind(addr)
        .with_context(|| format!("metrics: listening on {addr}"))?;
    listener.set_nonblocking(true)?;
    tracing::info!(%addr, max_networks, "metrics: serving GET /metrics");
    crate::spawn_runtime_thread("metrics", move || async move {
        let listener = match tokio::net::TcpListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!("metrics listener: {e}");
                return;
            }
        };
        loop {
            let Ok((conn, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let (bpffs, health) = (bpffs.clone(), health.clone());
            tokio::spawn(async move {
                let _ = tokio::time::timeout(
                    Duration::from_secs(10),
                    answer(conn, &bpffs, &health, max_networks),
                )
                .await;
            });
        }
    })
}

/// One HTTP/1.1 exchange: the request head, then a response, then close.
async fn answer(
    mut conn: tokio::net::TcpStream,
    bpffs: &Path,
    health: &Health,
    max_networks: usize,
) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut buf).await?;
        if n == 0 || head.len() > 16 * 1024 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (status, kind, body) = match (method, path) {
        ("GET" | "HEAD", "/metrics") => match render(bpffs, health, max_networks) {
            Ok(body) => ("200 OK", "text/plain; version=0.0.4; charset=utf-8", body),
            Err(e) => (
                "500 Internal Server Error",
                "text/plain; charset=utf-8",
                format!("{e:#}\n"),
            ),
        },
        ("GET" | "HEAD", _) => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "xdhcp serves /metrics only\n".to_string(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            "GET /metrics\n".to_string(),
        ),
    };
    let mut resp = String::new();
    let _ = write!(
        resp,
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(resp.as_bytes()).await?;
    if method != "HEAD" {
        conn.write_all(body.as_bytes()).await?;
    }
    conn.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::health::{AgentHealth, NetworkHealth};

    /// The value of `series` (name and labels exactly as exposed) in `text`.
    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    fn health_with(networks: usize) -> Health {
        let h = Health::default();
        {
            let mut d = h.daemon();
            for i in 0..networks {
                d.networks.insert(
                    format!("net-{i:03}"),
                    NetworkHealth {
                        net: i as u32 + 1,
                        namespace: format!("qdhcp-net-{i:03}"),
                        device: Some(format!("tap{i}")),
                        xdp: Some(if i % 2 == 0 { "native" } else { "generic" }.into()),
                        slow_path_alive: true,
                        last_applied_unix: Some(1.0),
                    },
                );
            }
            d.slow.insert("slow_replies".into(), 7);
        }
        h
    }

    #[test]
    fn per_network_series_are_bounded_and_totals_are_not() {
        let text = render(Path::new("/nonexistent"), &health_with(12), 5).unwrap();
        let attached = text
            .lines()
            .filter(|l| l.starts_with("xdhcp_network_attached{"))
            .count();
        assert_eq!(
            attached, 5,
            "per-network series for max_networks only:\n{text}"
        );
        for (series, want) in [
            ("xdhcp_networks_served", 12.0),
            ("xdhcp_networks_without_series", 7.0),
            ("xdhcp_networks{mode=\"native\"}", 6.0),
            ("xdhcp_networks{mode=\"generic\"}", 6.0),
            ("xdhcp_slow_total{counter=\"replies\"}", 7.0),
            ("xdhcp_fast_path_up", 0.0),
            (
                "xdhcp_map_capacity{map=\"LEASES\"}",
                dhcp_ebpf::LEASES_MAX as f64,
            ),
            (
                "xdhcp_network_attached{network=\"net-000\",device=\"tap0\",mode=\"native\"}",
                1.0,
            ),
        ] {
            assert_eq!(value(&text, series), Some(want), "{series} in\n{text}");
        }
        assert!(
            !text.contains("xdhcp_agent_"),
            "no agent series for xdhcp run"
        );
        assert!(text.contains("# TYPE xdhcp_fast_offers_total counter"));
    }

    #[test]
    fn agent_series_when_there_is_an_agent() {
        let h = health_with(0);
        h.update_agent(|a| {
            *a = AgentHealth {
                connected: true,
                last_report_unix: Some(5.0),
                report_interval: 30.0,
                pending_ready: 3,
                resyncs: 2,
            }
        });
        let text = render(Path::new("/nonexistent"), &h, 5).unwrap();
        for (series, want) in [
            ("xdhcp_agent_connected", 1.0),
            ("xdhcp_agent_pending_ready_ports", 3.0),
            ("xdhcp_agent_resyncs_total", 2.0),
            ("xdhcp_agent_last_report_timestamp_seconds", 5.0),
        ] {
            assert_eq!(value(&text, series), Some(want), "{series} in\n{text}");
        }
    }
}
