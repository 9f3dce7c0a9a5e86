//! `cargo xtask bench`: nanoseconds per fast-path reply through BPF_PROG_TEST_RUN.
//!
//! XDP test runs with `repeat` run the program again on the frame it already
//! rewrote (a reply, which the fast path passes up at once), so each sample is
//! one run of a fresh request; the kernel times the run itself (ns), which
//! excludes the syscall. Reported: median and mean over the samples.

use std::net::Ipv4Addr;

use anyhow::{ensure, Result};
use dhcp_ebpf::verdict;
use xdhcp::craft::RequestFrame;
use xdhcp_tests::{Client, Harness, SERVER_IP, SERVER_MAC};

const SAMPLES: usize = 20_000;

fn main() -> Result<()> {
    let mut h = Harness::new()?;
    h.add_net(1, SERVER_MAC, false)?;
    let typical = Client::typical([0xfa, 0x16, 0x3e, 0, 0, 5], Ipv4Addr::new(10, 0, 0, 5));
    let big = Client::big([0xfa, 0x16, 0x3e, 0, 0, 6], Ipv4Addr::new(10, 0, 0, 6));
    h.add_client(1, &typical)?;
    h.add_client(1, &big)?;

    println!(
        "fast path, ns per reply through BPF_PROG_TEST_RUN ({SAMPLES} runs each, kernel-timed)"
    );
    println!(
        "{:<58} {:>7} {:>9} {:>9}",
        "case", "bytes", "median ns", "mean ns"
    );
    for (what, client, with_57) in [
        ("typical port", &typical, false),
        ("20 routes + 10 extra options, option 57 = 1500", &big, true),
    ] {
        let mut discover = RequestFrame::discover(client.mac);
        let mut request = RequestFrame::request(client.mac, client.ip, SERVER_IP);
        if with_57 {
            discover = discover.with_option(57, &1500u16.to_be_bytes());
            request = request.with_option(57, &1500u16.to_be_bytes());
        }
        for (kind, frame) in [
            ("DISCOVER→OFFER", discover.bytes()),
            ("REQUEST→ACK", request.bytes()),
        ] {
            let reply_len = h.run(1, &frame)?.frame.len();
            let mut ns = Vec::with_capacity(SAMPLES);
            for _ in 0..SAMPLES {
                let (v, t) = h.run_repeat(1, &frame, 1)?;
                ensure!(
                    v == verdict::TX,
                    "{kind} for {what} was not answered (verdict {v})"
                );
                ns.push(t);
            }
            ns.sort_by(f64::total_cmp);
            let mean = ns.iter().sum::<f64>() / ns.len() as f64;
            println!(
                "{:<58} {:>7} {:>9.0} {:>9.0}",
                format!("{kind}, {what}"),
                reply_len,
                ns[ns.len() / 2],
                mean
            );
        }
    }
    Ok(())
}
