//! xdhcp: loads the XDP fast path, feeds its lease maps, answers what it passes up.

pub mod bpffs;
pub mod craft;
pub mod ebpf;
pub mod netns;
pub mod options;
pub mod reply;
