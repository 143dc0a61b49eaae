// Sharing one queue handle between two threads does not compile: a
// reference to it cannot cross threads (the handle is not Sync).
use espgw_dpdk::RxQueue;

fn poll(q: &mut RxQueue<'_, '_>) {
    let q = &*q;
    std::thread::scope(|s| {
        s.spawn(move || q.id());
        s.spawn(move || q.id());
    });
}

fn main() {
    let _ = poll;
}
