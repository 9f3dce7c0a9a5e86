//! Differential test of the two paths' decisions: random and mutated frames
//! (seeded, reproducible) run through the XDP program (BPF_PROG_TEST_RUN) and
//! through a userspace model of the fast path's decision built from the slow
//! path's own pieces (`slowpath::dhcp_payload`, `Request::parse`, the lease
//! lookup in the same maps, `reply::decide` and `reply::frame`), plus the
//! limits only the fast path has (frame size, options it leaves to the slow
//! path). Verdict (answer or pass up, the passed frame unchanged) and, when
//! answered, the reply bytes must agree on every frame.
//!
//! `XDHCP_DIFF_FRAMES` sets the number of frames (default 30,000, a few
//! seconds), `XDHCP_DIFF_SEED` the seed. Each disagreement is printed with
//! its network and frame in hex, to become a fixture row.

use dhcp_ebpf::{csum, verdict, wire, ClientKey, OPTS_MAX};
use xdhcp::slowpath::{
    dhcp_payload,
    reply::{self, Decision, LeaseView, Request},
};
use xdhcp_tests::{
    fixtures::{self, LISTED_NET, NET, RELAY_NET},
    verdict_name, Harness,
};

/// What the fast path reads at most: longer frames go up (no jumbo DHCP).
const MAX_FRAME: usize = 1600;
/// Options the fast path walks (PAD and END count) before giving up.
const MAX_OPTIONS: usize = 64;

/// splitmix64: small, seeded, the same sequence everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in 0..n (n > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
}

/// Offsets of the L3 and L4 headers as a receiver finds them (up to two tags).
fn layers(f: &[u8]) -> Option<(usize, usize)> {
    let mut l3 = wire::ETH_HLEN;
    let mut ethertype = u16::from_be_bytes([*f.get(12)?, *f.get(13)?]);
    for _ in 0..2 {
        if wire::is_vlan(ethertype) {
            ethertype = u16::from_be_bytes([*f.get(l3 + 2)?, *f.get(l3 + 3)?]);
            l3 += wire::VLAN_HLEN;
        }
    }
    let ihl = ((f.get(l3)? & 0x0f) as usize) * 4;
    Some((l3, l3 + ihl))
}

/// Recomputes the IPv4 header and UDP checksums over the lengths the frame
/// claims, where they fit: so that a mutation reaches the parsers behind the
/// checksum check instead of being refused by it.
fn fix_checksums(f: &mut [u8]) {
    let Some((l3, l4)) = layers(f) else { return };
    if l4 < l3 + wire::IPV4_HLEN || l4 > f.len() {
        return;
    }
    f[l3 + 10..l3 + 12].copy_from_slice(&[0, 0]);
    let c = csum::checksum(csum::add(0, &f[l3..l4]));
    f[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
    if l4 + wire::UDP_HLEN > f.len() {
        return;
    }
    let udp_len = u16::from_be_bytes([f[l4 + 4], f[l4 + 5]]) as usize;
    if udp_len < wire::UDP_HLEN || l4 + udp_len > f.len() {
        return;
    }
    f[l4 + 6..l4 + 8].copy_from_slice(&[0, 0]);
    let mut sum = csum::add(0, &f[l3 + 12..l3 + 20]);
    sum += wire::IPPROTO_UDP as u64 + udp_len as u64;
    sum = csum::add(sum, &f[l4..l4 + udp_len]);
    let c = csum::udp_checksum(sum);
    f[l4 + 6..l4 + 8].copy_from_slice(&c.to_be_bytes());
}

/// One mutation of `f`.
fn mutate(rng: &mut Rng, f: &mut Vec<u8>) {
    let (l3, l4) = layers(f).unwrap_or((14, 34));
    let bootp = l4 + wire::UDP_HLEN;
    let opts = bootp + wire::bootp::OPTIONS;
    let set16 = |f: &mut Vec<u8>, at: usize, v: u16| {
        if at + 2 <= f.len() {
            f[at..at + 2].copy_from_slice(&v.to_be_bytes());
        }
    };
    match rng.below(12) {
        0 => {
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(f.len());
                f[at] ^= 1 << rng.below(8);
            }
        }
        1 => {
            let len = 14 + rng.below(f.len() - 13);
            f.truncate(len);
        }
        2 => {
            for _ in 0..1 + rng.below(64) {
                f.push(rng.byte());
            }
        }
        3 => {
            let v = match rng.below(3) {
                0 => rng.next() as u16,
                1 => (f.len() - l3) as u16 + rng.below(16) as u16,
                _ => (f.len() - l3).saturating_sub(rng.below(64)) as u16,
            };
            set16(f, l3 + 2, v); // IPv4 total length
        }
        4 => {
            let v = match rng.below(2) {
                0 => rng.next() as u16,
                _ => (f.len().saturating_sub(l4) as u16)
                    .wrapping_add(rng.below(32) as u16)
                    .wrapping_sub(16),
            };
            set16(f, l4 + 4, v); // UDP length
        }
        5 => {
            if l3 < f.len() {
                f[l3] = [0x45, 0x46, 0x44, 0x65, 0x4f, rng.byte()][rng.below(6)];
            }
        }
        6 => {
            let v = [0x2000, 0x4000, 0x0001, 0x2001, rng.next() as u16][rng.below(5)];
            set16(f, l3 + 6, v); // flags / fragment offset
        }
        7 => {
            let port = [67, 68, 0, rng.next() as u16][rng.below(4)];
            set16(f, l4 + 2 * rng.below(2), port);
        }
        8 => {
            // Another VLAN tag in front of whatever was there.
            let tpid = [0x8100u16, 0x88a8][rng.below(2)];
            let mut tag = tpid.to_be_bytes().to_vec();
            tag.extend_from_slice(&(rng.below(4096) as u16).to_be_bytes());
            f.splice(12..12, tag);
        }
        9 => {
            // An option TLV somewhere in the options field.
            if opts < f.len() {
                let at = opts + rng.below(f.len() - opts);
                let codes = [0, 50, 52, 53, 54, 55, 57, 61, 82, 255, rng.byte()];
                let code = codes[rng.below(codes.len())];
                let len = [0, 1, 2, 4, 7, rng.byte()][rng.below(6)];
                let mut tlv = vec![code, len];
                tlv.extend((0..len.min(16)).map(|_| rng.byte()));
                let end = (at + tlv.len()).min(f.len());
                f.splice(at..end, tlv);
            }
        }
        10 => {
            // A BOOTP fixed field: op, htype, hlen, flags, ciaddr, giaddr or chaddr.
            let fields = [0usize, 1, 2, 10, 12, 24, 28, 33];
            let at = bootp + fields[rng.below(fields.len())];
            if at < f.len() {
                f[at] = [0, 1, 2, 6, 0x80, rng.byte()][rng.below(6)];
            }
        }
        _ => {
            // The options field replaced by random TLVs.
            if opts < f.len() {
                f.truncate(opts);
                for _ in 0..rng.below(12) {
                    let code = [53, 50, 54, 57, 61, 82, 12, 0][rng.below(8)];
                    let len = rng.below(8) as u8;
                    f.push(code);
                    f.push(len);
                    f.extend((0..len).map(|_| rng.byte()));
                }
                f.push(255);
                let pad = rng.below(300);
                f.resize(f.len() + pad, 0);
                let (total, udp) = ((f.len() - l3) as u16, (f.len() - l4) as u16);
                set16(f, l3 + 2, total);
                set16(f, l4 + 4, udp);
            }
        }
    }
}

/// Whether the fast path's options walk accepts the options field (the
/// limits only it has): END within MAX_OPTIONS steps, no option it reads in
/// two instances, no zero-length 61 or 82. `Request::parse` checks the rest.
fn fast_walk_ok(payload: &[u8]) -> bool {
    let mut off = wire::bootp::OPTIONS;
    let mut seen = Vec::new();
    for _ in 0..MAX_OPTIONS {
        let Some(&code) = payload.get(off) else {
            return false;
        };
        match code {
            wire::opt::END => return true,
            wire::opt::PAD => {
                off += 1;
                continue;
            }
            _ => {}
        }
        let Some(&len) = payload.get(off + 1) else {
            return false;
        };
        use wire::opt::*;
        if [
            MSG_TYPE,
            REQUESTED_IP,
            SERVER_ID,
            MAX_MSG_SIZE,
            CLIENT_ID,
            RELAY_AGENT,
        ]
        .contains(&code)
        {
            if seen.contains(&code) || (len == 0 && (code == CLIENT_ID || code == RELAY_AGENT)) {
                return false;
            }
            seen.push(code);
        }
        off += 2 + len as usize;
    }
    false
}

/// The userspace model of the fast path: the reply frame it sends, or `None`
/// (passed up).
fn model(h: &Harness, net: u32, frame: &[u8]) -> Option<Vec<u8>> {
    if frame.len() > MAX_FRAME {
        return None;
    }
    let (l2_len, payload) = dhcp_payload(frame)?;
    if !fast_walk_ok(payload) {
        return None;
    }
    let req = Request::parse(payload).ok()?;
    let mac = req.mac();
    let eth_src: [u8; 6] = frame[wire::ETH_SRC..wire::ETH_TYPE].try_into().unwrap();
    let relayed = !req.giaddr.is_unspecified();
    if !relayed && eth_src != mac {
        return None;
    }
    let cfg = h.maps.nets.get(&net, 0).ok()?;
    if relayed {
        let allowed = reply::relay_allowed(
            cfg.flags,
            || {
                let giaddr = u32::from_ne_bytes(req.giaddr.octets());
                h.maps.relays.get(&giaddr, 0).is_ok()
            },
            || h.maps.leases.get(&ClientKey::new(net, eth_src), 0).is_ok(),
        );
        if !allowed {
            return None;
        }
    }
    let key = ClientKey::new(net, mac);
    let lease = h.maps.leases.get(&key, 0).ok()?;
    let blob = h.maps.opts.get(&lease.opts_id, 0).ok()?;
    let hostname = h.maps.hostname(&key, &lease)?;
    let view = LeaseView {
        ip: lease.ip.into(),
        server_ip: lease.server_ip.into(),
        siaddr: lease.siaddr.into(),
        hostname: &hostname,
        blob: &blob.bytes[..(blob.len as usize).min(OPTS_MAX)],
    };
    let Decision::Reply(t) = reply::decide(&req, &view) else {
        return None;
    };
    let out = reply::frame(&frame[..l2_len], cfg.server_mac, &req, &view, t);
    (out.len() - l2_len <= reply::max_reply_ip_len(&req)).then_some(out)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}={v:?} is not a number"))
        })
        .unwrap_or(default)
}

#[test]
fn fast_path_and_userspace_model_agree() {
    let frames = env_u64("XDHCP_DIFF_FRAMES", 30_000);
    let seed = env_u64("XDHCP_DIFF_SEED", 17);
    let mut rng = Rng(seed);
    let mut h = fixtures::harness().expect("loading the fast path with the fixture maps");
    let bases: Vec<(u32, Vec<u8>)> = fixtures::rows()
        .iter()
        .map(|r| (r.net, r.bytes()))
        .collect();
    let nets = [NET, RELAY_NET, LISTED_NET];
    let (mut disagreements, mut answered) = (0u64, 0u64);
    for i in 0..frames {
        let (mut net, mut f) = bases[rng.below(bases.len())].clone();
        match rng.below(16) {
            // Random bytes.
            0 => f = (0..14 + rng.below(1700)).map(|_| rng.byte()).collect(),
            // A fixture row as it is.
            1 => {}
            _ => {
                for _ in 0..1 + rng.below(3) {
                    mutate(&mut rng, &mut f);
                }
                if rng.below(3) != 0 {
                    fix_checksums(&mut f);
                }
            }
        }
        if rng.below(8) == 0 {
            net = nets[rng.below(nets.len())];
        }
        let run = h.run(net, &f).expect("BPF_PROG_TEST_RUN");
        let fast = match run.verdict {
            verdict::TX => Some(run.frame.clone()),
            verdict::PASS if run.frame == f => None,
            v => {
                disagreements += 1;
                eprintln!(
                    "frame {i}: net {net}: the fast path gave {} (frame {}changed)\n  input {}",
                    verdict_name(v),
                    if run.frame == f { "un" } else { "" },
                    hex(&f)
                );
                continue;
            }
        };
        let model = model(&h, net, &f);
        answered += u64::from(fast.is_some());
        if fast != model {
            disagreements += 1;
            let say = |r: &Option<Vec<u8>>| match r {
                Some(b) => format!("answers {}", hex(b)),
                None => "passes up".to_string(),
            };
            eprintln!(
                "frame {i}: net {net}: the fast path {}, the model {}\n  input {}",
                say(&fast),
                say(&model),
                hex(&f)
            );
        }
    }
    println!(
        "differential: {frames} frames compared (seed {seed}), {answered} answered, {disagreements} disagreements"
    );
    assert_eq!(disagreements, 0, "frames on which the two paths disagree");
    assert!(
        answered > frames / 100,
        "only {answered} of {frames} frames were answered: the mutations are too blunt to test replies"
    );
}
