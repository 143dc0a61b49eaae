//! ESP transforms: AES-GCM (RFC 4106), AES-CBC + HMAC-SHA1-96 (RFC 3602,
//! RFC 2404) and NULL + HMAC-SHA1-96, behind one small type.
//!
//! A [`Transform`] is built once per SA from its algorithm, keys and backend;
//! per packet the data path calls [`Transform::seal`] / [`Transform::open`],
//! which dispatch with one `match` per packet (never per byte).
//!
//! Backends: built in, `ring` for AES-GCM (its AES-NI + CLMUL code is fast at
//! ESP sizes) and ChaCha20-Poly1305, and the RustCrypto crates (`aes-gcm`,
//! `chacha20poly1305`, `aes`, `cbc`, `hmac`, `sha1`) as the portable backend
//! ([`builtin`]). Others implement
//! [`EspTransform`] outside this crate and register an [`ExternalBackend`]:
//! the DPDK crate registers intel-ipsec-mb, the multi-buffer library (the
//! fastest measured, `perf/RESULTS.md`), whose whole-burst calls are one
//! dynamic dispatch per batch, never per byte.
//!
//! Wire layout handled here, starting at the ESP header:
//!
//! ```text
//! | SPI (4) | Seq (4) | IV (iv_len) | ciphertext (payload+pad+padlen+nh) | ICV (icv_len) |
//! ```

pub mod builtin;

use std::sync::OnceLock;

use thiserror::Error;

/// ESP header length (SPI + sequence number).
pub const ESP_HDR_LEN: usize = 8;

/// ESP encryption/integrity algorithm of an SA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// AES-128-GCM, 16-byte ICV. Key = 16 bytes + 4 bytes salt.
    AesGcm128,
    /// AES-256-GCM, 16-byte ICV. Key = 32 bytes + 4 bytes salt.
    AesGcm256,
    /// AES-128-CBC + HMAC-SHA1-96. Keys: 16 bytes cipher, 20 bytes auth.
    AesCbc128HmacSha1,
    /// AES-256-CBC + HMAC-SHA1-96. Keys: 32 bytes cipher, 20 bytes auth.
    AesCbc256HmacSha1,
    /// No encryption, HMAC-SHA1-96 integrity only (debugging). 20-byte auth key.
    NullHmacSha1,
    /// ChaCha20-Poly1305 (RFC 7634), 16-byte ICV. Key = 32 bytes + 4 bytes salt.
    Chacha20Poly1305,
}

impl Algorithm {
    /// All algorithms.
    pub const ALL: [Algorithm; 6] = [
        Algorithm::AesGcm128,
        Algorithm::AesGcm256,
        Algorithm::AesCbc128HmacSha1,
        Algorithm::AesCbc256HmacSha1,
        Algorithm::NullHmacSha1,
        Algorithm::Chacha20Poly1305,
    ];

    /// Config name.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::AesGcm128 => "aes128-gcm16",
            Algorithm::AesGcm256 => "aes256-gcm16",
            Algorithm::AesCbc128HmacSha1 => "aes128-cbc-hmac-sha1-96",
            Algorithm::AesCbc256HmacSha1 => "aes256-cbc-hmac-sha1-96",
            Algorithm::NullHmacSha1 => "null-hmac-sha1-96",
            Algorithm::Chacha20Poly1305 => "chacha20-poly1305",
        }
    }

    /// Parse a config name.
    pub fn from_name(s: &str) -> Option<Algorithm> {
        Self::ALL.into_iter().find(|a| a.name() == s)
    }

    /// Encryption key bytes (GCM, ChaCha20-Poly1305: including the 4-byte salt).
    pub fn enc_key_len(self) -> usize {
        match self {
            Algorithm::AesGcm128 => 20,
            Algorithm::AesGcm256 | Algorithm::Chacha20Poly1305 => 36,
            Algorithm::AesCbc128HmacSha1 => 16,
            Algorithm::AesCbc256HmacSha1 => 32,
            Algorithm::NullHmacSha1 => 0,
        }
    }

    /// Authentication key bytes (0 for AEAD).
    pub fn auth_key_len(self) -> usize {
        if self.is_aead() {
            0
        } else {
            20
        }
    }

    /// IV bytes on the wire.
    pub fn iv_len(self) -> usize {
        match self {
            Algorithm::AesGcm128 | Algorithm::AesGcm256 | Algorithm::Chacha20Poly1305 => 8,
            Algorithm::AesCbc128HmacSha1 | Algorithm::AesCbc256HmacSha1 => 16,
            Algorithm::NullHmacSha1 => 0,
        }
    }

    /// ICV bytes on the wire.
    pub fn icv_len(self) -> usize {
        if self.is_aead() {
            16
        } else {
            12
        }
    }

    /// The ciphertext (payload + padding + 2) must be a multiple of this.
    /// Stream-like modes still need 4-byte alignment (RFC 4303 §2.4).
    pub fn pad_align(self) -> usize {
        match self {
            Algorithm::AesCbc128HmacSha1 | Algorithm::AesCbc256HmacSha1 => 16,
            _ => 4,
        }
    }

    /// True for combined-mode (AEAD) algorithms.
    pub fn is_aead(self) -> bool {
        matches!(self, Algorithm::AesGcm128 | Algorithm::AesGcm256 | Algorithm::Chacha20Poly1305)
    }
}

/// Which implementation runs an SA's crypto.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Backend {
    /// The fastest measured: intel-ipsec-mb where it runs (GCM, CBC), ring for
    /// ChaCha20-Poly1305; without intel-ipsec-mb, ring for the AEADs and
    /// RustCrypto for CBC/NULL.
    #[default]
    Auto,
    /// `ring` (AES-GCM and ChaCha20-Poly1305 only).
    Ring,
    /// The RustCrypto crates (all algorithms).
    RustCrypto,
    /// intel-ipsec-mb's multi-buffer manager (AES-GCM and AES-CBC + HMAC-SHA1):
    /// the burst APIs hand it whole bursts. Registered by the DPDK crate.
    IpsecMb,
}

impl Backend {
    /// Config name.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Auto => "auto",
            Backend::Ring => "ring",
            Backend::RustCrypto => "rustcrypto",
            Backend::IpsecMb => "ipsec-mb",
        }
    }
    /// Parse a config name.
    pub fn from_name(s: &str) -> Option<Backend> {
        [Backend::Auto, Backend::Ring, Backend::RustCrypto, Backend::IpsecMb].into_iter().find(|b| b.name() == s)
    }
}

/// Why a transform could not be built or a packet not processed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum CryptoError {
    #[error("{algorithm} needs a {expected}-byte encryption key, got {got}")]
    EncKeyLength { algorithm: &'static str, expected: usize, got: usize },
    #[error("{algorithm} needs a {expected}-byte authentication key, got {got}")]
    AuthKeyLength { algorithm: &'static str, expected: usize, got: usize },
    #[error("backend {backend} does not implement {algorithm}")]
    Unsupported { backend: &'static str, algorithm: &'static str },
    /// ICV mismatch (or a GCM tag that does not verify).
    #[error("integrity check failed")]
    AuthFailed,
    /// Ciphertext not a multiple of the cipher block.
    #[error("ciphertext length is not a multiple of the block size")]
    BadBlockLength,
    /// Too short to hold header, IV and ICV.
    #[error("packet too short for this transform")]
    TooShort,
}

/// An ESP transform implemented outside this crate (intel-ipsec-mb): seals
/// and opens whole batches in place. One transform per SA, shared by every
/// worker, so it is `Send + Sync` and keeps per-thread state (a multi-buffer
/// manager) itself.
pub trait EspTransform: Send + Sync {
    /// The IV of a CBC packet with sequence number `seq` (unique and
    /// unpredictable). AEAD IVs never come here: [`Transform::make_iv`]
    /// writes the sequence number itself.
    fn make_iv(&self, seq: u64, iv: &mut [u8]);
    /// Seal `bufs[i]` (ESP header to end of ICV space, as for
    /// [`Transform::seal`]); `seq_hi` one per buffer with ESN.
    fn seal_burst(&self, bufs: &mut [&mut [u8]], seq_hi: Option<&[u32]>, results: &mut [Result<(), CryptoError>]);
    /// Verify and decrypt `bufs[i]`; a buffer that fails holds garbage.
    fn open_burst(&self, bufs: &mut [&mut [u8]], seq_hi: Option<&[u32]>, results: &mut [Result<(), CryptoError>]);
}

/// Makes [`EspTransform`]s of an external backend.
pub trait ExternalBackend: Send + Sync {
    /// Does it run here (CPU features) and implement `algorithm`?
    fn supports(&self, algorithm: Algorithm) -> bool;
    /// A transform for one SA. `enc_key` for GCM is key || 4-byte salt.
    fn build(
        &self,
        algorithm: Algorithm,
        enc_key: &[u8],
        auth_key: &[u8],
        iv_seed: [u8; 16],
    ) -> Result<Box<dyn EspTransform>, CryptoError>;
}

static IPSEC_MB: OnceLock<&'static dyn ExternalBackend> = OnceLock::new();

/// Make `backend` available as [`Backend::IpsecMb`] (and as the `auto`
/// choice where it supports the algorithm). Once per process; later calls
/// change nothing and return false.
pub fn register_ipsec_mb(backend: &'static dyn ExternalBackend) -> bool {
    IPSEC_MB.set(backend).is_ok()
}

/// The registered intel-ipsec-mb backend, if any.
pub fn ipsec_mb() -> Option<&'static dyn ExternalBackend> {
    IPSEC_MB.get().copied()
}

/// The per-SA crypto state: expanded keys, salt, IV generator. Built-in
/// backends are matched statically; an external one is one virtual call per
/// batch.
pub struct Transform {
    algorithm: Algorithm,
    backend: Backend,
    imp: Imp,
}

// One per SA: the built-in keys stay inline (the hot path saves a pointer chase).
#[allow(clippy::large_enum_variant)]
enum Imp {
    Builtin(builtin::Builtin),
    External(Box<dyn EspTransform>),
}

impl std::fmt::Debug for Transform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        write!(f, "Transform({}, {}, keys redacted)", self.algorithm.name(), self.backend.name())
    }
}

impl Transform {
    /// Build the transform. `enc_key` for GCM is key || 4-byte salt (RFC 4106).
    /// `iv_seed` keys the CBC IV generator (random per SA; ignored otherwise).
    pub fn new(
        algorithm: Algorithm,
        backend: Backend,
        enc_key: &[u8],
        auth_key: &[u8],
        iv_seed: [u8; 16],
    ) -> Result<Transform, CryptoError> {
        if enc_key.len() != algorithm.enc_key_len() {
            return Err(CryptoError::EncKeyLength {
                algorithm: algorithm.name(),
                expected: algorithm.enc_key_len(),
                got: enc_key.len(),
            });
        }
        if auth_key.len() != algorithm.auth_key_len() {
            return Err(CryptoError::AuthKeyLength {
                algorithm: algorithm.name(),
                expected: algorithm.auth_key_len(),
                got: auth_key.len(),
            });
        }
        let mb = ipsec_mb().filter(|m| m.supports(algorithm));
        // Auto: what measured fastest (perf/RESULTS.md): intel-ipsec-mb for
        // GCM and CBC + HMAC-SHA1 where it runs, else ring for the AEADs and
        // RustCrypto for the rest. (Under Miri, which cannot run ring's
        // assembly, GCM falls back to RustCrypto.)
        let backend = match backend {
            // ChaCha20-Poly1305: ring measured 1.2-2x faster than intel-ipsec-mb's
            // direct API (perf/RESULTS.md), so `auto` keeps ring for it.
            Backend::Auto if mb.is_some() && algorithm != Algorithm::Chacha20Poly1305 => Backend::IpsecMb,
            Backend::Auto if algorithm.is_aead() && !cfg!(miri) => Backend::Ring,
            Backend::Auto => Backend::RustCrypto,
            b => b,
        };
        let imp = match backend {
            Backend::IpsecMb => {
                let mb = mb.ok_or(CryptoError::Unsupported { backend: "ipsec-mb", algorithm: algorithm.name() })?;
                Imp::External(mb.build(algorithm, enc_key, auth_key, iv_seed)?)
            }
            b => Imp::Builtin(builtin::Builtin::new(algorithm, b, enc_key, auth_key, iv_seed)?),
        };
        Ok(Transform { algorithm, backend, imp })
    }

    /// The SA's algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The backend actually used.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The IV for the packet with 64-bit sequence number `seq`.
    ///
    /// AEAD (GCM, ChaCha20-Poly1305): the sequence number itself (RFC 4106
    /// §3, RFC 7634 §2: unique per key, which is all they need), written
    /// here for every backend, so that one place decides nonce uniqueness and
    /// the hot path makes no backend call for it. CBC: the backend's AES
    /// under a random per-SA key of the sequence number — unique and
    /// unpredictable to anyone without that key, as RFC 3602 requires, with
    /// no random-number call per packet.
    #[inline]
    pub fn make_iv(&self, seq: u64, iv: &mut [u8]) {
        if self.algorithm.is_aead() {
            if let Some(iv) = iv.first_chunk_mut::<8>() {
                *iv = seq.to_be_bytes();
            }
            return;
        }
        match &self.imp {
            Imp::Builtin(b) => b.make_iv(seq, iv),
            Imp::External(x) => x.make_iv(seq, iv),
        }
    }

    /// Seal a burst: `bufs[i]` as for [`Self::seal`], `seq_hi` one per buffer
    /// with ESN. Multi-buffer backends process the burst together; the others
    /// one by one.
    pub fn seal_burst(&self, bufs: &mut [&mut [u8]], seq_hi: Option<&[u32]>, results: &mut [Result<(), CryptoError>]) {
        match &self.imp {
            Imp::External(x) => x.seal_burst(bufs, seq_hi, results),
            Imp::Builtin(b) => {
                for (i, (buf, r)) in bufs.iter_mut().zip(results.iter_mut()).enumerate() {
                    *r = b.seal(buf, seq_hi.map(|h| h[i]));
                }
            }
        }
    }

    /// Open a burst (see [`Self::seal_burst`]). With a multi-buffer backend,
    /// verifying and decrypting run together; a packet whose ICV fails is
    /// reported (and dropped by the caller) but its buffer holds garbage.
    pub fn open_burst(&self, bufs: &mut [&mut [u8]], seq_hi: Option<&[u32]>, results: &mut [Result<(), CryptoError>]) {
        match &self.imp {
            Imp::External(x) => x.open_burst(bufs, seq_hi, results),
            Imp::Builtin(b) => {
                for (i, (buf, r)) in bufs.iter_mut().zip(results.iter_mut()).enumerate() {
                    *r = b.open(buf, seq_hi.map(|h| h[i]));
                }
            }
        }
    }

    /// Encrypt and authenticate in place. `esp` runs from the ESP header to
    /// the end of the ICV space; header, IV and plaintext (trailer included)
    /// are filled in; the ICV is written here. `seq_hi` is the ESN high half
    /// (0 without ESN; it is authenticated, never sent).
    #[inline]
    pub fn seal(&self, esp: &mut [u8], seq_hi: Option<u32>) -> Result<(), CryptoError> {
        match &self.imp {
            Imp::Builtin(b) => b.seal(esp, seq_hi),
            Imp::External(x) => one(esp, seq_hi, |bufs, his, res| x.seal_burst(bufs, his, res)),
        }
    }

    /// Verify and decrypt in place. On success the plaintext lies at
    /// `esp[ESP_HDR_LEN + iv_len .. len - icv_len]`. Nothing is decrypted
    /// when the ICV does not verify.
    #[inline]
    pub fn open(&self, esp: &mut [u8], seq_hi: Option<u32>) -> Result<(), CryptoError> {
        match &self.imp {
            Imp::Builtin(b) => b.open(esp, seq_hi),
            Imp::External(x) => one(esp, seq_hi, |bufs, his, res| x.open_burst(bufs, his, res)),
        }
    }
}

/// A burst of one through a burst-only backend.
fn one(
    esp: &mut [u8],
    seq_hi: Option<u32>,
    f: impl FnOnce(&mut [&mut [u8]], Option<&[u32]>, &mut [Result<(), CryptoError>]),
) -> Result<(), CryptoError> {
    let mut res = [Err(CryptoError::TooShort)];
    let his = seq_hi.map(|h| [h]);
    f(&mut [esp], his.as_ref().map(|h| &h[..]), &mut res);
    res[0]
}
