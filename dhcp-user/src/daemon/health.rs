//! What the daemon (and the agent's RPC thread) say about themselves: shared
//! in memory with the Prometheus endpoint, and written every
//! [`STATUS_EVERY`] to a status file next to the pid file for `xdhcp status`.

use std::{
    collections::BTreeMap,
    io::Write,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::daemon::pid_file;

/// How often the daemon rewrites its status file.
pub const STATUS_EVERY: Duration = Duration::from_secs(2);
/// A status file older than this names a daemon that stopped writing it.
pub const STATUS_STALE: Duration = Duration::from_secs(10);

/// The state shared between the daemon, the agent's RPC thread and the
/// metrics endpoint.
pub type Health = Arc<HealthState>;

/// See [`Health`].
#[derive(Debug, Default)]
pub struct HealthState {
    daemon: Mutex<DaemonHealth>,
    agent: Mutex<Option<AgentHealth>>,
}

impl HealthState {
    /// The daemon's part (a poisoned lock still holds usable numbers).
    pub fn daemon(&self) -> MutexGuard<'_, DaemonHealth> {
        self.daemon.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The agent's part; None for `xdhcp run`.
    pub fn agent(&self) -> MutexGuard<'_, Option<AgentHealth>> {
        self.agent.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes the agent's part (creating it).
    pub fn update_agent(&self, f: impl FnOnce(&mut AgentHealth)) {
        f(self.agent().get_or_insert_with(AgentHealth::default))
    }
}

/// The daemon's state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DaemonHealth {
    /// When the daemon started (unix seconds).
    pub started_unix: f64,
    /// Every served network (one with a plan in the maps), by network id.
    pub networks: BTreeMap<String, NetworkHealth>,
    /// When a database change (or the start-up sync) last reached the maps.
    pub last_applied_unix: Option<f64>,
    /// Networks whose changes are not in the maps yet (retried with backoff).
    pub pending_networks: usize,
    /// Slow-path counters: saved in the database plus counted since.
    pub slow: BTreeMap<String, u64>,
}

/// One served network.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NetworkHealth {
    /// The network's number in the maps.
    pub net: u32,
    pub namespace: String,
    /// The DHCP device served, None while it is not found.
    pub device: Option<String>,
    /// "native" or "generic" with XDP attached; None when it is not.
    pub xdp: Option<String>,
    /// Whether the device's slow-path thread runs.
    pub slow_path_alive: bool,
    /// When the network's last change reached the maps (unix seconds).
    pub last_applied_unix: Option<f64>,
}

/// The agent's RPC state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentHealth {
    /// Connected to a broker now.
    pub connected: bool,
    /// The last successful report_state (unix seconds).
    pub last_report_unix: Option<f64>,
    /// `[agent] report_interval` (0: no reports).
    pub report_interval: f64,
    /// Ports waiting for dhcp_ready_on_ports.
    pub pending_ready: usize,
    /// Full resyncs (get_active_networks_info) that succeeded.
    pub resyncs: u64,
}

/// The status file's contents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusFile {
    pub version: String,
    pub pid: u32,
    pub written_unix: f64,
    pub bpffs: PathBuf,
    pub db: PathBuf,
    pub daemon: DaemonHealth,
    pub agent: Option<AgentHealth>,
}

/// Seconds since the epoch, with fractions.
pub fn unix_now_f64() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The status file of the daemon serving `bpffs`: next to its pid file.
pub fn status_file(bpffs: &Path) -> PathBuf {
    pid_file(bpffs).with_extension("status.json")
}

/// Writes `status` to `path` atomically (a temporary file renamed over it),
/// so a reader never sees half a file.
pub fn write_status(path: &Path, status: &StatusFile) -> Result<()> {
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_vec(status)?;
    let mut f =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(&text)
        .with_context(|| format!("writing {}", tmp.display()))?;
    drop(f);
    std::fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}

/// The status file at `path`.
pub fn read_status(path: &Path) -> Result<StatusFile> {
    let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&text).with_context(|| format!("parsing {}", path.display()))
}

/// The pid holding the daemon's flock on `pid_file`, from /proc/locks (which
/// only reads: trying the lock ourselves could make a daemon starting at that
/// moment believe another one runs).
pub fn lock_holder(pid_file: &Path) -> Option<u32> {
    let ino = std::fs::metadata(pid_file).ok()?.ino();
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    locks.lines().find_map(|line| {
        // "1: FLOCK  ADVISORY  WRITE 1234 00:1a:5678 0 EOF"; waiters have "->".
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 6 || f[1] != "FLOCK" {
            return None;
        }
        let file_ino: u64 = f[5].rsplit(':').next()?.parse().ok()?;
        (file_ino == ino).then(|| f[4].parse().ok()).flatten()
    })
}

/// What is wrong, for `xdhcp status`: nothing when the list is empty.
/// `holder` is the pid holding the daemon's lock, `now` unix seconds.
pub fn problems(status: Option<&StatusFile>, holder: Option<u32>, now: f64) -> Vec<String> {
    let mut out = Vec::new();
    let Some(holder) = holder else {
        out.push("no daemon holds the lock of this bpffs".to_string());
        return out;
    };
    let Some(s) = status else {
        out.push(format!("daemon pid {holder} wrote no status file"));
        return out;
    };
    if s.pid != holder {
        out.push(format!(
            "the status file is of pid {}, the lock is held by pid {holder}",
            s.pid
        ));
    }
    let age = now - s.written_unix;
    if age > STATUS_STALE.as_secs_f64() {
        out.push(format!("the status file is {age:.0} s old"));
    }
    for (id, n) in &s.daemon.networks {
        match (&n.device, &n.xdp) {
            (None, _) => out.push(format!(
                "network {id}: no DHCP device in {} (not attached)",
                n.namespace
            )),
            (Some(dev), None) => out.push(format!(
                "network {id}: XDP not attached to {dev} (served by the slow path alone)"
            )),
            _ => {}
        }
        if n.device.is_some() && !n.slow_path_alive {
            out.push(format!("network {id}: the slow path stopped"));
        }
    }
    if let Some(a) = &s.agent {
        if !a.connected {
            out.push("agent: not connected to a broker".to_string());
        }
        if a.report_interval > 0.0 {
            let limit = 3.0 * a.report_interval;
            // Measured from the daemon's start until the first report.
            let since = now - a.last_report_unix.unwrap_or(s.daemon.started_unix);
            if since > limit {
                out.push(format!(
                    "agent: last report_state {since:.0} s ago (more than 3 × report_interval = {limit:.0} s)"
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn healthy() -> StatusFile {
        let mut networks = BTreeMap::new();
        networks.insert(
            "net-a".to_string(),
            NetworkHealth {
                net: 1,
                namespace: "qdhcp-net-a".into(),
                device: Some("tap1".into()),
                xdp: Some("native".into()),
                slow_path_alive: true,
                last_applied_unix: Some(990.0),
            },
        );
        StatusFile {
            version: "0.1.0".into(),
            pid: 42,
            written_unix: 999.0,
            bpffs: "/sys/fs/bpf/xdhcp".into(),
            db: "/var/lib/xdhcp/xdhcp.db".into(),
            daemon: DaemonHealth {
                started_unix: 900.0,
                networks,
                last_applied_unix: Some(990.0),
                pending_networks: 0,
                slow: BTreeMap::new(),
            },
            agent: Some(AgentHealth {
                connected: true,
                last_report_unix: Some(980.0),
                report_interval: 30.0,
                pending_ready: 0,
                resyncs: 1,
            }),
        }
    }

    #[test]
    fn status_problems() {
        type Case = (&'static str, fn(&mut StatusFile), Option<u32>, &'static str);
        let cases: &[Case] = &[
            ("all well", |_| {}, Some(42), ""),
            (
                "no daemon holds the lock",
                |_| {},
                None,
                "no daemon holds the lock",
            ),
            (
                "another pid holds the lock",
                |_| {},
                Some(43),
                "lock is held by pid 43",
            ),
            (
                "a stale status file",
                |s| s.written_unix = 900.0,
                Some(42),
                "status file is 100 s old",
            ),
            (
                "a network without device",
                |s| s.daemon.networks.get_mut("net-a").unwrap().device = None,
                Some(42),
                "net-a: no DHCP device",
            ),
            (
                "slow path only",
                |s| s.daemon.networks.get_mut("net-a").unwrap().xdp = None,
                Some(42),
                "XDP not attached to tap1",
            ),
            (
                "slow path stopped",
                |s| s.daemon.networks.get_mut("net-a").unwrap().slow_path_alive = false,
                Some(42),
                "slow path stopped",
            ),
            (
                "broker disconnected",
                |s| s.agent.as_mut().unwrap().connected = false,
                Some(42),
                "not connected",
            ),
            (
                "last report older than 3 × report_interval",
                |s| s.agent.as_mut().unwrap().last_report_unix = Some(900.0),
                Some(42),
                "100 s ago",
            ),
            (
                "no report yet, started long ago",
                |s| s.agent.as_mut().unwrap().last_report_unix = None,
                Some(42),
                "100 s ago",
            ),
            (
                "no reports configured",
                |s| {
                    let a = s.agent.as_mut().unwrap();
                    a.report_interval = 0.0;
                    a.last_report_unix = None
                },
                Some(42),
                "",
            ),
            ("xdhcp run: no agent part", |s| s.agent = None, Some(42), ""),
        ];
        for (what, change, holder, want) in cases {
            let mut s = healthy();
            change(&mut s);
            let got = problems(Some(&s), *holder, 1000.0).join("; ");
            if want.is_empty() {
                assert_eq!(got, "", "{what}");
            } else {
                assert!(got.contains(want), "{what}: {got:?} lacks {want:?}");
            }
        }
        assert_eq!(
            problems(None, Some(42), 1000.0),
            ["daemon pid 42 wrote no status file"],
            "a daemon without status file"
        );
    }

    #[test]
    fn status_file_round_trips_atomically() {
        let dir = std::env::temp_dir().join(format!("xdhcp-status-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("x.status.json");
        let s = healthy();
        write_status(&path, &s).unwrap();
        assert_eq!(read_status(&path).unwrap(), s);
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().collect();
        assert_eq!(left.len(), 1, "no temporary file left behind");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn status_file_sits_next_to_the_pid_file() {
        assert_eq!(
            status_file(Path::new("/sys/fs/bpf/x.y")),
            PathBuf::from("/run/xdhcp/sys_fs_bpf_x.y.status.json")
        );
    }
}
