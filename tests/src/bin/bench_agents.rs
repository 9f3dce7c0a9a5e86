//! bench: `xdhcp agent` and Debian's neutron-dhcp-agent on one
//! neutron-server, one after the other, each in an availability zone of its
//! own, configured alike (the seed's dhcp_agent.ini). For each:
//!
//! - the first port of a new network → ACTIVE; ports created at a steady
//!   rate (one POST each, the VM's NIC plugged as Nova plugs it) → ACTIVE,
//!   p50 and p99; a burst (bulk POSTs of 50 back to back, the NICs plugged in
//!   one OVSDB transaction) → all ACTIVE;
//! - a cold start: BENCH_AGENT_NETWORKS networks (100) made while the agent
//!   runs (it makes its DHCP port on each); then the node as a reboot
//!   leaves it (agent stopped, no namespaces, taps, dnsmasq or pinned fast
//!   path; the agent's state files kept) while BENCH_AGENT_NET_PORTS VM ports
//!   (5) a network are made, bound to it and plugged; then the agent started:
//!   when each network first answers a DORA (a client per network,
//!   [`xdhcp_tests::prober`]), when every port is ACTIVE and when the agent
//!   logs its full resync, until BENCH_AGENT_COLD_DEADLINE seconds (900).
//!   neutron-server makes about 2.5 ports a second here, so the issue's
//!   1,000 × 10 (BENCH_AGENT_NETWORKS=1000 BENCH_AGENT_NET_PORTS=10) spends
//!   over an hour in its POSTs alone;
//! - kill -9 of the agent with those networks served and its restart at
//!   once (as systemd's Restart= does): the longest time any of the clients,
//!   each sending a REQUEST every second, went unanswered, and the time to
//!   its full resync (its own log line);
//! - the memory of the agent's whole process tree (RSS and PSS: agent,
//!   helpers, dnsmasq, haproxy; for xdhcp also its BPF maps) and its CPU
//!   seconds per 1,000 port events.
//!
//! ACTIVE needs neutron-server, the L2 stand-in and the agent; the time
//! neutron-server takes to create the ports is printed beside it. With
//! BENCH_AGENTS_PLOT set, the cold starts are plotted there (networks
//! answering and ports ACTIVE against seconds since the agent started).
//!
//! BENCH_AGENT_PORTS (200) and BENCH_AGENT_BURST (500) set the sizes,
//! BENCH_AGENT_RATE (2) the steady rate in ports per second: neutron-server
//! (one API worker) creates about 5 ports a second on this 2-core machine, so
//! a faster rate measures its queue, not the agents.

use std::{
    collections::{HashMap, HashSet},
    fmt::Write as _,
    net::Ipv4Addr,
    path::PathBuf,
    time::{Duration, Instant},
};

use serde_json::{json, Value};
use xdhcp_tests::{
    agent::{unique, Agent},
    measure::{cpu_secs, memory_kib, pinned_map_bytes},
    neutron::{Neutron, DHCP_AGENT_TYPE},
    prober::{Prober, Target},
    real_agent::{RealAgent, RealAgentConfig},
};

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The sizes (see the module documentation).
struct Sizes {
    ports: usize,
    burst: usize,
    rate: usize,
    networks: usize,
    net_ports: usize,
    deadline: Duration,
}

/// One agent under test, as the benchmark drives it.
trait Node {
    fn name(&self) -> &'static str;
    fn host(&self) -> String;
    fn az(&self) -> String;
    /// The pids of its process tree, now.
    fn pids(&self) -> Vec<i32>;
    /// Kernel memory it holds beyond its processes (BPF maps), KiB.
    fn kernel_kib(&self) -> u64;
    /// Starts the agent (not waiting for anything).
    fn boot(&mut self);
    /// SIGKILL to the agent (its dnsmasq processes, if any, stay).
    fn kill9(&mut self);
    /// The node as a reboot leaves it.
    fn wipe(&mut self);
    /// Its log, and the line it writes when a full resync is done.
    fn log(&self) -> (PathBuf, &'static str);
    /// Networks it serves, for the clean-up.
    fn adopt(&mut self, nets: &[String]);
}

impl Node for Agent {
    fn name(&self) -> &'static str {
        "xdhcp agent"
    }
    fn host(&self) -> String {
        self.host.clone()
    }
    fn az(&self) -> String {
        self.az.clone()
    }
    fn pids(&self) -> Vec<i32> {
        self.pid().map(|p| vec![p as i32]).unwrap_or_default()
    }
    fn kernel_kib(&self) -> u64 {
        pinned_map_bytes(&PathBuf::from(format!("/sys/fs/bpf/xdhcp-{}", self.host)))
            .map_or(0, |b| b / 1024)
    }
    fn boot(&mut self) {
        self.spawn();
    }
    fn kill9(&mut self) {
        self.stop(true);
    }
    fn wipe(&mut self) {
        self.wipe_node();
    }
    fn log(&self) -> (PathBuf, &'static str) {
        (self.dir.join("agent.log"), "resynced with neutron-server")
    }
    fn adopt(&mut self, nets: &[String]) {
        self.networks.extend(nets.iter().cloned());
    }
}

/// neutron-dhcp-agent with its availability zone.
struct Real(RealAgent, String);

impl Node for Real {
    fn name(&self) -> &'static str {
        "neutron-dhcp-agent"
    }
    fn host(&self) -> String {
        self.0.host.clone()
    }
    fn az(&self) -> String {
        self.1.clone()
    }
    fn pids(&self) -> Vec<i32> {
        self.0.processes()
    }
    fn kernel_kib(&self) -> u64 {
        0
    }
    fn boot(&mut self) {
        self.0.spawn();
    }
    fn kill9(&mut self) {
        self.0.kill9();
    }
    fn wipe(&mut self) {
        self.0.wipe_node();
    }
    fn log(&self) -> (PathBuf, &'static str) {
        (self.0.dir.join("agent.log"), "Synchronizing state complete")
    }
    fn adopt(&mut self, _: &[String]) {}
}

/// A sysctl set for the run, its old value restored on drop.
struct Sysctl {
    path: PathBuf,
    old: Option<String>,
}

impl Sysctl {
    fn set(name: &str, value: &str) -> Self {
        let path = PathBuf::from("/proc/sys").join(name);
        let old = std::fs::read_to_string(&path).ok();
        if let Err(e) = std::fs::write(&path, value) {
            eprintln!("setting {}: {e}", path.display());
        }
        Sysctl { path, old }
    }
}

impl Drop for Sysctl {
    fn drop(&mut self) {
        if let Some(old) = &self.old {
            let _ = std::fs::write(&self.path, old.trim());
        }
    }
}

/// A cold start's progress: (seconds since the agent started, networks
/// answering, ports ACTIVE).
type Curve = Vec<(f64, usize, usize)>;

fn main() {
    let sizes = Sizes {
        ports: env_or("BENCH_AGENT_PORTS", 200),
        burst: env_or("BENCH_AGENT_BURST", 500),
        rate: env_or("BENCH_AGENT_RATE", 2).max(1),
        networks: env_or("BENCH_AGENT_NETWORKS", 100),
        net_ports: env_or("BENCH_AGENT_NET_PORTS", 5).max(1),
        deadline: Duration::from_secs(env_or("BENCH_AGENT_COLD_DEADLINE", 900) as u64),
    };
    // The harness's bridge is one L2 segment for every network (no local
    // VLANs), and neutron-dhcp-agent puts the metadata proxy's
    // fe80::a9fe:a9fe in every network's namespace: with DAD, the second
    // network's fails ("Duplicate address detected") and so does its
    // configuration. New namespaces inherit the host's settings, DAD off,
    // for the run (restored at exit).
    let _dad = [
        Sysctl::set("net/core/devconf_inherit_init_net", "1"),
        Sysctl::set("net/ipv6/conf/default/accept_dad", "0"),
    ];
    let n = Neutron::shared();
    // Thousands of MACs on one segment: the default table (2,048) would
    // flood the answers.
    n.ovs_vsctl(&[
        "set",
        "Bridge",
        &n.bridge,
        "other_config:mac-table-size=200000",
    ])
    .expect("sizing the bridge's MAC table");
    println!(
        "agents side by side on one neutron-server, one after the other ({} ports at {}/s, \
         a burst of {}, a cold start with {} networks of {} ports)",
        sizes.ports, sizes.rate, sizes.burst, sizes.networks, sizes.net_ports
    );
    // BENCH_AGENTS_ONLY=xdhcp or =neutron: one side only.
    let only = std::env::var("BENCH_AGENTS_ONLY").unwrap_or_default();
    let mut curves = Vec::new();
    if only != "neutron" {
        let mut x = Agent::new(n, &unique("bx"), &unique("azbx"));
        x.start();
        curves.push((x.name(), side(n, &mut x, &sizes, 0)));
    }
    if only != "xdhcp" {
        let az = unique("azbr");
        let real = RealAgent::new(
            n,
            &unique("br"),
            &az,
            &RealAgentConfig {
                dnsmasq_conf: xdhcp_tests::agent::SEED_DNSMASQ_CONF,
                // The host's /run/netns, as on a real node: a restarted
                // agent finds its namespaces (the networks are its own).
                private_netns: false,
                extra_ini: "",
                lease_secs: 86400,
            },
        );
        let mut real = Real(real, az);
        real.0.spawn();
        real.0.wait_alive();
        curves.push((real.name(), side(n, &mut real, &sizes, 1)));
    }
    if let Ok(png) = std::env::var("BENCH_AGENTS_PLOT") {
        match plot(&curves, &sizes, &png) {
            Ok(()) => println!("wrote {png}"),
            Err(e) => eprintln!("plotting the cold starts: {e:#}"),
        }
    }
}

/// Everything measured of one agent (running when called); prints it.
fn side(n: &'static Neutron, node: &mut dyn Node, sizes: &Sizes, index: usize) -> Curve {
    let host = node.host();
    let cidr = format!("10.{}.0.0/16", 240 + index);
    let net = n
        .post(
            "/v2.0/networks",
            &json!({"network": {"name": format!("bench-{host}"),
                                "availability_zone_hints": [node.az()]}}),
        )
        .unwrap()["network"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    node.adopt(std::slice::from_ref(&net));
    n.create_subnet(&net, &cidr, json!({})).unwrap();
    n.wait_dhcp_agents(&net, 1, Duration::from_secs(60))
        .unwrap();
    let cpu0 = cpu_secs(&node.pids());

    // The first port of the network: the agent sets the network up too.
    let t = Instant::now();
    let first = create_ports(n, std::slice::from_ref(&net), &host, 1, "bench-vm");
    plug(n, &first);
    let first_active = wait_active(n, &ids(&first), t, Duration::from_secs(120));
    let first_ms = first_active.values().next().map_or(f64::NAN, ms);

    // Steady: one port every 1/rate s, the ports not yet ACTIVE polled
    // while waiting for the next one's turn.
    let mut created: HashMap<String, Instant> = HashMap::new();
    let mut active: HashMap<String, Instant> = HashMap::new();
    let every = Duration::from_secs_f64(1.0 / sizes.rate as f64);
    let start = Instant::now();
    for k in 0..sizes.ports {
        let due = start + every * k as u32;
        poll_until(n, &created, &mut active, due, false);
        let p = create_ports(n, std::slice::from_ref(&net), &host, 1, "bench-vm");
        let at = Instant::now();
        plug(n, &p);
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
    let bulk = create_ports(
        n,
        std::slice::from_ref(&net),
        &host,
        sizes.burst,
        "bench-vm",
    );
    let api = t.elapsed();
    plug(n, &bulk);
    let done = wait_active(n, &ids(&bulk), t, Duration::from_secs(600));
    let all = done.values().max().copied().unwrap_or_default();
    let cpu = cpu_secs(&node.pids()) - cpu0;
    let (rss, pss) = memory_kib(&node.pids());
    let mut out = String::new();
    let _ = writeln!(out, "{}:", node.name());
    let _ = writeln!(
        out,
        "  first port of a new network → ACTIVE:        {}",
        if first_ms.is_nan() {
            "not ACTIVE within 120 s".to_string()
        } else {
            format!("{first_ms:.0} ms")
        }
    );
    let _ = writeln!(
        out,
        "  port create → ACTIVE ({} at {}/s):      p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms{}",
        sizes.ports,
        sizes.rate,
        pct(&lat, 50.0),
        pct(&lat, 99.0),
        lat.last().copied().unwrap_or(f64::NAN),
        if lat.iter().any(|l| l.is_infinite()) {
            " (some never ACTIVE)"
        } else {
            ""
        }
    );
    let _ = writeln!(
        out,
        "  burst of {} → all ACTIVE:                 {:.1} s ({} ACTIVE; neutron-server's POSTs took {:.1} s)",
        sizes.burst,
        all.as_secs_f64(),
        done.len(),
        api.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "  process tree, one network: {} processes, RSS {} MiB, PSS {} MiB{}; CPU {:.1} s, {:.2} s per 1000 port events",
        node.pids().len(),
        rss / 1024,
        pss / 1024,
        kernel_note(node),
        cpu,
        cpu * 1000.0 / (1 + sizes.ports + sizes.burst) as f64
    );
    print!("{out}");
    let curve = cold_and_kill9(n, node, sizes, index);
    // The agent's log outlives its directory, for a look afterwards.
    let keep = std::env::var_os("BENCH_AGENTS_LOGS")
        .map_or_else(std::env::temp_dir, PathBuf::from)
        .join(format!("bench-agents-{host}.log"));
    match std::fs::copy(node.log().0, &keep) {
        Ok(_) => println!("  (its log: {})", keep.display()),
        Err(e) => eprintln!("keeping the agent's log: {e}"),
    }
    curve
}

/// ", BPF maps N MiB" for an agent that holds them.
fn kernel_note(node: &dyn Node) -> String {
    match node.kernel_kib() {
        0 => String::new(),
        k => format!(" + BPF maps {} MiB", k / 1024),
    }
}

/// The cold start and the kill -9 of one agent; prints them, returns the
/// cold start's curve.
fn cold_and_kill9(n: &'static Neutron, node: &mut dyn Node, sizes: &Sizes, index: usize) -> Curve {
    let host = node.host();
    let agent_id = n
        .agent(&host, DHCP_AGENT_TYPE)
        .unwrap()
        .expect("the agent is registered")["id"]
        .as_str()
        .unwrap()
        .to_string();

    // The networks and their subnets, made while the agent runs (it makes
    // its DHCP port on each), each bound to it.
    let t = Instant::now();
    let mut nets = Vec::new();
    while nets.len() < sizes.networks {
        let body: Vec<Value> = (nets.len()..sizes.networks.min(nets.len() + 100))
            .map(|i| json!({"name": format!("cold-{host}-{i}"), "availability_zone_hints": [node.az()]}))
            .collect();
        let r = n
            .post("/v2.0/networks", &json!({ "networks": body }))
            .unwrap_or_else(|e| panic!("creating networks: {e:#}"));
        nets.extend(
            r["networks"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v["id"].as_str().map(String::from)),
        );
    }
    node.adopt(&nets);
    for (c, chunk) in nets.chunks(50).enumerate() {
        let body: Vec<Value> = chunk
            .iter()
            .enumerate()
            .map(|(j, id)| {
                let i = c * 50 + j;
                json!({"network_id": id, "ip_version": 4,
                       "cidr": format!("10.{}.{}.0/24", 100 + index * 8 + i / 256, i % 256)})
            })
            .collect();
        n.post("/v2.0/subnets", &json!({ "subnets": body }))
            .unwrap_or_else(|e| panic!("creating subnets: {e:#}"));
    }
    let t_nets = t.elapsed();
    let hosted: HashSet<String> = n
        .get(&format!("/v2.0/agents/{agent_id}/dhcp-networks"))
        .map(|r| {
            r["networks"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v["id"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let unscheduled = nets.iter().filter(|i| !hosted.contains(*i)).count();
    for net in nets.iter().filter(|i| !hosted.contains(*i)) {
        n.add_network_to_agent(&agent_id, net)
            .unwrap_or_else(|e| panic!("binding network {net} to the agent: {e:#}"));
    }
    // Served: the agent has its DHCP port on each.
    let wanted: HashSet<&String> = nets.iter().collect();
    let dhcp_ports = || {
        n.dhcp_ports_of_host(&host)
            .unwrap_or_default()
            .iter()
            .filter(|p| {
                p["network_id"]
                    .as_str()
                    .is_some_and(|i| wanted.contains(&i.to_string()))
            })
            .filter(|p| p["fixed_ips"][0]["ip_address"].is_string())
            .count()
    };
    let mut with_port = dhcp_ports();
    while with_port < nets.len() && t.elapsed() < sizes.deadline {
        std::thread::sleep(Duration::from_secs(2));
        with_port = dhcp_ports();
    }
    println!(
        "  {} networks made while the agent runs: created with subnets in {:.1} s ({} bound by hand), the agent's DHCP port on {} of them {:.1} s after the first POST",
        nets.len(),
        t_nets.as_secs_f64(),
        unscheduled,
        with_port,
        t.elapsed().as_secs_f64()
    );

    // The reboot: the node loses everything but the agent's files; the VM
    // ports are made meanwhile.
    node.wipe();

    let device = format!("cold-{host}");
    let t = Instant::now();
    let ports = create_ports(n, &nets, &host, sizes.networks * sizes.net_ports, &device);
    let t_ports = t.elapsed();
    plug(n, &ports);
    // The L2 stand-in reports each NIC up (clearing the L2 provisioning
    // block); the DHCP block keeps the ports DOWN until the agent is ready.
    let port_ids: HashSet<String> = ids(&ports).into_iter().collect();
    let t = Instant::now();
    while n.l2_devices_up().intersection(&port_ids).count() < port_ids.len() {
        assert!(
            t.elapsed() < Duration::from_secs(1200),
            "the L2 stand-in never reported the cold ports' NICs up"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    let t_l2 = t.elapsed();
    let still_active = count_active(n, &device);
    println!(
        "  while it is down: {} VM ports made in {:.1} s, their NICs reported up {:.1} s later; {} ACTIVE before the agent starts",
        ports.len(),
        t_ports.as_secs_f64(),
        t_l2.as_secs_f64(),
        still_active
    );

    // One client per network: the first port made on it.
    let mut client: HashMap<String, (Ipv4Addr, [u8; 6])> = HashMap::new();
    for p in &ports {
        let net = p["network_id"].as_str().unwrap().to_string();
        client.entry(net).or_insert_with(|| {
            (
                p["fixed_ips"][0]["ip_address"]
                    .as_str()
                    .unwrap()
                    .parse()
                    .unwrap(),
                mac_of(p),
            )
        });
    }

    // The start.
    let cpu_before = cpu_secs(&node.pids());
    let (log, resynced) = node.log();
    let resyncs_before = count_lines(&log, resynced);
    let t0 = Instant::now();
    node.boot();
    let prober = Prober::start(n, &format!("{index}"), Vec::new(), Duration::from_secs(1))
        .expect("starting the prober");
    let mut targets: HashMap<String, usize> = HashMap::new();
    let mut curve: Curve = Vec::new();
    let total_ports = ports.len();
    let (mut all_nets, mut all_ports, mut resync) = (None, None, None);
    while t0.elapsed() < sizes.deadline {
        if resync.is_none() && count_lines(&log, resynced) > resyncs_before {
            resync = Some(t0.elapsed());
        }
        add_targets(n, &host, &client, &prober, &mut targets);
        let seen = prober.seen();
        let answering = seen.iter().filter(|s| s.first_ack.is_some()).count();
        let active = count_active(n, &device);
        let at = t0.elapsed();
        curve.push((at.as_secs_f64(), answering, active));
        if answering == nets.len() && all_nets.is_none() {
            all_nets = seen
                .iter()
                .filter_map(|s| s.first_ack)
                .max()
                .map(|a| a + (prober.t0 - t0));
        }
        if active == total_ports && all_ports.is_none() {
            all_ports = Some(at);
        }
        if all_nets.is_some() && all_ports.is_some() && resync.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let seen = prober.seen();
    let firsts: Vec<Duration> = seen.iter().filter_map(|s| s.first_ack).collect();
    let first_net = firsts.iter().min().map(|a| *a + (prober.t0 - t0));
    let (last_t, last_nets, last_ports) = curve.last().copied().unwrap_or_default();
    let secs = |d: Option<Duration>| {
        d.map_or("not within the deadline".into(), |d| {
            format!("{:.1} s", d.as_secs_f64())
        })
    };
    println!(
        "  cold start, {} networks × {} ports: first network answering {}, every network answering a DORA {}, every port ACTIVE {}, full resync (its log) {}",
        nets.len(),
        sizes.net_ports,
        secs(first_net),
        secs(all_nets),
        secs(all_ports),
        secs(resync)
    );
    if all_nets.is_none() || all_ports.is_none() {
        println!(
            "    at {last_t:.0} s (the deadline): {last_nets} of {} networks answering, {last_ports} of {total_ports} ports ACTIVE",
            nets.len()
        );
    }
    let (rss, pss) = memory_kib(&node.pids());
    println!(
        "  process tree, {} networks: {} processes, RSS {} MiB, PSS {} MiB{}; CPU for the cold start {:.1} s",
        nets.len(),
        node.pids().len(),
        rss / 1024,
        pss / 1024,
        kernel_note(node),
        cpu_secs(&node.pids()) - cpu_before
    );

    // kill -9 and restart at once, every client renewing every second.
    prober.watch_from();
    std::thread::sleep(Duration::from_secs(5));
    let resyncs_before = count_lines(&log, resynced);
    node.kill9();
    let t_kill = Instant::now();
    node.boot();
    let resync = wait_lines(&log, resynced, resyncs_before + 1, t_kill, sizes.deadline);
    // Then until every client has been answered since the restart (or 30 s).
    let settle = Instant::now();
    loop {
        let behind = prober
            .seen()
            .iter()
            .filter(|s| s.last_ack.is_none_or(|l| prober.t0 + l < t_kill))
            .count();
        if behind == 0 || settle.elapsed() > Duration::from_secs(30) {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    std::thread::sleep(Duration::from_secs(3));
    let now = prober.t0.elapsed();
    let seen = prober.seen();
    let gaps: Vec<Duration> = seen
        .iter()
        .map(|s| {
            s.longest_gap
                .max(now.saturating_sub(s.last_ack.unwrap_or_default()))
        })
        .collect();
    let longest = gaps.iter().max().copied().unwrap_or_default();
    let hit = gaps
        .iter()
        .filter(|g| **g > Duration::from_millis(1500))
        .count();
    let (sent, answered) = seen
        .iter()
        .fold((0, 0), |(s, a), x| (s + x.sent, a + x.answered));
    println!(
        "  kill -9 and restart at once, {} clients renewing every 1 s: longest unanswered {:.1} s, {} clients with a gap over 1.5 s, {} of {} requests answered; full resync {} after the kill",
        seen.len(),
        longest.as_secs_f64(),
        hit,
        answered,
        sent,
        secs(resync)
    );
    drop(prober);
    curve
}

/// Adds a prober target for each network whose DHCP port of `host` has
/// appeared.
fn add_targets(
    n: &Neutron,
    host: &str,
    client: &HashMap<String, (Ipv4Addr, [u8; 6])>,
    prober: &Prober,
    targets: &mut HashMap<String, usize>,
) {
    let Ok(ports) = n.dhcp_ports_of_host(host) else {
        return;
    };
    let mut new = Vec::new();
    for p in ports {
        let Some(net) = p["network_id"].as_str() else {
            continue;
        };
        let Some(&(ip, mac)) = client.get(net) else {
            continue;
        };
        let Some(server_ip) = p["fixed_ips"][0]["ip_address"]
            .as_str()
            .and_then(|s| s.parse().ok())
        else {
            continue;
        };
        if targets.contains_key(net) {
            continue;
        }
        targets.insert(net.to_string(), targets.len());
        new.push(Target {
            mac,
            ip,
            server_ip,
            server_mac: mac_of(&p),
            tap: xdhcp::netns::names::tap_name(p["id"].as_str().unwrap()),
        });
    }
    prober.add(new);
}

fn mac_of(p: &Value) -> [u8; 6] {
    let m: xdhcp::neutron::model::MacAddr = p["mac_address"].as_str().unwrap().parse().unwrap();
    m.0
}

/// The ports of `device` (a device_id) that are ACTIVE.
fn count_active(n: &Neutron, device: &str) -> usize {
    n.get(&format!(
        "/v2.0/ports?device_id={device}&status=ACTIVE&fields=id"
    ))
    .map(|r| r["ports"].as_array().map_or(0, Vec::len))
    .unwrap_or(0)
}

fn count_lines(path: &PathBuf, needle: &str) -> usize {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(needle))
        .count()
}

/// Waits until `path` has `count` lines with `needle`: the time from `t0`.
fn wait_lines(
    path: &PathBuf,
    needle: &str,
    count: usize,
    t0: Instant,
    deadline: Duration,
) -> Option<Duration> {
    while t0.elapsed() < deadline {
        if count_lines(path, needle) >= count {
            return Some(t0.elapsed());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    None
}

/// The cold starts: networks answering (and ports ACTIVE) against time.
fn plot(curves: &[(&str, Curve)], sizes: &Sizes, png: &str) -> anyhow::Result<()> {
    let mut data = String::new();
    let mut plots = Vec::new();
    for (name, curve) in curves {
        for (col, what) in [
            (2, "networks answering a DORA"),
            (3, "ports ACTIVE / net ports"),
        ] {
            for (t, nets, ports) in curve {
                let y = if col == 2 {
                    *nets as f64
                } else {
                    *ports as f64 / sizes.net_ports as f64
                };
                let _ = writeln!(data, "{:.2} {y}", t.max(0.1));
            }
            data.push_str("\n\n");
            plots.push(format!(
                "'$DATA' index {} with lines lw 2 {} title '{name}: {what}'",
                plots.len(),
                if col == 2 { "dt 1" } else { "dt 2" }
            ));
        }
    }
    xdhcp_tests::measure::plot_png(
        std::path::Path::new(png),
        &format!(
            "Agent cold start: {} networks of {} ports (2 cores)",
            sizes.networks, sizes.net_ports
        ),
        "set logscale x\nset xlabel 'seconds since the agent started'\nset ylabel 'networks'\n\
         set key outside bottom center vertical",
        &plots,
        &data,
    )
}

/// Creates `count` VM ports bound to `host`, spread evenly over `nets` in
/// turn (with `device` as their device_id): bulk POSTs of at most 50, back
/// to back (one of 500 outlasts the client's timeout while neutron-server
/// is busy with an agent's RPCs).
fn create_ports(
    n: &Neutron,
    nets: &[String],
    host: &str,
    count: usize,
    device: &str,
) -> Vec<Value> {
    let mut made = Vec::new();
    while made.len() < count {
        let body: Vec<Value> = (made.len()..count.min(made.len() + 50))
            .map(|i| {
                json!({"network_id": nets[i * nets.len() / count], "binding:host_id": host,
                       "device_owner": "compute:nova", "device_id": device})
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
/// external_ids), 250 to an ovs-vsctl transaction. The NICs are not kernel
/// devices on the dummy datapath: they go with the harness's OVS database
/// at exit.
fn plug(n: &Neutron, ports: &[Value]) {
    for chunk in ports.chunks(250) {
        let mut args: Vec<String> = Vec::new();
        for p in chunk {
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
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        n.ovs_vsctl(&args).expect("plugging the VMs' NICs");
    }
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
