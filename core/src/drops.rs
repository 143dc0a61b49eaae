//! The one list of drop reasons. Every dropped packet in espgw is counted
//! under exactly one of these; the label is the Prometheus `reason` label,
//! the name in reports and in the API.
//!
//! The list is written once, below. From it the macro generates the flat
//! [`DropReason`] (indexing the per-worker counter arrays), and the subsets
//! the stages return as errors — [`EspError`] for ESP processing and
//! [`ReasmDrop`] for reassembly — each with its message and a `From` into
//! `DropReason`. Adding a reason is one line; nothing else can drift.

macro_rules! drop_reasons {
    (
        general {
            $( $(#[doc = $gdoc:literal])+ $g:ident => $glabel:literal, )*
        }
        $(
            $(#[doc = $sdoc:literal])+
            subset $sub:ident {
                $( $s:ident => $outer:ident, $slabel:literal, $msg:literal, )*
            }
        )*
    ) => {
        /// Why a packet was dropped (see the module documentation).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u8)]
        pub enum DropReason {
            $( $(#[doc = $gdoc])+ $g, )*
            $( $( #[doc = $msg] $outer, )* )*
        }

        impl DropReason {
            /// Every reason, in counter-array order.
            pub const ALL: &'static [DropReason] = &[
                $( DropReason::$g, )*
                $( $( DropReason::$outer, )* )*
            ];
            /// Number of reasons.
            pub const COUNT: usize = Self::ALL.len();

            /// Stable snake_case label.
            pub const fn label(self) -> &'static str {
                match self {
                    $( DropReason::$g => $glabel, )*
                    $( $( DropReason::$outer => $slabel, )* )*
                }
            }

            /// Position in counter arrays.
            #[inline]
            pub const fn index(self) -> usize {
                self as usize
            }
        }

        $(
            $(#[doc = $sdoc])+
            #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
            pub enum $sub {
                $( #[error($msg)] $s, )*
            }

            impl $sub {
                /// Every reason of this kind.
                pub const ALL: &'static [$sub] = &[ $( $sub::$s, )* ];

                /// Stable snake_case label (the [`DropReason`] label).
                pub const fn label(self) -> &'static str {
                    self.reason().label()
                }

                /// The drop reason this counts under.
                #[inline]
                pub const fn reason(self) -> DropReason {
                    match self {
                        $( $sub::$s => DropReason::$outer, )*
                    }
                }
            }

            impl From<$sub> for DropReason {
                #[inline]
                fn from(e: $sub) -> DropReason {
                    e.reason()
                }
            }
        )*
    };
}

drop_reasons! {
    general {
        /// The driver refused the packet on transmit (TX ring full).
        TxRefused => "tx_refused",
        /// No route (or no forwarding) for the destination.
        NoRoute => "no_route",
        /// No MAC address known for the next hop.
        NoNeighbor => "no_neighbor",
        /// A multi-segment packet could not be made contiguous.
        MultiSegment => "multi_segment",
        /// A received buffer someone else also references (never written in place).
        SharedMbuf => "shared_mbuf",
        /// Not IPv4/IPv6 (ARP not for us, VLAN, LLDP, ...).
        NotIp => "not_ip",
        /// IP header malformed or lying about its length.
        BadIp => "bad_ip",
        /// IPv4 header checksum wrong (verified on every ingress).
        BadIpChecksum => "bad_ip_checksum",
        /// A fragment that would reach past 65535 bytes, or a non-final
        /// fragment whose length is not a multiple of 8.
        BadFragment => "bad_fragment",
        /// TTL / hop limit ran out.
        TtlExpired => "ttl_expired",
        /// An eroute (or the default) said drop.
        PolicyDrop => "policy_drop",
        /// An eroute said trap (reported for a key daemon).
        PolicyTrap => "policy_trap",
        /// Cleartext on the protected side when the default forbids it.
        ClearOnProtected => "clear_on_protected",
        /// A cleartext packet routed out of a protected port that no pass
        /// eroute allowed (decrypted or inbound traffic never leaves in clear).
        ClearToProtected => "clear_to_protected",
        /// Addressed to the gateway itself, and there is no host port (or it
        /// was the kernel's own packet to itself).
        ForGateway => "for_gateway",
        /// For the gateway, over the host path's rate (per worker, IKE apart).
        HostRateLimited => "host_rate_limited",
        /// For the gateway, larger than the host link, and not fragmentable
        /// there (an IPv6 packet with extension headers).
        HostTooBig => "host_too_big",
        /// IKE for the control thread when its queue is full (the control
        /// thread is behind: the peer retransmits).
        IkeQueueFull => "ike_queue_full",
        /// IKE for the control thread larger than a queue slot
        /// ([`crate::pipeline::IKE_DATAGRAM_MAX`]).
        IkeTooBig => "ike_too_big",
        /// From the kernel (or the IKE daemon) with a source that is not one
        /// of the gateway's addresses.
        HostBadSource => "host_bad_source",
        /// The kernel's link-local chatter on the host link (MLD, IGMP,
        /// multicast, link-local sources): never forwarded.
        HostLinkLocal => "host_link_local",
        /// No inbound SA for the SPI (and destination).
        NoSa => "no_sa",
        /// Decrypted traffic did not match its SA's selectors (RFC 4301 §5.2).
        InboundPolicy => "inbound_policy",
        /// DF packet too big for the egress (an ICMP need-frag / PTB was sent).
        TooBigDf => "too_big_df",
        /// ...and the ICMP error itself was rate-limited.
        IcmpRateLimited => "icmp_rate_limited",
        /// No mbuf for a fragment or an ICMP error.
        NoBuffer => "no_buffer",
        /// An ICMP too-big report about ESP that changed nothing (unknown SPI, not lower).
        PmtuReportIgnored => "pmtu_report_ignored",
    }

    /// Why ESP processing dropped a packet.
    subset EspError {
        Truncated => EspTruncated, "esp_truncated", "packet too short",
        BadLength => EspBadLength, "esp_bad_length", "IP length field disagrees with the packet",
        NotEsp => EspNotEsp, "esp_not_esp", "not an ESP packet",
        EncapMismatch => EspEncapMismatch, "esp_encap_mismatch",
            "ESP in UDP for a plain-ESP SA, plain ESP for a UDP one, or the wrong UDP port",
        Fragment => EspFragment, "esp_fragment", "outer packet is a fragment (reassemble first)",
        WrongSpi => EspWrongSpi, "esp_wrong_spi", "SPI does not belong to this SA",
        ReplayTooOld => ReplayTooOld, "replay_too_old", "sequence number left of the replay window",
        ReplayDuplicate => ReplayDuplicate, "replay_duplicate", "sequence number already received",
        AuthFailed => EspAuthFailed, "esp_auth_failed", "integrity check failed",
        BadBlockLength => EspBadBlockLength, "esp_bad_block_length", "ciphertext not a multiple of the cipher block",
        BadPadLength => EspBadPadLength, "esp_bad_pad_length", "pad length larger than the payload",
        BadPadding => EspBadPadding, "esp_bad_padding", "padding bytes are not 1, 2, 3, ...",
        BadNextHeader => EspBadNextHeader, "esp_bad_next_header", "next header not allowed for this SA's mode",
        Dummy => EspDummy, "esp_dummy", "dummy packet (next header 59)",
        BadInner => EspBadInner, "esp_bad_inner", "decrypted inner packet is malformed",
        BadInnerChecksum => EspBadInnerChecksum, "esp_bad_inner_checksum",
            "decrypted inner IPv4 header checksum is wrong",
        EcnDrop => EspEcnDrop, "esp_ecn_drop", "ECN: outer CE on a not-ECT inner packet (RFC 6040)",
        SeqExhausted => SaSeqExhausted, "sa_seq_exhausted", "sequence number space exhausted: SA expired",
        HardLifetime => SaHardLifetime, "sa_hard_lifetime", "SA hard lifetime reached",
        NoRoom => EspNoRoom, "esp_no_room", "no head- or tailroom for ESP",
        TooBig => EspTooBig, "esp_too_big", "packet too big for ESP",
        SeqNotPersisted => SaSeqNotPersisted, "sa_seq_not_persisted",
            "sequence numbers not yet persisted (state file not writable?)",
    }

    /// Why fragments were dropped by reassembly.
    subset ReasmDrop {
        Malformed => ReasmMalformed, "reasm_malformed",
            "malformed fragment (bad lengths, offset past 64 KiB, unaligned middle piece)",
        Overlap => ReasmOverlap, "reasm_overlap", "overlapped another fragment: the datagram is dropped",
        Duplicate => ReasmDuplicate, "reasm_duplicate", "same piece again: this copy dropped, the datagram kept",
        TooManyFragments => ReasmTooManyFragments, "reasm_too_many_fragments",
            "more fragments than allowed for one datagram",
        Timeout => ReasmTimeout, "reasm_timeout", "datagram not complete in time",
        Evicted => ReasmEvicted, "reasm_evicted", "evicted to make room (buffer budget or slots)",
        SourceLimit => ReasmSourceLimit, "reasm_source_limit",
            "the sending source already holds its share of the reassembly budget",
        NoBuffer => ReasmNoBuffer, "reasm_no_buffer", "no buffer for the reassembled packet",
        AtExit => ReasmAtExit, "reasm_at_exit", "still waiting for its other fragments when the worker stopped",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_list_indexes_labels_and_subsets() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
        let mut labels: Vec<_> = DropReason::ALL.iter().map(|r| r.label()).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), DropReason::COUNT, "labels are unique");
        for e in EspError::ALL {
            assert_eq!(DropReason::from(*e).label(), e.label());
        }
        for r in ReasmDrop::ALL {
            assert_eq!(DropReason::from(*r).label(), r.label());
        }
        assert_eq!(EspError::AuthFailed.to_string(), "integrity check failed");
        assert_eq!(DropReason::from(ReasmDrop::NoBuffer).label(), "reasm_no_buffer");
        assert_ne!(DropReason::from(ReasmDrop::NoBuffer), DropReason::NoBuffer);
    }
}
