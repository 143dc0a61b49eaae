// An mbuf borrows the pool it came from: it cannot outlive it.
use espgw_dpdk::{Eal, Mempool};

fn main() {
    let eal = Eal::init(&["--no-pci"]).unwrap();
    let m = {
        let pool = Mempool::new(&eal, "p", 1023, 0, 2176).unwrap();
        pool.alloc().unwrap()
    };
    drop(m);
}
