//! The daemon end to end: import → run → answers; changes while running; a
//! namespace that appears later; kill -9 and restart; a bad import.

use std::{net::Ipv4Addr, time::Duration};

use serde_json::Value;
use xdhcp::slowpath::reply::DHCPREQUEST;
use xdhcp_tests::craft::RequestFrame;
use xdhcp_tests::{
    cloud::{exchange, msg_type, offered, Cloud},
    yiaddr,
};

const WAIT: Duration = Duration::from_secs(3);

fn discover(mac: [u8; 6], xid: u32) -> RequestFrame {
    let mut f = RequestFrame::discover(mac);
    f.xid = xid.to_be_bytes();
    f
}

/// The XDP program id on `dev` in namespace `ns`, from `ip -j`.
fn xdp_prog_id(ns: &str, dev: &str) -> Option<u64> {
    let out = std::process::Command::new("ip")
        .args(["-n", ns, "-j", "-d", "link", "show", "dev", dev])
        .output()
        .ok()?;
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    v[0]["xdp"]["prog"]["id"].as_u64()
}

#[test]
fn import_run_answer_follow_changes_and_survive_kill() {
    let mut c = Cloud::new();
    let (net, a) = c.net_with_vm(61);
    c.start(true);
    c.wait_attached(&net, Duration::from_secs(30)).unwrap();
    let (_, sock_a) = c.vm(&a).unwrap();

    // DISCOVER → OFFER, REQUEST → ACK, from the fast path.
    let offer = exchange(&sock_a, &discover(a.mac, 0x1000), WAIT)
        .unwrap_or_else(|| panic!("no OFFER; log:\n{}", c.log()));
    assert_eq!(
        (msg_type(&offer), yiaddr(&offer)),
        (Some(2), a.ip),
        "OFFER with the port's address"
    );
    let mut req = RequestFrame::request(a.mac, a.ip, net.server_ip);
    req.xid = [0, 0, 0x10, 0x01];
    let ack = exchange(&sock_a, &req, WAIT).expect("an ACK");
    assert_eq!((msg_type(&ack), yiaddr(&ack)), (Some(5), a.ip), "ACK");
    let stats = c.stats();
    assert!(
        stats["fast_offers"].as_u64() >= Some(1) && stats["fast_acks"].as_u64() >= Some(1),
        "{stats}"
    );

    // A port added while running is answered.
    let b = c.vm_port(&net, 11);
    let (_, sock_b) = c.vm(&b).unwrap();
    assert_eq!(
        offered(&sock_b, b.mac, 0x2000, Duration::from_millis(600)),
        None,
        "b before its port exists"
    );
    c.import_ok(&Cloud::ports_json(&[&b]));
    assert_eq!(
        offered(&sock_b, b.mac, 0x2100, Duration::from_secs(3)),
        Some(b.ip),
        "b after import"
    );

    // Changed: a new fixed IP is offered; an INIT-REBOOT for the old one gets a NAK.
    let mut b2 = b.clone();
    b2.ip = Ipv4Addr::new(10, 61, 0, 12);
    c.import_ok(&Cloud::ports_json(&[&b2]));
    let end = std::time::Instant::now() + Duration::from_secs(3);
    let mut got = None;
    while std::time::Instant::now() < end && got != Some(b2.ip) {
        got = offered(&sock_b, b.mac, 0x2200, Duration::from_millis(300));
    }
    assert_eq!(got, Some(b2.ip), "b's new address");
    let mut reboot = RequestFrame::request(b.mac, b.ip, net.server_ip)
        .without_option(54)
        .with_type(DHCPREQUEST);
    reboot.xid = [0, 0, 0x23, 0];
    let nak = exchange(&sock_b, &reboot, WAIT).expect("a NAK for the old address");
    assert_eq!(msg_type(&nak), Some(6));

    // Removed: no answer any more.
    let out = c.xdhcp(&["delete", "port", &b.id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        offered(&sock_b, b.mac, 0x2400, Duration::from_millis(800)),
        None,
        "b after delete"
    );

    // Leases: the ACK is recorded.
    std::thread::sleep(Duration::from_millis(1200));
    let out = c.xdhcp(&["leases", "--json"]);
    let leases: Value = serde_json::from_slice(&out.stdout).expect("leases JSON");
    let row = leases
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["mac"] == xdhcp::neutron::model::format_mac(&a.mac))
        .cloned();
    let row = row.unwrap_or_else(|| panic!("no lease for a: {leases}"));
    assert_eq!(
        (
            row["ip"].as_str(),
            row["state"].as_str(),
            row["port_id"].as_str()
        ),
        (Some("10.61.0.10"), Some("bound"), Some(a.id.as_str()))
    );

    // kill -9: the pinned fast path keeps answering; a restart adopts the
    // attachment (same program on the device, not a second one).
    let ns = xdhcp::netns::names::namespace_name(&net.id);
    let tap = xdhcp::netns::names::tap_name(&net.dhcp_port_id);
    let prog_before = xdp_prog_id(&ns, &tap).expect("an XDP program on the tap");
    c.stop(true);
    assert_eq!(
        offered(&sock_a, a.mac, 0x3000, WAIT),
        Some(a.ip),
        "answered while the daemon is dead"
    );
    c.start(true);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        offered(&sock_a, a.mac, 0x3100, WAIT),
        Some(a.ip),
        "answered after the restart"
    );
    assert_eq!(
        xdp_prog_id(&ns, &tap),
        Some(prog_before),
        "the restart adopted the attachment; log:\n{}",
        c.log()
    );
    let links = std::fs::read_dir(c.bpffs.join("links")).unwrap().count();
    assert_eq!(
        links, 2,
        "one attachment on the tap and one on its veth peer"
    );

    // `xdhcp down`: the daemon stops, nothing stays attached or pinned.
    let out = c.xdhcp(&["down"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!c.bpffs.exists(), "{} still exists", c.bpffs.display());
    assert_eq!(
        xdp_prog_id(&ns, &tap),
        None,
        "XDP still on the tap after down"
    );
    assert_eq!(
        offered(&sock_a, a.mac, 0x3200, Duration::from_millis(600)),
        None,
        "answered after down"
    );
}

#[test]
fn a_namespace_created_after_start_is_served() {
    let mut c = Cloud::new();
    let net = c.net(62);
    c.import_ok(&c.net_json(&net));
    c.start(false);
    std::thread::sleep(Duration::from_millis(800));
    assert!(
        !c.bpffs.join("links").join(&net.id).exists(),
        "nothing to attach to yet"
    );
    // What neutron-dhcp-agent would do, after the daemon started.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let spec = xdhcp::netns::plumb::PlumbSpec {
        network_id: net.id.clone(),
        port_id: net.dhcp_port_id.clone(),
        mac: net.dhcp_mac,
        addresses: vec![format!("{}/24", net.server_ip).parse().unwrap()],
        mtu: None,
        bridge: Some(c.bridge.clone()),
        ovs: None,
    };
    rt.block_on(xdhcp::netns::plumb::plumb(&spec)).unwrap();
    c.wait_attached(&net, Duration::from_secs(5)).unwrap();
    let ns = xdhcp::netns::names::namespace_name(&net.id);
    let tap = xdhcp::netns::names::tap_name(&net.dhcp_port_id);
    assert!(xdp_prog_id(&ns, &tap).is_some(), "XDP on the tap in {ns}");

    // The namespace vanishes: the daemon notices and drops the attachment.
    rt.block_on(xdhcp::netns::plumb::unplumb(
        &net.id,
        &net.dhcp_port_id,
        false,
    ))
    .unwrap();
    let pin = c.bpffs.join("links").join(&net.id);
    let end = std::time::Instant::now() + Duration::from_secs(3);
    while pin.exists() && std::time::Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !pin.exists(),
        "attachment still pinned after its namespace went away; log:\n{}",
        c.log()
    );
}

#[test]
fn a_bad_import_changes_nothing() {
    let mut c = Cloud::new();
    let net = c.net(63);
    c.import_ok(&c.net_json(&net));
    let before = xdhcp::store::Db::open(&c.db).unwrap().snapshot().unwrap();
    let good = c.vm_port(&net, 20);
    let mut bad = c.vm_port(&net, 21);
    bad.ip = Ipv4Addr::new(192, 0, 2, 1); // outside 10.63.0.0/24
    let out = c.import(&Cloud::ports_json(&[&good, &bad]));
    assert!(
        !out.status.success(),
        "an IP outside the subnet must be refused"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&bad.id) && err.contains("ip_address"),
        "the error names the port and field: {err}"
    );
    let after = xdhcp::store::Db::open(&c.db).unwrap().snapshot().unwrap();
    assert_eq!(before, after, "nothing written, not even the good port");
}
