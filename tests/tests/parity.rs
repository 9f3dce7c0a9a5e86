//! Parity with Neutron's dnsmasq: the same imported networks and ports, served
//! once by xdhcp (daemon, fast path) and once by a "twin": dnsmasq started in a
//! namespace of its own with the command line, hosts file and opts file that
//! neutron-dhcp-agent (neutron/agent/linux/dhcp.py, `Dnsmasq`) writes for that
//! data. The same DISCOVER and REQUEST go to both; dhcproto decodes both
//! replies and every header field and option is compared. A difference passes
//! only if [`ALLOWED`] lists it (with its reason, and a check that the
//! difference is the documented one); docs/parity.md has the same table.

use std::{
    fmt::Write as _,
    fs,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use anyhow::{ensure, Context, Result};
use dhcproto::v4::{DhcpOption, OptionCode};
use serde_json::{json, Value};
use xdhcp::netns::TempNs;
use xdhcp_tests::craft::RequestFrame;
use xdhcp_tests::{
    cloud::{exchange, Cloud, VmPort},
    dnsmasq::{cidr, neutron_conf, Agent, ConfDir, DnsmasqGuard, DNSMASQ},
    parity::{compare, compare_options, option_order, Ctx, Diff, Options},
    RawSocket,
};

/// What a Linux client (dhclient, systemd-networkd, NetworkManager) asks for,
/// plus the PXE options the extra_dhcp_opts set.
const PRL: &[u8] = &[1, 3, 6, 12, 15, 26, 28, 42, 119, 121, 249, 66, 67];

const WAIT: Duration = Duration::from_secs(3);

/// One comparison: a network as imported, the agent options, its ports.
struct Scenario {
    what: &'static str,
    /// Second octet of the network (10.<octet>.0.0/24).
    octet: u8,
    agent: Agent,
    /// The subnet's dns_nameservers.
    dns_nameservers: &'static [&'static str],
    /// The VM ports served: a plain one, and/or one with PXE extra_dhcp_opts.
    ports: &'static [Kind],
}

/// A VM port's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// No extra_dhcp_opts.
    Plain,
    /// tftp-server, bootfile-name, server-ip-address and ntp-server (Ironic-style).
    Pxe,
}

/// The extra_dhcp_opts of the PXE port (Ironic-style), `{host}` is the network prefix.
fn pxe_opts(prefix: &str) -> Value {
    json!([
        {"opt_name": "tftp-server", "opt_value": format!("{prefix}.9"), "ip_version": 4},
        {"opt_name": "bootfile-name", "opt_value": "pxelinux.0", "ip_version": 4},
        {"opt_name": "server-ip-address", "opt_value": format!("{prefix}.9"), "ip_version": 4},
        {"opt_name": "ntp-server", "opt_value": format!("{prefix}.123"), "ip_version": 4},
    ])
}

/// The agent options of a typical deployment.
const AGENT: Agent = Agent {
    dns_domain: "parity.example",
    enable_isolated_metadata: true,
    dhcp_lease_duration: 600,
};

/// Where xdhcp and dnsmasq agree up to [`ALLOWED`]: run by default.
fn agreeing() -> Vec<Scenario> {
    vec![
        Scenario {
            what: "subnet with DNS servers and a host route, isolated metadata, 600 s leases",
            octet: 71,
            agent: AGENT,
            dns_nameservers: &["10.99.0.53"],
            ports: &[Kind::Plain],
        },
        Scenario {
            what: "subnet without DNS servers, one-day leases",
            octet: 72,
            agent: Agent {
                dhcp_lease_duration: 86400,
                ..AGENT
            },
            dns_nameservers: &[],
            ports: &[Kind::Plain],
        },
    ]
}

/// A port with PXE extra_dhcp_opts: differs in options 66/67 (xdhcp bug).
fn pxe() -> Vec<Scenario> {
    vec![Scenario {
        what: "a port with tftp-server, bootfile-name, server-ip-address, ntp-server",
        octet: 73,
        agent: AGENT,
        dns_nameservers: &["10.99.0.53"],
        ports: &[Kind::Pxe],
    }]
}

/// dns_domain with a trailing dot, as Neutron's DNS guide writes it: differs
/// in option 15 (xdhcp bug).
fn trailing_dot() -> Vec<Scenario> {
    vec![Scenario {
        what: "dns_domain written with a trailing dot",
        octet: 74,
        agent: Agent {
            dns_domain: "parity.example.",
            ..AGENT
        },
        dns_nameservers: &["10.99.0.53"],
        ports: &[Kind::Plain],
    }]
}

// ---------------------------------------------------------------------------
// The test.

#[test]
fn xdhcp_answers_as_neutrons_dnsmasq_does() {
    check_parity(agreeing());
}

#[test]
fn pxe_extra_dhcp_opts_as_dnsmasq() {
    check_parity(pxe());
}

#[test]
fn trailing_dot_dns_domain_as_dnsmasq() {
    check_parity(trailing_dot());
}

/// Runs `scenarios`; fails listing every difference the allow-list does not explain.
fn check_parity(scenarios: Vec<Scenario>) {
    ensure_dnsmasq();
    let mut report = String::new();
    let mut failures = Vec::new();
    for s in scenarios {
        let diffs = run_scenario(&s).unwrap_or_else(|e| panic!("{}: {e:#}", s.what));
        writeln!(report, "\n== {}", s.what).unwrap();
        for d in &diffs {
            writeln!(report, "{d}").unwrap();
            if d.allowed.is_none() {
                failures.push(format!("{}: {d}", s.what));
            }
        }
    }
    println!("{report}");
    assert!(
        failures.is_empty(),
        "differences from Neutron's dnsmasq that the allow-list does not explain:\n{}",
        failures.join("\n")
    );
}

/// The comparison itself must be able to fail: a difference not on the list
/// is reported, and an allowed code whose check does not hold is reported too.
#[test]
fn the_comparison_catches_differences() {
    let ctx = Ctx {
        server_ip: Ipv4Addr::new(10, 0, 0, 2),
        subnet_has_dns: true,
        requested: |c| PRL.contains(&c),
        siaddr_opt: None,
        client_fqdn: false,
        fqdn: "host-10-0-0-5.example".into(),
    };
    let mask = |m: [u8; 4]| DhcpOption::SubnetMask(Ipv4Addr::from(m));
    type Case = (&'static str, Vec<DhcpOption>, Vec<DhcpOption>, usize);
    let cases: Vec<Case> = vec![
        (
            "same options: nothing",
            vec![mask([255, 255, 255, 0])],
            vec![mask([255, 255, 255, 0])],
            0,
        ),
        (
            "a wrong mask is not allowed",
            vec![mask([255, 255, 0, 0])],
            vec![mask([255, 255, 255, 0])],
            1,
        ),
        (
            "a missing router is not allowed",
            vec![],
            vec![DhcpOption::Router(vec![Ipv4Addr::new(10, 0, 0, 1)])],
            1,
        ),
        (
            "dnsmasq naming itself DNS is allowed only when the subnet has none",
            vec![],
            vec![DhcpOption::DomainNameServer(vec![ctx.server_ip])],
            1,
        ),
        (
            "different T1 is not allowed",
            vec![DhcpOption::Renewal(300)],
            vec![DhcpOption::Renewal(290)],
            1,
        ),
    ];
    for (what, x, d, unexplained) in cases {
        let by_code = |v: Vec<DhcpOption>| -> Options {
            v.into_iter()
                .map(|o| (u8::from(OptionCode::from(&o)), o))
                .collect()
        };
        let (x, d) = (by_code(x), by_code(d));
        let diffs = compare_options(&ctx, "p", "OFFER", &x, &d);
        let got = diffs.iter().filter(|d| d.allowed.is_none()).count();
        assert_eq!(got, unexplained, "{what}: {diffs:#?}");
    }
}

fn ensure_dnsmasq() {
    assert!(
        Path::new(DNSMASQ).exists(),
        "{DNSMASQ} is missing: apt-get install dnsmasq-base"
    );
}

fn run_scenario(s: &Scenario) -> Result<Vec<Diff>> {
    let mut c = Cloud::new();
    let net = c.net(s.octet);
    let mut net_doc = c.net_json(&net);
    net_doc["subnets"][0]["dns_nameservers"] = json!(s.dns_nameservers);
    c.import_ok(&net_doc);
    let ports: Vec<(Kind, VmPort)> = s
        .ports
        .iter()
        .enumerate()
        .map(|(i, k)| (*k, c.vm_port(&net, 10 + i as u8)))
        .collect();
    let mut ports_doc = Cloud::ports_json(&ports.iter().map(|(_, p)| p).collect::<Vec<_>>());
    let prefix = format!("10.{}.0", s.octet);
    for (i, (kind, _)) in ports.iter().enumerate() {
        if *kind == Kind::Pxe {
            ports_doc["ports"][i]["extra_dhcp_opts"] = pxe_opts(&prefix);
        }
    }
    c.import_ok(&ports_doc);

    // The twin reads exactly what xdhcp imported.
    let mut doc = net_doc.clone();
    doc["ports"]
        .as_array_mut()
        .unwrap()
        .extend(ports_doc["ports"].as_array().unwrap().iter().cloned());
    let twin = Twin::start(&doc, &s.agent)?;

    c.start_with(true, Some(&s.agent.toml()));
    c.wait_attached(&net, Duration::from_secs(30))?;

    let mut diffs = Vec::new();
    for (kind, port) in &ports {
        let name = if *kind == Kind::Pxe { "pxe" } else { "plain" };
        let domain = s.agent.dns_domain.trim_end_matches('.');
        let ctx = Ctx {
            server_ip: net.server_ip,
            subnet_has_dns: !s.dns_nameservers.is_empty(),
            requested: |c| PRL.contains(&c),
            siaddr_opt: (*kind == Kind::Pxe).then(|| format!("{prefix}.9").parse().unwrap()),
            client_fqdn: false,
            fqdn: format!("host-{}.{domain}", port.ip.to_string().replace('.', "-")),
        };
        let (_, xsock) = c.vm(port)?;
        twin.client_as(port)?;
        let xid = u32::from(s.octet) << 16 | u32::from(port.mac[5]) << 8;
        let discover = frame(RequestFrame::discover(port.mac), xid);
        let request = frame(
            RequestFrame::request(port.mac, port.ip, net.server_ip),
            xid + 1,
        );
        // A client that names itself (dhclient's send host-name, an FQDN option).
        let fqdn = [&[0x01, 0, 0][..], b"vm-client"].concat();
        let named = frame(
            RequestFrame::request(port.mac, port.ip, net.server_ip)
                .with_option(12, b"vm-client")
                .with_option(81, &fqdn),
            xid + 2,
        );
        for (msg, f) in [("OFFER", &discover), ("ACK", &request), ("ACK12", &named)] {
            let x = ask(&xsock, f).with_context(|| {
                format!("xdhcp did not answer {name}'s {msg}; log:\n{}", c.log())
            })?;
            let d = ask(&twin.sock, f).with_context(|| {
                format!("dnsmasq did not answer {name}'s {msg}; {}", twin.log())
            })?;
            println!(
                "{} {name} {msg}: option order xdhcp {:?}, dnsmasq {:?}",
                s.what,
                option_order(&x),
                option_order(&d)
            );
            let ctx = Ctx {
                client_fqdn: f.options.iter().any(|(c, _)| *c == 81),
                ..ctx.clone()
            };
            diffs.extend(compare(&ctx, name, msg, &x, &d)?);
        }
    }
    drop(twin);
    drop(c);
    Ok(diffs)
}

/// `f` with our PRL (replacing craft's short default) and transaction id.
fn frame(f: RequestFrame, xid: u32) -> RequestFrame {
    let mut f = f.without_option(55).with_option(55, PRL);
    f.xid = xid.to_be_bytes();
    f
}

/// Sends `f` and returns the reply; retries while a server may still be starting.
fn ask(sock: &RawSocket, f: &RequestFrame) -> Option<Vec<u8>> {
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end {
        if let Some(reply) = exchange(sock, f, WAIT) {
            return Some(reply);
        }
    }
    None
}

// ---------------------------------------------------------------------------
// The twin: dnsmasq as neutron-dhcp-agent runs it.

static TWIN_N: AtomicU32 = AtomicU32::new(0);

/// dnsmasq in a namespace of its own (lo and the tap, like qdhcp-<net>), and
/// a client namespace whose eth0 is the tap's veth peer.
struct Twin {
    // Dropped in this order: dnsmasq first, then the namespaces, then the files.
    _dnsmasq: DnsmasqGuard,
    sock: RawSocket,
    client: TempNs,
    _server: TempNs,
    dir: ConfDir,
}

impl Twin {
    /// Plumbs the DHCP port as a tap, writes Neutron's files, starts dnsmasq.
    fn start(doc: &Value, agent: &Agent) -> Result<Self> {
        let n = TWIN_N.fetch_add(1, Ordering::Relaxed);
        let dir = ConfDir(PathBuf::from(format!(
            "/tmp/xdhcp-parity-{}-{n}",
            std::process::id()
        )));
        fs::create_dir_all(&dir.0).with_context(|| format!("creating {}", dir.0.display()))?;
        let server = TempNs::new("xpard")?;
        let client = TempNs::new("xparc")?;

        let dhcp = doc["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["device_owner"] == "network:dhcp")
            .context("no DHCP port in the document")?;
        let port_id = dhcp["id"].as_str().unwrap();
        let tap = format!("tap{}", &port_id[..11]);
        let (subnet_id, server_ip) = (
            dhcp["fixed_ips"][0]["subnet_id"].as_str().unwrap(),
            dhcp["fixed_ips"][0]["ip_address"].as_str().unwrap(),
        );
        let subnet = doc["subnets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == subnet_id)
            .context("the DHCP port's subnet")?;
        let (_, prefix) = cidr(subnet["cidr"].as_str().unwrap())?;
        let mtu = doc["networks"][0]["mtu"].as_u64().unwrap_or(0).to_string();
        server.ip(&["link", "add", &tap, "type", "veth", "peer", "name", "eth0"])?;
        server.ip(&["link", "set", "eth0", "netns", &client.name])?;
        server.ip(&[
            "link",
            "set",
            &tap,
            "address",
            dhcp["mac_address"].as_str().unwrap(),
        ])?;
        server.ip(&["link", "set", &tap, "mtu", &mtu])?;
        server.ip(&["addr", "add", &format!("{server_ip}/{prefix}"), "dev", &tap])?;
        server.ip(&["link", "set", &tap, "up"])?;
        client.ip(&["link", "set", "eth0", "mtu", &mtu])?;
        client.ip(&["link", "set", "eth0", "up"])?;

        let conf = neutron_conf(doc, agent, &dir.0, &tap)?;
        conf.write_files(&dir.0)?;
        // The guard exists before dnsmasq does: any failure from here on stops it.
        let guard = DnsmasqGuard {
            pid_file: dir.0.join("pid"),
        };
        let log = fs::File::create(dir.0.join("stderr"))?;
        let status = Command::new("ip")
            .args(["netns", "exec", &server.name, DNSMASQ])
            .args(&conf.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .status()
            .context("running dnsmasq")?;
        let errors = fs::read_to_string(dir.0.join("stderr")).unwrap_or_default();
        ensure!(
            status.success(),
            "dnsmasq {}: {errors}",
            conf.args.join(" ")
        );
        let end = Instant::now() + Duration::from_secs(3);
        while guard.pid().is_none() {
            ensure!(Instant::now() < end, "dnsmasq wrote no pid file: {errors}");
            std::thread::sleep(Duration::from_millis(20));
        }
        let sock = {
            let _inside = client.enter()?;
            RawSocket::bind("eth0")?
        };
        Ok(Self {
            _dnsmasq: guard,
            sock,
            client,
            _server: server,
            dir,
        })
    }

    /// Gives the client interface `port`'s MAC (one client at a time).
    fn client_as(&self, port: &VmPort) -> Result<()> {
        let mac = xdhcp::neutron::model::format_mac(&port.mac);
        self.client.ip(&["link", "set", "eth0", "address", &mac])
    }

    /// What the twin's files and dnsmasq said, for failure messages.
    fn log(&self) -> String {
        let read = |f: &str| fs::read_to_string(self.dir.0.join(f)).unwrap_or_default();
        format!(
            "dnsmasq stderr:\n{}\nhost:\n{}\nopts:\n{}\nleases:\n{}",
            read("stderr"),
            read("host"),
            read("opts"),
            read("leases")
        )
    }
}
