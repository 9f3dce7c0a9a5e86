//! Network namespaces: the one rule for working inside one, throwaway ones,
//! and the per-network plumbing (names.rs: Neutron's names; plumb.rs: the
//! namespace and device layout; rtnl.rs: its rtnetlink calls; ovs.rs: the
//! Open vSwitch parts).
//!
//! setns(2) and unshare(2) move only the calling thread. The daemon's async
//! runtime and its worker threads must never change namespace (a task resumed
//! on a thread another task moved would act on the wrong devices), so daemon
//! code does namespace work only through [`run_in`] (or [`run_in_new`]), on a
//! thread of its own. [`enter`] is for tests and tools that own their thread;
//! its guard cannot cross threads. These three are the only places that move
//! a thread between namespaces.

pub mod names;
pub mod ovs;
pub mod plumb;
mod rtnl;

use std::{fs::File, marker::PhantomData, os::fd::AsFd, process::Command};

use anyhow::{bail, Context, Result};
use nix::sched::{setns, unshare, CloneFlags};

/// Where iproute2 (and so Neutron) keeps named network namespaces.
const NETNS_DIR: &str = "/run/netns";

/// While alive, the current thread is in another network namespace; dropping
/// it returns the thread to the namespace it came from. It cannot be sent to
/// another thread:
///
/// ```compile_fail,E0277
/// fn send<T: Send>(_: T) {}
/// send(xdhcp::netns::enter("any").unwrap());
/// ```
pub struct Entered {
    home: File,
    /// Not Send: the guard must be dropped on the thread that entered.
    _thread_bound: PhantomData<*const ()>,
}

/// Moves the current thread into the named namespace (`/run/netns/NAME`).
pub fn enter(name: &str) -> Result<Entered> {
    let home = File::open("/proc/thread-self/ns/net").context("opening this thread's netns")?;
    let target = File::open(path(name))
        .with_context(|| format!("network namespace {name} does not exist"))?;
    setns(target.as_fd(), CloneFlags::CLONE_NEWNET)
        .with_context(|| format!("entering network namespace {name}"))?;
    Ok(Entered {
        home,
        _thread_bound: PhantomData,
    })
}

/// The path of a named namespace.
pub fn path(name: &str) -> String {
    format!("{NETNS_DIR}/{name}")
}

/// Runs `f` on a fresh OS thread that has entered namespace `name`, and
/// returns its result: the caller's thread never changes namespace. `f` may
/// borrow from the caller (a scoped thread). A panic in `f` is re-raised.
pub fn run_in<T: Send>(name: &str, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    let target = File::open(path(name))
        .with_context(|| format!("network namespace {name} does not exist"))?;
    on_own_thread(
        &format!("network namespace {name}"),
        move || {
            setns(target.as_fd(), CloneFlags::CLONE_NEWNET)
                .with_context(|| format!("entering network namespace {name}"))
        },
        f,
    )
}

/// [`run_in`] a new, empty network namespace (unshare(2)): `f` may bind-mount
/// `/proc/thread-self/ns/net` to keep it.
pub fn run_in_new<T: Send>(f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    on_own_thread(
        "a new network namespace",
        || unshare(CloneFlags::CLONE_NEWNET).context("unshare(CLONE_NEWNET)"),
        f,
    )
}

/// Runs `enter` then `f` on a fresh scoped OS thread, returning `f`'s
/// result; re-raises a panic of either.
fn on_own_thread<T: Send>(
    what: &str,
    enter: impl FnOnce() -> Result<()> + Send,
    f: impl FnOnce() -> Result<T> + Send,
) -> Result<T> {
    std::thread::scope(|scope| {
        let thread = std::thread::Builder::new()
            .name("netns".into())
            .spawn_scoped(scope, move || {
                enter()?;
                f()
            })
            .with_context(|| format!("spawning a thread for {what}"))?;
        match thread.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

impl Drop for Entered {
    fn drop(&mut self) {
        if let Err(e) = setns(self.home.as_fd(), CloneFlags::CLONE_NEWNET) {
            // Carrying on in the wrong namespace would act on the wrong devices.
            panic!("cannot return to the original network namespace: {e}");
        }
    }
}

/// A network namespace that is deleted, with everything in it, when dropped.
pub struct TempNs {
    pub name: String,
}

impl TempNs {
    /// Creates `PREFIX-<pid>-<n>` (unique across parallel runs) with lo up.
    pub fn new(prefix: &str) -> Result<Self> {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "{prefix}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        ip(&["netns", "add", &name])?;
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Creates the namespace `name` itself (e.g. a `qdhcp-<network id>` for a
    /// test to lay out by hand); fails if it exists.
    pub fn named(name: &str) -> Result<Self> {
        ip(&["netns", "add", name])?;
        let ns = Self {
            name: name.to_string(),
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Runs `ip -n NAME ARGS…`.
    pub fn ip(&self, args: &[&str]) -> Result<()> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// Enters the namespace on this thread.
    pub fn enter(&self) -> Result<Entered> {
        enter(&self.name)
    }
}

impl Drop for TempNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Runs `ip ARGS…`, failing with its stderr.
pub fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip (iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    fn this_thread_ns() -> u64 {
        std::fs::metadata("/proc/thread-self/ns/net").unwrap().ino()
    }

    #[test]
    fn run_in_new_runs_in_a_fresh_namespace_and_leaves_the_caller_alone() {
        let home = this_thread_ns();
        let inside = run_in_new(|| Ok(this_thread_ns())).unwrap();
        assert_ne!(inside, home, "f ran in another namespace");
        assert_eq!(this_thread_ns(), home, "the caller did not move");
        let err = run_in_new(|| -> Result<()> { bail!("inside") }).unwrap_err();
        assert_eq!(err.to_string(), "inside", "f's error comes back as it is");
    }
}
