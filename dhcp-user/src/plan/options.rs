//! The one DHCP option encoder: builds the pre-encoded option blob that the
//! fast path copies verbatim and the slow path sends the same way.

use std::net::Ipv4Addr;

use anyhow::{bail, Result};
use dhcp_ebpf::{wire::opt, LEASE_INFINITE, OPTS_MAX};

/// A static route (RFC 3442).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub dest: Ipv4Addr,
    pub prefix: u8,
    pub via: Ipv4Addr,
}

/// Everything a client's OFFER/ACK carries besides 53, 54, 12, 61 and 82.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplyOptions {
    /// Seconds, or [`LEASE_INFINITE`].
    pub lease_secs: u32,
    pub prefix_len: u8,
    pub router: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub domain: Option<String>,
    pub mtu: Option<u16>,
    pub broadcast: Option<Ipv4Addr>,
    /// Host routes (option 121/249), before the default route via `router`.
    pub routes: Vec<Route>,
    /// extra_dhcp_opts, already encoded: they replace a built-in option of the same code.
    pub extra: Vec<(u8, Vec<u8>)>,
}

impl ReplyOptions {
    /// Encodes the blob: TLVs in a fixed order, no END.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut opts: Vec<(u8, Vec<u8>)> = Vec::new();
        opts.push((opt::LEASE_TIME, self.lease_secs.to_be_bytes().to_vec()));
        if self.lease_secs != LEASE_INFINITE {
            // dnsmasq's (and RFC 2131's) defaults: T1 = 0.5, T2 = 0.875 of the lease.
            let t1 = self.lease_secs / 2;
            let t2 = (self.lease_secs as u64 * 7 / 8) as u32;
            opts.push((opt::RENEWAL_T1, t1.to_be_bytes().to_vec()));
            opts.push((opt::REBINDING_T2, t2.to_be_bytes().to_vec()));
        }
        if self.prefix_len > 32 {
            bail!("prefix length {} is not an IPv4 prefix", self.prefix_len);
        }
        let mask = u32::MAX
            .checked_shl(32 - self.prefix_len as u32)
            .unwrap_or(0);
        opts.push((opt::SUBNET_MASK, mask.to_be_bytes().to_vec()));
        if let Some(router) = self.router {
            opts.push((opt::ROUTER, router.octets().to_vec()));
        }
        if !self.dns.is_empty() {
            opts.push((opt::DNS, self.dns.iter().flat_map(|a| a.octets()).collect()));
        }
        if let Some(domain) = &self.domain {
            opts.push((opt::DOMAIN, domain.as_bytes().to_vec()));
        }
        if let Some(mtu) = self.mtu {
            opts.push((opt::MTU, mtu.to_be_bytes().to_vec()));
        }
        if let Some(broadcast) = self.broadcast {
            opts.push((opt::BROADCAST, broadcast.octets().to_vec()));
        }
        if !self.routes.is_empty() {
            // RFC 3442: a client that takes 121 ignores option 3, so the default
            // route goes into 121 too.
            let mut routes = self.routes.clone();
            if let Some(router) = self.router {
                routes.push(Route {
                    dest: Ipv4Addr::UNSPECIFIED,
                    prefix: 0,
                    via: router,
                });
            }
            let value = encode_routes(&routes)?;
            opts.push((opt::CLASSLESS_ROUTES, value.clone()));
            opts.push((opt::MS_CLASSLESS_ROUTES, value));
        }
        for (code, value) in &self.extra {
            opts.retain(|(c, _)| c != code);
            opts.push((*code, value.clone()));
        }
        let mut blob = Vec::new();
        for (code, value) in &opts {
            push_tlv(&mut blob, *code, value)?;
        }
        if blob.len() > OPTS_MAX {
            bail!(
                "the encoded options take {} bytes, more than {OPTS_MAX}",
                blob.len()
            );
        }
        Ok(blob)
    }
}

/// RFC 3442 encoding: prefix length, significant octets of the destination, router.
pub fn encode_routes(routes: &[Route]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    for r in routes {
        if r.prefix > 32 {
            bail!("route {}/{} has a prefix longer than 32", r.dest, r.prefix);
        }
        out.push(r.prefix);
        out.extend_from_slice(&r.dest.octets()[..r.prefix.div_ceil(8) as usize]);
        out.extend_from_slice(&r.via.octets());
    }
    Ok(out)
}

/// Appends one option, split into several of the same code when longer than
/// 255 bytes (RFC 3396).
pub fn push_tlv(out: &mut Vec<u8>, code: u8, value: &[u8]) -> Result<()> {
    if code == opt::PAD || code == opt::END {
        bail!("option code {code} is PAD/END, not an option");
    }
    if value.is_empty() {
        out.extend_from_slice(&[code, 0]);
        return Ok(());
    }
    for chunk in value.chunks(255) {
        out.push(code);
        out.push(chunk.len() as u8);
        out.extend_from_slice(chunk);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn classless_routes_encode_only_significant_octets() {
        let cases: &[(&str, Route, &[u8])] = &[
            (
                "default route",
                Route {
                    dest: ip("0.0.0.0"),
                    prefix: 0,
                    via: ip("10.0.0.1"),
                },
                &[0, 10, 0, 0, 1],
            ),
            (
                "metadata /32",
                Route {
                    dest: ip("169.254.169.254"),
                    prefix: 32,
                    via: ip("10.0.0.2"),
                },
                &[32, 169, 254, 169, 254, 10, 0, 0, 2],
            ),
            (
                "/24",
                Route {
                    dest: ip("192.168.7.0"),
                    prefix: 24,
                    via: ip("10.0.0.1"),
                },
                &[24, 192, 168, 7, 10, 0, 0, 1],
            ),
            (
                "/9 takes two octets",
                Route {
                    dest: ip("10.128.0.0"),
                    prefix: 9,
                    via: ip("10.0.0.1"),
                },
                &[9, 10, 128, 10, 0, 0, 1],
            ),
        ];
        for (what, route, want) in cases {
            assert_eq!(encode_routes(&[*route]).unwrap(), *want, "{what}");
        }
    }

    #[test]
    fn long_options_are_split_per_rfc3396() {
        let mut out = Vec::new();
        push_tlv(&mut out, opt::CLASSLESS_ROUTES, &[7u8; 300]).unwrap();
        assert_eq!(out.len(), 2 + 255 + 2 + 45);
        assert_eq!((out[0], out[1]), (opt::CLASSLESS_ROUTES, 255));
        assert_eq!((out[257], out[258]), (opt::CLASSLESS_ROUTES, 45));
    }

    #[test]
    fn extra_options_replace_built_in_ones() {
        let o = ReplyOptions {
            lease_secs: 86400,
            prefix_len: 24,
            router: Some(ip("10.0.0.1")),
            extra: vec![(opt::ROUTER, ip("10.0.0.254").octets().to_vec())],
            ..Default::default()
        };
        let blob = o.encode().unwrap();
        let routers: Vec<_> = blob
            .windows(6)
            .filter(|w| w[0] == opt::ROUTER && w[1] == 4)
            .collect();
        assert_eq!(routers, vec![&[opt::ROUTER, 4, 10, 0, 0, 254][..]]);
    }

    #[test]
    fn infinite_lease_has_no_t1_t2() {
        let o = ReplyOptions {
            lease_secs: LEASE_INFINITE,
            prefix_len: 24,
            ..Default::default()
        };
        let blob = o.encode().unwrap();
        assert_eq!(&blob[..6], &[opt::LEASE_TIME, 4, 255, 255, 255, 255]);
        assert!(!blob
            .windows(2)
            .any(|w| w == [opt::RENEWAL_T1, 4] || w == [opt::REBINDING_T2, 4]));
    }
}
