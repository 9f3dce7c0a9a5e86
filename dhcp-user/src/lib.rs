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
