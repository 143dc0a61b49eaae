//! Route lookup per packet, by table size: espgw's trie ([`RouteTable`],
//! `core/src/route/lpm.rs`) next to the linear longest-first scan it
//! replaced and to the `prefix-trie` crate's LPM, on the same prefixes
//! and destinations (IPv4: /8–/32 under a default route; IPv6: /32–/64).
//!
//! `cargo bench -p espgw-core --bench route`; results in perf/RESULTS.md.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use espgw_core::route::{Route, RouteTable};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use prefix_trie::PrefixMap;

/// A deterministic spread of bits (xorshift).
fn rng(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

/// `n` routes (with a default for IPv4) and 256 destinations, half of them
/// inside some route's prefix.
fn table(n: usize, v6: bool) -> (Vec<IpNet>, Vec<IpAddr>) {
    let mut s = 0x9e37_79b9_7f4a_7c15u64;
    let mut nets = Vec::new();
    if !v6 {
        nets.push(IpNet::V4(Ipv4Net::new(Ipv4Addr::UNSPECIFIED, 0).unwrap()));
    }
    while nets.len() < n {
        let r = rng(&mut s);
        let net = if v6 {
            let a = Ipv6Addr::from((u128::from(r) << 64) | 0x2001_0db8 << 96);
            IpNet::V6(Ipv6Net::new(a, 32 + (r % 33) as u8).unwrap().trunc())
        } else {
            IpNet::V4(Ipv4Net::new(Ipv4Addr::from(r as u32), 8 + (r >> 40) as u8 % 25).unwrap().trunc())
        };
        if !nets.contains(&net) {
            nets.push(net);
        }
    }
    let dsts = (0..256)
        .map(|i| {
            let r = rng(&mut s);
            match nets[i % nets.len()] {
                IpNet::V4(p) if i % 2 == 0 => {
                    IpAddr::V4(Ipv4Addr::from(u32::from(p.network()) | (r as u32 & !u32::from(p.netmask()))))
                }
                IpNet::V6(p) if i % 2 == 0 => {
                    IpAddr::V6(Ipv6Addr::from(u128::from(p.network()) | (u128::from(r) & !u128::from(p.netmask()))))
                }
                _ if v6 => IpAddr::V6(Ipv6Addr::from(u128::from(r) << 64 | 0x2001_0db8 << 96)),
                _ => IpAddr::V4(Ipv4Addr::from(r as u32)),
            }
        })
        .collect();
    (nets, dsts)
}

/// The table this replaced: longest prefix first, first match wins.
struct Linear(Vec<(u128, u128, usize)>);

impl Linear {
    fn new(nets: &[IpNet]) -> Linear {
        let mut v: Vec<(u128, u128, usize, u8)> = nets
            .iter()
            .enumerate()
            .map(|(i, n)| match n {
                IpNet::V4(p) => {
                    (u128::from(u32::from(p.network())), u128::from(u32::from(p.netmask())), i, p.prefix_len())
                }
                IpNet::V6(p) => (u128::from(p.network()), u128::from(p.netmask()), i, p.prefix_len()),
            })
            .collect();
        v.sort_by_key(|e| std::cmp::Reverse(e.3));
        Linear(v.into_iter().map(|(a, m, i, _)| (a, m, i)).collect())
    }
    fn lookup(&self, dst: IpAddr) -> Option<usize> {
        let a = match dst {
            IpAddr::V4(a) => u128::from(u32::from(a)),
            IpAddr::V6(a) => u128::from(a),
        };
        self.0.iter().find(|(addr, mask, _)| a & mask == *addr).map(|e| e.2)
    }
}

/// The `prefix-trie` crate, one map per family.
#[derive(Default)]
struct CrateTrie(PrefixMap<Ipv4Net, usize>, PrefixMap<Ipv6Net, usize>);

impl CrateTrie {
    fn lookup(&self, dst: IpAddr) -> Option<usize> {
        match dst {
            IpAddr::V4(a) => self.0.get_lpm(&Ipv4Net::from(a)).map(|(_, i)| *i),
            IpAddr::V6(a) => self.1.get_lpm(&Ipv6Net::from(a)).map(|(_, i)| *i),
        }
    }
}

fn bench(c: &mut Criterion) {
    for v6 in [false, true] {
        let mut g = c.benchmark_group(if v6 { "route_v6" } else { "route_v4" });
        for n in [2usize, 16, 256, 4096] {
            let (nets, dsts) = table(n, v6);
            g.throughput(Throughput::Elements(dsts.len() as u64));
            let routes: Vec<Route> =
                nets.iter().map(|p| Route { prefix: p.to_string().parse().unwrap(), port: 0, via: None }).collect();
            let ours = RouteTable::new(routes, [], vec![Some([2, 0, 0, 0, 0, 1])]);
            let linear = Linear::new(&nets);
            let mut crate_trie = CrateTrie::default();
            for (i, p) in nets.iter().enumerate() {
                match *p {
                    IpNet::V4(p) => crate_trie.0.insert(p, i),
                    IpNet::V6(p) => crate_trie.1.insert(p, i),
                };
            }
            // All three find the same route for every destination.
            for &d in &dsts {
                let want = linear.lookup(d).map(|i| nets[i]);
                assert_eq!(ours.route(d).map(|r| r.prefix.to_string()), want.map(|p| p.to_string()), "{d}");
                assert_eq!(crate_trie.lookup(d).map(|i| nets[i]), want, "{d}");
            }
            g.bench_with_input(BenchmarkId::new("espgw_trie", n), &dsts, |b, dsts| {
                b.iter(|| dsts.iter().filter(|&&d| ours.route(black_box(d)).is_some()).count())
            });
            g.bench_with_input(BenchmarkId::new("linear_scan", n), &dsts, |b, dsts| {
                b.iter(|| dsts.iter().filter(|&&d| linear.lookup(black_box(d)).is_some()).count())
            });
            g.bench_with_input(BenchmarkId::new("prefix_trie_crate", n), &dsts, |b, dsts| {
                b.iter(|| dsts.iter().filter(|&&d| crate_trie.lookup(black_box(d)).is_some()).count())
            });
        }
        g.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).warm_up_time(std::time::Duration::from_millis(300)).measurement_time(std::time::Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
