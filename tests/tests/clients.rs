//! Real DHCP clients end to end: dhclient (isc-dhcp-client) and udhcpc (busybox)
//! in VM namespaces get their lease from the fast path and apply it (address,
//! routes, MTU, resolv.conf); renew, release, a changed fixed IP (NAK), two
//! networks with the same CIDR; and tshark dissects what went over the wire.

use std::{
    fs::File,
    net::Ipv4Addr,
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use serde_json::Value;
use xdhcp::neutron::model::format_mac;
use xdhcp_tests::craft::RequestFrame;
use xdhcp_tests::{
    cloud::{exchange, msg_type, Cloud, Net, VmPort},
    yiaddr, RawSocket,
};

/// Agent options of every test: the subnets have no router port, so they are
/// isolated and get the metadata route via the DHCP port.
const AGENT: &str = "enable_isolated_metadata = true\n";
/// How long one client run may take.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(20);
/// DNS server and domain every subnet of `Cloud::net_json` hands out.
const DNS: &str = "10.99.0.53";
const DOMAIN: &str = "openstacklocal";

static N: AtomicU32 = AtomicU32::new(0);

/// A path under /tmp unique to this cloud and call.
fn tmp_path(c: &Cloud, what: &str) -> PathBuf {
    let n = N.fetch_add(1, Ordering::Relaxed);
    PathBuf::from(format!("/tmp/xdhcp-clients-{}-{n}-{what}", c.tag))
}

/// A cloud serving `nets` (already imported) with the isolated-metadata agent
/// option; waits until every network is attached.
fn start(c: &mut Cloud, nets: &[&Net]) {
    c.start_with(true, Some(AGENT));
    for net in nets {
        c.wait_attached(net, Duration::from_secs(20)).unwrap();
    }
}

fn counter(c: &Cloud, name: &str) -> u64 {
    let stats = c.stats();
    stats[name]
        .as_u64()
        .unwrap_or_else(|| panic!("no counter {name} in {stats}"))
}

/// The counters the tests compare before and after a client run.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Counters {
    fast_offers: u64,
    fast_acks: u64,
    fast_naks: u64,
    slow_replies: u64,
}

impl Counters {
    fn read(c: &Cloud) -> Self {
        Self {
            fast_offers: counter(c, "fast_offers"),
            fast_acks: counter(c, "fast_acks"),
            fast_naks: counter(c, "fast_naks"),
            slow_replies: counter(c, "slow_replies"),
        }
    }

    /// Read after the daemon's next flush of the slow-path counters (each second).
    fn read_flushed(c: &Cloud) -> Self {
        std::thread::sleep(Duration::from_millis(1200));
        Self::read(c)
    }
}

/// What one command run inside a VM namespace gave.
struct Ran {
    cmd: String,
    /// None: killed after the timeout.
    status: Option<ExitStatus>,
    /// stdout and stderr, interleaved.
    out: String,
}

impl Ran {
    fn ok(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }
}

impl std::fmt::Display for Ran {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "$ {}\n[exit: {}]\n{}",
            self.cmd,
            self.status
                .map_or("killed after timeout".to_string(), |s| s.to_string()),
            self.out
        )
    }
}

/// Kills `child` if it still runs and reaps it.
fn kill_child(child: &mut Child, sig: i32) {
    if matches!(child.try_wait(), Ok(None)) {
        // SAFETY: signalling our own child, which has not been reaped yet.
        unsafe { libc::kill(child.id() as i32, sig) };
    }
    let _ = child.wait();
}

/// A VM namespace as its DHCP client sees it: a private resolv.conf (`ip netns
/// exec` bind-mounts /etc/netns/<ns>/resolv.conf over /etc/resolv.conf), the
/// dhclient pid and lease files, a udhcpc script. Drop stops a daemonised
/// dhclient (by its pid file) and removes every file it made.
struct Guest {
    ns: String,
    etc: PathBuf,
    pid_file: PathBuf,
    lease_file: PathBuf,
    udhcpc_script: PathBuf,
    udhcpc_env: PathBuf,
    out_file: PathBuf,
}

impl Guest {
    fn new(c: &Cloud, vm: usize) -> Self {
        let ns = c.vm_ns(vm).name.clone();
        let etc = PathBuf::from(format!("/etc/netns/{ns}"));
        let guest = Self {
            pid_file: tmp_path(c, "dhclient.pid"),
            lease_file: tmp_path(c, "dhclient.leases"),
            udhcpc_script: tmp_path(c, "udhcpc.sh"),
            udhcpc_env: tmp_path(c, "udhcpc.env"),
            out_file: tmp_path(c, "out"),
            ns,
            etc,
        };
        std::fs::create_dir_all(&guest.etc).expect("creating /etc/netns/<ns>");
        std::fs::write(guest.etc.join("resolv.conf"), "").expect("creating its resolv.conf");
        guest
    }

    /// Runs `ARGS…` in the namespace (`ip netns exec`), killed after `timeout`.
    fn run(&self, args: &[&str], timeout: Duration) -> Ran {
        let cmd = format!("ip netns exec {} {}", self.ns, args.join(" "));
        let out = File::create(&self.out_file).expect("creating the output file");
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup of the output file"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("{cmd}: {e}"));
        let end = Instant::now() + timeout;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if Instant::now() < end => std::thread::sleep(Duration::from_millis(50)),
                _ => {
                    kill_child(&mut child, libc::SIGKILL);
                    break None;
                }
            }
        };
        let out = std::fs::read_to_string(&self.out_file).unwrap_or_default();
        let _ = std::fs::remove_file(&self.out_file);
        Ran { cmd, status, out }
    }

    fn dhclient_args<'a>(&'a self, mode: &'a str) -> Vec<&'a str> {
        let mut args = vec!["dhclient", mode, "-v"];
        args.extend([
            "-pf",
            self.pid_file.to_str().unwrap(),
            "-lf",
            self.lease_file.to_str().unwrap(),
            "-sf",
            "/sbin/dhclient-script",
            "eth0",
        ]);
        args
    }

    /// `dhclient -1`: tries once, returns when bound (dhclient then runs on in
    /// the background to renew).
    fn dhclient(&self) -> Ran {
        self.run(&self.dhclient_args("-1"), CLIENT_TIMEOUT)
    }

    /// `dhclient -x`: stops the background dhclient without a release (its
    /// script deconfigures eth0); the lease file keeps the lease.
    fn dhclient_stop(&self) -> Ran {
        self.run(&self.dhclient_args("-x"), CLIENT_TIMEOUT)
    }

    /// `dhclient -r`: releases the lease and stops the background dhclient.
    fn dhclient_release(&self) -> Ran {
        self.run(&self.dhclient_args("-r"), CLIENT_TIMEOUT)
    }

    /// `udhcpc` once in the foreground, with the stock Debian script plus the
    /// classless static routes (option 121) the stock script leaves out.
    fn udhcpc(&self) -> Ran {
        let script = format!(
            "#!/bin/sh\n\
             /etc/udhcpc/default.script \"$@\" || exit $?\n\
             case $1 in bound|renew)\n\
             \tenv | grep -E '^(ip|subnet|broadcast|router|dns|domain|search|mtu|serverid|lease|hostname|staticroutes|msstaticroutes|opt[0-9]+)=' > {env}\n\
             \tset -- $staticroutes\n\
             \twhile [ $# -ge 2 ]; do ip -4 route replace \"$1\" via \"$2\" dev \"$interface\" || exit 1; shift 2; done\n\
             esac\n",
            env = self.udhcpc_env.display()
        );
        std::fs::write(&self.udhcpc_script, script).expect("writing the udhcpc script");
        std::fs::set_permissions(
            &self.udhcpc_script,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .expect("chmod of the udhcpc script");
        let script = self.udhcpc_script.to_str().unwrap();
        self.run(
            &[
                "udhcpc", "-i", "eth0", "-n", "-q", "-f", "-t", "5", "-s", script,
            ],
            CLIENT_TIMEOUT,
        )
    }

    /// The environment udhcpc gave its script at `bound`.
    fn udhcpc_env(&self) -> String {
        std::fs::read_to_string(&self.udhcpc_env).unwrap_or_default()
    }

    /// One `ip -j ARGS…` in the namespace, parsed.
    fn ip_json(&self, args: &[&str]) -> Value {
        let out = Command::new("ip")
            .args(["-n", &self.ns, "-j"])
            .args(args)
            .output()
            .expect("running ip");
        assert!(
            out.status.success(),
            "ip -n {} -j {args:?}: {}",
            self.ns,
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("ip -j output")
    }

    /// What the client configured in the namespace.
    fn applied(&self) -> Applied {
        let link = self.ip_json(&["-4", "addr", "show", "dev", "eth0"]);
        let addrs = link[0]["addr_info"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| format!("{}/{}", a["local"].as_str().unwrap_or("?"), a["prefixlen"]))
            .collect();
        let routes = self
            .ip_json(&["-4", "route", "show"])
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                (
                    r["dst"].as_str().unwrap_or("?").to_string(),
                    r["gateway"].as_str().unwrap_or("-").to_string(),
                )
            })
            .collect();
        Applied {
            addrs,
            mtu: link[0]["mtu"].as_u64(),
            routes,
            resolv: std::fs::read_to_string(self.etc.join("resolv.conf")).unwrap_or_default(),
        }
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        // A dhclient left in the background (a failed test, or one never released).
        if let Some(pid) = std::fs::read_to_string(&self.pid_file)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
        {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim() == "dhclient" {
                // SAFETY: a dhclient this test started, named by its own pid file.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        for f in [
            &self.pid_file,
            &self.lease_file,
            &self.udhcpc_script,
            &self.udhcpc_env,
            &self.out_file,
        ] {
            let _ = std::fs::remove_file(f);
        }
        let _ = std::fs::remove_dir_all(&self.etc);
    }
}

/// A VM's configuration after its DHCP client ran.
#[derive(Debug)]
struct Applied {
    /// IPv4 addresses on eth0, "a.b.c.d/len".
    addrs: Vec<String>,
    mtu: Option<u64>,
    /// (destination, gateway) as `ip -j route` names them ("default", "-").
    routes: Vec<(String, String)>,
    resolv: String,
}

impl Applied {
    fn via(&self, dst: &str) -> String {
        self.routes
            .iter()
            .filter(|(d, _)| d == dst)
            .map(|(_, gw)| gw.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The values of resolv.conf lines starting with `key`, comma-separated.
    fn resolv(&self, key: &str) -> String {
        self.resolv
            .lines()
            .filter_map(|l| l.trim().strip_prefix(key)?.strip_prefix(' '))
            .map(str::trim)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// What differs from what `port` on `net` (DNS server `dns`) should have
    /// got: one line per mismatch, empty when all is right.
    fn mismatches(&self, port: &VmPort, net: &Net, dns: &str) -> Vec<String> {
        let gw = net.gateway.to_string();
        // dhclient-script writes "search", udhcpc's script only "domain".
        let search = match self.resolv("search") {
            s if s.is_empty() => self.resolv("domain"),
            s => s,
        };
        let checks: [(&str, String, String); 7] = [
            (
                "address/prefix on eth0",
                format!("{}/{}", port.ip, net.prefix),
                self.addrs.join(","),
            ),
            ("default route via", gw.clone(), self.via("default")),
            ("192.168.77.0/24 via", gw, self.via("192.168.77.0/24")),
            (
                "metadata 169.254.169.254/32 via",
                net.server_ip.to_string(),
                self.via("169.254.169.254"),
            ),
            (
                "eth0 MTU (option 26)",
                "1450".into(),
                self.mtu.map_or("none".into(), |m| m.to_string()),
            ),
            (
                "resolv.conf nameserver",
                dns.into(),
                self.resolv("nameserver"),
            ),
            ("resolv.conf search domain", DOMAIN.into(), search),
        ];
        checks
            .into_iter()
            .filter(|(_, want, seen)| want != seen)
            .map(|(what, want, seen)| format!("{what}: want {want:?}, seen {seen:?}"))
            .collect()
    }
}

/// Asserts that `guest` applied `port`'s lease on `net`.
fn assert_configured(guest: &Guest, port: &VmPort, net: &Net, dns: &str, ran: &Ran, c: &Cloud) {
    let applied = guest.applied();
    let wrong = applied.mismatches(port, net, dns);
    assert!(
        wrong.is_empty(),
        "{wrong:#?}\napplied: {applied:#?}\nclient:\n{ran}\n{}daemon log:\n{}",
        match guest.udhcpc_env() {
            e if e.is_empty() => String::new(),
            e => format!("udhcpc script environment:\n{e}\n"),
        },
        c.log()
    );
}

/// A tshark capture of DHCP on a VM's eth0, started before and stopped after a
/// client run. Drop stops it and removes its files.
struct Capture {
    child: Option<Child>,
    pcap: PathBuf,
    log: PathBuf,
}

impl Capture {
    fn start(c: &Cloud, vm: usize) -> Self {
        let ns = c.vm_ns(vm).name.clone();
        let pcap = tmp_path(c, "dhcp.pcap");
        let log = tmp_path(c, "tshark.log");
        let err = File::create(&log).expect("creating the tshark log");
        let child = Command::new("ip")
            .args(["netns", "exec", &ns, "tshark", "-i", "eth0", "-w"])
            .arg(&pcap)
            .args(["-f", "udp port 67 or udp port 68"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .expect("starting tshark");
        let cap = Self {
            child: Some(child),
            pcap,
            log,
        };
        // tshark says so on stderr once dumpcap has the device open (its
        // start-up alone takes seconds on a loaded 2-core machine).
        let end = Instant::now() + Duration::from_secs(40);
        while !cap.log_text().contains("Capturing on") {
            assert!(
                Instant::now() < end,
                "tshark did not start capturing:\n{}",
                cap.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        cap
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops the capture and returns tshark's full dissection of it, with IP
    /// and UDP checksums verified.
    fn finish(&mut self) -> String {
        // Let the last frames reach the capture file.
        std::thread::sleep(Duration::from_millis(500));
        if let Some(mut child) = self.child.take() {
            kill_child(&mut child, libc::SIGINT);
        }
        let out = Command::new("tshark")
            .arg("-r")
            .arg(&self.pcap)
            .args([
                "-V",
                "-o",
                "ip.check_checksum:TRUE",
                "-o",
                "udp.check_checksum:TRUE",
            ])
            .output()
            .expect("running tshark -r");
        assert!(
            out.status.success(),
            "tshark -r: {}\ncapture log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log_text()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_child(&mut child, libc::SIGTERM);
        }
        let _ = std::fs::remove_file(&self.pcap);
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Asserts that a dissection holds a well-formed OFFER and ACK with good
/// checksums, and nothing tshark finds wrong.
fn assert_clean_dissection(text: &str) {
    let lower = text.to_lowercase();
    let count = |s: &str| lower.matches(&s.to_lowercase()).count();
    let frames = text.lines().filter(|l| l.starts_with("Frame ")).count();
    let checks: [(&str, bool); 6] = [
        ("an OFFER decoded", count("DHCP Message Type (Offer)") >= 1),
        ("an ACK decoded", count("DHCP Message Type (ACK)") >= 1),
        // "[Header checksum status: Good]" (IP) and "[Checksum Status: Good]" (UDP).
        (
            "IP and UDP checksums verified good in every frame",
            frames >= 4 && count("status: good]") == 2 * frames,
        ),
        (
            "no bad checksum",
            count("status: bad]")
                + count("bad checksum")
                + count("[incorrect")
                + count(" incorrect")
                == 0,
        ),
        ("no malformed packet", count("malformed") == 0),
        ("no expert error", count("[expert info (error") == 0),
    ];
    let wrong: Vec<&str> = checks
        .iter()
        .filter(|(_, ok)| !ok)
        .map(|(w, _)| *w)
        .collect();
    assert!(
        wrong.is_empty(),
        "{wrong:?} in the capture ({frames} frames):\n{text}"
    );
}

/// The lease row of `mac` in `xdhcp leases --json`.
fn lease_row(c: &Cloud, mac: &[u8; 6]) -> Option<Value> {
    let out = c.xdhcp(&["leases", "--json"]);
    let leases: Value = serde_json::from_slice(&out.stdout).ok()?;
    let mac = format_mac(mac);
    leases.as_array()?.iter().find(|l| l["mac"] == mac).cloned()
}

/// Polls `xdhcp leases --json` until `mac`'s lease is in `state` (the daemon
/// records leases each second); returns the last row seen.
fn lease_in_state(c: &Cloud, mac: &[u8; 6], state: &str) -> Result<Value, Option<Value>> {
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        let row = lease_row(c, mac);
        match &row {
            Some(r) if r["state"] == state => return Ok(r.clone()),
            _ if Instant::now() >= end => return Err(row),
            _ => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// A cloud with one network and one VM port on it, served, and the VM.
fn one_vm(octet: u8) -> (Cloud, Net, VmPort, usize, RawSocket) {
    let mut c = Cloud::new();
    let (net, port) = c.net_with_vm(octet);
    start(&mut c, &[&net]);
    let (vm, sock) = c.vm(&port).unwrap();
    (c, net, port, vm, sock)
}

/// [`one_vm`], its VM's dhclient bound to the port's address, and the guest.
fn dhclient_bound(octet: u8) -> (Cloud, Net, VmPort, RawSocket, Guest) {
    let (c, net, port, vm, sock) = one_vm(octet);
    let guest = Guest::new(&c, vm);
    let ran = guest.dhclient();
    assert!(
        ran.ok() && ran.out.contains(&format!("DHCPACK of {}", port.ip)),
        "first lease:\n{ran}\ndaemon log:\n{}",
        c.log()
    );
    (c, net, port, sock, guest)
}

/// Asserts the fast path answered (OFFER and ACK) and the slow path did not.
fn assert_fast(before: Counters, after: Counters, ran: &Ran, c: &Cloud) {
    assert!(
        after.fast_offers > before.fast_offers
            && after.fast_acks > before.fast_acks
            && after.slow_replies == before.slow_replies,
        "want more fast_offers and fast_acks, same slow_replies: before {before:?}, after {after:?}\n\
         client:\n{ran}\ndaemon log:\n{}",
        c.log()
    );
}

/// Runs `client` in the VM of a served network (10.`octet`.0.0/24) under a
/// capture and checks what every client must get: a lease (`bound` checks it
/// is the port's), the port's configuration applied, answers from the fast
/// path alone, and nothing malformed on the wire. Returns the cloud and the
/// guest, still running.
fn lease_from_the_fast_path(
    octet: u8,
    client: fn(&Guest) -> Ran,
    bound: fn(&Guest, &Ran, &Net, &VmPort),
) -> (Cloud, Guest) {
    let (c, net, port, vm, _sock) = one_vm(octet);
    let guest = Guest::new(&c, vm);
    let mut capture = Capture::start(&c, vm);
    let before = Counters::read(&c);

    let ran = client(&guest);
    let dissection = capture.finish();
    assert!(
        ran.ok(),
        "the client failed:\n{ran}\ndaemon log:\n{}",
        c.log()
    );
    bound(&guest, &ran, &net, &port);
    assert_configured(&guest, &port, &net, DNS, &ran, &c);
    assert_fast(before, Counters::read_flushed(&c), &ran, &c);
    assert_clean_dissection(&dissection);
    (c, guest)
}

#[test]
fn dhclient_gets_and_applies_its_lease_from_the_fast_path() {
    let (_c, guest) = lease_from_the_fast_path(71, Guest::dhclient, |_, ran, _, port| {
        assert!(
            ran.out.contains(&format!("DHCPACK of {}", port.ip)),
            "no ACK of the port's address:\n{ran}"
        );
    });
    let rel = guest.dhclient_release();
    assert!(rel.ok(), "{rel}");
}

#[test]
fn udhcpc_gets_and_applies_its_lease_from_the_fast_path() {
    lease_from_the_fast_path(72, Guest::udhcpc, |guest, ran, net, port| {
        let env = guest.udhcpc_env();
        assert!(
            env.lines().any(|l| l == format!("ip={}", port.ip))
                && env
                    .lines()
                    .any(|l| l == format!("serverid={}", net.server_ip)),
            "udhcpc bound to the wrong lease or server:\n{env}\n{ran}"
        );
    });
}

#[test]
fn dhclient_renews_reboots_and_releases() {
    let (c, net, port, sock, guest) = dhclient_bound(73);
    let bound = lease_in_state(&c, &port.mac, "bound")
        .unwrap_or_else(|row| panic!("no bound lease: {row:?}\nlog:\n{}", c.log()));
    assert_eq!(
        bound["ip"].as_str(),
        Some(port.ip.to_string().as_str()),
        "{bound}"
    );

    // RENEWING (RFC 2131 §4.3.2): unicast to the server, ciaddr set, no 50/54;
    // the ACK comes back unicast to ciaddr.
    let before = Counters::read(&c);
    let mut renew = RequestFrame::request(port.mac, port.ip, net.server_ip)
        .without_option(54)
        .without_option(50)
        .unicast_from(port.ip, net.server_ip, net.dhcp_mac);
    renew.xid = [0x73, 0, 0, 1];
    let ack = exchange(&sock, &renew, Duration::from_secs(3))
        .unwrap_or_else(|| panic!("no answer to a RENEWING request; log:\n{}", c.log()));
    let dst = Ipv4Addr::new(ack[30], ack[31], ack[32], ack[33]);
    assert_eq!(
        (
            msg_type(&ack),
            yiaddr(&ack),
            dst,
            <[u8; 6]>::try_from(&ack[0..6]).unwrap()
        ),
        (Some(5), port.ip, port.ip, port.mac),
        "ACK to the RENEWING request, unicast to ciaddr: {ack:02x?}"
    );
    assert!(
        Counters::read(&c).fast_acks > before.fast_acks,
        "the renewal was not ACKed by the fast path"
    );

    // INIT-REBOOT: dhclient stopped, started again with its lease file, asks
    // for its address (50, no 54) and is ACKed without a DISCOVER.
    let stop = guest.dhclient_stop();
    assert!(stop.ok(), "{stop}");
    let before = Counters::read(&c);
    let ran = guest.dhclient();
    assert!(
        ran.ok()
            && ran.out.contains(&format!("DHCPREQUEST for {}", port.ip))
            && ran.out.contains(&format!("DHCPACK of {}", port.ip))
            && !ran.out.contains("DHCPDISCOVER"),
        "INIT-REBOOT not ACKed:\n{ran}\ndaemon log:\n{}",
        c.log()
    );
    let after = Counters::read_flushed(&c);
    assert!(
        after.fast_acks > before.fast_acks && after.slow_replies == before.slow_replies,
        "the reboot ACK was not the fast path's: before {before:?}, after {after:?}"
    );
    assert_configured(&guest, &port, &net, DNS, &ran, &c);

    // RELEASE goes to the slow path, which records it.
    let rel = guest.dhclient_release();
    assert!(rel.ok() && rel.out.contains("DHCPRELEASE"), "{rel}");
    if let Err(row) = lease_in_state(&c, &port.mac, "released") {
        panic!(
            "the release was not recorded: {row:?}\n{rel}\ndaemon log:\n{}",
            c.log()
        );
    }
}

#[test]
fn a_changed_fixed_ip_is_naked_and_the_new_one_bound() {
    let (c, net, port, sock, guest) = dhclient_bound(74);
    let stop = guest.dhclient_stop();
    assert!(stop.ok(), "{stop}");

    // The port's fixed IP changes in the database.
    let mut moved = port.clone();
    moved.ip = Ipv4Addr::new(10, 74, 0, 40);
    c.import_ok(&Cloud::ports_json(&[&moved]));
    // Wait until the fast path knows (a DISCOVER probe is offered the new IP).
    let end = Instant::now() + Duration::from_secs(5);
    let mut offered = None;
    for xid in 0x7400_0000u32.. {
        let mut probe = RequestFrame::discover(port.mac);
        probe.xid = xid.to_be_bytes();
        offered = exchange(&sock, &probe, Duration::from_millis(300)).map(|f| yiaddr(&f));
        if offered == Some(moved.ip) || Instant::now() > end {
            break;
        }
    }
    assert_eq!(
        offered,
        Some(moved.ip),
        "new IP never offered; log:\n{}",
        c.log()
    );

    // dhclient reboots with its old lease: NAK, then DISCOVER → the new address.
    let before = Counters::read(&c);
    let ran = guest.dhclient();
    let after = Counters::read_flushed(&c);
    assert!(
        ran.ok()
            && ran.out.contains(&format!("DHCPREQUEST for {}", port.ip))
            && ran.out.contains("DHCPNAK")
            && ran.out.contains(&format!("DHCPACK of {}", moved.ip)),
        "want REQUEST of the old address, NAK, ACK of the new:\n{ran}\ndaemon log:\n{}",
        c.log()
    );
    assert!(
        after.fast_naks > before.fast_naks && after.fast_acks > before.fast_acks,
        "NAK and ACK not from the fast path: before {before:?}, after {after:?}"
    );
    assert_configured(&guest, &moved, &net, DNS, &ran, &c);
}

#[test]
fn overlapping_cidrs_each_vm_gets_its_own_networks_answer() {
    let mut c = Cloud::new();
    // Both 10.75.0.0/24; network b's DHCP port is .3 and its DNS server
    // differs, so every answer shows which network it came from.
    let a = c.net(75);
    let mut b = c.net(75);
    b.server_ip = Ipv4Addr::new(10, 75, 0, 3);
    assert_eq!((a.cidr.as_str(), a.gateway), (b.cidr.as_str(), b.gateway));
    c.import_ok(&c.net_json(&a));
    let mut doc_b = c.net_json(&b);
    doc_b["subnets"][0]["dns_nameservers"] = serde_json::json!(["10.99.0.54"]);
    c.import_ok(&doc_b);
    let pa = c.vm_port(&a, 10);
    let pb = c.vm_port(&b, 20);
    c.import_ok(&Cloud::ports_json(&[&pa, &pb]));
    start(&mut c, &[&a, &b]);
    let (vma, _sa) = c.vm(&pa).unwrap();
    let (vmb, _sb) = c.vm(&pb).unwrap();
    let ga = Guest::new(&c, vma);
    let gb = Guest::new(&c, vmb);
    let before = Counters::read(&c);

    // a with dhclient, b with udhcpc; both hear each other's server too.
    let ran = ga.dhclient();
    assert!(
        ran.ok()
            && ran
                .out
                .contains(&format!("DHCPACK of {} from {}", pa.ip, a.server_ip)),
        "a not answered by its own server:\n{ran}\ndaemon log:\n{}",
        c.log()
    );
    assert_configured(&ga, &pa, &a, DNS, &ran, &c);
    let ran = gb.udhcpc();
    let env = gb.udhcpc_env();
    assert!(
        ran.ok()
            && env.lines().any(|l| l == format!("ip={}", pb.ip))
            && env
                .lines()
                .any(|l| l == format!("serverid={}", b.server_ip)),
        "b not answered by its own server:\n{env}\n{ran}\ndaemon log:\n{}",
        c.log()
    );
    assert_configured(&gb, &pb, &b, "10.99.0.54", &ran, &c);
    let after = Counters::read_flushed(&c);
    assert!(
        after.fast_acks >= before.fast_acks + 2 && after.slow_replies == before.slow_replies,
        "both from the fast path, no slow reply to the other network's client: \
         before {before:?}, after {after:?}\ndaemon log:\n{}",
        c.log()
    );
}
