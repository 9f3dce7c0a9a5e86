//! `cargo xtask bench` (load part): perfdhcp against xdhcp and against dnsmasq
//! run as neutron-dhcp-agent runs it, on the same topology, then
//! docs/benchmarks.md and docs/benchmarks.png from the measured values.
//!
//! Topology, per server and per port count: one network 10.200.0.0/13 holding
//! every port, its qdhcp namespace plumbed onto a test bridge (by `xdhcp run
//! --plumb`, or by the same plumbing code for dnsmasq), and a perfdhcp
//! namespace whose veth sits on that bridge with 10.200.0.3/13. perfdhcp acts
//! as a relay (giaddr = 10.200.0.3, unicast to the server's port 67) and picks
//! each exchange's client MAC from the list of the ports' MACs (`-M`).
//!
//! The sustained rate: perfdhcp runs `PERIOD_S` seconds at a requested rate,
//! doubling from `START_RATE` while fewer than 5% of the started exchanges
//! fail to complete (ACK received), then bisecting between the last rate that
//! held and the first that did not. The rate reported is the completed
//! exchanges per second of the highest rate that held.
//!
//! Environment: BENCH_PORTS (comma-separated port counts, default
//! 1000,20000,100000), BENCH_FASTPATH_OUT / BENCH_DAEMON_OUT (files holding the
//! output of the `bench` and `bench_daemon` binaries of the same run, quoted in
//! the document), BENCH_DOCS (where to write, default docs/ of the workspace).

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
use xdhcp::{db::Db, netns::TempNs};
use xdhcp_tests::{
    cloud::{Cloud, Net},
    dnsmasq::{neutron_conf, Agent, ConfDir, DnsmasqGuard, DNSMASQ},
};

const PERIOD_S: u32 = 5;
const START_RATE: u32 = 50;
const MAX_RATE: u32 = 102_400;
const MAX_DROP: f64 = 0.05;
/// Bisection steps after the doubling found a failing rate.
const BISECT: usize = 3;
const CIDR: &str = "10.200.0.0/13";
const PREFIX: u8 = 13;
const PERF_IP: &str = "10.200.0.3";
const SERVER_IP: &str = "10.200.0.2";
const PERFDHCP: &str = "perfdhcp";
/// Neutron's defaults for the agent options both servers get.
const AGENT: Agent = Agent {
    dns_domain: "openstacklocal",
    enable_isolated_metadata: false,
    dhcp_lease_duration: 86400,
};

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
    /// The server process's CPU (dnsmasq only), % of one core.
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
    /// Spawn → first completed exchange (dnsmasq; xdhcp's is bench_daemon's).
    startup_s: Option<f64>,
    rss_kib: u64,
    /// BPF map memory (bytes_memlock of the pinned maps), xdhcp only.
    map_bytes: Option<u64>,
    /// The dnsmasq command line or the xdhcp one.
    command: String,
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
            "network_id": net.id, "mac_address": xdhcp::model::format_mac(&port_mac(i)),
            "device_owner": "compute:nova", "admin_state_up": true,
            "fixed_ips": [{"subnet_id": net.subnet_id, "ip_address": port_ip(i).to_string()}]
        }));
    }
    (net, doc)
}

/// The perfdhcp arguments for a run at `rate` (0: one exchange).
fn perfdhcp_args(macs: &Path, rate: u32) -> Vec<String> {
    let mut a: Vec<String> = vec!["-4".into()];
    if rate == 0 {
        a.extend(["-n".into(), "1".into(), "-d".into(), "0.2".into()]);
    } else {
        a.extend([
            "-r".into(),
            rate.to_string(),
            "-p".into(),
            PERIOD_S.to_string(),
            "-W".into(),
            "1000000".into(),
        ]);
    }
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
    fn new(bridge: &str, tag: &str, ports: usize) -> Result<Self> {
        let ns = TempNs::new("xbperf")?;
        let host = format!("xp{tag}");
        // Created with its peer inside the namespace: removing it removes both.
        xdhcp::netns::ip(&[
            "link", "add", &host, "type", "veth", "peer", "name", "eth0", "netns", &ns.name,
        ])?;
        let perf = Self {
            macs: PathBuf::from(format!("/tmp/xdhcp-bench-macs-{tag}")),
            ns,
        };
        xdhcp::netns::ip(&["link", "set", &host, "master", bridge])?;
        xdhcp::netns::ip(&["link", "set", &host, "up"])?;
        perf.ns
            .ip(&["addr", "add", &format!("{PERF_IP}/{PREFIX}"), "dev", "eth0"])?;
        perf.ns.ip(&["link", "set", "eth0", "up"])?;
        let mut list = String::with_capacity(ports * 18);
        for i in 0..ports {
            writeln!(list, "{}", xdhcp::model::format_mac(&port_mac(i)))?;
        }
        fs::write(&perf.macs, list).context("writing perfdhcp's MAC list")?;
        Ok(perf)
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

    /// Time until one exchange completes, trying again until `timeout`.
    fn until_answered(&self, since: Instant, timeout: Duration) -> Result<f64> {
        loop {
            check_stop()?;
            let (_, code, _) = self.run(0)?;
            if code == 0 {
                return Ok(since.elapsed().as_secs_f64());
            }
            ensure!(
                since.elapsed() < timeout,
                "no exchange completed within {timeout:?}"
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
        let mut rate = START_RATE;
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
    let stat = fs::read_to_string("/proc/stat")?;
    let cpu = stat.lines().next().context("empty /proc/stat")?;
    let v: Vec<u64> = cpu
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    Ok((total - idle, total))
}

fn rss_kib(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("VmRSS:")
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            })
        })
        .unwrap_or(0)
}

/// bytes_memlock summed over the distinct maps pinned under `dir`.
fn pinned_map_bytes(dir: &Path) -> Result<u64> {
    let mut ids = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let path = e?.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let out = Command::new("bpftool")
                .args(["-j", "map", "show", "pinned"])
                .arg(&path)
                .output()
                .context("running bpftool")?;
            // Pins of programs and links are not maps: bpftool refuses them.
            let Ok(v) = serde_json::from_slice::<Value>(&out.stdout) else {
                continue;
            };
            if let (Some(id), Some(bytes)) = (v["id"].as_u64(), v["bytes_memlock"].as_u64()) {
                ids.insert(id, bytes);
            }
        }
    }
    ensure!(!ids.is_empty(), "no pinned maps under {}", dir.display());
    Ok(ids.values().sum())
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
    }
}

fn bench_xdhcp(ports: usize) -> Result<Outcome> {
    let mut c = Cloud::new();
    let (net, doc) = network(&mut c, ports);
    let parsed = xdhcp::import::parse(&doc.to_string())?;
    Db::open(&c.db)?
        .import(&parsed)
        .context("importing ports")?;
    c.start_with(true, Some(&AGENT.toml()));
    c.wait_attached(&net, Duration::from_secs(120))?;
    let perf = Perf::new(&c.bridge, &c.tag, ports)?;
    perf.until_answered(Instant::now(), Duration::from_secs(30))
        .with_context(|| format!("xdhcp never answered perfdhcp; log:\n{}", c.log()))?;
    println!("  xdhcp, {ports} ports");
    let mut o = outcome("xdhcp", ports, perf.search(None)?);
    let pid = c.daemon_pid().context("the daemon stopped")?;
    o.rss_kib = rss_kib(pid);
    o.map_bytes = Some(pinned_map_bytes(&c.bpffs)?);
    o.command = format!(
        "xdhcp --db DB --bpffs DIR run --config AGENT.toml --plumb --bridge BRIDGE   # AGENT.toml: {}",
        AGENT.toml().replace('\n', " ")
    );
    Ok(o)
}

fn bench_dnsmasq(ports: usize) -> Result<Outcome> {
    let mut c = Cloud::new();
    let (net, doc) = network(&mut c, ports);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let plumbed = rt.block_on(xdhcp::plumb::plumb(&xdhcp::plumb::PlumbSpec {
        network_id: net.id.clone(),
        port_id: net.dhcp_port_id.clone(),
        mac: net.dhcp_mac,
        addresses: vec![format!("{SERVER_IP}/{PREFIX}").parse()?],
        mtu: Some(1450),
        bridge: Some(c.bridge.clone()),
    }))?;
    let dir = ConfDir(PathBuf::from(format!("/tmp/xdhcp-bench-dnsmasq-{}", c.tag)));
    fs::create_dir_all(&dir.0)?;
    let conf = neutron_conf(&doc, &AGENT, &dir.0, &plumbed.tap)?;
    conf.write_files(&dir.0)?;
    let perf = Perf::new(&c.bridge, &c.tag, ports)?;
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
        .until_answered(spawned, Duration::from_secs(300))
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

fn main() -> Result<()> {
    let counts: Vec<usize> = std::env::var("BENCH_PORTS")
        .unwrap_or_else(|_| "1000,20000,100000".into())
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
    println!("perfdhcp against xdhcp and dnsmasq ({PERIOD_S} s per rate, drops < 5%)");
    let mut results = Vec::new();
    for &n in &counts {
        results.push(bench_xdhcp(n)?);
        check_stop()?;
        results.push(bench_dnsmasq(n)?);
        check_stop()?;
    }
    println!(
        "load benchmarks took {:.0} s",
        started.elapsed().as_secs_f64()
    );
    write_docs(&results, baseline)
}

// ---------------------------------------------------------------------------
// The document and the plot.

fn first_line(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .map(|o| {
            let s = String::from_utf8_lossy(&o.stdout).to_string()
                + &String::from_utf8_lossy(&o.stderr);
            s.lines().next().unwrap_or("").trim().to_string()
        })
        .unwrap_or_default()
}

fn fmt_ms(v: f64) -> String {
    if v.is_nan() {
        "–".into()
    } else {
        format!("{v:.3}")
    }
}

fn write_docs(results: &[Outcome], baseline: f64) -> Result<()> {
    let docs = std::env::var_os("BENCH_DOCS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs"));
    let read = |var: &str| {
        std::env::var_os(var)
            .and_then(|p| fs::read_to_string(p).ok())
            .unwrap_or_else(|| format!("({var} not given: not run)\n"))
    };
    let cpu_model = fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let nproc = first_line("nproc", &[]);
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    let perf_version = first_line(PERFDHCP, &["-v"]);
    let dnsmasq_version = first_line(DNSMASQ, &["--version"]);

    let mut md = String::new();
    writeln!(md, "# Benchmarks\n")?;
    writeln!(
        md,
        "Generated by `cargo xtask bench` (as root); every number below is from that one run.\n"
    )?;
    writeln!(md, "## Machine\n")?;
    writeln!(md, "- `nproc`: {nproc}")?;
    writeln!(md, "- CPU: {cpu_model}")?;
    writeln!(md, "- kernel: {kernel}")?;
    writeln!(md, "- perfdhcp: {perf_version}; dnsmasq: {dnsmasq_version}")?;
    writeln!(
        md,
        "- load from other work just before the load runs: {baseline:.0}% of all cores busy over 2 s \
         (the *machine* columns below include such load too)\n"
    )?;

    writeln!(md, "## DHCP load: perfdhcp, xdhcp against dnsmasq\n")?;
    writeln!(
        md,
        "One network {CIDR} holding all the ports; its qdhcp namespace is plumbed onto a test \
         bridge (by `xdhcp run --plumb`, and by the same plumbing code for dnsmasq, which then \
         runs in that namespace with the command line and files neutron-dhcp-agent writes). \
         perfdhcp runs in a namespace of its own on the bridge with {PERF_IP}/{PREFIX}; it acts \
         as a relay (giaddr {PERF_IP}, unicast to {SERVER_IP}:67) and takes each exchange's \
         client MAC at random from the ports' MACs (`-M`). Each rate runs {PERIOD_S} s; the \
         rate starts at {START_RATE}/s and doubles (up to {MAX_RATE}/s) while fewer than \
         {:.0}% of the started DISCOVERs end without an ACK, then bisects ({BISECT} steps) \
         between the last rate that held and the first that did not. *DORA/s* is the most completed \
         4-way exchanges per second of any run that held; delays are perfdhcp's, in that run. CPU: perfdhcp's own (wait4 rusage), in % of one core; *machine* is all \
         cores busy (from /proc/stat), in % of the {nproc} cores.\n",
        MAX_DROP * 100.0
    )?;
    writeln!(
        md,
        "| server | ports | DORA/s | requested /s | drops | DISCOVER-OFFER avg / max ms | REQUEST-ACK avg / max ms | perfdhcp CPU | server CPU | machine | first failing rate |"
    )?;
    writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")?;
    for o in results {
        let Some(b) = &o.best else {
            writeln!(
                md,
                "| {} | {} | no rate held | | | | | | | | |",
                o.server, o.ports
            )?;
            continue;
        };
        let failed = o
            .first_failed
            .as_ref()
            .map(|f| {
                format!(
                    "{}/s: {:.1} DORA/s, {:.1}% drops, perfdhcp CPU {:.0}%",
                    f.target,
                    f.achieved,
                    f.drops * 100.0,
                    f.perf_cpu
                )
            })
            .unwrap_or_else(|| "none up to the cap".into());
        writeln!(
            md,
            "| {} | {} | {:.1} | {} | {:.1}% | {} / {} | {} / {} | {:.0}% | {} | {:.0}% | {} |",
            o.server,
            o.ports,
            b.achieved,
            b.target,
            b.drops * 100.0,
            fmt_ms(b.do_avg_ms),
            fmt_ms(b.do_max_ms),
            fmt_ms(b.ra_avg_ms),
            fmt_ms(b.ra_max_ms),
            b.perf_cpu,
            b.server_cpu
                .map(|c| format!("{c:.0}%"))
                .unwrap_or_else(|| "in softirq".into()),
            b.machine_busy,
            failed
        )?;
    }
    writeln!(md)?;
    // Ratios and what bound each measurement, computed from the rows above.
    for &n in results
        .iter()
        .map(|o| &o.ports)
        .collect::<std::collections::BTreeSet<_>>()
    {
        let rate = |s: &str| {
            results
                .iter()
                .find(|o| o.server == s && o.ports == n)
                .and_then(|o| o.best.as_ref())
                .map(|b| b.achieved)
        };
        if let (Some(x), Some(d)) = (rate("xdhcp"), rate("dnsmasq")) {
            writeln!(
                md,
                "- {n} ports: xdhcp sustained {:.0}× dnsmasq's rate.",
                x / d
            )?;
        }
    }
    for o in results.iter().filter(|o| o.server == "xdhcp") {
        let Some(b) = &o.best else { continue };
        let bound = match &o.first_failed {
            None if b.achieved < 0.9 * f64::from(b.target) => format!(
                "perfdhcp could not send the {}/s asked for (it completed {:.0}/s, using {:.0}% of a core): the generator is the limit, not xdhcp",
                b.target, b.achieved, b.perf_cpu
            ),
            None => format!("the search stopped at its cap of {MAX_RATE}/s"),
            Some(f) => format!(
                "at {}/s {:.1}% of the exchanges failed while perfdhcp used {:.0}% of a core and the machine was {:.0}% busy{}",
                f.target,
                f.drops * 100.0,
                f.perf_cpu,
                f.machine_busy,
                if f.perf_cpu > 90.0 || f.machine_busy > 90.0 {
                    ": perfdhcp (and the machine it shares with the server) is the likely limit; xdhcp's own ceiling is higher than this"
                } else {
                    ""
                }
            ),
        };
        writeln!(md, "- xdhcp, {} ports: {bound}.", o.ports)?;
    }
    writeln!(md, "\n![DORA/s against ports](benchmarks.png)\n")?;

    writeln!(md, "### Every perfdhcp run\n")?;
    writeln!(
        md,
        "| server | ports | requested /s | DORA/s | drops | perfdhcp CPU | machine |"
    )?;
    writeln!(md, "|---|---:|---:|---:|---:|---:|---:|")?;
    for o in results {
        for t in &o.trials {
            writeln!(
                md,
                "| {} | {} | {} | {:.1} | {:.1}% | {:.0}% | {:.0}% |",
                o.server,
                o.ports,
                t.target,
                t.achieved,
                t.drops * 100.0,
                t.perf_cpu,
                t.machine_busy
            )?;
        }
    }

    writeln!(md, "\n## Memory\n")?;
    writeln!(
        md,
        "xdhcp: the daemon's VmRSS and the BPF maps' memory (`bpftool map show pinned`, \
         bytes_memlock summed over the pinned maps) after the load run; dnsmasq: VmRSS of the \
         one dnsmasq serving the network, after the load run.\n"
    )?;
    writeln!(md, "| server | ports | RSS MiB | BPF maps MiB |")?;
    writeln!(md, "|---|---:|---:|---:|")?;
    for o in results {
        writeln!(
            md,
            "| {} | {} | {:.1} | {} |",
            o.server,
            o.ports,
            o.rss_kib as f64 / 1024.0,
            o.map_bytes
                .map(|b| format!("{:.1}", b as f64 / 1048576.0))
                .unwrap_or_else(|| "–".into())
        )?;
    }

    writeln!(md, "\n## Start-up\n")?;
    writeln!(
        md,
        "dnsmasq: from spawning it (the command below) to the first exchange perfdhcp \
         completes (`perfdhcp -n 1`, retried; its resolution is one perfdhcp invocation). \
         xdhcp's start-up is in the daemon section below.\n"
    )?;
    writeln!(
        md,
        "| server | ports (one network) | spawn → first answer |"
    )?;
    writeln!(md, "|---|---:|---:|")?;
    for o in results {
        if let Some(s) = o.startup_s {
            writeln!(md, "| {} | {} | {s:.2} s |", o.server, o.ports)?;
        }
    }

    writeln!(
        md,
        "\n## xdhcp daemon: start-up and change-to-answer (`bench_daemon`)\n"
    )?;
    writeln!(md, "```\n{}```\n", read("BENCH_DAEMON_OUT"))?;
    writeln!(
        md,
        "## Fast path: ns per reply (`bench`, BPF_PROG_TEST_RUN)\n"
    )?;
    writeln!(md, "```\n{}```\n", read("BENCH_FASTPATH_OUT"))?;

    writeln!(md, "## Commands\n")?;
    writeln!(md, "```sh\ncargo xtask bench")?;
    writeln!(md, "# runs, in order:")?;
    writeln!(md, "target/release/bench")?;
    writeln!(md, "target/release/bench_daemon")?;
    writeln!(
        md,
        "target/release/bench_perf   # this section's perfdhcp and dnsmasq runs"
    )?;
    let macs = Path::new("MACS");
    writeln!(
        md,
        "# each perfdhcp run, in the perfdhcp namespace (MACS: one port MAC a line):\nperfdhcp {}",
        perfdhcp_args(macs, 0)
            .join(" ")
            .replace("-n 1 -d 0.2", "-r RATE -p 5 -W 1000000")
    )?;
    writeln!(
        md,
        "# start-up probe:\nperfdhcp {}",
        perfdhcp_args(macs, 0).join(" ")
    )?;
    for o in results.iter().take(2) {
        writeln!(md, "# {} (in qdhcp-<network>):\n{}", o.server, o.command)?;
    }
    writeln!(md, "```")?;

    fs::create_dir_all(&docs)?;
    let md_path = docs.join("benchmarks.md");
    fs::write(&md_path, &md).with_context(|| format!("writing {}", md_path.display()))?;
    println!("wrote {}", md_path.display());
    plot(results, &docs.join("benchmarks.png"))
}

/// DORA/s against ports, both servers, log scales (gnuplot).
fn plot(results: &[Outcome], png: &Path) -> Result<()> {
    let data = std::env::temp_dir().join(format!("xdhcp-bench-{}.dat", std::process::id()));
    let mut text = String::new();
    for (i, server) in ["xdhcp", "dnsmasq"].iter().enumerate() {
        if i > 0 {
            text.push_str("\n\n");
        }
        for o in results.iter().filter(|o| o.server == *server) {
            if let Some(b) = &o.best {
                writeln!(text, "{} {}", o.ports, b.achieved)?;
            }
        }
    }
    fs::write(&data, text)?;
    let script = format!(
        "set terminal pngcairo size 900,560 font 'sans,11'\n\
         set output '{}'\n\
         set title 'Sustained DORA/s (perfdhcp, drops < 5%)'\n\
         set logscale xy\nset grid\n\
         set xlabel 'ports in the network'\nset ylabel '4-way exchanges per second'\n\
         set key top right\n\
         plot '{d}' index 0 with linespoints lw 2 pt 7 title 'xdhcp (XDP)', \
              '{d}' index 1 with linespoints lw 2 pt 5 title 'dnsmasq (neutron flags)'\n",
        png.display(),
        d = data.display()
    );
    let script_path = data.with_extension("gp");
    fs::write(&script_path, script)?;
    let out = Command::new("gnuplot")
        .arg(&script_path)
        .output()
        .context("running gnuplot (apt-get install gnuplot-nox)");
    let _ = fs::remove_file(&data);
    let _ = fs::remove_file(&script_path);
    let out = out?;
    if !out.status.success() {
        bail!("gnuplot: {}", String::from_utf8_lossy(&out.stderr));
    }
    println!("wrote {}", png.display());
    Ok(())
}
