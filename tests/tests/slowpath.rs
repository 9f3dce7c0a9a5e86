//! The slow path: what the fast path passes up is answered (or recorded) by
//! the daemon, with the same reply builder.

use std::{net::Ipv4Addr, time::Duration};

use aya::maps::{Map, MapData, ProgramArray};
use dhcproto::Decodable;
use serde_json::Value;
use xdhcp::slowpath::{
    dhcp_payload,
    reply::{Request, DHCPDECLINE, DHCPINFORM, DHCPRELEASE},
};
use xdhcp_tests::craft::{Lies, RequestFrame};
use xdhcp_tests::{
    cloud::{exchange, msg_type, Cloud},
    fixtures::{self, Expect, AGENT_INFO, CLIENT_ID},
    wait_until, yiaddr, CLIENT_IP,
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

    // RFC 3396: option 61 in two pieces goes up and is answered, joined.
    let mut split = RequestFrame::discover(a.mac)
        .with_option(61, &CLIENT_ID[..4])
        .with_option(61, &CLIENT_ID[4..]);
    split.xid = [0x51, 0, 0, 8];
    let offer = exchange(&sock, &split, WAIT)
        .unwrap_or_else(|| panic!("an OFFER to a split option 61; log:\n{}", c.log()));
    let msg = dhcproto::v4::Message::decode(&mut dhcproto::Decoder::new(&offer[42..])).unwrap();
    assert_eq!(
        msg.opts().get(dhcproto::v4::OptionCode::ClientIdentifier),
        Some(&dhcproto::v4::DhcpOption::ClientIdentifier(
            CLIENT_ID.to_vec()
        )),
        "61 echoed joined"
    );

    // What the validation rule refuses gets no reply from either path: a bad
    // UDP checksum, and a genuinely fragmented request (fragments are dropped).
    let mut bad = RequestFrame::discover(a.mac);
    bad.xid = [0x51, 0, 0, 9];
    bad.lies.udp_checksum = Some(0x1234);
    assert!(
        exchange(&sock, &bad, Duration::from_millis(500)).is_none(),
        "a reply to a bad UDP checksum"
    );
    let mut frag = RequestFrame::discover(a.mac);
    frag.xid = [0x51, 0, 0, 10];
    for f in frag.fragments(256) {
        sock.send(&f).unwrap();
    }
    assert!(
        sock.recv_matching(Duration::from_millis(500), |f| {
            xdhcp_tests::is_dhcp_reply(f, frag.xid)
        })
        .is_none(),
        "a reply to a fragmented request"
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

/// The fixture rows the fast path refuses by the validation rule
/// (`dhcp_ebpf::validate`): the slow path refuses every one of them too.
const REFUSED_ROWS: [&str; 9] = [
    "IPv4 header checksum wrong → up",
    "UDP checksum wrong → up",
    "IPv4 total length past the frame → up",
    "IP version 6 under the IPv4 ethertype → up",
    "an IPv4 fragment (more fragments set) → up",
    "an IPv4 fragment (offset set) → up",
    "three VLAN tags → up",
    "UDP length past the IPv4 payload → up",
    "DISCOVER → OFFER, unicast to yiaddr at chaddr",
];

#[test]
fn the_slow_path_refuses_what_the_fast_path_refuses() {
    for name in REFUSED_ROWS {
        let row = fixtures::find(name).unwrap();
        let read = dhcp_payload(&row.bytes()).is_some();
        let answered = matches!(row.expect, Expect::Tx(_));
        assert_eq!(read, answered, "[{name}] the slow path reads the frame");
    }
    // A genuinely fragmented request: neither fragment is read (fragments are
    // dropped, docs/fastpath.md), even the first, which holds the whole BOOTP
    // header and claims the whole UDP length.
    for (i, f) in fixtures::discover().fragments(256).iter().enumerate() {
        assert!(dhcp_payload(f).is_none(), "fragment {i} is read");
    }
    // Rows the fast path answers are all read, and with a zero UDP checksum too.
    let zero = fixtures::lying(
        fixtures::discover(),
        Lies {
            udp_checksum: Some(0),
            ..Lies::default()
        },
    );
    assert!(dhcp_payload(&zero.bytes()).is_some(), "zero UDP checksum");
    for row in fixtures::rows() {
        if matches!(row.expect, Expect::Tx(_)) {
            assert!(dhcp_payload(&row.bytes()).is_some(), "[{}] read", row.name);
        }
    }
}

/// RFC 3396 §7: the instances of an option are joined, in order, before use.
#[test]
fn split_options_are_joined() {
    let split = |code: u8, value: &[u8], at: usize| {
        fixtures::discover()
            .with_option(code, &value[..at])
            .with_option(code, &value[at..])
    };
    let tlv = |code: u8, value: &[u8]| [&[code, value.len() as u8][..], value].concat();
    let long: Vec<u8> = (0..=255u8).chain(0..44).collect(); // 300 bytes
    /// The field a case looks at.
    type Field = fn(&Request) -> Option<Vec<u8>>;
    let cases: [(&str, RequestFrame, Field, Vec<u8>); 5] = [
        (
            "61 in two pieces",
            split(61, &CLIENT_ID, 4),
            |r| r.client_id.clone(),
            tlv(61, &CLIENT_ID),
        ),
        (
            "82 in two pieces",
            split(82, &AGENT_INFO, 6),
            |r| r.relay_agent.clone(),
            tlv(82, &AGENT_INFO),
        ),
        (
            "50 in two pieces",
            split(50, &CLIENT_IP.octets(), 2),
            |r| r.requested_ip.map(|ip| ip.octets().to_vec()),
            CLIENT_IP.octets().to_vec(),
        ),
        (
            "61 longer than 255 bytes: echoed in 255-byte pieces",
            split(61, &long, 200),
            |r| r.client_id.clone(),
            [tlv(61, &long[..255]), tlv(61, &long[255..])].concat(),
        ),
        (
            "61 in three pieces, one empty",
            fixtures::discover()
                .with_option(61, &CLIENT_ID[..1])
                .with_option(61, &[])
                .with_option(61, &CLIENT_ID[1..]),
            |r| r.client_id.clone(),
            tlv(61, &CLIENT_ID),
        ),
    ];
    for (what, frame, field, want) in cases {
        let req = Request::parse(&frame.bootp()).unwrap_or_else(|e| panic!("{what}: {e:#}"));
        assert_eq!(field(&req), Some(want), "{what}");
    }
    let refused = [
        (
            "53 in two instances is two bytes long",
            fixtures::discover().with_option(53, &[1]),
        ),
        (
            "50 of 4 + 4 bytes is eight bytes long",
            fixtures::discover()
                .with_option(50, &CLIENT_IP.octets())
                .with_option(50, &CLIENT_IP.octets()),
        ),
    ];
    for (what, frame) in refused {
        assert!(Request::parse(&frame.bootp()).is_err(), "{what}");
    }
}
