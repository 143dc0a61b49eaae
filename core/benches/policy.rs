//! Eroute and SA lookups at scale, and the cost of publishing a change.
//!
//! `cargo bench -p dataplane --bench policy`; results go to perf/RESULTS.md.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use espgw_core::crypto::Algorithm;
use espgw_core::esp::{Mode, SaConfig};
use espgw_core::policy::{
    Action, Defaults, Eroute, FlowKey, PolicyDb, PortRange, Prefix, ProtectOptions, SaRole, Selector,
};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn v4(a: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(a))
}

/// `n` eroutes over `n` outbound SAs (+ `n` inbound SAs): a mix of /24 and /32
/// destinations from /16../24 sources, some with protocol and ports.
fn build(n: u32) -> (PolicyDb, Vec<FlowKey>) {
    let mut db = PolicyDb::new(Defaults { outbound: Action::Drop, inbound_clear: Action::Drop });
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut keys = Vec::new();
    let mode = Mode::Tunnel { local: "192.0.2.1".parse().unwrap(), remote: "198.51.100.1".parse().unwrap() };
    db.batch(|b| {
        for i in 0..n {
            // Unique keys: one key may drive one outbound SA only.
            let key: Vec<u8> = i.to_le_bytes().iter().cycle().take(20).copied().collect();
            let cfg = SaConfig::new(0x1000 + i, Algorithm::AesGcm128, &key, &[], mode);
            b.add_sa(i, SaRole::Outbound, &cfg).unwrap();
            let dst_len = if i % 3 == 0 { 32 } else { 24 };
            let src_len = [16u8, 20, 24][(i % 3) as usize];
            let dst = (rng.next() as u32) | 0x0a00_0000;
            let src = (rng.next() as u32) | 0xac00_0000;
            let (proto, dport) =
                if i % 5 == 0 { (Some(6), PortRange::new(1000, 2000).unwrap()) } else { (None, PortRange::ANY) };
            let sel = Selector {
                src: Prefix::new(v4(src), src_len).unwrap(),
                dst: Prefix::new(v4(dst), dst_len).unwrap(),
                proto,
                sport: PortRange::ANY,
                dport,
            };
            b.add_eroute(Eroute {
                id: i,
                selector: sel,
                priority: 100,
                action: Action::Protect { sa: i, options: ProtectOptions::default() },
            })
            .unwrap();
            let cfg = SaConfig::new(0x1000_0000 + i, Algorithm::AesGcm128, &key, &[], mode);
            b.add_sa(n + i, SaRole::inbound_for(None, &[i]), &cfg).unwrap();
            // A flow that this eroute matches (most of the time, the best match).
            let mut host =
                |net: u32, len: u8| if len == 32 { net } else { net ^ (rng.next() as u32 & (u32::MAX >> len)) };
            let k = FlowKey::new(v4(host(src, src_len)), v4(host(dst, dst_len)), 6, 40000, 1500);
            keys.push(k);
        }
    })
    .unwrap();
    (db, keys)
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("policy");
    g.warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(2));

    for n in [10u32, 100_000] {
        let t = Instant::now();
        let (db, keys) = build(n);
        eprintln!("policy: built {n} eroutes + {} SAs in {:.2?}", 2 * n, t.elapsed());
        let snap = db.reader().load_full();
        // Random order over the whole table, precomputed: the timed loop
        // holds only the lookup (no division to pick the next key).
        const ORDER: usize = 1 << 16;
        let mut rng = Rng(0x1234_5678_9abc_def1);
        let flows: Vec<FlowKey> = (0..ORDER).map(|_| keys[(rng.next() % keys.len() as u64) as usize]).collect();
        let spis: Vec<u32> = (0..ORDER).map(|_| 0x1000_0000 + (rng.next() % u64::from(n)) as u32).collect();
        let mut i = 0usize;
        g.bench_function(format!("eroute_lookup/{n}"), |b| {
            b.iter(|| {
                i = (i + 1) & (ORDER - 1);
                black_box(snap.outbound(black_box(&flows[i])));
            })
        });
        let local: IpAddr = "192.0.2.1".parse().unwrap();
        let mut j = 0usize;
        g.bench_function(format!("sa_lookup_by_spi/{n}"), |b| {
            b.iter(|| {
                j = (j + 1) & (ORDER - 1);
                black_box(snap.inbound_sa(black_box(spis[j]), local));
            })
        });
        // The whole per-burst cost of picking up the current snapshot.
        let r = db.reader();
        g.bench_function(format!("snapshot_load/{n}"), |b| b.iter(|| black_box(r.load().generation)));
    }

    // Publishing one change at 100 000 entries: rebuild + atomic swap.
    let (mut db, _) = build(100_000);
    let sel = Selector::nets("10.250.0.0/16".parse().unwrap(), "10.251.0.0/16".parse().unwrap());
    let mut flip = false;
    g.sample_size(10).measurement_time(Duration::from_secs(4));
    g.bench_function("publish_one_change/100000", |b| {
        b.iter(|| {
            flip = !flip;
            if flip {
                db.add_eroute(Eroute { id: 999_999, selector: sel, priority: 1, action: Action::Pass }).unwrap();
            } else {
                db.remove_eroute(999_999).unwrap();
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
