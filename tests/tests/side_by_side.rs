//! Side by side with the real neutron-dhcp-agent: one network hosted at once
//! by Debian's neutron-dhcp-agent (dnsmasq driver, the seed's
//! dhcp_agent.ini) and by `xdhcp agent`, on one neutron-server with
//! dhcp_agents_per_network = 2. A VM on each kind of port sends one DISCOVER
//! and, to each server, one REQUEST; both servers' OFFERs and ACKs are
//! captured and compared field by field and option by option (dhcproto), as
//! tests/tests/parity.rs compares xdhcp with its dnsmasq twin. The only
//! difference that is no difference: each agent has its own DHCP port, so
//! each names its own address (option 54, the metadata route's next hop,
//! dnsmasq's siaddr and its DNS-server self); the real agent's address is
//! read as xdhcp's before comparing. Every other difference must be on the
//! allow-list (xdhcp_tests::parity::ALLOWED, docs/parity.md).

use std::{
    fmt::Write as _,
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use serde_json::{json, Value};
use xdhcp_tests::{
    agent::{unique, vm_port, Agent, Vm, SEED_DNSMASQ_CONF},
    craft::RequestFrame,
    is_dhcp_reply,
    neutron::Neutron,
    parity::{compare, option_order, options, Ctx, Diff},
    real_agent::RealAgent,
    reply_tlvs, RawSocket,
};

/// What a Linux client asks for, and the PXE options and option 150.
const PRL: &[u8] = &[1, 3, 6, 12, 15, 26, 28, 42, 119, 121, 249, 66, 67, 150];

/// Both agents' dnsmasq_config_file: the seed's MTU line and an NTP server.
fn dnsmasq_conf() -> String {
    format!("{SEED_DNSMASQ_CONF}dhcp-option=42,10.236.1.123\n")
}

/// How long each server may take for a port it has just been told of (the
/// real agent rewrites dnsmasq's files and signals it: seconds).
const READY: Duration = Duration::from_secs(90);

#[test]
fn xdhcp_agent_answers_as_neutron_dhcp_agent_does() {
    let n = Neutron::shared();
    let az = unique("azsbs");
    let mut x = Agent::new(n, &unique("xsbs"), &az);
    x.dnsmasq_conf = dnsmasq_conf();
    x.start();
    let real = RealAgent::start(n, &unique("rsbs"), &az, &dnsmasq_conf());

    // Two IPv4 subnets: a default route, a host route and a DNS server on
    // the first; no gateway and no DNS server on the second. No router:
    // both are isolated (metadata via the DHCP port).
    let net = x.create_network(
        "side-by-side",
        "10.236.1.0/24",
        json!({"dns_nameservers": ["10.236.1.53"],
               "host_routes": [{"destination": "192.168.77.0/24", "nexthop": "10.236.1.254"}]}),
    );
    let second = n
        .create_subnet(&net, "10.236.2.0/24", json!({"gateway_ip": null}))
        .unwrap();
    n.wait_dhcp_agents(&net, 2, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e:#}\n{}\n{}", x.log(), real.log()));
    let mtu = n.network(&net).unwrap()["mtu"].as_u64().unwrap();

    let subnet_of = |ip: &str| if ip.starts_with("10.236.2.") { 2 } else { 1 };
    let pxe = json!([
        {"opt_name": "tftp-server", "opt_value": "10.236.1.9", "ip_version": 4},
        {"opt_name": "bootfile-name", "opt_value": "pxelinux.0", "ip_version": 4},
        {"opt_name": "server-ip-address", "opt_value": "10.236.1.9", "ip_version": 4},
        {"opt_name": "mtu", "opt_value": "1300", "ip_version": 4},
        {"opt_name": "150", "opt_value": "10.236.1.10", "ip_version": 4},
    ]);
    // A port without fixed_ips would get an address on each subnet: name one.
    let on = |subnet: &Value| json!([{"subnet_id": subnet["id"]}]);
    let first = n
        .get(&format!(
            "/v2.0/subnets?network_id={net}&cidr=10.236.1.0/24"
        ))
        .unwrap()["subnets"][0]
        .clone();
    let kinds: Vec<(&str, Value, Option<Ipv4Addr>)> = vec![
        ("plain", json!({"fixed_ips": on(&first)}), None),
        (
            "extra_dhcp_opts",
            json!({"fixed_ips": on(&first), "extra_dhcp_opts": pxe}),
            Some(Ipv4Addr::new(10, 236, 1, 9)),
        ),
        ("second subnet", json!({"fixed_ips": on(&second)}), None),
        (
            "dns_name",
            json!({"fixed_ips": on(&first), "dns_name": "web-1"}),
            None,
        ),
    ];
    let mut report = String::new();
    let mut failures = Vec::new();
    for (i, (what, extra, siaddr_opt)) in kinds.into_iter().enumerate() {
        let p = vm_port(n, &net, &x.host, &format!("sbs-vm-{i}"), extra);
        let vm = Vm::plug(n, &p.port);
        let sock = {
            let _inside = vm.ns.enter().unwrap();
            RawSocket::bind("eth0").unwrap()
        };
        let mac: xdhcp::neutron::model::MacAddr = p.mac.parse().unwrap();
        let ip: Ipv4Addr = p.ip.parse().unwrap();
        let sub = subnet_of(&p.ip);
        // Each agent's address on the VM's subnet, once its DHCP port has one.
        let server = |port: &dyn Fn() -> Option<Value>, who: &str| -> Ipv4Addr {
            let t = Instant::now();
            loop {
                let found = port().and_then(|p| {
                    p["fixed_ips"]
                        .as_array()?
                        .iter()
                        .filter_map(|f| f["ip_address"].as_str())
                        .find(|a| subnet_of(a) == sub)
                        .and_then(|a| a.parse().ok())
                });
                if let Some(a) = found {
                    return a;
                }
                assert!(
                    t.elapsed() < READY,
                    "{who} has no DHCP port address on subnet {sub} of {net}"
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        };
        let x_ip = server(&|| x.dhcp_port(&net), "xdhcp agent");
        let r_ip = server(&|| real.dhcp_port(&net), "neutron-dhcp-agent");
        let ctx = Ctx {
            server_ip: x_ip,
            subnet_has_dns: sub == 1,
            requested: |c| PRL.contains(&c),
            siaddr_opt,
            client_fqdn: false,
            fqdn: String::new(),
        };
        writeln!(
            report,
            "\n== {what}: {ip} (xdhcp's DHCP port {x_ip}, neutron-dhcp-agent's {r_ip}, network MTU {mtu})"
        )
        .unwrap();

        // DISCOVER: one frame, both servers' OFFERs.
        let xid = 0x5b5b_0000 | (i as u32) << 8;
        let discover = frame(RequestFrame::discover(mac.0), xid);
        let offers = answered_by_both(&sock, &discover, x_ip, r_ip, READY)
            .unwrap_or_else(|e| panic!("{what}: OFFER: {e}\n{}\n{}", x.log(), real.log()));
        let mut diffs = diff(&ctx, what, "OFFER", &offers, r_ip, x_ip, &mut report);
        // REQUEST to each server (option 54), one after the other with the
        // same xid: only the one named answers.
        let mut acks = (Vec::new(), Vec::new());
        for (k, (to, other)) in [(x_ip, r_ip), (r_ip, x_ip)].into_iter().enumerate() {
            let req = frame(RequestFrame::request(mac.0, ip, to), xid + 1);
            let got = collect(&sock, &req, Duration::from_secs(3));
            let from = |s: Ipv4Addr| got.iter().find(|f| server_id(f) == Some(s)).cloned();
            let ack = from(to).unwrap_or_else(|| {
                panic!(
                    "{what}: {to} did not ACK a REQUEST naming it\n{}\n{}",
                    x.log(),
                    real.log()
                )
            });
            if from(other).is_some() {
                failures.push(format!(
                    "{what}: {other} answered a REQUEST naming {to} as the server"
                ));
            }
            if k == 0 {
                acks.0 = ack;
            } else {
                acks.1 = ack;
            }
        }
        diffs.extend(diff(&ctx, what, "ACK", &acks, r_ip, x_ip, &mut report));
        for d in diffs {
            writeln!(report, "{d}").unwrap();
            if d.allowed.is_none() {
                failures.push(format!("{what}: {d}"));
            }
        }
        drop(vm);
    }
    println!("{report}");
    assert!(
        failures.is_empty(),
        "differences from neutron-dhcp-agent the allow-list does not explain:\n{}\n{report}",
        failures.join("\n")
    );
}

/// `f` with our PRL and transaction id.
fn frame(f: RequestFrame, xid: u32) -> RequestFrame {
    let mut f = f.without_option(55).with_option(55, PRL);
    f.xid = xid.to_be_bytes();
    f
}

/// The server identifier (option 54) of a reply.
fn server_id(frame: &[u8]) -> Option<Ipv4Addr> {
    let (_, v) = reply_tlvs(frame).into_iter().find(|(c, _)| *c == 54)?;
    Some(Ipv4Addr::from(<[u8; 4]>::try_from(v).ok()?))
}

/// Sends `f`, returns every reply to it that arrives within `window`.
fn collect(sock: &RawSocket, f: &RequestFrame, window: Duration) -> Vec<Vec<u8>> {
    sock.send(&f.bytes()).unwrap();
    let end = Instant::now() + window;
    let mut got = Vec::new();
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        match sock.recv_matching(left, |r| is_dhcp_reply(r, f.xid)) {
            Some(r) => got.push(r),
            None => break,
        }
    }
    got
}

/// Resends `f` (a new xid each time) until one transmission is answered by
/// both `a` and `b`: (a's reply, b's reply).
fn answered_by_both(
    sock: &RawSocket,
    f: &RequestFrame,
    a: Ipv4Addr,
    b: Ipv4Addr,
    within: Duration,
) -> Result<(Vec<u8>, Vec<u8>), String> {
    let end = Instant::now() + within;
    let mut f = f.clone();
    let mut seen = Vec::new();
    while Instant::now() < end {
        let got = collect(sock, &f, Duration::from_secs(2));
        let from = |s: Ipv4Addr| got.iter().find(|r| server_id(r) == Some(s)).cloned();
        if let (Some(x), Some(y)) = (from(a), from(b)) {
            return Ok((x, y));
        }
        seen = got.iter().map(|r| server_id(r)).collect();
        f.xid = (u32::from_be_bytes(f.xid) + 0x10).to_be_bytes();
    }
    Err(format!(
        "not answered by both {a} and {b} within {within:?}; the last try by {seen:?}"
    ))
}

/// The differences between xdhcp's reply and the real agent's, the real
/// agent's own address `r_ip` read as xdhcp's `x_ip` (see the module text).
fn diff(
    ctx: &Ctx,
    what: &str,
    msg: &'static str,
    (x, r): &(Vec<u8>, Vec<u8>),
    r_ip: Ipv4Addr,
    x_ip: Ipv4Addr,
    report: &mut String,
) -> Vec<Diff> {
    let r = as_if_from(r, r_ip, x_ip);
    let shown: Vec<String> = options(x).values().map(|o| format!("{o:?}")).collect();
    writeln!(report, "  {msg} from xdhcp: {}", shown.join(", ")).unwrap();
    writeln!(
        report,
        "  {msg}: option order xdhcp {:?}, neutron-dhcp-agent {:?}",
        option_order(x),
        option_order(&r)
    )
    .unwrap();
    compare(ctx, what, msg, x, &r).unwrap_or_else(|e| panic!("{what} {msg}: {e:#}"))
}

/// `frame` (from the IP header on) with every 4-byte run equal to `from`
/// replaced by `to`. The Ethernet source and the checksums then no longer
/// hold; neither is compared.
fn as_if_from(frame: &[u8], from: Ipv4Addr, to: Ipv4Addr) -> Vec<u8> {
    let (from, to) = (from.octets(), to.octets());
    let mut out = frame.to_vec();
    let mut i = 14;
    while i + 4 <= out.len() {
        if out[i..i + 4] == from {
            out[i..i + 4].copy_from_slice(&to);
            i += 4;
        } else {
            i += 1;
        }
    }
    out
}
