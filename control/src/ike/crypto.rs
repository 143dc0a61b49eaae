//! IKEv2 key material and the Encrypted payload, on `ring` (no hand-rolled
//! primitives):
//! - the PRF and `prf+` (RFC 7296 §2.13), HMAC-SHA-256 (PRF id 5);
//! - the IKE SA's keys (§2.14): `SKEYSEED = prf(Ni | Nr, g^ir)`, then
//!   `SK_d | SK_ai | SK_ar | SK_ei | SK_er | SK_pi | SK_pr = prf+(SKEYSEED,
//!   Ni | Nr | SPIi | SPIr)`; a child SA's `KEYMAT = prf+(SK_d, [g^ir] | Ni |
//!   Nr)` (§2.17), initiator-to-responder keys first;
//! - the Diffie-Hellman exchange: X25519 (group 31, RFC 8031), ECP-256/384
//!   (groups 19/20, RFC 5903), MODP-2048 (group 14, RFC 3526);
//! - the Encrypted payload with AES-GCM (RFC 5282): key || 4-byte salt from
//!   the key material, an 8-byte explicit IV, the 16-byte ICV, the IKE
//!   header up to and including the SK payload's generic header as AAD.
//!
//! Keys live in `Zeroizing` buffers and are never printed.

use crypto_bigint::{Encoding, U2048, U256};
use ring::{aead, agreement, hmac, rand};
use thiserror::Error;
use zeroize::Zeroizing;

use super::message::{self, kind, Header, Message, Payload, HEADER_LEN, PAYLOAD_HEADER_LEN};

/// PRF_HMAC_SHA2_256 (RFC 4868).
pub const PRF_HMAC_SHA2_256: u16 = 5;
/// ENCR_AES_GCM_16 (RFC 5282).
pub const ENCR_AES_GCM_16: u16 = 20;
/// Curve25519 (RFC 8031).
pub const GROUP_X25519: u16 = 31;
/// The explicit IV and ICV of AES-GCM in IKE.
pub const GCM_IV_LEN: usize = 8;
pub const GCM_ICV_LEN: usize = 16;

/// What can go wrong with the crypto.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum IkeCryptoError {
    #[error("the Encrypted payload failed its integrity check")]
    Integrity,
    #[error("the Encrypted payload is malformed (too short, bad pad length)")]
    Malformed,
    #[error("the message has no Encrypted payload")]
    NotEncrypted,
    #[error("the peer's key exchange value is not a valid public value of the group")]
    BadKe,
    #[error("Diffie-Hellman group {0} is not one we run")]
    Group(u16),
    #[error("unsupported key length {0}")]
    KeyLength(usize),
    #[error("the system random generator failed")]
    Random,
    #[error("{0}")]
    Decode(#[from] message::IkeError),
}

/// The PRFs of an IKE SA (RFC 4868): HMAC-SHA-256, -384, -512.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prf {
    HmacSha256,
    HmacSha384,
    HmacSha512,
}

/// PRF_HMAC_SHA2_384 and PRF_HMAC_SHA2_512 (RFC 4868).
pub const PRF_HMAC_SHA2_384: u16 = 6;
pub const PRF_HMAC_SHA2_512: u16 = 7;

impl Prf {
    pub fn from_id(id: u16) -> Option<Self> {
        match id {
            PRF_HMAC_SHA2_256 => Some(Prf::HmacSha256),
            PRF_HMAC_SHA2_384 => Some(Prf::HmacSha384),
            PRF_HMAC_SHA2_512 => Some(Prf::HmacSha512),
            _ => None,
        }
    }

    pub fn id(self) -> u16 {
        match self {
            Prf::HmacSha256 => PRF_HMAC_SHA2_256,
            Prf::HmacSha384 => PRF_HMAC_SHA2_384,
            Prf::HmacSha512 => PRF_HMAC_SHA2_512,
        }
    }

    /// Its output (and SK_d / SK_p) length.
    pub fn output_len(self) -> usize {
        match self {
            Prf::HmacSha256 => 32,
            Prf::HmacSha384 => 48,
            Prf::HmacSha512 => 64,
        }
    }

    fn alg(self) -> hmac::Algorithm {
        match self {
            Prf::HmacSha256 => hmac::HMAC_SHA256,
            Prf::HmacSha384 => hmac::HMAC_SHA384,
            Prf::HmacSha512 => hmac::HMAC_SHA512,
        }
    }
}

/// `prf(key, data)`.
pub fn prf(alg: Prf, key: &[u8], data: &[u8]) -> Zeroizing<Vec<u8>> {
    let k = hmac::Key::new(alg.alg(), key);
    Zeroizing::new(hmac::sign(&k, data).as_ref().to_vec())
}

/// `prf+(key, seed)` to `len` bytes: T1 = prf(K, S | 0x01), Tn = prf(K, Tn-1 | S | n).
pub fn prf_plus(alg: Prf, key: &[u8], seed: &[u8], len: usize) -> Zeroizing<Vec<u8>> {
    let k = hmac::Key::new(alg.alg(), key);
    let mut out = Zeroizing::new(Vec::with_capacity(len + 32));
    let mut t: Vec<u8> = Vec::new();
    let mut n: u8 = 1;
    while out.len() < len {
        let mut ctx = hmac::Context::with_key(&k);
        ctx.update(&t);
        ctx.update(seed);
        ctx.update(&[n]);
        t = ctx.sign().as_ref().to_vec();
        out.extend_from_slice(&t);
        n = n.wrapping_add(1);
    }
    out.truncate(len);
    out
}

/// An IKE SA's keys (§2.14). For AEAD the integrity keys are empty and the
/// encryption keys carry their salt at the end (RFC 5282 §7).
pub struct IkeKeys {
    /// The PRF they were made with (and that SK_d and SK_p key).
    pub prf: Prf,
    pub sk_d: Zeroizing<Vec<u8>>,
    pub sk_ai: Zeroizing<Vec<u8>>,
    pub sk_ar: Zeroizing<Vec<u8>>,
    pub sk_ei: Zeroizing<Vec<u8>>,
    pub sk_er: Zeroizing<Vec<u8>>,
    pub sk_pi: Zeroizing<Vec<u8>>,
    pub sk_pr: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for IkeKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IkeKeys(<redacted>)")
    }
}

impl IkeKeys {
    /// Derive the keys: `encr_len` bytes per encryption key (with salt),
    /// `integ_len` per integrity key, the PRF's output size for SK_d/SK_p.
    #[allow(clippy::too_many_arguments)]
    pub fn derive(
        prf_alg: Prf,
        ni: &[u8],
        nr: &[u8],
        g_ir: &[u8],
        spi_i: u64,
        spi_r: u64,
        encr_len: usize,
        integ_len: usize,
    ) -> Self {
        let skeyseed = prf(prf_alg, &[ni, nr].concat(), g_ir);
        Self::expand(prf_alg, &skeyseed, ni, nr, spi_i, spi_r, encr_len, integ_len)
    }

    /// The keys of an IKE SA that rekeys `old`'s (§2.18): SKEYSEED =
    /// prf(SK_d (old), g^ir (new) | Ni | Nr) with this exchange's nonces
    /// and the old SA's PRF (as strongSwan does), then the expansion with
    /// the new SA's PRF and SPIs.
    #[allow(clippy::too_many_arguments)]
    pub fn derive_rekey(
        prf_alg: Prf,
        old: &IkeKeys,
        g_ir: &[u8],
        ni: &[u8],
        nr: &[u8],
        spi_i: u64,
        spi_r: u64,
        encr_len: usize,
        integ_len: usize,
    ) -> Self {
        let skeyseed = prf(old.prf, &old.sk_d, &[g_ir, ni, nr].concat());
        Self::expand(prf_alg, &skeyseed, ni, nr, spi_i, spi_r, encr_len, integ_len)
    }

    /// {SK_d | SK_ai | SK_ar | SK_ei | SK_er | SK_pi | SK_pr} = prf+(SKEYSEED, Ni | Nr | SPIi | SPIr).
    #[allow(clippy::too_many_arguments)]
    fn expand(
        prf_alg: Prf,
        skeyseed: &[u8],
        ni: &[u8],
        nr: &[u8],
        spi_i: u64,
        spi_r: u64,
        encr_len: usize,
        integ_len: usize,
    ) -> Self {
        let mut seed = [ni, nr].concat();
        seed.extend_from_slice(&spi_i.to_be_bytes());
        seed.extend_from_slice(&spi_r.to_be_bytes());
        let prf_len = prf_alg.output_len();
        let lens = [prf_len, integ_len, integ_len, encr_len, encr_len, prf_len, prf_len];
        let all = prf_plus(prf_alg, skeyseed, &seed, lens.iter().sum());
        let mut at = 0;
        let mut next = |n: usize| {
            let k = Zeroizing::new(all[at..at + n].to_vec());
            at += n;
            k
        };
        IkeKeys {
            prf: prf_alg,
            sk_d: next(lens[0]),
            sk_ai: next(lens[1]),
            sk_ar: next(lens[2]),
            sk_ei: next(lens[3]),
            sk_er: next(lens[4]),
            sk_pi: next(lens[5]),
            sk_pr: next(lens[6]),
        }
    }
}

impl IkeKeys {
    /// A child SA's key material (§2.17): `len` bytes, the initiator-to-
    /// responder keys first; `g_ir` is the new shared secret of a
    /// CREATE_CHILD_SA with PFS.
    pub fn child_keymat(&self, g_ir: Option<&[u8]>, ni: &[u8], nr: &[u8], len: usize) -> Zeroizing<Vec<u8>> {
        child_keymat(self.prf, &self.sk_d, g_ir, ni, nr, len)
    }
}

/// KEYMAT = prf+(SK_d, [g^ir] | Ni | Nr) (§2.17).
pub fn child_keymat(
    alg: Prf,
    sk_d: &[u8],
    g_ir: Option<&[u8]>,
    ni: &[u8],
    nr: &[u8],
    len: usize,
) -> Zeroizing<Vec<u8>> {
    let seed = [g_ir.unwrap_or_default(), ni, nr].concat();
    prf_plus(alg, sk_d, &seed, len)
}

/// Diffie-Hellman groups (RFC 7296 §3.3.2, IANA "Transform Type 4").
pub const GROUP_MODP2048: u16 = 14;
pub const GROUP_ECP256: u16 = 19;
pub const GROUP_ECP384: u16 = 20;

/// The groups we run, in our order of preference, with their names in
/// the configuration (strongSwan's).
pub const GROUPS: [(&str, u16); 4] =
    [("x25519", GROUP_X25519), ("ecp256", GROUP_ECP256), ("ecp384", GROUP_ECP384), ("modp2048", GROUP_MODP2048)];

/// The 2048-bit MODP group's prime (RFC 3526 §3); the generator is 2.
const MODP2048_P: U2048 = U2048::from_be_hex(concat!(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A08798E3404DD",
    "EF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED",
    "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF0598DA48361C55D39A69163FA8FD24CF5F",
    "83655D23DCA3AD961C62F356208552BB9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B",
    "E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF6955817183995497CEA956AE515D2261898FA0510",
    "15728E5A8AACAA68FFFFFFFFFFFFFFFF"
));

/// Our half of a Diffie-Hellman exchange in one group (one use: the
/// private key is consumed by [`Dh::agree`]). X25519 and the NIST curves
/// on ring; MODP-2048 as a constant-time modular exponentiation on
/// crypto-bigint with a 256-bit private exponent (twice the group's
/// ~112-bit strength, RFC 3526 §8).
pub struct Dh {
    group: u16,
    private: DhPrivate,
    public: Vec<u8>,
}

enum DhPrivate {
    Ring(agreement::EphemeralPrivateKey),
    Modp(Zeroizing<[u8; 32]>),
}

/// The shared secret length of a group, and the length of its KE data.
fn ke_len(group: u16) -> Option<usize> {
    match group {
        GROUP_X25519 => Some(32),
        GROUP_ECP256 => Some(64),
        GROUP_ECP384 => Some(96),
        GROUP_MODP2048 => Some(256),
        _ => None,
    }
}

fn ring_alg(group: u16) -> Option<&'static agreement::Algorithm> {
    match group {
        GROUP_X25519 => Some(&agreement::X25519),
        GROUP_ECP256 => Some(&agreement::ECDH_P256),
        GROUP_ECP384 => Some(&agreement::ECDH_P384),
        _ => None,
    }
}

impl Dh {
    /// Do we run this group?
    pub fn supports(group: u16) -> bool {
        ke_len(group).is_some()
    }

    pub fn generate(group: u16) -> Result<Self, IkeCryptoError> {
        let rng = rand::SystemRandom::new();
        if let Some(alg) = ring_alg(group) {
            let private = agreement::EphemeralPrivateKey::generate(alg, &rng).map_err(|_| IkeCryptoError::Random)?;
            let point = private.compute_public_key().map_err(|_| IkeCryptoError::Random)?;
            // RFC 5903 §7: the NIST curves' KE data is x | y, without the 0x04 of SEC1.
            let public = match group {
                GROUP_X25519 => point.as_ref().to_vec(),
                _ => point.as_ref()[1..].to_vec(),
            };
            return Ok(Dh { group, private: DhPrivate::Ring(private), public });
        }
        if group != GROUP_MODP2048 {
            return Err(IkeCryptoError::Group(group));
        }
        let mut x = Zeroizing::new([0u8; 32]);
        rand::SecureRandom::fill(&rng, &mut x[..]).map_err(|_| IkeCryptoError::Random)?;
        let public = modp_pow(&U2048::from_u8(2), &x).to_vec();
        Ok(Dh { group, private: DhPrivate::Modp(x), public })
    }

    pub fn group(&self) -> u16 {
        self.group
    }

    /// The KE payload's data.
    pub fn public(&self) -> &[u8] {
        &self.public
    }

    /// g^ir from the peer's KE data (checked: the right length, a point on
    /// the curve, 1 < y < p - 1).
    pub fn agree(self, peer: &[u8]) -> Result<Zeroizing<Vec<u8>>, IkeCryptoError> {
        if Some(peer.len()) != ke_len(self.group) {
            return Err(IkeCryptoError::BadKe);
        }
        match self.private {
            DhPrivate::Ring(private) => {
                let alg = ring_alg(self.group).ok_or(IkeCryptoError::BadKe)?;
                let sec1;
                let peer = if self.group == GROUP_X25519 {
                    peer
                } else {
                    sec1 = [&[4u8][..], peer].concat();
                    &sec1
                };
                let peer = agreement::UnparsedPublicKey::new(alg, peer);
                agreement::agree_ephemeral(private, &peer, |s| Zeroizing::new(s.to_vec()))
                    .map_err(|_| IkeCryptoError::BadKe)
            }
            DhPrivate::Modp(x) => {
                let y = U2048::from_be_slice(peer);
                let p_minus_1 = MODP2048_P.wrapping_sub(&U2048::ONE);
                if y <= U2048::ONE || y >= p_minus_1 {
                    return Err(IkeCryptoError::BadKe);
                }
                Ok(Zeroizing::new(modp_pow(&y, &x).to_vec()))
            }
        }
    }
}

/// `base ^ x mod p` (MODP-2048), big-endian with leading zeros to 256
/// bytes (§2.14), in constant time.
fn modp_pow(base: &U2048, x: &[u8; 32]) -> [u8; 256] {
    use crypto_bigint::modular::runtime_mod::{DynResidue, DynResidueParams};
    let params = DynResidueParams::new(&MODP2048_P);
    let exp = U256::from_be_slice(x);
    DynResidue::new(base, params).pow_bounded_exp(&exp, 256).retrieve().to_be_bytes()
}

fn gcm_key(key_salt: &[u8]) -> Result<(aead::LessSafeKey, [u8; 4]), IkeCryptoError> {
    let (key, salt) = key_salt.split_at(key_salt.len().checked_sub(4).ok_or(IkeCryptoError::KeyLength(0))?);
    let alg = match key.len() {
        16 => &aead::AES_128_GCM,
        32 => &aead::AES_256_GCM,
        n => return Err(IkeCryptoError::KeyLength(n)),
    };
    let k = aead::UnboundKey::new(alg, key).map_err(|_| IkeCryptoError::KeyLength(key.len()))?;
    Ok((aead::LessSafeKey::new(k), salt.try_into().unwrap_or([0; 4])))
}

/// Integrity of an IKE SA with a plain cipher (RFC 7296 §3.3.2, RFC 4868).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Integ {
    /// AUTH_HMAC_SHA1_96 (2).
    HmacSha1_96,
    /// AUTH_HMAC_SHA2_256_128 (12).
    HmacSha256_128,
}

/// AUTH_HMAC_SHA1_96 and AUTH_HMAC_SHA2_256_128 (transform type 3 ids).
pub const AUTH_HMAC_SHA1_96: u16 = 2;
pub const AUTH_HMAC_SHA2_256_128: u16 = 12;
/// ENCR_AES_CBC (RFC 3602).
pub const ENCR_AES_CBC: u16 = 12;
const CBC_IV_LEN: usize = 16;

impl Integ {
    pub fn id(self) -> u16 {
        match self {
            Integ::HmacSha1_96 => AUTH_HMAC_SHA1_96,
            Integ::HmacSha256_128 => AUTH_HMAC_SHA2_256_128,
        }
    }

    pub fn from_id(id: u16) -> Option<Self> {
        match id {
            AUTH_HMAC_SHA1_96 => Some(Integ::HmacSha1_96),
            AUTH_HMAC_SHA2_256_128 => Some(Integ::HmacSha256_128),
            _ => None,
        }
    }

    /// Key and ICV length.
    pub fn key_len(self) -> usize {
        match self {
            Integ::HmacSha1_96 => 20,
            Integ::HmacSha256_128 => 32,
        }
    }

    fn icv_len(self) -> usize {
        match self {
            Integ::HmacSha1_96 => 12,
            Integ::HmacSha256_128 => 16,
        }
    }

    fn alg(self) -> hmac::Algorithm {
        match self {
            Integ::HmacSha1_96 => hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            Integ::HmacSha256_128 => hmac::HMAC_SHA256,
        }
    }
}

/// How an IKE SA's Encrypted payloads are protected: AES-GCM (RFC 5282),
/// or AES-CBC with an HMAC (RFC 7296 §3.14).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkAlg {
    AesGcm16,
    AesCbc(Integ),
}

/// One direction's keys for the Encrypted payload: the encryption key (with
/// its 4-byte salt for GCM) and, for CBC, the integrity key.
#[derive(Clone, Copy)]
pub struct SkKey<'a> {
    pub alg: SkAlg,
    pub encr: &'a [u8],
    pub integ: &'a [u8],
}

impl<'a> SkKey<'a> {
    /// AES-GCM with this key and salt.
    pub fn gcm(key_salt: &'a [u8]) -> Self {
        SkKey { alg: SkAlg::AesGcm16, encr: key_salt, integ: &[] }
    }

    fn iv_len(&self) -> usize {
        match self.alg {
            SkAlg::AesGcm16 => GCM_IV_LEN,
            SkAlg::AesCbc(_) => CBC_IV_LEN,
        }
    }

    fn icv_len(&self) -> usize {
        match self.alg {
            SkAlg::AesGcm16 => GCM_ICV_LEN,
            SkAlg::AesCbc(i) => i.icv_len(),
        }
    }

    /// Bytes of a sealed payload besides the inner chain: IV, the most
    /// padding, the pad length, ICV.
    fn overhead(&self) -> usize {
        match self.alg {
            SkAlg::AesGcm16 => GCM_IV_LEN + 1 + GCM_ICV_LEN,
            SkAlg::AesCbc(i) => CBC_IV_LEN + 16 + i.icv_len(),
        }
    }
}

/// Seal `plain` (the inner chain) into `shell`'s last payload (SK or SKF,
/// its body still empty), the body becoming IV || ciphertext || ICV.
/// AES-GCM: no padding, `iv` the explicit IV (a counter, never repeated
/// under a key), the header and the payload headers up to the body the AAD
/// (RFC 5282 §5.1, RFC 7383 §2.5). AES-CBC: a random IV, padded to the
/// block, the ICV an HMAC over the whole message up to it (§3.14).
fn seal(
    header: Header,
    shell: Payload,
    mut plain: Vec<u8>,
    key: SkKey<'_>,
    iv: [u8; 8],
) -> Result<Vec<u8>, IkeCryptoError> {
    let pad = match key.alg {
        SkAlg::AesGcm16 => 0,
        SkAlg::AesCbc(_) => 15 - plain.len() % 16,
    };
    plain.resize(plain.len() + pad, 0);
    plain.push(pad as u8);
    let body_len = key.iv_len() + plain.len() + key.icv_len();
    let shell = match shell {
        Payload::Encrypted { first, .. } => Payload::Encrypted { first, body: vec![0; body_len] },
        Payload::EncryptedFragment { first, number, total, .. } => {
            Payload::EncryptedFragment { first, number, total, body: vec![0; body_len] }
        }
        _ => return Err(IkeCryptoError::NotEncrypted),
    };
    let mut out = Message { header, payloads: vec![shell] }.encode();
    let aad_end = out.len() - body_len;
    out.truncate(aad_end);
    match key.alg {
        SkAlg::AesGcm16 => {
            let (k, salt) = gcm_key(key.encr)?;
            let mut nonce = [0u8; 12];
            nonce[..4].copy_from_slice(&salt);
            nonce[4..].copy_from_slice(&iv);
            let tag = k
                .seal_in_place_separate_tag(
                    aead::Nonce::assume_unique_for_key(nonce),
                    aead::Aad::from(&out[..aad_end]),
                    &mut plain,
                )
                .map_err(|_| IkeCryptoError::Malformed)?;
            out.extend_from_slice(&iv);
            out.extend_from_slice(&plain);
            out.extend_from_slice(tag.as_ref());
        }
        SkAlg::AesCbc(integ) => {
            let mut civ = [0u8; CBC_IV_LEN];
            rand::SecureRandom::fill(&rand::SystemRandom::new(), &mut civ).map_err(|_| IkeCryptoError::Random)?;
            cbc_encrypt(key.encr, &civ, &mut plain)?;
            out.extend_from_slice(&civ);
            out.extend_from_slice(&plain);
            let tag = hmac::sign(&hmac::Key::new(integ.alg(), key.integ), &out);
            out.extend_from_slice(&tag.as_ref()[..integ.icv_len()]);
        }
    }
    Ok(out)
}

fn cbc_encrypt(key: &[u8], iv: &[u8; CBC_IV_LEN], data: &mut [u8]) -> Result<(), IkeCryptoError> {
    use cbc::cipher::{BlockEncryptMut, KeyIvInit};
    let n = data.len();
    let r = match key.len() {
        16 => cbc::Encryptor::<aes::Aes128>::new(key.into(), iv.into())
            .encrypt_padded_mut::<cbc::cipher::block_padding::NoPadding>(data, n)
            .map(drop),
        32 => cbc::Encryptor::<aes::Aes256>::new(key.into(), iv.into())
            .encrypt_padded_mut::<cbc::cipher::block_padding::NoPadding>(data, n)
            .map(drop),
        n => return Err(IkeCryptoError::KeyLength(n)),
    };
    r.map_err(|_| IkeCryptoError::Malformed)
}

fn cbc_decrypt(key: &[u8], iv: &[u8], data: &mut [u8]) -> Result<(), IkeCryptoError> {
    use cbc::cipher::{BlockDecryptMut, KeyIvInit};
    let iv: &[u8; CBC_IV_LEN] = iv.try_into().map_err(|_| IkeCryptoError::Malformed)?;
    let r = match key.len() {
        16 => cbc::Decryptor::<aes::Aes128>::new(key.into(), iv.into())
            .decrypt_padded_mut::<cbc::cipher::block_padding::NoPadding>(data)
            .map(drop),
        32 => cbc::Decryptor::<aes::Aes256>::new(key.into(), iv.into())
            .decrypt_padded_mut::<cbc::cipher::block_padding::NoPadding>(data)
            .map(drop),
        n => return Err(IkeCryptoError::KeyLength(n)),
    };
    r.map_err(|_| IkeCryptoError::Malformed)
}

/// Encrypt `inner` payloads into a message with `header`: one SK payload
/// under `key` (`iv`: the explicit IV of AES-GCM, a counter).
pub fn encrypt_message(
    header: Header,
    inner: &[Payload],
    key: SkKey<'_>,
    iv: [u8; 8],
) -> Result<Vec<u8>, IkeCryptoError> {
    let mut plain = Vec::new();
    message::encode_chain(inner, &mut plain);
    let first = inner.first().map_or(kind::NONE, Payload::kind);
    seal(header, Payload::Encrypted { first, body: vec![] }, plain, key, iv)
}

/// Open the body (IV || ciphertext || ICV) that ends `bytes`, everything
/// before it being the AAD (GCM) or covered by the ICV with the IV and
/// ciphertext (CBC): the plaintext without its padding.
fn open_body(bytes: &[u8], body: &[u8], key: SkKey<'_>) -> Result<Vec<u8>, IkeCryptoError> {
    let (iv_len, icv_len) = (key.iv_len(), key.icv_len());
    if body.len() < iv_len + 1 + icv_len {
        return Err(IkeCryptoError::Malformed);
    }
    let mut ct = body[iv_len..].to_vec();
    let plain_len = match key.alg {
        SkAlg::AesGcm16 => {
            let (k, salt) = gcm_key(key.encr)?;
            let aad_end = bytes.len() - body.len();
            let mut nonce = [0u8; 12];
            nonce[..4].copy_from_slice(&salt);
            nonce[4..].copy_from_slice(&body[..GCM_IV_LEN]);
            let plain = k
                .open_in_place(aead::Nonce::assume_unique_for_key(nonce), aead::Aad::from(&bytes[..aad_end]), &mut ct)
                .map_err(|_| IkeCryptoError::Integrity)?;
            plain.len()
        }
        SkAlg::AesCbc(integ) => {
            use subtle::ConstantTimeEq;
            let (signed, icv) = bytes.split_at(bytes.len() - icv_len);
            let want = hmac::sign(&hmac::Key::new(integ.alg(), key.integ), signed);
            if !bool::from(want.as_ref()[..icv_len].ct_eq(icv)) {
                return Err(IkeCryptoError::Integrity);
            }
            ct.truncate(ct.len() - icv_len);
            if ct.is_empty() || !ct.len().is_multiple_of(16) {
                return Err(IkeCryptoError::Malformed);
            }
            cbc_decrypt(key.encr, &body[..iv_len], &mut ct)?;
            ct.len()
        }
    };
    ct.truncate(plain_len);
    let pad = usize::from(*ct.last().ok_or(IkeCryptoError::Malformed)?);
    let chain_len = ct.len().checked_sub(1 + pad).ok_or(IkeCryptoError::Malformed)?;
    ct.truncate(chain_len);
    Ok(ct)
}

/// Decrypt a message whose last payload is SK: its header, the payloads
/// before SK (in clear) and the inner payloads.
pub fn decrypt_message(bytes: &[u8], key: SkKey<'_>) -> Result<(Message, Vec<Payload>), IkeCryptoError> {
    let m = Message::decode(bytes)?;
    let Some(Payload::Encrypted { first, body }) = m.payloads.last() else {
        return Err(IkeCryptoError::NotEncrypted);
    };
    let plain = open_body(bytes, body, key)?;
    let inner = message::decode_chain(*first, &plain)?;
    Ok((m, inner))
}

/// A protected message as it reaches an exchange: one datagram with an SK
/// payload, a fragmented one put back together (RFC 7383), or one the
/// daemon opened already (to see which child it is about).
#[derive(Clone, Copy)]
pub enum Inbound<'a> {
    Datagram(&'a [u8]),
    Reassembled(&'a Reassembled),
    Opened(&'a Opened),
}

/// A message decrypted and checked: its header and inner payloads.
#[derive(Debug)]
pub struct Opened {
    pub header: Header,
    pub inner: Vec<Payload>,
}

impl<'a> From<&'a [u8]> for Inbound<'a> {
    fn from(b: &'a [u8]) -> Self {
        Inbound::Datagram(b)
    }
}

impl<'a> From<&'a Vec<u8>> for Inbound<'a> {
    fn from(b: &'a Vec<u8>) -> Self {
        Inbound::Datagram(b)
    }
}

impl<'a> From<&'a Reassembled> for Inbound<'a> {
    fn from(r: &'a Reassembled) -> Self {
        Inbound::Reassembled(r)
    }
}

impl<'a> Inbound<'a> {
    /// Its header and inner payloads, decrypted and checked under `key`
    /// (a reassembled message's fragments were checked one by one).
    pub fn open(self, key: SkKey<'_>) -> Result<(Header, Vec<Payload>), IkeCryptoError> {
        match self {
            Inbound::Datagram(b) => decrypt_message(b, key).map(|(m, inner)| (m.header, inner)),
            Inbound::Reassembled(r) => Ok((r.header, message::decode_chain(r.first, &r.plain)?)),
            Inbound::Opened(o) => Ok((o.header, o.inner.clone())),
        }
    }

    /// The datagram, when it was one.
    pub fn datagram(self) -> Option<&'a [u8]> {
        match self {
            Inbound::Datagram(b) => Some(b),
            Inbound::Reassembled(_) | Inbound::Opened(_) => None,
        }
    }
}

/// Fragments we take of one message at most, and bytes in all.
const MAX_FRAGMENTS: u16 = 64;
const MAX_REASSEMBLED: usize = 64 * 1024;

/// A fragmented message being put back together (RFC 7383 §2.6): each
/// fragment is authenticated before it is kept, so a forged one costs
/// nothing but its decryption.
#[derive(Debug)]
pub struct Reassembly {
    pub message_id: u32,
    response: bool,
    header: Header,
    first: u8,
    parts: Vec<Option<Vec<u8>>>,
    bytes: usize,
}

/// A whole message out of its fragments.
#[derive(Debug)]
pub struct Reassembled {
    pub header: Header,
    first: u8,
    plain: Vec<u8>,
}

impl Reassembly {
    /// Take one SKF message (checked under `key`) into `slot`: the
    /// whole message when it was the last piece missing. A fragment of a
    /// newer message replaces what `slot` held; one of another message, a
    /// duplicate or one past the limits is dropped.
    pub fn add(
        slot: &mut Option<Reassembly>,
        bytes: &[u8],
        key: SkKey<'_>,
    ) -> Result<Option<Reassembled>, IkeCryptoError> {
        let m = Message::decode(bytes)?;
        let Some(Payload::EncryptedFragment { first, number, total, body }) = m.payloads.last() else {
            return Err(IkeCryptoError::NotEncrypted);
        };
        let (h, number, total) = (m.header, *number, *total);
        if number == 0 || number > total || total > MAX_FRAGMENTS {
            return Err(IkeCryptoError::Malformed);
        }
        let plain = open_body(bytes, body, key)?;
        let same = |r: &Reassembly| r.message_id == h.message_id && r.response == h.is_response();
        match slot {
            // §2.6.2: a retransmission with another fragmentation starts over.
            Some(r) if same(r) && usize::from(total) == r.parts.len() => {}
            _ => {
                *slot = Some(Reassembly {
                    message_id: h.message_id,
                    response: h.is_response(),
                    header: h,
                    first: kind::NONE,
                    parts: vec![None; usize::from(total)],
                    bytes: 0,
                })
            }
        }
        let Some(r) = slot.as_mut() else { return Ok(None) };
        let i = usize::from(number - 1);
        if r.parts[i].is_some() || r.bytes + plain.len() > MAX_REASSEMBLED {
            return Ok(None);
        }
        if number == 1 {
            // Only the first fragment names the first inner payload (§2.5).
            r.first = *first;
        }
        r.bytes += plain.len();
        r.parts[i] = Some(plain);
        if r.parts.iter().any(Option::is_none) {
            return Ok(None);
        }
        let Some(r) = slot.take() else { return Ok(None) };
        let plain = r.parts.into_iter().flatten().flatten().collect();
        Ok(Some(Reassembled { header: r.header, first: r.first, plain }))
    }
}

/// Our SK message `bytes` as SKF fragments of at most `max` bytes each
/// (RFC 7383 §2.5), each sealed on its own under `key` with an IV
/// from `iv`; `bytes` itself when it fits.
pub fn fragment(
    bytes: &[u8],
    key: SkKey<'_>,
    max: usize,
    mut iv: impl FnMut() -> [u8; 8],
) -> Result<Vec<Vec<u8>>, IkeCryptoError> {
    if bytes.len() <= max {
        return Ok(vec![bytes.to_vec()]);
    }
    let m = Message::decode(bytes)?;
    let Some(Payload::Encrypted { first, body }) = m.payloads.last() else {
        return Err(IkeCryptoError::NotEncrypted);
    };
    let plain = open_body(bytes, body, key)?;
    // Header, SKF header with number and total, IV, padding and its length, ICV.
    let overhead = HEADER_LEN + PAYLOAD_HEADER_LEN + 4 + key.overhead();
    let room = max.checked_sub(overhead).filter(|r| *r > 0).ok_or(IkeCryptoError::Malformed)?;
    let total = u16::try_from(plain.len().div_ceil(room)).map_err(|_| IkeCryptoError::Malformed)?;
    plain
        .chunks(room)
        .zip(1..)
        .map(|(chunk, number)| {
            let first = if number == 1 { *first } else { kind::NONE };
            let shell = Payload::EncryptedFragment { first, number, total, body: vec![] };
            seal(m.header, shell, chunk.to_vec(), key, iv())
        })
        .collect()
}
