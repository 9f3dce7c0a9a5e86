//! Fuzz target: a frame the fast path passed up, through the slow path's
//! parsers (`dhcp_payload`, `Request::parse`) and, when it parses,
//! the one reply builder for two fixed leases (a typical port, a large reply).
//! Beyond "no panic" it holds every reply to what must be true of any reply:
//! Ethernet, IPv4 and UDP headers right with valid checksums, a BOOTP body of
//! the exact length its parts make, that dhcproto decodes as the reply asked
//! for, with options 53 and 54 once and 50, 55, 57 never echoed.

#![no_main]

use std::net::Ipv4Addr;

use dhcp_ebpf::{
    csum,
    wire::{self, bootp, ipv4, opt, udp},
};
use dhcproto::{v4, Decodable, Decoder};
use libfuzzer_sys::fuzz_target;
use xdhcp::{
    plan::options::{ReplyOptions, Route},
    slowpath::{
        dhcp_payload,
        reply::{self, Decision, LeaseView, Request},
    },
};

const SERVER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

/// The two leases every parsed request is answered from: (hostname, blob).
fn leases() -> &'static [(Ipv4Addr, Vec<u8>, Vec<u8>); 2] {
    static LEASES: std::sync::OnceLock<[(Ipv4Addr, Vec<u8>, Vec<u8>); 2]> =
        std::sync::OnceLock::new();
    LEASES.get_or_init(|| {
        let typical = ReplyOptions {
            lease_secs: 86400,
            prefix_len: 24,
            router: Some(Ipv4Addr::new(10, 0, 0, 1)),
            dns: vec![Ipv4Addr::new(10, 0, 0, 2)],
            domain: Some("openstacklocal".into()),
            mtu: Some(1450),
            broadcast: Some(Ipv4Addr::new(10, 0, 0, 255)),
            routes: vec![Route {
                dest: Ipv4Addr::new(169, 254, 169, 254),
                prefix: 32,
                via: SERVER_IP,
            }],
            extra: Vec::new(),
        };
        let mut big = typical.clone();
        big.routes = (0..20)
            .map(|i| Route {
                dest: Ipv4Addr::new(172, 16, i, 0),
                prefix: 24,
                via: Ipv4Addr::new(10, 0, 0, 1),
            })
            .collect();
        big.extra = (0..10)
            .map(|i| (224 + i as u8, format!("extra-option-{i}").into_bytes()))
            .collect();
        [
            (
                Ipv4Addr::new(10, 0, 0, 5),
                b"host-10-0-0-5".to_vec(),
                typical.encode().expect("the typical options encode"),
            ),
            (
                Ipv4Addr::new(10, 0, 0, 6),
                b"host-10-0-0-6".to_vec(),
                big.encode().expect("the big options encode"),
            ),
        ]
    })
}

fuzz_target!(|frame: &[u8]| {
    let Some((l2_len, payload)) = dhcp_payload(frame) else {
        return;
    };
    assert!(
        (wire::ETH_HLEN..=frame.len()).contains(&l2_len),
        "L2 header of {l2_len} bytes in a {}-byte frame",
        frame.len()
    );
    // The worker's steps: the strict parser, then option 55 for trimming.
    // (It once decoded requests with dhcproto first, which panics on some
    // malformed options: tests/fuzz/regressions holds such a frame.)
    let Ok(req) = Request::parse(payload) else {
        return;
    };
    assert_ne!(req.msg_type, 0, "a parsed request has a message type");
    let asked = &req.parameters;
    assert!(
        asked.len() < payload.len(),
        "option 55 lies inside the payload"
    );
    let l2 = &frame[..l2_len];
    for (ip, hostname, blob) in leases() {
        let view = LeaseView {
            ip: *ip,
            server_ip: SERVER_IP,
            siaddr: Ipv4Addr::UNSPECIFIED,
            hostname,
            blob,
        };
        match req.msg_type {
            reply::DHCPDISCOVER | reply::DHCPREQUEST => {
                let Decision::Reply(t) = reply::decide(&req, &view) else {
                    continue;
                };
                let out = reply::frame(l2, SERVER_MAC, &req, &view, t);
                check(&out, frame, l2_len, &req, &view, t, false);
                // The smallest reply, every option of the blob trimmed, is
                // what the slow path falls back to for a small client.
                let codes: Vec<u8> = reply::tlvs(blob).iter().map(|(c, _)| *c).collect();
                let bare = reply::without(blob, &codes);
                assert!(bare.is_empty(), "trimming every option leaves {bare:?}");
            }
            reply::DHCPINFORM => {
                let body = reply::inform_payload(&req, &view);
                let dst = reply::destination(&req, view.ip, reply::DHCPACK);
                let out = reply::wrap(l2, SERVER_MAC, view.server_ip, dst, &body);
                check(&out, frame, l2_len, &req, &view, reply::DHCPACK, true);
            }
            _ => {}
        }
    }
});

/// Everything that holds for reply `t` to `req` on any input.
fn check(
    out: &[u8],
    request: &[u8],
    l2_len: usize,
    req: &Request,
    view: &LeaseView,
    t: u8,
    inform: bool,
) {
    let dst = reply::destination(req, view.ip, t);
    // Ethernet: new addresses, the request's VLAN tags and EtherType kept.
    let eth_src: [u8; 6] = request[wire::ETH_SRC..wire::ETH_TYPE].try_into().unwrap();
    assert_eq!(out[..wire::ETH_SRC], dst.mac.unwrap_or(eth_src));
    assert_eq!(out[wire::ETH_SRC..wire::ETH_TYPE], SERVER_MAC);
    assert_eq!(out[wire::ETH_TYPE..l2_len], request[wire::ETH_TYPE..l2_len]);

    // IPv4: 20 bytes, total length, checksum, addresses.
    let ip = &out[l2_len..];
    let be16 = |b: &[u8], at: usize| u16::from_be_bytes([b[at], b[at + 1]]) as usize;
    assert_eq!(ip[ipv4::VERSION_IHL], 0x45);
    assert_eq!(be16(ip, ipv4::TOTAL_LEN), ip.len(), "IPv4 total length");
    assert_eq!(ip[ipv4::PROTOCOL], wire::IPPROTO_UDP);
    assert_eq!(
        csum::checksum(csum::add(0, &ip[..wire::IPV4_HLEN])),
        0,
        "IPv4 header checksum"
    );
    assert_eq!(ip[ipv4::SRC..ipv4::SRC + 4], view.server_ip.octets());
    assert_eq!(ip[ipv4::DST..ipv4::DST + 4], dst.ip.octets());

    // UDP: length, ports, checksum over the pseudo-header.
    let u = &ip[wire::IPV4_HLEN..];
    assert_eq!(be16(u, udp::LEN), u.len(), "UDP length");
    assert_eq!(be16(u, udp::SRC_PORT), wire::BOOTPS as usize);
    assert_eq!(be16(u, udp::DST_PORT), dst.port as usize);
    let mut pseudo = Vec::with_capacity(12);
    pseudo.extend_from_slice(&ip[ipv4::SRC..ipv4::DST + 4]);
    pseudo.extend_from_slice(&[0, wire::IPPROTO_UDP]);
    pseudo.extend_from_slice(&(u.len() as u16).to_be_bytes());
    assert_eq!(
        csum::checksum(csum::add(csum::add(0, &pseudo), u)),
        0,
        "UDP checksum"
    );

    // BOOTP: exactly the length its parts make, padded to 300 and to four.
    let body = &u[wire::UDP_HLEN..];
    let blob_len = if t == reply::DHCPNAK {
        0
    } else if inform {
        reply::without(
            view.blob,
            &[opt::LEASE_TIME, opt::RENEWAL_T1, opt::REBINDING_T2],
        )
        .len()
    } else {
        view.blob.len()
    };
    let hostname_len = if t == reply::DHCPNAK || view.hostname.is_empty() {
        0
    } else {
        2 + view.hostname.len()
    };
    let echoes = [&req.client_id, &req.relay_agent]
        .into_iter()
        .flatten()
        .map(Vec::len)
        .sum::<usize>();
    let unpadded = bootp::OPTIONS + 3 + 6 + hostname_len + blob_len + echoes + 1;
    assert_eq!(
        body.len(),
        unpadded.max(reply::MIN_BOOTP).next_multiple_of(4),
        "BOOTP length"
    );
    assert!(body[unpadded..].iter().all(|&b| b == 0), "padding is zeros");

    // The body is a DHCP reply dhcproto reads, to this request, of type t.
    let msg = v4::Message::decode(&mut Decoder::new(body))
        .unwrap_or_else(|e| panic!("dhcproto cannot decode the reply: {e}"));
    assert_eq!(msg.opcode(), v4::Opcode::BootReply);
    assert_eq!(msg.xid(), u32::from_be_bytes(req.xid));
    assert_eq!(msg.chaddr(), &req.chaddr[..6]);
    assert_eq!(msg.giaddr(), req.giaddr);
    assert_eq!(msg.hops(), 0);
    assert_eq!(msg.secs(), 0);
    assert_eq!(
        msg.opts().msg_type(),
        Some(v4::MessageType::from(t)),
        "option 53"
    );
    match msg.opts().get(v4::OptionCode::ServerIdentifier) {
        Some(v4::DhcpOption::ServerIdentifier(id)) => assert_eq!(*id, view.server_ip),
        other => panic!("option 54 is {other:?}"),
    }
    let want_yiaddr = if inform || t == reply::DHCPNAK {
        Ipv4Addr::UNSPECIFIED
    } else {
        view.ip
    };
    assert_eq!(msg.yiaddr(), want_yiaddr, "yiaddr");

    let tlvs = reply::tlvs(&body[bootp::OPTIONS..]);
    let count = |code: u8| tlvs.iter().filter(|(c, _)| *c == code).count();
    assert_eq!(count(opt::MSG_TYPE), 1, "option 53 once");
    assert_eq!(count(opt::SERVER_ID), 1, "option 54 once");
    for never in [
        opt::REQUESTED_IP,
        opt::PARAMETER_REQUEST_LIST,
        opt::MAX_MSG_SIZE,
    ] {
        assert_eq!(count(never), 0, "option {never} is never echoed");
    }
    for echo in [&req.client_id, &req.relay_agent].into_iter().flatten() {
        assert!(
            body.windows(echo.len()).any(|w| w == echo.as_slice()),
            "option {} echoed whole",
            echo[0]
        );
    }
    // A typical port's reply without echoes fits the 576 bytes every client takes.
    if echoes == 0 && view.blob.len() < 100 {
        assert!(ip.len() <= reply::max_reply_ip_len(req), "fits the client");
    }
}
