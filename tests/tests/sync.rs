//! Incremental sync against real (pinned) maps: one changed port is one map
//! update; a restart rewrites nothing that is still right.

use std::collections::BTreeMap;

use dhcp_ebpf::ClientKey;
use serde_json::json;
use xdhcp::{
    config::AgentConfig, loader::bpffs::TempPinDir, loader::FastPath, mapsync::Sync,
    neutron::model::Snapshot, plan::Model,
};

fn model(ports: usize, extra_for: Option<usize>) -> Model {
    let mut doc = json!({
        "networks": [{"id": "net-a", "mtu": 1450}],
        "subnets": [{"id": "sub-a", "network_id": "net-a", "cidr": "10.0.0.0/24", "gateway_ip": "10.0.0.1"}],
        "ports": [{"id": "dhcp-a", "network_id": "net-a", "mac_address": "fa:16:3e:00:00:02", "device_owner": "network:dhcp",
                   "fixed_ips": [{"subnet_id": "sub-a", "ip_address": "10.0.0.2"}]}]
    });
    for i in 0..ports {
        let mut p = json!({"id": format!("vm-{i}"), "network_id": "net-a", "mac_address": format!("fa:16:3e:00:01:{i:02x}"),
                           "device_owner": "compute:nova", "fixed_ips": [{"subnet_id": "sub-a", "ip_address": format!("10.0.0.{}", 10 + i)}]});
        if extra_for == Some(i) {
            p["extra_dhcp_opts"] =
                json!([{"opt_name": "bootfile-name", "opt_value": "pxelinux.0"}]);
        }
        doc["ports"].as_array_mut().unwrap().push(p);
    }
    let d = xdhcp::neutron::import::parse(&doc.to_string()).unwrap();
    Model::from_snapshot(Snapshot {
        networks: d.networks,
        subnets: d.subnets,
        ports: d.ports,
    })
}

fn plans(m: &Model) -> BTreeMap<String, (u32, xdhcp::plan::PlannedNet)> {
    let cfg = AgentConfig::default();
    BTreeMap::from([("net-a".to_string(), (7, m.plan("net-a", &cfg).unwrap()))])
}

/// A fast path loaded into fresh pins (`tag`), and a Sync that has written
/// `model(ports, None)` into its maps.
fn synced(tag: &str, ports: usize) -> (TempPinDir, FastPath, Sync) {
    let pins = TempPinDir::new(tag).unwrap();
    let fast = FastPath::load(&pins.path).unwrap();
    let mut sync = Sync::adopt(fast.maps().unwrap(), &AgentConfig::default()).unwrap();
    sync.reconcile(plans(&model(ports, None))).unwrap();
    (pins, fast, sync)
}

#[test]
fn one_changed_port_is_one_map_update() {
    let (_pins, fast, mut sync) = synced("xdhcp-sync", 50);
    // 50 leases + 1 shared blob + 1 NETS entry.
    assert_eq!(sync.updates, 52, "initial fill");
    let cfg = AgentConfig::default();

    let cases: Vec<(&str, Model, u64)> = vec![
        ("nothing changed → no update", model(50, None), 0),
        ("one port's IP changed → one LEASES update", {
            let mut m = model(50, None);
            let mut p = m.ports["vm-3"].clone();
            p.fixed_ips[0].ip_address = "10.0.0.200".parse().unwrap();
            m.put_port(p);
            m
        }, 1),
        ("the IP changed back → one LEASES update", model(50, None), 1),
        ("one port added → one LEASES update (its options blob is shared)", model(51, None), 1),
        ("one port with its own extra option → an OPTS and a LEASES update", model(51, Some(4)), 2),
        ("one port removed (and the extra option back to shared) → two LEASES updates and the lone blob freed", model(50, None), 2),
    ];
    for (what, m, want) in cases {
        let before = sync.updates;
        sync.apply("net-a", 7, m.plan("net-a", &cfg)).unwrap();
        assert_eq!(sync.updates - before, want, "{what}");
    }
    let key = ClientKey::new(7, [0xfa, 0x16, 0x3e, 0x00, 0x01, 0x03]);
    assert_eq!(
        sync.maps.leases.get(&key, 0).unwrap().ip,
        [10, 0, 0, 13],
        "the last plan (IP back) is what the map holds"
    );

    // A restart adopts the maps: reconciling the same plan writes nothing.
    drop(sync);
    let mut again = Sync::adopt(fast.maps().unwrap(), &AgentConfig::default()).unwrap();
    again.reconcile(plans(&model(50, None))).unwrap();
    assert_eq!(
        again.updates, 0,
        "a restart rewrites nothing that is still right"
    );
    assert_eq!(
        again.maps.opts.keys().count(),
        1,
        "one shared blob, no leftovers"
    );
}

/// The daemon reads every ACK record each second in batches; a map larger
/// than one batch comes back whole, each record once, values intact.
#[test]
fn all_acks_reads_every_record_across_batches() {
    let pins = TempPinDir::new("xdhcp-acks").unwrap();
    let fast = FastPath::load(&pins.path).unwrap();
    let mut maps = fast.maps().unwrap();
    assert!(maps.all_acks().unwrap().is_empty());
    let n = 10_000u32;
    let mut want = BTreeMap::new();
    for i in 0..n {
        let key = ClientKey::new(i % 7, [0xfa, 0x16, 0x3e, 0, (i >> 8) as u8, i as u8]);
        let rec = dhcp_ebpf::AckRecord {
            ip: (0x0a00_0000 + i).to_be_bytes(),
            acked_ns: u64::from(i) * 1000,
            expires_ns: u64::from(i) * 2000,
            ..Default::default()
        };
        maps.acks.insert(key, rec, 0).unwrap();
        want.insert(key, rec);
    }
    let got = maps.all_acks().unwrap();
    assert_eq!(got.len(), n as usize, "each record once");
    let got: BTreeMap<_, _> = got.into_iter().collect();
    assert_eq!(got, want);
}

/// LEASES full in the middle of a network's writes: the network stays
/// written as it was (so it stays attached and served), the error names the
/// map and its capacity, no blob reference leaks, and applying again once
/// there is room finishes the job.
#[test]
fn a_failed_write_keeps_the_network_and_leaks_nothing() {
    let (_pins, fast, mut sync) = synced("xdhcp-full", 10);
    let cfg = AgentConfig::default();
    let mut maps = fast.maps().unwrap();
    let filler = dhcp_ebpf::Lease::new([0; 4], [0; 4], [0; 4], 1, 0, b"");
    let mut junk = Vec::new();
    for i in 0u32.. {
        let key = ClientKey::new(999, [2, 0, 0, (i >> 16) as u8, (i >> 8) as u8, i as u8]);
        if maps.leases.insert(key, filler, 0).is_err() {
            break;
        }
        junk.push(key);
    }
    assert_eq!(
        junk.len() + 10,
        dhcp_ebpf::LEASES_MAX as usize,
        "LEASES is full"
    );
    // vm-10, the first new port (by id), gets options of its own: a new blob
    // whose LEASES write then fails.
    let bigger = model(20, Some(10));
    let before_opts = maps.opts.keys().count();
    let err = sync
        .apply("net-a", 7, bigger.plan("net-a", &cfg))
        .expect_err("no room for 10 more leases");
    let err = format!("{err:#}");
    assert!(
        err.contains("LEASES is full")
            && err.contains(&dhcp_ebpf::LEASES_MAX.to_string())
            && err.contains("net-a"),
        "names map, capacity and network: {err}"
    );
    assert_eq!(
        sync.written("net-a").map(|(_, p)| p.leases.len()),
        Some(10),
        "still written (served) with what it had"
    );
    let refs: usize = sync.blob_refs().values().sum();
    assert_eq!(refs, 10, "one reference per lease in the map, none leaked");
    assert_eq!(
        maps.opts.keys().count(),
        before_opts,
        "the failed port's blob is gone again"
    );
    for key in &junk {
        maps.leases.remove(key).unwrap();
    }
    sync.apply("net-a", 7, bigger.plan("net-a", &cfg)).unwrap();
    assert_eq!(sync.written("net-a").map(|(_, p)| p.leases.len()), Some(20));
    assert_eq!(maps.leases.keys().count(), 20, "every lease in the map");
    let refs: usize = sync.blob_refs().values().sum();
    assert_eq!(refs, 20);
}

/// Pinned maps where two OPTS entries hold the same bytes and leases point at
/// both (a crash between writes can leave that): adoption keeps one, points
/// every lease at it, and a reconcile of the same plan then writes nothing.
#[test]
fn adoption_merges_duplicate_blobs_without_orphaning_leases() {
    let (_pins, fast, sync) = synced("xdhcp-dup", 4);
    drop(sync);
    let mut maps = fast.maps().unwrap();
    let (id, blob) = maps.opts.iter().next().unwrap().unwrap();
    for dup in [id + 100, id + 200] {
        maps.opts.insert(dup, blob, 0).unwrap();
    }
    let keys: Vec<ClientKey> = maps.leases.keys().map(|k| k.unwrap()).collect();
    for (key, dup) in keys.iter().zip([id + 100, id + 200]) {
        let mut lease = maps.leases.get(key, 0).unwrap();
        lease.opts_id = dup;
        maps.leases.insert(*key, lease, 0).unwrap();
    }
    let mut again = Sync::adopt(fast.maps().unwrap(), &AgentConfig::default()).unwrap();
    let ids: Vec<u32> = maps.opts.keys().map(|k| k.unwrap()).collect();
    assert_eq!(ids, vec![id], "one blob per content");
    for key in &keys {
        assert_eq!(
            maps.leases.get(key, 0).unwrap().opts_id,
            id,
            "every lease points at a blob that exists"
        );
    }
    let before = again.updates;
    again.reconcile(plans(&model(4, None))).unwrap();
    assert_eq!(again.updates - before, 0, "nothing left to rewrite");
}

/// A reconcile (start-up, reload after the change log overflowed) forgets
/// the networks it no longer plans: their leases and NETS entry go, and
/// `networks()` (what the daemon attaches) no longer lists them.
#[test]
fn reconcile_drops_networks_no_longer_planned() {
    let (_pins, _fast, mut sync) = synced("xdhcp-prune", 5);
    assert!(sync.written("net-a").is_some());
    let failed = sync.reconcile(BTreeMap::new()).unwrap();
    assert!(failed.is_empty());
    assert!(sync.written("net-a").is_none(), "no longer written");
    assert_eq!(sync.networks().count(), 0, "nothing to attach");
    assert_eq!(sync.maps.leases.keys().count(), 0, "its leases are gone");
    assert_eq!(sync.maps.nets.keys().count(), 0, "its NETS entry is gone");
}

/// After an upgrade the programs pinned by the earlier build are unpinned.
#[test]
fn opening_removes_program_pins_of_earlier_builds() {
    let pins = TempPinDir::new("xdhcp-upgrade").unwrap();
    let mut fast = FastPath::load(&pins.path).unwrap();
    let stale = pins.path.join("fast-0123456789abcdef");
    fast.program().unwrap().pin(&stale).unwrap();
    let stale_pass = pins.path.join("pass-fedcba9876543210");
    fast.pass_program().unwrap().pin(&stale_pass).unwrap();
    drop(fast);
    let (_fast, adopted) = FastPath::open(&pins.path).unwrap();
    assert!(adopted, "this build's programs are adopted");
    assert!(
        !stale.exists() && !stale_pass.exists(),
        "the earlier build's pins are gone"
    );
    let hash = xdhcp::loader::object_hash();
    assert!(pins.path.join(format!("fast-{hash}")).exists());
}

#[test]
fn stored_host_names_follow_their_leases() {
    let (_pins, _fast, mut sync) = synced("xdhcp-sync-names", 3);
    let cfg = AgentConfig::default();
    let key = ClientKey::new(7, [0xfa, 0x16, 0x3e, 0x00, 0x01, 0x01]);
    let names = |sync: &Sync| sync.maps.names.keys().filter_map(|k| k.ok()).count();
    let with_name = |name: Option<&str>| {
        let mut m = model(3, None);
        let mut p = m.ports["vm-1"].clone();
        p.dns_name = name.map(String::from);
        m.put_port(p);
        m
    };
    // (what, vm-1's dns_name, option 12 the maps give, NAMES entries, map updates)
    type Case<'a> = (&'a str, Option<&'a str>, &'a [u8], usize, u64);
    let cases: [Case; 5] = [
        (
            "Neutron's host-a-b-c-d is made by the program: nothing stored",
            None,
            b"host-10-0-0-11",
            0,
            0,
        ),
        (
            "a dns_name is stored, before its lease",
            Some("web-1"),
            b"web-1",
            1,
            2,
        ),
        (
            "a changed dns_name rewrites the name (the lease bytes are the same)",
            Some("web-2"),
            b"web-2",
            1,
            2,
        ),
        (
            "the same name again: nothing written",
            Some("web-2"),
            b"web-2",
            1,
            0,
        ),
        (
            "back to no dns_name: the stored name goes",
            None,
            b"host-10-0-0-11",
            0,
            1,
        ),
    ];
    for (what, name, want, stored, updates) in cases {
        let before = sync.updates;
        sync.apply("net-a", 7, with_name(name).plan("net-a", &cfg))
            .unwrap();
        let lease = sync.maps.leases.get(&key, 0).unwrap();
        assert_eq!(
            sync.maps.hostname(&key, &lease).as_deref(),
            Some(want),
            "{what}"
        );
        assert_eq!(names(&sync), stored, "{what}: NAMES entries");
        assert_eq!(sync.updates - before, updates, "{what}: map updates");
    }
    // A named port removed: its name goes with its lease.
    sync.apply("net-a", 7, with_name(Some("web-3")).plan("net-a", &cfg))
        .unwrap();
    assert_eq!(names(&sync), 1);
    sync.apply("net-a", 7, model(1, None).plan("net-a", &cfg))
        .unwrap();
    assert_eq!(names(&sync), 0, "the removed port's name is gone");
}
