//! The names of a network's plumbing, as neutron-dhcp-agent (and the
//! linuxbridge agent) give them. Operators and Neutron's own tools find the
//! devices by these names (`ip netns exec qdhcp-…`, `brctl show brq…`): keep
//! them exactly.

use anyhow::{bail, Result};

/// How much of a UUID Neutron keeps in a device name (its DEV_NAME_LEN 14 = prefix + 11).
const ID_CHARS: usize = 11;
/// IFNAMSIZ less the NUL.
const MAX_IFNAME: usize = 15;

/// `qdhcp-<NET>`: the namespace neutron-dhcp-agent uses for a network.
pub fn namespace_name(network_id: &str) -> String {
    format!("qdhcp-{network_id}")
}

/// `tap<PORT[:11]>`: the DHCP port's device, inside the namespace.
pub fn tap_name(port_id: &str) -> String {
    format!("tap{}", short_id(port_id))
}

/// `ns-<PORT[:11]>`: the host end of the DHCP port's veth pair.
pub fn host_side_name(port_id: &str) -> String {
    format!("ns-{}", short_id(port_id))
}

/// `brq<NET[:11]>`: the linuxbridge agent's bridge for a network.
pub fn bridge_name(network_id: &str) -> String {
    format!("brq{}", short_id(network_id))
}

fn short_id(id: &str) -> String {
    id.chars().take(ID_CHARS).collect()
}

/// Fails unless `dev` can name a Linux interface (1 to 15 bytes, none of `/`, space, `:`).
pub fn check_ifname(dev: &str) -> Result<()> {
    if dev.is_empty() || dev.len() > MAX_IFNAME || dev.contains(['/', ' ', ':']) {
        bail!("{dev:?} is not a valid interface name");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_neutron() {
        let cases = [
            // (description, function, input, expected)
            (
                "namespace keeps the whole network id",
                namespace_name as fn(&str) -> String,
                "5e1c2d3a-4f00-4b6b-9a7e-0123456789ab",
                "qdhcp-5e1c2d3a-4f00-4b6b-9a7e-0123456789ab",
            ),
            (
                "tap keeps 11 chars of the port id",
                tap_name,
                "5e1c2d3a-4f00-4b6b-9a7e-0123456789ab",
                "tap5e1c2d3a-4f",
            ),
            (
                "host side keeps 11 chars of the port id",
                host_side_name,
                "5e1c2d3a-4f00-4b6b-9a7e-0123456789ab",
                "ns-5e1c2d3a-4f",
            ),
            (
                "bridge keeps 11 chars of the network id",
                bridge_name,
                "0a1b2c3d-0000-4b6b-9a7e-0123456789ab",
                "brq0a1b2c3d-00",
            ),
            ("short ids are kept whole", tap_name, "abc", "tapabc"),
        ];
        for (what, f, input, want) in cases {
            assert_eq!(f(input), want, "{what}");
        }
        let uuid = "5e1c2d3a-4f00-4b6b-9a7e-0123456789ab";
        for name in [tap_name(uuid), host_side_name(uuid), bridge_name(uuid)] {
            assert!(name.len() <= MAX_IFNAME, "{name} fits IFNAMSIZ");
        }
    }

    #[test]
    fn interface_names_are_checked() {
        let cases = [
            // (description, name, valid)
            ("a neutron tap name", "tap5e1c2d3a-4f", true),
            ("15 bytes, the most IFNAMSIZ holds", "brq0a1b2c3d-000", true),
            ("16 bytes", "brq0a1b2c3d-0000", false),
            ("empty", "", false),
            ("a slash", "br/int", false),
            ("a space", "br int", false),
            ("a colon (an alias label)", "eth0:1", false),
        ];
        for (what, name, valid) in cases {
            let got = check_ifname(name);
            assert_eq!(got.is_ok(), valid, "{what}: {name:?} -> {got:?}");
            if let Err(e) = got {
                assert!(
                    e.to_string().contains(&format!("{name:?}")),
                    "{what}: names the input: {e}"
                );
            }
        }
    }
}
