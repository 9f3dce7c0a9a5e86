//! Open vSwitch plugging, as neutron's OVSInterfaceDriver does it: the OVS
//! port (through `ovs-vsctl`, with the DHCP port's external_ids so that the
//! L2 agent wires it) and, with `ovs_use_veth = False`, the internal port
//! moved into the namespace.

use std::{fs::File, os::fd::AsRawFd};

use anyhow::{bail, Context, Result};
use rtnetlink::{Handle, LinkUnspec};
use tracing::info;

use super::{
    plumb::{PlumbSpec, Plumbed},
    rtnl::{in_netns, link_by_name, set_link},
};

/// An Open vSwitch bridge and the OVSDB to reach it through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OvsBridge {
    /// e.g. `br-int` (`ovs_integration_bridge`).
    pub bridge: String,
    /// e.g. `tcp:127.0.0.1:6640` (`[ovs] ovsdb_connection`).
    pub db: String,
    /// `ovs_use_veth`: a veth pair (True) or an OVS internal port (False).
    pub use_veth: bool,
}

/// `ovs-vsctl --may-exist add-port BRIDGE PORT -- set Interface PORT
/// [type=internal] external_ids:…` with the DHCP port's iface-id,
/// attached-mac and iface-status=active, as neutron's OVSInterfaceDriver
/// sets them.
pub(super) async fn add_ovs_port(
    spec: &PlumbSpec,
    ovs: &OvsBridge,
    port: &str,
    internal: bool,
) -> Result<()> {
    let mac = crate::neutron::model::format_mac(&spec.mac);
    let mut args = vec![
        "--may-exist".to_string(),
        "add-port".into(),
        ovs.bridge.clone(),
        port.into(),
        "--".into(),
        "set".into(),
        "Interface".into(),
        port.into(),
    ];
    if internal {
        args.push("type=internal".into());
    }
    args.extend([
        format!("external_ids:iface-id={}", spec.port_id),
        format!("external_ids:attached-mac={mac}"),
        "external_ids:iface-status=active".into(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ovs_vsctl(&ovs.db, &args).await
}

/// `ovs_use_veth = False`: the OVS internal port `tap<PORT[:11]>`, created
/// by ovs-vswitchd in the host namespace and moved into the qdhcp namespace
/// (as neutron does), unless it is there already.
pub(super) async fn ensure_internal_port(
    host: &Handle,
    spec: &PlumbSpec,
    ovs: &OvsBridge,
    names: &Plumbed,
) -> Result<()> {
    add_ovs_port(spec, ovs, &names.tap, true).await?;
    let tap = names.tap.clone();
    let in_ns = in_netns(&names.namespace, move |h| async move {
        Ok(link_by_name(&h, &tap).await?.is_some())
    })
    .await?;
    if in_ns {
        return Ok(());
    }
    // ovs-vswitchd creates the device asynchronously after the transaction.
    let t0 = std::time::Instant::now();
    let link = loop {
        if let Some(link) = link_by_name(host, &names.tap).await? {
            break link;
        }
        if t0.elapsed() > std::time::Duration::from_secs(10) {
            bail!(
                "ovs-vswitchd created no device {} within 10 s (is the bridge's datapath one with \
                 kernel devices: system or netdev?)",
                names.tap
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let ns_file = File::open(super::path(&names.namespace))
        .with_context(|| format!("opening namespace {}", names.namespace))?;
    // The MAC before the move, as neutron sets it (ovs-vswitchd may still
    // be watching the device by name in its own namespace).
    set_link(
        host,
        LinkUnspec::new_with_index(link.header.index)
            .address(spec.mac.to_vec())
            .build(),
        &names.tap,
        "setting the MAC",
    )
    .await?;
    let msg = LinkUnspec::new_with_index(link.header.index)
        .setns_by_fd(ns_file.as_raw_fd())
        .build();
    set_link(host, msg, &names.tap, "moving into the namespace").await?;
    info!(port = %names.tap, bridge = %ovs.bridge, namespace = %names.namespace, "moved OVS internal port into namespace");
    Ok(())
}

/// Runs `ovs-vsctl --db=DB --timeout=10 ARGS…`, failing with its stderr.
pub(super) async fn ovs_vsctl(db: &str, args: &[&str]) -> Result<()> {
    let out = tokio::process::Command::new("ovs-vsctl")
        .arg(format!("--db={db}"))
        .arg("--timeout=10")
        .args(args)
        .output()
        .await
        .context("running ovs-vsctl (openvswitch-switch)")?;
    if !out.status.success() {
        bail!(
            "ovs-vsctl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
