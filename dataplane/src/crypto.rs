//! ESP transforms: AES-GCM (RFC 4106), AES-CBC + HMAC-SHA1-96 (RFC 3602,
//! RFC 2404) and NULL + HMAC-SHA1-96, behind one small type.
//!
//! A [`Transform`] is built once per SA from its algorithm, keys and backend;
//! per packet the data path calls [`Transform::seal`] / [`Transform::open`],
//! which dispatch with one `match` per packet (never per byte).
//!
//! Backends: `ring` for AES-GCM (its AES-NI + CLMUL code is the fastest
//! measured here at ESP sizes); the RustCrypto crates (`aes-gcm`, `aes`,
//! `cbc`, `hmac`, `sha1`) as the portable backend and for HMAC-SHA1 (the
//! `sha1` crate uses SHA-NI; ring's SHA-1 does not).
//!
//! Wire layout handled here, starting at the ESP header:
//!
//! ```text
//! | SPI (4) | Seq (4) | IV (iv_len) | ciphertext (payload+pad+padlen+nh) | ICV (icv_len) |
//! ```

use aes::cipher::{BlockDecryptMut, BlockEncrypt, BlockEncryptMut, InnerIvInit, KeyInit};
use aes_gcm::aead::AeadInPlace;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use subtle::ConstantTimeEq;
use thiserror::Error;
use zeroize::{Zeroize, Zeroizing};

use crate::dpdk::ipsec_mb::{self, MbAlgorithm, MbKeys, MbStatus};

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
}

impl Algorithm {
    /// All algorithms.
    pub const ALL: [Algorithm; 5] = [
        Algorithm::AesGcm128,
        Algorithm::AesGcm256,
        Algorithm::AesCbc128HmacSha1,
        Algorithm::AesCbc256HmacSha1,
        Algorithm::NullHmacSha1,
    ];

    /// Config name.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::AesGcm128 => "aes128-gcm16",
            Algorithm::AesGcm256 => "aes256-gcm16",
            Algorithm::AesCbc128HmacSha1 => "aes128-cbc-hmac-sha1-96",
            Algorithm::AesCbc256HmacSha1 => "aes256-cbc-hmac-sha1-96",
            Algorithm::NullHmacSha1 => "null-hmac-sha1-96",
        }
    }

    /// Parse a config name.
    pub fn from_name(s: &str) -> Option<Algorithm> {
        Self::ALL.into_iter().find(|a| a.name() == s)
    }

    /// Encryption key bytes (GCM: including the 4-byte salt).
    pub fn enc_key_len(self) -> usize {
        match self {
            Algorithm::AesGcm128 => 20,
            Algorithm::AesGcm256 => 36,
            Algorithm::AesCbc128HmacSha1 => 16,
            Algorithm::AesCbc256HmacSha1 => 32,
            Algorithm::NullHmacSha1 => 0,
        }
    }

    /// Authentication key bytes (0 for AEAD).
    pub fn auth_key_len(self) -> usize {
        match self {
            Algorithm::AesGcm128 | Algorithm::AesGcm256 => 0,
            _ => 20,
        }
    }

    /// IV bytes on the wire.
    pub fn iv_len(self) -> usize {
        match self {
            Algorithm::AesGcm128 | Algorithm::AesGcm256 => 8,
            Algorithm::AesCbc128HmacSha1 | Algorithm::AesCbc256HmacSha1 => 16,
            Algorithm::NullHmacSha1 => 0,
        }
    }

    /// ICV bytes on the wire.
    pub fn icv_len(self) -> usize {
        match self {
            Algorithm::AesGcm128 | Algorithm::AesGcm256 => 16,
            _ => 12,
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
        matches!(self, Algorithm::AesGcm128 | Algorithm::AesGcm256)
    }
}

/// Which implementation runs an SA's crypto.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Backend {
    /// The fastest measured: intel-ipsec-mb where it runs (GCM, CBC), else
    /// ring for GCM and RustCrypto for CBC/NULL.
    #[default]
    Auto,
    /// `ring` (AES-GCM only).
    Ring,
    /// The RustCrypto crates (all algorithms).
    RustCrypto,
    /// intel-ipsec-mb's multi-buffer manager (AES-GCM and AES-CBC + HMAC-SHA1):
    /// the burst APIs hand it whole bursts.
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

type HmacSha1 = Hmac<Sha1>;
type Aes128CbcEnc = cbc::Encryptor<aes::Aes128>;
type Aes128CbcDec = cbc::Decryptor<aes::Aes128>;
type Aes256CbcEnc = cbc::Encryptor<aes::Aes256>;
type Aes256CbcDec = cbc::Decryptor<aes::Aes256>;

/// The per-SA crypto state: expanded keys, salt, IV generator.
pub struct Transform {
    algorithm: Algorithm,
    backend: Backend,
    imp: Imp,
}

// One per SA, so size differences do not matter; ring's GCM key stays inline
// (it is the hot backend) and saves a pointer chase per packet.
#[allow(clippy::large_enum_variant)]
enum Imp {
    GcmRing {
        key: ring::aead::LessSafeKey,
        salt: [u8; 4],
    },
    Gcm128Rc {
        key: Box<aes_gcm::Aes128Gcm>,
        salt: [u8; 4],
    },
    Gcm256Rc {
        key: Box<aes_gcm::Aes256Gcm>,
        salt: [u8; 4],
    },
    Cbc128 {
        key: Box<aes::Aes128>,
        mac: Box<HmacSha1>,
        iv_gen: Box<aes::Aes128>,
    },
    Cbc256 {
        key: Box<aes::Aes256>,
        mac: Box<HmacSha1>,
        iv_gen: Box<aes::Aes128>,
    },
    Null {
        mac: Box<HmacSha1>,
    },
    /// intel-ipsec-mb; CBC keeps its own IV generator.
    Mb {
        keys: MbKeys,
        iv_gen: Option<Box<aes::Aes128>>,
    },
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
        let iv_seed = Zeroizing::new(iv_seed);
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
        let mb_alg = match algorithm {
            Algorithm::AesGcm128 => Some(MbAlgorithm::Gcm128),
            Algorithm::AesGcm256 => Some(MbAlgorithm::Gcm256),
            Algorithm::AesCbc128HmacSha1 => Some(MbAlgorithm::Cbc128Sha1),
            Algorithm::AesCbc256HmacSha1 => Some(MbAlgorithm::Cbc256Sha1),
            Algorithm::NullHmacSha1 => None,
        };
        // Auto: what measured fastest (perf/RESULTS.md): intel-ipsec-mb for
        // GCM and CBC + HMAC-SHA1 when it runs on this CPU (1.4-4.5x over the
        // others on bursts), else ring for GCM and RustCrypto for the rest.
        let backend = match (backend, algorithm.is_aead()) {
            (Backend::Auto, _) if mb_alg.is_some() && ipsec_mb::arch().is_some() => Backend::IpsecMb,
            (Backend::Auto, true) => Backend::Ring,
            (Backend::Auto, false) => Backend::RustCrypto,
            (Backend::Ring, false) => {
                return Err(CryptoError::Unsupported { backend: "ring", algorithm: algorithm.name() })
            }
            (b, _) => b,
        };
        let mac = || Box::new(<HmacSha1 as Mac>::new_from_slice(auth_key).expect("HMAC takes any key length"));
        let salt = |k: &[u8]| -> [u8; 4] { k[k.len() - 4..].try_into().expect("4 bytes") };
        let iv_gen = || Box::new(aes::Aes128::new_from_slice(&iv_seed[..]).expect("16-byte key"));
        let imp = match (algorithm, backend) {
            (_, Backend::IpsecMb) => {
                let unsupported = CryptoError::Unsupported { backend: "ipsec-mb", algorithm: algorithm.name() };
                let mb = mb_alg.ok_or(unsupported)?;
                let keys = MbKeys::new(mb, enc_key, auth_key).ok_or(unsupported)?;
                Imp::Mb { keys, iv_gen: (!algorithm.is_aead()).then(iv_gen) }
            }
            (Algorithm::AesGcm128 | Algorithm::AesGcm256, Backend::Ring) => {
                let alg =
                    if algorithm == Algorithm::AesGcm128 { &ring::aead::AES_128_GCM } else { &ring::aead::AES_256_GCM };
                let key = ring::aead::UnboundKey::new(alg, &enc_key[..enc_key.len() - 4]).map_err(|_| {
                    CryptoError::EncKeyLength {
                        algorithm: algorithm.name(),
                        expected: algorithm.enc_key_len(),
                        got: enc_key.len(),
                    }
                })?;
                Imp::GcmRing { key: ring::aead::LessSafeKey::new(key), salt: salt(enc_key) }
            }
            (Algorithm::AesGcm128, _) => Imp::Gcm128Rc {
                key: Box::new(aes_gcm::Aes128Gcm::new_from_slice(&enc_key[..16]).expect("16-byte key")),
                salt: salt(enc_key),
            },
            (Algorithm::AesGcm256, _) => Imp::Gcm256Rc {
                key: Box::new(aes_gcm::Aes256Gcm::new_from_slice(&enc_key[..32]).expect("32-byte key")),
                salt: salt(enc_key),
            },
            (Algorithm::AesCbc128HmacSha1, _) => Imp::Cbc128 {
                key: Box::new(aes::Aes128::new_from_slice(enc_key).expect("16-byte key")),
                mac: mac(),
                iv_gen: Box::new(aes::Aes128::new_from_slice(&iv_seed[..]).expect("16-byte key")),
            },
            (Algorithm::AesCbc256HmacSha1, _) => Imp::Cbc256 {
                key: Box::new(aes::Aes256::new_from_slice(enc_key).expect("32-byte key")),
                mac: mac(),
                iv_gen: Box::new(aes::Aes128::new_from_slice(&iv_seed[..]).expect("16-byte key")),
            },
            (Algorithm::NullHmacSha1, _) => Imp::Null { mac: mac() },
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
    /// GCM: the sequence number itself (RFC 4106 §3: unique per key, which is
    /// all GCM needs). CBC: AES under a random per-SA key of the sequence
    /// number — unique and unpredictable to anyone without that key, as
    /// RFC 3602 requires, with no random-number call per packet.
    #[inline]
    pub fn make_iv(&self, seq: u64, iv: &mut [u8]) {
        match &self.imp {
            Imp::GcmRing { .. } | Imp::Gcm128Rc { .. } | Imp::Gcm256Rc { .. } | Imp::Mb { iv_gen: None, .. } => {
                iv[..8].copy_from_slice(&seq.to_be_bytes())
            }
            Imp::Cbc128 { iv_gen, .. } | Imp::Cbc256 { iv_gen, .. } | Imp::Mb { iv_gen: Some(iv_gen), .. } => {
                let mut block = aes::Block::default();
                block[..8].copy_from_slice(&seq.to_be_bytes());
                iv_gen.encrypt_block(&mut block);
                iv[..16].copy_from_slice(&block);
            }
            Imp::Null { .. } => {}
        }
    }

    /// Seal a burst: `bufs[i]` as for [`Self::seal`], `seq_hi` one per buffer
    /// with ESN. Multi-buffer backends process the burst together; the others
    /// one by one.
    pub fn seal_burst(&self, bufs: &mut [&mut [u8]], seq_hi: Option<&[u32]>, results: &mut [Result<(), CryptoError>]) {
        self.burst(true, bufs, seq_hi, results)
    }

    /// Open a burst (see [`Self::seal_burst`]). With intel-ipsec-mb, verifying
    /// and decrypting run together; a packet whose ICV fails is reported (and
    /// dropped by the caller) but its buffer holds garbage.
    pub fn open_burst(&self, bufs: &mut [&mut [u8]], seq_hi: Option<&[u32]>, results: &mut [Result<(), CryptoError>]) {
        self.burst(false, bufs, seq_hi, results)
    }

    fn burst(
        &self,
        seal: bool,
        bufs: &mut [&mut [u8]],
        seq_hi: Option<&[u32]>,
        results: &mut [Result<(), CryptoError>],
    ) {
        let n = bufs.len().min(results.len());
        if let Imp::Mb { keys, .. } = &self.imp {
            let mut status = [MbStatus::Error; ipsec_mb::MAX_BURST];
            let mut start = 0;
            while start < n {
                let end = (start + ipsec_mb::MAX_BURST).min(n);
                let his = seq_hi.map(|h| &h[start..end]);
                keys.burst(seal, &mut bufs[start..end], his, &mut status[..end - start]);
                for (r, &st) in results[start..end].iter_mut().zip(&status) {
                    *r = self.mb_result(st);
                }
                start = end;
            }
            return;
        }
        for i in 0..n {
            let hi = seq_hi.map(|h| h[i]);
            results[i] = if seal { self.seal(bufs[i], hi) } else { self.open(bufs[i], hi) };
        }
    }

    /// A multi-buffer status as a result; a refused buffer had the wrong shape.
    fn mb_result(&self, st: MbStatus) -> Result<(), CryptoError> {
        match st {
            MbStatus::Ok => Ok(()),
            MbStatus::AuthFailed => Err(CryptoError::AuthFailed),
            MbStatus::Error if self.algorithm.is_aead() => Err(CryptoError::TooShort),
            MbStatus::Error => Err(CryptoError::BadBlockLength),
        }
    }

    /// One packet through the multi-buffer backend (a burst of one).
    fn mb_one(&self, keys: &MbKeys, seal: bool, esp: &mut [u8], seq_hi: Option<u32>) -> Result<(), CryptoError> {
        let (iv_len, icv_len) = (self.algorithm.iv_len(), self.algorithm.icv_len());
        if esp.len() < ESP_HDR_LEN + iv_len + icv_len {
            return Err(CryptoError::TooShort);
        }
        let mut status = [MbStatus::Error];
        let his = seq_hi.map(|h| [h]);
        keys.burst(seal, &mut [esp], his.as_ref().map(|h| &h[..]), &mut status);
        self.mb_result(status[0])
    }

    /// Encrypt and authenticate in place. `esp` runs from the ESP header to
    /// the end of the ICV space; header, IV and plaintext (trailer included)
    /// are filled in; the ICV is written here. `seq_hi` is the ESN high half
    /// (0 without ESN; it is authenticated, never sent).
    #[inline]
    pub fn seal(&self, esp: &mut [u8], seq_hi: Option<u32>) -> Result<(), CryptoError> {
        let a = self.algorithm;
        let (iv_len, icv_len) = (a.iv_len(), a.icv_len());
        if esp.len() < ESP_HDR_LEN + iv_len + icv_len {
            return Err(CryptoError::TooShort);
        }
        let body_end = esp.len() - icv_len;
        match &self.imp {
            Imp::GcmRing { key, salt } => {
                let (head, rest) = esp.split_at_mut(ESP_HDR_LEN + iv_len);
                let (body, icv) = rest.split_at_mut(body_end - ESP_HDR_LEN - iv_len);
                let nonce = gcm_nonce(salt, &head[ESP_HDR_LEN..]);
                let aad = GcmAad::new(&head[..ESP_HDR_LEN], seq_hi);
                let tag = key
                    .seal_in_place_separate_tag(
                        ring::aead::Nonce::assume_unique_for_key(nonce),
                        ring::aead::Aad::from(aad.as_ref()),
                        body,
                    )
                    .map_err(|_| CryptoError::TooShort)?;
                icv.copy_from_slice(tag.as_ref());
            }
            Imp::Gcm128Rc { key, salt } => seal_gcm_rc(key.as_ref(), salt, esp, iv_len, body_end, seq_hi)?,
            Imp::Gcm256Rc { key, salt } => seal_gcm_rc(key.as_ref(), salt, esp, iv_len, body_end, seq_hi)?,
            Imp::Cbc128 { key, mac, .. } => {
                let (head, body) = esp[..body_end].split_at_mut(ESP_HDR_LEN + iv_len);
                let iv: [u8; 16] = head[ESP_HDR_LEN..].try_into().expect("16-byte IV");
                cbc_encrypt(Aes128CbcEnc::inner_iv_init((**key).clone(), &iv.into()), body)?;
                write_hmac(mac, esp, body_end, seq_hi);
            }
            Imp::Cbc256 { key, mac, .. } => {
                let (head, body) = esp[..body_end].split_at_mut(ESP_HDR_LEN + iv_len);
                let iv: [u8; 16] = head[ESP_HDR_LEN..].try_into().expect("16-byte IV");
                cbc_encrypt(Aes256CbcEnc::inner_iv_init((**key).clone(), &iv.into()), body)?;
                write_hmac(mac, esp, body_end, seq_hi);
            }
            Imp::Null { mac } => write_hmac(mac, esp, body_end, seq_hi),
            Imp::Mb { keys, .. } => return self.mb_one(keys, true, esp, seq_hi),
        }
        Ok(())
    }

    /// Verify and decrypt in place. On success the plaintext lies at
    /// `esp[ESP_HDR_LEN + iv_len .. len - icv_len]`. Nothing is decrypted
    /// when the ICV does not verify.
    #[inline]
    pub fn open(&self, esp: &mut [u8], seq_hi: Option<u32>) -> Result<(), CryptoError> {
        let a = self.algorithm;
        let (iv_len, icv_len) = (a.iv_len(), a.icv_len());
        if esp.len() < ESP_HDR_LEN + iv_len + icv_len {
            return Err(CryptoError::TooShort);
        }
        let body_end = esp.len() - icv_len;
        match &self.imp {
            Imp::GcmRing { key, salt } => {
                let (head, rest) = esp.split_at_mut(ESP_HDR_LEN + iv_len);
                let nonce = gcm_nonce(salt, &head[ESP_HDR_LEN..]);
                let aad = GcmAad::new(&head[..ESP_HDR_LEN], seq_hi);
                key.open_in_place(
                    ring::aead::Nonce::assume_unique_for_key(nonce),
                    ring::aead::Aad::from(aad.as_ref()),
                    rest,
                )
                .map_err(|_| CryptoError::AuthFailed)?;
            }
            Imp::Gcm128Rc { key, salt } => open_gcm_rc(key.as_ref(), salt, esp, iv_len, body_end, seq_hi)?,
            Imp::Gcm256Rc { key, salt } => open_gcm_rc(key.as_ref(), salt, esp, iv_len, body_end, seq_hi)?,
            Imp::Cbc128 { key, mac, .. } => {
                check_hmac(mac, esp, body_end, seq_hi)?;
                let (head, body) = esp[..body_end].split_at_mut(ESP_HDR_LEN + iv_len);
                let iv: [u8; 16] = head[ESP_HDR_LEN..].try_into().expect("16-byte IV");
                let dec = Aes128CbcDec::inner_iv_init((**key).clone(), &iv.into());
                cbc_decrypt(dec, body)?;
            }
            Imp::Cbc256 { key, mac, .. } => {
                check_hmac(mac, esp, body_end, seq_hi)?;
                let (head, body) = esp[..body_end].split_at_mut(ESP_HDR_LEN + iv_len);
                let iv: [u8; 16] = head[ESP_HDR_LEN..].try_into().expect("16-byte IV");
                let dec = Aes256CbcDec::inner_iv_init((**key).clone(), &iv.into());
                cbc_decrypt(dec, body)?;
            }
            Imp::Null { mac } => check_hmac(mac, esp, body_end, seq_hi)?,
            Imp::Mb { keys, .. } => return self.mb_one(keys, false, esp, seq_hi),
        }
        Ok(())
    }
}

/// GCM nonce = salt (4) || IV (8).
#[inline]
fn gcm_nonce(salt: &[u8; 4], iv: &[u8]) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[..4].copy_from_slice(salt);
    n[4..].copy_from_slice(&iv[..8]);
    n
}

/// GCM AAD: SPI || seq (8 bytes), or SPI || seq_hi || seq_lo with ESN (RFC 4106 §5).
struct GcmAad {
    buf: [u8; 12],
    len: usize,
}

impl GcmAad {
    #[inline]
    fn new(hdr: &[u8], seq_hi: Option<u32>) -> Self {
        let mut buf = [0u8; 12];
        match seq_hi {
            None => {
                buf[..8].copy_from_slice(&hdr[..8]);
                GcmAad { buf, len: 8 }
            }
            Some(hi) => {
                buf[..4].copy_from_slice(&hdr[..4]);
                buf[4..8].copy_from_slice(&hi.to_be_bytes());
                buf[8..12].copy_from_slice(&hdr[4..8]);
                GcmAad { buf, len: 12 }
            }
        }
    }
}

impl AsRef<[u8]> for GcmAad {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

fn seal_gcm_rc<A: AeadInPlace>(
    key: &A,
    salt: &[u8; 4],
    esp: &mut [u8],
    iv_len: usize,
    body_end: usize,
    seq_hi: Option<u32>,
) -> Result<(), CryptoError> {
    let (head, rest) = esp.split_at_mut(ESP_HDR_LEN + iv_len);
    let (body, icv) = rest.split_at_mut(body_end - ESP_HDR_LEN - iv_len);
    let nonce = gcm_nonce(salt, &head[ESP_HDR_LEN..]);
    let aad = GcmAad::new(&head[..ESP_HDR_LEN], seq_hi);
    let tag = key
        .encrypt_in_place_detached(aes_gcm::Nonce::from_slice(&nonce), aad.as_ref(), body)
        .map_err(|_| CryptoError::TooShort)?;
    icv.copy_from_slice(&tag);
    Ok(())
}

fn open_gcm_rc<A: AeadInPlace>(
    key: &A,
    salt: &[u8; 4],
    esp: &mut [u8],
    iv_len: usize,
    body_end: usize,
    seq_hi: Option<u32>,
) -> Result<(), CryptoError> {
    let (head, rest) = esp.split_at_mut(ESP_HDR_LEN + iv_len);
    let (body, icv) = rest.split_at_mut(body_end - ESP_HDR_LEN - iv_len);
    let nonce = gcm_nonce(salt, &head[ESP_HDR_LEN..]);
    let aad = GcmAad::new(&head[..ESP_HDR_LEN], seq_hi);
    key.decrypt_in_place_detached(aes_gcm::Nonce::from_slice(&nonce), aad.as_ref(), body, aes_gcm::Tag::from_slice(icv))
        .map_err(|_| CryptoError::AuthFailed)
}

fn cbc_encrypt<E: BlockEncryptMut<BlockSize = aes::cipher::consts::U16>>(
    mut enc: E,
    body: &mut [u8],
) -> Result<(), CryptoError> {
    if !body.len().is_multiple_of(16) {
        return Err(CryptoError::BadBlockLength);
    }
    for block in body.chunks_exact_mut(16) {
        enc.encrypt_block_mut(aes::Block::from_mut_slice(block));
    }
    Ok(())
}

fn cbc_decrypt<D: BlockDecryptMut<BlockSize = aes::cipher::consts::U16>>(
    mut dec: D,
    body: &mut [u8],
) -> Result<(), CryptoError> {
    if !body.len().is_multiple_of(16) || body.is_empty() {
        return Err(CryptoError::BadBlockLength);
    }
    for block in body.chunks_exact_mut(16) {
        dec.decrypt_block_mut(aes::Block::from_mut_slice(block));
    }
    Ok(())
}

/// HMAC-SHA1 over ESP header || IV || ciphertext (|| seq_hi with ESN, RFC 4303 §3.3.2.1),
/// truncated to 96 bits.
#[inline]
fn icv96(mac: &HmacSha1, covered: &[u8], seq_hi: Option<u32>) -> [u8; 12] {
    let mut m = mac.clone();
    m.update(covered);
    if let Some(hi) = seq_hi {
        m.update(&hi.to_be_bytes());
    }
    let full = m.finalize().into_bytes();
    let mut out = [0u8; 12];
    out.copy_from_slice(&full[..12]);
    out
}

#[inline]
fn write_hmac(mac: &HmacSha1, esp: &mut [u8], body_end: usize, seq_hi: Option<u32>) {
    let icv = icv96(mac, &esp[..body_end], seq_hi);
    esp[body_end..body_end + 12].copy_from_slice(&icv);
}

#[inline]
fn check_hmac(mac: &HmacSha1, esp: &[u8], body_end: usize, seq_hi: Option<u32>) -> Result<(), CryptoError> {
    let mut icv = icv96(mac, &esp[..body_end], seq_hi);
    let ok: bool = icv.ct_eq(&esp[body_end..body_end + 12]).into();
    icv.zeroize();
    if ok {
        Ok(())
    } else {
        Err(CryptoError::AuthFailed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s.replace([' ', '\n'], "")).unwrap()
    }

    /// RFC 3602 §4 AES-CBC cases 1-4 (raw CBC, through our encrypt/decrypt helpers).
    #[test]
    fn rfc3602_aes_cbc_vectors() {
        let cases = [
            ("06a9214036b8a15b512e03d534120006", "3dafba429d9eb430b422da802c9fac41", hex::encode(b"Single block msg"), "e353779c1079aeb82708942dbe77181a"),
            (
                "c286696d887c9aa0611bbb3e2025a45a",
                "562e17996d093d28ddb3ba695a2e6f58",
                "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f".to_string(),
                "d296cd94c2cccf8a3a863028b5e1dc0a7586602d253cfff91b8266bea6d61ab1",
            ),
            (
                "6c3ea0477630ce21a2ce334aa746c2cd",
                "c782dc4c098c66cbd9cd27d825682c81",
                hex::encode(b"This is a 48-byte message (exactly 3 AES blocks)"),
                "d0a02b3836451753d493665d33f0e8862dea54cdb293abc7506939276772f8d5021c19216bad525c8579695d83ba2684",
            ),
            (
                "56e47a38c5598974bc46903dba290349",
                "8ce82eefbea0da3c44699ed7db51b7d9",
                "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebfc0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedf".to_string(),
                "c30e32ffedc0774e6aff6af0869f71aa0f3af07a9a31a9c684db207eb0ef8e4e35907aa632c3ffdf868bb7b29d3d46ad83ce9f9a102ee99d49a53e87f4c3da55",
            ),
        ];
        for (key, iv, pt, ct) in cases {
            let (key, iv, pt, ct) = (h(key), h(iv), h(&pt), h(ct));
            let k = aes::Aes128::new_from_slice(&key).unwrap();
            let mut buf = pt.clone();
            cbc_encrypt(Aes128CbcEnc::inner_iv_init(k.clone(), iv.as_slice().into()), &mut buf).unwrap();
            assert_eq!(buf, ct);
            cbc_decrypt(Aes128CbcDec::inner_iv_init(k.clone(), iv.as_slice().into()), &mut buf).unwrap();
            assert_eq!(buf, pt);
        }
    }

    /// RFC 2202 §3 HMAC-SHA1 test cases 1-7 (full 160-bit digests and the 96-bit truncation).
    #[test]
    fn rfc2202_hmac_sha1_vectors() {
        let cases: [(Vec<u8>, Vec<u8>, &str); 7] = [
            (vec![0x0b; 20], b"Hi There".to_vec(), "b617318655057264e28bc0b6fb378c8ef146be00"),
            (b"Jefe".to_vec(), b"what do ya want for nothing?".to_vec(), "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"),
            (vec![0xaa; 20], vec![0xdd; 50], "125d7342b9ac11cd91a39af48aa17b4f63f175d3"),
            ((1..=25).collect(), vec![0xcd; 50], "4c9007f4026250c6bc8414f9bf50c86c2d7235da"),
            (vec![0x0c; 20], b"Test With Truncation".to_vec(), "4c1a03424b55e07fe7f27be1d58bb9324a9a5a04"),
            (
                vec![0xaa; 80],
                b"Test Using Larger Than Block-Size Key - Hash Key First".to_vec(),
                "aa4ae5e15272d00e95705637ce8a3b55ed402112",
            ),
            (
                vec![0xaa; 80],
                b"Test Using Larger Than Block-Size Key and Larger Than One Block-Size Data".to_vec(),
                "e8e99d0f45237d786d6bbaa7965c7808bbff1a91",
            ),
        ];
        for (key, data, want) in cases {
            let mac = <HmacSha1 as Mac>::new_from_slice(&key).unwrap();
            let mut m = mac.clone();
            m.update(&data);
            assert_eq!(hex::encode(m.finalize().into_bytes()), want);
            assert_eq!(hex::encode(icv96(&mac, &data, None)), want[..24]);
        }
    }

    #[test]
    fn key_lengths_are_checked_and_keys_never_printed() {
        let e = Transform::new(Algorithm::AesGcm128, Backend::Auto, &[0; 16], &[], [0; 16]).unwrap_err();
        assert_eq!(e.to_string(), "aes128-gcm16 needs a 20-byte encryption key, got 16");
        let e = Transform::new(Algorithm::AesCbc128HmacSha1, Backend::Auto, &[0; 16], &[0; 16], [0; 16]).unwrap_err();
        assert!(e.to_string().contains("20-byte authentication key"));
        let e = Transform::new(Algorithm::AesCbc128HmacSha1, Backend::Ring, &[0; 16], &[0; 20], [0; 16]).unwrap_err();
        assert!(matches!(e, CryptoError::Unsupported { .. }));
        let t = Transform::new(Algorithm::AesGcm256, Backend::Ring, &[0x42; 36], &[], [0; 16]).unwrap();
        assert_eq!(t.backend(), Backend::Ring);
        assert_eq!(format!("{t:?}"), "Transform(aes256-gcm16, ring, keys redacted)");
        // Auto picks intel-ipsec-mb where it runs (every x86-64 CPU with AES-NI).
        let t = Transform::new(Algorithm::AesGcm256, Backend::Auto, &[0x42; 36], &[], [0; 16]).unwrap();
        let want = if ipsec_mb::arch().is_some() { Backend::IpsecMb } else { Backend::Ring };
        assert_eq!(t.backend(), want);
        let e = Transform::new(Algorithm::NullHmacSha1, Backend::IpsecMb, &[], &[0; 20], [0; 16]).unwrap_err();
        assert!(matches!(e, CryptoError::Unsupported { backend: "ipsec-mb", .. }));
        for a in Algorithm::ALL {
            assert_eq!(Algorithm::from_name(a.name()), Some(a));
        }
    }

    #[test]
    fn cbc_ivs_are_unique_and_not_the_sequence_number() {
        let t = Transform::new(Algorithm::AesCbc128HmacSha1, Backend::Auto, &[1; 16], &[2; 20], [3; 16]).unwrap();
        let mut seen = std::collections::HashSet::new();
        for seq in 1..1000u64 {
            let mut iv = [0u8; 16];
            t.make_iv(seq, &mut iv);
            assert!(seen.insert(iv));
            assert_ne!(&iv[..8], &seq.to_be_bytes());
        }
        let g = Transform::new(Algorithm::AesGcm128, Backend::Auto, &[1; 20], &[], [0; 16]).unwrap();
        let mut iv = [0u8; 8];
        g.make_iv(0x0102_0304_0506_0708, &mut iv);
        assert_eq!(iv, [1, 2, 3, 4, 5, 6, 7, 8]);
    }
}
