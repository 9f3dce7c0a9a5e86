//! `cargo xtask bench` (load part): perfdhcp against xdhcp, against dnsmasq
//! run as neutron-dhcp-agent runs it, and against Kea (kea-dhcp4,
//! multi-threaded, memfile, one reservation a port), on the same topology,
//! then docs/benchmarks.md and docs/benchmarks.png from the measured values.
//!
//! Topology, per server and per port count: one network 10.192.0.0/10 holding
//! every port, its qdhcp namespace plumbed onto a test bridge (by `xdhcp run
//! --plumb`, or by the same plumbing code for dnsmasq and Kea), and a perfdhcp
//! namespace whose veth sits on that bridge with 10.200.0.3/10. perfdhcp acts
//! as a relay (giaddr = 10.200.0.3, unicast to the server's port 67) and picks
//! each exchange's client MAC from the list of the ports' MACs (`-M`). Then
//! the project's generator (`loadgen`) against xdhcp and Kea.
//!
//! The sustained rate: perfdhcp runs `PERIOD_S` seconds at a requested rate,
//! doubling from `START_RATE` while fewer than 5% of the started exchanges
//! fail to complete (ACK received), then bisecting between the last rate that
//! held and the first that did not. The rate reported is the completed
//! exchanges per second of the highest rate that held.
//!
//! Environment: BENCH_PORTS (comma-separated port counts, default
//! 1000,20000,100000,1000000), BENCH_SERVERS (default xdhcp,dnsmasq,kea),
//! BENCH_OTHERS_MAX_PORTS (dnsmasq and Kea only up to this count, default
//! 100000), BENCH_START_RATE
//! and BENCH_NO_PERFDHCP (shortcuts for runs by hand), BENCH_FASTPATH_OUT / BENCH_DAEMON_OUT (files holding the
//! output of the `bench` and `bench_daemon` binaries of the same run, quoted in
//! the document), BENCH_DOCS (where to write, default docs/ of the workspace).
//!
//! This file measures, kea.rs runs Kea; report.rs writes the document and the plot.

mod kea;
mod report;

use std::{
    fmt::Write as _,
    fs,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::atomic::{AtomicBool, AtomicI32, Ordering},
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};
use xdhcp::{netns::TempNs, store::Db};
use xdhcp_tests::{
    cloud::{namespace_on_bridge, Cloud, Net},
    dnsmasq::{neutron_conf, Agent, ConfDir, DnsmasqGuard, DNSMASQ},
    loadgen::{Load, LoadGen},
    measure::{bpftool, pinned_map_bytes},
    rss_kib,
};

const PERIOD_S: u32 = 5;
const START_RATE: u32 = 50;
const MAX_RATE: u32 = 102_400;
const MAX_DROP: f64 = 0.05;
/// Bisection steps after the doubling found a failing rate.
const BISECT: usize = 3;
const CIDR: &str = "10.192.0.0/10";
const PREFIX: u8 = 10;
const PERF_IP: &str = "10.200.0.3";
const SERVER_IP: &str = "10.200.0.2";
const PERFDHCP: &str = "perfdhcp";
/// The start-up probe asks this often (and so resolves start-up to this).
const PROBE_EVERY: Duration = Duration::from_millis(20);
/// Neutron's defaults for the agent options both servers get.
const AGENT: Agent = Agent {
    dns_domain: "openstacklocal",
    enable_isolated_metadata: false,
    dhcp_lease_duration: 86400,
};

/// xdhcp's config: the agent options, and relaying on (perfdhcp always acts
/// as a relay; xdhcp answers relays only when told to).
fn agent_toml() -> String {
    format!("{}enable_relay = true\n", AGENT.toml())
}

/// Set by SIGINT/SIGTERM: stop, and clean up on the way out.
static STOP: AtomicBool = AtomicBool::new(false);
/// The perfdhcp running now (0: none), killed on SIGINT/SIGTERM.
static PERF_PID: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
    let pid = PERF_PID.load(Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe; the pid is our running child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

/// Interrupted runs still unwind through the guards that remove namespaces,
/// processes and pins: the handler only flags and kills perfdhcp.
fn catch_signals() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: installing a handler that only touches atomics and calls kill.
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
}

fn check_stop() -> Result<()> {
    if STOP.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

/// One perfdhcp run.
#[derive(Debug, Clone, Default)]
struct Trial {
    target: u32,
    /// Completed 4-way exchanges (ACKs) per second of the sending period.
    achieved: f64,
    /// Started exchanges that did not complete.
    drops: f64,
    do_avg_ms: f64,
    do_max_ms: f64,
    ra_avg_ms: f64,
    ra_max_ms: f64,
    /// perfdhcp's CPU time over the run, in % of one core.
    perf_cpu: f64,
    /// The server process's CPU, % of one core (xdhcp: the daemon; its fast
    /// path runs in softirq, charged to no process).
    server_cpu: Option<f64>,
    /// Whole machine busy over the run, % of all cores.
    machine_busy: f64,
}

impl Trial {
    fn held(&self) -> bool {
        self.drops < MAX_DROP
    }
}

/// What one server did with one port count.
#[derive(Debug, Clone)]
struct Outcome {
    server: &'static str,
    ports: usize,
    best: Option<Trial>,
    first_failed: Option<Trial>,
    trials: Vec<Trial>,
    /// Spawn → first OFFER to the start-up probe.
    startup_s: Option<f64>,
    rss_kib: u64,
    /// BPF map memory (bytes_memlock of the pinned maps), xdhcp only.
    map_bytes: Option<u64>,
    /// The dnsmasq command line or the xdhcp one.
    command: String,
    /// The project's generator against the responder (xdhcp only).
    ceiling: Option<Ceiling>,
}

/// The responder's ceiling, found with the project's generator (`loadgen`).
#[derive(Debug, Clone)]
struct Ceiling {
    load: Load,
    /// Machine CPU over the sending period, % of all cores.
    cpu: CpuSplit,
    /// The entry program's own run time per request (bpf_stats), ns.
    xdp_ns: Option<f64>,
    /// The core the responder's NAPI thread was pinned to.
    responder_core: usize,
}

fn port_mac(i: usize) -> [u8; 6] {
    [0xfa, 0x16, 0x3e, (i >> 16) as u8, (i >> 8) as u8, i as u8]
}

fn port_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 200, 1, 0)) + i as u32)
}

/// The network of `c` spanning every port, and its Neutron JSON with `ports` VM ports.
fn network(c: &mut Cloud, ports: usize) -> (Net, Value) {
    c.net_at(200, 0);
    let net = c.nets.last_mut().expect("the network just added");
    net.cidr = CIDR.into();
    net.prefix = PREFIX;
    let net = net.clone();
    let mut doc = c.net_json(&net);
    let vm_ports = doc["ports"].as_array_mut().expect("ports array");
    for i in 0..ports {
        vm_ports.push(json!({
            "id": format!("{}5{:02x}-0000-4000-8000-{i:012x}", c.tag, 0),
            "network_id": net.id, "mac_address": xdhcp::neutron::model::format_mac(&port_mac(i)),
            "device_owner": "compute:nova", "admin_state_up": true,
            "fixed_ips": [{"subnet_id": net.subnet_id, "ip_address": port_ip(i).to_string()}]
        }));
    }
    (net, doc)
}

/// The perfdhcp arguments for a run at `rate`.
fn perfdhcp_args(macs: &Path, rate: u32) -> Vec<String> {
    let mut a: Vec<String> = vec!["-4".into()];
    a.extend([
        "-r".into(),
        rate.to_string(),
        "-p".into(),
        PERIOD_S.to_string(),
        "-W".into(),
        "1000000".into(),
    ]);
    a.extend([
        "-l".into(),
        PERF_IP.into(),
        "-M".into(),
        macs.display().to_string(),
        SERVER_IP.into(),
    ]);
    a
}

/// perfdhcp's namespace: a veth on `bridge` with PERF_IP, and the MAC list.
struct Perf {
    ns: TempNs,
    macs: PathBuf,
}

impl Perf {
    fn new(bridge: &str, tag: &str, ports: usize, server_mac: [u8; 6]) -> Result<Self> {
        let perf = Self {
            ns: namespace_on_bridge("xbperf", bridge, &format!("xp{tag}"))?,
            macs: PathBuf::from(format!("/tmp/xdhcp-bench-macs-{tag}")),
        };
        perf.ns
            .ip(&["addr", "add", &format!("{PERF_IP}/{PREFIX}"), "dev", "eth0"])?;
        perf.ns.ip(&["link", "set", "eth0", "up"])?;
        // The server's MAC is known: no ARP, whose retry after an unanswered
        // request (1 s) would otherwise count as start-up of a server not yet up.
        perf.ns.ip(&[
            "neigh",
            "replace",
            SERVER_IP,
            "lladdr",
            &xdhcp::neutron::model::format_mac(&server_mac),
            "dev",
            "eth0",
            "nud",
            "permanent",
        ])?;
        let mut list = String::with_capacity(ports * 18);
        for i in 0..ports {
            writeln!(list, "{}", xdhcp::neutron::model::format_mac(&port_mac(i)))?;
        }
        fs::write(&perf.macs, list).context("writing perfdhcp's MAC list")?;
        Ok(perf)
    }

    /// [`Perf::search`], or no runs at all with BENCH_NO_PERFDHCP set.
    fn search_unless_skipped(
        &self,
        server_pid: Option<u32>,
    ) -> Result<(Vec<Trial>, Option<usize>, Option<usize>)> {
        if std::env::var_os("BENCH_NO_PERFDHCP").is_some() {
            return Ok((Vec::new(), None, None));
        }
        self.search(server_pid)
    }

    /// Runs perfdhcp; returns its stdout, exit code and CPU seconds.
    fn run(&self, rate: u32) -> Result<(String, i32, f64)> {
        let out_path = PathBuf::from(format!("{}.out", self.macs.display()));
        let out = fs::File::create(&out_path)?;
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns.name, PERFDHCP])
            .args(perfdhcp_args(&self.macs, rate))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(Stdio::null())
            .spawn()
            .context("starting perfdhcp")?;
        PERF_PID.store(child.id() as i32, Ordering::SeqCst);
        if STOP.load(Ordering::SeqCst) {
            on_signal(0);
        }
        // `ip netns exec` execs perfdhcp in place: the child is perfdhcp.
        // wait4 gives its CPU time (what /proc/<pid>/stat shows, to the end).
        // SAFETY: rusage is plain data.
        let (mut status, mut usage) = (0i32, unsafe { std::mem::zeroed::<libc::rusage>() });
        let rc = loop {
            // SAFETY: waiting for our own child, with valid out-pointers.
            let rc = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
            if rc < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            break rc;
        };
        PERF_PID.store(0, Ordering::SeqCst);
        let text = fs::read_to_string(&out_path).unwrap_or_default();
        let _ = fs::remove_file(&out_path);
        ensure!(rc > 0, "wait4: {}", std::io::Error::last_os_error());
        check_stop()?;
        let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        let cpu = tv(usage.ru_utime) + tv(usage.ru_stime);
        let code = if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            -1
        };
        Ok((text, code, cpu))
    }

    /// Time from `since` until the server answers a DISCOVER, asking every
    /// PROBE_EVERY until `timeout`.
    ///
    /// Not perfdhcp: perfdhcp 2.2 ignores `-n 1` without `-r` (it floods) and
    /// exits before the OFFER with it. The probe is a relayed DISCOVER from
    /// PERF_IP:67 (as perfdhcp sends them) for the first port's MAC.
    fn until_answered(&self, since: Instant, timeout: Duration) -> Result<f64> {
        let sock = {
            let _inside = self.ns.enter()?;
            let s = std::net::UdpSocket::bind((PERF_IP, 67)).context("binding the probe to :67")?;
            s.set_read_timeout(Some(PROBE_EVERY))?;
            s
        };
        let mut xid = 0u32;
        let mut buf = [0u8; 1500];
        loop {
            check_stop()?;
            xid += 1;
            let mut discover = xdhcp_tests::craft::RequestFrame::discover(port_mac(0));
            discover.xid = xid.to_be_bytes();
            discover.giaddr = PERF_IP.parse()?;
            discover.hops = 1;
            sock.send_to(&discover.bootp(), (SERVER_IP, 67))
                .context("sending the probe")?;
            let asked = Instant::now();
            while asked.elapsed() < PROBE_EVERY {
                let Ok(n) = sock.recv(&mut buf) else { break };
                // BOOTREPLY with our xid: op 1 byte, htype, hlen, hops, xid.
                if n > 240 && buf[0] == 2 && buf[4..8] == xid.to_be_bytes() {
                    return Ok(since.elapsed().as_secs_f64());
                }
            }
            ensure!(
                since.elapsed() < timeout,
                "no answer to a DISCOVER within {timeout:?}"
            );
        }
    }

    /// One run at `rate`, with CPU of perfdhcp, of `server_pid` and of the machine.
    fn trial(&self, rate: u32, server_pid: Option<u32>) -> Result<Trial> {
        check_stop()?;
        let server0 = server_pid.and_then(proc_cpu_s);
        let machine0 = machine_ticks()?;
        let t = Instant::now();
        let (text, code, cpu) = self.run(rate)?;
        let wall = t.elapsed().as_secs_f64();
        let machine1 = machine_ticks()?;
        ensure!(
            code == 0 || code == 3,
            "perfdhcp at {rate}/s exited {code}:\n{text}"
        );
        let stat = |section: &str, key: &str| -> Result<f64> {
            let body = text
                .split(&format!("***Statistics for: {section}***"))
                .nth(1)
                .with_context(|| format!("no {section} statistics in:\n{text}"))?;
            let line = body
                .lines()
                .find(|l| l.trim_start().starts_with(&format!("{key}:")))
                .with_context(|| format!("no {section} {key:?} in:\n{text}"))?;
            let v = line.split(':').nth(1).unwrap_or("").split_whitespace();
            v.into_iter()
                .next()
                .and_then(|x| x.parse().ok())
                .with_context(|| format!("unreadable {line:?}"))
        };
        let sent = stat("DISCOVER-OFFER", "sent packets")?;
        let acked = stat("REQUEST-ACK", "received packets")?;
        // perfdhcp prints no delays when nothing came back.
        let delay = |s, k| stat(s, k).unwrap_or(f64::NAN);
        let busy = {
            let (b0, t0) = machine0;
            let (b1, t1) = machine1;
            100.0 * (b1 - b0) as f64 / ((t1 - t0).max(1)) as f64
        };
        let trial = Trial {
            target: rate,
            achieved: acked / f64::from(PERIOD_S),
            drops: if sent > 0.0 { 1.0 - acked / sent } else { 1.0 },
            do_avg_ms: delay("DISCOVER-OFFER", "avg delay"),
            do_max_ms: delay("DISCOVER-OFFER", "max delay"),
            ra_avg_ms: delay("REQUEST-ACK", "avg delay"),
            ra_max_ms: delay("REQUEST-ACK", "max delay"),
            perf_cpu: 100.0 * cpu / wall,
            server_cpu: match (server0, server_pid.and_then(proc_cpu_s)) {
                (Some(a), Some(b)) => Some(100.0 * (b - a) / wall),
                _ => None,
            },
            machine_busy: busy,
        };
        println!(
            "    -r {:>6}: {:>9.1} DORA/s, drops {:>5.1}%, DO avg {:.3} ms, RA avg {:.3} ms, perfdhcp CPU {:.0}%, machine {:.0}%{}",
            rate,
            trial.achieved,
            trial.drops * 100.0,
            trial.do_avg_ms,
            trial.ra_avg_ms,
            trial.perf_cpu,
            trial.machine_busy,
            trial
                .server_cpu
                .map(|c| format!(", server CPU {c:.0}%"))
                .unwrap_or_default()
        );
        // Let queues drain and late replies die before the next run.
        std::thread::sleep(Duration::from_millis(500));
        Ok(trial)
    }

    /// The highest rate that holds: doubling, then bisecting.
    fn search(
        &self,
        server_pid: Option<u32>,
    ) -> Result<(Vec<Trial>, Option<usize>, Option<usize>)> {
        let mut trials = Vec::new();
        let (mut best, mut failed): (Option<usize>, Option<usize>) = (None, None);
        // BENCH_START_RATE: a shortcut for trying one region by hand.
        let mut rate = std::env::var("BENCH_START_RATE")
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(START_RATE);
        loop {
            let t = self.trial(rate, server_pid)?;
            let held = t.held();
            // A generator that cannot send what it was asked to is the limit.
            let generator_short = t.achieved < 0.9 * f64::from(rate) && held;
            trials.push(t);
            if held {
                best = Some(trials.len() - 1);
                if generator_short || rate >= MAX_RATE {
                    break;
                }
                if failed.is_none() {
                    rate *= 2;
                    continue;
                }
            } else {
                failed = Some(trials.len() - 1);
                if best.is_none() {
                    if rate <= 2 {
                        break;
                    }
                    rate /= 2;
                    continue;
                }
            }
            break;
        }
        for _ in 0..BISECT {
            let (Some(b), Some(f)) = (best, failed) else {
                break;
            };
            let (lo, hi) = (trials[b].target, trials[f].target);
            if hi <= lo + lo / 20 + 1 {
                break;
            }
            let t = self.trial((lo + hi) / 2, server_pid)?;
            trials.push(t);
            if trials.last().unwrap().held() {
                best = Some(trials.len() - 1);
            } else {
                failed = Some(trials.len() - 1);
            }
        }
        Ok((trials, best, failed))
    }
}

impl Drop for Perf {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.macs);
    }
}

/// Generator runs at full speed: the ceiling is the best of these.
const CEILING_RUNS: usize = 3;
const CEILING_PERIOD: Duration = Duration::from_secs(3);

/// Sends DISCOVERs for every port's MAC as fast as the generator can, from the
/// host end of the DHCP port's veth (taken off the bridge: the generator is the
/// only client), and counts the OFFERs that come back.
/// `entry_pin`: the pinned XDP link whose program's run time is read (None
/// for a server without XDP).
fn ceiling(net: &Net, ports: usize, entry_pin: Option<&Path>) -> Result<Ceiling> {
    let host_side = xdhcp::netns::names::host_side_name(&net.dhcp_port_id);
    xdhcp::netns::ip(&["link", "set", &host_side, "nomaster"])?;
    // The responder's receive work in a kernel thread of its own (threaded
    // NAPI on the DHCP port), kept off the generator's core: otherwise the
    // generator's core also runs every XDP request, and measures both at once.
    let namespace = xdhcp::netns::names::namespace_name(&net.id);
    let tap = xdhcp::netns::names::tap_name(&net.dhcp_port_id);
    // A veth has NAPI only with XDP on it or GRO on: a server without XDP
    // (Kea) gets GRO (which merges no plain UDP datagram) for the same
    // arrangement.
    if entry_pin.is_none() {
        let status = Command::new("ip")
            .args([
                "netns", "exec", &namespace, "ethtool", "-K", &tap, "gro", "on",
            ])
            .status()?;
        ensure!(status.success(), "cannot turn GRO on on {tap}");
    }
    let status = Command::new("ip")
        .args(["netns", "exec", &namespace, "sh", "-c"])
        .arg(format!("echo 1 > /sys/class/net/{tap}/threaded"))
        .status()?;
    ensure!(status.success(), "cannot make {tap}'s NAPI threaded");
    let cores = cpu_ticks()?.len() - 1;
    let napi = napi_thread(&tap)?;
    if cores > 1 {
        set_affinity(napi, cores - 1)?;
        set_affinity(0, 0)?;
    }
    let gen = LoadGen::new(&host_side, (0..ports).map(port_mac))?;
    let entry = entry_pin.map(entry_prog_id).transpose()?;
    let _stats = entry.map(|_| BpfStats::enable()).transpose()?;
    let mut best: Option<Ceiling> = None;
    for _ in 0..CEILING_RUNS {
        check_stop()?;
        let xdp0 = entry.map(prog_run_stats).transpose()?.unwrap_or_default();
        let cpu0 = cpu_ticks()?;
        let load = gen.run(None, CEILING_PERIOD, Duration::from_millis(200), &STOP)?;
        let cpu = CpuSplit::between(&cpu0, &cpu_ticks()?, load.secs);
        let xdp1 = entry.map(prog_run_stats).transpose()?.unwrap_or_default();
        let runs = xdp1.1 - xdp0.1;
        let run = Ceiling {
            load,
            cpu,
            xdp_ns: (runs > 0).then(|| (xdp1.0 - xdp0.0) as f64 / runs as f64),
            responder_core: cores - 1,
        };
        println!(
            "    generator: sent {:>8.0}/s, OFFERs back {:>8.0}/s ({:.1}%), XDP ran {runs} times; per OFFER: XDP program {} ns, responder core {:.0} ns, machine {:.0} ns; CPU {}",
            load.sent_per_s(),
            load.replies_per_s(),
            100.0 * load.replies as f64 / load.sent.max(1) as f64,
            run.xdp_ns.map(|n| format!("{n:.0}")).unwrap_or_else(|| "?".into()),
            run.cpu.ns_per(load.replies, Some(run.responder_core)),
            run.cpu.ns_per(load.replies, None),
            run.cpu
        );
        if best
            .as_ref()
            .is_none_or(|b| b.load.replies_per_s() < load.replies_per_s())
        {
            best = Some(run);
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    set_affinity(0, usize::MAX)?;
    best.context("no generator run")
}

/// Pins thread `tid` (0: this one) to `core`, or lets it run anywhere (usize::MAX).
fn set_affinity(tid: i32, core: usize) -> Result<()> {
    // SAFETY: cpu_set_t is plain data; CPU_SET indexes within it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for c in 0..libc::CPU_SETSIZE as usize {
        if core == usize::MAX || c == core {
            // SAFETY: c < CPU_SETSIZE.
            unsafe { libc::CPU_SET(c, &mut set) };
        }
    }
    // SAFETY: a valid set of the size given.
    let rc = unsafe { libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    ensure!(
        rc == 0,
        "sched_setaffinity({tid}): {}",
        std::io::Error::last_os_error()
    );
    Ok(())
}

/// The kernel thread running `dev`'s threaded NAPI: "napi/<dev>-<id>" (the
/// kernel may cut it to 15 bytes).
fn napi_thread(dev: &str) -> Result<i32> {
    let name = format!("napi/{dev}-");
    let comm: String = name.chars().take(15).collect();
    for e in fs::read_dir("/proc")? {
        let e = e?;
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.starts_with(&comm)) {
            return Ok(pid);
        }
    }
    bail!("no NAPI thread {comm} for {dev}")
}

/// Where the machine's CPU went, % of all cores, and each core's busy %.
#[derive(Debug, Clone)]
struct CpuSplit {
    user: f64,
    system: f64,
    softirq: f64,
    busy: f64,
    per_core: Vec<f64>,
    secs: f64,
}

impl CpuSplit {
    /// Between two readings of /proc/stat's cpu lines (all cores first, then
    /// each; jiffies: user nice system idle iowait irq softirq steal …).
    fn between(a: &[Vec<u64>], b: &[Vec<u64>], secs: f64) -> Self {
        let split = |a: &[u64], b: &[u64]| {
            let d: Vec<f64> = a
                .iter()
                .zip(b)
                .map(|(x, y)| y.saturating_sub(*x) as f64)
                .collect();
            let total: f64 = d.iter().sum::<f64>().max(1.0);
            let pct = |v: f64| 100.0 * v / total;
            (
                pct(d[0] + d[1]),
                pct(d[2]),
                pct(d[5] + d[6]),
                pct(total - d[3] - d[4]),
            )
        };
        let (user, system, softirq, busy) = split(&a[0], &b[0]);
        Self {
            user,
            system,
            softirq,
            busy,
            per_core: a[1..]
                .iter()
                .zip(&b[1..])
                .map(|(x, y)| split(x, y).3)
                .collect(),
            secs,
        }
    }

    /// CPU time per event of the whole machine, and of `core`, ns.
    fn ns_per(&self, events: u64, core: Option<usize>) -> f64 {
        let busy = match core {
            Some(c) => self.per_core.get(c).copied().unwrap_or(f64::NAN),
            None => self.busy * self.per_core.len() as f64,
        };
        busy / 100.0 * self.secs * 1e9 / events.max(1) as f64
    }
}

impl std::fmt::Display for CpuSplit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.0}% of {} cores (user {:.0}%, system {:.0}%, softirq {:.0}%; per core",
            self.busy,
            self.per_core.len(),
            self.user,
            self.system,
            self.softirq
        )?;
        for c in &self.per_core {
            write!(f, " {c:.0}%")?;
        }
        write!(f, ")")
    }
}

/// The "cpu" lines of /proc/stat (all cores, then cpu0, cpu1, …), in jiffies.
fn cpu_ticks() -> Result<Vec<Vec<u64>>> {
    let stat = fs::read_to_string("/proc/stat")?;
    let lines: Vec<Vec<u64>> = stat
        .lines()
        .take_while(|l| l.starts_with("cpu"))
        .map(|l| {
            l.split_whitespace()
                .skip(1)
                .filter_map(|x| x.parse().ok())
                .collect::<Vec<u64>>()
        })
        .collect();
    ensure!(
        lines.len() >= 2 && lines.iter().all(|v| v.len() >= 8),
        "unexpected /proc/stat"
    );
    Ok(lines)
}

/// The program behind the pinned XDP link `pin` (the network's entry program).
fn entry_prog_id(pin: &Path) -> Result<u64> {
    let v = bpftool(&["link", "show", "pinned", &pin.display().to_string()])?;
    v["prog_id"]
        .as_u64()
        .with_context(|| format!("no prog_id for {}: {v}", pin.display()))
}

/// (run_time_ns, run_cnt) of program `id`; zero while stats are off.
fn prog_run_stats(id: u64) -> Result<(u64, u64)> {
    let v = bpftool(&["prog", "show", "id", &id.to_string()])?;
    Ok((
        v["run_time_ns"].as_u64().unwrap_or(0),
        v["run_cnt"].as_u64().unwrap_or(0),
    ))
}

/// While alive, the kernel times every BPF program run (BPF_ENABLE_STATS);
/// closing the descriptor turns it off again.
struct BpfStats {
    _fd: std::os::fd::OwnedFd,
}

impl BpfStats {
    fn enable() -> Result<Self> {
        use std::os::fd::FromRawFd;
        const BPF_ENABLE_STATS: libc::c_long = 32;
        const BPF_STATS_RUN_TIME: u32 = 0;
        // The enable_stats member of union bpf_attr: one u32, padded.
        let attr: [u32; 4] = [BPF_STATS_RUN_TIME, 0, 0, 0];
        // SAFETY: attr is a valid, fully initialised bpf_attr prefix of the size given.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_ENABLE_STATS,
                attr.as_ptr(),
                std::mem::size_of_val(&attr),
            )
        };
        ensure!(
            fd >= 0,
            "BPF_ENABLE_STATS: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: a fresh descriptor we own.
        Ok(Self {
            _fd: unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) },
        })
    }
}

/// utime + stime of `pid` in seconds.
fn proc_cpu_s(pid: u32) -> Option<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
    // Fields 14 and 15 (1-based) are the 12th and 13th after the name.
    let ticks: u64 = rest.get(11)?.parse::<u64>().ok()? + rest.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some(ticks as f64 / hz)
}

/// (busy, total) jiffies of all CPUs from /proc/stat.
fn machine_ticks() -> Result<(u64, u64)> {
    let all = cpu_ticks()?.swap_remove(0);
    let total: u64 = all.iter().sum();
    Ok((total - all[3] - all[4], total))
}

fn outcome(
    server: &'static str,
    ports: usize,
    found: (Vec<Trial>, Option<usize>, Option<usize>),
) -> Outcome {
    let (trials, _, failed) = found;
    // Past the generator's limit a higher requested rate can hold with fewer
    // completions: report the held run that completed the most.
    let best = trials
        .iter()
        .filter(|t| t.held())
        .max_by(|a, b| a.achieved.total_cmp(&b.achieved))
        .cloned();
    Outcome {
        server,
        ports,
        best,
        first_failed: failed.map(|i| trials[i].clone()),
        trials,
        startup_s: None,
        rss_kib: 0,
        map_bytes: None,
        command: String::new(),
        ceiling: None,
    }
}

fn bench_xdhcp(ports: usize) -> Result<Outcome> {
    let mut c = Cloud::new();
    let (net, doc) = network(&mut c, ports);
    let parsed = xdhcp::neutron::import::parse(&doc.to_string())?;
    Db::open(&c.db)?
        .import(&parsed)
        .context("importing ports")?;
    // The bridge first, so that perfdhcp's namespace is on it before the
    // daemon starts and start-up is timed as for dnsmasq (the daemon's
    // `--bridge` takes an existing bridge).
    xdhcp::netns::ip(&["link", "add", "name", &c.bridge, "type", "bridge"])?;
    xdhcp::netns::ip(&["link", "set", &c.bridge, "up"])?;
    let perf = Perf::new(&c.bridge, &c.tag, ports, net.dhcp_mac)?;
    let spawned = Instant::now();
    c.start_with(true, Some(&agent_toml()));
    let startup = perf
        .until_answered(spawned, Duration::from_secs(60))
        .with_context(|| format!("xdhcp never answered; log:\n{}", c.log()))?;
    println!("  xdhcp, {ports} ports (answering {startup:.2} s after spawn)");
    let mut o = outcome(
        "xdhcp",
        ports,
        // The daemon's own CPU (lease recording, sync): the fast path's
        // work is in softirq, which no process is charged for.
        perf.search_unless_skipped(c.daemon_pid())?,
    );
    o.startup_s = Some(startup);
    o.ceiling = Some(ceiling(
        &net,
        ports,
        Some(&c.bpffs.join("links").join(&net.id)),
    )?);
    let pid = c.daemon_pid().context("the daemon stopped")?;
    o.rss_kib = rss_kib(pid);
    o.map_bytes = Some(pinned_map_bytes(&c.bpffs)?);
    o.command = format!(
        "xdhcp --db DB --bpffs DIR run --config AGENT.toml --plumb --bridge BRIDGE   # AGENT.toml: {}",
        agent_toml().replace('\n', " ")
    );
    Ok(o)
}

/// The network's qdhcp namespace and tap on the cloud's bridge, plumbed by
/// xdhcp's own code, for a server that does not plumb (dnsmasq, Kea).
fn plumb_for(c: &Cloud, net: &Net) -> Result<xdhcp::netns::plumb::Plumbed> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(xdhcp::netns::plumb::plumb(
        &xdhcp::netns::plumb::PlumbSpec {
            network_id: net.id.clone(),
            port_id: net.dhcp_port_id.clone(),
            mac: net.dhcp_mac,
            addresses: vec![format!("{SERVER_IP}/{PREFIX}").parse()?],
            mtu: Some(1450),
            bridge: Some(c.bridge.clone()),
            ovs: None,
        },
    ))
}

fn bench_dnsmasq(ports: usize) -> Result<Outcome> {
    let mut c = Cloud::new();
    let (net, doc) = network(&mut c, ports);
    let plumbed = plumb_for(&c, &net)?;
    let dir = ConfDir(PathBuf::from(format!("/tmp/xdhcp-bench-dnsmasq-{}", c.tag)));
    fs::create_dir_all(&dir.0)?;
    let conf = neutron_conf(&doc, &AGENT, &dir.0, &plumbed.tap)?;
    conf.write_files(&dir.0)?;
    let perf = Perf::new(&c.bridge, &c.tag, ports, net.dhcp_mac)?;
    // The guard exists before dnsmasq does: any failure from here on stops it.
    let guard = DnsmasqGuard {
        pid_file: dir.0.join("pid"),
    };
    let spawned = Instant::now();
    let status = Command::new("ip")
        .args(["netns", "exec", &plumbed.namespace, DNSMASQ])
        .args(&conf.args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(dir.0.join("stderr"))?)
        .status()
        .context("running dnsmasq")?;
    ensure!(
        status.success(),
        "dnsmasq: {}",
        fs::read_to_string(dir.0.join("stderr")).unwrap_or_default()
    );
    let startup = perf
        .until_answered(spawned, Duration::from_secs(1800))
        .context("dnsmasq never answered perfdhcp")?;
    let pid = guard.pid().context("dnsmasq is not running")?;
    println!("  dnsmasq, {ports} ports (answering {startup:.2} s after spawn)");
    let mut o = outcome("dnsmasq", ports, perf.search(Some(pid as u32))?);
    o.startup_s = Some(startup);
    o.rss_kib = rss_kib(pid as u32);
    o.command =
        format!("{DNSMASQ} {}", conf.args.join(" ")).replace(&dir.0.display().to_string(), "DIR");
    drop(guard);
    drop(perf);
    drop(dir);
    Ok(o)
}

/// Kea-MT on the same network: reservations for every port, perfdhcp's
/// search, then the project's generator, as for xdhcp.
fn bench_kea(ports: usize) -> Result<Outcome> {
    let mut c = Cloud::new();
    let (net, _doc) = network(&mut c, ports);
    let plumbed = plumb_for(&c, &net)?;
    let dir = ConfDir(PathBuf::from(format!("/tmp/xdhcp-bench-kea-{}", c.tag)));
    fs::create_dir_all(&dir.0)?;
    let conf = kea::config(
        &plumbed.tap,
        &dir.0,
        CIDR,
        net.gateway,
        (0..ports).map(|i| (port_mac(i), port_ip(i))),
    );
    let perf = Perf::new(&c.bridge, &c.tag, ports, net.dhcp_mac)?;
    let spawned = Instant::now();
    let mut server = kea::Kea::spawn(&plumbed.namespace, &dir.0, &conf)?;
    let startup = perf
        .until_answered(spawned, Duration::from_secs(1800))
        .with_context(|| {
            format!(
                "kea-dhcp4 never answered perfdhcp: {}",
                fs::read_to_string(dir.0.join("kea.log")).unwrap_or_default()
            )
        })?;
    println!("  kea, {ports} ports (answering {startup:.2} s after spawn)");
    let mut o = outcome(
        "kea",
        ports,
        perf.search_unless_skipped(Some(server.pid()))?,
    );
    o.startup_s = Some(startup);
    o.ceiling = Some(ceiling(&net, ports, None)?);
    ensure!(
        server.alive(),
        "kea-dhcp4 stopped: {}",
        fs::read_to_string(dir.0.join("kea.log")).unwrap_or_default()
    );
    o.rss_kib = rss_kib(server.pid());
    o.command = format!(
        "{}   # kea-dhcp4.conf: raw sockets on the tap, memfile (persist), multi-threading (thread-pool-size 0: one a core), one reservation a port (hw-address), reservations-out-of-pool, no pool",
        server.command
    );
    drop(server);
    drop(perf);
    drop(dir);
    Ok(o)
}

/// Port counts above which dnsmasq and Kea are not run (dnsmasq took 495 s
/// to start with 100k hosts): BENCH_OTHERS_MAX_PORTS, default 100,000.
fn others_max_ports() -> usize {
    std::env::var("BENCH_OTHERS_MAX_PORTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}

fn main() -> Result<()> {
    let counts: Vec<usize> = std::env::var("BENCH_PORTS")
        .unwrap_or_else(|_| "1000,20000,100000,1000000".into())
        .split(',')
        .map(|s| s.trim().parse().context("BENCH_PORTS"))
        .collect::<Result<_>>()?;
    ensure!(
        Command::new(PERFDHCP).arg("-v").output().is_ok(),
        "perfdhcp is missing: apt-get install kea-admin"
    );
    catch_signals();
    // Other work on the machine skews every number: measure it first.
    let (b0, t0) = machine_ticks()?;
    std::thread::sleep(Duration::from_secs(2));
    let (b1, t1) = machine_ticks()?;
    let baseline = 100.0 * (b1 - b0) as f64 / (t1 - t0).max(1) as f64;
    println!("machine busy before the load runs (2 s, all cores): {baseline:.0}%");
    let started = Instant::now();
    println!("perfdhcp against xdhcp, dnsmasq and Kea ({PERIOD_S} s per rate, drops < 5%)");
    let mut results = Vec::new();
    let servers = std::env::var("BENCH_SERVERS").unwrap_or_else(|_| "xdhcp,dnsmasq,kea".into());
    for &n in &counts {
        if servers.contains("xdhcp") {
            results.push(bench_xdhcp(n)?);
            check_stop()?;
        }
        if n > others_max_ports() {
            continue;
        }
        if servers.contains("dnsmasq") {
            results.push(bench_dnsmasq(n)?);
            check_stop()?;
        }
        if servers.contains("kea") {
            results.push(bench_kea(n)?);
            check_stop()?;
        }
    }
    println!(
        "load benchmarks took {:.0} s",
        started.elapsed().as_secs_f64()
    );
    report::write_docs(&results, baseline)
}
