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

/// Why a packet was dropped. Every drop in espgw has one of these; the label
/// is the Prometheus `reason` label and the name in reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DropReason {
    /// The driver refused the packet on transmit (TX ring full).
    TxRefused,
    /// No route (or no forwarding) for the destination.
    NoRoute,
    /// No MAC address known for the next hop.
    NoNeighbor,
    /// A multi-segment packet could not be made contiguous.
    MultiSegment,
    /// Not IPv4/IPv6 (ARP, VLAN, LLDP, ...).
    NotIp,
    /// IP header malformed or lying about its length.
    BadIp,
    /// TTL / hop limit ran out.
    TtlExpired,
    /// An eroute (or the default) said drop.
    PolicyDrop,
    /// An eroute said trap (reported for a key daemon).
    PolicyTrap,
    /// Cleartext on the protected side when the default forbids it.
    ClearOnProtected,
    /// No inbound SA for the SPI (and destination).
    NoSa,
    /// Decrypted traffic did not match its SA's eroute (RFC 4301 §5.2).
    InboundPolicy,
    /// DF packet too big for the tunnel (an ICMP need-frag / PTB was sent).
    TooBigDf,
    /// ...and the ICMP error itself was rate-limited.
    IcmpRateLimited,
    /// No mbuf for a fragment or an ICMP error.
    NoBuffer,
    /// An ICMP too-big report about ESP that changed nothing (unknown SPI, not lower).
    PmtuReportIgnored,
    // ESP (see esp::EspError)
    EspTruncated,
    EspBadLength,
    EspFragment,
    EspWrongSpi,
    ReplayTooOld,
    ReplayDuplicate,
    EspAuthFailed,
    EspBadBlockLength,
    EspBadPadLength,
    EspBadPadding,
    EspBadNextHeader,
    EspDummy,
    EspBadInner,
    EspEcnDrop,
    SaSeqExhausted,
    SaHardLifetime,
    EspNoRoom,
    EspTooBig,
    EspNotEsp,
    // Reassembly (see mtu::ReasmDrop)
    ReasmMalformed,
    ReasmOverlap,
    ReasmDuplicate,
    ReasmTooManyFragments,
    ReasmTimeout,
    ReasmEvicted,
    ReasmNoBuffer,
}

impl DropReason {
    /// All reasons, in counter-array order.
    pub const ALL: [DropReason; 42] = [
        DropReason::TxRefused,
        DropReason::NoRoute,
        DropReason::NoNeighbor,
        DropReason::MultiSegment,
        DropReason::NotIp,
        DropReason::BadIp,
        DropReason::TtlExpired,
        DropReason::PolicyDrop,
        DropReason::PolicyTrap,
        DropReason::ClearOnProtected,
        DropReason::NoSa,
        DropReason::InboundPolicy,
        DropReason::TooBigDf,
        DropReason::IcmpRateLimited,
        DropReason::NoBuffer,
        DropReason::PmtuReportIgnored,
        DropReason::EspTruncated,
        DropReason::EspBadLength,
        DropReason::EspFragment,
        DropReason::EspWrongSpi,
        DropReason::ReplayTooOld,
        DropReason::ReplayDuplicate,
        DropReason::EspAuthFailed,
        DropReason::EspBadBlockLength,
        DropReason::EspBadPadLength,
        DropReason::EspBadPadding,
        DropReason::EspBadNextHeader,
        DropReason::EspDummy,
        DropReason::EspBadInner,
        DropReason::EspEcnDrop,
        DropReason::SaSeqExhausted,
        DropReason::SaHardLifetime,
        DropReason::EspNoRoom,
        DropReason::EspTooBig,
        DropReason::EspNotEsp,
        DropReason::ReasmMalformed,
        DropReason::ReasmOverlap,
        DropReason::ReasmDuplicate,
        DropReason::ReasmTooManyFragments,
        DropReason::ReasmTimeout,
        DropReason::ReasmEvicted,
        DropReason::ReasmNoBuffer,
    ];
    /// Number of reasons.
    pub const COUNT: usize = Self::ALL.len();

    /// Stable snake_case label.
    pub fn label(self) -> &'static str {
        use crate::esp::EspError as E;
        use crate::mtu::ReasmDrop as R;
        match self {
            DropReason::TxRefused => "tx_refused",
            DropReason::NoRoute => "no_route",
            DropReason::NoNeighbor => "no_neighbor",
            DropReason::MultiSegment => "multi_segment",
            DropReason::NotIp => "not_ip",
            DropReason::BadIp => "bad_ip",
            DropReason::TtlExpired => "ttl_expired",
            DropReason::PolicyDrop => "policy_drop",
            DropReason::PolicyTrap => "policy_trap",
            DropReason::ClearOnProtected => "clear_on_protected",
            DropReason::NoSa => "no_sa",
            DropReason::InboundPolicy => "inbound_policy",
            DropReason::TooBigDf => "too_big_df",
            DropReason::IcmpRateLimited => "icmp_rate_limited",
            DropReason::NoBuffer => "no_buffer",
            DropReason::PmtuReportIgnored => "pmtu_report_ignored",
            DropReason::EspTruncated => E::Truncated.label(),
            DropReason::EspBadLength => E::BadLength.label(),
            DropReason::EspFragment => E::Fragment.label(),
            DropReason::EspWrongSpi => E::WrongSpi.label(),
            DropReason::ReplayTooOld => E::ReplayTooOld.label(),
            DropReason::ReplayDuplicate => E::ReplayDuplicate.label(),
            DropReason::EspAuthFailed => E::AuthFailed.label(),
            DropReason::EspBadBlockLength => E::BadBlockLength.label(),
            DropReason::EspBadPadLength => E::BadPadLength.label(),
            DropReason::EspBadPadding => E::BadPadding.label(),
            DropReason::EspBadNextHeader => E::BadNextHeader.label(),
            DropReason::EspDummy => E::Dummy.label(),
            DropReason::EspBadInner => E::BadInner.label(),
            DropReason::EspEcnDrop => E::EcnDrop.label(),
            DropReason::SaSeqExhausted => E::SeqExhausted.label(),
            DropReason::SaHardLifetime => E::HardLifetime.label(),
            DropReason::EspNoRoom => E::NoRoom.label(),
            DropReason::EspTooBig => E::TooBig.label(),
            DropReason::EspNotEsp => E::NotEsp.label(),
            DropReason::ReasmMalformed => R::Malformed.label(),
            DropReason::ReasmOverlap => R::Overlap.label(),
            DropReason::ReasmDuplicate => R::Duplicate.label(),
            DropReason::ReasmTooManyFragments => R::TooManyFragments.label(),
            DropReason::ReasmTimeout => R::Timeout.label(),
            DropReason::ReasmEvicted => R::Evicted.label(),
            DropReason::ReasmNoBuffer => R::NoBuffer.label(),
        }
    }

    /// The counter for an ESP error.
    pub fn from_esp(e: crate::esp::EspError) -> DropReason {
        use crate::esp::EspError as E;
        match e {
            E::Truncated => DropReason::EspTruncated,
            E::BadLength => DropReason::EspBadLength,
            E::NotEsp => DropReason::EspNotEsp,
            E::Fragment => DropReason::EspFragment,
            E::WrongSpi => DropReason::EspWrongSpi,
            E::ReplayTooOld => DropReason::ReplayTooOld,
            E::ReplayDuplicate => DropReason::ReplayDuplicate,
            E::AuthFailed => DropReason::EspAuthFailed,
            E::BadBlockLength => DropReason::EspBadBlockLength,
            E::BadPadLength => DropReason::EspBadPadLength,
            E::BadPadding => DropReason::EspBadPadding,
            E::BadNextHeader => DropReason::EspBadNextHeader,
            E::Dummy => DropReason::EspDummy,
            E::BadInner => DropReason::EspBadInner,
            E::EcnDrop => DropReason::EspEcnDrop,
            E::SeqExhausted => DropReason::SaSeqExhausted,
            E::HardLifetime => DropReason::SaHardLifetime,
            E::NoRoom => DropReason::EspNoRoom,
            E::TooBig => DropReason::EspTooBig,
        }
    }

    /// The counter for a reassembly drop.
    pub fn from_reasm(r: crate::mtu::ReasmDrop) -> DropReason {
        use crate::mtu::ReasmDrop as R;
        match r {
            R::Malformed => DropReason::ReasmMalformed,
            R::Overlap => DropReason::ReasmOverlap,
            R::Duplicate => DropReason::ReasmDuplicate,
            R::TooManyFragments => DropReason::ReasmTooManyFragments,
            R::Timeout => DropReason::ReasmTimeout,
            R::Evicted => DropReason::ReasmEvicted,
            R::NoBuffer => DropReason::ReasmNoBuffer,
        }
    }
}

/// Things that happen to packets other than drops, counted per worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Event {
    /// Packets encrypted (outbound ESP).
    Encrypted,
    /// Packets decrypted (inbound ESP) and forwarded.
    Decrypted,
    /// Packets sent in clear by a pass eroute or default.
    Passed,
    /// Outer fragments made after encryption.
    FragmentsMade,
    /// Inner fragments made before encryption (eroute option).
    InnerFragmentsMade,
    /// Datagrams reassembled from outer fragments.
    Reassembled,
    /// ICMP need-frag / ICMPv6 PTB sent to senders.
    IcmpTooBigSent,
    /// Path MTU lowered by an ICMP report about our ESP.
    PmtuLowered,
    /// TCP SYN MSS values clamped.
    MssClamped,
    /// ARP replies / neighbour advertisements sent for our addresses.
    NeighborReplies,
    /// ARP requests / neighbour solicitations sent for next hops.
    NeighborRequests,
    /// Neighbours learned (sent to the main thread).
    NeighborsLearned,
    /// Other ARP/ND messages seen (not for us).
    NeighborMessages,
}

impl Event {
    pub const ALL: [Event; 13] = [
        Event::Encrypted,
        Event::Decrypted,
        Event::Passed,
        Event::FragmentsMade,
        Event::InnerFragmentsMade,
        Event::Reassembled,
        Event::IcmpTooBigSent,
        Event::PmtuLowered,
        Event::MssClamped,
        Event::NeighborReplies,
        Event::NeighborRequests,
        Event::NeighborsLearned,
        Event::NeighborMessages,
    ];
    pub const COUNT: usize = Self::ALL.len();
    pub fn label(self) -> &'static str {
        match self {
            Event::Encrypted => "encrypted",
            Event::Decrypted => "decrypted",
            Event::Passed => "passed",
            Event::FragmentsMade => "fragments_made",
            Event::InnerFragmentsMade => "inner_fragments_made",
            Event::Reassembled => "reassembled",
            Event::IcmpTooBigSent => "icmp_too_big_sent",
            Event::PmtuLowered => "pmtu_lowered",
            Event::MssClamped => "mss_clamped",
            Event::NeighborReplies => "neighbor_replies",
            Event::NeighborRequests => "neighbor_requests",
            Event::NeighborsLearned => "neighbors_learned",
            Event::NeighborMessages => "neighbor_messages",
        }
    }
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
        self.drops[reason as usize].inc();
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
            self.drops[reason as usize].add(n);
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
        assert_eq!(s.drops[DropReason::TxRefused as usize].get(), 4);
        assert_eq!(s.events[Event::Encrypted as usize].get(), 3);
        // Arrays are indexed by discriminant; labels are unique.
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
        for (i, e) in Event::ALL.iter().enumerate() {
            assert_eq!(*e as usize, i);
        }
        let mut labels: Vec<_> = DropReason::ALL.iter().map(|r| r.label()).collect();
        labels.sort();
        labels.dedup();
        assert_eq!(labels.len(), DropReason::COUNT);
        // Every ESP error and reassembly drop has its own counter.
        for e in crate::esp::EspError::ALL {
            assert_eq!(DropReason::from_esp(e).label(), e.label());
        }
        for r in crate::mtu::ReasmDrop::ALL {
            assert_eq!(DropReason::from_reasm(r).label(), r.label());
        }
    }

    #[test]
    fn worker_stats_do_not_share_cache_lines() {
        assert_eq!(std::mem::align_of::<WorkerStats>(), 64);
        assert_eq!(std::mem::align_of::<PortCounters>(), 64);
    }
}
