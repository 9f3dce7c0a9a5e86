//! The XDP fast path as a specification: a table of {description, input frame,
//! maps, expected verdict, expected reply}, run through BPF_PROG_TEST_RUN.
//!
//! Every reply is checked three ways: byte for byte against the userspace reply
//! builder (the oracle), decoded by dhcproto (an independent decoder) and held
//! field by field to RFC 2131 / 6842 / 3046, and its IPv4 and UDP checksums verified.

use std::net::Ipv4Addr;

use dhcp_ebpf::{stat, verdict};
use dhcproto::{
    v4::{DhcpOption, Flags, Message, MessageType, Opcode, OptionCode},
    Decodable, Decoder,
};
use xdhcp::slowpath::reply::{self, checksum, Request};
use xdhcp_tests::craft::RequestFrame;
use xdhcp_tests::{
    verdict_name, Client, Harness, CLIENT_IP, CLIENT_MAC, SERVER_IP, SERVER_MAC, STRANGER_MAC,
};

const NET: u32 = 1;
/// A network whose relayed requests the fast path may answer.
const RELAY_NET: u32 = 2;
/// A network that answers only the relays listed in RELAYS (RELAY_IP).
const LISTED_NET: u32 = 3;
const RELAY_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x99];
const RELAY_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 1);
const OTHER_SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 3);
const WRONG_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 99);
/// A client whose reply is large: 20 classless routes and 10 extra options.
const BIG_MAC: [u8; 6] = [0xfa, 0x16, 0x3e, 0x00, 0xb1, 0x90];
const BIG_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 6);

fn big_client() -> Client {
    Client::big(BIG_MAC, BIG_IP)
}

fn harness() -> Harness {
    let mut h = Harness::new().expect("loading the fast path");
    h.add_net(NET, SERVER_MAC, false).unwrap();
    h.add_net(RELAY_NET, SERVER_MAC, true).unwrap();
    h.add_net_flags(
        LISTED_NET,
        SERVER_MAC,
        dhcp_ebpf::NET_RELAY_OK | dhcp_ebpf::NET_RELAY_LISTED,
    )
    .unwrap();
    h.maps
        .relays
        .insert(u32::from_ne_bytes(RELAY_IP.octets()), 1, 0)
        .unwrap();
    for net in [NET, RELAY_NET, LISTED_NET] {
        h.add_client(net, &Client::typical(CLIENT_MAC, CLIENT_IP))
            .unwrap();
        h.add_client(net, &big_client()).unwrap();
    }
    h
}

fn discover() -> RequestFrame {
    RequestFrame::discover(CLIENT_MAC)
}

fn selecting(server: Ipv4Addr, ip: Ipv4Addr) -> RequestFrame {
    RequestFrame::request(CLIENT_MAC, ip, server)
}

fn init_reboot(ip: Ipv4Addr) -> RequestFrame {
    selecting(SERVER_IP, ip).without_option(54)
}

/// RENEWING: unicast to the server from the client's address.
fn renewing(ciaddr: Ipv4Addr) -> RequestFrame {
    let mut f = selecting(SERVER_IP, CLIENT_IP)
        .without_option(54)
        .without_option(50);
    f.ciaddr = ciaddr;
    f.ip_src = ciaddr;
    f.ip_dst = SERVER_IP;
    f.eth_dst = SERVER_MAC;
    f
}

/// REBINDING: like RENEWING, but broadcast.
fn rebinding(ciaddr: Ipv4Addr) -> RequestFrame {
    let mut f = renewing(ciaddr);
    f.ip_dst = Ipv4Addr::BROADCAST;
    f.eth_dst = [0xff; 6];
    f
}

fn relayed(mut f: RequestFrame) -> RequestFrame {
    f.giaddr = RELAY_IP;
    f.hops = 1;
    f.eth_src = RELAY_MAC;
    f.ip_src = RELAY_IP;
    f.ip_dst = SERVER_IP;
    f.udp_src = 67;
    f
}

fn broadcast_flag(mut f: RequestFrame) -> RequestFrame {
    f.flags = 0x8000;
    f
}

/// What a case expects.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    /// XDP_TX with this message type.
    Reply(MessageType),
    /// XDP_PASS, counted under this reason.
    Pass(u32),
}

struct Case {
    what: &'static str,
    net: u32,
    frame: RequestFrame,
    expect: Expect,
}

fn case(what: &'static str, frame: RequestFrame, expect: Expect) -> Case {
    Case {
        what,
        net: NET,
        frame,
        expect,
    }
}

fn cases() -> Vec<Case> {
    use Expect::{Pass, Reply};
    let mut big_with_57 = RequestFrame::discover(BIG_MAC).with_option(57, &1500u16.to_be_bytes());
    big_with_57.xid = [9, 9, 9, 9];
    let mut spoofed = discover();
    spoofed.eth_src = STRANGER_MAC;
    let mut vlan = discover();
    vlan.vlans = vec![100];
    let mut qinq = discover();
    qinq.vlans = vec![200, 100];
    let mut ip_options = discover();
    ip_options.ip_options = vec![0x94, 0x04, 0x00, 0x00]; // router alert
    let mut relayed_82 =
        relayed(discover()).with_option(82, &[1, 4, b'e', b't', b'h', b'0', 2, 2, 0xab, 0xcd]);
    relayed_82.xid = [1, 2, 3, 4];
    let relay_case = |what, frame, expect| Case {
        what,
        net: RELAY_NET,
        frame,
        expect,
    };
    let listed_case = |what, frame, expect| Case {
        what,
        net: LISTED_NET,
        frame,
        expect,
    };
    let mut from_a_vm = relayed(discover());
    from_a_vm.eth_src = BIG_MAC;
    let mut unlisted = relayed(discover());
    unlisted.giaddr = Ipv4Addr::new(192, 168, 50, 7);
    unlisted.ip_src = unlisted.giaddr;
    vec![
        case(
            "DISCOVER → OFFER, unicast to yiaddr at chaddr",
            discover(),
            Reply(MessageType::Offer),
        ),
        case(
            "DISCOVER with the broadcast flag → broadcast OFFER",
            broadcast_flag(discover()),
            Reply(MessageType::Offer),
        ),
        case(
            "option 61 is echoed (RFC 6842)",
            discover().with_option(61, &[1, 0xfa, 0x16, 0x3e, 0x12, 0x34, 0x56]),
            Reply(MessageType::Offer),
        ),
        case(
            "802.1Q-tagged DISCOVER is answered with the tag kept",
            vlan,
            Reply(MessageType::Offer),
        ),
        case(
            "802.1ad + 802.1Q (two tags) are kept",
            qinq,
            Reply(MessageType::Offer),
        ),
        case(
            "IPv4 options (IHL 6) are honoured; the reply has IHL 5",
            ip_options,
            Reply(MessageType::Offer),
        ),
        case(
            "SELECTING REQUEST naming us → ACK",
            selecting(SERVER_IP, CLIENT_IP),
            Reply(MessageType::Ack),
        ),
        case(
            "SELECTING REQUEST naming us for another address → NAK",
            selecting(SERVER_IP, WRONG_IP),
            Reply(MessageType::Nak),
        ),
        case(
            "SELECTING REQUEST naming another server → no reply",
            selecting(OTHER_SERVER, CLIENT_IP),
            Pass(stat::PASS_NOT_OUR_SERVER),
        ),
        case(
            "INIT-REBOOT for the client's address → ACK",
            init_reboot(CLIENT_IP),
            Reply(MessageType::Ack),
        ),
        case(
            "INIT-REBOOT for another address → NAK (broadcast)",
            init_reboot(WRONG_IP),
            Reply(MessageType::Nak),
        ),
        case(
            "RENEWING (unicast, ciaddr) → ACK unicast to ciaddr",
            renewing(CLIENT_IP),
            Reply(MessageType::Ack),
        ),
        case(
            "REBINDING (broadcast, ciaddr) → ACK unicast to ciaddr",
            rebinding(CLIENT_IP),
            Reply(MessageType::Ack),
        ),
        case(
            "RENEWING with a stale ciaddr → NAK",
            renewing(WRONG_IP),
            Reply(MessageType::Nak),
        ),
        case(
            "option 57 (1500) lets 20 routes and 10 extra options through",
            big_with_57,
            Reply(MessageType::Offer),
        ),
        case(
            "without option 57 that reply exceeds 576 bytes → up",
            RequestFrame::discover(BIG_MAC),
            Pass(stat::PASS_TOO_BIG),
        ),
        case(
            "unknown MAC → no fast-path reply",
            RequestFrame::discover(STRANGER_MAC),
            Pass(stat::PASS_UNKNOWN),
        ),
        case(
            "Ethernet source ≠ chaddr → up",
            spoofed,
            Pass(stat::PASS_SPOOFED),
        ),
        case(
            "a relayed DISCOVER on a network with relaying off goes up",
            relayed(discover()),
            Pass(stat::PASS_OTHER),
        ),
        relay_case(
            "relayed DISCOVER → OFFER unicast to giaddr:67",
            relayed(discover()),
            Reply(MessageType::Offer),
        ),
        relay_case(
            "a relayed DISCOVER sent from a port of the network (a VM is no relay) goes up",
            from_a_vm,
            Pass(stat::PASS_SPOOFED),
        ),
        listed_case(
            "relay list: a listed giaddr is answered",
            relayed(discover()),
            Reply(MessageType::Offer),
        ),
        listed_case(
            "relay list: a giaddr not listed goes up",
            unlisted,
            Pass(stat::PASS_OTHER),
        ),
        relay_case(
            "relayed DISCOVER: option 82 is echoed whole (RFC 3046)",
            relayed_82,
            Reply(MessageType::Offer),
        ),
        relay_case(
            "relayed REQUEST → ACK to giaddr",
            relayed(selecting(SERVER_IP, CLIENT_IP)),
            Reply(MessageType::Ack),
        ),
        relay_case(
            "relayed NAK goes to giaddr with the broadcast bit set",
            relayed(init_reboot(WRONG_IP)),
            Reply(MessageType::Nak),
        ),
        case(
            "RELEASE goes to the slow path",
            discover().with_type(7),
            Pass(stat::PASS_OTHER),
        ),
        case(
            "DECLINE goes to the slow path",
            discover().with_type(4),
            Pass(stat::PASS_OTHER),
        ),
        case(
            "INFORM goes to the slow path",
            discover().with_type(8),
            Pass(stat::PASS_OTHER),
        ),
    ]
}

/// Checks a fast-path reply against the oracle, dhcproto and the RFCs.
fn check_reply(what: &str, input: &RequestFrame, client: &Client, out: &[u8], want: MessageType) {
    let req = Request::parse(&input.bootp())
        .unwrap_or_else(|e| panic!("{what}: the request does not parse: {e}"));
    let blob = client.blob();
    let view = client.view(&blob);
    let reply_type = u8::from(want);
    let l2 = &input.bytes()[..input.l2_len()];
    let oracle = reply::frame(l2, SERVER_MAC, &req, &view, reply_type);
    assert_eq!(
        hex(out),
        hex(&oracle),
        "{what}: reply differs from the userspace reply builder"
    );

    // Layer 2 and 3, by hand.
    let l2_len = input.l2_len();
    assert_eq!(
        &out[6..12],
        &SERVER_MAC,
        "{what}: Ethernet source is the DHCP port"
    );
    assert_eq!(
        &out[12..l2_len],
        &l2[12..],
        "{what}: VLAN tags and ethertype kept"
    );
    let ip = &out[l2_len..l2_len + 20];
    assert_eq!(ip[0], 0x45, "{what}: IPv4, IHL 5");
    assert_eq!(checksum(&[ip]), 0, "{what}: IPv4 header checksum");
    assert_eq!(
        u16::from_be_bytes([ip[2], ip[3]]) as usize,
        out.len() - l2_len,
        "{what}: IP total length"
    );
    assert_eq!(
        &ip[12..16],
        &SERVER_IP.octets(),
        "{what}: IP source is the server identifier"
    );
    let udp = &out[l2_len + 20..];
    let udp_len = u16::from_be_bytes([udp[4], udp[5]]);
    assert_eq!(udp_len as usize, udp.len(), "{what}: UDP length");
    let pseudo = [&ip[12..20], &[0, 17], &udp_len.to_be_bytes()].concat();
    assert_eq!(checksum(&[&pseudo, udp]), 0, "{what}: UDP checksum");
    assert_eq!(
        u16::from_be_bytes([udp[0], udp[1]]),
        67,
        "{what}: from port 67"
    );

    // RFC 2131 §4.1 addressing.
    let dst_ip = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    let dst_port = u16::from_be_bytes([udp[2], udp[3]]);
    let dst_mac: [u8; 6] = out[0..6].try_into().unwrap();
    let bcast = [0xff; 6];
    let (want_ip, want_mac, want_port) = if !input.giaddr.is_unspecified() {
        (input.giaddr, input.eth_src, 67)
    } else if want == MessageType::Nak
        || (input.ciaddr.is_unspecified() && input.flags & 0x8000 != 0)
    {
        (Ipv4Addr::BROADCAST, bcast, 68)
    } else if !input.ciaddr.is_unspecified() {
        (input.ciaddr, input.eth_src, 68)
    } else {
        (client.ip, input.chaddr, 68)
    };
    assert_eq!(
        (dst_ip, dst_mac, dst_port),
        (want_ip, want_mac, want_port),
        "{what}: destination (§4.1)"
    );

    // The DHCP message, through dhcproto.
    let payload = &udp[8..];
    assert!(
        payload.len() >= 300,
        "{what}: BOOTP message at least 300 bytes"
    );
    let msg = Message::decode(&mut Decoder::new(payload))
        .unwrap_or_else(|e| panic!("{what}: dhcproto: {e}"));
    assert_eq!(msg.opcode(), Opcode::BootReply, "{what}: op");
    assert_eq!(msg.hops(), 0, "{what}: hops");
    assert_eq!(msg.secs(), 0, "{what}: secs");
    assert_eq!(msg.xid(), u32::from_be_bytes(input.xid), "{what}: xid");
    assert_eq!(&msg.chaddr()[..6], &input.chaddr, "{what}: chaddr");
    assert_eq!(msg.giaddr(), input.giaddr, "{what}: giaddr");
    let nak = want == MessageType::Nak;
    let want_flags = if nak && !input.giaddr.is_unspecified() {
        input.flags | 0x8000
    } else {
        input.flags
    };
    assert_eq!(msg.flags(), Flags::new(want_flags), "{what}: flags");
    assert_eq!(
        msg.yiaddr(),
        if nak {
            Ipv4Addr::UNSPECIFIED
        } else {
            client.ip
        },
        "{what}: yiaddr"
    );
    let want_ciaddr = if want == MessageType::Ack {
        input.ciaddr
    } else {
        Ipv4Addr::UNSPECIFIED
    };
    assert_eq!(msg.ciaddr(), want_ciaddr, "{what}: ciaddr");
    let opts = msg.opts();
    assert_eq!(opts.msg_type(), Some(want), "{what}: option 53");
    assert_eq!(
        opts.get(OptionCode::ServerIdentifier),
        Some(&DhcpOption::ServerIdentifier(SERVER_IP)),
        "{what}: 54"
    );
    for never in [
        OptionCode::RequestedIpAddress,
        OptionCode::ParameterRequestList,
        OptionCode::MaxMessageSize,
    ] {
        assert!(
            opts.get(never).is_none(),
            "{what}: option {never:?} must not be echoed"
        );
    }
    if nak {
        assert!(
            opts.get(OptionCode::AddressLeaseTime).is_none(),
            "{what}: no lease time in a NAK"
        );
    } else {
        assert_eq!(
            opts.get(OptionCode::AddressLeaseTime),
            Some(&DhcpOption::AddressLeaseTime(client.lease_secs)),
            "{what}: option 51"
        );
        let want_mask = Ipv4Addr::from(u32::MAX << (32 - client.options.prefix_len));
        assert_eq!(
            opts.get(OptionCode::SubnetMask),
            Some(&DhcpOption::SubnetMask(want_mask)),
            "{what}: 1"
        );
        assert_eq!(
            opts.get(OptionCode::Hostname),
            Some(&DhcpOption::Hostname(
                String::from_utf8(client.hostname.clone()).unwrap()
            )),
            "{what}: 12"
        );
        assert!(
            opts.get(OptionCode::ClasslessStaticRoute).is_some(),
            "{what}: 121"
        );
    }
    // Echoes: 61 and 82 exactly as sent, or absent.
    for code in [61u8, 82] {
        let sent = input
            .options
            .iter()
            .find(|(c, _)| *c == code)
            .map(|(_, v)| v.clone());
        assert_eq!(
            raw_option(payload, code),
            sent,
            "{what}: option {code} echo"
        );
    }
}

/// The value of the first option `code` in a BOOTP payload, walked by hand.
fn raw_option(p: &[u8], code: u8) -> Option<Vec<u8>> {
    let mut off = 240;
    while off < p.len() {
        match p[off] {
            255 => return None,
            0 => off += 1,
            c => {
                let len = p[off + 1] as usize;
                if c == code {
                    return Some(p[off + 2..off + 2 + len].to_vec());
                }
                off += 2 + len;
            }
        }
    }
    None
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn fixture_table() {
    let mut h = harness();
    for c in cases() {
        let input = c.frame.bytes();
        let before = h.counters().unwrap();
        let run = h.run(c.net, &input).unwrap();
        let after = h.counters().unwrap();
        match c.expect {
            Expect::Reply(t) => {
                assert_eq!(verdict_name(run.verdict), "XDP_TX", "{}", c.what);
                let client = if c.frame.chaddr == BIG_MAC {
                    big_client()
                } else {
                    Client::typical(CLIENT_MAC, CLIENT_IP)
                };
                check_reply(c.what, &c.frame, &client, &run.frame, t);
                let counter = match t {
                    MessageType::Offer => stat::OFFERS,
                    MessageType::Ack => stat::ACKS,
                    _ => stat::NAKS,
                };
                assert_eq!(
                    after[counter as usize],
                    before[counter as usize] + 1,
                    "{}: counter",
                    c.what
                );
            }
            Expect::Pass(reason) => {
                assert_eq!(verdict_name(run.verdict), "XDP_PASS", "{}", c.what);
                assert_eq!(
                    &run.frame, &input,
                    "{}: a passed frame is left as it came",
                    c.what
                );
                assert_eq!(
                    after[reason as usize],
                    before[reason as usize] + 1,
                    "{}: counted as {}",
                    c.what,
                    stat::NAMES[reason as usize]
                );
            }
        }
    }
}

#[test]
fn ack_is_recorded_for_the_daemon() {
    let mut h = harness();
    let run = h
        .run(NET, &selecting(SERVER_IP, CLIENT_IP).bytes())
        .unwrap();
    assert_eq!(run.verdict, verdict::TX);
    let key = dhcp_ebpf::ClientKey::new(NET, CLIENT_MAC);
    let rec = h
        .maps
        .acks
        .get(&key, 0)
        .expect("an ACK record for the client");
    assert_eq!(Ipv4Addr::from(rec.ip), CLIENT_IP);
    assert_eq!(
        rec.expires_ns - rec.acked_ns,
        86400 * 1_000_000_000,
        "expiry = ACK time + lease"
    );
    // An OFFER is no lease.
    let other = dhcp_ebpf::ClientKey::new(RELAY_NET, CLIENT_MAC);
    h.run(RELAY_NET, &discover().bytes()).unwrap();
    assert!(
        h.maps.acks.get(&other, 0).is_err(),
        "an OFFER must not be recorded as a lease"
    );
}

/// Malformed input: never a reply, never XDP_ABORTED.
#[test]
fn malformed_input_is_passed_up() {
    let mut h = harness();
    let good = discover().bytes();
    let bootp = discover().bootp_offset();
    let ip = 14;
    let udp = ip + 20;
    let opts = bootp + 240;
    let set = |f: &mut Vec<u8>, off: usize, bytes: &[u8]| {
        f[off..off + bytes.len()].copy_from_slice(bytes)
    };
    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
    let mut f = good.clone();
    set(&mut f, bootp + 2, &[7]);
    cases.push(("hlen ≠ 6", f));
    let mut f = good.clone();
    set(&mut f, bootp + 1, &[6]);
    cases.push(("htype ≠ 1 (IEEE 802)", f));
    let mut f = good.clone();
    set(&mut f, bootp + 236, &[0, 0, 0, 0]);
    cases.push(("no magic cookie", f));
    let mut f = good.clone();
    let total = u16::from_be_bytes([f[ip + 2], f[ip + 3]]) + 40;
    set(&mut f, ip + 2, &total.to_be_bytes());
    cases.push(("IP total length longer than the frame", f));
    let mut f = good.clone();
    let udp_len = u16::from_be_bytes([f[udp + 4], f[udp + 5]]) + 8;
    set(&mut f, udp + 4, &udp_len.to_be_bytes());
    cases.push(("UDP length longer than the IP payload", f));
    let mut f = good.clone();
    set(&mut f, udp + 4, &100u16.to_be_bytes());
    cases.push(("UDP length shorter than a BOOTP message", f));
    let mut lying = discover();
    lying.options.push((12, vec![b'x'; 20]));
    lying.end = false;
    lying.pad_to = 0;
    let mut f = lying.bytes();
    let n = f.len();
    f[n - 21] = 200; // option 12 claims 200 bytes; 20 follow
    cases.push(("an option length running past the end", f));
    let mut no_end = discover();
    no_end.end = false;
    no_end.pad_to = 0;
    cases.push(("options without END", no_end.bytes()));
    cases.push(("option 53 missing", discover().without_option(53).bytes()));
    cases.push((
        "option 53 repeated",
        discover().with_option(53, &[1]).bytes(),
    ));
    cases.push((
        "option overload (52)",
        discover().with_option(52, &[3]).bytes(),
    ));
    cases.push((
        "zero-length option 53",
        discover().without_option(53).with_option(53, &[]).bytes(),
    ));
    cases.push((
        "zero-length option 50",
        selecting(SERVER_IP, CLIENT_IP)
            .without_option(50)
            .with_option(50, &[])
            .bytes(),
    ));
    cases.push((
        "zero-length option 61",
        discover().with_option(61, &[]).bytes(),
    ));
    let mut f = good.clone();
    for b in &mut f[opts..opts + 11] {
        *b = 0; // options 53 and 55 become PAD; END stays
    }
    cases.push(("only PAD before END: no option 53", f));
    let mut big = discover();
    big.pad_to = 1900;
    cases.push(("oversized frame (1900-byte BOOTP)", big.bytes()));
    let mut frag = discover().bytes();
    set(&mut frag, ip + 6, &[0x20, 0x00]);
    cases.push(("IP fragment (more fragments)", frag));
    let mut v6ish = good.clone();
    set(&mut v6ish, ip, &[0x65]);
    cases.push(("IP version 6 in an IPv4 ethertype", v6ish));

    for (what, frame) in &cases {
        let run = h.run(NET, frame).unwrap();
        assert_eq!(verdict_name(run.verdict), "XDP_PASS", "{what}");
        assert_eq!(
            &run.frame, frame,
            "{what}: the frame is passed up unchanged"
        );
    }
    let c = h.counters().unwrap();
    assert_eq!(
        c[stat::OFFERS as usize] + c[stat::ACKS as usize] + c[stat::NAKS as usize],
        0
    );
}

/// Every truncation of a valid DISCOVER and REQUEST (BPF_PROG_TEST_RUN takes
/// no frame shorter than an Ethernet header).
#[test]
fn every_truncation_is_passed_up() {
    let mut h = harness();
    for (what, frame) in [
        ("DISCOVER", discover().bytes()),
        ("REQUEST", selecting(SERVER_IP, CLIENT_IP).bytes()),
    ] {
        let full = h.run(NET, &frame).unwrap();
        assert_eq!(full.verdict, verdict::TX, "the whole {what} is answered");
        for len in 14..frame.len() {
            let run = h.run(NET, &frame[..len]).unwrap();
            assert_eq!(
                verdict_name(run.verdict),
                "XDP_PASS",
                "{what} truncated to {len} bytes"
            );
            assert_eq!(
                run.frame,
                frame[..len],
                "{what} truncated to {len}: unchanged"
            );
        }
    }
}

/// The verifier's cost is held under a limit, so a change that makes loading
/// slow (or close to the kernel's 1M limit) fails here.
#[test]
fn verifier_instruction_count_stays_under_limit() {
    const FAST_LIMIT: u32 = 450_000;
    const ENTRY_LIMIT: u32 = 100;
    let mut h = harness();
    let fast = xdhcp::loader::verified_insns(h.fast.program().unwrap()).unwrap();
    let entry = xdhcp::loader::verified_insns(h.entry(NET).unwrap()).unwrap();
    println!("verifier: xdhcp_fast {fast} instructions processed, xdhcp (entry) {entry}");
    assert!(
        fast < FAST_LIMIT,
        "xdhcp_fast took {fast} verifier instructions (limit {FAST_LIMIT})"
    );
    assert!(
        entry < ENTRY_LIMIT,
        "xdhcp took {entry} verifier instructions (limit {ENTRY_LIMIT})"
    );
}
