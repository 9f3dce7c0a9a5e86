//! `xdhcp agent` through faults of its own process and of the services it
//! depends on, against a real neutron-server started for this binary alone
//! (RabbitMQ and neutron-server are stopped and restarted here, which
//! the tests of agent.rs must not see): kill -9 and restart, RabbitMQ
//! stopped and started, neutron-server restarted. Clients stay answered
//! throughout, and the agent needs nothing done by hand afterwards.

use std::{
    sync::atomic::{AtomicBool, AtomicUsize, Ordering},
    time::Duration,
};

use serde_json::{json, Value};
use xdhcp_tests::{
    agent::{unique, vm_port, Agent, Vm, ANSWERED},
    neutron::Neutron,
    wait_until,
};

fn new_port(n: &Neutron, net_id: &str, host: &str, device: &str) -> (Value, String) {
    let p = vm_port(n, net_id, host, device, json!({}));
    (p.port, p.ip)
}

/// Runs dhclient in `vm` over and over while `body` runs; every run must get
/// `ip`. The number of DORAs.
fn answered_throughout(vm: &Vm, ip: &str, body: impl FnOnce()) -> usize {
    let stop = AtomicBool::new(false);
    let runs = AtomicUsize::new(0);
    std::thread::scope(|s| {
        let client = s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                let got = vm.dhclient(ANSWERED);
                assert!(got.has(ip, 24), "a client went unanswered: {}", got.text);
                runs.fetch_add(1, Ordering::Relaxed);
            }
        });
        body();
        stop.store(true, Ordering::Relaxed);
        client.join().expect("the client loop");
    });
    runs.into_inner()
}

#[test]
fn serves_through_kill9_rabbitmq_restart_and_neutron_server_restart() {
    let n = Neutron::shared();
    let host = unique("xf");
    let mut agent = Agent::new(n, &host, &unique("azf"));
    agent.start();
    let net_id =
        agent.create_scheduled_network(&format!("xnet-{host}"), "10.127.0.0/24", json!({}));
    let (p1, ip1) = new_port(n, &net_id, &host, "vm-f1");
    let vm1 = agent.plug_answered(&p1, &ip1, Duration::from_secs(30));

    // kill -9: the pinned fast path keeps answering; a port created
    // meanwhile stays DOWN until the restarted agent resyncs and reports it.
    let mut p2 = Value::Null;
    let runs = answered_throughout(&vm1, &ip1, || {
        agent.stop(true);
        let (port, _) = new_port(n, &net_id, &host, "vm-f2");
        std::thread::sleep(Duration::from_secs(3));
        assert_eq!(
            n.port(port["id"].as_str().unwrap()).unwrap()["status"],
            "DOWN"
        );
        agent.start();
        p2 = port;
    });
    eprintln!("kill -9 and restart: {runs} DORAs, all answered");
    let ip2 = p2["fixed_ips"][0]["ip_address"].as_str().unwrap();
    let vm2 = agent.plug_answered(&p2, ip2, Duration::from_secs(30));

    // RabbitMQ stopped: answers go on, and an agent restarted meanwhile
    // serves from its own store; RabbitMQ back: the agent reconnects and
    // resyncs by itself, and new ports go ACTIVE.
    let connects = agent.log().matches("connected to the broker").count();
    let runs = answered_throughout(&vm1, &ip1, || {
        n.stop_rabbitmq();
        wait_until("the agent notices", Duration::from_secs(30), || {
            agent.log().contains("connection to the broker:")
        });
        agent.stop(true);
        agent.spawn();
        std::thread::sleep(Duration::from_secs(3));
        assert!(
            agent.running(),
            "the agent runs without a broker:\n{}",
            agent.log()
        );
        n.start_rabbitmq();
        wait_until("the agent reconnects", Duration::from_secs(90), || {
            agent.log().matches("connected to the broker").count() > connects
        });
    });
    eprintln!("RabbitMQ stop/start with an agent restart: {runs} DORAs, all answered");
    let got = vm2.dhclient(ANSWERED);
    assert!(
        got.has(ip2, 24),
        "served from the store after a restart without broker: {}",
        got.text
    );
    let (p3, ip3) = new_port(n, &net_id, &host, "vm-f3");
    let _vm3 = agent.plug_answered(&p3, &ip3, Duration::from_secs(120));

    // neutron-server restarted: nothing to do by hand.
    let runs = answered_throughout(&vm1, &ip1, || n.restart_neutron_server());
    eprintln!("neutron-server restart: {runs} DORAs, all answered");
    let (p4, ip4) = new_port(n, &net_id, &host, "vm-f4");
    let _vm4 = agent.plug_answered(&p4, &ip4, Duration::from_secs(60));
    n.wait_agent_alive(&host, "DHCP agent", Duration::from_secs(30))
        .unwrap();
    assert!(agent.running(), "{}", agent.log());
}
