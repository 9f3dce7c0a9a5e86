//! `xdhcp agent` against a real neutron-server (MariaDB, RabbitMQ, userspace
//! OVS and an L2 agent, started once for this test binary): scheduled over
//! RPC, plugged into the integration bridge, answering a real dhclient from
//! the fast path, turning ports ACTIVE with dhcp_ready_on_ports, following
//! port updates and deletes, admin state, network removal and HA.
//!
//! The tests run in parallel on one neutron-server: each has its own hosts,
//! availability zone and subnet (see `xdhcp_tests::agent`). Faults of the
//! shared services (RabbitMQ, neutron-server restarts) are in agent_faults.rs,
//! a binary of their own.

use std::time::{Duration, Instant};

use serde_json::json;
use xdhcp_tests::{
    agent::{unique, vm_port, Agent, Vm, VmPort, ANSWERED},
    neutron::Neutron,
    wait_until,
};

/// dhclient's limit when no answer is expected.
const SILENT: Duration = Duration::from_secs(6);

#[test]
fn scheduled_by_neutron_server_answers_from_xdp_and_follows_port_changes() {
    let n = Neutron::shared();
    let host = unique("xa");
    let mut agent = Agent::new(n, &host, &unique("aza"));
    agent.start();

    let net_id = agent.create_network(
        &format!("xnet-{host}"),
        "10.123.0.0/24",
        json!({"dns_nameservers": ["10.99.0.53"], "host_routes": [{"destination": "192.168.77.0/24", "nexthop": "10.123.0.1"}]}),
    );
    wait_until(
        "the network is hosted by xdhcp",
        Duration::from_secs(30),
        || {
            n.dhcp_agents_of(&net_id)
                .unwrap()
                .to_string()
                .contains(&host)
        },
    );
    let t_create = Instant::now();
    let port = n
        .create_port(
            &net_id,
            json!({"binding:host_id": host, "device_owner": "compute:nova", "device_id": "vm-1",
               "extra_dhcp_opts": [{"opt_name": "ntp-server", "opt_value": "10.123.0.99"}]}),
        )
        .unwrap();
    let port_id = port["id"].as_str().unwrap().to_string();
    let mac = port["mac_address"].as_str().unwrap().to_string();
    let vm = Vm::plug(n, &port);
    let active = n
        .wait_port_status(&port_id, "ACTIVE", Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e:#}\nagent log:\n{}", agent.log()));
    eprintln!(
        "port create → ACTIVE: {:?} (from create: {:?})",
        active,
        t_create.elapsed()
    );
    assert!(
        agent.log().contains("dhcp_ready_on_ports"),
        "ACTIVE because of dhcp_ready_on_ports:\n{}",
        agent.log()
    );
    let ip_addr = port["fixed_ips"][0]["ip_address"]
        .as_str()
        .unwrap()
        .to_string();
    let acks = agent.fast_acks();
    let got = vm.dhclient(ANSWERED);
    assert!(
        got.has(&ip_addr, 24),
        "dhclient: {}\nagent log:\n{}",
        got.text,
        agent.log()
    );
    assert!(
        got.text.contains("mtu 1400"),
        "dnsmasq_config_file's MTU 1400 applied: {}",
        got.text
    );
    assert_eq!(
        got.option("domain-name-servers").as_deref(),
        Some("10.99.0.53"),
        "{}",
        got.lease
    );
    assert_eq!(
        got.option("ntp-servers").as_deref(),
        Some("10.123.0.99"),
        "extra_dhcp_opts: {}",
        got.lease
    );
    assert_eq!(
        got.option("routers").as_deref(),
        Some("10.123.0.1"),
        "{}",
        got.lease
    );
    let routes = got
        .option("rfc3442-classless-static-routes")
        .unwrap_or_default();
    assert!(
        routes.contains("24,192,168,77,10,123,0,1"),
        "the subnet's host route: {routes}"
    );
    assert!(
        agent.fast_acks() > acks,
        "answered by the fast path: {}",
        agent.xdhcp(&["stats", "--json"])
    );

    // What an operator's monitoring sees: connected, reporting, healthy, and
    // the network's own fast-path counters.
    assert_eq!(
        agent.metric("xdhcp_agent_connected"),
        Some(1.0),
        "{}",
        agent.metrics()
    );
    let last_report = agent
        .metric("xdhcp_agent_last_report_timestamp_seconds")
        .unwrap_or(0.0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        now - last_report < 10.0,
        "report_state within 10 s: {last_report} vs {now}"
    );
    let acks_here = agent
        .metric(&format!(
            "xdhcp_network_fast_acks_total{{network=\"{net_id}\"}}"
        ))
        .unwrap_or(0.0);
    assert!(acks_here >= 1.0, "the network's ACKs: {}", agent.metrics());
    // Healthy, or within a status period or two of it: the status file is
    // written every 2 s, and a network re-plumbed meanwhile (its DHCP port
    // updated by neutron-server) is briefly between devices.
    let t_status = Instant::now();
    let report = loop {
        let (healthy, report) = agent.status();
        if healthy {
            break report;
        }
        assert!(
            t_status.elapsed() < Duration::from_secs(10),
            "xdhcp status unhealthy for 10 s: {report:#}\nagent log:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    eprintln!("healthy after {:?}", t_status.elapsed());
    assert_eq!(
        report["agent"]["broker_connected"],
        json!(true),
        "{report:#}"
    );

    // Port update: a new fixed IP and a new extra option at the next DORA.
    n.update_port(
        &port_id,
        json!({"fixed_ips": [{"ip_address": "10.123.0.77"}],
               "extra_dhcp_opts": [{"opt_name": "ntp-server", "opt_value": "10.123.0.98"}]}),
    )
    .unwrap();
    let t = wait_until(
        "the update reaches the fast path",
        Duration::from_secs(20),
        || agent.fast_path_ip(&mac).as_deref() == Some("10.123.0.77"),
    );
    eprintln!("port update → fast path: {t:?}");
    let got = vm.dhclient(ANSWERED);
    assert!(got.has("10.123.0.77", 24), "after the update: {}", got.text);
    assert_eq!(
        got.option("ntp-servers").as_deref(),
        Some("10.123.0.98"),
        "{}",
        got.lease
    );

    // Port delete: its MAC is not answered.
    n.delete_port(&port_id).unwrap();
    wait_until(
        "the delete reaches the fast path",
        Duration::from_secs(20),
        || agent.fast_path_ip(&mac).is_none(),
    );
    let got = vm.dhclient(SILENT);
    assert!(!got.ok, "a deleted port was answered: {}", got.text);
    assert!(agent.running(), "agent exited:\n{}", agent.log());
}

#[test]
fn admin_down_and_network_removal_stop_serving_and_undoing_them_serves_again() {
    let n = Neutron::shared();
    let host = unique("xb");
    let mut agent = Agent::new(n, &host, &unique("azb"));
    let agent_obj = agent.start();
    let agent_id = agent_obj["id"].as_str().unwrap().to_string();
    let net_id =
        agent.create_scheduled_network(&format!("xnet-{host}"), "10.124.0.0/24", json!({}));
    let VmPort {
        port,
        ip: ip_addr,
        mac,
        ..
    } = vm_port(n, &net_id, &host, "vm-b", json!({}));
    let vm = agent.plug_answered(&port, &ip_addr, Duration::from_secs(30));
    let qdhcp = xdhcp::netns::names::namespace_name(&net_id);
    let ns_exists = |name: &str| {
        std::fs::read_dir("/run/netns")
            .map(|d| d.flatten().any(|e| e.file_name() == name))
            .unwrap_or(false)
    };
    assert!(ns_exists(&qdhcp), "{qdhcp} plumbed");
    // After `step`: out of the fast path, the namespace gone, no answer.
    let stopped = |step: &str| {
        wait_until(
            &format!("{step} reaches the fast path"),
            Duration::from_secs(20),
            || agent.fast_path_ip(&mac).is_none(),
        );
        wait_until(
            "the qdhcp namespace is removed",
            Duration::from_secs(20),
            || !ns_exists(&qdhcp),
        );
        let got = vm.dhclient(SILENT);
        assert!(!got.ok, "served after {step}: {}", got.text);
    };
    // After `step`: back in the fast path and answered.
    let served = |step: &str| {
        wait_until(
            &format!("{step} reaches the fast path"),
            Duration::from_secs(30),
            || agent.fast_path_ip(&mac).is_some(),
        );
        let got = vm.dhclient(ANSWERED);
        assert!(
            got.has(&ip_addr, 24),
            "after {step}: {}\n{}",
            got.text,
            agent.log()
        );
    };

    // admin_state_up false: the DHCP port released, nothing served.
    n.set_agent_admin_state(&agent_id, false).unwrap();
    wait_until("the DHCP port is released", Duration::from_secs(20), || {
        agent.dhcp_port_ip(&net_id).is_none()
    });
    stopped("admin-down");
    // admin_state_up true: served again.
    n.set_agent_admin_state(&agent_id, true).unwrap();
    served("admin-up");

    // dhcp-agent-network-remove: not served here; add: served again.
    n.remove_network_from_agent(&agent_id, &net_id).unwrap();
    stopped("network-remove");
    n.add_network_to_agent(&agent_id, &net_id).unwrap();
    served("network-add");
    assert!(agent.running(), "agent exited:\n{}", agent.log());
}

#[test]
fn two_agents_give_the_same_answers_and_either_alone_serves() {
    let n = Neutron::shared();
    let az = unique("azc");
    let mut a = Agent::new(n, &unique("xc"), &az);
    let mut b = Agent::new(n, &unique("xd"), &az);
    // Each agent's own DHCP port would be the metadata next hop: off, so that
    // the two answers can be compared whole.
    a.isolated_metadata = false;
    b.isolated_metadata = false;
    a.start();
    b.start();
    let net_id = a.create_network(
        &format!("xnet-{}", a.host),
        "10.125.0.0/24",
        json!({"dns_nameservers": ["10.99.0.53", "10.99.0.54"]}),
    );
    b.networks.push(net_id.clone());
    let hosts = n
        .wait_dhcp_agents(&net_id, 2, Duration::from_secs(30))
        .unwrap();
    assert!(
        hosts.contains(&a.host) && hosts.contains(&b.host),
        "{hosts:?}"
    );
    let VmPort {
        port,
        ip: ip_addr,
        mac,
        ..
    } = vm_port(
        n,
        &net_id,
        &a.host,
        "vm-c",
        json!({"extra_dhcp_opts": [{"opt_name": "ntp-server", "opt_value": "10.125.0.99"}]}),
    );
    let vm = Vm::plug(n, &port);
    n.wait_port_status(
        port["id"].as_str().unwrap(),
        "ACTIVE",
        Duration::from_secs(30),
    )
    .unwrap_or_else(|e| panic!("{e:#}\nagent logs:\n{}\n{}", a.log(), b.log()));
    for agent in [&a, &b] {
        wait_until(
            &format!("{} serves the port", agent.host),
            Duration::from_secs(20),
            || agent.fast_path_ip(&mac).as_deref() == Some(ip_addr.as_str()),
        );
    }
    let (ip_a, ip_b) = (
        a.dhcp_port_ip(&net_id).unwrap(),
        b.dhcp_port_ip(&net_id).unwrap(),
    );
    assert_ne!(ip_a, ip_b, "each agent has its own DHCP port");
    assert!(vm.dhclient(ANSWERED).has(&ip_addr, 24));

    // Each alone: the node of the other gone (killed, its fast path removed).
    b.stop(true);
    b.down();
    let from_a = vm.dhclient(ANSWERED);
    assert!(from_a.has(&ip_addr, 24), "a alone: {}", from_a.text);
    assert_eq!(from_a.option("dhcp-server-identifier"), Some(ip_a.clone()));
    b.start();
    wait_until("b serves the port again", Duration::from_secs(30), || {
        b.fast_path_ip(&mac).is_some()
    });
    a.stop(true);
    a.down();
    let from_b = vm.dhclient(ANSWERED);
    assert!(from_b.has(&ip_addr, 24), "b alone: {}", from_b.text);
    assert_eq!(from_b.option("dhcp-server-identifier"), Some(ip_b.clone()));
    let strip = |d: &xdhcp_tests::agent::Dhcp| -> Vec<String> {
        d.options()
            .into_iter()
            .filter(|l| !l.starts_with("option dhcp-server-identifier"))
            .collect()
    };
    assert_eq!(
        strip(&from_a),
        strip(&from_b),
        "the same answers from both agents"
    );
    assert!(from_a.option("ntp-servers").is_some(), "{}", from_a.lease);
}

#[test]
fn a_call_that_fails_on_the_server_is_logged_and_retried_until_it_succeeds() {
    let n = Neutron::shared();
    let host = unique("xe");
    let mut agent = Agent::new(n, &host, &unique("aze"));
    agent.start();
    // A pool of two addresses, both taken before DHCP is enabled on the
    // subnet: create_dhcp_port then fails on the server
    // (IpAddressGenerationFailure). Deleting the blocking port sends the
    // agent only a port_delete_end, which does not make it fetch the
    // network: the DHCP port is created by the agent's own retry.
    let net_id = agent.create_network(
        &format!("xnet-{host}"),
        "10.126.0.0/24",
        json!({"allocation_pools": [{"start": "10.126.0.10", "end": "10.126.0.11"}], "enable_dhcp": false}),
    );
    let port = vm_port(n, &net_id, &host, "vm-e", json!({})).port;
    let blocker = vm_port(n, &net_id, &host, "vm-e-blocker", json!({})).port;
    let mac = port["mac_address"].as_str().unwrap().to_string();
    let subnet_id = port["fixed_ips"][0]["subnet_id"]
        .as_str()
        .unwrap()
        .to_string();
    n.put(
        &format!("/v2.0/subnets/{subnet_id}"),
        &json!({"subnet": {"enable_dhcp": true}}),
    )
    .unwrap();
    wait_until(
        "create_dhcp_port fails and is logged",
        Duration::from_secs(30),
        || {
            agent
                .log()
                .contains("create_dhcp_port failed on the server")
        },
    );
    // Retried every resync_interval (2 s here) while it fails.
    std::thread::sleep(Duration::from_secs(5));
    assert!(agent.dhcp_port_ip(&net_id).is_none());
    n.delete_port(blocker["id"].as_str().unwrap()).unwrap();
    wait_until(
        "the retried call succeeds and the port is served",
        Duration::from_secs(30),
        || agent.fast_path_ip(&mac).is_some(),
    );
    assert_eq!(
        agent.dhcp_port_ip(&net_id).as_deref(),
        blocker["fixed_ips"][0]["ip_address"].as_str()
    );
    let failures = agent.log().matches("create_dhcp_port failed").count();
    assert!(
        (1..=2).contains(&failures),
        "the same failure is logged once per failing step, not on every retry:\n{}",
        agent.log()
    );
    let vm = Vm::plug(n, &port);
    let ip_addr = port["fixed_ips"][0]["ip_address"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(vm.dhclient(ANSWERED).has(&ip_addr, 24), "{}", agent.log());
}

/// Port create → ACTIVE for 20 ports, created one after another and each
/// plugged as Nova plugs a VM: the figures are printed (run with
/// `--nocapture`); the test asserts only that every port goes ACTIVE.
#[test]
fn port_create_to_active_over_twenty_ports() {
    let n = Neutron::shared();
    let host = unique("xg");
    let mut agent = Agent::new(n, &host, &unique("azg"));
    agent.start();
    let net_id =
        agent.create_scheduled_network(&format!("xnet-{host}"), "10.128.0.0/24", json!({}));
    let mut times = Vec::new();
    let mut vms = Vec::new();
    for i in 0..20 {
        let t0 = Instant::now();
        let port = vm_port(n, &net_id, &host, &format!("vm-g{i}"), json!({})).port;
        vms.push(Vm::plug(n, &port));
        n.wait_port_status(
            port["id"].as_str().unwrap(),
            "ACTIVE",
            Duration::from_secs(30),
        )
        .unwrap_or_else(|e| panic!("port {i}: {e:#}\n{}", agent.log()));
        times.push(t0.elapsed());
    }
    times.sort();
    eprintln!(
        "port create → ACTIVE over {} ports (POST /v2.0/ports to status ACTIVE, VM plugged right after the POST): p50 {:.3} s, max {:.3} s, min {:.3} s",
        times.len(),
        times[times.len() / 2].as_secs_f64(),
        times[times.len() - 1].as_secs_f64(),
        times[0].as_secs_f64()
    );
}

/// `ovs_use_veth = False`: the DHCP port is an OVS internal port `tap<PORT>`
/// moved into the qdhcp namespace, as neutron's OVSInterfaceDriver does. The
/// harness's bridge (datapath `dummy`) has no kernel devices for internal
/// ports, so this test uses a bridge of its own with datapath `netdev` (its
/// internal ports are tap devices) in the same ovs-vswitchd, removed at the
/// end. The stand-in L2 agent does not watch that bridge, so ports there stay
/// DOWN: this test is about the plumbing and the answers.
#[test]
fn ovs_use_veth_false_plugs_an_internal_port_into_the_namespace() {
    struct Bridge(&'static Neutron, String);
    impl Drop for Bridge {
        fn drop(&mut self) {
            let _ = self.0.ovs_vsctl(&["--if-exists", "del-br", &self.1]);
        }
    }
    let n = Neutron::shared();
    let host = unique("xh");
    let br = Bridge(n, format!("brnd{}", std::process::id() % 100_000));
    n.ovs_vsctl(&[
        "add-br",
        &br.1,
        "--",
        "set",
        "bridge",
        &br.1,
        "datapath_type=netdev",
        "fail_mode=standalone",
    ])
    .unwrap();
    let mut agent = Agent::new(n, &host, &unique("azh"));
    agent.use_veth = false;
    agent.bridge = br.1.clone();
    agent.start();
    let net_id =
        agent.create_scheduled_network(&format!("xnet-{host}"), "10.129.0.0/24", json!({}));
    let VmPort {
        ip: ip_addr, mac, ..
    } = vm_port(n, &net_id, &host, "vm-h", json!({}));
    wait_until(
        "the port is in the fast path",
        Duration::from_secs(30),
        || agent.fast_path_ip(&mac).is_some(),
    );
    let dhcp_ip = agent.dhcp_port_ip(&net_id).expect("a DHCP port");
    let dhcp_port = n
        .get(&format!(
            "/v2.0/ports?network_id={net_id}&device_owner=network:dhcp"
        ))
        .unwrap()["ports"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let tap = xdhcp::netns::names::tap_name(&dhcp_port);
    let qdhcp = xdhcp::netns::names::namespace_name(&net_id);
    wait_until(
        "the internal port is up in the namespace with its IP",
        Duration::from_secs(20),
        || {
            let out = std::process::Command::new("ip")
                .args(["-n", &qdhcp, "-d", "addr", "show", &tap])
                .output()
                .unwrap();
            let s = String::from_utf8_lossy(&out.stdout);
            s.contains(&format!("inet {dhcp_ip}/24"))
                && s.contains("tun type tap")
                && s.contains("UP")
        },
    );
    let iface = n
        .ovs_vsctl(&["get", "Interface", &tap, "type", "external_ids"])
        .unwrap();
    assert!(
        iface.starts_with("internal")
            && iface.contains(&format!("iface-id=\"{dhcp_port}\""))
            && iface.contains("iface-status=active"),
        "the OVS interface: {iface}"
    );
    assert!(
        !std::path::Path::new(&format!("/sys/class/net/{tap}")).exists(),
        "{tap} left in the host namespace"
    );
    // A VM on the same bridge.
    let ns = xdhcp::netns::TempNs::new("xvm-h").unwrap();
    let host_side = format!("qvh{}", std::process::id() % 100_000);
    xdhcp::netns::ip(&[
        "link", "add", &host_side, "type", "veth", "peer", "name", "eth0", "netns", &ns.name,
    ])
    .unwrap();
    ns.ip(&["link", "set", "eth0", "address", &mac]).unwrap();
    ns.ip(&["link", "set", "eth0", "up"]).unwrap();
    xdhcp::netns::ip(&["link", "set", &host_side, "up"]).unwrap();
    n.ovs_vsctl(&["add-port", &br.1, &host_side]).unwrap();
    let acks = agent.fast_acks();
    let out = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.name,
            "timeout",
            "20",
            "udhcpc",
            "-f",
            "-q",
            "-n",
            "-i",
            "eth0",
            "-s",
            "/bin/true",
        ])
        .output()
        .unwrap();
    let log =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    let _ = n.ovs_vsctl(&["--if-exists", "del-port", &br.1, &host_side]);
    let _ = xdhcp::netns::ip(&["link", "del", &host_side]);
    assert!(
        out.status.success() && log.contains(&format!("lease of {ip_addr} obtained")),
        "udhcpc: {log}\n{}",
        agent.log()
    );
    assert!(agent.fast_acks() > acks, "answered by the fast path");
    assert!(
        agent
            .log()
            .contains("moved OVS internal port into namespace"),
        "{}",
        agent.log()
    );
    agent.down();
    drop(agent);
    let left = n.ovs_vsctl(&["list-ports", &br.1]).unwrap();
    assert!(left.trim().is_empty(), "left on the bridge: {left}");
    assert!(
        !std::path::Path::new(&format!("/run/netns/{qdhcp}")).exists(),
        "{qdhcp} left"
    );
}
