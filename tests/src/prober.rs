//! Many DHCP clients behind one NIC: a namespace whose eth0 is a veth on
//! the harness's OVS bridge (a plain system port, no Neutron port: the L2
//! agent leaves it alone), from which each [`Target`] (a VM port of some
//! network, and that network's DHCP port) does a DORA, and then keeps
//! renewing, on its own clock. For the agent benchmarks: when did each
//! network first answer, and what was the longest time any client went
//! unanswered while the agent was killed and restarted.
//!
//! The bridge is one L2 segment for every network, so the requests are sent
//! to the DHCP port's MAC (IP destination still 255.255.255.255, as a
//! client's are) rather than flooded to every DHCP port on the bridge; the
//! client's MAC is the Ethernet source, so that the bridge learns where the
//! unicast answer goes. A target is probed only once its DHCP port's tap
//! exists (before that, the unicast would be flooded too).

use std::{
    collections::HashMap,
    net::Ipv4Addr,
    path::Path,
    process::Command,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use anyhow::Result;
use xdhcp::netns::TempNs;

use crate::{craft::RequestFrame, neutron::Neutron, RawSocket};

/// One client and the server it is expected to get its address from.
#[derive(Clone, Debug)]
pub struct Target {
    pub mac: [u8; 6],
    pub ip: Ipv4Addr,
    pub server_ip: Ipv4Addr,
    pub server_mac: [u8; 6],
    /// The DHCP port's tap on the bridge: probed once it exists.
    pub tap: String,
}

/// What one target saw, from the prober's start.
#[derive(Clone, Debug, Default)]
pub struct Seen {
    /// The first ACK.
    pub first_ack: Option<Duration>,
    /// The last answered request.
    pub last_ack: Option<Duration>,
    /// The longest time from one answered request to the next, over the
    /// watched window (see [`Prober::watch_from`]).
    pub longest_gap: Duration,
    /// Requests sent, and answered, in the watched window.
    pub sent: u64,
    pub answered: u64,
}

/// The prober's namespace and NIC; see the module documentation.
pub struct Prober {
    n: &'static Neutron,
    ns: TempNs,
    host_side: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Targets added since the thread last looked.
    new: Arc<Mutex<Vec<Target>>>,
    /// Set: gaps and counts are kept from then on (a [`Seen`] reset).
    watch: Arc<Mutex<Option<Instant>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    pub t0: Instant,
}

impl Prober {
    /// Plugs the NIC and starts probing `targets`, each every `period`
    /// (a DISCOVER until the first OFFER, then SELECTING REQUESTs).
    pub fn start(
        n: &'static Neutron,
        tag: &str,
        targets: Vec<Target>,
        period: Duration,
    ) -> Result<Self> {
        let ns = TempNs::new(&format!("xprobe-{tag}"))?;
        let host_side = format!("xpr{}", std::process::id() % 100_000);
        xdhcp::netns::ip(&[
            "link", "add", &host_side, "type", "veth", "peer", "name", "eth0", "netns", &ns.name,
        ])?;
        ns.ip(&["link", "set", "eth0", "up"])?;
        xdhcp::netns::ip(&["link", "set", &host_side, "up"])?;
        n.ovs_vsctl(&["--may-exist", "add-port", &n.bridge, &host_side])?;
        let sock = {
            let _inside = ns.enter()?;
            RawSocket::bind("eth0")?
        };
        let seen = Arc::new(Mutex::new(Vec::new()));
        let new = Arc::new(Mutex::new(Vec::new()));
        let watch = Arc::new(Mutex::new(None));
        let stop = Arc::new(AtomicBool::new(false));
        let t0 = Instant::now();
        let thread = {
            let (seen, new, watch, stop) = (seen.clone(), new.clone(), watch.clone(), stop.clone());
            std::thread::spawn(move || probe(sock, &new, period, t0, &seen, &watch, &stop))
        };
        let prober = Prober {
            n,
            ns,
            host_side,
            seen,
            new,
            watch,
            stop,
            thread: Some(thread),
            t0,
        };
        prober.add(targets);
        Ok(prober)
    }

    /// More targets, probed from now on (their records follow the others').
    pub fn add(&self, targets: Vec<Target>) {
        let mut seen = self.seen.lock().unwrap();
        let mut new = self.new.lock().unwrap();
        seen.extend(targets.iter().map(|_| Seen::default()));
        new.extend(targets);
    }

    /// Each target's record so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Starts the watched window now: gaps and counts from here on.
    pub fn watch_from(&self) {
        *self.watch.lock().unwrap() = Some(Instant::now());
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = self
            .n
            .ovs_vsctl(&["--if-exists", "del-port", &self.n.bridge, &self.host_side]);
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_side])
            .output();
        let _ = &self.ns;
    }
}

/// Per target: the xid of its request in flight and whether it has had an
/// OFFER (then it sends REQUESTs).
struct State {
    next: Instant,
    offered: bool,
    xid: u32,
    sent_at: Instant,
    ready: bool,
}

fn probe(
    sock: RawSocket,
    new: &Mutex<Vec<Target>>,
    period: Duration,
    t0: Instant,
    seen: &Mutex<Vec<Seen>>,
    watch: &Mutex<Option<Instant>>,
    stop: &AtomicBool,
) {
    let mut targets: Vec<Target> = Vec::new();
    let mut states: Vec<State> = Vec::new();
    let mut by_xid: HashMap<u32, usize> = HashMap::new();
    let mut seq: u32 = 0;
    let mut last_tap_check = t0 - Duration::from_secs(10);
    let mut watching: Option<Instant> = None;
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        {
            let mut added = new.lock().unwrap();
            // Spread the first sends of new targets over one period.
            let count = added.len().max(1) as f64;
            for (k, t) in added.drain(..).enumerate() {
                states.push(State {
                    next: now + period.mul_f64(k as f64 / count),
                    offered: false,
                    xid: 0,
                    sent_at: now,
                    ready: false,
                });
                targets.push(t);
            }
        }
        if watching.is_none() {
            if let Some(w) = *watch.lock().unwrap() {
                watching = Some(w);
                let mut s = seen.lock().unwrap();
                for x in s.iter_mut() {
                    x.longest_gap = Duration::ZERO;
                    x.sent = 0;
                    x.answered = 0;
                    // The gap runs from the last answer before the window.
                    x.last_ack = x.last_ack.map(|l| l.max(w - t0));
                }
            }
        }
        if now - last_tap_check > Duration::from_millis(500) {
            last_tap_check = now;
            for (st, t) in states.iter_mut().zip(&targets) {
                st.ready = st.ready || Path::new(&format!("/sys/class/net/{}", t.tap)).exists();
            }
        }
        for (i, (st, t)) in states.iter_mut().zip(&targets).enumerate() {
            if !st.ready || st.next > now {
                continue;
            }
            by_xid.remove(&st.xid);
            seq = seq.wrapping_add(1);
            st.xid = seq;
            by_xid.insert(seq, i);
            st.sent_at = now;
            st.next = now + period;
            let mut f = if st.offered {
                RequestFrame::request(t.mac, t.ip, t.server_ip)
            } else {
                RequestFrame::discover(t.mac)
            };
            f.xid = seq.to_be_bytes();
            f.eth_dst = t.server_mac;
            let _ = sock.send(&f.bytes());
            if watching.is_some() && st.offered {
                seen.lock().unwrap()[i].sent += 1;
            }
        }
        // Answers, for up to 5 ms.
        let deadline = Instant::now() + Duration::from_millis(5);
        while let Some(frame) =
            sock.recv_matching(deadline.saturating_duration_since(Instant::now()), is_reply)
        {
            let b = crate::bootp(&frame);
            let xid = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
            let Some(&i) = by_xid.get(&xid) else { continue };
            let st = &mut states[i];
            match crate::cloud::msg_type(&frame) {
                Some(2) if !st.offered => {
                    // OFFER: the REQUEST at once.
                    st.offered = true;
                    st.next = Instant::now();
                }
                Some(5) => {
                    let at = st.sent_at - t0;
                    let mut s = seen.lock().unwrap();
                    let x = &mut s[i];
                    x.first_ack.get_or_insert(at);
                    if let Some(last) = x.last_ack {
                        x.longest_gap = x.longest_gap.max(at.saturating_sub(last));
                    }
                    x.last_ack = Some(at);
                    if watching.is_some() {
                        x.answered += 1;
                    }
                    by_xid.remove(&xid);
                }
                Some(6) => {
                    // NAK: start over with a DISCOVER.
                    st.offered = false;
                    by_xid.remove(&xid);
                }
                _ => {}
            }
        }
    }
}

/// A BOOTREPLY to port 68 (untagged IPv4/UDP).
fn is_reply(frame: &[u8]) -> bool {
    if frame.len() < 14 + 20 + 8 + 240 || frame[12..14] != [0x08, 0x00] || frame[23] != 17 {
        return false;
    }
    let udp = 14 + ((frame[14] & 0x0f) as usize) * 4;
    frame.len() > udp + 8 + 240 && frame[udp + 2..udp + 4] == [0, 68] && frame[udp + 8] == 2
}
