//! ESP (RFC 4303) encapsulation and decapsulation over [`PacketBuf`]s, in
//! tunnel mode (any mix of IPv4 and IPv6) and transport mode.
//!
//! Buffers hold an IP packet starting at byte 0 (no link layer). Outbound,
//! the caller reserves sequence numbers for a whole burst of one SA with one
//! atomic step ([`Sa::reserve`]) and encapsulates each packet with its number
//! ([`Sa::encap`]); [`Sa::encap_burst`] does both. Inbound, [`Sa::decap`]
//! checks the replay window, verifies and decrypts, updates the window, checks
//! the trailer and restores the inner packet.
//!
//! Per-SA mutable state is atomics only (sequence counter, replay window,
//! lifetime counters, expiry flags), so any number of workers may use an SA at
//! once without a lock:
//! - the outbound counter is a `fetch_add` per burst, so numbers never repeat;
//! - the replay window is lock-free (see [`replay`]);
//! - lifetime counters are `fetch_add`s; flags are sticky booleans.

pub mod replay;

use crossbeam_utils::CachePadded;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use thiserror::Error;
use zeroize::Zeroizing;

use crate::crypto::{Algorithm, Backend, CryptoError, Transform, ESP_HDR_LEN};
use crate::packet::ip::{self, proto, IPV4_DF, IPV4_HDR_LEN, IPV6_HDR_LEN};
use crate::packet::PacketBuf;
pub use replay::{ReplayError, ReplayWindow};

/// Why ESP processing dropped a packet. The label doubles as the drop-counter
/// reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Error)]
pub enum EspError {
    #[error("packet too short")]
    Truncated,
    #[error("IP length field disagrees with the packet")]
    BadLength,
    #[error("not an ESP packet")]
    NotEsp,
    #[error("outer packet is a fragment (reassemble first)")]
    Fragment,
    #[error("SPI does not belong to this SA")]
    WrongSpi,
    #[error("sequence number left of the replay window")]
    ReplayTooOld,
    #[error("sequence number already received")]
    ReplayDuplicate,
    #[error("integrity check failed")]
    AuthFailed,
    #[error("ciphertext not a multiple of the cipher block")]
    BadBlockLength,
    #[error("pad length larger than the payload")]
    BadPadLength,
    #[error("padding bytes are not 1, 2, 3, ...")]
    BadPadding,
    #[error("next header not allowed for this SA's mode")]
    BadNextHeader,
    #[error("dummy packet (next header 59)")]
    Dummy,
    #[error("decrypted inner packet is malformed")]
    BadInner,
    #[error("ECN: outer CE on a not-ECT inner packet (RFC 6040)")]
    EcnDrop,
    #[error("sequence number space exhausted: SA expired")]
    SeqExhausted,
    #[error("SA hard lifetime reached")]
    HardLifetime,
    #[error("no head- or tailroom for ESP")]
    NoRoom,
    #[error("packet too big for ESP")]
    TooBig,
}

impl EspError {
    /// Every reason, in a fixed order (counter arrays).
    pub const ALL: [EspError; 19] = [
        EspError::Truncated,
        EspError::BadLength,
        EspError::NotEsp,
        EspError::Fragment,
        EspError::WrongSpi,
        EspError::ReplayTooOld,
        EspError::ReplayDuplicate,
        EspError::AuthFailed,
        EspError::BadBlockLength,
        EspError::BadPadLength,
        EspError::BadPadding,
        EspError::BadNextHeader,
        EspError::Dummy,
        EspError::BadInner,
        EspError::EcnDrop,
        EspError::SeqExhausted,
        EspError::HardLifetime,
        EspError::NoRoom,
        EspError::TooBig,
    ];

    /// Stable snake_case label.
    pub fn label(self) -> &'static str {
        match self {
            EspError::Truncated => "esp_truncated",
            EspError::BadLength => "esp_bad_length",
            EspError::NotEsp => "esp_not_esp",
            EspError::Fragment => "esp_fragment",
            EspError::WrongSpi => "esp_wrong_spi",
            EspError::ReplayTooOld => "replay_too_old",
            EspError::ReplayDuplicate => "replay_duplicate",
            EspError::AuthFailed => "esp_auth_failed",
            EspError::BadBlockLength => "esp_bad_block_length",
            EspError::BadPadLength => "esp_bad_pad_length",
            EspError::BadPadding => "esp_bad_padding",
            EspError::BadNextHeader => "esp_bad_next_header",
            EspError::Dummy => "esp_dummy",
            EspError::BadInner => "esp_bad_inner",
            EspError::EcnDrop => "esp_ecn_drop",
            EspError::SeqExhausted => "sa_seq_exhausted",
            EspError::HardLifetime => "sa_hard_lifetime",
            EspError::NoRoom => "esp_no_room",
            EspError::TooBig => "esp_too_big",
        }
    }
}

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

/// Soft and hard limits; `None` = unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Lifetime {
    pub soft_bytes: Option<u64>,
    pub hard_bytes: Option<u64>,
    pub soft_packets: Option<u64>,
    pub hard_packets: Option<u64>,
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
}

/// Lifetime usage and expiry flags of an SA (for the control plane).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SaUsage {
    pub packets: u64,
    pub bytes: u64,
    pub soft_expired: bool,
    pub hard_expired: bool,
    /// Next outbound sequence number.
    pub next_seq: u64,
    /// Highest inbound sequence number accepted.
    pub replay_top: u64,
}

/// A live SA: immutable parameters and transform, plus atomic state.
#[derive(Debug)]
pub struct Sa {
    spi: u32,
    algorithm: Algorithm,
    mode: Mode,
    esn: bool,
    df: DfPolicy,
    ttl: u8,
    lifetime: Lifetime,
    transform: Transform,
    /// Next outbound sequence number (starts at 1). The counters workers write
    /// sit on cache lines of their own, so that writes by one worker do not
    /// evict the read-mostly fields (keys, mode, SPI) from the others' caches.
    next_seq: CachePadded<AtomicU64>,
    /// Highest sequence number this SA may use: the sequence space (2^32-1,
    /// or 2^64-1 with ESN) or the hard packet limit, whichever is lower.
    seq_limit: u64,
    replay: ReplayWindow,
    /// `replay_window = 0`: the receiver does not check sequence numbers
    /// (RFC 4303 §3.4.3 lets it; benchmarks replaying a capture need it).
    anti_replay: bool,
    packets: CachePadded<AtomicU64>,
    bytes: CachePadded<AtomicU64>,
    soft_expired: AtomicBool,
    hard_expired: AtomicBool,
    /// Learned path MTU of the outer path (0 = none), RFC 4301 §8.2.
    pmtu: AtomicU32,
    /// When the learned path MTU ages out (ms, caller's clock).
    pmtu_expires_ms: AtomicU64,
}

/// What an ICMP "too big" report did to an SA's path MTU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PmtuUpdate {
    /// The path MTU went down to this value.
    Lowered(u16),
    /// Not lower than what we already use: ignored.
    NotLower,
}

/// A block of consecutive outbound sequence numbers reserved at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeqBlock {
    /// First number of the block.
    pub first: u64,
    /// How many of the requested numbers are usable (the rest exceed the SA).
    pub usable: usize,
}

impl Sa {
    /// Create an SA. The CBC IV key is drawn from the system RNG.
    pub fn new(cfg: &SaConfig) -> Result<Sa, SaError> {
        let mut seed = Zeroizing::new([0u8; 16]);
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed[..])
            .expect("system random number generator");
        Self::with_iv_seed(cfg, *seed)
    }

    /// Create an SA with a given CBC IV key (tests want determinism).
    pub fn with_iv_seed(cfg: &SaConfig, iv_seed: [u8; 16]) -> Result<Sa, SaError> {
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
        let transform = Transform::new(cfg.algorithm, cfg.backend, &cfg.enc_key, &cfg.auth_key, iv_seed)?;
        let space = if cfg.esn { u64::MAX } else { u64::from(u32::MAX) };
        Ok(Sa {
            spi: cfg.spi,
            algorithm: cfg.algorithm,
            mode: cfg.mode,
            esn: cfg.esn,
            df: cfg.df,
            ttl: cfg.ttl,
            lifetime: cfg.lifetime,
            transform,
            next_seq: CachePadded::new(AtomicU64::new(1)),
            seq_limit: cfg.lifetime.hard_packets.map_or(space, |h| h.min(space)),
            replay: ReplayWindow::new(if anti_replay { cfg.replay_window } else { replay::MIN_WINDOW }),
            anti_replay,
            packets: CachePadded::new(AtomicU64::new(0)),
            bytes: CachePadded::new(AtomicU64::new(0)),
            soft_expired: AtomicBool::new(false),
            hard_expired: AtomicBool::new(false),
            pmtu: AtomicU32::new(0),
            pmtu_expires_ms: AtomicU64::new(0),
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
    pub fn backend(&self) -> Backend {
        self.transform.backend()
    }
    pub fn replay_window(&self) -> &ReplayWindow {
        &self.replay
    }

    /// Move the outbound counter forward to `next` (restoring state after a
    /// takeover, and tests). Never moves it back: numbers must not repeat.
    pub fn advance_seq(&self, next: u64) {
        self.next_seq.fetch_max(next, Ordering::Relaxed);
    }

    /// Lifetime usage snapshot.
    pub fn usage(&self) -> SaUsage {
        SaUsage {
            packets: self.packets.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            soft_expired: self.soft_expired.load(Ordering::Relaxed),
            hard_expired: self.hard_expired.load(Ordering::Relaxed),
            next_seq: self.next_seq.load(Ordering::Relaxed),
            replay_top: self.replay.top(),
        }
    }

    /// Bytes ESP adds when it encrypts `payload_len` bytes (tunnel mode: the
    /// whole inner packet; transport mode: what follows the IP header): outer
    /// header in tunnel mode, ESP header, IV, padding, trailer, ICV — exact.
    pub fn overhead(&self, payload_len: usize) -> usize {
        let a = self.algorithm;
        let outer = match self.mode {
            Mode::Tunnel { local: IpAddr::V4(_), .. } => IPV4_HDR_LEN,
            Mode::Tunnel { local: IpAddr::V6(_), .. } => IPV6_HDR_LEN,
            Mode::Transport => 0,
        };
        let pad = pad_len(payload_len, a.pad_align());
        outer + ESP_HDR_LEN + a.iv_len() + pad + 2 + a.icv_len()
    }

    /// The largest packet this SA can carry so that the ESP packet is at most
    /// `limit` bytes: in tunnel mode the whole inner packet, in transport mode
    /// the packet including its own IP header of `transport_hdr_len` bytes.
    /// Exact for every algorithm: it inverts [`Sa::overhead`], padding included.
    pub fn max_inner_len(&self, limit: usize, transport_hdr_len: usize) -> usize {
        let a = self.algorithm;
        let (outer, kept) = match self.mode {
            Mode::Tunnel { local: IpAddr::V4(_), .. } => (IPV4_HDR_LEN, 0),
            Mode::Tunnel { local: IpAddr::V6(_), .. } => (IPV6_HDR_LEN, 0),
            Mode::Transport => (transport_hdr_len, transport_hdr_len),
        };
        // outer + ESP hdr + IV + roundup(payload + 2, align) + ICV <= limit
        let fixed = outer + ESP_HDR_LEN + a.iv_len() + a.icv_len();
        let Some(room) = limit.checked_sub(fixed) else { return 0 };
        let align = a.pad_align();
        ((room / align) * align).saturating_sub(2) + kept
    }

    /// The learned path MTU, if one is in force at `now_ms`.
    #[inline]
    pub fn path_mtu(&self, now_ms: u64) -> Option<u16> {
        let m = self.pmtu.load(Ordering::Relaxed);
        if m == 0 || now_ms >= self.pmtu_expires_ms.load(Ordering::Relaxed) {
            None
        } else {
            Some(m as u16)
        }
    }

    /// An ICMP need-frag / PTB quoted one of this SA's packets with `mtu`:
    /// lower the path MTU (never below `floor`), to age out after `ageing_ms`.
    /// A report that would raise it is ignored (RFC 1191 §6, RFC 8201 §5.4).
    pub fn lower_path_mtu(&self, mtu: u16, floor: u16, current_limit: u16, now_ms: u64, ageing_ms: u64) -> PmtuUpdate {
        let mtu = mtu.max(floor);
        let current = self.path_mtu(now_ms).unwrap_or(current_limit).min(current_limit);
        if mtu >= current {
            return PmtuUpdate::NotLower;
        }
        self.pmtu.store(u32::from(mtu), Ordering::Relaxed);
        self.pmtu_expires_ms.store(now_ms.saturating_add(ageing_ms), Ordering::Relaxed);
        PmtuUpdate::Lowered(mtu)
    }

    /// Reserve `n` outbound sequence numbers in one atomic step. Numbers past
    /// the SA's limit are not usable: the SA is then expired (never wraps).
    #[inline]
    pub fn reserve(&self, n: usize) -> Result<SeqBlock, EspError> {
        if self.hard_expired.load(Ordering::Relaxed) {
            return Err(self.expiry_reason());
        }
        let first = self.next_seq.fetch_add(n as u64, Ordering::Relaxed);
        if first > self.seq_limit || first == 0 {
            self.hard_expired.store(true, Ordering::Relaxed);
            // Keep the counter parked past the limit so it cannot wrap back.
            self.next_seq.store(self.seq_limit.saturating_add(1).max(first), Ordering::Relaxed);
            return Err(self.expiry_reason());
        }
        let usable = (self.seq_limit - first).saturating_add(1).min(n as u64) as usize;
        if usable < n {
            self.hard_expired.store(true, Ordering::Relaxed);
        }
        Ok(SeqBlock { first, usable })
    }

    fn expiry_reason(&self) -> EspError {
        let space = if self.esn { u64::MAX } else { u64::from(u32::MAX) };
        if self.seq_limit < space || self.bytes_over_hard() {
            EspError::HardLifetime
        } else {
            EspError::SeqExhausted
        }
    }

    fn bytes_over_hard(&self) -> bool {
        self.lifetime.hard_bytes.is_some_and(|h| self.bytes.load(Ordering::Relaxed) >= h)
    }

    /// Count `packets`/`bytes` against the lifetime; raise soft/hard flags.
    /// Returns `Err(HardLifetime)` when the byte limit was already reached
    /// before this charge (the packets must then be dropped).
    #[inline]
    pub fn charge(&self, packets: u64, bytes: u64) -> Result<(), EspError> {
        let before = self.bytes.fetch_add(bytes, Ordering::Relaxed);
        let p = self.packets.fetch_add(packets, Ordering::Relaxed) + packets;
        let b = before + bytes;
        let lt = &self.lifetime;
        if lt.hard_bytes.is_some_and(|h| before >= h) {
            self.hard_expired.store(true, Ordering::Relaxed);
            return Err(EspError::HardLifetime);
        }
        if lt.hard_bytes.is_some_and(|h| b >= h) || lt.hard_packets.is_some_and(|h| p >= h) {
            self.hard_expired.store(true, Ordering::Relaxed);
        }
        if lt.soft_bytes.is_some_and(|s| b >= s) || lt.soft_packets.is_some_and(|s| p >= s) {
            self.soft_expired.store(true, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Encapsulate a burst of this SA's packets: sequence numbers reserved in
    /// one atomic step, lifetime charged in one step. `results[i]` tells what
    /// happened to `pkts[i]`.
    pub fn encap_burst<B: PacketBuf>(&self, pkts: &mut [B], results: &mut [Result<(), EspError>]) {
        let n = pkts.len().min(results.len());
        match self.reserve(n) {
            Err(e) => results[..n].iter_mut().for_each(|r| *r = Err(e)),
            Ok(block) => {
                let (mut ok, mut bytes) = (0u64, 0u64);
                let mut start = 0;
                while start < n {
                    let end = (start + BATCH).min(n);
                    let first = block.first + start as u64;
                    let usable = block.usable.saturating_sub(start);
                    ok += self.encap_batch(&mut pkts[start..end], first, usable, &mut results[start..end], &mut bytes);
                    start = end;
                }
                if ok > 0 {
                    // Already encrypted: a limit crossed here only flags the SA.
                    let _ = self.charge(ok, bytes);
                }
            }
        }
    }

    /// Encapsulate one packet with sequence number `seq` (from [`Sa::reserve`])
    /// and charge it to the lifetime.
    pub fn encap<B: PacketBuf>(&self, pkt: &mut B, seq: u64) -> Result<(), EspError> {
        let len = pkt.len() as u64;
        self.encap_one(pkt, seq)?;
        let _ = self.charge(1, len);
        Ok(())
    }

    /// Up to [`BATCH`] packets with sequence numbers `first..`, of which the
    /// first `usable` may be used: headers and trailers one by one, then one
    /// call that seals them all. Returns how many succeeded; adds their
    /// (inner) bytes to `bytes`.
    fn encap_batch<B: PacketBuf>(
        &self,
        pkts: &mut [B],
        first: u64,
        usable: usize,
        results: &mut [Result<(), EspError>],
        bytes: &mut u64,
    ) -> u64 {
        let mut prep: [Option<(usize, u32)>; BATCH] = [None; BATCH];
        let mut lens = [0u64; BATCH];
        for (i, p) in pkts.iter_mut().enumerate() {
            lens[i] = p.len() as u64;
            if i >= usable {
                results[i] = Err(self.expiry_reason());
                continue;
            }
            let seq = first + i as u64;
            match self.encap_prepare(p, seq) {
                Ok(off) => prep[i] = Some((off, (seq >> 32) as u32)),
                Err(e) => results[i] = Err(e),
            }
        }
        let crypt = self.crypt_batch(true, pkts, &prep);
        let mut ok = 0;
        for (i, c) in crypt.iter().enumerate().take(pkts.len()) {
            if let Some(c) = c {
                results[i] = c.map_err(EspError::from);
                if c.is_ok() {
                    ok += 1;
                    *bytes += lens[i];
                }
            }
        }
        ok
    }

    /// Encapsulate and seal one packet, without charging the lifetime.
    #[inline]
    fn encap_one<B: PacketBuf>(&self, pkt: &mut B, seq: u64) -> Result<(), EspError> {
        let off = self.encap_prepare(pkt, seq)?;
        let seq_hi = self.esn.then_some((seq >> 32) as u32);
        self.transform.seal(&mut pkt.data_mut()[off..], seq_hi)?;
        Ok(())
    }

    /// Everything but the crypto: headers, IV, padding, trailer. Returns the
    /// offset of the ESP header (the buffer then runs to the end of the ICV).
    #[inline]
    fn encap_prepare<B: PacketBuf>(&self, pkt: &mut B, seq: u64) -> Result<usize, EspError> {
        if self.lifetime.hard_bytes.is_some() && self.bytes_over_hard() {
            self.hard_expired.store(true, Ordering::Relaxed);
            return Err(EspError::HardLifetime);
        }
        match self.mode {
            Mode::Tunnel { local, remote } => self.encap_tunnel(pkt, seq, local, remote),
            Mode::Transport => self.encap_transport(pkt, seq),
        }
    }

    fn encap_tunnel<B: PacketBuf>(
        &self,
        pkt: &mut B,
        seq: u64,
        local: IpAddr,
        remote: IpAddr,
    ) -> Result<usize, EspError> {
        let a = self.algorithm;
        // Inner packet: validate and cut link-layer padding.
        let (inner_len, next_header, tos, df) = {
            let d = pkt.data();
            match ip::version(d) {
                Some(4) => {
                    let i = ip::parse_ipv4(d).ok_or(EspError::BadInner)?;
                    (i.total_len, proto::IPV4, i.tos, i.df())
                }
                Some(6) => {
                    let i = ip::parse_ipv6(d).ok_or(EspError::BadInner)?;
                    (i.total_len, proto::IPV6, i.traffic_class, true)
                }
                _ => return Err(EspError::BadInner),
            }
        };
        pkt.trim(pkt.len() - inner_len).map_err(|_| EspError::BadInner)?;
        let outer_len = if local.is_ipv4() { IPV4_HDR_LEN } else { IPV6_HDR_LEN };
        let pad = pad_len(inner_len, a.pad_align());
        let head = outer_len + ESP_HDR_LEN + a.iv_len();
        let tail = pad + 2 + a.icv_len();
        let total = head + inner_len + tail;
        grow(pkt, head, tail, total, local.is_ipv4())?;
        let buf = pkt.data_mut();
        // ESP header, IV, trailer.
        let esp = &mut buf[outer_len..];
        self.write_esp(esp, seq, inner_len, pad, next_header)?;
        // Outer header: DSCP copied, ECN copied (RFC 6040 normal mode).
        match (local, remote) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let df = match self.df {
                    DfPolicy::Copy => df,
                    DfPolicy::Set => true,
                    DfPolicy::Clear => false,
                };
                let h = &mut buf[..IPV4_HDR_LEN];
                h[0] = 0x45;
                h[1] = tos;
                h[2..4].copy_from_slice(&(total as u16).to_be_bytes());
                // Identification: the low bits of the sequence number are unique per SA.
                h[4..6].copy_from_slice(&(seq as u16).to_be_bytes());
                h[6..8].copy_from_slice(&(if df { IPV4_DF } else { 0 }).to_be_bytes());
                h[8] = self.ttl;
                h[9] = proto::ESP;
                h[12..16].copy_from_slice(&s.octets());
                h[16..20].copy_from_slice(&d.octets());
                ip::ipv4_set_checksum(h);
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                let h = &mut buf[..IPV6_HDR_LEN];
                h[..4].copy_from_slice(&[0x60, 0, 0, 0]);
                ip::ipv6_set_traffic_class(h, tos);
                h[4..6].copy_from_slice(&((total - IPV6_HDR_LEN) as u16).to_be_bytes());
                h[6] = proto::ESP;
                h[7] = self.ttl;
                h[8..24].copy_from_slice(&s.octets());
                h[24..40].copy_from_slice(&d.octets());
            }
            _ => return Err(EspError::BadInner), // excluded at SA creation
        }
        Ok(outer_len)
    }

    fn encap_transport<B: PacketBuf>(&self, pkt: &mut B, seq: u64) -> Result<usize, EspError> {
        let a = self.algorithm;
        let (hdr_len, total_len, l4_proto, nh_field, v4) = {
            let d = pkt.data();
            match ip::version(d) {
                Some(4) => {
                    let i = ip::parse_ipv4(d).ok_or(EspError::BadInner)?;
                    if i.is_fragment() {
                        // RFC 4303 §3.3: transport mode never applies to fragments.
                        return Err(EspError::Fragment);
                    }
                    (i.header_len, i.total_len, i.protocol, 9, true)
                }
                Some(6) => {
                    let i = ip::parse_ipv6(d).ok_or(EspError::BadInner)?;
                    if i.fragment {
                        return Err(EspError::Fragment);
                    }
                    (i.l4_offset, i.total_len, i.l4_proto, i.nh_field, false)
                }
                _ => return Err(EspError::BadInner),
            }
        };
        pkt.trim(pkt.len() - total_len).map_err(|_| EspError::BadInner)?;
        let payload_len = total_len - hdr_len;
        let pad = pad_len(payload_len, a.pad_align());
        let head = ESP_HDR_LEN + a.iv_len();
        let tail = pad + 2 + a.icv_len();
        let total = total_len + head + tail;
        grow(pkt, head, tail, total, v4)?;
        let buf = pkt.data_mut();
        // Move the IP header (and IPv6 extension headers) to the new front.
        buf.copy_within(head..head + hdr_len, 0);
        buf[nh_field] = proto::ESP;
        self.write_esp(&mut buf[hdr_len..], seq, payload_len, pad, l4_proto)?;
        if v4 {
            buf[2..4].copy_from_slice(&(total as u16).to_be_bytes());
            ip::ipv4_set_checksum(&mut buf[..hdr_len]);
        } else {
            buf[4..6].copy_from_slice(&((total - IPV6_HDR_LEN) as u16).to_be_bytes());
        }
        Ok(hdr_len)
    }

    /// Fill ESP header, IV and trailer around a payload already in place at
    /// `esp[ESP_HDR_LEN + iv_len..][..payload_len]` (sealing comes after).
    #[inline]
    fn write_esp(
        &self,
        esp: &mut [u8],
        seq: u64,
        payload_len: usize,
        pad: usize,
        next_header: u8,
    ) -> Result<(), EspError> {
        let iv_len = self.algorithm.iv_len();
        esp[..4].copy_from_slice(&self.spi.to_be_bytes());
        esp[4..8].copy_from_slice(&(seq as u32).to_be_bytes());
        self.transform.make_iv(seq, &mut esp[ESP_HDR_LEN..ESP_HDR_LEN + iv_len]);
        let t = ESP_HDR_LEN + iv_len + payload_len;
        for (i, b) in esp[t..t + pad].iter_mut().enumerate() {
            *b = (i + 1) as u8; // RFC 4303 §2.4 default padding 1, 2, 3, ...
        }
        esp[t + pad] = pad as u8;
        esp[t + pad + 1] = next_header;
        Ok(())
    }

    /// Decapsulate one inbound ESP packet in place and charge it to the
    /// lifetime. On success the buffer holds the inner packet (tunnel) or the
    /// restored packet (transport).
    pub fn decap<B: PacketBuf>(&self, pkt: &mut B) -> Result<Decapped, EspError> {
        let d = self.decap_one(pkt)?;
        self.charge(1, d.payload_len as u64)?;
        Ok(d)
    }

    /// Decapsulate a burst of this SA's packets; the lifetime is charged once.
    pub fn decap_burst<B: PacketBuf>(&self, pkts: &mut [B], results: &mut [Result<Decapped, EspError>]) {
        let (mut ok, mut bytes) = (0u64, 0u64);
        let n = pkts.len().min(results.len());
        let mut start = 0;
        while start < n {
            let end = (start + BATCH).min(n);
            self.decap_batch(&mut pkts[start..end], &mut results[start..end]);
            start = end;
        }
        for d in results[..n].iter().flatten() {
            ok += 1;
            bytes += d.payload_len as u64;
        }
        if ok > 0 {
            let _ = self.charge(ok, bytes);
        }
    }

    /// Up to [`BATCH`] packets: checks one by one, then one call that verifies
    /// and decrypts them all (multi-buffer backends interleave them), then the
    /// trailers.
    fn decap_batch<B: PacketBuf>(&self, pkts: &mut [B], results: &mut [Result<Decapped, EspError>]) {
        let mut pre: [Option<DecapPre>; BATCH] = [None; BATCH];
        for (i, p) in pkts.iter_mut().enumerate() {
            match self.decap_pre(p) {
                Ok(x) => pre[i] = Some(x),
                Err(e) => results[i] = Err(e),
            }
        }
        let prep = std::array::from_fn(|i| pre[i].map(|x| (x.esp_off, x.seq_hi)));
        let crypt = self.crypt_batch(false, pkts, &prep);
        for (i, c) in crypt.iter().enumerate().take(pkts.len()) {
            if let (Some(c), Some(x)) = (c, &pre[i]) {
                results[i] = match c {
                    Err(e) => Err((*e).into()),
                    Ok(()) => self.decap_post(&mut pkts[i], x),
                };
            }
        }
    }

    /// One transform call over the packets of a batch that are ready for
    /// crypto: `prep[i]` is `(ESP header offset, ESN high half)` for those.
    /// Returns each prepared packet's result at its own index.
    fn crypt_batch<B: PacketBuf>(
        &self,
        seal: bool,
        pkts: &mut [B],
        prep: &[Option<(usize, u32)>; BATCH],
    ) -> [Option<Result<(), CryptoError>>; BATCH] {
        let mut bufs: [&mut [u8]; BATCH] = std::array::from_fn(|_| &mut [][..]);
        let mut his = [0u32; BATCH];
        let mut idx = [0usize; BATCH];
        let mut k = 0;
        for (i, p) in pkts.iter_mut().enumerate() {
            if let Some((off, hi)) = prep[i] {
                bufs[k] = &mut p.data_mut()[off..];
                his[k] = hi;
                idx[k] = i;
                k += 1;
            }
        }
        let mut res = [Ok(()); BATCH];
        let seq_hi = self.esn.then_some(&his[..k]);
        if seal {
            self.transform.seal_burst(&mut bufs[..k], seq_hi, &mut res[..k]);
        } else {
            self.transform.open_burst(&mut bufs[..k], seq_hi, &mut res[..k]);
        }
        let mut out = [None; BATCH];
        for j in 0..k {
            out[idx[j]] = Some(res[j]);
        }
        out
    }

    /// Decapsulate one packet: checks, then verify and decrypt, then the trailer.
    #[inline]
    fn decap_one<B: PacketBuf>(&self, pkt: &mut B) -> Result<Decapped, EspError> {
        let pre = self.decap_pre(pkt)?;
        {
            let esp = &mut pkt.data_mut()[pre.esp_off..];
            self.transform.open(esp, self.esn.then_some(pre.seq_hi))?;
        }
        self.decap_post(pkt, &pre)
    }

    /// Everything before decryption: outer header, SPI, replay check, lifetime.
    #[inline]
    fn decap_pre<B: PacketBuf>(&self, pkt: &mut B) -> Result<DecapPre, EspError> {
        let a = self.algorithm;
        let (iv_len, icv_len) = (a.iv_len(), a.icv_len());
        // Outer header.
        let (esp_off, total_len, nh_field, v4, outer_tos) = {
            let d = pkt.data();
            match ip::version(d) {
                Some(4) => {
                    let i = ip::parse_ipv4(d).ok_or(if d.len() < IPV4_HDR_LEN {
                        EspError::Truncated
                    } else {
                        EspError::BadLength
                    })?;
                    if i.is_fragment() {
                        return Err(EspError::Fragment);
                    }
                    if i.protocol != proto::ESP {
                        return Err(EspError::NotEsp);
                    }
                    (i.header_len, i.total_len, 9, true, i.tos)
                }
                Some(6) => {
                    let i = ip::parse_ipv6(d).ok_or(if d.len() < IPV6_HDR_LEN {
                        EspError::Truncated
                    } else {
                        EspError::BadLength
                    })?;
                    if i.fragment {
                        return Err(EspError::Fragment);
                    }
                    if i.l4_proto != proto::ESP {
                        return Err(EspError::NotEsp);
                    }
                    (i.l4_offset, i.total_len, i.nh_field, false, i.traffic_class)
                }
                _ => return Err(EspError::Truncated),
            }
        };
        pkt.trim(pkt.len() - total_len).map_err(|_| EspError::BadLength)?;
        let esp_len = total_len - esp_off;
        // Header + IV + at least one alignment unit of ciphertext (which holds
        // the 2-byte trailer) + ICV.
        let min_ct = a.pad_align().max(4);
        if esp_len < ESP_HDR_LEN + iv_len + min_ct + icv_len {
            return Err(EspError::Truncated);
        }
        let (spi, seq_lo) = {
            let e = &pkt.data()[esp_off..];
            (u32::from_be_bytes([e[0], e[1], e[2], e[3]]), u32::from_be_bytes([e[4], e[5], e[6], e[7]]))
        };
        if spi != self.spi {
            return Err(EspError::WrongSpi);
        }
        let seq_hi = if self.esn { self.replay.infer_esn_high(seq_lo) } else { 0 };
        let seq = (u64::from(seq_hi) << 32) | u64::from(seq_lo);
        if self.anti_replay {
            self.replay.check(seq).map_err(replay_err)?;
        }
        if self.lifetime.hard_packets.is_some_and(|h| self.packets.load(Ordering::Relaxed) >= h)
            || self.bytes_over_hard()
        {
            self.hard_expired.store(true, Ordering::Relaxed);
            return Err(EspError::HardLifetime);
        }
        Ok(DecapPre { esp_off, total_len, nh_field, v4, outer_tos, seq, seq_hi })
    }

    /// Everything after a verified decryption: replay update, trailer, inner packet.
    #[inline]
    fn decap_post<B: PacketBuf>(&self, pkt: &mut B, pre: &DecapPre) -> Result<Decapped, EspError> {
        let (iv_len, icv_len) = (self.algorithm.iv_len(), self.algorithm.icv_len());
        let DecapPre { esp_off, total_len, nh_field, v4, outer_tos, seq, .. } = *pre;
        if self.anti_replay {
            self.replay.update(seq).map_err(replay_err)?;
        }

        // Trailer.
        let ct_start = esp_off + ESP_HDR_LEN + iv_len;
        let ct_end = total_len - icv_len;
        let (pad, next_header) = {
            let d = pkt.data();
            (usize::from(d[ct_end - 2]), d[ct_end - 1])
        };
        if pad + 2 > ct_end - ct_start {
            return Err(EspError::BadPadLength);
        }
        let payload_end = ct_end - 2 - pad;
        if pkt.data()[payload_end..payload_end + pad].iter().enumerate().any(|(i, &b)| b != (i + 1) as u8) {
            return Err(EspError::BadPadding);
        }
        let payload_len = payload_end - ct_start;

        match self.mode {
            Mode::Tunnel { .. } => {
                let inner_v = match next_header {
                    proto::IPV4 => 4,
                    proto::IPV6 => 6,
                    proto::NONE => return Err(EspError::Dummy),
                    _ => return Err(EspError::BadNextHeader),
                };
                pkt.trim(total_len - payload_end).map_err(|_| EspError::BadLength)?;
                pkt.adj(ct_start).map_err(|_| EspError::BadLength)?;
                let d = pkt.data_mut();
                let ok = match inner_v {
                    4 => ip::parse_ipv4(d).is_some_and(|i| i.total_len == payload_len),
                    _ => ip::parse_ipv6(d).is_some_and(|i| i.total_len == payload_len),
                };
                if !ok {
                    return Err(EspError::BadInner);
                }
                ecn_decap(d, inner_v, outer_tos)?;
            }
            Mode::Transport => {
                if next_header == proto::NONE {
                    return Err(EspError::Dummy);
                }
                let shift = ESP_HDR_LEN + iv_len;
                pkt.trim(total_len - payload_end).map_err(|_| EspError::BadLength)?;
                let d = pkt.data_mut();
                d.copy_within(0..esp_off, shift);
                pkt.adj(shift).map_err(|_| EspError::BadLength)?;
                let d = pkt.data_mut();
                d[nh_field] = next_header;
                let new_total = esp_off + payload_len;
                if v4 {
                    d[2..4].copy_from_slice(&(new_total as u16).to_be_bytes());
                    ip::ipv4_set_checksum(&mut d[..esp_off]);
                } else {
                    d[4..6].copy_from_slice(&((new_total - IPV6_HDR_LEN) as u16).to_be_bytes());
                }
            }
        }
        Ok(Decapped { seq, next_header, payload_len })
    }
}

/// What [`Sa::decap_pre`] found, for the steps after decryption.
#[derive(Debug, Clone, Copy)]
struct DecapPre {
    esp_off: usize,
    total_len: usize,
    nh_field: usize,
    v4: bool,
    outer_tos: u8,
    seq: u64,
    seq_hi: u32,
}

/// What a successful decapsulation found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decapped {
    /// Full (ESN-inferred) sequence number.
    pub seq: u64,
    /// The ESP next header (4/41 in tunnel mode, the upper protocol in transport).
    pub next_header: u8,
    /// Bytes of protected payload (what the lifetime counts).
    pub payload_len: usize,
}

fn replay_err(e: ReplayError) -> EspError {
    match e {
        ReplayError::TooOld => EspError::ReplayTooOld,
        ReplayError::Duplicate => EspError::ReplayDuplicate,
    }
}

/// Make room for ESP: `head` bytes in front, `tail` behind, for a packet of
/// `total` bytes once encapsulated (which its IP length field must hold).
#[inline]
fn grow<B: PacketBuf>(pkt: &mut B, head: usize, tail: usize, total: usize, v4: bool) -> Result<(), EspError> {
    if total > usize::from(u16::MAX) + if v4 { 0 } else { IPV6_HDR_LEN } {
        return Err(EspError::TooBig);
    }
    if pkt.headroom() < head || pkt.tailroom() < tail {
        return Err(EspError::NoRoom);
    }
    pkt.prepend(head).map_err(|_| EspError::NoRoom)?;
    pkt.append(tail).map_err(|_| EspError::NoRoom)
}

/// Packets per crypto call in the burst APIs (the pipeline's burst size).
pub const BATCH: usize = 32;

/// Padding so that payload + pad + 2 is a multiple of `align`.
#[inline]
pub fn pad_len(payload: usize, align: usize) -> usize {
    (align - (payload + 2) % align) % align
}

/// RFC 6040 §4.2 decapsulation: fold the outer ECN into the inner header.
fn ecn_decap(inner: &mut [u8], version: u8, outer_tos: u8) -> Result<(), EspError> {
    const CE: u8 = 3;
    const ECT1: u8 = 1;
    let outer = outer_tos & 3;
    let tos = if version == 4 { inner[1] } else { (inner[0] << 4) | (inner[1] >> 4) };
    let inner_ecn = tos & 3;
    let new_ecn = match (inner_ecn, outer) {
        (0, CE) => return Err(EspError::EcnDrop),
        (0, _) => 0,
        (_, CE) => CE,
        (2, ECT1) => ECT1,
        (e, _) => e,
    };
    if new_ecn != inner_ecn {
        let tos = (tos & !3) | new_ecn;
        if version == 4 {
            let old = u16::from_be_bytes([inner[0], inner[1]]);
            inner[1] = tos;
            let new = u16::from_be_bytes([inner[0], inner[1]]);
            let c = ip::checksum_adjust(u16::from_be_bytes([inner[10], inner[11]]), old, new);
            inner[10..12].copy_from_slice(&c.to_be_bytes());
        } else {
            ip::ipv6_set_traffic_class(inner, tos);
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests;
