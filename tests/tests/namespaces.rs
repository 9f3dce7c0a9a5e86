//! Two qdhcp-like namespaces whose DHCP devices share an ifindex: each fast
//! path answers only its own network's clients, on the wire (veth, XDP_TX).

use std::{net::Ipv4Addr, time::Duration};

use dhcp_ebpf::stat;
use xdhcp::{loader, netns::TempNs};
use xdhcp_tests::craft::RequestFrame;
use xdhcp_tests::{ifindex, is_dhcp_reply, veth_pair, yiaddr, Client, Harness, RawSocket};

const MAC_A: [u8; 6] = [0xfa, 0x16, 0x3e, 0x0a, 0x00, 0x05];
const MAC_B: [u8; 6] = [0xfa, 0x16, 0x3e, 0x0b, 0x00, 0x05];
const SERVER_A: [u8; 6] = [0xfa, 0x16, 0x3e, 0x0a, 0x00, 0x02];
const SERVER_B: [u8; 6] = [0xfa, 0x16, 0x3e, 0x0b, 0x00, 0x02];

#[test]
fn devices_with_the_same_ifindex_answer_only_their_own_network() {
    let mut h = Harness::new().unwrap();
    h.add_net(1, SERVER_A, false).unwrap();
    h.add_net(2, SERVER_B, false).unwrap();
    // Overlapping CIDRs: only the network tells the two leases apart.
    h.add_client(1, &Client::typical(MAC_A, Ipv4Addr::new(10, 0, 0, 5)))
        .unwrap();
    h.add_client(2, &Client::typical(MAC_B, Ipv4Addr::new(10, 0, 0, 7)))
        .unwrap();

    let ns_a = TempNs::new("xdhcp-nsa").unwrap();
    let ns_b = TempNs::new("xdhcp-nsb").unwrap();
    veth_pair(&ns_a, "tap", "vm").unwrap();
    veth_pair(&ns_b, "tap", "vm").unwrap();
    let (ia, ib) = (
        ifindex(&ns_a, "tap").unwrap(),
        ifindex(&ns_b, "tap").unwrap(),
    );
    assert_eq!(ia, ib, "the test needs the two taps to share an ifindex");

    let mut sockets = Vec::new();
    for (ns, net) in [(&ns_a, 1), (&ns_b, 2)] {
        let _inside = ns.enter().unwrap();
        loader::attach(h.entry(net).unwrap(), "tap", loader::AttachMode::Native).unwrap();
        // veth hands XDP_TX frames only to a peer that runs XDP itself.
        loader::attach(
            h.fast.pass_program().unwrap(),
            "vm",
            loader::AttachMode::Native,
        )
        .unwrap();
        sockets.push(RawSocket::bind("vm").unwrap());
    }

    let cases = [
        (
            "network 1's client on network 1's device",
            0,
            MAC_A,
            Some(Ipv4Addr::new(10, 0, 0, 5)),
        ),
        ("network 2's client on network 1's device", 0, MAC_B, None),
        (
            "network 2's client on network 2's device",
            1,
            MAC_B,
            Some(Ipv4Addr::new(10, 0, 0, 7)),
        ),
        ("network 1's client on network 2's device", 1, MAC_A, None),
    ];
    for (i, (what, sock, mac, want)) in cases.into_iter().enumerate() {
        let mut f = RequestFrame::discover(mac);
        f.xid = [0xc0, 0x11, 0x1d, i as u8];
        sockets[sock].send(&f.bytes()).unwrap();
        let wait = if want.is_some() {
            Duration::from_secs(3)
        } else {
            Duration::from_millis(500)
        };
        let got = sockets[sock].recv_matching(wait, |fr| is_dhcp_reply(fr, f.xid));
        assert_eq!(got.as_deref().map(yiaddr), want, "{what}");
    }
    let c = h.counters().unwrap();
    assert_eq!(c[stat::OFFERS as usize], 2, "one OFFER per network");
    assert_eq!(
        c[stat::PASS_UNKNOWN as usize],
        2,
        "the other network's client is unknown"
    );
}

/// The one namespace rule: work inside a namespace runs on a thread of its
/// own; the caller's thread (a runtime thread in the daemon) never moves.
#[test]
fn namespace_work_never_moves_the_calling_thread() {
    use std::os::unix::fs::MetadataExt;
    let ns_inode = |path: &str| std::fs::metadata(path).unwrap().ino();
    let ns = TempNs::new("xdhcp-runin").unwrap();
    let home = ns_inode("/proc/thread-self/ns/net");
    let target = ns_inode(&xdhcp::netns::path(&ns.name));
    let seen = xdhcp::netns::run_in(&ns.name, || Ok(ns_inode("/proc/thread-self/ns/net"))).unwrap();
    assert_eq!(seen, target, "the closure ran inside the namespace");
    assert_eq!(
        ns_inode("/proc/thread-self/ns/net"),
        home,
        "the caller stayed home"
    );
    // Borrowing works (a scoped thread), and errors come back.
    let name = ns.name.clone();
    let err = xdhcp::netns::run_in(&name, || -> anyhow::Result<()> {
        anyhow::bail!("inside {name}")
    })
    .unwrap_err();
    assert!(format!("{err}").contains(&ns.name));
    assert!(xdhcp::netns::run_in("xdhcp-no-such-ns", || Ok(())).is_err());
}
