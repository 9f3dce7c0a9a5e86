//! docs/migration.md, performed: neutron-dhcp-agent is replaced by `xdhcp
//! agent` on a node, on the same config files, while a VM renews its lease
//! through the network's DHCP port twice a second; then rolled back. The
//! namespace, the DHCP port (and so its address and MAC) and the tap carry
//! over both ways; who answered each renewal is told apart by dnsmasq's log
//! and xdhcp's fast-path ACK count.

use std::{
    net::Ipv4Addr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread,
    time::{Duration, Instant},
};

use serde_json::json;
use xdhcp_tests::{
    agent::{unique, vm_port, Agent, Vm, SEED_DNSMASQ_CONF},
    craft::RequestFrame,
    is_dhcp_reply,
    neutron::Neutron,
    real_agent::{RealAgent, RealAgentConfig},
    RawSocket,
};

/// Time to wait for each side to be serving.
const SERVING: Duration = Duration::from_secs(90);

/// Waits for `cond`; fails with `logs()`.
fn wait(what: &str, cond: &dyn Fn() -> bool, logs: &dyn Fn() -> String) {
    let t = Instant::now();
    while !cond() {
        assert!(
            t.elapsed() < SERVING,
            "{what} within {SERVING:?}\n{}",
            logs()
        );
        thread::sleep(Duration::from_millis(200));
    }
}

/// Both agents' logs, for failure messages.
fn logs(real: &RealAgent, x: &Agent) -> String {
    format!("{}\nxdhcp agent log:\n{}", real.log(), x.log())
}

/// What the renewing client saw.
#[derive(Default)]
struct Seen {
    /// (when sent, answered: Some(message type) / None).
    renewals: Vec<(Instant, Option<u8>)>,
}

impl Seen {
    fn acked_since(&self, t: Instant) -> usize {
        self.renewals
            .iter()
            .filter(|(at, r)| *at >= t && *r == Some(5))
            .count()
    }

    /// The longest run of unanswered renewals, as time from the last answer
    /// before it to the first after it.
    fn longest_gap(&self) -> Duration {
        let answered: Vec<Instant> = self
            .renewals
            .iter()
            .filter(|(_, r)| r.is_some())
            .map(|(t, _)| *t)
            .collect();
        answered
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or_default()
    }
}

#[test]
fn swap_neutron_dhcp_agent_for_xdhcp_and_back_while_a_vm_renews() {
    let n = Neutron::shared();
    let host = unique("mig");
    let az = unique("azmig");
    // The files carry over as they are; the [xdhcp] section (ignored by
    // neutron-dhcp-agent) only keeps this test's pins apart from others'.
    let extra = format!("[xdhcp]\nbpffs = /sys/fs/bpf/xdhcp-{host}\n");
    let mut real = RealAgent::new(
        n,
        &host,
        &az,
        &RealAgentConfig {
            dnsmasq_conf: SEED_DNSMASQ_CONF,
            private_netns: false,
            extra_ini: &extra,
            lease_secs: 86400,
        },
    );
    let mut x = Agent::with_files(n, &host, real.files.clone());
    real.spawn();
    real.wait_alive();

    let net = n
        .post(
            "/v2.0/networks",
            &json!({"network": {"name": "migration", "availability_zone_hints": [az]}}),
        )
        .unwrap()["network"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    x.networks.push(net.clone());
    n.create_subnet(&net, "10.237.1.0/24", json!({})).unwrap();
    n.wait_dhcp_agents(&net, 1, Duration::from_secs(60))
        .unwrap();
    let p = vm_port(n, &net, &host, "mig-vm", json!({}));
    let vm = Vm::plug(n, &p.port);
    let ip: Ipv4Addr = p.ip.parse().unwrap();
    let mac: xdhcp::neutron::model::MacAddr = p.mac.parse().unwrap();
    // The agent makes its DHCP port once the network is scheduled to it.
    let t = Instant::now();
    let dhcp_port = loop {
        match real.dhcp_port(&net) {
            Some(p) if p["fixed_ips"][0]["ip_address"].is_string() => break p,
            _ if t.elapsed() > SERVING => {
                panic!("neutron-dhcp-agent made no DHCP port\n{}", logs(&real, &x))
            }
            _ => thread::sleep(Duration::from_millis(200)),
        }
    };
    let server_ip: Ipv4Addr = dhcp_port["fixed_ips"][0]["ip_address"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let server_mac: xdhcp::neutron::model::MacAddr =
        dhcp_port["mac_address"].as_str().unwrap().parse().unwrap();

    // The VM holds its address (dnsmasq answers a renewal through the IP
    // stack, which resolves the VM's address by ARP first).
    vm.ns
        .ip(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"])
        .unwrap();
    // A RENEWING REQUEST (ciaddr, unicast to the DHCP port) every
    // 500 ms, each waiting 400 ms for its answer.
    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let sock = {
        let _inside = vm.ns.enter().unwrap();
        RawSocket::bind("eth0").unwrap()
    };
    let client = {
        let (seen, stop) = (seen.clone(), stop.clone());
        thread::spawn(move || {
            // Booting: a DORA, so that dnsmasq holds a lease to renew.
            let mut xid = 0x6d69_0000u32;
            loop {
                xid += 1;
                let mut d = RequestFrame::discover(mac.0);
                d.xid = xid.to_be_bytes();
                let mut r = RequestFrame::request(mac.0, ip, server_ip);
                r.xid = xid.to_be_bytes();
                let w = Duration::from_millis(500);
                let acked = xdhcp_tests::cloud::exchange(&sock, &d, w).is_some()
                    && xdhcp_tests::cloud::exchange(&sock, &r, w)
                        .and_then(|a| xdhcp_tests::cloud::msg_type(&a))
                        == Some(5);
                if acked || stop.load(Ordering::Relaxed) {
                    break;
                }
            }
            while !stop.load(Ordering::Relaxed) {
                xid += 1;
                let mut f = RequestFrame::request(mac.0, ip, server_ip)
                    .without_option(54)
                    .without_option(50)
                    .unicast_from(ip, server_ip, server_mac.0);
                f.xid = xid.to_be_bytes();
                let sent = Instant::now();
                let _ = sock.send(&f.bytes());
                let reply = sock
                    .recv_matching(Duration::from_millis(400), |r| is_dhcp_reply(r, f.xid))
                    .and_then(|r| xdhcp_tests::cloud::msg_type(&r));
                seen.lock().unwrap().renewals.push((sent, reply));
                thread::sleep(Duration::from_millis(500).saturating_sub(sent.elapsed()));
            }
        })
    };
    let dnsmasq_acks = |real: &RealAgent| {
        real.dnsmasq_log()
            .lines()
            .filter(|l| l.contains("DHCPACK(") && l.contains(&p.ip))
            .count()
    };

    // 1. neutron-dhcp-agent's dnsmasq answers the renewals.
    wait(
        "dnsmasq ACKs a renewal",
        &|| dnsmasq_acks(&real) >= 2,
        &|| logs(&real, &x),
    );
    println!(
        "1. neutron-dhcp-agent: dnsmasq ACKed {} renewals",
        dnsmasq_acks(&real)
    );

    // 2. The swap, as docs/migration.md has it: stop neutron-dhcp-agent,
    // stop the dnsmasq it leaves (by its pid file), start xdhcp agent on the
    // same files.
    real.stop();
    let left = real.dnsmasq_pids();
    for pid in &left {
        // SAFETY: signalling the dnsmasq found by its pid file.
        unsafe { libc::kill(*pid, libc::SIGTERM) };
    }
    wait(
        "neutron's dnsmasq is gone",
        &|| real.dnsmasq_pids().is_empty(),
        &|| logs(&real, &x),
    );
    let swapped = Instant::now();
    x.spawn();
    wait(
        "xdhcp's fast path ACKs a renewal",
        &|| x.fast_acks() > 0,
        &|| logs(&real, &x),
    );
    let settled = Instant::now();
    thread::sleep(Duration::from_secs(3));
    {
        let s = seen.lock().unwrap();
        let after: Vec<_> = s.renewals.iter().filter(|(t, _)| *t >= settled).collect();
        assert!(
            after.iter().all(|(_, r)| *r == Some(5)),
            "every renewal after the swap settled is ACKed: {:?}",
            after.iter().map(|(_, r)| r).collect::<Vec<_>>()
        );
    }
    let ns = xdhcp::netns::names::namespace_name(&net);
    let addrs = std::process::Command::new("ip")
        .args(["-n", &ns, "-4", "addr", "show"])
        .output()
        .unwrap();
    let addrs = String::from_utf8_lossy(&addrs.stdout);
    assert!(
        addrs.contains(&format!("inet {server_ip}/24"))
            && addrs.contains("inet 169.254.169.254/32"),
        "xdhcp keeps the DHCP port's address and the metadata address:\n{addrs}"
    );
    let dnsmasq_after_swap = dnsmasq_acks(&real);
    println!(
        "2. swap: {} dnsmasq left running by the stop; xdhcp serving {:.1} s after neutron's \
         dnsmasq stopped; fast-path ACKs {}",
        left.len(),
        (settled - swapped).as_secs_f64(),
        x.fast_acks()
    );

    // 3. Rollback: stop xdhcp agent, take the fast path off (xdhcp down),
    // start neutron-dhcp-agent again; it respawns dnsmasq in the namespace.
    x.stop(false);
    x.down();
    let links = std::process::Command::new("ip")
        .args([
            "-n",
            &xdhcp::netns::names::namespace_name(&net),
            "link",
            "show",
        ])
        .output()
        .unwrap();
    let links = String::from_utf8_lossy(&links.stdout);
    assert!(
        links.contains("ns-") && !links.contains("xdp"),
        "after xdhcp down the namespace keeps its device, without XDP:\n{links}"
    );
    let rolled = Instant::now();
    real.spawn();
    wait(
        "dnsmasq ACKs again after the rollback",
        &|| dnsmasq_acks(&real) > dnsmasq_after_swap,
        &|| logs(&real, &x),
    );
    let back = Instant::now();
    thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    client.join().unwrap();
    let s = seen.lock().unwrap();
    let naks = s.renewals.iter().filter(|(_, r)| *r == Some(6)).count();
    let after_back: Vec<_> = s.renewals.iter().filter(|(t, _)| *t >= back).collect();
    println!(
        "3. rollback: dnsmasq serving {:.1} s after xdhcp stopped; {} renewals in all, {} ACKed, \
         {} NAKs, longest time without an answer {:.1} s",
        (back - rolled).as_secs_f64(),
        s.renewals.len(),
        s.acked_since(s.renewals[0].0),
        naks,
        s.longest_gap().as_secs_f64()
    );
    assert_eq!(naks, 0, "no renewal is NAKed");
    assert!(
        after_back.iter().all(|(_, r)| *r == Some(5)),
        "every renewal after the rollback is ACKed"
    );
    drop(s);
    drop(vm);
    drop(x);
    drop(real);
}
