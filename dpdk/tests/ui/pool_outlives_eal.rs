// Pools borrow the EAL: it cannot be cleaned up under them.
use espgw_dpdk::{Eal, Mempool};

fn main() {
    let eal = Eal::init(&["--no-pci"]).unwrap();
    let pool = Mempool::new(&eal, "p", 1023, 0, 2176).unwrap();
    drop(eal);
    drop(pool);
}
