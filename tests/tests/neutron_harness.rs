//! The Neutron harness itself (xdhcp_tests::neutron): a real neutron-server
//! with its MariaDB, RabbitMQ and OVS comes up, an L2 agent registers for a
//! host, and networks, subnets and bound ports can be created.

use std::time::{Duration, Instant};

use serde_json::json;
use xdhcp_tests::neutron::{Neutron, OVS_AGENT_TYPE};

#[test]
fn neutron_control_plane_comes_up() {
    let t = Instant::now();
    let n = Neutron::shared();
    eprintln!(
        "shared() after {:.1}s: {:?}",
        t.elapsed().as_secs_f64(),
        n.startup
    );

    let t = Instant::now();
    n.ensure_l2_agent("xdhcp-h1");
    eprintln!(
        "L2 agent for xdhcp-h1 alive after {:.1}s",
        t.elapsed().as_secs_f64()
    );

    let agents = n.agents().unwrap();
    let ovs = agents
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["host"] == "xdhcp-h1" && a["agent_type"] == OVS_AGENT_TYPE)
        .unwrap_or_else(|| panic!("no OVS agent on xdhcp-h1 in {agents}"));
    assert_eq!(ovs["alive"], true, "{ovs}");

    let net = n.create_network("harness").unwrap();
    let net_id = net["id"].as_str().unwrap();
    let subnet = n
        .create_subnet(net_id, "10.77.0.0/24", json!({"gateway_ip": "10.77.0.1"}))
        .unwrap();
    assert_eq!(subnet["cidr"], "10.77.0.0/24");
    let port = n
        .create_port(
            net_id,
            json!({"binding:host_id": "xdhcp-h1", "name": "vm1"}),
        )
        .unwrap();
    let port_id = port["id"].as_str().unwrap();
    let got = n.port(port_id).unwrap();
    assert_eq!(got["id"], port["id"]);
    assert_eq!(got["binding:host_id"], "xdhcp-h1");
    assert_eq!(
        got["binding:vif_type"], "ovs",
        "bound by the openvswitch driver: {got}"
    );
    eprintln!(
        "port {port_id} status {} (no OVS interface yet)",
        got["status"]
    );

    // Plugged into the bridge, the L2 agent reports it up: the first port of
    // a network has no DHCP block, so it goes ACTIVE.
    n.plug_port(&got).unwrap();
    let took = n
        .wait_port_status(port_id, "ACTIVE", Duration::from_secs(30))
        .unwrap();
    eprintln!(
        "port ACTIVE {:.0} ms after plugging",
        took.as_secs_f64() * 1e3
    );
    assert!(n
        .dhcp_agents_of(net_id)
        .unwrap()
        .as_array()
        .unwrap()
        .is_empty());
}
