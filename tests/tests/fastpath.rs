//! The XDP fast path as a specification: the fixture table of
//! `xdhcp_tests::fixtures` (input frame, network, expected verdict and, for a
//! reply, its key fields), run through BPF_PROG_TEST_RUN.
//!
//! A reply is held first to what its row states (a mismatch names the row and
//! the field), then to what every reply must be (RFC 2131 header rules, IPv4
//! and UDP checksums, decoded by dhcproto, an independent decoder), and last
//! byte for byte to the userspace reply builder: the two paths answer alike.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use dhcp_ebpf::{stat, verdict};
use dhcproto::{
    v4::{DhcpOption, Flags, Message, MessageType, Opcode, OptionCode},
    Decodable, Decoder,
};
use xdhcp::slowpath::reply::{self, checksum, Request};
use xdhcp_tests::fixtures::{
    self, discover, selecting, Expect, Has, Reply, Row, BENCH_ROWS, NET, RELAY_NET, TPID_8021AD,
    TPID_8021Q,
};
use xdhcp_tests::{verdict_name, Harness, CLIENT_IP, CLIENT_MAC, SERVER_IP, SERVER_MAC};

fn harness() -> Harness {
    fixtures::harness().expect("loading the fast path with the fixture maps")
}

#[test]
fn fixture_table() {
    let mut h = harness();
    for row in fixtures::rows() {
        let name = row.name;
        let input = row.bytes();
        let before = h.counters().unwrap();
        let run = h.run(row.net, &input).unwrap();
        let after = h.counters().unwrap();
        // Which counters the run bumped, besides fast_received.
        let bumped: Vec<(&str, u64)> = (stat::OFFERS..stat::COUNT)
            .map(|i| {
                (
                    stat::NAMES[i as usize],
                    after[i as usize] - before[i as usize],
                )
            })
            .filter(|&(_, n)| n > 0)
            .collect();
        match &row.expect {
            Expect::Tx(want) => {
                assert_eq!(verdict_name(run.verdict), "XDP_TX", "[{name}] verdict");
                check_stated(&row, want, &run.frame);
                check_invariants(&row, want, &run.frame);
                check_oracle(&row, want, &run.frame);
                assert_eq!(
                    bumped,
                    [(stat::NAMES[want.counter() as usize], 1)],
                    "[{name}] counted as one {:?}",
                    want.msg
                );
            }
            Expect::Pass(reason) => {
                assert_eq!(verdict_name(run.verdict), "XDP_PASS", "[{name}] verdict");
                assert_eq!(
                    run.frame, input,
                    "[{name}] a passed frame is left as it came"
                );
                assert_eq!(
                    bumped,
                    [(stat::NAMES[*reason as usize], 1)],
                    "[{name}] pass reason"
                );
            }
        }
    }
}

/// Row names are unique (bench picks rows by name), and the rows bench times
/// exist, are answered, and are on the network bench attaches to.
#[test]
fn rows_are_named_once_and_bench_rows_are_answered() {
    let rows = fixtures::rows();
    let mut seen = HashSet::new();
    for r in &rows {
        assert!(seen.insert(r.name), "two rows are named {:?}", r.name);
    }
    for name in BENCH_ROWS {
        let r = fixtures::find(name).unwrap();
        assert!(
            matches!(r.expect, Expect::Tx(_)),
            "bench row {name:?} is not answered"
        );
        assert_eq!(r.net, NET, "bench row {name:?}: network");
    }
}

/// The 802.1ad row really sends an S-tag (0x88a8) over a C-tag (0x8100), and
/// the two-802.1Q row two C-tags: the rows are what their names say.
#[test]
fn vlan_rows_put_the_tpids_they_name_on_the_wire() {
    let tpids = |name: &str| {
        let f = fixtures::rows()
            .into_iter()
            .find(|r| r.name.starts_with(name))
            .unwrap_or_else(|| panic!("no row starts with {name:?}"))
            .bytes();
        [
            u16::from_be_bytes([f[12], f[13]]),
            u16::from_be_bytes([f[16], f[17]]),
            u16::from_be_bytes([f[20], f[21]]),
        ]
    };
    assert_eq!(tpids("802.1ad QinQ"), [TPID_8021AD, TPID_8021Q, 0x0800]);
    assert_eq!(
        tpids("two stacked 802.1Q"),
        [TPID_8021Q, TPID_8021Q, 0x0800]
    );
}

/// The reply's VLAN tags (TPID, VLAN id) and the length of its L2 header.
fn reply_tags(out: &[u8]) -> (Vec<(u16, u16)>, usize) {
    let mut tags = Vec::new();
    let mut off = 12;
    while off + 4 <= out.len() {
        let tpid = u16::from_be_bytes([out[off], out[off + 1]]);
        if tpid != TPID_8021Q && tpid != TPID_8021AD {
            break;
        }
        tags.push((
            tpid,
            u16::from_be_bytes([out[off + 2], out[off + 3]]) & 0x0fff,
        ));
        off += 4;
    }
    (tags, off + 2)
}

/// The reply's IPv4 header, UDP header and BOOTP message (any IHL).
fn reply_layers<'a>(name: &str, out: &'a [u8]) -> (&'a [u8], &'a [u8], &'a [u8]) {
    let (_, l2) = reply_tags(out);
    assert!(
        out.len() >= l2 + 20 + 8 + 240,
        "[{name}] reply of {} bytes is shorter than a DHCP message",
        out.len()
    );
    assert_eq!(&out[l2 - 2..l2], &[0x08, 0x00], "[{name}] ethertype IPv4");
    let ihl = usize::from(out[l2] & 0x0f) * 4;
    let ip = &out[l2..l2 + ihl];
    let udp = &out[l2 + ihl..l2 + ihl + 8];
    (ip, udp, &out[l2 + ihl + 8..])
}

fn decode(name: &str, bootp: &[u8]) -> Message {
    Message::decode(&mut Decoder::new(bootp)).unwrap_or_else(|e| panic!("[{name}] dhcproto: {e}"))
}

/// The row's stated fields, each read from the wire by hand or by dhcproto.
fn check_stated(row: &Row, want: &Reply, out: &[u8]) {
    let name = row.name;
    let (ip, udp, bootp) = reply_layers(name, out);
    let msg = decode(name, bootp);
    assert_eq!(
        msg.opts().msg_type(),
        Some(want.msg),
        "[{name}] message type (53)"
    );
    assert_eq!(msg.yiaddr(), want.yiaddr, "[{name}] yiaddr");
    assert_eq!(msg.ciaddr(), want.ciaddr, "[{name}] ciaddr");
    assert_eq!(msg.siaddr(), want.siaddr, "[{name}] siaddr");
    assert_eq!(msg.giaddr(), want.giaddr, "[{name}] giaddr");
    let flags = if want.broadcast { 0x8000 } else { 0 };
    assert_eq!(msg.flags(), Flags::new(flags), "[{name}] broadcast flag");
    assert_eq!(&out[0..6], &want.eth_dst, "[{name}] destination MAC");
    assert_eq!(
        Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]),
        want.ip_dst,
        "[{name}] destination IP"
    );
    assert_eq!(
        u16::from_be_bytes([udp[2], udp[3]]),
        want.udp_dst,
        "[{name}] destination UDP port"
    );
    let opts = raw_options(name, bootp);
    for has in &want.has {
        match has {
            Has::Opt(code, value) => {
                let found: Vec<&[u8]> = opts
                    .iter()
                    .filter(|(c, _)| c == code)
                    .map(|(_, v)| *v)
                    .collect();
                assert_eq!(found, [&value[..]], "[{name}] option {code}, once");
            }
            Has::NoOpt(code) => assert!(
                opts.iter().all(|(c, _)| c != code),
                "[{name}] option {code} must be absent"
            ),
            Has::Tags(tags) => {
                let got = reply_tags(out).0;
                assert!(
                    &got == tags,
                    "[{name}] VLAN tags (TPID, VLAN id): {got:04x?}, the row says {tags:04x?}"
                );
            }
        }
    }
}

/// What holds for every reply, whatever the row: RFC 2131's header rules and
/// table 3, the echoes of 61 and 82, the port's options, lengths and checksums.
fn check_invariants(row: &Row, want: &Reply, out: &[u8]) {
    let name = row.name;
    let input = row.bytes();
    let client = fixtures::client(row.input.chaddr)
        .unwrap_or_else(|| panic!("[{name}] answered, but chaddr is no fixture client"));
    let (ip, udp, bootp) = reply_layers(name, out);
    let (_, l2) = reply_tags(out);

    // Layer 2 and 3, by hand.
    assert_eq!(
        &out[6..12],
        &SERVER_MAC,
        "[{name}] Ethernet source is the DHCP port"
    );
    assert_eq!(
        &out[12..l2],
        &input[12..row.input.l2_len()],
        "[{name}] VLAN tags and ethertype kept"
    );
    assert_eq!(ip[0], 0x45, "[{name}] IPv4, IHL 5");
    assert_eq!(checksum(&[ip]), 0, "[{name}] IPv4 header checksum");
    let ip_len = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    assert_eq!(ip_len, out.len() - l2, "[{name}] IP total length");
    let max = row
        .input
        .options
        .iter()
        .find(|(c, _)| *c == 57)
        .map_or(576, |(_, v)| {
            usize::from(u16::from_be_bytes([v[0], v[1]])).max(576)
        });
    assert!(
        ip_len <= max,
        "[{name}] a {ip_len}-byte reply to a client that takes {max} (RFC 2131 §2, option 57)"
    );
    assert_eq!(
        &ip[12..16],
        &client.lease.server_ip.octets(),
        "[{name}] IP source is the server identifier"
    );
    let udp_len = u16::from_be_bytes([udp[4], udp[5]]);
    assert_eq!(usize::from(udp_len), bootp.len() + 8, "[{name}] UDP length");
    let pseudo = [&ip[12..20], &[0, 17], &udp_len.to_be_bytes()].concat();
    assert_eq!(checksum(&[&pseudo, udp, bootp]), 0, "[{name}] UDP checksum");
    assert_eq!(
        u16::from_be_bytes([udp[0], udp[1]]),
        67,
        "[{name}] from port 67"
    );

    // The BOOTP header, through dhcproto.
    assert!(
        bootp.len() >= 300,
        "[{name}] BOOTP message at least 300 bytes"
    );
    let msg = decode(name, bootp);
    assert_eq!(msg.opcode(), Opcode::BootReply, "[{name}] op");
    assert_eq!(msg.hops(), 0, "[{name}] hops");
    assert_eq!(msg.secs(), 0, "[{name}] secs");
    assert_eq!(msg.xid(), u32::from_be_bytes(row.input.xid), "[{name}] xid");
    assert_eq!(&msg.chaddr()[..6], &row.input.chaddr, "[{name}] chaddr");
    assert_eq!(msg.giaddr(), row.input.giaddr, "[{name}] giaddr copied");
    let opts = msg.opts();
    assert_eq!(
        opts.get(OptionCode::ServerIdentifier),
        Some(&DhcpOption::ServerIdentifier(client.lease.server_ip)),
        "[{name}] 54"
    );
    for never in [
        OptionCode::RequestedIpAddress,
        OptionCode::ParameterRequestList,
        OptionCode::MaxMessageSize,
    ] {
        assert!(
            opts.get(never).is_none(),
            "[{name}] option {never:?} must not be echoed"
        );
    }
    let raw = raw_options(name, bootp);
    if want.msg == MessageType::Nak {
        // Table 3: a NAK carries 53, 54, and may echo 61 (and 82, RFC 3046).
        for (code, _) in &raw {
            assert!(
                [53, 54, 61, 82].contains(code),
                "[{name}] option {code} in a NAK"
            );
        }
    } else {
        assert_eq!(
            opts.get(OptionCode::AddressLeaseTime),
            Some(&DhcpOption::AddressLeaseTime(client.lease.lease_secs)),
            "[{name}] 51 is the port's lease time"
        );
        let mask = Ipv4Addr::from(u32::MAX << (32 - client.options().prefix_len));
        assert_eq!(
            opts.get(OptionCode::SubnetMask),
            Some(&DhcpOption::SubnetMask(mask)),
            "[{name}] 1 is the port's mask"
        );
        assert_eq!(
            opts.get(OptionCode::Hostname),
            Some(&DhcpOption::Hostname(
                String::from_utf8(client.lease.hostname.clone()).unwrap()
            )),
            "[{name}] 12 is the port's host name"
        );
        assert!(
            opts.get(OptionCode::ClasslessStaticRoute).is_some(),
            "[{name}] 121"
        );
    }
    // Echoes: 61 and 82 exactly as sent, or absent.
    for code in [61u8, 82] {
        let sent: Vec<&[u8]> = row
            .input
            .options
            .iter()
            .filter(|(c, _)| *c == code)
            .map(|(_, v)| &v[..])
            .collect();
        let echoed: Vec<&[u8]> = raw
            .iter()
            .filter(|(c, _)| *c == code)
            .map(|(_, v)| *v)
            .collect();
        assert_eq!(echoed, sent, "[{name}] option {code} echo");
    }
}

/// The reply is byte for byte what the slow path's reply builder makes.
fn check_oracle(row: &Row, want: &Reply, out: &[u8]) {
    let name = row.name;
    let input = row.bytes();
    let client = fixtures::client(row.input.chaddr)
        .unwrap_or_else(|| panic!("[{name}] answered, but chaddr is no fixture client"));
    let req = Request::parse(&row.input.bootp())
        .unwrap_or_else(|e| panic!("[{name}] the request does not parse: {e}"));
    let oracle = reply::frame(
        &input[..row.input.l2_len()],
        SERVER_MAC,
        &req,
        &client.view(),
        u8::from(want.msg),
    );
    assert_eq!(
        hex(out),
        hex(&oracle),
        "[{name}] reply differs from the userspace reply builder"
    );
}

/// Every option of a BOOTP message as (code, value), in order, walked by hand.
fn raw_options<'a>(name: &str, p: &'a [u8]) -> Vec<(u8, &'a [u8])> {
    let mut found = Vec::new();
    let mut off = 240;
    while off < p.len() {
        match p[off] {
            255 => return found,
            0 => off += 1,
            code => {
                let len = usize::from(*p.get(off + 1).unwrap_or_else(|| {
                    panic!("[{name}] option {code} at {off} has no length byte")
                }));
                let value = p.get(off + 2..off + 2 + len).unwrap_or_else(|| {
                    panic!("[{name}] option {code} at {off} runs past the message")
                });
                found.push((code, value));
                off += 2 + len;
            }
        }
    }
    panic!("[{name}] options without END")
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
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
