// A queue handle may move to a worker's lcore, but it can never be shared:
// two threads polling one queue is the race the type rules out.
use espgw_dpdk::{RxQueue, TxQueue};

fn shared_by_threads<T: Sync>() {}

fn main() {
    shared_by_threads::<RxQueue<'static, 'static>>();
    shared_by_threads::<TxQueue<'static, 'static>>();
}
