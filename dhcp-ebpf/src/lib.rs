//! What the XDP fast path and the xdhcp daemon share, defined once: the map
//! types ([`maps`], re-exported here), the wire constants and header builders
//! ([`wire`]), the RFC 2131 rules ([`rfc2131`]), checksum folding ([`csum`])
//! and the rule for which frames are read at all ([`validate`]).
//!
//! no_std and free of packet memory: the XDP program calls these on values it
//! has read from the frame, the daemon's reply builder on its parsed request,
//! so both answer the same request the same way.
#![cfg_attr(not(test), no_std)]

pub mod csum;
pub mod maps;
pub mod rfc2131;
pub mod validate;
pub mod wire;

pub use maps::*;

/// XDP verdicts as BPF_PROG_TEST_RUN reports them.
pub mod verdict {
    pub const ABORTED: u32 = 0;
    pub const DROP: u32 = 1;
    pub const PASS: u32 = 2;
    pub const TX: u32 = 3;
}

/// The entry program: assembled and loaded per network by the daemon
/// (dhcp-user/src/loader/entry.rs), attached to its DHCP device.
pub const ENTRY_PROGRAM: &str = "xdhcp";
/// The fast path: loaded once, entered by tail call from every entry.
pub const FAST_PROGRAM: &str = "xdhcp_fast";
/// XDP_PASS for everything: for the veth peer of a fast-path device (veth
/// delivers XDP_TX frames only to a peer that runs XDP).
pub const PASS_PROGRAM: &str = "xdhcp_pass";

/// Bytes of XDP metadata in front of the frame carrying the network id
/// (BPF_PROG_TEST_RUN returns them in front of the output frame).
pub const NET_META_LEN: usize = 4;
