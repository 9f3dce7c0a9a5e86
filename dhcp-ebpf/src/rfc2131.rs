//! RFC 2131 for a server whose clients have fixed addresses: which reply a
//! DISCOVER or REQUEST gets (§4.3.1, §4.3.2), the reply's header fields that
//! depend on it (§4.3.1, table 3) and where the reply goes (§4.1).
//!
//! Plain functions of plain values: the XDP program calls them with what it
//! read from the frame, the daemon's reply builder with its parsed request.

use crate::wire::{
    BOOTPC, BOOTPS, BROADCAST_FLAG, BROADCAST_IP, BROADCAST_MAC, DHCPACK, DHCPDISCOVER, DHCPNAK,
    DHCPOFFER, DHCPREQUEST, MIN_MAX_MSG,
};

/// What in a request decides its answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ask {
    /// Option 53.
    pub msg_type: u8,
    pub ciaddr: [u8; 4],
    /// Option 50.
    pub requested_ip: Option<[u8; 4]>,
    /// Option 54.
    pub server_id: Option<[u8; 4]>,
}

/// The answer to a known client's request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Send this message type: DHCPOFFER, DHCPACK or DHCPNAK.
    Reply(u8),
    /// A SELECTING REQUEST naming another server: stay silent.
    NotOurServer,
    /// A REQUEST in none of §4.3.2's states (a server identifier without a
    /// requested address, or neither and no ciaddr): stay silent.
    Inconsistent,
    /// Neither DISCOVER nor REQUEST: not this rule's to answer.
    OtherType,
}

/// §4.3.1/§4.3.2 for a client whose address is `lease_ip`, served by
/// `server_ip`: DISCOVER gets an OFFER; a REQUEST an ACK if the address it
/// asks for (by state: SELECTING and INIT-REBOOT option 50, RENEWING and
/// REBINDING ciaddr) is the client's, else a NAK.
#[inline(always)]
pub fn decide(ask: &Ask, lease_ip: [u8; 4], server_ip: [u8; 4]) -> Decision {
    let ours = |ip: [u8; 4]| Decision::Reply(if ip == lease_ip { DHCPACK } else { DHCPNAK });
    match ask.msg_type {
        DHCPDISCOVER => Decision::Reply(DHCPOFFER),
        DHCPREQUEST => match (ask.server_id, ask.requested_ip) {
            // SELECTING: answer only the client that chose us.
            (Some(server), Some(ip)) => {
                if server == server_ip {
                    ours(ip)
                } else {
                    Decision::NotOurServer
                }
            }
            (Some(_), None) => Decision::Inconsistent,
            // INIT-REBOOT.
            (None, Some(ip)) => ours(ip),
            // RENEWING (unicast) / REBINDING (broadcast).
            (None, None) if ask.ciaddr != [0; 4] => ours(ask.ciaddr),
            (None, None) => Decision::Inconsistent,
        },
        _ => Decision::OtherType,
    }
}

/// The reply's BOOTP fields that depend on the message type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplyFields {
    pub flags: u16,
    pub ciaddr: [u8; 4],
    pub yiaddr: [u8; 4],
    pub siaddr: [u8; 4],
}

/// Table 3 of §4.3.1 for `reply` to a request with `flags`, `ciaddr` and
/// `giaddr`: ciaddr only in an ACK, no yiaddr or siaddr in a NAK, and the
/// broadcast bit set on a relayed NAK so the relay broadcasts it (§4.3.2).
#[inline(always)]
pub fn reply_fields(
    reply: u8,
    flags: u16,
    ciaddr: [u8; 4],
    giaddr: [u8; 4],
    lease_ip: [u8; 4],
    siaddr: [u8; 4],
) -> ReplyFields {
    let nak = reply == DHCPNAK;
    let zero = [0u8; 4];
    ReplyFields {
        flags: if nak && giaddr != zero {
            flags | BROADCAST_FLAG
        } else {
            flags
        },
        ciaddr: if reply == DHCPACK { ciaddr } else { zero },
        yiaddr: if nak { zero } else { lease_ip },
        siaddr: if nak { zero } else { siaddr },
    }
}

/// Where a reply goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Destination {
    pub ip: [u8; 4],
    /// Ethernet destination; `None`: the request's Ethernet source (the relay,
    /// or a client that has an address).
    pub mac: Option<[u8; 6]>,
    pub port: u16,
}

/// §4.1: giaddr → the relay, port 67; a NAK → broadcast; ciaddr → unicast to
/// it; the broadcast flag → broadcast; else unicast to yiaddr at chaddr
/// (`yiaddr`, `client_mac`).
#[inline(always)]
pub fn destination(
    reply: u8,
    flags: u16,
    ciaddr: [u8; 4],
    giaddr: [u8; 4],
    yiaddr: [u8; 4],
    client_mac: [u8; 6],
) -> Destination {
    let zero = [0u8; 4];
    let broadcast = Destination {
        ip: BROADCAST_IP,
        mac: Some(BROADCAST_MAC),
        port: BOOTPC,
    };
    if giaddr != zero {
        Destination {
            ip: giaddr,
            mac: None,
            port: BOOTPS,
        }
    } else if reply == DHCPNAK {
        broadcast
    } else if ciaddr != zero {
        Destination {
            ip: ciaddr,
            mac: None,
            port: BOOTPC,
        }
    } else if flags & BROADCAST_FLAG != 0 {
        broadcast
    } else {
        Destination {
            ip: yiaddr,
            mac: Some(client_mac),
            port: BOOTPC,
        }
    }
}

/// The largest IP packet the client takes: 576 bytes unless option 57
/// (`max_msg_size`, 0 when absent) says more.
#[inline(always)]
pub fn max_reply_ip_len(max_msg_size: u16) -> usize {
    let m = max_msg_size as usize;
    if m > MIN_MAX_MSG {
        m
    } else {
        MIN_MAX_MSG
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{DHCPDECLINE, DHCPINFORM, DHCPRELEASE};

    const LEASE: [u8; 4] = [10, 0, 0, 5];
    const OTHER: [u8; 4] = [10, 0, 0, 9];
    const SERVER: [u8; 4] = [10, 0, 0, 2];
    const OTHER_SERVER: [u8; 4] = [10, 0, 0, 3];
    const NONE: [u8; 4] = [0; 4];

    fn ask(
        msg_type: u8,
        ciaddr: [u8; 4],
        requested: Option<[u8; 4]>,
        server: Option<[u8; 4]>,
    ) -> Ask {
        Ask {
            msg_type,
            ciaddr,
            requested_ip: requested,
            server_id: server,
        }
    }

    #[test]
    fn decisions_follow_the_request_states() {
        use Decision::*;
        let cases = [
            (
                "DISCOVER",
                ask(DHCPDISCOVER, NONE, None, None),
                Reply(DHCPOFFER),
            ),
            (
                "DISCOVER asking for another address still gets the OFFER",
                ask(DHCPDISCOVER, NONE, Some(OTHER), None),
                Reply(DHCPOFFER),
            ),
            (
                "SELECTING us, our address",
                ask(DHCPREQUEST, NONE, Some(LEASE), Some(SERVER)),
                Reply(DHCPACK),
            ),
            (
                "SELECTING us, another address",
                ask(DHCPREQUEST, NONE, Some(OTHER), Some(SERVER)),
                Reply(DHCPNAK),
            ),
            (
                "SELECTING another server",
                ask(DHCPREQUEST, NONE, Some(LEASE), Some(OTHER_SERVER)),
                NotOurServer,
            ),
            (
                "server id without requested address",
                ask(DHCPREQUEST, NONE, None, Some(SERVER)),
                Inconsistent,
            ),
            (
                "INIT-REBOOT, our address",
                ask(DHCPREQUEST, NONE, Some(LEASE), None),
                Reply(DHCPACK),
            ),
            (
                "INIT-REBOOT, wrong address",
                ask(DHCPREQUEST, NONE, Some(OTHER), None),
                Reply(DHCPNAK),
            ),
            (
                "INIT-REBOOT: option 50 wins over ciaddr",
                ask(DHCPREQUEST, OTHER, Some(LEASE), None),
                Reply(DHCPACK),
            ),
            (
                "RENEWING/REBINDING, our address",
                ask(DHCPREQUEST, LEASE, None, None),
                Reply(DHCPACK),
            ),
            (
                "RENEWING/REBINDING, wrong address",
                ask(DHCPREQUEST, OTHER, None, None),
                Reply(DHCPNAK),
            ),
            (
                "REQUEST with nothing to check",
                ask(DHCPREQUEST, NONE, None, None),
                Inconsistent,
            ),
            ("RELEASE", ask(DHCPRELEASE, LEASE, None, None), OtherType),
            (
                "DECLINE",
                ask(DHCPDECLINE, NONE, Some(LEASE), Some(SERVER)),
                OtherType,
            ),
            ("INFORM", ask(DHCPINFORM, LEASE, None, None), OtherType),
            (
                "OFFER sent to a server",
                ask(DHCPOFFER, NONE, None, None),
                OtherType,
            ),
        ];
        for (what, a, want) in cases {
            assert_eq!(decide(&a, LEASE, SERVER), want, "{what}");
        }
    }

    #[test]
    fn reply_fields_follow_table_3() {
        let ci = [10, 0, 0, 7];
        let gi = [192, 0, 2, 1];
        let si = [10, 0, 0, 50];
        let f = |flags, yi, si, ci| ReplyFields {
            flags,
            ciaddr: ci,
            yiaddr: yi,
            siaddr: si,
        };
        let cases = [
            (
                "OFFER: no ciaddr",
                DHCPOFFER,
                0,
                ci,
                NONE,
                f(0, LEASE, si, NONE),
            ),
            (
                "ACK keeps ciaddr",
                DHCPACK,
                0,
                ci,
                NONE,
                f(0, LEASE, si, ci),
            ),
            (
                "ACK keeps the broadcast bit",
                DHCPACK,
                BROADCAST_FLAG,
                NONE,
                NONE,
                f(BROADCAST_FLAG, LEASE, si, NONE),
            ),
            (
                "NAK: no addresses",
                DHCPNAK,
                0,
                ci,
                NONE,
                f(0, NONE, NONE, NONE),
            ),
            (
                "relayed NAK is broadcast by the relay",
                DHCPNAK,
                0,
                NONE,
                gi,
                f(BROADCAST_FLAG, NONE, NONE, NONE),
            ),
            (
                "relayed OFFER keeps flags",
                DHCPOFFER,
                0x0001,
                NONE,
                gi,
                f(0x0001, LEASE, si, NONE),
            ),
        ];
        for (what, reply, flags, ciaddr, giaddr, want) in cases {
            assert_eq!(
                reply_fields(reply, flags, ciaddr, giaddr, LEASE, si),
                want,
                "{what}"
            );
        }
    }

    #[test]
    fn destinations_follow_section_4_1() {
        let ci = [10, 0, 0, 7];
        let gi = [192, 0, 2, 1];
        let mac = [2, 0, 0, 0, 0, 1];
        let bcast = Destination {
            ip: BROADCAST_IP,
            mac: Some(BROADCAST_MAC),
            port: BOOTPC,
        };
        let back_to = |ip, port| Destination {
            ip,
            mac: None,
            port,
        };
        let cases = [
            (
                "relayed: to the relay's port 67",
                DHCPOFFER,
                0,
                NONE,
                gi,
                back_to(gi, BOOTPS),
            ),
            (
                "relayed NAK: still to the relay",
                DHCPNAK,
                0,
                NONE,
                gi,
                back_to(gi, BOOTPS),
            ),
            (
                "relayed, broadcast bit: to the relay",
                DHCPACK,
                BROADCAST_FLAG,
                ci,
                gi,
                back_to(gi, BOOTPS),
            ),
            ("NAK: broadcast", DHCPNAK, 0, ci, NONE, bcast),
            (
                "ciaddr: unicast to it",
                DHCPACK,
                0,
                ci,
                NONE,
                back_to(ci, BOOTPC),
            ),
            (
                "ciaddr beats the broadcast bit",
                DHCPACK,
                BROADCAST_FLAG,
                ci,
                NONE,
                back_to(ci, BOOTPC),
            ),
            (
                "broadcast bit: broadcast",
                DHCPOFFER,
                BROADCAST_FLAG,
                NONE,
                NONE,
                bcast,
            ),
            (
                "else unicast to yiaddr at chaddr",
                DHCPOFFER,
                0,
                NONE,
                NONE,
                Destination {
                    ip: LEASE,
                    mac: Some(mac),
                    port: BOOTPC,
                },
            ),
        ];
        for (what, reply, flags, ciaddr, giaddr, want) in cases {
            assert_eq!(
                destination(reply, flags, ciaddr, giaddr, LEASE, mac),
                want,
                "{what}"
            );
        }
    }

    #[test]
    fn max_reply_len_is_576_unless_the_client_takes_more() {
        let cases = [
            ("no option 57", 0, 576),
            ("less than 576 asked", 300, 576),
            ("exactly 576", 576, 576),
            ("more", 1500, 1500),
            ("most", u16::MAX, 65535),
        ];
        for (what, asked, want) in cases {
            assert_eq!(max_reply_ip_len(asked), want, "{what}");
        }
    }
}
