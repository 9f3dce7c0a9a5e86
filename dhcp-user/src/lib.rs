//! xdhcp: loads the XDP fast path, feeds its lease maps, answers what it passes up.

pub mod agent;
pub mod agent_config;
pub mod bpffs;
pub mod config;
pub mod craft;
pub mod daemon;
pub mod db;
pub mod ebpf;
pub mod extra_opts;
pub mod health;
pub mod import;
pub mod links;
pub mod metrics;
pub mod model;
pub mod netns;
pub mod notify;
pub mod options;
pub mod plumb;
pub mod reply;
pub mod rpc;
pub mod slowpath;
pub mod sync;

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
