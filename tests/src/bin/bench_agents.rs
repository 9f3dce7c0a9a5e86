//! bench: `xdhcp agent` and Debian's neutron-dhcp-agent on one
//! neutron-server, each hosting a network of its own (availability zones keep
//! them apart), configured alike (the seed's dhcp_agent.ini). For each:
//! the first port of a new network → ACTIVE; ports created at a steady rate
//! (one POST each, the VM's NIC plugged as Nova plugs it) → ACTIVE, p50 and
//! p99; a burst (bulk POSTs of 50 back to back, the NICs plugged in one
//! OVSDB transaction) →
//! all ACTIVE; the memory of the agent's whole process tree (RSS and PSS:
//! agent, helpers, dnsmasq, haproxy) and its CPU seconds per 1,000 port
//! events. ACTIVE needs neutron-server, the L2 stand-in and the agent; the
//! time neutron-server takes to create the ports is printed beside it.
//!
//! BENCH_AGENT_PORTS (200) and BENCH_AGENT_BURST (500) set the sizes,
//! BENCH_AGENT_RATE (2) the steady rate in ports per second: neutron-server
//! (one API worker) creates about 5 ports a second on this 2-core machine, so
//! a faster rate measures its queue, not the agents.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use serde_json::{json, Value};
use xdhcp_tests::{
    agent::{unique, Agent, SEED_DNSMASQ_CONF},
    neutron::Neutron,
    real_agent::RealAgent,
};

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One agent under test.
struct Side<'a> {
    name: &'static str,
    host: String,
    az: String,
    /// The pids of its process tree, now.
    pids: Box<dyn Fn() -> Vec<i32> + 'a>,
}

fn main() {
    let ports = env_or("BENCH_AGENT_PORTS", 200);
    let burst = env_or("BENCH_AGENT_BURST", 500);
    let rate = env_or("BENCH_AGENT_RATE", 2).max(1);
    let n = Neutron::shared();
    let mut x = Agent::new(n, &unique("bx"), &unique("azbx"));
    x.start();
    let real_az = unique("azbr");
    let real = RealAgent::start(n, &unique("br"), &real_az, SEED_DNSMASQ_CONF);
    let x_pid = x.pid().expect("xdhcp agent runs") as i32;
    let sides = [
        Side {
            name: "xdhcp agent",
            host: x.host.clone(),
            az: x.az.clone(),
            pids: Box::new(move || vec![x_pid]),
        },
        Side {
            name: "neutron-dhcp-agent",
            host: real.host.clone(),
            az: real_az.clone(),
            pids: Box::new(|| real.processes()),
        },
    ];
    println!(
        "agents side by side on one neutron-server ({ports} ports at {rate}/s, then a burst of {burst})"
    );
    let mut plugged = Vec::new();
    for (i, side) in sides.iter().enumerate() {
        let cidr = format!("10.{}.0.0/16", 240 + i);
        let net = n
            .post(
                "/v2.0/networks",
                &json!({"network": {"name": format!("bench-{}", side.host),
                                    "availability_zone_hints": [side.az]}}),
            )
            .unwrap()["network"]["id"]
            .as_str()
            .unwrap()
            .to_string();
        x.networks.push(net.clone());
        n.create_subnet(&net, &cidr, json!({})).unwrap();
        n.wait_dhcp_agents(&net, 1, Duration::from_secs(60))
            .unwrap();
        let cpu0 = cpu_secs(&(side.pids)());

        // The first port of the network: the agent sets the network up too.
        let t = Instant::now();
        let first = create_ports(n, &net, &side.host, 1);
        plug(n, &first, &mut plugged);
        let first_active = wait_active(n, &net, &ids(&first), t, Duration::from_secs(120));
        let first_ms = first_active.values().next().map_or(f64::NAN, ms);

        // Steady: one port every 1/rate s, the ports not yet ACTIVE polled
        // while waiting for the next one's turn.
        let mut created: HashMap<String, Instant> = HashMap::new();
        let mut active: HashMap<String, Instant> = HashMap::new();
        let every = Duration::from_secs_f64(1.0 / rate as f64);
        let start = Instant::now();
        for k in 0..ports {
            let due = start + every * k as u32;
            poll_until(n, &created, &mut active, due, false);
            let p = create_ports(n, &net, &side.host, 1);
            let at = Instant::now();
            plug(n, &p, &mut plugged);
            for id in ids(&p) {
                created.insert(id, at);
            }
        }
        poll_until(
            n,
            &created,
            &mut active,
            Instant::now() + Duration::from_secs(120),
            true,
        );
        let mut lat: Vec<f64> = created
            .iter()
            .map(|(id, at)| active.get(id).map_or(f64::INFINITY, |t| ms(&(*t - *at))))
            .collect();
        lat.sort_by(f64::total_cmp);

        // Burst: bulk POSTs back to back, one OVSDB transaction for the NICs.
        let t = Instant::now();
        let bulk = create_ports(n, &net, &side.host, burst);
        let api = t.elapsed();
        plug(n, &bulk, &mut plugged);
        let done = wait_active(n, &net, &ids(&bulk), t, Duration::from_secs(600));
        let all = done.values().max().copied().unwrap_or_default();
        let cpu = cpu_secs(&(side.pids)()) - cpu0;
        let (rss, pss) = memory_kib(&(side.pids)());
        println!("{}:", side.name);
        println!("  first port of a new network → ACTIVE:        {first_ms:.0} ms");
        println!(
            "  port create → ACTIVE ({ports} at {rate}/s):      p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms{}",
            pct(&lat, 50.0),
            pct(&lat, 99.0),
            lat.last().copied().unwrap_or(f64::NAN),
            if lat.iter().any(|l| l.is_infinite()) { " (some never ACTIVE)" } else { "" }
        );
        println!(
            "  burst of {burst} → all ACTIVE:                 {:.1} s ({} ACTIVE; neutron-server's POSTs took {:.1} s)",
            all.as_secs_f64(),
            done.len(),
            api.as_secs_f64()
        );
        println!(
            "  process tree: {} processes, RSS {} MiB, PSS {} MiB; CPU {:.1} s, {:.2} s per 1000 port events",
            (side.pids)().len(),
            rss / 1024,
            pss / 1024,
            cpu,
            cpu * 1000.0 / (1 + ports + burst) as f64
        );
    }
    // The NICs are OVS internal ports on the dummy datapath, no kernel
    // devices: they go with the harness's OVS database at exit.
    drop(plugged);
    drop(sides);
    drop(real);
    drop(x);
}

/// Creates `count` VM ports on `net` bound to `host`: bulk POSTs of at most
/// 50, back to back (one of 500 outlasts the client's timeout while
/// neutron-server is busy with an agent's RPCs).
fn create_ports(n: &Neutron, net: &str, host: &str, count: usize) -> Vec<Value> {
    let mut made = Vec::new();
    while made.len() < count {
        let body: Vec<Value> = (0..(count - made.len()).min(50))
            .map(|_| {
                json!({"network_id": net, "binding:host_id": host,
                       "device_owner": "compute:nova", "device_id": "bench-vm"})
            })
            .collect();
        let r = n
            .post("/v2.0/ports", &json!({ "ports": body }))
            .unwrap_or_else(|e| panic!("creating {count} ports: {e:#}"));
        made.extend(r["ports"].as_array().cloned().unwrap_or_default());
    }
    made
}

fn ids(ports: &[Value]) -> Vec<String> {
    ports
        .iter()
        .filter_map(|p| p["id"].as_str().map(String::from))
        .collect()
}

/// Plugs each port's NIC into the bridge (an OVS internal port with its
/// external_ids), all in one ovs-vsctl transaction.
fn plug(n: &Neutron, ports: &[Value], plugged: &mut Vec<String>) {
    let mut args: Vec<String> = Vec::new();
    for p in ports {
        let id = p["id"].as_str().unwrap();
        let name = format!("vm{}", &id[..11]);
        let mac = p["mac_address"].as_str().unwrap();
        if !args.is_empty() {
            args.push("--".into());
        }
        args.extend(
            [
                "--may-exist",
                "add-port",
                &n.bridge,
                &name,
                "--",
                "set",
                "Interface",
                &name,
                "type=internal",
                &format!("external_ids:iface-id={id}"),
                &format!("external_ids:attached-mac={mac}"),
                "external_ids:iface-status=active",
            ]
            .map(String::from),
        );
        plugged.push(name);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    n.ovs_vsctl(&args).expect("plugging the VMs' NICs");
}

/// Polls the ports of `created` not yet in `active` every 50 ms until
/// `until` (or, with `done_when_all`, until all are), noting when each was
/// first seen ACTIVE.
fn poll_until(
    n: &Neutron,
    created: &HashMap<String, Instant>,
    active: &mut HashMap<String, Instant>,
    until: Instant,
    done_when_all: bool,
) {
    loop {
        let pending: Vec<&String> = created
            .keys()
            .filter(|i| !active.contains_key(*i))
            .collect();
        for chunk in pending.chunks(100) {
            let query: String = chunk.iter().map(|i| format!("id={i}&")).collect();
            let now = Instant::now();
            if let Ok(r) = n.get(&format!("/v2.0/ports?{query}fields=id&fields=status")) {
                for p in r["ports"].as_array().into_iter().flatten() {
                    if let (true, Some(id)) = (p["status"] == "ACTIVE", p["id"].as_str()) {
                        active.entry(id.to_string()).or_insert(now);
                    }
                }
            }
        }
        let all = active.len() == created.len();
        if Instant::now() >= until || (all && done_when_all) {
            return;
        }
        std::thread::sleep(
            Duration::from_millis(50).min(until.saturating_duration_since(Instant::now())),
        );
    }
}

/// Polls the ports of `ids` not yet ACTIVE (by id, at most 100 a request,
/// every 50 ms) until each is or `timeout` passes: when each was first seen
/// ACTIVE, from `t0`.
fn wait_active(
    n: &Neutron,
    _net: &str,
    ids: &[String],
    t0: Instant,
    timeout: Duration,
) -> HashMap<String, Duration> {
    let mut seen = HashMap::new();
    while seen.len() < ids.len() && t0.elapsed() < timeout {
        let pending: Vec<&String> = ids.iter().filter(|i| !seen.contains_key(*i)).collect();
        for chunk in pending.chunks(100) {
            let query: String = chunk.iter().map(|i| format!("id={i}&")).collect();
            let now = t0.elapsed();
            if let Ok(r) = n.get(&format!("/v2.0/ports?{query}fields=id&fields=status")) {
                for p in r["ports"].as_array().into_iter().flatten() {
                    if p["status"] == "ACTIVE" {
                        if let Some(id) = p["id"].as_str() {
                            seen.entry(id.to_string()).or_insert(now);
                        }
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    seen
}

fn ms(d: &Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i]
}

/// utime + stime of the processes, in seconds (children they reaped included).
fn cpu_secs(pids: &[i32]) -> f64 {
    let tick = 100.0; // USER_HZ
    pids.iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).ok())
        .filter_map(|s| {
            let rest = s.rsplit_once(") ")?.1.split(' ').collect::<Vec<_>>();
            // Fields after the name: utime 14, stime 15, cutime 16, cstime 17 (1-based overall).
            let f = |i: usize| rest.get(i - 3)?.parse::<f64>().ok();
            Some(f(14)? + f(15)? + f(16)? + f(17)?)
        })
        .sum::<f64>()
        / tick
}

/// (RSS, PSS) in KiB summed over the processes (smaps_rollup).
fn memory_kib(pids: &[i32]) -> (u64, u64) {
    let mut rss = 0;
    let mut pss = 0;
    for p in pids {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{p}/smaps_rollup")) else {
            continue;
        };
        for line in text.lines() {
            let kib = |prefix: &str| {
                line.strip_prefix(prefix)
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            };
            if let Some(v) = kib("Rss:") {
                rss += v;
            }
            if let Some(v) = kib("Pss:") {
                pss += v;
            }
        }
    }
    (rss, pss)
}
