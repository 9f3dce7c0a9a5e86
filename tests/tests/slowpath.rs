//! The slow path: what the fast path passes up is answered (or recorded) by
//! the daemon, with the same reply builder.

use std::{net::Ipv4Addr, time::Duration};

use aya::maps::{Map, MapData, ProgramArray};
use dhcproto::Decodable;
use serde_json::Value;
use xdhcp::slowpath::reply::{DHCPDECLINE, DHCPINFORM, DHCPRELEASE};
use xdhcp_tests::craft::RequestFrame;
use xdhcp_tests::{
    cloud::{exchange, msg_type, Cloud},
    wait_until, yiaddr,
};

const WAIT: Duration = Duration::from_secs(3);

fn counter(c: &Cloud, name: &str) -> u64 {
    c.stats()[name]
        .as_u64()
        .unwrap_or_else(|| panic!("no counter {name}"))
}

/// Polls until `f` holds, for 4 s (the daemon flushes counters and leases
/// each second).
fn eventually(what: &str, f: impl FnMut() -> bool) {
    wait_until(what, Duration::from_secs(4), f);
}

fn lease_state(c: &Cloud, mac: [u8; 6]) -> Option<String> {
    let out = c.xdhcp(&["leases", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    let mac = xdhcp::neutron::model::format_mac(&mac);
    v.as_array()?
        .iter()
        .find(|l| l["mac"] == mac.as_str())
        .and_then(|l| l["state"].as_str().map(String::from))
}

#[test]
fn slow_path_answers_records_and_survives() {
    let mut c = Cloud::new();
    let (net, a) = c.net_with_vm(64);
    let stranger = c.vm_port(&net, 99); // never imported
    c.start(true);
    c.wait_attached(&net, Duration::from_secs(30)).unwrap();
    let (_, sock) = c.vm(&a).unwrap();
    let (_, sock_stranger) = c.vm(&stranger).unwrap();

    // The same request answered by the fast path, then (fast path unplugged
    // from the tail-call table) by the slow path: the same bytes.
    let mut d = RequestFrame::discover(a.mac);
    d.xid = [0x51, 0, 0, 1];
    let fast = exchange(&sock, &d, WAIT).unwrap_or_else(|| panic!("fast OFFER; log:\n{}", c.log()));
    let fast_offers = counter(&c, "fast_offers");
    let mut jump = ProgramArray::try_from(Map::ProgramArray(
        MapData::from_pin(c.bpffs.join("JUMP")).unwrap(),
    ))
    .unwrap();
    jump.clear_index(&0).unwrap();
    let slow = exchange(&sock, &d, WAIT).unwrap_or_else(|| panic!("slow OFFER; log:\n{}", c.log()));
    assert_eq!(
        counter(&c, "fast_offers"),
        fast_offers,
        "the second OFFER did not come from XDP"
    );
    assert_eq!(slow, fast, "slow-path OFFER differs from the fast path's");
    let mut r = RequestFrame::request(a.mac, a.ip, net.server_ip);
    r.xid = [0x51, 0, 0, 2];
    let ack = exchange(&sock, &r, WAIT).expect("slow ACK");
    assert_eq!((msg_type(&ack), yiaddr(&ack)), (Some(5), a.ip));
    eventually("slow_replies counted", || counter(&c, "slow_replies") >= 2);

    // INFORM (the fast path always passes it up): ACK without lease time or yiaddr, to ciaddr.
    let mut inform = RequestFrame::discover(a.mac)
        .with_type(DHCPINFORM)
        .unicast_from(a.ip, net.server_ip, net.dhcp_mac);
    inform.xid = [0x51, 0, 0, 3];
    let reply = exchange(&sock, &inform, WAIT).expect("an ACK to INFORM");
    assert_eq!(msg_type(&reply), Some(5));
    assert_eq!(yiaddr(&reply), Ipv4Addr::UNSPECIFIED, "INFORM: yiaddr 0");
    assert_eq!(&reply[30..34], &a.ip.octets(), "INFORM: sent to ciaddr");
    let msg = dhcproto::v4::Message::decode(&mut dhcproto::Decoder::new(&reply[42..])).unwrap();
    assert!(
        msg.opts()
            .get(dhcproto::v4::OptionCode::AddressLeaseTime)
            .is_none(),
        "INFORM: no option 51"
    );
    assert!(
        msg.opts()
            .get(dhcproto::v4::OptionCode::SubnetMask)
            .is_some(),
        "INFORM: configuration options"
    );

    // Unknown client: no reply, counted.
    let before = counter(&c, "slow_unknown_clients");
    let mut u = RequestFrame::discover(stranger.mac);
    u.xid = [0x51, 0, 0, 4];
    assert!(
        exchange(&sock_stranger, &u, Duration::from_millis(500)).is_none(),
        "no reply to a stranger"
    );
    eventually("slow_unknown_clients counted", || {
        counter(&c, "slow_unknown_clients") > before
    });

    // Junk to port 67 does not stop the daemon.
    let good = RequestFrame::discover(a.mac).bytes();
    for cut in [43, 100, 250, 282] {
        sock.send(&good[..cut]).unwrap();
    }
    let mut junk = good.clone();
    for b in junk[42..].iter_mut() {
        *b = 0xff;
    }
    sock.send(&junk).unwrap();
    let mut again = RequestFrame::discover(a.mac);
    again.xid = [0x51, 0, 0, 5];
    assert!(
        exchange(&sock, &again, WAIT).is_some(),
        "still answering after junk; log:\n{}",
        c.log()
    );

    // DECLINE: recorded, with a warning naming the port and the address.
    let mut decline = RequestFrame::discover(a.mac)
        .with_type(DHCPDECLINE)
        .with_option(50, &a.ip.octets())
        .with_option(54, &net.server_ip.octets());
    decline.xid = [0x51, 0, 0, 6];
    sock.send(&decline.bytes()).unwrap();
    eventually("DECLINE recorded", || {
        lease_state(&c, a.mac).as_deref() == Some("declined")
    });
    let log = c.log();
    assert!(
        log.contains("DHCPDECLINE") && log.contains(&a.id) && log.contains(&a.ip.to_string()),
        "warning names port and IP:\n{log}"
    );

    // RELEASE: recorded.
    let mut release = RequestFrame::discover(a.mac)
        .with_type(DHCPRELEASE)
        .with_option(54, &net.server_ip.octets())
        .unicast_from(a.ip, net.server_ip, net.dhcp_mac);
    release.xid = [0x51, 0, 0, 7];
    sock.send(&release.bytes()).unwrap();
    eventually("RELEASE recorded", || {
        lease_state(&c, a.mac).as_deref() == Some("released")
    });
}
