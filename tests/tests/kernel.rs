//! The object passes the verifier, attaches to a veth in a namespace the test
//! creates, and BPF_PROG_TEST_RUN of a DHCPDISCOVER returns the program's verdict.

use std::process::Command;

use dhcp_ebpf::{stat, verdict};
use xdhcp::{loader, netns::TempNs};
use xdhcp_tests::craft::RequestFrame;
use xdhcp_tests::{verdict_name, Client, Harness, CLIENT_IP, CLIENT_MAC, SERVER_MAC, STRANGER_MAC};

#[test]
fn verifies_attaches_to_veth_and_answers_discover_via_test_run() {
    let mut h = Harness::new().expect("loading the fast path");
    h.add_net(1, SERVER_MAC, false).unwrap();
    h.add_client(1, &Client::typical(CLIENT_MAC, CLIENT_IP))
        .unwrap();
    let pin_dir = h.fast.pin_dir.clone();

    let ns = TempNs::new("xdhcp-kt").unwrap();
    ns.ip(&[
        "link", "add", "tapkt", "type", "veth", "peer", "name", "vmkt",
    ])
    .unwrap();
    ns.ip(&["link", "set", "tapkt", "up"]).unwrap();
    {
        let _inside = ns.enter().unwrap();
        let prog = h.entry(1).unwrap();
        let (_, mode) = loader::attach(prog, "tapkt", loader::AttachMode::Native)
            .expect("attaching to the veth");
        assert_eq!(mode, loader::AttachMode::Native, "veth takes native XDP");
    }
    let shown = Command::new("ip")
        .args(["-n", &ns.name, "link", "show", "tapkt"])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(
        shown.contains("prog/xdp"),
        "ip link shows no XDP program on tapkt: {shown}"
    );

    let known = h
        .run(1, &RequestFrame::discover(CLIENT_MAC).bytes())
        .unwrap();
    assert_eq!(
        verdict_name(known.verdict),
        verdict_name(verdict::TX),
        "known client's DISCOVER"
    );
    let unknown = h
        .run(1, &RequestFrame::discover(STRANGER_MAC).bytes())
        .unwrap();
    assert_eq!(
        verdict_name(unknown.verdict),
        verdict_name(verdict::PASS),
        "unknown client's DISCOVER"
    );
    let c = h.counters().unwrap();
    assert_eq!(
        (c[stat::OFFERS as usize], c[stat::PASS_UNKNOWN as usize]),
        (1, 1)
    );

    // Everything the test made goes away: the attachment with the programs,
    // the pins with the harness, the veth with the namespace.
    drop(h);
    assert!(!pin_dir.exists(), "{} still exists", pin_dir.display());
    let name = ns.name.clone();
    drop(ns);
    let list = Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(
        !String::from_utf8_lossy(&list.stdout).contains(&name),
        "namespace {name} left behind"
    );
}
