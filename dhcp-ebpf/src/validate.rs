//! The one rule for which frames are IPv4/UDP datagrams to port 67 worth
//! reading as DHCP, applied by the XDP program and by the slow path alike, so
//! that neither answers a frame the other refuses. Functions over plain header
//! values (the caller reads them from the frame); each returns the `stat`
//! index of the pass reason the fast path counts.
//!
//! Checksums: the IPv4 header checksum must verify; the UDP checksum must
//! verify unless it is zero (RFC 768: none sent) or is the seed a same-host
//! sender's stack leaves for checksum offload (CHECKSUM_PARTIAL: the folded
//! pseudo-header sum, completed only by hardware that a veth does not have).

use crate::{
    csum, stat,
    wire::{BOOTPS, IPPROTO_UDP, IPV4_FRAGMENT, IPV4_HLEN, UDP_HLEN},
};

/// Why a frame is not read as a DHCP request: a `stat::PASS_*` index.
pub type Refusal = u32;

/// VLAN tags read in front of IPv4 (802.1Q, or 802.1ad QinQ over 802.1Q).
pub const MAX_VLAN_TAGS: usize = 2;

/// The shortest UDP payload read: the fixed BOOTP fields and the cookie.
pub const MIN_MESSAGE: usize = crate::wire::bootp::OPTIONS;

/// IPv4 with protocol UDP and a header length of at least 20 bytes; returns
/// the header length (IHL × 4).
#[inline(always)]
pub fn ipv4_header(version_ihl: u8, protocol: u8) -> Result<usize, Refusal> {
    let ihl = ((version_ihl & 0x0f) as usize) * 4;
    if version_ihl >> 4 != 4 || protocol != IPPROTO_UDP || ihl < IPV4_HLEN {
        return Err(stat::PASS_NOT_DHCP);
    }
    Ok(ihl)
}

/// UDP to the DHCP server port.
#[inline(always)]
pub fn udp_port(dst_port: u16) -> Result<(), Refusal> {
    if dst_port != BOOTPS {
        return Err(stat::PASS_NOT_DHCP);
    }
    Ok(())
}

/// A whole datagram (no fragment: the first fragment may look whole, and
/// fragments are not reassembled for DHCP) whose lengths agree: the IPv4 total
/// length holds the header, UDP and a BOOTP message and lies within the
/// `l3_avail` bytes the frame has from the IPv4 header on; the UDP length
/// holds a BOOTP message and lies within the IPv4 payload.
#[inline(always)]
pub fn datagram(
    flags_fragment: u16,
    ihl: usize,
    total_len: usize,
    udp_len: usize,
    l3_avail: usize,
) -> Result<(), Refusal> {
    if flags_fragment & IPV4_FRAGMENT != 0 {
        return Err(stat::PASS_FRAGMENT);
    }
    if total_len < ihl + UDP_HLEN + MIN_MESSAGE || total_len > l3_avail {
        return Err(stat::PASS_MALFORMED);
    }
    if udp_len < UDP_HLEN + MIN_MESSAGE || udp_len > total_len - ihl {
        return Err(stat::PASS_MALFORMED);
    }
    Ok(())
}

/// The IPv4 header checksum: `header_sum` is the [`csum::add`] sum of the
/// whole header (IHL × 4 bytes, checksum field included).
#[inline(always)]
pub fn ipv4_checksum(header_sum: u64) -> Result<(), Refusal> {
    if csum::fold(header_sum) != 0xffff {
        return Err(stat::PASS_BAD_CHECKSUM);
    }
    Ok(())
}

/// The ones'-complement sum of the UDP pseudo header.
#[inline(always)]
pub fn pseudo_header_sum(src: [u8; 4], dst: [u8; 4], udp_len: u16) -> u64 {
    let sum = csum::add(0, &src);
    csum::add(sum, &dst) + IPPROTO_UDP as u64 + udp_len as u64
}

/// The UDP checksum: `field` as sent, `pseudo_sum` from
/// [`pseudo_header_sum`], `datagram_sum` the sum of the UDP header (field
/// included) and payload.
#[inline(always)]
pub fn udp_checksum(field: u16, pseudo_sum: u64, datagram_sum: u64) -> Result<(), Refusal> {
    if field == 0 || field == csum::fold(pseudo_sum) {
        return Ok(());
    }
    if csum::fold(pseudo_sum + datagram_sum) != 0xffff {
        return Err(stat::PASS_BAD_CHECKSUM);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire;

    #[test]
    fn ipv4_header_wants_version_4_udp_and_ihl_5_or_more() {
        let cases = [
            ("IPv4, IHL 5, UDP", 0x45, IPPROTO_UDP, Ok(20)),
            ("IHL 15", 0x4f, IPPROTO_UDP, Ok(60)),
            ("version 6", 0x65, IPPROTO_UDP, Err(stat::PASS_NOT_DHCP)),
            ("version 0", 0x05, IPPROTO_UDP, Err(stat::PASS_NOT_DHCP)),
            ("IHL 4", 0x44, IPPROTO_UDP, Err(stat::PASS_NOT_DHCP)),
            ("TCP", 0x45, 6, Err(stat::PASS_NOT_DHCP)),
        ];
        for (what, vi, proto, want) in cases {
            assert_eq!(ipv4_header(vi, proto), want, "{what}");
        }
    }

    #[test]
    fn datagram_refuses_fragments_and_lying_lengths() {
        // A 300-byte BOOTP message: UDP 308, IPv4 328, the frame has 328 from L3 on.
        let cases = [
            ("whole", 0, 20, 328, 308, 328, Ok(())),
            ("don't fragment is fine", 0x4000, 20, 328, 308, 328, Ok(())),
            ("padding after the datagram", 0, 20, 328, 308, 400, Ok(())),
            (
                "more fragments",
                0x2000,
                20,
                328,
                308,
                328,
                Err(stat::PASS_FRAGMENT),
            ),
            (
                "a fragment offset",
                0x0001,
                20,
                328,
                308,
                328,
                Err(stat::PASS_FRAGMENT),
            ),
            (
                "total length past the frame",
                0,
                20,
                368,
                308,
                328,
                Err(stat::PASS_MALFORMED),
            ),
            (
                "total length too short for BOOTP",
                0,
                20,
                200,
                180,
                328,
                Err(stat::PASS_MALFORMED),
            ),
            (
                "UDP length past the IP payload",
                0,
                20,
                328,
                316,
                328,
                Err(stat::PASS_MALFORMED),
            ),
            (
                "UDP length short of BOOTP",
                0,
                20,
                328,
                100,
                328,
                Err(stat::PASS_MALFORMED),
            ),
            (
                "IHL 6 leaves less room for UDP",
                0,
                24,
                328,
                308,
                328,
                Err(stat::PASS_MALFORMED),
            ),
        ];
        for (what, ff, ihl, total, udp, avail, want) in cases {
            assert_eq!(datagram(ff, ihl, total, udp, avail), want, "{what}");
        }
    }

    #[test]
    fn checksums_verify_and_zero_or_offload_seed_udp_passes() {
        let (src, dst) = ([10, 0, 0, 5], wire::BROADCAST_IP);
        let payload = [0x5au8; 300];
        let udp_len = (UDP_HLEN + payload.len()) as u16;
        let ip = wire::ipv4_header(src, dst, udp_len);
        assert_eq!(ipv4_checksum(csum::add(0, &ip)), Ok(()), "a built header");
        let mut bad = ip;
        bad[8] ^= 1;
        assert_eq!(
            ipv4_checksum(csum::add(0, &bad)),
            Err(stat::PASS_BAD_CHECKSUM),
            "TTL changed after the checksum"
        );
        let h = wire::udp_header(src, dst, 68, udp_len, csum::add(0, &payload));
        let field = u16::from_be_bytes([h[6], h[7]]);
        let pseudo = pseudo_header_sum(src, dst, udp_len);
        let sum = |h: &[u8]| csum::add(csum::add(0, h), &payload);
        let with = |f: u16| {
            let mut h = h;
            h[6..8].copy_from_slice(&f.to_be_bytes());
            h
        };
        let seed = csum::fold(pseudo);
        let cases = [
            ("correct", field, Ok(())),
            ("zero: no checksum", 0, Ok(())),
            ("the offload seed", seed, Ok(())),
            (
                "off by one",
                field.wrapping_add(1),
                Err(stat::PASS_BAD_CHECKSUM),
            ),
            ("complemented", !field, Err(stat::PASS_BAD_CHECKSUM)),
        ];
        for (what, f, want) in cases {
            assert_eq!(udp_checksum(f, pseudo, sum(&with(f))), want, "{what}");
        }
        let mut corrupt = payload;
        corrupt[100] ^= 0x10;
        let s = csum::add(csum::add(0, &h), &corrupt);
        assert_eq!(
            udp_checksum(field, pseudo, s),
            Err(stat::PASS_BAD_CHECKSUM),
            "a flipped payload bit"
        );
    }
}
