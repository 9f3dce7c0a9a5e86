//! The Prometheus endpoint and `xdhcp status`, end to end: a daemon serving
//! an imported network is scraped by a real Prometheus server (Debian's
//! `prometheus`, started here with a scrape config of its own), whose query
//! API must show the series rising after real DORAs of udhcpc in VM
//! namespaces; `promtool check metrics` passes a scrape; `xdhcp status
//! --json` says the network is attached and exits 0, and exits non-zero once
//! the daemon is stopped. The agent's RPC state: an agent whose broker is
//! unreachable is reported disconnected, by the metrics and by status.

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;
use xdhcp_tests::cloud::{xdhcp_bin, Cloud};

/// How long a series may take to show up in Prometheus (1 s scrapes).
const SCRAPED: Duration = Duration::from_secs(20);

/// A port nobody listens on now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// `GET path` on 127.0.0.1:`port`: (status code, body).
fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    // Prometheus answers small bodies plainly, but may chunk: undo it.
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok((code, body))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A private Prometheus server scraping one target every second; killed and
/// its storage removed on drop.
struct Prometheus {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Prometheus {
    fn start(tag: &str, target: &str) -> Prometheus {
        let dir = std::env::temp_dir().join(format!("xdhcp-prometheus-{tag}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("the Prometheus directory");
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: xdhcp\n    scrape_interval: 1s\n    \
                 scrape_timeout: 1s\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting prometheus (apt-get install prometheus)");
        let p = Prometheus { child, dir, port };
        let end = Instant::now() + Duration::from_secs(30);
        while !matches!(http_get(port, "/-/ready"), Ok((200, _))) {
            assert!(Instant::now() < end, "prometheus not ready:\n{}", p.log());
            std::thread::sleep(Duration::from_millis(100));
        }
        p
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// The instant vector of `query`: (labels, value) per series.
    fn query(&self, query: &str) -> Vec<(Value, f64)> {
        let path = format!("/api/v1/query?query={}", url_encode(query));
        let (code, body) = http_get(self.port, &path).expect("querying prometheus");
        let v: Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("query {query}: {e}: HTTP {code} {body}"));
        assert_eq!(v["status"], "success", "query {query}: {v}");
        v["data"]["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let value = r["value"][1].as_str().unwrap().parse().unwrap();
                (r["metric"].clone(), value)
            })
            .collect()
    }

    /// The value of a query that selects one series (None while it selects none).
    fn value(&self, query: &str) -> Option<f64> {
        let r = self.query(query);
        assert!(r.len() <= 1, "{query} selects {} series: {r:?}", r.len());
        r.first().map(|(_, v)| *v)
    }

    /// Waits until `query`'s single value satisfies `ok`; returns it.
    fn wait_for(&self, query: &str, ok: impl Fn(f64) -> bool) -> f64 {
        let end = Instant::now() + SCRAPED;
        loop {
            let got = self.value(query);
            if let Some(v) = got.filter(|v| ok(*v)) {
                return v;
            }
            assert!(
                Instant::now() < end,
                "{query} is {got:?} after {SCRAPED:?}; prometheus log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// udhcpc once in VM namespace `ns` (a DORA when the fast path answers);
/// the script does nothing, the namespace keeps no address.
fn udhcpc(ns: &str, tries: &str) -> Output {
    Command::new("ip")
        .args([
            "netns", "exec", ns, "udhcpc", "-i", "eth0", "-n", "-q", "-f",
        ])
        .args(["-t", tries, "-T", "1", "-s", "/bin/true"])
        .output()
        .expect("running udhcpc")
}

/// `xdhcp status --json`: exit success and the report.
fn status(c: &Cloud) -> (bool, Value) {
    let out = c.xdhcp(&["status", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "status JSON: {e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.success(), v)
}

#[test]
fn prometheus_scrapes_the_daemon_and_status_follows_it() {
    let mut c = Cloud::new();
    let (net, a) = c.net_with_vm(79);
    let metrics_port = free_port();
    let addr = format!("127.0.0.1:{metrics_port}");
    let started = xdhcp::daemon::health::unix_now_f64();
    c.start_args(true, None, &["--metrics", &addr]);
    c.wait_attached(&net, Duration::from_secs(30)).unwrap();
    let (vm_a, _) = c.vm(&a).unwrap();
    let prom = Prometheus::start(&c.tag, &addr);
    let job = "job=\"xdhcp\"";
    prom.wait_for(&format!("up{{{job}}}"), |v| v == 1.0);

    // What the daemon serves, as Prometheus scraped it.
    let netl = format!("network=\"{}\"", net.id);
    prom.wait_for("xdhcp_networks_served", |v| v == 1.0);
    prom.wait_for(&format!("xdhcp_network_leases{{{netl}}}"), |v| v == 1.0);
    let attached = prom.query(&format!("xdhcp_network_attached{{{netl}}}"));
    assert_eq!(attached.len(), 1, "{attached:?}");
    let (labels, value) = &attached[0];
    assert_eq!(*value, 1.0, "attached: {labels}");
    let mode = labels["mode"].as_str().unwrap().to_string();
    assert!(mode == "native" || mode == "generic", "{labels}");
    assert!(
        labels["device"].as_str().unwrap().starts_with("tap"),
        "{labels}"
    );
    assert_eq!(
        prom.value(&format!("xdhcp_networks{{mode=\"{mode}\"}}")),
        Some(1.0)
    );
    assert_eq!(
        prom.value("xdhcp_map_capacity{map=\"LEASES\"}"),
        Some(f64::from(dhcp_ebpf::LEASES_MAX))
    );
    assert_eq!(prom.value("xdhcp_map_entries{map=\"NETS\"}"), Some(1.0));
    assert_eq!(
        prom.value(&format!(
            "xdhcp_build_info{{version=\"{}\"}}",
            env!("CARGO_PKG_VERSION")
        )),
        Some(1.0)
    );
    assert_eq!(prom.value("xdhcp_fast_path_up"), Some(1.0));
    let applied = prom
        .value("xdhcp_sync_last_applied_timestamp_seconds")
        .unwrap();
    assert!(
        applied >= started,
        "start-up sync at {applied}, started {started}"
    );
    assert!(
        prom.value("xdhcp_agent_connected").is_none(),
        "no agent series for xdhcp run"
    );

    // Two real DORAs: the fast-path counters rise by them.
    let before = |name: &str| prom.value(name).unwrap_or(0.0);
    let (offers0, acks0, received0) = (
        before("xdhcp_fast_offers_total"),
        before("xdhcp_fast_acks_total"),
        before("xdhcp_fast_received_total"),
    );
    let net_offers0 = before(&format!("xdhcp_network_fast_offers_total{{{netl}}}"));
    let net_acks0 = before(&format!("xdhcp_network_fast_acks_total{{{netl}}}"));
    for _ in 0..2 {
        let out = udhcpc(&c.vm_ns(vm_a).name, "5");
        assert!(
            out.status.success(),
            "udhcpc: {}{}\ndaemon log:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            c.log()
        );
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(&a.ip.to_string())
                || String::from_utf8_lossy(&out.stdout).contains(&a.ip.to_string()),
            "udhcpc got {}: {}",
            a.ip,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    prom.wait_for("xdhcp_fast_offers_total", |v| v >= offers0 + 2.0);
    prom.wait_for("xdhcp_fast_acks_total", |v| v >= acks0 + 2.0);
    prom.wait_for("xdhcp_fast_received_total", |v| v >= received0 + 4.0);
    // The same DORAs in the network's own counters (NET_STATS).
    prom.wait_for(&format!("xdhcp_network_fast_offers_total{{{netl}}}"), |v| {
        v >= net_offers0 + 2.0
    });
    prom.wait_for(&format!("xdhcp_network_fast_acks_total{{{netl}}}"), |v| {
        v >= net_acks0 + 2.0
    });
    prom.wait_for(&format!("xdhcp_network_acked_clients{{{netl}}}"), |v| {
        v == 1.0
    });
    prom.wait_for("xdhcp_map_entries{map=\"ACKS\"}", |v| v >= 1.0);

    // A client without a port: passed up as unknown, counted by the slow path.
    let stranger = c.vm_port(&net, 20);
    let (vm_s, _) = c.vm(&stranger).unwrap();
    let unknown0 = before("xdhcp_fast_passed_total{reason=\"unknown_client\"}");
    let slow0 = before("xdhcp_slow_total{counter=\"unknown_clients\"}");
    let out = udhcpc(&c.vm_ns(vm_s).name, "2");
    assert!(!out.status.success(), "a client without a port got a lease");
    prom.wait_for("xdhcp_fast_passed_total{reason=\"unknown_client\"}", |v| {
        v >= unknown0 + 1.0
    });
    prom.wait_for(
        &format!("xdhcp_network_fast_passed_total{{{netl},reason=\"unknown_client\"}}"),
        |v| v >= 1.0,
    );
    prom.wait_for("xdhcp_slow_total{counter=\"unknown_clients\"}", |v| {
        v >= slow0 + 1.0
    });

    // A port added while running: its change is applied, and the series say so.
    let b = c.vm_port(&net, 11);
    c.import_ok(&Cloud::ports_json(&[&b]));
    prom.wait_for(&format!("xdhcp_network_leases{{{netl}}}"), |v| v == 2.0);
    prom.wait_for("xdhcp_sync_last_applied_timestamp_seconds", |v| v > applied);
    prom.wait_for("xdhcp_sync_pending_networks", |v| v == 0.0);
    prom.wait_for(
        &format!("xdhcp_network_last_applied_timestamp_seconds{{{netl}}}"),
        |v| v > applied,
    );

    // One scrape, as Prometheus' own linter sees it; and nothing else is served.
    let (code, body) = http_get(metrics_port, "/metrics").unwrap();
    assert_eq!(code, 200);
    let mut lint = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    lint.stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let lint = lint.wait_with_output().unwrap();
    assert!(
        lint.status.success() && lint.stdout.is_empty() && lint.stderr.is_empty(),
        "promtool check metrics: {}{}\n{body}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );
    assert_eq!(http_get(metrics_port, "/").unwrap().0, 404);

    // xdhcp status: the daemon, the network attached, its leases, alive
    // (the status file is rewritten every 2 s: wait for the one after b).
    let end = Instant::now() + Duration::from_secs(5);
    let (ok, report) = loop {
        let (ok, report) = status(&c);
        let n = &report["networks"][0];
        let fresh = n["last_change_applied_unix"].as_f64() > Some(applied);
        if (ok && fresh && n["leases_in_maps"].as_u64() == Some(2)) || Instant::now() > end {
            break (ok, report);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(ok, "status: {report:#}");
    assert_eq!(report["healthy"], true, "{report:#}");
    assert_eq!(report["pid"].as_u64(), c.daemon_pid().map(u64::from));
    let nets = report["networks"].as_array().unwrap();
    assert_eq!(nets.len(), 1, "{report:#}");
    let n = &nets[0];
    assert_eq!(n["network_id"], net.id.as_str());
    assert_eq!(
        (n["attached"].as_bool(), n["mode"].as_str()),
        (Some(true), Some(mode.as_str()))
    );
    assert_eq!(n["leases_in_maps"].as_u64(), Some(2), "{n}");
    assert_eq!(n["acked_clients"].as_u64(), Some(1), "{n}");
    assert_eq!(n["slow_path_alive"], true, "{n}");
    assert!(
        n["last_change_applied_unix"].as_f64().unwrap() > applied,
        "{n}"
    );
    assert!(
        report["status_age_secs"].as_f64().unwrap() < 5.0,
        "{report:#}"
    );
    assert!(report["agent"].is_null(), "no agent for xdhcp run");

    // Stopped: status says so and exits non-zero; Prometheus sees it down.
    c.stop(false);
    let (ok, report) = status(&c);
    assert!(!ok, "status after stop: {report:#}");
    assert_eq!(report["healthy"], false);
    let problems = report["problems"].to_string();
    assert!(problems.contains("no daemon holds the lock"), "{problems}");
    assert!(
        !xdhcp::daemon::health::status_file(&c.bpffs).exists(),
        "the stopped daemon removed its status file"
    );
    prom.wait_for(&format!("up{{{job}}}"), |v| v == 0.0);
}

#[test]
fn an_agent_without_broker_is_reported_disconnected() {
    let c = Cloud::new();
    let metrics_port = free_port();
    let broker_port = free_port();
    let dir = std::env::temp_dir().join(format!("xdhcp-metrics-agent-{}", c.tag));
    std::fs::create_dir_all(&dir).unwrap();
    let ini = dir.join("dhcp_agent.ini");
    std::fs::write(
        &ini,
        format!(
            "[DEFAULT]\nhost = xdhcp-metrics-{tag}\ninterface_driver = linuxbridge\n\
             transport_url = rabbit://guest:guest@127.0.0.1:{broker_port}/\n\
             [agent]\nreport_interval = 1\n\
             [xdhcp]\nbpffs = {bpffs}\ndb = {db}\nmetrics_address = 127.0.0.1:{metrics_port}\n",
            tag = c.tag,
            bpffs = c.bpffs.display(),
            db = c.db.display(),
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.join("agent.log")).unwrap();
    let mut agent = Command::new(xdhcp_bin())
        .arg("--config-file")
        .arg(&ini)
        .arg("agent")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("xdhcp agent");
    let agent_log = || std::fs::read_to_string(dir.join("agent.log")).unwrap_or_default();

    let end = Instant::now() + Duration::from_secs(30);
    let body = loop {
        if let Ok((200, body)) = http_get(metrics_port, "/metrics") {
            if body.contains("xdhcp_agent_connected") {
                break body;
            }
        }
        assert!(Instant::now() < end, "no agent metrics:\n{}", agent_log());
        std::thread::sleep(Duration::from_millis(200));
    };
    let value = |name: &str| {
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok())
    };
    assert_eq!(value("xdhcp_agent_connected"), Some(0.0), "{body}");
    assert_eq!(
        value("xdhcp_agent_report_interval_seconds"),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        value("xdhcp_agent_last_report_timestamp_seconds"),
        Some(0.0),
        "{body}"
    );
    assert_eq!(value("xdhcp_agent_resyncs_total"), Some(0.0), "{body}");

    // status (found through the same config file): non-zero, and why.
    let end = Instant::now() + Duration::from_secs(10);
    let report = loop {
        let out = Command::new(xdhcp_bin())
            .arg("--config-file")
            .arg(&ini)
            .args(["status", "--json"])
            .output()
            .unwrap();
        let report: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        if !report["agent"].is_null() || Instant::now() > end {
            assert!(
                !out.status.success(),
                "status of a disconnected agent: {report:#}"
            );
            break report;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(report["agent"]["broker_connected"], false, "{report:#}");
    assert!(
        report["problems"]
            .to_string()
            .contains("agent: not connected to a broker"),
        "{report:#}"
    );
    assert!(
        report["pid"].as_u64() == Some(u64::from(agent.id())),
        "{report:#}"
    );

    // SAFETY: signalling our own child.
    unsafe { libc::kill(agent.id() as i32, libc::SIGTERM) };
    let _ = agent.wait();
    let _ = std::fs::remove_dir_all(&dir);
    // Cloud's drop: `xdhcp down` on its bpffs, its database removed.
}
