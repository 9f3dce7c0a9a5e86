//! The benchmarks' load generator counts what it should: every DISCOVER of a
//! known port answered on the wire is counted once, nothing else is.

use std::{sync::atomic::AtomicBool, time::Duration};

use dhcp_ebpf::stat;
use xdhcp::{loader, netns::TempNs};
use xdhcp_tests::{loadgen::LoadGen, veth_pair, Client, Harness, SERVER_MAC, STRANGER_MAC};

#[test]
fn counts_every_offer_and_only_offers() {
    let mut h = Harness::new().expect("loading the fast path");
    h.add_net(1, SERVER_MAC, false).unwrap();
    let known: Vec<[u8; 6]> = (0..3u8).map(|i| [0xfa, 0x16, 0x3e, 0x10, 0, i]).collect();
    for (i, mac) in known.iter().enumerate() {
        h.add_client(
            1,
            &Client::typical(*mac, std::net::Ipv4Addr::new(10, 0, 0, 10 + i as u8)),
        )
        .unwrap();
    }
    let ns = TempNs::new("xdhcp-lg").unwrap();
    veth_pair(&ns, "taplg", "vmlg").unwrap();
    let stop = AtomicBool::new(false);
    let _inside = ns.enter().unwrap();
    loader::attach(h.entry(1).unwrap(), "taplg", loader::AttachMode::Native)
        .expect("attaching the entry program");
    // veth hands XDP_TX frames only to a peer that runs XDP.
    loader::attach(
        h.fast.pass_program().unwrap(),
        "vmlg",
        loader::AttachMode::Native,
    )
    .expect("attaching the pass program");

    let before = h.counters().unwrap();
    let gen = LoadGen::new("vmlg", known.clone()).unwrap();
    let load = gen
        .run(
            Some(10_000.0),
            Duration::from_millis(300),
            Duration::from_millis(200),
            &stop,
        )
        .unwrap();
    let after = h.counters().unwrap();
    let offers = after[stat::OFFERS as usize] - before[stat::OFFERS as usize];
    assert!(
        load.sent > 1000,
        "sent only {} frames in 0.3 s at 10k/s",
        load.sent
    );
    assert_eq!(
        offers, load.sent,
        "the fast path answered every DISCOVER sent"
    );
    assert_eq!(load.replies, load.sent, "every OFFER counted, once");

    // A stranger's DISCOVERs are passed up, not answered: nothing to count.
    let gen = LoadGen::new("vmlg", [STRANGER_MAC]).unwrap();
    let load = gen
        .run(
            Some(10_000.0),
            Duration::from_millis(100),
            Duration::from_millis(100),
            &stop,
        )
        .unwrap();
    let passed =
        h.counters().unwrap()[stat::PASS_UNKNOWN as usize] - after[stat::PASS_UNKNOWN as usize];
    assert!(load.sent > 0);
    assert_eq!(
        passed, load.sent,
        "every stranger's DISCOVER reached the fast path"
    );
    assert_eq!(
        load.replies, 0,
        "no OFFER for a stranger, and the DISCOVERs are not counted"
    );
}
