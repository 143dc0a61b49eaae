//! Per-worker counters, cache-line padded, lock-free.
//!
//! Each counter has exactly one writer (the worker that owns it), so an
//! increment is a relaxed load + store rather than an atomic read-modify-write:
//! no bus lock on the data path. Readers (control thread, shutdown report)
//! load with `Relaxed` and sum across workers.

use std::sync::atomic::{AtomicU64, Ordering};

/// A single-writer counter.
#[derive(Default, Debug)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Add `n`. Only the owning worker calls this.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(self.0.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
    }
    /// Add one.
    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }
    /// Current value.
    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

pub use crate::drops::DropReason;

macro_rules! events {
    ($( $(#[doc = $doc:literal])+ $v:ident => $label:literal, $metric:literal, $help:literal, )*) => {
        /// Things that happen to packets other than drops, counted per
        /// worker. One list: the label, the Prometheus metric and its help
        /// all come from it.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum Event {
            $( $(#[doc = $doc])+ $v, )*
        }

        impl Event {
            pub const ALL: &'static [Event] = &[ $( Event::$v, )* ];
            pub const COUNT: usize = Self::ALL.len();
            /// Stable snake_case label (reports, API).
            pub const fn label(self) -> &'static str {
                match self { $( Event::$v => $label, )* }
            }
            /// The Prometheus counter that exposes it.
            pub const fn metric(self) -> &'static str {
                match self { $( Event::$v => $metric, )* }
            }
            /// The counter's help text.
            pub const fn help(self) -> &'static str {
                match self { $( Event::$v => $help, )* }
            }
        }
    };
}

events! {
    /// Packets encrypted (outbound ESP).
    Encrypted => "encrypted", "espgw_esp_encrypted_packets_total", "Packets encrypted into ESP.",
    /// Packets decrypted (inbound ESP) and accepted by their SA's selectors.
    Decrypted => "decrypted", "espgw_esp_decrypted_packets_total", "ESP packets decrypted and accepted.",
    /// Packets sent in clear by a pass eroute or default.
    Passed => "passed", "espgw_passed_packets_total", "Packets forwarded in clear by a pass eroute or default.",
    /// Outer fragments made after encryption.
    FragmentsMade => "fragments_made", "espgw_fragments_created_total",
        "Fragments made of ESP packets after encryption to fit the egress MTU.",
    /// Fragments made of cleartext packets forwarded to a smaller MTU.
    ClearFragmentsMade => "clear_fragments_made", "espgw_clear_fragments_created_total",
        "Fragments made of cleartext packets forwarded to a port with a smaller MTU.",
    /// Inner fragments made before encryption (eroute option).
    InnerFragmentsMade => "inner_fragments_made", "espgw_inner_fragments_created_total",
        "Fragments made of inner packets before encryption.",
    /// Datagrams reassembled from outer fragments.
    Reassembled => "reassembled", "espgw_reassembled_datagrams_total", "Datagrams reassembled from fragments.",
    /// ICMP need-frag / ICMPv6 PTB sent to senders.
    IcmpTooBigSent => "icmp_too_big_sent", "espgw_icmp_too_big_sent_total",
        "ICMP fragmentation-needed (IPv4) and packet-too-big (IPv6) messages sent.",
    /// Path MTU lowered by an ICMP report about our ESP.
    PmtuLowered => "pmtu_lowered", "espgw_pmtu_lowered_total", "Path MTU reports that lowered an SA's path MTU.",
    /// TCP SYN MSS values clamped.
    MssClamped => "mss_clamped", "espgw_mss_clamped_total", "TCP SYNs whose MSS was clamped.",
    /// ARP replies / neighbour advertisements sent for our addresses.
    NeighborReplies => "neighbor_replies", "espgw_neighbor_replies_sent_total",
        "ARP replies and neighbour advertisements sent.",
    /// ARP requests / neighbour solicitations sent for next hops.
    NeighborRequests => "neighbor_requests", "espgw_neighbor_requests_sent_total",
        "ARP requests and neighbour solicitations sent.",
    /// Neighbours learned (sent to the main thread).
    NeighborsLearned => "neighbors_learned", "espgw_neighbors_learned_total", "Neighbour entries learned.",
    /// NAT-keepalives (RFC 3948 §2.3) received and consumed.
    NattKeepalives => "natt_keepalives", "espgw_natt_keepalives_total",
        "NAT-keepalive packets (one byte 0xFF on a NAT-T port) received.",
    /// Authenticated ESP-in-UDP packets from another address/port than their SA's.
    NatMappingChanged => "nat_mapping_changed", "espgw_nat_mapping_changes_total",
        "Authenticated ESP-in-UDP packets that arrived from a new peer address or port (NAT rebinding).",
    /// IKE (UDP 500/4500) handed to the kernel through the host port.
    HostIke => "to_host_ike", "espgw_host_ike_packets_total",
        "IKE packets (UDP 500/4500, non-ESP marker) for the gateway handed to the kernel.",
    /// ICMP for the gateway handed to the kernel.
    HostIcmp => "to_host_icmp", "espgw_host_icmp_packets_total", "ICMP/ICMPv6 for the gateway handed to the kernel.",
    /// Decrypted packets for the gateway (transport mode) handed to the kernel.
    HostDecrypted => "to_host_decrypted", "espgw_host_decrypted_packets_total",
        "Decrypted ESP payload for the gateway's own addresses handed to the kernel.",
    /// Other traffic for the gateway handed to the kernel.
    HostOther => "to_host_other", "espgw_host_other_packets_total",
        "Other traffic for the gateway (SSH, BGP, ...) handed to the kernel.",
    /// IKE for the gateway handed to the control thread's IKE daemon.
    ToControlIke => "to_control_ike", "espgw_ike_packets_received_total",
        "IKE packets (UDP 500/4500) for the gateway handed to the control thread.",
    /// IKE the control thread sent through a worker.
    FromControlIke => "from_control_ike", "espgw_ike_packets_sent_total",
        "IKE packets the control thread sent through the workers.",
    /// Packets the kernel sent through the host port.
    FromHost => "from_host", "espgw_host_sent_packets_total", "Packets the kernel sent out through the host port.",
    /// Other ARP/ND messages seen (not for us).
    NeighborMessages => "neighbor_messages", "espgw_neighbor_messages_total", "ARP/NDP messages received.",
}

/// Packet and byte counters of one port as seen by one worker.
#[derive(Default, Debug)]
#[repr(align(64))]
pub struct PortCounters {
    pub rx_packets: Counter,
    pub rx_bytes: Counter,
    pub tx_packets: Counter,
    pub tx_bytes: Counter,
}

/// Everything one worker counts. Padded so two workers never share a line.
#[derive(Debug)]
#[repr(align(64))]
pub struct WorkerStats {
    /// Polls that received at least one packet.
    pub busy_polls: Counter,
    /// Polls that received nothing.
    pub idle_polls: Counter,
    /// Drops, indexed by `DropReason as usize`.
    pub drops: [Counter; DropReason::COUNT],
    /// Events, indexed by `Event as usize`.
    pub events: [Counter; Event::COUNT],
    /// Per port, indexed by the gateway's port index.
    pub ports: Box<[PortCounters]>,
}

impl WorkerStats {
    /// Counters for a gateway with `nports` ports.
    pub fn new(nports: usize) -> Self {
        WorkerStats {
            busy_polls: Counter::default(),
            idle_polls: Counter::default(),
            drops: std::array::from_fn(|_| Counter::default()),
            events: std::array::from_fn(|_| Counter::default()),
            ports: (0..nports).map(|_| PortCounters::default()).collect(),
        }
    }

    /// Count one drop.
    #[inline]
    pub fn drop_one(&self, reason: DropReason) {
        self.drops[reason.index()].inc();
    }

    /// Count an event.
    #[inline]
    pub fn event(&self, e: Event, n: u64) {
        if n > 0 {
            self.events[e as usize].add(n);
        }
    }

    /// Count `n` drops.
    #[inline]
    pub fn drop_n(&self, reason: DropReason, n: u64) {
        if n > 0 {
            self.drops[reason.index()].add(n);
        }
    }

    /// Total drops over all reasons.
    pub fn total_drops(&self) -> u64 {
        self.drops.iter().map(Counter::get).sum()
    }

    /// Packets received over all ports.
    pub fn rx_packets(&self) -> u64 {
        self.ports.iter().map(|p| p.rx_packets.get()).sum()
    }

    /// Packets sent over all ports.
    pub fn tx_packets(&self) -> u64 {
        self.ports.iter().map(|p| p.tx_packets.get()).sum()
    }

    /// Share of polls that found work, 0..=1.
    pub fn busy_ratio(&self) -> f64 {
        let b = self.busy_polls.get() as f64;
        let i = self.idle_polls.get() as f64;
        if b + i == 0.0 {
            0.0
        } else {
            b / (b + i)
        }
    }
}

/// Drops by reason summed over workers (every reason, zeros included).
pub fn sum_drops<S: AsRef<WorkerStats>>(workers: &[S]) -> Vec<(DropReason, u64)> {
    DropReason::ALL.iter().map(|&r| (r, workers.iter().map(|w| w.as_ref().drops[r.index()].get()).sum())).collect()
}

/// Events summed over workers (every event, zeros included).
pub fn sum_events<S: AsRef<WorkerStats>>(workers: &[S]) -> Vec<(Event, u64)> {
    Event::ALL.iter().map(|&e| (e, workers.iter().map(|w| w.as_ref().events[e as usize].get()).sum())).collect()
}

impl AsRef<WorkerStats> for WorkerStats {
    fn as_ref(&self) -> &WorkerStats {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_sum_and_label() {
        let s = WorkerStats::new(2);
        s.ports[0].rx_packets.add(3);
        s.ports[1].rx_packets.inc();
        s.ports[1].tx_packets.add(2);
        s.drop_one(DropReason::NoRoute);
        s.drop_n(DropReason::TxRefused, 4);
        s.drop_n(DropReason::MultiSegment, 0);
        s.event(Event::Encrypted, 3);
        assert_eq!(s.rx_packets(), 4);
        assert_eq!(s.tx_packets(), 2);
        assert_eq!(s.total_drops(), 5);
        assert_eq!(s.drops[DropReason::TxRefused.index()].get(), 4);
        assert_eq!(s.events[Event::Encrypted as usize].get(), 3);
        for (i, e) in Event::ALL.iter().enumerate() {
            assert_eq!(*e as usize, i);
        }
    }

    #[test]
    fn worker_stats_do_not_share_cache_lines() {
        assert_eq!(std::mem::align_of::<WorkerStats>(), 64);
        assert_eq!(std::mem::align_of::<PortCounters>(), 64);
    }
}
