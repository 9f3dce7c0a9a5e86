//! xdhcp: loads the XDP fast path, feeds its lease maps, answers what it passes up.
//!
//! The modules by role, in the order data flows (docs/architecture.md has the map):
//! Neutron's data and files in, the store, the plan, the map writer and the
//! loader towards the kernel, the slow path beside it, the daemon that runs
//! them, the agent that feeds the store from neutron-server.

/// `xdhcp agent`: neutron-server's RPC feeding the store.
pub mod agent;
/// The agent's options: the TOML file and neutron-dhcp-agent's oslo.config files.
pub mod config;
/// `xdhcp run`: the loop that follows the store and drives all of the above.
pub mod daemon;
/// The embedded XDP object, its maps, attachments and bpffs pins.
pub mod loader;
/// Plans into the maps, only what differs, blobs shared by content.
pub mod mapsync;
/// Network namespaces (the one thread rule) and the per-network plumbing.
pub mod netns;
/// Neutron's data model and `xdhcp import`'s reader.
pub mod neutron;
/// Neutron's semantics: one network's DHCP config and leases, its option blobs.
pub mod plan;
/// Rate-limited per-client log lines, with the count of what was suppressed.
pub mod ratelimit;
/// The slow path: what the XDP program passes up, answered by the same rules.
pub mod slowpath;
/// The SQLite store: networks, subnets, ports, network ids, the change log, leases.
pub mod store;
/// Runs the future `f` makes on a current-thread tokio runtime of its own, on
/// a thread named `name` (the agent's RPC, the metrics endpoint: work that
/// must not wait for the daemon's loop nor hold it up). The runtime is built
/// here, so failing to build it is an error of the caller's start.
pub fn spawn_runtime_thread<F, Fut>(name: &str, f: F) -> anyhow::Result<()>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    use anyhow::Context;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .with_context(|| format!("{name}: building its tokio runtime"))?;
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || rt.block_on(f()))
        .with_context(|| format!("starting the {name} thread"))?;
    Ok(())
}
