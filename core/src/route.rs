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

/// Routes and neighbours, immutable once built (rebuilt and republished on change).
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    /// Longest prefix first, per family.
    v4: Vec<Route>,
    v6: Vec<Route>,
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
        let (v6, v4) = routes.into_iter().partition(|r| r.prefix.is_v6());
        RouteTable { v4, v6, neighbors: neighbors.into_iter().collect(), port_default_mac }
    }

    /// The longest-prefix route for `dst`.
    #[inline]
    pub fn route(&self, dst: IpAddr) -> Option<&Route> {
        let t = if dst.is_ipv6() { &self.v6 } else { &self.v4 };
        t.iter().find(|r| r.prefix.contains(dst))
    }

    /// Egress port and destination MAC for `dst`.
    #[inline]
    pub fn next_hop(&self, dst: IpAddr) -> Result<NextHop, NextHopError> {
        let r = self.route(dst).ok_or(NextHopError::NoRoute)?;
        let nh = r.via.unwrap_or(dst);
        let mac = self
            .neighbors
            .get(&nh)
            .copied()
            .or_else(|| self.port_default_mac.get(r.port).copied().flatten())
            .ok_or(NextHopError::NoNeighbor { port: r.port, ip: nh })?;
        Ok(NextHop { port: r.port, mac })
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
