//! ESP (RFC 4303) encapsulation and decapsulation over [`PacketBuf`]s, in
//! tunnel mode (any mix of IPv4 and IPv6) and transport mode.
//!
//! Buffers hold an IP packet starting at byte 0 (no link layer). Outbound,
//! [`Sa::encap_burst`] admits a burst against the lifetime, reserves its
//! sequence numbers with one atomic step and seals it ([`encap`]). Inbound,
//! [`Sa::decap_burst`] checks the replay window, verifies and decrypts,
//! updates the window, charges the lifetime and restores the inner packets
//! ([`decap`]).
//!
//! Per-SA mutable state is atomics only, so any number of workers may use an
//! SA at once without a lock:
//! - the outbound counter ([`seq::SeqSpace`]) belongs to the SA's *key* and
//!   is shared by every SA sending with that key: numbers never repeat under
//!   one key, across replace, delete + add, reload and (with the persisted
//!   lease) restart;
//! - the replay window is lock-free ([`replay`]) and survives a replace that
//!   keeps the key;
//! - lifetime counters admit whole bursts exactly ([`lifetime`]).

pub mod decap;
mod ecn;
pub mod encap;
pub mod lifetime;
pub mod natt;
pub mod pmtu;
pub mod replay;
pub mod sa_drops;
pub mod seq;

use std::net::IpAddr;
use std::sync::Arc;

use thiserror::Error;
use zeroize::Zeroizing;

use crate::crypto::{Algorithm, Backend, CryptoError, Transform, ESP_HDR_LEN};
use crate::packet::ip::{IPV4_HDR_LEN, IPV6_HDR_LEN};
pub use decap::{Decapped, OuterRecord};
pub use lifetime::{Lifetime, TimeState, Usage};
pub use natt::UdpEncap;
pub use pmtu::{PathMtu, PmtuUpdate};
pub use replay::{ReplayError, ReplayWindow};
pub use sa_drops::{SaDrop, SaDrops};
pub use seq::{KeyId, SeqBlock, SeqSpace};

pub use crate::drops::EspError;

impl From<CryptoError> for EspError {
    fn from(e: CryptoError) -> Self {
        match e {
            CryptoError::BadBlockLength => EspError::BadBlockLength,
            CryptoError::TooShort => EspError::Truncated,
            _ => EspError::AuthFailed,
        }
    }
}

/// Tunnel or transport mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// New outer IP header from `local` to `remote` (same family, either family inside).
    Tunnel { local: IpAddr, remote: IpAddr },
    /// ESP inserted after the packet's own IP header.
    Transport,
}

/// What to put in the outer IPv4 DF bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DfPolicy {
    /// Copy from the inner IPv4 header; inner IPv6 counts as DF (it is never
    /// fragmented on path).
    #[default]
    Copy,
    Set,
    Clear,
}

/// Everything needed to create an SA. Keys are zeroized when this is dropped.
#[derive(Clone)]
pub struct SaConfig {
    pub spi: u32,
    pub algorithm: Algorithm,
    pub backend: Backend,
    /// GCM: key || 4-byte salt. CBC: cipher key. NULL: empty.
    pub enc_key: Zeroizing<Vec<u8>>,
    /// HMAC key (empty for GCM).
    pub auth_key: Zeroizing<Vec<u8>>,
    pub mode: Mode,
    pub esn: bool,
    pub replay_window: u32,
    pub lifetime: Lifetime,
    pub df: DfPolicy,
    /// Outer TTL / hop limit in tunnel mode.
    pub ttl: u8,
    /// ESP in UDP (RFC 3948): the ports, or `None` for plain ESP.
    pub encap: Option<UdpEncap>,
}

impl std::fmt::Debug for SaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SaConfig")
            .field("spi", &format_args!("0x{:08x}", self.spi))
            .field("algorithm", &self.algorithm)
            .field("backend", &self.backend)
            .field("enc_key", &"<redacted>")
            .field("auth_key", &"<redacted>")
            .field("mode", &self.mode)
            .field("esn", &self.esn)
            .field("replay_window", &self.replay_window)
            .field("lifetime", &self.lifetime)
            .field("df", &self.df)
            .field("ttl", &self.ttl)
            .field("encap", &self.encap)
            .finish()
    }
}

impl SaConfig {
    /// An SA config with defaults for everything but identity, algorithm and keys.
    pub fn new(spi: u32, algorithm: Algorithm, enc_key: &[u8], auth_key: &[u8], mode: Mode) -> Self {
        SaConfig {
            spi,
            algorithm,
            backend: Backend::Auto,
            enc_key: Zeroizing::new(enc_key.to_vec()),
            auth_key: Zeroizing::new(auth_key.to_vec()),
            mode,
            esn: false,
            replay_window: replay::DEFAULT_WINDOW,
            lifetime: Lifetime::default(),
            df: DfPolicy::Copy,
            ttl: 64,
            encap: None,
        }
    }
}

/// Why an SA could not be created.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SaError {
    #[error("{0}")]
    Crypto(#[from] CryptoError),
    #[error("tunnel endpoints must be of one address family")]
    MixedEndpoints,
    #[error("ESN needs the anti-replay window (replay window 0 turns it off)")]
    EsnWithoutReplay,
    #[error("replay window {0} is outside {min}..{max} (or 0: no anti-replay)", min = replay::MIN_WINDOW, max = replay::MAX_WINDOW)]
    ReplayWindow(u32),
    #[error("SPI 0..255 is reserved (RFC 4303 §2.1)")]
    ReservedSpi,
    #[error("{0}")]
    Lifetime(&'static str),
}

/// Lifetime usage and expiry flags of an SA (for the control plane).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SaUsage {
    pub packets: u64,
    pub bytes: u64,
    pub soft_expired: bool,
    pub hard_expired: bool,
    /// Next outbound sequence number (of the key's counter).
    pub next_seq: u64,
    /// Highest inbound sequence number accepted.
    pub replay_top: u64,
}

/// The state an SA continues from when it is created: the key's sequence
/// counter, the replay window and the usage so far. [`SaContinuity::fresh`]
/// starts everything anew; the policy database hands out the key's counter
/// and, for a replace that keeps the key, the old SA's window and usage.
#[derive(Debug)]
pub struct SaContinuity {
    pub seq: Arc<SeqSpace>,
    pub replay: Arc<ReplayWindow>,
    pub usage: Usage,
}

impl SaContinuity {
    /// A new counter at 1, an empty window, no usage.
    pub fn fresh(cfg: &SaConfig) -> Self {
        SaContinuity {
            seq: Arc::new(SeqSpace::new()),
            replay: Arc::new(ReplayWindow::new(window_size(cfg))),
            usage: Usage::default(),
        }
    }
}

/// The window an SA config asks for (the minimum when anti-replay is off,
/// so the ESN inference still has a window to work with).
pub fn window_size(cfg: &SaConfig) -> u32 {
    if cfg.replay_window == 0 {
        replay::MIN_WINDOW
    } else {
        cfg.replay_window
    }
}

/// A live SA: immutable parameters and transform, plus shared atomic state.
#[derive(Debug)]
pub struct Sa {
    spi: u32,
    algorithm: Algorithm,
    mode: Mode,
    esn: bool,
    df: DfPolicy,
    lifetime: Lifetime,
    transform: Transform,
    key_id: KeyId,
    /// The key's outbound counter (shared by every SA with this key).
    seq: Arc<SeqSpace>,
    /// Highest sequence number of this SA's space (2^32-1, or 2^63 with ESN).
    seq_limit: u64,
    replay: Arc<ReplayWindow>,
    /// `replay_window = 0`: the receiver does not check sequence numbers
    /// (RFC 4303 §3.4.3 lets it; benchmarks replaying a capture need it).
    anti_replay: bool,
    usage: Usage,
    /// Drops this SA caused, by class (see [`SaDrops`]).
    drops: SaDrops,
    pmtu: PathMtu,
    /// Tunnel mode: the outer header, prepared once.
    outer: Outer,
    /// ESP in UDP: the ports.
    encap: Option<UdpEncap>,
    /// Sizes of the framing, fixed at creation.
    framing: Framing,
}

/// The sizes of an SA's ESP framing, fixed by its algorithm, mode and
/// encapsulation: per-packet code reads them instead of matching on the
/// algorithm, mode and encapsulation each time.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Framing {
    /// Outer IP header (tunnel mode; 0 in transport mode).
    pub outer_ip: usize,
    /// UDP header of ESP in UDP (0 without).
    pub udp: usize,
    pub iv: usize,
    pub icv: usize,
    /// Payload + padding + 2 is a multiple of this (a power of two).
    pub align: usize,
}

impl Framing {
    fn of(a: Algorithm, mode: Mode, encap: Option<UdpEncap>) -> Framing {
        Framing {
            outer_ip: match mode {
                Mode::Tunnel { local: IpAddr::V4(_), .. } => IPV4_HDR_LEN,
                Mode::Tunnel { local: IpAddr::V6(_), .. } => IPV6_HDR_LEN,
                Mode::Transport => 0,
            },
            udp: natt::encap_len(encap),
            iv: a.iv_len(),
            icv: a.icv_len(),
            align: a.pad_align(),
        }
    }

    /// Bytes in front of the payload from the start of the outer IP header
    /// (tunnel) or the end of the packet's own header (transport).
    #[inline]
    pub fn head(&self) -> usize {
        self.outer_ip + self.udp + ESP_HDR_LEN + self.iv
    }
}

/// A tunnel SA's outer header, prepared at creation.
#[derive(Debug, Clone, Copy)]
enum Outer {
    /// IPv4: fixed fields and their checksum sum precomputed.
    V4(crate::wire::ipv4::Ipv4Template),
    /// IPv6: everything but traffic class and length.
    V6(crate::wire::Ipv6Repr),
    /// Transport mode: the packet keeps its own header.
    None,
}

impl Sa {
    /// Create an SA with fresh state. The CBC IV key is drawn from the system RNG.
    pub fn new(cfg: &SaConfig) -> Result<Sa, SaError> {
        Self::with_continuity(cfg, SaContinuity::fresh(cfg))
    }

    /// Create an SA that continues `from` (see [`SaContinuity`]).
    pub fn with_continuity(cfg: &SaConfig, from: SaContinuity) -> Result<Sa, SaError> {
        let mut seed = Zeroizing::new([0u8; 16]);
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed[..])
            .expect("system random number generator");
        Self::build(cfg, from, *seed)
    }

    /// Create an SA with fresh state and a given CBC IV key (tests want determinism).
    pub fn with_iv_seed(cfg: &SaConfig, iv_seed: [u8; 16]) -> Result<Sa, SaError> {
        Self::build(cfg, SaContinuity::fresh(cfg), iv_seed)
    }

    fn build(cfg: &SaConfig, from: SaContinuity, iv_seed: [u8; 16]) -> Result<Sa, SaError> {
        if cfg.spi < 256 {
            return Err(SaError::ReservedSpi);
        }
        if let Mode::Tunnel { local, remote } = cfg.mode {
            if local.is_ipv4() != remote.is_ipv4() {
                return Err(SaError::MixedEndpoints);
            }
        }
        let anti_replay = cfg.replay_window != 0;
        if anti_replay && !(replay::MIN_WINDOW..=replay::MAX_WINDOW).contains(&cfg.replay_window) {
            return Err(SaError::ReplayWindow(cfg.replay_window));
        }
        if !anti_replay && cfg.esn {
            // ESN inference needs the window's top (RFC 4303 §2.2.1).
            return Err(SaError::EsnWithoutReplay);
        }
        cfg.lifetime.validate().map_err(SaError::Lifetime)?;
        let transform = Transform::new(cfg.algorithm, cfg.backend, &cfg.enc_key, &cfg.auth_key, iv_seed)?;
        let outer_proto =
            if cfg.encap.is_some() { crate::packet::ip::proto::UDP } else { crate::packet::ip::proto::ESP };
        Ok(Sa {
            spi: cfg.spi,
            algorithm: cfg.algorithm,
            mode: cfg.mode,
            esn: cfg.esn,
            df: cfg.df,
            lifetime: cfg.lifetime,
            transform,
            key_id: cfg.key_id(),
            seq: from.seq,
            seq_limit: seq::space_limit(cfg.esn),
            replay: from.replay,
            anti_replay,
            usage: from.usage,
            drops: SaDrops::default(),
            pmtu: PathMtu::default(),
            encap: cfg.encap,
            framing: Framing::of(cfg.algorithm, cfg.mode, cfg.encap),
            outer: match cfg.mode {
                Mode::Tunnel { local: IpAddr::V4(s), remote: IpAddr::V4(d) } => {
                    Outer::V4(crate::wire::ipv4::Ipv4Template::new(s, d, outer_proto, cfg.ttl))
                }
                Mode::Tunnel { local: IpAddr::V6(s), remote: IpAddr::V6(d) } => Outer::V6(crate::wire::Ipv6Repr {
                    src: s,
                    dst: d,
                    next_header: outer_proto,
                    traffic_class: 0,
                    hop_limit: cfg.ttl,
                    payload_len: 0,
                }),
                _ => Outer::None,
            },
        })
    }

    pub fn spi(&self) -> u32 {
        self.spi
    }
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
    pub fn mode(&self) -> Mode {
        self.mode
    }
    pub fn esn(&self) -> bool {
        self.esn
    }
    /// ESP in UDP: the ports (RFC 3948).
    #[inline]
    pub fn udp_encap(&self) -> Option<UdpEncap> {
        self.encap
    }
    pub fn backend(&self) -> Backend {
        self.transform.backend()
    }
    pub fn lifetime(&self) -> Lifetime {
        self.lifetime
    }
    /// The fingerprint of this SA's keys (what the nonce rule is keyed on).
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }
    /// The key's outbound sequence counter.
    pub fn seq_space(&self) -> &Arc<SeqSpace> {
        &self.seq
    }
    pub fn replay_window(&self) -> &Arc<ReplayWindow> {
        &self.replay
    }
    /// The usage counters (lifetime).
    pub fn usage_counters(&self) -> &Usage {
        &self.usage
    }

    /// The SA's drop counters.
    #[inline]
    pub fn drops(&self) -> &SaDrops {
        &self.drops
    }

    /// Move the outbound counter forward to `next` (tests, restored state).
    /// Never moves it back: numbers must not repeat.
    pub fn advance_seq(&self, next: u64) {
        self.seq.advance_to(next);
    }

    /// Lifetime usage snapshot.
    pub fn usage(&self) -> SaUsage {
        SaUsage {
            packets: self.usage.packets(),
            bytes: self.usage.bytes(),
            soft_expired: self.usage.soft_expired(),
            hard_expired: self.usage.hard_expired(),
            next_seq: self.seq.next(),
            replay_top: self.replay.top(),
        }
    }

    /// Bytes ESP adds when it encrypts `payload_len` bytes (tunnel mode: the
    /// whole inner packet; transport mode: what follows the IP header): outer
    /// header in tunnel mode, UDP header when encapsulated, ESP header, IV,
    /// padding, trailer, ICV — exact.
    #[inline]
    pub fn overhead(&self, payload_len: usize) -> usize {
        let f = &self.framing;
        f.head() + pad_len(payload_len, f.align) + 2 + f.icv
    }

    /// The largest packet this SA can carry so that the ESP packet is at most
    /// `limit` bytes: in tunnel mode the whole inner packet, in transport mode
    /// the packet including its own IP header of `transport_hdr_len` bytes.
    /// Exact for every algorithm: it inverts [`Sa::overhead`], padding included.
    pub fn max_inner_len(&self, limit: usize, transport_hdr_len: usize) -> usize {
        let f = &self.framing;
        // Transport mode: the packet's own header stays in front.
        let kept = match self.mode {
            Mode::Tunnel { .. } => 0,
            Mode::Transport => transport_hdr_len,
        };
        // head (outer + UDP + ESP hdr + IV) + roundup(payload + 2, align) + ICV <= limit
        let Some(room) = limit.checked_sub(kept + f.head() + f.icv) else { return 0 };
        (room & !(f.align - 1)).saturating_sub(2) + kept
    }

    /// The learned path MTU, if one is in force at `now_ms`.
    #[inline]
    pub fn path_mtu(&self, now_ms: u64) -> Option<u16> {
        self.pmtu.get(now_ms)
    }

    /// An ICMP need-frag / PTB quoted one of this SA's packets with `mtu`:
    /// lower the path MTU (see [`PathMtu::lower`]).
    pub fn lower_path_mtu(&self, mtu: u16, floor: u16, current_limit: u16, now_ms: u64, ageing_ms: u64) -> PmtuUpdate {
        self.pmtu.lower(mtu, floor, current_limit, now_ms, ageing_ms)
    }

    /// Reserve `n` outbound sequence numbers in one atomic step, without
    /// building packets (tests of uniqueness). Exhaustion expires the SA.
    pub fn reserve(&self, n: usize) -> Result<SeqBlock, EspError> {
        if self.usage.hard_expired() {
            return Err(self.expiry_reason());
        }
        self.seq.reserve(n, self.seq_limit).map_err(|e| match e {
            seq::SeqError::Exhausted => {
                self.usage.expire();
                self.expiry_reason()
            }
            seq::SeqError::NotPersisted => EspError::SeqNotPersisted,
        })
    }

    /// Why an expired SA refuses packets: its sequence space, or its lifetime.
    fn expiry_reason(&self) -> EspError {
        if self.seq.next() > self.seq_limit {
            EspError::SeqExhausted
        } else {
            EspError::HardLifetime
        }
    }
}

impl SaConfig {
    /// The fingerprint of this config's keys.
    pub fn key_id(&self) -> KeyId {
        KeyId::of(self.algorithm, &self.enc_key, &self.auth_key)
    }
}

/// Packets per crypto call in the burst APIs (the pipeline's burst size).
pub const BATCH: usize = 32;

/// Padding so that payload + pad + 2 is a multiple of `align`.
///
/// `align` is a power of two (4, or the cipher's block of 16): masks, not
/// divisions (two `div`s per packet were on the outbound path).
#[inline]
pub fn pad_len(payload: usize, align: usize) -> usize {
    debug_assert!(align.is_power_of_two());
    let m = align - 1;
    (align - ((payload + 2) & m)) & m
}

#[cfg(test)]
pub(crate) mod tests;
