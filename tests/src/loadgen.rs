//! The project's own DHCP load generator: DHCPDISCOVER frames from many client
//! MACs, sent raw on one device (AF_PACKET, batches of `sendmmsg`, no qdisc),
//! and the replies coming back on that device counted by the kernel.
//!
//! perfdhcp tops out near 20k exchanges/s on two cores, far below the fast
//! path; this finds the responder's own ceiling. Counting costs no copy: a
//! second packet socket with a classic BPF filter (UDP to port 68) and a tiny
//! receive buffer is never read, and PACKET_STATISTICS reports every frame the
//! filter accepted, queued or dropped.

use std::{
    os::fd::{AsRawFd, OwnedFd},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use crate::craft::RequestFrame;
use anyhow::{ensure, Context, Result};

/// Frames per `sendmmsg`.
const BATCH: usize = 64;

/// Offsets in the DISCOVER frame (untagged, no IP options) of what differs
/// from client to client.
const ETH_SRC: usize = 6;
const UDP_CHECKSUM: usize = 14 + 20 + 6;
const XID: usize = 14 + 20 + 8 + 4;
const CHADDR: usize = 14 + 20 + 8 + 28;

/// A generator bound to one device of the current network namespace.
///
/// Frames are patched into one batch of buffers per send (source MAC, xid,
/// chaddr, UDP checksum) rather than kept one per client: with 100k clients
/// that would be 34 MB for the sender to stream through, crowding the
/// responder out of the cache the two share.
pub struct LoadGen {
    tx: OwnedFd,
    counter: OwnedFd,
    macs: Vec<[u8; 6]>,
    /// The UDP checksum of the template (MAC and xid zero), as on the wire.
    template_checksum: u16,
    batch: std::sync::Mutex<Vec<Vec<u8>>>,
}

/// What one run sent and got back.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    pub sent: u64,
    pub replies: u64,
    pub secs: f64,
    /// Frames the kernel refused to send (ENOBUFS and the like): not sent.
    pub refused: u64,
}

impl Load {
    pub fn sent_per_s(&self) -> f64 {
        self.sent as f64 / self.secs
    }

    pub fn replies_per_s(&self) -> f64 {
        self.replies as f64 / self.secs
    }
}

impl LoadGen {
    /// A generator on `ifname` sending one DISCOVER per MAC of `macs`, round
    /// robin, each with its own transaction id.
    pub fn new(ifname: &str, macs: impl IntoIterator<Item = [u8; 6]>) -> Result<Self> {
        let macs: Vec<[u8; 6]> = macs.into_iter().collect();
        ensure!(
            !macs.is_empty(),
            "the load generator needs at least one MAC"
        );
        let mut template = RequestFrame::discover([0; 6]);
        template.xid = [0; 4];
        let template = template.bytes();
        let template_checksum =
            u16::from_be_bytes([template[UDP_CHECKSUM], template[UDP_CHECKSUM + 1]]);
        let ifindex = crate::if_index(ifname)?;
        // Sending socket: protocol 0 receives nothing.
        let tx =
            crate::packet_socket(0, ifindex).with_context(|| format!("send socket on {ifname}"))?;
        setsockopt(&tx, libc::SOL_PACKET, libc::PACKET_QDISC_BYPASS, 1)
            .context("PACKET_QDISC_BYPASS")?;
        let counter = crate::packet_socket(libc::ETH_P_ALL as u16, ifindex)
            .with_context(|| format!("counting socket on {ifname}"))?;
        attach_udp_dport_68_filter(&counter)?;
        // Nothing is ever read: a small buffer keeps the drops cheap.
        setsockopt(&counter, libc::SOL_SOCKET, libc::SO_RCVBUF, 4096).context("SO_RCVBUF")?;
        let g = Self {
            tx,
            counter,
            macs,
            template_checksum,
            batch: std::sync::Mutex::new(vec![template; BATCH]),
        };
        // Start from zero: PACKET_STATISTICS resets the counts it reports.
        g.replies()?;
        Ok(g)
    }

    /// Sends for `period` at `rate` frames/s (None: as fast as the kernel
    /// takes them), or until `stop`; then waits `settle` for the last replies.
    pub fn run(
        &self,
        rate: Option<f64>,
        period: Duration,
        settle: Duration,
        stop: &AtomicBool,
    ) -> Result<Load> {
        self.replies()?;
        let mut next = 0usize;
        let (mut sent, mut refused) = (0u64, 0u64);
        let start = Instant::now();
        loop {
            let elapsed = start.elapsed();
            if elapsed >= period || stop.load(Ordering::Relaxed) {
                break;
            }
            let want = match rate {
                None => BATCH,
                Some(r) => {
                    let due = (r * elapsed.as_secs_f64()) as u64;
                    let behind = due.saturating_sub(sent + refused) as usize;
                    if behind == 0 {
                        std::thread::sleep(Duration::from_micros(200));
                        continue;
                    }
                    behind.min(BATCH)
                }
            };
            let n = self.send_batch(next, want)?;
            sent += n as u64;
            // A refused frame is counted as if tried, so pacing does not
            // make up for it with a burst.
            refused += (want - n) as u64;
            next = (next + want) % self.macs.len();
        }
        let secs = start.elapsed().as_secs_f64();
        std::thread::sleep(settle);
        Ok(Load {
            sent,
            replies: self.replies()?,
            secs,
            refused,
        })
    }

    /// Client `i`'s DISCOVER (xid i + 1), written over the template in `frame`.
    fn patch(&self, frame: &mut [u8], i: usize) {
        let mac = self.macs[i];
        let xid = (i as u32).wrapping_add(1).to_be_bytes();
        frame[ETH_SRC..ETH_SRC + 6].copy_from_slice(&mac);
        frame[XID..XID + 4].copy_from_slice(&xid);
        frame[CHADDR..CHADDR + 6].copy_from_slice(&mac);
        // RFC 1624: the template's xid and chaddr are zero, so the checksum
        // only gains the new 16-bit words (both fields sit at even offsets).
        let mut sum = u32::from(!self.template_checksum);
        for w in xid.chunks(2).chain(mac.chunks(2)) {
            sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        let checksum = match !(sum as u16) {
            0 => 0xffff,
            c => c,
        };
        frame[UDP_CHECKSUM..UDP_CHECKSUM + 2].copy_from_slice(&checksum.to_be_bytes());
    }

    /// Sends `count` frames from client `first` on; returns how many went.
    fn send_batch(&self, first: usize, count: usize) -> Result<usize> {
        let mut batch = self.batch.lock().unwrap_or_else(|e| e.into_inner());
        let mut iov: [libc::iovec; BATCH] = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; BATCH];
        // SAFETY: mmsghdr is plain data; zero is a valid empty header.
        let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for (k, frame) in batch.iter_mut().take(count).enumerate() {
            self.patch(frame, (first + k) % self.macs.len());
            iov[k] = libc::iovec {
                iov_base: frame.as_mut_ptr().cast(),
                iov_len: frame.len(),
            };
            msgs[k].msg_hdr.msg_iov = &mut iov[k];
            msgs[k].msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: `count` headers, each pointing at one iovec over a frame
        // that outlives the call; the socket is bound, so no address.
        let n = unsafe {
            libc::sendmmsg(
                self.tx.as_raw_fd(),
                msgs.as_mut_ptr(),
                count as u32,
                libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            // A full device queue: nothing sent this time.
            if matches!(e.raw_os_error(), Some(libc::ENOBUFS | libc::EAGAIN)) {
                return Ok(0);
            }
            return Err(e).context("sendmmsg");
        }
        Ok(n as usize)
    }

    /// Replies seen since the last call (PACKET_STATISTICS resets on read).
    fn replies(&self) -> Result<u64> {
        let mut st = libc::tpacket_stats {
            tp_packets: 0,
            tp_drops: 0,
        };
        let mut len = std::mem::size_of::<libc::tpacket_stats>() as libc::socklen_t;
        // SAFETY: `st` is valid for `len` bytes.
        let rc = unsafe {
            libc::getsockopt(
                self.counter.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                (&mut st as *mut libc::tpacket_stats).cast(),
                &mut len,
            )
        };
        ensure!(
            rc == 0,
            "PACKET_STATISTICS: {}",
            std::io::Error::last_os_error()
        );
        // The kernel has already added the drops into tp_packets.
        Ok(u64::from(st.tp_packets))
    }
}

fn setsockopt(fd: &OwnedFd, level: i32, name: i32, value: i32) -> Result<()> {
    // SAFETY: an int option, passed by pointer with its size.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&value as *const i32).cast(),
            std::mem::size_of::<i32>() as u32,
        )
    };
    ensure!(rc == 0, "{}", std::io::Error::last_os_error());
    Ok(())
}

/// Accepts untagged IPv4 UDP first fragments to port 68 (DHCP replies).
fn attach_udp_dport_68_filter(fd: &OwnedFd) -> Result<()> {
    let op = |code: u16, jt: u8, jf: u8, k: u32| libc::sock_filter { code, jt, jf, k };
    const LD_H_ABS: u16 = 0x28;
    const LD_B_ABS: u16 = 0x30;
    const LDX_B_MSH: u16 = 0xb1;
    const LD_H_IND: u16 = 0x48;
    const JEQ_K: u16 = 0x15;
    const JSET_K: u16 = 0x45;
    const RET_K: u16 = 0x06;
    let prog = [
        op(LD_H_ABS, 0, 0, 12),       // EtherType
        op(JEQ_K, 0, 7, 0x0800),      // IPv4, else drop
        op(LD_B_ABS, 0, 0, 23),       // IP protocol
        op(JEQ_K, 0, 5, 17),          // UDP, else drop
        op(LD_H_ABS, 0, 0, 20),       // flags + fragment offset
        op(JSET_K, 3, 0, 0x1fff),     // not a first fragment: drop
        op(LDX_B_MSH, 0, 0, 14),      // X = IP header length
        op(LD_H_IND, 0, 0, 14 + 2),   // UDP destination port
        op(JEQ_K, 1, 0, 68),          // port 68: accept
        op(RET_K, 0, 0, 0),           // drop
        op(RET_K, 0, 0, 0x0004_0000), // accept
    ];
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: a valid sock_fprog over `prog`, which outlives the call.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            (&fprog as *const libc::sock_fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as u32,
        )
    };
    ensure!(
        rc == 0,
        "SO_ATTACH_FILTER: {}",
        std::io::Error::last_os_error()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A patched frame is the frame the request builder makes for that client.
    #[test]
    fn patched_frames_equal_built_ones() {
        let macs = [
            [0xfa, 0x16, 0x3e, 0, 0, 1],
            [0xfa, 0x16, 0x3e, 0xff, 0xff, 0xff],
            [0, 0, 0, 0, 0, 0],
            [0xff; 6],
        ];
        let mut template = RequestFrame::discover([0; 6]);
        template.xid = [0; 4];
        let template = template.bytes();
        // The sockets are not needed to patch: a generator without them.
        let g = LoadGen {
            tx: std::fs::File::open("/dev/null").unwrap().into(),
            counter: std::fs::File::open("/dev/null").unwrap().into(),
            macs: macs.to_vec(),
            template_checksum: u16::from_be_bytes([
                template[UDP_CHECKSUM],
                template[UDP_CHECKSUM + 1],
            ]),
            batch: std::sync::Mutex::new(Vec::new()),
        };
        for (i, mac) in macs.iter().enumerate() {
            let mut frame = template.clone();
            g.patch(&mut frame, i);
            let mut want = RequestFrame::discover(*mac);
            want.xid = (i as u32 + 1).to_be_bytes();
            assert_eq!(frame, want.bytes(), "client {i}");
        }
    }
}
