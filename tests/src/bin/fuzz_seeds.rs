//! `cargo xtask fuzz`'s seed corpus, written into DIR/<target>/: the fixture
//! table's frames for the slow path's parser, and the repository's documents
//! and configs (tests/data, packaging/dhcp_agent.ini, the documents the tests
//! import, the configs the agent tests write) for the other targets.
//!
//! Usage: fuzz_seeds DIR

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::json;
use xdhcp_tests::fixtures;

fn main() -> Result<()> {
    let dir = PathBuf::from(
        std::env::args_os()
            .nth(1)
            .context("usage: fuzz_seeds DIR (the corpus directory)")?,
    );
    let ws = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("the tests crate sits in the workspace")?
        .to_path_buf();

    let frames: Vec<Vec<u8>> = fixtures::rows().iter().map(|r| r.bytes()).collect();
    write(&dir, "slowpath_request", frames)?;

    let mut imports = vec![read(&ws.join("tests/data/get_network_info.json"))?];
    imports.extend(import_docs().iter().map(|d| d.to_string().into_bytes()));
    write(&dir, "import", imports)?;

    let ini = read(&ws.join("packaging/dhcp_agent.ini"))?;
    write(
        &dir,
        "config_toml",
        [TOML_FULL, TOML_PASTED, "dhcp_lease_duration = -1\n"]
            .iter()
            .map(|t| t.as_bytes().to_vec())
            .collect(),
    )?;
    let mut oslo = vec![ini.clone()];
    for files in [
        [NEUTRON_CONF, AGENT_INI, DNSMASQ_CONF].as_slice(),
        &[NEUTRON_CONF, std::str::from_utf8(&ini)?, ""],
    ] {
        oslo.push(files.join("\0").into_bytes());
    }
    write(&dir, "config_oslo", oslo)?;
    Ok(())
}

/// Writes `seeds` as DIR/target/seed-N.
fn write(dir: &Path, target: &str, seeds: Vec<Vec<u8>>) -> Result<()> {
    let dir = dir.join(target);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for (i, seed) in seeds.iter().enumerate() {
        let file = dir.join(format!("seed-{i:03}"));
        std::fs::write(&file, seed).with_context(|| format!("writing {}", file.display()))?;
    }
    println!("{}: {} seeds", dir.display(), seeds.len());
    Ok(())
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

/// Import documents of the shapes the tests import: a network with its
/// subnet and DHCP port, VM ports with extra_dhcp_opts, a port alone.
fn import_docs() -> Vec<serde_json::Value> {
    let net = "6a0b6f1e-1c7e-4b59-9d3e-0d1b5c8a7f01";
    let subnet = "8c2d4e6f-3a5b-4c7d-9e1f-2a3b4c5d6e02";
    let whole = json!({
        "networks": [{"id": net, "name": "private", "mtu": 1450}],
        "subnets": [{
            "id": subnet, "network_id": net, "ip_version": 4, "cidr": "10.0.0.0/24",
            "gateway_ip": "10.0.0.1", "enable_dhcp": true,
            "dns_nameservers": ["10.99.0.53"],
            "host_routes": [{"destination": "192.168.77.0/24", "nexthop": "10.0.0.1"}],
            "allocation_pools": [{"start": "10.0.0.2", "end": "10.0.0.254"}]
        }],
        "ports": [
            {
                "id": "d0d0d0d0-0000-4000-8000-000000000001", "network_id": net,
                "mac_address": "fa:16:3e:d0:00:01", "device_owner": "network:dhcp",
                "admin_state_up": true,
                "fixed_ips": [{"subnet_id": subnet, "ip_address": "10.0.0.2"}]
            },
            {
                "id": "a1a1a1a1-0000-4000-8000-000000000005", "network_id": net,
                "mac_address": "FA-16-3E-12-34-56", "device_owner": "compute:nova",
                "admin_state_up": true, "dns_name": "vm-1",
                "fixed_ips": [{"subnet_id": subnet, "ip_address": "10.0.0.5"}],
                "extra_dhcp_opts": [
                    {"opt_name": "tftp-server", "opt_value": "10.0.0.10", "ip_version": 4},
                    {"opt_name": "bootfile-name", "opt_value": "pxelinux.0"},
                    {"opt_name": "26", "opt_value": "1400"}
                ]
            }
        ]
    });
    let port_only = json!({"ports": [whole["ports"][1].clone()]});
    let empty = json!({"networks": [], "subnets": [], "ports": []});
    vec![whole, port_only, empty]
}

/// Every key the TOML reader honours.
const TOML_FULL: &str = r#"dhcp_lease_duration = 600
dns_domain = "example.org"
enable_isolated_metadata = true
force_metadata = false
dnsmasq_dns_servers = ["10.0.0.53", "10.0.1.53"]
enable_relay = true
relay_addresses = ["192.0.2.1"]
"#;

/// A dhcp_agent.ini section pasted under [DEFAULT], with keys xdhcp ignores.
const TOML_PASTED: &str = r#"[DEFAULT]
interface_driver = "openvswitch"
dhcp_lease_duration = 86400
dnsmasq_dns_servers = "10.0.0.53,10.0.1.53"
enable_isolated_metadata = "True"

[agent]
report_interval = 30
"#;

/// neutron.conf as the agent tests write it.
const NEUTRON_CONF: &str = "[DEFAULT]\nhost = compute-1\n\
    transport_url = rabbit://guest:guest@127.0.0.1:5672,guest:guest@127.0.0.2:5672/\n\
    state_path = /var/lib/neutron\n\n[agent]\nreport_interval = 2\navailability_zone = nova\n\n\
    [ovs]\novsdb_connection = tcp:127.0.0.1:6640\n\n[oslo_messaging_rabbit]\n\
    heartbeat_timeout_threshold = 60\namqp_durable_queues = true\n";

/// dhcp_agent.ini as the agent tests write it (the fuzz target answers
/// any dnsmasq_config_file path but `/missing` with its last part).
const AGENT_INI: &str = "[DEFAULT]\ninterface_driver = openvswitch\n\
    dhcp_driver = neutron.agent.linux.dhcp.Dnsmasq\nenable_isolated_metadata = True\n\
    dnsmasq_config_file = /etc/neutron/dnsmasq-neutron.conf\novs_use_veth = True\novs_integration_bridge = br-int\n\
    resync_interval = 2\ndhcp_lease_duration = -1\ndnsmasq_dns_servers = 10.0.0.53, 10.0.1.53\n\n\
    [xdhcp]\nbpffs = /sys/fs/bpf/xdhcp\nmetrics_address = 127.0.0.1:9400\n\
    enable_relay = true\nrelay_addresses = 192.0.2.1, 192.0.2.2\n";

/// A dnsmasq_config_file: the dhcp-option lines the reader takes.
const DNSMASQ_CONF: &str = "# as the seed has it, for GRE\ndhcp-option-force=26,1400\n\
    dhcp-option=option:ntp-server,10.0.0.123\ndhcp-option=42,10.0.0.124\n";
