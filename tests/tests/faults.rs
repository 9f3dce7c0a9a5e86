//! The daemon under odd topologies and faults: every change reaches the maps,
//! no device is left silent, and lock, down, relay, signals, plumbing, disk
//! and database faults are handled as an operator expects.

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use dhcp_ebpf::{ClientKey, Lease};
use serde_json::{json, Value};
use xdhcp::{
    daemon::pid_file,
    loader::Maps,
    netns::names,
    netns::{ip, TempNs},
};
use xdhcp_tests::craft::RequestFrame;
use xdhcp_tests::{
    cloud::{msg_type, offered, Cloud, Net, VmPort},
    ifindex, wait_until, yiaddr, RawSocket,
};

const WAIT: Duration = Duration::from_secs(3);

fn stat(c: &Cloud, name: &str) -> u64 {
    c.stats()[name]
        .as_u64()
        .unwrap_or_else(|| panic!("no counter {name}"))
}

fn mac_str(mac: &[u8; 6]) -> String {
    xdhcp::neutron::model::format_mac(mac)
}

/// A network with one VM port, the daemon serving it with --plumb, and the VM.
fn served(c: &mut Cloud, octet: u8, config: Option<&str>) -> (Net, VmPort, RawSocket) {
    let (net, a) = c.net_with_vm(octet);
    c.start_with(true, config);
    c.wait_attached(&net, Duration::from_secs(30)).unwrap();
    let (_, sock) = c.vm(&a).unwrap();
    assert_eq!(
        offered(&sock, a.mac, 0x100, WAIT),
        Some(a.ip),
        "served at first; log:\n{}",
        c.log()
    );
    (net, a, sock)
}

/// A mount that is unmounted (and its directory removed) when dropped.
struct Mount(PathBuf);

impl Mount {
    fn new(kind: &str, name: &str, options: Option<&str>) -> Self {
        let dir = PathBuf::from(format!("/tmp/xdhcp-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        nix::mount::mount(
            Some(kind),
            &dir,
            Some(kind),
            nix::mount::MsFlags::empty(),
            options,
        )
        .unwrap_or_else(|e| panic!("mounting {kind} on {}: {e}", dir.display()));
        Mount(dir)
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
fn a_veth_whose_peer_is_in_another_namespace_is_served() {
    let mut c = Cloud::new();
    let (net, a) = c.net_with_vm(71);
    // The topology: no bridge, no device in the daemon's namespace;
    // both ends at ifindex 2 of their namespaces.
    let srv = TempNs::named(&names::namespace_name(&net.id)).unwrap();
    let cli = TempNs::new("xcli").unwrap();
    ip(&[
        "link", "add", "tap0", "netns", &srv.name, "type", "veth", "peer", "eth0", "netns",
        &cli.name,
    ])
    .unwrap();
    srv.ip(&["link", "set", "tap0", "address", &mac_str(&net.dhcp_mac)])
        .unwrap();
    srv.ip(&[
        "addr",
        "add",
        &format!("{}/24", net.server_ip),
        "dev",
        "tap0",
    ])
    .unwrap();
    srv.ip(&["link", "set", "tap0", "up"]).unwrap();
    cli.ip(&["link", "set", "eth0", "address", &mac_str(&a.mac)])
        .unwrap();
    cli.ip(&["link", "set", "eth0", "up"]).unwrap();
    assert_eq!(
        ifindex(&srv, "tap0").unwrap(),
        ifindex(&cli, "eth0").unwrap(),
        "both ends share an ifindex"
    );
    c.start(false);
    c.wait_attached(&net, Duration::from_secs(10)).unwrap();

    let out = Command::new("ip")
        .args([
            "netns", "exec", &cli.name, "udhcpc", "-i", "eth0", "-n", "-q",
        ])
        .args(["-t", "5", "-T", "1", "-s", "/bin/true"])
        .output()
        .expect("running udhcpc");
    let said =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains(&format!("lease of {} obtained", a.ip)),
        "udhcpc got no lease: {said}\nlog:\n{}",
        c.log()
    );
    assert!(
        stat(&c, "fast_offers") >= 1 && stat(&c, "fast_acks") >= 1,
        "answered by the fast path: {}",
        c.stats()
    );
    // One line says how and why, once; nothing is retried every scan.
    std::thread::sleep(Duration::from_millis(1500));
    let log = c.log();
    assert_eq!(
        log.matches("served by the fast path in Generic mode")
            .count(),
        1,
        "{log}"
    );
    assert!(
        log.contains("outside the daemon's namespace"),
        "the reason: {log}"
    );
    assert!(!log.contains("ERROR"), "no errors: {log}");
}

#[test]
fn down_on_a_bpffs_mount_root_removes_only_what_xdhcp_pinned() {
    let root = Mount::new("bpf", "bpffs-root", None);
    let kernel_entries = |dir: &Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        v.sort();
        v
    };
    let before = kernel_entries(&root.0);
    let mut c = Cloud::new();
    c.bpffs = root.0.clone();
    let (_net, _a, _sock) = served(&mut c, 72, None);
    assert!(root.0.join("LEASES").exists(), "the daemon pinned its maps");
    let out = c.xdhcp(&["down"]);
    assert!(
        out.status.success(),
        "down exits 0: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        c.daemon_exits_within(Duration::from_secs(5)),
        "the daemon stopped"
    );
    assert_eq!(
        kernel_entries(&root.0),
        before,
        "only the kernel's own entries are left"
    );
}

#[test]
fn down_signals_only_the_lock_holder_and_a_second_daemon_is_refused() {
    let mut c = Cloud::new();
    // A stale pid file (a daemon killed with -9) naming a live, unrelated process.
    let mut bystander = Command::new("sleep").arg("30").spawn().unwrap();
    let pid_path = pid_file(&c.bpffs);
    std::fs::create_dir_all(pid_path.parent().unwrap()).unwrap();
    std::fs::write(&pid_path, format!("{}\n", bystander.id())).unwrap();
    let out = c.xdhcp(&["down"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("stale"),
        "says the pid file was stale: {said}"
    );
    assert!(
        bystander.try_wait().unwrap().is_none(),
        "the unrelated process was not signalled"
    );
    let _ = bystander.kill();
    let _ = bystander.wait();

    let (_net, _a, _sock) = served(&mut c, 73, None);
    let first = c.daemon_pid().unwrap();
    let second = c
        .run_briefly(&c.db, &[], Duration::from_secs(10))
        .expect("a second daemon on the same bpffs exits at once");
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "refused: {err}");
    assert!(
        err.contains(&format!("another xdhcp daemon (pid {first})")),
        "names the first daemon: {err}"
    );
    assert!(c.daemon_alive(), "the first daemon runs on");
}

#[test]
fn a_full_leases_map_keeps_serving_and_every_later_change_arrives() {
    let mut c = Cloud::new();
    let (net, a, sock_a) = served(&mut c, 74, None);
    // Fill LEASES to capacity behind the daemon's back.
    let mut maps = Maps::open(&c.bpffs).unwrap();
    let filler = Lease::new([0; 4], [0; 4], [0; 4], 1, 0, b"");
    let mut junk = Vec::new();
    for i in 0u32.. {
        let key = ClientKey::new(
            0xdead_0000,
            [
                2,
                0,
                (i >> 24) as u8,
                (i >> 16) as u8,
                (i >> 8) as u8,
                i as u8,
            ],
        );
        if maps.leases.insert(key, filler, 0).is_err() {
            break;
        }
        junk.push(key);
    }
    assert!(junk.len() > 200_000, "filled with {}", junk.len());
    let b = c.vm_port(&net, 11);
    let d = c.vm_port(&net, 12);
    c.import_ok(&Cloud::ports_json(&[&b]));
    c.wait_log(
        &format!(
            "LEASES is full (capacity {} entries)",
            dhcp_ebpf::LEASES_MAX
        ),
        Duration::from_secs(5),
    )
    .unwrap();
    // Served with what it had, while the write fails.
    assert_eq!(
        offered(&sock_a, a.mac, 0x200, WAIT),
        Some(a.ip),
        "a is still answered; log:\n{}",
        c.log()
    );
    // A later change, while the earlier one still fails.
    c.import_ok(&Cloud::ports_json(&[&d]));
    std::thread::sleep(Duration::from_secs(1));
    for key in &junk {
        maps.leases.remove(key).unwrap();
    }
    let (_, sock_b) = c.vm(&b).unwrap();
    let (_, sock_d) = c.vm(&d).unwrap();
    assert_eq!(
        offered(&sock_b, b.mac, 0x300, Duration::from_secs(10)),
        Some(b.ip),
        "b arrives once there is room; log:\n{}",
        c.log()
    );
    assert_eq!(
        offered(&sock_d, d.mac, 0x400, WAIT),
        Some(d.ip),
        "so does the later change"
    );
    let log = c.log();
    assert_eq!(
        log.matches("LEASES is full").count(),
        1,
        "the error is logged once, not at every retry:\n{log}"
    );
    assert!(
        log.contains("changes applied after failing"),
        "recovery is logged:\n{log}"
    );
}

/// Sends a relayed request and waits for a reply to the relay (UDP port 67).
fn relay_exchange(sock: &RawSocket, frame: &RequestFrame, timeout: Duration) -> Option<Vec<u8>> {
    sock.send(&frame.bytes()).ok()?;
    sock.recv_matching(timeout, |f| {
        let mut as_client = f.to_vec();
        let ihl = ((f.get(14).copied().unwrap_or(0) & 0x0f) as usize) * 4;
        // The same test as a client's, on a copy whose UDP port reads 68.
        if as_client.len() > 14 + ihl + 4 && f[14 + ihl + 2..14 + ihl + 4] == [0, 67] {
            as_client[14 + ihl + 3] = 68;
            xdhcp_tests::is_dhcp_reply(&as_client, frame.xid)
        } else {
            false
        }
    })
}

#[test]
fn relayed_requests_are_answered_only_when_enabled_and_never_for_a_vm() {
    let mut c = Cloud::new();
    let (net, a, sock_a) = served(&mut c, 75, None);
    let relay = |from: [u8; 6], xid: u32| {
        let mut f = RequestFrame::discover(a.mac);
        f.xid = xid.to_be_bytes();
        f.giaddr = Ipv4Addr::new(10, 75, 0, 250);
        f.hops = 1;
        f.eth_src = from;
        f.ip_src = f.giaddr;
        f.ip_dst = net.server_ip;
        f.eth_dst = net.dhcp_mac;
        f.udp_src = 67;
        f
    };
    // Relaying is off by default: a VM asking for its own port through a
    // made-up giaddr gets nothing, from either path.
    assert!(
        relay_exchange(&sock_a, &relay(a.mac, 0x500), Duration::from_millis(800)).is_none(),
        "relayed request answered with relaying off"
    );
    c.stop(false);
    c.start_with(true, Some("enable_relay = true\n"));
    c.wait_log_times("serving", 2, Duration::from_secs(10))
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    // On: a VM of the network is still no relay — not for its own port,
    // nor for another's.
    let b = c.vm_port(&net, 11);
    c.import_ok(&Cloud::ports_json(&[&b]));
    std::thread::sleep(Duration::from_millis(500));
    let mut for_b = relay(a.mac, 0x600);
    for_b.chaddr = b.mac;
    assert!(
        relay_exchange(&sock_a, &for_b, Duration::from_millis(800)).is_none(),
        "a VM fetched another port's OFFER through a relayed request"
    );
    let relay_mac = [0x02, 0, 0, 0, 0x75, 0x01];
    let relay_vm = VmPort {
        mac: relay_mac,
        ..c.vm_port(&net, 250)
    };
    let (_, sock_relay) = c.vm(&relay_vm).unwrap();
    let answer = relay_exchange(&sock_relay, &relay(relay_mac, 0x700), WAIT).unwrap_or_else(|| {
        panic!(
            "a real relay is answered; stats {}; log:\n{}",
            c.stats(),
            c.log()
        )
    });
    assert_eq!((msg_type(&answer), yiaddr(&answer)), (Some(2), a.ip));
    assert_eq!(&answer[30..34], &[10, 75, 0, 250], "sent to giaddr");
}

#[test]
fn sighup_reloads_and_keeps_serving() {
    let mut c = Cloud::new();
    let (_net, a, sock) = served(&mut c, 76, None);
    let pid = c.daemon_pid().unwrap();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid as i32, libc::SIGHUP) };
    c.wait_log("SIGHUP", Duration::from_secs(3)).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        c.daemon_alive(),
        "SIGHUP killed the daemon; log:\n{}",
        c.log()
    );
    assert!(pid_file(&c.bpffs).exists(), "the pid file is still there");
    assert_eq!(offered(&sock, a.mac, 0x800, WAIT), Some(a.ip));
}

#[test]
fn a_namespace_removed_under_plumb_is_plumbed_again() {
    let mut c = Cloud::new();
    let (net, a, sock) = served(&mut c, 77, None);
    let ns = names::namespace_name(&net.id);
    ip(&["netns", "del", &ns]).unwrap();
    let t0 = Instant::now();
    wait_until("namespace plumbed again", Duration::from_secs(5), || {
        Path::new("/run/netns").join(&ns).exists()
    });
    assert_eq!(
        offered(&sock, a.mac, 0x900, Duration::from_secs(5)),
        Some(a.ip),
        "answered again; log:\n{}",
        c.log()
    );
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "back within a few scans: {:?}",
        t0.elapsed()
    );
}

#[test]
fn a_dhcp_port_given_a_new_address_stays_attached_while_it_is_plumbed() {
    let mut c = Cloud::new();
    let (net, a, sock) = served(&mut c, 84, None);
    let pin = c.bpffs.join("links").join(&net.id);
    assert!(pin.exists(), "attached: {}", pin.display());
    // The same DHCP port (same MAC: the same tap) moves from .2 to .3.
    let mut doc = c.net_json(&net);
    let new_ip = Ipv4Addr::new(10, 84, 0, 3);
    doc["ports"][0]["fixed_ips"][0]["ip_address"] = json!(new_ip.to_string());
    c.import_ok(&doc);
    let ns = names::namespace_name(&net.id);
    let tap = names::tap_name(&net.dhcp_port_id);
    let has_new = || {
        let out = Command::new("ip")
            .args(["-n", &ns, "-4", "-o", "addr", "show", "dev", &tap])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).contains(&format!("{new_ip}/24"))
    };
    // Sampled every 10 ms until the address is on the tap: the pinned link
    // (the fast path's attachment) never goes away.
    let t0 = Instant::now();
    while !has_new() {
        assert!(
            pin.exists(),
            "detached while the DHCP port's address changed (after {:?}); log:\n{}",
            t0.elapsed(),
            c.log()
        );
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the new address was not plumbed; log:\n{}",
            c.log()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(pin.exists(), "attached after the change");
    assert_eq!(
        offered(&sock, a.mac, 0xa00, WAIT),
        Some(a.ip),
        "answered after the change; log:\n{}",
        c.log()
    );
    assert!(!c.log().contains("namespace or device gone"), "{}", c.log());
}

#[test]
fn deleting_a_network_too_big_for_the_change_log_detaches_it() {
    let mut c = Cloud::new();
    let net = c.net(78);
    // 110k ports: their deletion overflows the 100k-change log.
    let id = net.id.clone();
    let mut doc = json!({
        "networks": [{"id": id, "mtu": 1450}],
        "subnets": [{"id": net.subnet_id, "network_id": id, "ip_version": 4, "cidr": "10.80.0.0/13",
                     "gateway_ip": "10.80.0.1", "enable_dhcp": true}],
        "ports": [{"id": net.dhcp_port_id, "network_id": id, "mac_address": mac_str(&net.dhcp_mac),
                   "device_owner": "network:dhcp",
                   "fixed_ips": [{"subnet_id": net.subnet_id, "ip_address": "10.80.0.2"}]}]
    });
    let ports = doc["ports"].as_array_mut().unwrap();
    for i in 0..110_000u32 {
        let host = i + 10;
        ports.push(json!({
            "id": format!("{}-p{i}", c.tag), "network_id": id,
            "mac_address": mac_str(&[0xfa, 0x16, 0x3f, (i >> 16) as u8, (i >> 8) as u8, i as u8]),
            "device_owner": "compute:nova",
            "fixed_ips": [{"subnet_id": net.subnet_id,
                           "ip_address": Ipv4Addr::new(10, 80 + (host >> 16) as u8, (host >> 8) as u8, host as u8).to_string()}]
        }));
    }
    c.import_ok(&doc);
    c.start(true);
    c.wait_attached(&net, Duration::from_secs(60)).unwrap();
    let ns = names::namespace_name(&net.id);
    let holds_67 = || {
        let out = Command::new("ip")
            .args(["netns", "exec", &ns, "ss", "-Hulnp", "sport", "= :67"])
            .output()
            .unwrap();
        !out.stdout.is_empty()
    };
    wait_until(
        "the slow path holds port 67",
        Duration::from_secs(5),
        holds_67,
    );
    let out = c.xdhcp(&["delete", "network", &net.id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pin = c.bpffs.join("links").join(&net.id);
    wait_until("detached", Duration::from_secs(20), || !pin.exists());
    assert!(
        c.log().contains("reloading everything"),
        "the change log overflowed (else this test shows nothing): {}",
        c.log()
    );
    wait_until("slow path stopped", Duration::from_secs(3), || !holds_67());
    let tap = names::tap_name(&net.dhcp_port_id);
    let xdp_on_tap = || {
        let out = Command::new("ip")
            .args(["-n", &ns, "-j", "-d", "link", "show", "dev", &tap])
            .output()
            .unwrap();
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        v[0]["xdp"].clone()
    };
    // The kernel detaches a link whose last pin went from a work queue.
    wait_until("no XDP left on the tap", Duration::from_secs(5), || {
        xdp_on_tap().is_null()
    });
    assert_eq!(
        std::fs::read_dir(c.bpffs.join("links")).unwrap().count(),
        0,
        "no link pinned"
    );
}

#[test]
fn slow_path_counters_survive_a_full_disk() {
    let disk = Mount::new("tmpfs", "fulldisk", Some("size=8m"));
    let mut c = Cloud::new();
    c.db = disk.0.join("xdhcp.db");
    let (net, _a, _sock) = served(&mut c, 79, None);
    let stranger = c.vm_port(&net, 99); // never imported: the slow path counts it
    let (_, sock_s) = c.vm(&stranger).unwrap();
    let before = stat(&c, "slow_unknown_clients");
    // Fill the disk, then give SQLite's files no slack either.
    let fill = disk.0.join("fill");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&fill).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
    }
    const N: u64 = 20;
    for i in 0..N {
        let mut d = RequestFrame::discover(stranger.mac);
        d.xid = (0xa00 + i as u32).to_be_bytes();
        sock_s.send(&d.bytes()).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    c.wait_log("saving slow-path counters", Duration::from_secs(5))
        .unwrap();
    std::fs::remove_file(&fill).unwrap();
    wait_until("every count saved", Duration::from_secs(5), || {
        stat(&c, "slow_unknown_clients") == before + N
    });
}

#[test]
fn read_only_commands_work_on_a_read_only_or_locked_database() {
    let ro = Mount::new("tmpfs", "rodb", Some("size=16m"));
    let mut c = Cloud::new();
    c.db = ro.0.join("xdhcp.db");
    // Served once, so that maps are pinned and leases recorded; then stopped.
    let (_net, _a, _sock) = served(&mut c, 80, None);
    c.stop(false);
    nix::mount::mount(
        None::<&str>,
        &ro.0,
        None::<&str>,
        nix::mount::MsFlags::MS_REMOUNT | nix::mount::MsFlags::MS_RDONLY,
        None::<&str>,
    )
    .unwrap();
    for cmd in ["stats", "leases", "ports"] {
        let out = c.xdhcp(&[cmd, "--json"]);
        assert!(
            out.status.success(),
            "{cmd} on a read-only database: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
        assert!(!v.is_null(), "{cmd} printed something");
    }

    // A long import holds the write lock: reading is not blocked by it.
    let mut c2 = Cloud::new();
    let net2 = c2.net(81);
    c2.import_ok(&c2.net_json(&net2));
    let writer = rusqlite::Connection::open(&c2.db).unwrap();
    writer.execute_batch("BEGIN IMMEDIATE").unwrap();
    let t0 = Instant::now();
    let out = c2.xdhcp(&["stats", "--json"]);
    assert!(
        out.status.success() && t0.elapsed() < Duration::from_secs(2),
        "stats while the database is locked: {:?} {}",
        t0.elapsed(),
        String::from_utf8_lossy(&out.stderr)
    );
    writer.execute_batch("ROLLBACK").unwrap();
}

#[test]
fn a_missing_or_empty_database_next_to_pins_is_refused_and_a_deleted_one_reported() {
    let mut c = Cloud::new();
    let (_net, a, sock) = served(&mut c, 82, None);
    c.stop(false);
    let typo = PathBuf::from(format!("/tmp/xdhcp-typo-{}.db", c.tag));
    let out = c
        .run_briefly(&typo, &[], Duration::from_secs(10))
        .expect("refused at once");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a missing database is refused");
    assert!(
        err.contains(&typo.display().to_string())
            && err.contains("does not exist")
            && err.contains("--allow-empty-db"),
        "the error names the file and the way out: {err}"
    );
    assert!(!typo.exists(), "no empty database was created");
    let empty = PathBuf::from(format!("/tmp/xdhcp-empty-{}.db", c.tag));
    drop(xdhcp::store::Db::open(&empty).unwrap());
    let out = c
        .run_briefly(&empty, &[], Duration::from_secs(10))
        .expect("refused at once");
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("holds no networks"),
        "an empty database is refused: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for ext in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{ext}", empty.display()));
    }
    assert_eq!(
        offered(&sock, a.mac, 0xb00, WAIT),
        Some(a.ip),
        "the pinned fast path still answers"
    );

    // Deleted under a running daemon: reported, and it keeps serving.
    c.start(true);
    c.wait_log_times("serving", 2, Duration::from_secs(10))
        .unwrap();
    for ext in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{ext}", c.db.display()));
    }
    c.wait_log("the database file was deleted", Duration::from_secs(3))
        .unwrap();
    assert_eq!(offered(&sock, a.mac, 0xc00, WAIT), Some(a.ip));
}

/// A DECLINE flood from one VM (issue 17: 100,000 WARN lines in 20 s) writes
/// a bounded number of lines, the later ones saying how many were suppressed.
#[test]
fn a_decline_flood_from_one_client_writes_few_log_lines() {
    let mut c = Cloud::new();
    let (net, a, sock) = served(&mut c, 83, None);
    let mut decline = RequestFrame::discover(a.mac)
        .with_type(xdhcp::slowpath::reply::DHCPDECLINE)
        .with_option(50, &a.ip.octets())
        .with_option(54, &net.server_ip.octets());
    // Longer than one interval of the limiter, so that a second line is due.
    let flood = xdhcp::ratelimit::LOG_EVERY + Duration::from_secs(1);
    let end = Instant::now() + flood;
    let mut sent = 0u32;
    while Instant::now() < end {
        decline.xid = (0xd00 + sent).to_be_bytes();
        sock.send(&decline.bytes()).unwrap();
        sent += 1;
        std::thread::sleep(Duration::from_millis(2));
    }
    c.wait_log("more suppressed)", Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("after {sent} DECLINEs: {e}"));
    let lines = c.log().matches("DHCPDECLINE").count();
    assert!(
        sent > 1000 && (2..=3).contains(&lines),
        "{sent} DECLINEs wrote {lines} DHCPDECLINE lines:\n{}",
        c.log()
    );
}
