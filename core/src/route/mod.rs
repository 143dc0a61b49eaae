//! Longest-prefix routes to (egress port, next hop), and next-hop MACs.
//!
//! Like ipsec-secgw's `rt` and `neigh` lines: a small table per family,
//! longest prefix first. The pipeline looks up the *outer* destination after
//! encapsulation (so the egress port's MTU is the one that counts) and the
//! inner destination after decapsulation or for pass traffic.

use std::net::IpAddr;

use rustc_hash::FxHashMap;

use crate::policy::Prefix;

/// One route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub prefix: Prefix,
    /// Gateway port index.
    pub port: usize,
    /// Next hop; `None` = the destination is on the link.
    pub via: Option<IpAddr>,
}

/// Where a packet goes next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NextHop {
    pub port: usize,
    pub mac: [u8; 6],
}

/// One route as the lookup reads it: the prefix as bits, and the next hop's
/// MAC resolved when the table was built (a `via` route's gateway does not
/// change per packet; on-link destinations are looked up per packet).
#[derive(Debug, Clone, Copy)]
struct Entry {
    addr: u128,
    mask: u128,
    route: Route,
    via_mac: Option<[u8; 6]>,
}

/// Routes and neighbours, immutable once built (rebuilt and republished on change).
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    /// Longest prefix first, per family.
    v4: Vec<Entry>,
    v6: Vec<Entry>,
    neighbors: FxHashMap<IpAddr, [u8; 6]>,
    /// Per port: the MAC to use when no neighbour entry matches (a
    /// point-to-point peer, or the upstream router).
    port_default_mac: Vec<Option<[u8; 6]>>,
}

impl RouteTable {
    /// Build from routes, neighbour entries and per-port default next-hop MACs.
    pub fn new(
        mut routes: Vec<Route>,
        neighbors: impl IntoIterator<Item = (IpAddr, [u8; 6])>,
        port_default_mac: Vec<Option<[u8; 6]>>,
    ) -> Self {
        routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        let neighbors: FxHashMap<IpAddr, [u8; 6]> = neighbors.into_iter().collect();
        let resolve = |nh: IpAddr, port: usize| {
            neighbors.get(&nh).copied().or_else(|| port_default_mac.get(port).copied().flatten())
        };
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        for route in routes {
            let e = Entry {
                addr: route.prefix.bits(),
                mask: route.prefix.mask_bits(),
                route,
                via_mac: route.via.and_then(|v| resolve(v, route.port)),
            };
            if route.prefix.is_v6() {
                v6.push(e)
            } else {
                v4.push(e)
            }
        }
        RouteTable { v4, v6, neighbors, port_default_mac }
    }

    #[inline]
    fn entry(&self, dst: IpAddr) -> Option<&Entry> {
        let (t, a) = match dst {
            IpAddr::V4(a) => (&self.v4, u128::from(u32::from(a))),
            IpAddr::V6(a) => (&self.v6, u128::from(a)),
        };
        t.iter().find(|e| a & e.mask == e.addr)
    }

    /// The longest-prefix route for `dst`.
    #[inline]
    pub fn route(&self, dst: IpAddr) -> Option<&Route> {
        self.entry(dst).map(|e| &e.route)
    }

    /// Egress port and destination MAC for `dst`.
    #[inline]
    pub fn next_hop(&self, dst: IpAddr) -> Result<NextHop, NextHopError> {
        let e = self.entry(dst).ok_or(NextHopError::NoRoute)?;
        let port = e.route.port;
        let (nh, mac) = match e.route.via {
            Some(via) => (via, e.via_mac),
            None => {
                (dst, self.neighbors.get(&dst).copied().or_else(|| self.port_default_mac.get(port).copied().flatten()))
            }
        };
        let mac = mac.ok_or(NextHopError::NoNeighbor { port, ip: nh })?;
        Ok(NextHop { port, mac })
    }
}

/// Why no next hop was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextHopError {
    NoRoute,
    /// The route is known but the next hop's MAC is not (yet): ask for it.
    NoNeighbor {
        port: usize,
        ip: IpAddr,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_prefix_and_neighbors() {
        let r = |p: &str, port, via: Option<&str>| Route {
            prefix: p.parse().unwrap(),
            port,
            via: via.map(|v| v.parse().unwrap()),
        };
        let t = RouteTable::new(
            vec![
                r("0.0.0.0/0", 1, Some("198.51.100.254")),
                r("10.0.0.0/8", 0, None),
                r("10.9.0.0/16", 2, Some("10.0.0.9")),
                r("fd00::/8", 0, None),
            ],
            [
                ("198.51.100.254".parse().unwrap(), [2, 0, 0, 0, 0, 0xfe]),
                ("10.0.0.9".parse().unwrap(), [2, 0, 0, 0, 0, 9]),
            ],
            vec![Some([2, 0, 0, 0, 0, 0xa0]), None, None],
        );
        assert_eq!(t.next_hop("8.8.8.8".parse().unwrap()), Ok(NextHop { port: 1, mac: [2, 0, 0, 0, 0, 0xfe] }));
        assert_eq!(t.next_hop("10.9.1.1".parse().unwrap()), Ok(NextHop { port: 2, mac: [2, 0, 0, 0, 0, 9] }));
        assert_eq!(
            t.next_hop("10.1.1.1".parse().unwrap()),
            Ok(NextHop { port: 0, mac: [2, 0, 0, 0, 0, 0xa0] }),
            "on-link: port default"
        );
        assert_eq!(t.next_hop("fd00::1".parse().unwrap()), Ok(NextHop { port: 0, mac: [2, 0, 0, 0, 0, 0xa0] }));
        assert_eq!(t.next_hop("2001:db8::1".parse().unwrap()), Err(NextHopError::NoRoute));
        let t2 = RouteTable::new(vec![r("0.0.0.0/0", 1, None)], [], vec![None, None]);
        assert_eq!(
            t2.next_hop("1.1.1.1".parse().unwrap()),
            Err(NextHopError::NoNeighbor { port: 1, ip: "1.1.1.1".parse().unwrap() })
        );
    }
}
