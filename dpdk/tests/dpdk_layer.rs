//! The DPDK layer against a real EAL (no hugepages, virtual devices). One EAL
//! per process, so everything runs in one test function, in steps.

use espgw_core::packet::{BufError, PacketBuf, VecBuf};
use espgw_dpdk::{DpdkError, Eal, MbufBatch, Mempool, Port, PortSetup};

#[test]
fn eal_mempool_mbuf_port_ownership() {
    let prefix = format!("espgw-dl-{}", std::process::id());
    let eal = Eal::init(&[
        "--no-pci",
        "--no-huge",
        "-m",
        "128",
        "--file-prefix",
        &prefix,
        "--log-level",
        "*:error",
        "--no-telemetry",
        "--lcores",
        "0@0,1@0",
        "--vdev",
        "net_ring0",
    ])
    .expect("EAL init");
    assert!(matches!(Eal::init(&["--no-pci"]), Err(DpdkError::EalAlreadyInit)));
    let pool = Mempool::new(&eal, "dl_pool", 2047, 0, 2176).unwrap();
    assert_eq!(pool.in_use(), 0);

    // Mbuf: owned, data access computed in Rust, freed on drop.
    {
        let mut m = pool.alloc().unwrap();
        assert_eq!(pool.in_use(), 1);
        assert_eq!(m.len(), 0);
        assert_eq!(m.headroom(), 128);
        assert_eq!(m.tailroom(), 2048);
        m.append(100).unwrap();
        m.data_mut().fill(0xab);
        m.prepend(14).unwrap();
        m.data_mut()[..14].fill(0x01);
        assert_eq!(m.len(), 114);
        assert_eq!(m.pkt_len(), 114);
        assert_eq!(m.data()[13], 1);
        assert_eq!(m.data()[14], 0xab);
        m.adj(14).unwrap();
        m.trim(50).unwrap();
        assert_eq!(m.data(), &[0xab; 50][..]);
        assert_eq!(m.prepend(4096), Err(BufError::NoHeadroom));
        assert_eq!(m.append(4096), Err(BufError::NoTailroom));
        assert_eq!(m.adj(51), Err(BufError::TooShort));
        assert_eq!(m.nb_segs(), 1);
        assert!(m.linearize().is_ok());
    }
    assert_eq!(pool.in_use(), 0, "dropped Mbuf goes back");

    // The one-step reshapes (`narrow`, `reframe`) leave an mbuf as they
    // leave a heap buffer with the same room (whose one-step versions the
    // core crate tests against the composed ones): same bytes, same room,
    // same errors, nothing changed on an error.
    {
        let state = |b: &dyn PacketBuf| (b.data().to_vec(), b.headroom(), b.tailroom());
        let fill = |b: &mut dyn PacketBuf| {
            b.append(200).unwrap();
            for (i, x) in b.data_mut().iter_mut().enumerate() {
                *x = i as u8;
            }
        };
        type Reshape = fn(&mut dyn PacketBuf, usize, usize) -> Result<(), BufError>;
        let ops: [(&str, Reshape); 2] = [("narrow", |b, a, n| b.narrow(a, n)), ("reframe", |b, a, n| b.reframe(a, n))];
        let sizes = [0, 1, 13, 14, 100, 127, 128, 129, 199, 200, 201, 2000, 2175, 2176, 2177, 4096];
        for (name, op) in ops {
            for &a in &sizes {
                for &n in &sizes {
                    let mut m = pool.alloc().unwrap();
                    let mut v = VecBuf::with_room(128, 2176);
                    fill(&mut m);
                    fill(&mut v);
                    assert_eq!(op(&mut m, a, n), op(&mut v, a, n), "{name}({a}, {n})");
                    assert_eq!(state(&m), state(&v), "{name}({a}, {n})");
                    assert_eq!(m.pkt_len() as usize, m.len());
                }
            }
        }
    }
    assert_eq!(pool.in_use(), 0);

    // Batch: bulk alloc, drop frees everything.
    {
        let mut b: MbufBatch<32> = MbufBatch::new();
        assert!(pool.alloc_bulk(&mut b, 32));
        assert!(b.is_full());
        assert_eq!(pool.in_use(), 32);
        let m = pool.alloc().unwrap();
        let m = b.push(m).expect_err("full batch gives the mbuf back");
        drop(m);
        let one = b.pop().unwrap();
        assert_eq!(b.len(), 31);
        drop(one);
        assert_eq!(pool.in_use(), 31);
    }
    assert_eq!(pool.in_use(), 0, "dropped batch frees its mbufs");

    // A port: net_ring0 loops TX back to RX.
    let mut port = Port::by_name(&eal, "net_ring0").unwrap();
    assert!(Port::by_name(&eal, "net_nope").is_err());
    let setup =
        PortSetup { rx_queues: 1, tx_queues: 1, rx_desc: 256, tx_desc: 256, mtu: None, rss: false, promiscuous: false };
    port.configure(&setup, &pool).unwrap();
    port.start().unwrap();
    assert!(port.link().up);

    // One handle per queue.
    let mut txq = port.tx_queue(0).unwrap();
    let mut rxq = port.rx_queue(0).unwrap();
    assert!(matches!(port.rx_queue(0), Err(DpdkError::QueueTaken { kind: "RX", .. })));
    assert!(matches!(port.tx_queue(1), Err(DpdkError::QueueTaken { .. })), "no such queue");

    let mut tx: MbufBatch<32> = MbufBatch::new();
    for i in 0..10u8 {
        let mut m = pool.alloc().unwrap();
        m.append(64).unwrap();
        m.data_mut().fill(i);
        tx.push(m).unwrap();
    }
    assert_eq!(txq.tx_burst_keep(&mut tx), 10);
    assert!(tx.is_empty());
    let mut rx: MbufBatch<32> = MbufBatch::new();
    assert_eq!(rxq.rx_burst(&mut rx), 10);
    for (i, m) in rx.take_all().enumerate() {
        assert_eq!(m.data(), &[i as u8; 64][..]);
    }
    assert_eq!(pool.in_use(), 0);

    // Fill the ring (1024 slots by default) past capacity: what does not fit stays in the batch.
    let mut queued = 0;
    let mut refused_total = 0;
    for _ in 0..64 {
        let mut b: MbufBatch<32> = MbufBatch::new();
        assert!(pool.alloc_bulk(&mut b, 32));
        queued += txq.tx_burst_keep(&mut b);
        refused_total += b.len();
    }
    assert!(refused_total > 0, "ring must have filled up");
    assert_eq!(pool.in_use() as usize, queued, "refused batches were freed on drop");
    let st = port.stats();
    assert_eq!(st.opackets as usize, 10 + queued);
    // With the ring full, tx_burst_keep keeps what it cannot send, in order.
    let mut kept: MbufBatch<8> = MbufBatch::new();
    for i in 0..8u8 {
        let mut m = pool.alloc().unwrap();
        m.append(60).unwrap();
        m.data_mut().fill(0xe0 + i);
        kept.push(m).unwrap();
    }
    assert_eq!(txq.tx_burst_keep(&mut kept), 0);
    assert_eq!(kept.len(), 8, "nothing freed, nothing lost");
    // Make room for exactly 3, then retry: the first 3 go, 5 stay at the front.
    let mut three: MbufBatch<3> = MbufBatch::new();
    assert_eq!(rxq.rx_burst(&mut three), 3);
    drop(three);
    assert_eq!(txq.tx_burst_keep(&mut kept), 3);
    assert_eq!(kept.len(), 5);
    assert_eq!(kept.as_slice()[0].data()[0], 0xe3, "the unsent ones moved to the front, in order");
    drop(kept);

    // Work on an EAL lcore: it borrows the queue handles; the scope joins it.
    let workers = eal.worker_lcores();
    assert_eq!(workers, vec![1]);
    let got = eal.scope(|s| {
        let h = s
            .spawn(workers[0], || {
                let mut b: MbufBatch<64> = MbufBatch::new();
                let n = rxq.rx_burst(&mut b);
                (n, espgw_core::clock::now_ms() < u64::MAX)
            })
            .unwrap();
        // A busy lcore may refuse more work (or take it once free); if it
        // refuses, it says which lcore and does not crash.
        if let Err(e) = s.spawn(workers[0], || 1) {
            assert!(matches!(e, DpdkError::Launch { lcore, .. } if lcore == workers[0]), "{e:?}");
        }
        h.join().unwrap()
    });
    assert!(got.0 > 0 && got.1, "the lcore received what the ring held");
    queued -= got.0;
    // A panic on an lcore comes back as an error, not a crash.
    let e = eal.scope(|s| s.spawn(workers[0], || -> u32 { panic!("boom") }).unwrap().join());
    assert!(matches!(e, Err(DpdkError::WorkerPanicked { ref message, .. }) if message == "boom"), "{e:?}");

    drop((rxq, txq));
    assert_eq!(port.drain_rx() as usize, queued, "drain frees what the ring held");
    port.close();
    drop((tx, rx));
    assert_eq!(pool.in_use(), 0, "nothing left after drain + close");
    // The types order the teardown: port, then pool, then EAL.
    drop(port);
    drop(pool);
    drop(eal);
}
