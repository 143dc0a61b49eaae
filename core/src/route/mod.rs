//! Longest-prefix routes to (egress port, next hop), and next-hop MACs.
//!
//! Like ipsec-secgw's `rt` and `neigh` lines, looked up like its rte_lpm:
//! a longest-prefix trie per family ([`lpm`]). The pipeline looks up the *outer* destination after
//! encapsulation (so the egress port's MTU is the one that counts) and the
//! inner destination after decapsulation or for pass traffic.

mod lpm;

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

/// One route as the lookup returns it, with the next hop's MAC resolved
/// when the table was built (a `via` route's gateway does not change per
/// packet; on-link destinations are looked up per packet).
#[derive(Debug, Clone, Copy)]
struct Entry {
    route: Route,
    via_mac: Option<[u8; 6]>,
}

/// One family's routes, their trie (indexes into `entries`) and the
/// neighbours on its links, keyed by address bits (`u32` for IPv4).
#[derive(Debug, Clone)]
struct Family<K> {
    entries: Vec<Entry>,
    lpm: lpm::Lpm<K>,
    neighbors: FxHashMap<K, [u8; 6]>,
}

impl<K: lpm::LpmKey + Eq + std::hash::Hash> Family<K> {
    fn new(entries: Vec<Entry>, neighbors: FxHashMap<K, [u8; 6]>) -> Family<K> {
        let prefixes: Vec<(u128, u8)> = entries.iter().map(|e| (e.route.prefix.bits(), e.route.prefix.len())).collect();
        Family { lpm: lpm::Lpm::new(&prefixes), entries, neighbors }
    }

    #[inline]
    fn entry(&self, dst: K) -> Option<&Entry> {
        self.lpm.lookup(dst).and_then(|i| self.entries.get(i))
    }
}

/// Routes and neighbours, immutable once built (rebuilt and republished on change).
#[derive(Debug, Clone)]
pub struct RouteTable {
    v4: Family<u32>,
    v6: Family<u128>,
    /// Per port: the MAC to use when no neighbour entry matches (a
    /// point-to-point peer, or the upstream router).
    port_default_mac: Vec<Option<[u8; 6]>>,
}

impl RouteTable {
    /// Build from routes, neighbour entries and per-port default next-hop MACs.
    pub fn new(
        routes: Vec<Route>,
        neighbors: impl IntoIterator<Item = (IpAddr, [u8; 6])>,
        port_default_mac: Vec<Option<[u8; 6]>>,
    ) -> Self {
        let (mut n4, mut n6) = (FxHashMap::default(), FxHashMap::default());
        for (ip, mac) in neighbors {
            match ip {
                IpAddr::V4(a) => n4.insert(u32::from(a), mac),
                IpAddr::V6(a) => n6.insert(u128::from(a), mac),
            };
        }
        let resolve = |nh: IpAddr, port: usize| {
            let known = match nh {
                IpAddr::V4(a) => n4.get(&u32::from(a)),
                IpAddr::V6(a) => n6.get(&u128::from(a)),
            };
            known.copied().or_else(|| port_default_mac.get(port).copied().flatten())
        };
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        for route in routes {
            let e = Entry { route, via_mac: route.via.and_then(|v| resolve(v, route.port)) };
            if route.prefix.is_v6() {
                v6.push(e)
            } else {
                v4.push(e)
            }
        }
        RouteTable { v4: Family::new(v4, n4), v6: Family::new(v6, n6), port_default_mac }
    }

    /// The longest-prefix route for `dst`.
    #[inline]
    pub fn route(&self, dst: IpAddr) -> Option<&Route> {
        match dst {
            IpAddr::V4(a) => self.v4.entry(u32::from(a)),
            IpAddr::V6(a) => self.v6.entry(u128::from(a)),
        }
        .map(|e| &e.route)
    }

    /// Egress port and destination MAC for `dst`.
    #[inline]
    pub fn next_hop(&self, dst: IpAddr) -> Result<NextHop, NextHopError> {
        match dst {
            IpAddr::V4(a) => self.next_hop_in(&self.v4, u32::from(a), || dst),
            IpAddr::V6(a) => self.next_hop_in(&self.v6, u128::from(a), || dst),
        }
    }

    /// [`Self::next_hop`] for an address in the selector encoding (family +
    /// bits), as packet records hold it.
    #[inline(always)]
    pub fn next_hop_bits(&self, v6: bool, dst: u128) -> Result<NextHop, NextHopError> {
        if v6 {
            self.next_hop_in(&self.v6, dst, || IpAddr::V6(dst.into()))
        } else {
            self.next_hop_in(&self.v4, dst as u32, || IpAddr::V4((dst as u32).into()))
        }
    }

    /// The lookup proper. `dst` makes the destination as an address only
    /// for the error that needs it: building it, and carrying the route's
    /// gateway address along, for every packet cost ~40 instructions.
    #[inline(always)]
    fn next_hop_in<K: lpm::LpmKey + Eq + std::hash::Hash>(
        &self,
        family: &Family<K>,
        key: K,
        dst: impl FnOnce() -> IpAddr,
    ) -> Result<NextHop, NextHopError> {
        let e = family.entry(key).ok_or(NextHopError::NoRoute)?;
        let port = e.route.port;
        let mac = match e.route.via {
            Some(_) => e.via_mac,
            None => family.neighbors.get(&key).copied().or_else(|| self.port_default_mac.get(port).copied().flatten()),
        };
        match mac {
            Some(mac) => Ok(NextHop { port, mac }),
            None => Err(NextHopError::NoNeighbor { port, ip: e.route.via.unwrap_or_else(dst) }),
        }
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

impl Default for RouteTable {
    fn default() -> Self {
        RouteTable::new(Vec::new(), [], Vec::new())
    }
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
