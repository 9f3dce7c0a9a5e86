//! `cargo xtask bench`: nanoseconds per fast-path reply through BPF_PROG_TEST_RUN,
//! measured two ways, for the fixture rows named in `fixtures::BENCH_ROWS`
//! (DISCOVER→OFFER and REQUEST→ACK of a typical and a big client on network
//! 1), on the maps the fixture table is tested on: the benchmark times exactly
//! the frames `tests/tests/fastpath.rs` specifies.
//!
//! 1. Single runs. A plain XDP test run with `repeat` runs the program again
//!    on the frame it already rewrote (a reply, which the fast path passes up
//!    at once), so each sample is one run (repeat = 1) of a fresh request; the
//!    kernel times the run itself (ns), which excludes the syscall. Reported:
//!    median and mean over the samples.
//!
//! 2. Live frames with `repeat` (BPF_F_TEST_XDP_LIVE_FRAMES). The kernel runs
//!    the program on page-pool copies of the request and really transmits the
//!    XDP_TX replies out of the ingress device: here `tap0`, one end of a veth
//!    pair in a throwaway network namespace, with the entry program attached;
//!    the peer `vm0` runs the pass program (veth delivers XDP frames only to a
//!    peer that runs XDP). A run copies the request into each page only the
//!    first time the run uses the page; recycled pages keep what the program
//!    left in them, which for the fast path is a reply it then passes up. So
//!    every run is one batch (repeat = batch size = 64) of fresh requests, and
//!    there are many runs. Per run the kernel reports the mean ns per
//!    repetition of the batch loop (whole ns), which besides the program takes
//!    in the copy into the page, the transmit on the veth and what the flush
//!    sets off on that CPU when bottom halves come back on (vm0's receive):
//!    the cost of a reply that actually leaves, not of the program alone.
//!    Reported: the mean over all repetitions. The kernel does not report the
//!    program's verdict in this mode, so the fast path's own counters must
//!    show one reply per repetition; the frames vm0 received (`ip -s link`)
//!    are printed next to them.

use std::process::Command;

use anyhow::{bail, ensure, Context, Result};
use aya::{
    programs::{xdp::XdpLinkId, Xdp},
    TestRun, TestRunAttrs, TestRunOptions,
};
use dhcp_ebpf::{stat, verdict};
use xdhcp::{loader, netns::TempNs};
use xdhcp_tests::fixtures::{self, Expect, BENCH_ROWS, NET};
use xdhcp_tests::{ifindex, veth_pair, Harness};

/// Single runs per case (measurement 1).
const SAMPLES: usize = 20_000;
/// Live-frames runs per case (measurement 2): about 1–2 s per case.
const LIVE_RUNS: u32 = 15_625;
/// Repetitions per live-frames run, all in one batch. The kernel recycles a
/// batch's pages for the next batch of the same run without copying the
/// request in again, so the fast path (which rewrites the request into the
/// reply in place) would see its own replies and pass them up: with
/// repeat = 1,000,000 in one run, 64 were answered. A new run starts on pages
/// with the request. 64 is the kernel's default batch, a driver's NAPI budget.
const LIVE_BATCH: u32 = 64;
/// The veth pair of measurement 2: requests "arrive" on `TAP`, replies go to `VM`.
const TAP: &str = "tap0";
const VM: &str = "vm0";

/// One request the fast path answers: a row of the fixture table.
struct Case {
    /// The row's name.
    name: &'static str,
    frame: Vec<u8>,
    /// The counter one reply bumps (`stat::OFFERS` or `stat::ACKS`).
    reply_counter: u32,
}

fn main() -> Result<()> {
    let mut h = fixtures::harness()?;
    let cases = BENCH_ROWS
        .iter()
        .map(|name| case(name))
        .collect::<Result<Vec<_>>>()?;
    single_runs(&mut h, &cases)?;
    println!();
    live_frames(&mut h, &cases)
}

/// The fixture row `name` as a case: it must be answered, on [`NET`] (the
/// network whose entry program measurement 2 attaches).
fn case(name: &str) -> Result<Case> {
    let row = fixtures::find(name)?;
    let Expect::Tx(reply) = &row.expect else {
        bail!("fixture row {name:?} is passed up, not answered: nothing to time");
    };
    ensure!(
        row.net == NET,
        "fixture row {name:?} is on network {}, the benchmark runs network {NET}",
        row.net
    );
    Ok(Case {
        name: row.name,
        frame: row.bytes(),
        reply_counter: reply.counter(),
    })
}

/// Width of the case column: the longest row name.
fn name_width(cases: &[Case]) -> usize {
    cases
        .iter()
        .map(|c| c.name.chars().count())
        .max()
        .unwrap_or(4)
}

/// Measurement 1: median and mean of `SAMPLES` kernel-timed single runs.
fn single_runs(h: &mut Harness, cases: &[Case]) -> Result<()> {
    let w = name_width(cases);
    println!(
        "fast path, ns per reply through BPF_PROG_TEST_RUN ({SAMPLES} runs each, kernel-timed)"
    );
    println!(
        "{:<w$} {:>7} {:>9} {:>9}",
        "case", "bytes", "median ns", "mean ns"
    );
    for case in cases {
        let reply_len = h.run(NET, &case.frame)?.frame.len();
        let mut ns = Vec::with_capacity(SAMPLES);
        for _ in 0..SAMPLES {
            let (v, t) = h.run_repeat(NET, &case.frame, 1)?;
            ensure!(
                v == verdict::TX,
                "{} was not answered (verdict {v})",
                case.name
            );
            ns.push(t);
        }
        ns.sort_by(f64::total_cmp);
        let mean = ns.iter().sum::<f64>() / ns.len() as f64;
        println!(
            "{:<w$} {:>7} {:>9.0} {:>9.0}",
            case.name,
            reply_len,
            ns[ns.len() / 2],
            mean
        );
    }
    Ok(())
}

/// Measurement 2: `LIVE_RUNS` live-frames runs of `LIVE_BATCH` per case,
/// replies sent on a veth.
fn live_frames(h: &mut Harness, cases: &[Case]) -> Result<()> {
    let ns = TempNs::new("xbench").context("creating the benchmark namespace")?;
    // The test runs look the ingress device up in the calling thread's
    // namespace, so everything from here on runs inside it.
    let _inside = ns.enter()?;
    // No IPv6 on the pair: its router solicitations and MLD reports would
    // reach vm0 too and blur the count of delivered replies.
    for conf in ["all", "default"] {
        let path = format!("/proc/sys/net/ipv6/conf/{conf}/disable_ipv6");
        std::fs::write(&path, "1").with_context(|| format!("writing 1 to {path}"))?;
    }
    veth_pair(&ns, TAP, VM).context("creating the benchmark veth pair")?;
    let tap_index = ifindex(&ns, TAP)?;

    // Live mode does not need a program on the ingress device: the replies go
    // out without one. But a test run with repeat > 1 puts the program in the
    // kernel's XDP dispatcher and takes it out again, each change waiting for
    // an RCU grace period (tens of ms per run here), unless the program is in
    // the dispatcher already, which attaching it natively does. The entry
    // program on the DHCP-side device is also how the fast path is deployed.
    let tap_link = attach_native(h.entry(NET)?, TAP)?;
    let measured = measure_both(h, &ns, tap_index, cases);
    // Detach while the devices still exist (the namespace takes them along).
    let detached = h
        .entry(NET)?
        .detach(tap_link)
        .with_context(|| format!("detaching the entry program from {TAP}"));
    measured.and(detached)
}

/// The live-frames table, twice per case: with the replies received by vm0
/// (which runs the pass program: veth hands XDP frames only to a peer that runs
/// XDP), and with vm0 running nothing, so that the veth drops each reply at
/// transmit and the figure holds the responder's side alone.
fn measure_both(h: &mut Harness, ns: &TempNs, tap_index: u32, cases: &[Case]) -> Result<()> {
    let vm_link = attach_native(h.fast.pass_program()?, VM)?;
    let delivered = live_frames_on(h, ns, tap_index, cases);
    let detached = h
        .fast
        .pass_program()?
        .detach(vm_link)
        .with_context(|| format!("detaching the pass program from {VM}"));
    let delivered = delivered.and_then(|d| detached.map(|()| d))?;
    let transmit_only = live_frames_on(h, ns, tap_index, cases)?;
    let per_case = u64::from(LIVE_RUNS) * u64::from(LIVE_BATCH);
    let w = name_width(cases);
    println!(
        "fast path, ns per reply through BPF_PROG_TEST_RUN with repeat \
         (live frames, {LIVE_RUNS} runs x repeat {LIVE_BATCH} = {per_case} repetitions per case, \
         kernel-timed; every repetition answered, by the fast path's counters)"
    );
    println!(
        "{:<w$} {:>9} {:>14} {:>11} {:>14} {:>11}",
        "case", "repeat", "ns, vm0 gets", "vm0 rx", "ns, tx only", "vm0 rx"
    );
    for ((case, d), t) in cases.iter().zip(&delivered).zip(&transmit_only) {
        println!(
            "{:<w$} {:>9} {:>14.0} {:>11} {:>14.0} {:>11}",
            case.name, LIVE_BATCH, d.ns_per_reply, d.vm_rx, t.ns_per_reply, t.vm_rx
        );
    }
    Ok(())
}

/// One case's live-frames result.
struct Live {
    ns_per_reply: f64,
    vm_rx: u64,
}

/// Attaches `prog` to `dev` in native mode, or fails (and leaves it detached).
fn attach_native(prog: &mut Xdp, dev: &str) -> Result<XdpLinkId> {
    let (link, mode) = loader::attach(prog, dev, loader::AttachMode::Native)
        .with_context(|| format!("attaching XDP to {dev}"))?;
    if mode != loader::AttachMode::Native {
        prog.detach(link)
            .with_context(|| format!("detaching the generic-mode program from {dev}"))?;
        bail!("{dev} took XDP only in generic mode; the live-frames runs need native XDP");
    }
    Ok(link)
}

/// Live-frames runs of every case; the caller is inside `ns`. Fails unless the
/// fast path answered every repetition.
fn live_frames_on(
    h: &mut Harness,
    ns: &TempNs,
    tap_index: u32,
    cases: &[Case],
) -> Result<Vec<Live>> {
    let per_case = u64::from(LIVE_RUNS) * u64::from(LIVE_BATCH);
    let mut results = Vec::new();
    for case in cases {
        let ctx = xdp_md(tap_index, case.frame.len())?;
        let before = h.counters()?;
        let rx_before = rx_packets(ns, VM)?;
        let prog = h.entry(NET)?;
        let mut total_ns: u64 = 0;
        for _ in 0..LIVE_RUNS {
            // data_out and ctx_out stay unset: live mode refuses them.
            let run = prog
                .test_run(TestRunOptions {
                    data_in: Some(&case.frame),
                    ctx_in: Some(&ctx),
                    repeat: LIVE_BATCH,
                    attrs: TestRunAttrs::new().xdp_live_frames(LIVE_BATCH),
                    ..Default::default()
                })
                .with_context(|| format!("live-frames BPF_PROG_TEST_RUN of {}", case.name))?;
            // `duration` is the run's mean per repetition (whole ns).
            total_ns += run.duration.as_nanos() as u64 * u64::from(LIVE_BATCH);
        }
        let after = h.counters()?;
        let rx_after = rx_packets(ns, VM)?;

        let replies = after[case.reply_counter as usize] - before[case.reply_counter as usize];
        let received = after[stat::RECEIVED as usize] - before[stat::RECEIVED as usize];
        ensure!(
            replies == per_case,
            "{}: the fast path answered {replies} of {per_case} live frames ({received} received)",
            case.name
        );
        results.push(Live {
            ns_per_reply: total_ns as f64 / per_case as f64,
            vm_rx: rx_after - rx_before,
        });
    }
    Ok(results)
}

/// A `struct xdp_md` (six u32) for a test run of a `len`-byte frame arriving
/// on queue 0 of `ingress_ifindex`; the kernel wants data_end == len, data and
/// data_meta 0 (no metadata in front), egress_ifindex 0.
fn xdp_md(ingress_ifindex: u32, len: usize) -> Result<Vec<u8>> {
    let len = u32::try_from(len).context("frame length does not fit a u32")?;
    let (data, data_end, data_meta, rx_queue_index, egress_ifindex) = (0, len, 0, 0, 0);
    Ok([
        data,
        data_end,
        data_meta,
        ingress_ifindex,
        rx_queue_index,
        egress_ifindex,
    ]
    .iter()
    .flat_map(|field: &u32| field.to_ne_bytes())
    .collect())
}

/// Frames `dev` in `ns` received, from `ip -s -j link show` (for veth this
/// includes frames its XDP program took from the peer's XDP transmits).
fn rx_packets(ns: &TempNs, dev: &str) -> Result<u64> {
    let out = Command::new("ip")
        .args(["-n", &ns.name, "-s", "-j", "link", "show", dev])
        .output()
        .context("running ip (iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip -n {} -s -j link show {dev}: {}",
            ns.name,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let links: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("parsing ip's JSON statistics of {dev}"))?;
    links[0]["stats64"]["rx"]["packets"]
        .as_u64()
        .with_context(|| format!("ip reports no rx packet count for {dev}"))
}
