//! The IKE_SA_INIT exchange (RFC 7296 §1.2), both roles, as pure functions
//! of messages: proposal choice, X25519 key exchange, nonces, NAT detection
//! (§2.23), and the refusals the RFC prescribes (NO_PROPOSAL_CHOSEN,
//! INVALID_KE_PAYLOAD naming the group we want). Both sides end with the
//! IKE SA's keys ([`IkeKeys`]); IKE_AUTH builds on them.
//!
//! Offered and accepted: ENCR_AES_GCM_16 with a 128- or 256-bit key,
//! PRF_HMAC_SHA2_256, and the Diffie-Hellman groups Curve25519 (31),
//! ECP-256 (19), ECP-384 (20) and MODP-2048 (14); a connection narrows
//! that list (`ike = [...]`). A responder that wants another group than
//! our KE payload's answers INVALID_KE_PAYLOAD and we try again with it.

use std::net::SocketAddr;

use ring::{digest, rand::SecureRandom};
use zeroize::Zeroizing;

use super::crypto::{
    Dh, IkeCryptoError, IkeKeys, Integ, Prf, SkAlg, SkKey, ENCR_AES_CBC, ENCR_AES_GCM_16, GROUPS, GROUP_ECP256,
    GROUP_ECP384, GROUP_MODP2048, GROUP_X25519,
};
use super::message::{exchange, flags, Attribute, Header, Message, Payload, Proposal, Transform, ATTR_KEY_LENGTH};

/// Transform types (§3.3.2).
pub mod transform {
    pub const ENCR: u8 = 1;
    pub const PRF: u8 = 2;
    pub const INTEG: u8 = 3;
    pub const KE: u8 = 4;
}

/// Notify message types used here (§3.10.1).
pub mod notify {
    pub const INVALID_KE_PAYLOAD: u16 = 17;
    pub const NO_PROPOSAL_CHOSEN: u16 = 14;
    pub const INVALID_SYNTAX: u16 = 7;
    pub const NO_ADDITIONAL_SAS: u16 = 35;
    pub const NAT_DETECTION_SOURCE_IP: u16 = 16388;
    pub const NAT_DETECTION_DESTINATION_IP: u16 = 16389;
    pub const COOKIE: u16 = 16390;
    /// RFC 7383 §2.3: we reassemble and send IKE fragments.
    pub const IKEV2_FRAGMENTATION_SUPPORTED: u16 = 16430;
    pub use super::super::cert::SIGNATURE_HASH_ALGORITHMS;
}

/// Stateless cookies (RFC 7296 §2.6): under load the responder answers an
/// IKE_SA_INIT with only a COOKIE, keeping no state and doing no
/// Diffie-Hellman; a real initiator repeats its request with the cookie
/// first, which proves it receives at its address. Cookie =
/// VersionIDofSecret (4 bytes) | HMAC-SHA-256(secret, Ni | IPi | SPIi).
/// The secret changes every so often ([`CookieJar::rotate`]); cookies made
/// with the previous one are still accepted.
pub struct CookieJar {
    current: (u32, ring::hmac::Key),
    previous: Option<(u32, ring::hmac::Key)>,
}

impl CookieJar {
    pub fn new() -> Result<Self, IkeCryptoError> {
        Ok(CookieJar { current: (1, Self::secret()?), previous: None })
    }

    fn secret() -> Result<ring::hmac::Key, IkeCryptoError> {
        Ok(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &random(32)?))
    }

    /// A new secret; the old one is still good for cookies already sent.
    pub fn rotate(&mut self) -> Result<(), IkeCryptoError> {
        let next = (self.current.0.wrapping_add(1), Self::secret()?);
        self.previous = Some(std::mem::replace(&mut self.current, next));
        Ok(())
    }

    /// What the HMAC covers: Ni | IPi | SPIi.
    fn input(ni: &[u8], ip: std::net::IpAddr, spi_i: u64) -> Vec<u8> {
        let mut m = ni.to_vec();
        match ip {
            std::net::IpAddr::V4(a) => m.extend_from_slice(&a.octets()),
            std::net::IpAddr::V6(a) => m.extend_from_slice(&a.octets()),
        }
        m.extend_from_slice(&spi_i.to_be_bytes());
        m
    }

    /// The cookie for this initiator.
    pub fn make(&self, ni: &[u8], ip: std::net::IpAddr, spi_i: u64) -> Vec<u8> {
        let mut out = self.current.0.to_be_bytes().to_vec();
        out.extend_from_slice(ring::hmac::sign(&self.current.1, &Self::input(ni, ip, spi_i)).as_ref());
        out
    }

    /// Was `cookie` made by us (now or before the last rotation) for this
    /// initiator? (Compared in constant time by ring's HMAC verify.)
    pub fn check(&self, cookie: &[u8], ni: &[u8], ip: std::net::IpAddr, spi_i: u64) -> bool {
        let Some((v, tag)) = cookie.split_first_chunk::<4>() else { return false };
        let v = u32::from_be_bytes(*v);
        [Some(&self.current), self.previous.as_ref()]
            .into_iter()
            .flatten()
            .filter(|(version, _)| *version == v)
            .any(|(_, key)| ring::hmac::verify(key, &Self::input(ni, ip, spi_i), tag).is_ok())
    }
}

/// The cookie a responder asked for, if this IKE_SA_INIT response is that
/// request (§2.6: a response holding a COOKIE notify).
pub fn cookie_asked(response: &[u8]) -> Option<Vec<u8>> {
    let m = Message::decode(response).ok()?;
    if !m.header.is_response() || m.header.exchange != exchange::IKE_SA_INIT {
        return None;
    }
    m.payloads.iter().find_map(|p| match p {
        Payload::Notify { kind: notify::COOKIE, data, .. } if (1..=64).contains(&data.len()) => Some(data.clone()),
        _ => None,
    })
}

/// The group a responder asked for, if this IKE_SA_INIT response is an
/// INVALID_KE_PAYLOAD (§1.2).
pub fn group_asked(response: &[u8]) -> Option<u16> {
    let m = Message::decode(response).ok()?;
    if !m.header.is_response() || m.header.exchange != exchange::IKE_SA_INIT {
        return None;
    }
    m.payloads.iter().find_map(|p| match p {
        Payload::Notify { kind: notify::INVALID_KE_PAYLOAD, data, .. } => {
            Some(u16::from_be_bytes(data.as_slice().try_into().ok()?))
        }
        _ => None,
    })
}

/// Our IKE_SA_INIT request again with the responder's cookie as its first
/// payload (§2.6); any cookie of an earlier try is replaced.
pub fn with_cookie(request: &[u8], cookie: &[u8]) -> Option<Vec<u8>> {
    let mut m = Message::decode(request).ok()?;
    m.payloads.retain(|p| !matches!(p, Payload::Notify { kind: notify::COOKIE, .. }));
    m.payloads.insert(0, Payload::Notify { protocol: 0, spi: vec![], kind: notify::COOKIE, data: cookie.to_vec() });
    Some(m.encode())
}

/// Nonce length we send (§2.10: at least half the PRF's key size, 16..256).
pub const NONCE_LEN: usize = 32;

/// The algorithms an IKE SA runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Suite {
    /// AES key bytes (16 or 32); GCM's salt adds 4.
    pub encr_key: usize,
    /// `None`: AES-GCM-16 (AEAD, RFC 5282); else AES-CBC with this integrity.
    pub integ: Option<Integ>,
    pub prf: Prf,
    pub group: u16,
}

impl Suite {
    /// Encryption key length (with the salt for GCM, RFC 5282 §7).
    pub fn encr_len(&self) -> usize {
        match self.integ {
            None => self.encr_key + 4,
            Some(_) => self.encr_key,
        }
    }

    /// Integrity key length (none for GCM).
    pub fn integ_len(&self) -> usize {
        self.integ.map_or(0, Integ::key_len)
    }

    pub fn sk_alg(&self) -> SkAlg {
        self.integ.map_or(SkAlg::AesGcm16, SkAlg::AesCbc)
    }

    fn encr_transform(&self) -> Transform {
        let id = if self.integ.is_some() { ENCR_AES_CBC } else { ENCR_AES_GCM_16 };
        let attributes = vec![Attribute::Tv { kind: ATTR_KEY_LENGTH, value: (self.encr_key * 8) as u16 }];
        Transform { kind: transform::ENCR, id, attributes }
    }

    /// This suite as a proposal (number 1, protocol IKE).
    pub fn proposal(&self, spi: Vec<u8>) -> Proposal {
        let mut transforms = vec![self.encr_transform()];
        if let Some(i) = self.integ {
            transforms.push(Transform { kind: transform::INTEG, id: i.id(), attributes: vec![] });
        }
        transforms.push(Transform { kind: transform::PRF, id: self.prf.id(), attributes: vec![] });
        transforms.push(Transform { kind: transform::KE, id: self.group, attributes: vec![] });
        Proposal { number: 1, protocol: 1, spi, transforms }
    }

    /// Its name, strongSwan's way: `aes128gcm16-prfsha256-x25519`,
    /// `aes256-sha256-prfsha256-ecp384`.
    pub fn name(&self) -> String {
        let group = GROUPS.iter().find(|(_, g)| *g == self.group).map_or("?", |(n, _)| n);
        let prf = match self.prf {
            Prf::HmacSha256 => "prfsha256",
            Prf::HmacSha384 => "prfsha384",
            Prf::HmacSha512 => "prfsha512",
        };
        match self.integ {
            None => format!("aes{}gcm16-{prf}-{group}", self.encr_key * 8),
            Some(i) => {
                let integ = if i == Integ::HmacSha1_96 { "sha1" } else { "sha256" };
                format!("aes{}-{integ}-{prf}-{group}", self.encr_key * 8)
            }
        }
    }

    /// Suites from a proposal written strongSwan's way: one or more
    /// encryption algorithms (`aes128gcm16`, `aes256gcm16`, or AES-CBC
    /// `aes128`, `aes256` with an integrity `sha256` or `sha1`), one or
    /// more PRFs (`prfsha256`, the default, `prfsha384`, `prfsha512`), one
    /// or more groups (`x25519`, `ecp256`, `ecp384`, `modp2048`), joined by
    /// `-`; every combination: by encryption, then PRF, then group, in the
    /// order written.
    pub fn parse(text: &str) -> Result<Vec<Suite>, String> {
        let (mut encrs, mut integs, mut prfs, mut groups) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for token in text.split('-') {
            match token {
                "aes128gcm16" | "aes128gcm" => encrs.push((16, true)),
                "aes256gcm16" | "aes256gcm" => encrs.push((32, true)),
                "aes128" => encrs.push((16, false)),
                "aes256" => encrs.push((32, false)),
                "sha256" => integs.push(Integ::HmacSha256_128),
                "sha1" => integs.push(Integ::HmacSha1_96),
                "prfsha256" => prfs.push(Prf::HmacSha256),
                "prfsha384" => prfs.push(Prf::HmacSha384),
                "prfsha512" => prfs.push(Prf::HmacSha512),
                t => match GROUPS.iter().find(|(n, _)| *n == t) {
                    Some((_, g)) => groups.push(*g),
                    None => {
                        let groups = GROUPS.map(|(n, _)| n).join(", ");
                        return Err(format!(
                            "{t:?} in {text:?}: aes128gcm16, aes256gcm16, aes128, aes256, sha256, sha1, prfsha256, prfsha384, prfsha512, or a group ({groups})"
                        ));
                    }
                },
            }
        }
        if encrs.is_empty() || groups.is_empty() {
            return Err(format!("{text:?}: an encryption algorithm and a Diffie-Hellman group at least"));
        }
        if encrs.iter().any(|(_, aead)| !aead) == integs.is_empty() {
            return Err(format!(
                "{text:?}: AES-CBC (aes128, aes256) takes an integrity algorithm (sha256, sha1), AES-GCM none"
            ));
        }
        if prfs.is_empty() {
            prfs.push(Prf::HmacSha256);
        }
        let mut out = Vec::new();
        for (encr_key, aead) in &encrs {
            let with: Vec<Option<Integ>> = if *aead { vec![None] } else { integs.iter().copied().map(Some).collect() };
            for integ in with {
                for prf in &prfs {
                    out.extend(groups.iter().map(|g| Suite { encr_key: *encr_key, integ, prf: *prf, group: *g }));
                }
            }
        }
        Ok(out)
    }
}

/// Everything we run, in our order of preference (AES-GCM before
/// AES-CBC, AES-128 before AES-256, Curve25519 first), for a connection
/// that says nothing.
pub const SUITES: [Suite; 16] = {
    const fn s(encr_key: usize, integ: Option<Integ>, group: u16) -> Suite {
        Suite { encr_key, integ, prf: Prf::HmacSha256, group }
    }
    const SHA256: Option<Integ> = Some(Integ::HmacSha256_128);
    [
        s(16, None, GROUP_X25519),
        s(32, None, GROUP_X25519),
        s(16, None, GROUP_ECP256),
        s(32, None, GROUP_ECP256),
        s(16, None, GROUP_ECP384),
        s(32, None, GROUP_ECP384),
        s(16, None, GROUP_MODP2048),
        s(32, None, GROUP_MODP2048),
        s(16, SHA256, GROUP_X25519),
        s(32, SHA256, GROUP_X25519),
        s(16, SHA256, GROUP_ECP256),
        s(32, SHA256, GROUP_ECP256),
        s(16, SHA256, GROUP_ECP384),
        s(32, SHA256, GROUP_ECP384),
        s(16, SHA256, GROUP_MODP2048),
        s(32, SHA256, GROUP_MODP2048),
    ]
};

/// Everything we run with every PRF: [`SUITES`] with PRF-HMAC-SHA256, then
/// with SHA-384 and SHA-512 (a connection's default).
pub fn all_suites() -> Vec<Suite> {
    [Prf::HmacSha256, Prf::HmacSha384, Prf::HmacSha512]
        .into_iter()
        .flat_map(|prf| SUITES.iter().map(move |s| Suite { prf, ..*s }))
        .collect()
}

/// Our offer: the suites packed into as few proposals as RFC 7296 §3.3
/// allows (one AEAD proposal and one with integrity, each listing every
/// transform once, in our order of preference; a responder picks one of
/// each type).
pub fn offer(suites: &[Suite]) -> Vec<Proposal> {
    let mut out: Vec<Proposal> = Vec::new();
    for aead in [true, false] {
        let mut p = Proposal { number: 0, protocol: 1, spi: vec![], transforms: vec![] };
        for s in suites.iter().filter(|s| s.integ.is_none() == aead) {
            for t in s.proposal(vec![]).transforms {
                if !p.transforms.contains(&t) {
                    p.transforms.push(t);
                }
            }
        }
        if !p.transforms.is_empty() {
            p.transforms.sort_by_key(|t| t.kind);
            p.number = out.len() as u8 + 1;
            out.push(p);
        }
    }
    out
}

/// The first offered IKE proposal we can run with one of `ours` (§2.7: the
/// responder picks one proposal and one transform of each type from it),
/// with the group `ke_group` (the initiator's KE payload) when that
/// proposal allows it, saving a round trip.
pub fn choose(offered: &[Proposal], ours: &[Suite], ke_group: Option<u16>) -> Option<(u8, Suite)> {
    offered.iter().filter(|p| p.protocol == 1).find_map(|p| {
        let has = |kind: u8, id: u16| p.transforms.iter().any(|t| t.kind == kind && t.id == id);
        // An AEAD goes without integrity (or with NONE), AES-CBC with ours.
        let integrity = p.transforms.iter().any(|t| t.kind == transform::INTEG && t.id != 0);
        let fits = |s: &&Suite| {
            let e = s.encr_transform();
            p.transforms.iter().any(|t| t.kind == transform::ENCR && t.id == e.id && t.key_length() == e.key_length())
                && match s.integ {
                    None => !integrity,
                    Some(i) => has(transform::INTEG, i.id()),
                }
                && has(transform::PRF, s.prf.id())
                && has(transform::KE, s.group)
        };
        let mut candidates = ours.iter().filter(fits);
        let first = candidates.clone().next()?;
        let best = candidates.find(|s| Some(s.group) == ke_group).unwrap_or(first);
        Some((p.number, *best))
    })
}

/// NAT detection hash (§2.23): SHA-1(SPIi | SPIr | IP | port).
pub fn nat_hash(spi_i: u64, spi_r: u64, addr: SocketAddr) -> Vec<u8> {
    let mut d = digest::Context::new(&digest::SHA1_FOR_LEGACY_USE_ONLY);
    d.update(&spi_i.to_be_bytes());
    d.update(&spi_r.to_be_bytes());
    match addr.ip() {
        std::net::IpAddr::V4(a) => d.update(&a.octets()),
        std::net::IpAddr::V6(a) => d.update(&a.octets()),
    }
    d.update(&addr.port().to_be_bytes());
    d.finish().as_ref().to_vec()
}

/// Which side of the exchange is behind a NAT (the hashes did not match).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NatStatus {
    /// Our address as the peer saw it differs: we are behind a NAT.
    pub local: bool,
    /// The peer's address differs from what it reported: it is behind one.
    pub remote: bool,
}

impl NatStatus {
    /// Either side: switch to UDP 4500 and ESP in UDP (§2.23).
    pub fn any(&self) -> bool {
        self.local || self.remote
    }
}

fn nat_notifies(spi_i: u64, spi_r: u64, local: SocketAddr, remote: SocketAddr) -> [Payload; 2] {
    let n = |kind, data| Payload::Notify { protocol: 0, spi: vec![], kind, data };
    [
        n(notify::NAT_DETECTION_SOURCE_IP, nat_hash(spi_i, spi_r, local)),
        n(notify::NAT_DETECTION_DESTINATION_IP, nat_hash(spi_i, spi_r, remote)),
    ]
}

/// Compare the peer's NAT detection notifies with the addresses the packet
/// really had (`local` = our address it was sent to, `remote` = its source).
fn nat_status(m: &Message, spi_r: u64, local: SocketAddr, remote: SocketAddr) -> NatStatus {
    let (spi_i, mut st) = (m.header.spi_i, NatStatus::default());
    let mut srcs = Vec::new();
    for p in &m.payloads {
        if let Payload::Notify { kind, data, .. } = p {
            match *kind {
                notify::NAT_DETECTION_SOURCE_IP => srcs.push(data.clone()),
                notify::NAT_DETECTION_DESTINATION_IP => st.local = *data != nat_hash(spi_i, spi_r, local),
                _ => {}
            }
        }
    }
    // §2.23: any source hash matching means the peer is not behind a NAT.
    if !srcs.is_empty() {
        let real = nat_hash(spi_i, spi_r, remote);
        st.remote = !srcs.contains(&real);
    }
    st
}

/// What every IKE_SA_INIT of ours announces: the signature hashes we
/// verify (RFC 7427 §4) and that we take fragmented messages (RFC 7383).
fn capability_notifies() -> [Payload; 2] {
    let hashes = super::cert::OUR_HASHES.iter().flat_map(|h| h.to_be_bytes()).collect();
    [
        Payload::Notify { protocol: 0, spi: vec![], kind: notify::SIGNATURE_HASH_ALGORITHMS, data: hashes },
        Payload::Notify { protocol: 0, spi: vec![], kind: notify::IKEV2_FRAGMENTATION_SUPPORTED, data: vec![] },
    ]
}

/// What the peer's IKE_SA_INIT announced: (signature hashes, fragmentation).
fn peer_capabilities(m: &Message) -> (Vec<u16>, bool) {
    let mut hashes = Vec::new();
    let mut fragments = false;
    for p in &m.payloads {
        match p {
            Payload::Notify { kind: notify::SIGNATURE_HASH_ALGORITHMS, data, .. } => {
                hashes.extend(data.chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]])));
            }
            Payload::Notify { kind: notify::IKEV2_FRAGMENTATION_SUPPORTED, .. } => fragments = true,
            _ => {}
        }
    }
    (hashes, fragments)
}

/// A fresh nonce of our length (§2.10).
pub(super) fn nonce() -> Result<Zeroizing<Vec<u8>>, IkeCryptoError> {
    Ok(Zeroizing::new(random(NONCE_LEN)?))
}

/// A fresh IKE SA SPI (never 0, which means "not yet known").
pub(super) fn random_spi() -> Result<u64, IkeCryptoError> {
    let b: [u8; 8] = random(8)?.try_into().map_err(|_| IkeCryptoError::Random)?;
    Ok(u64::from_be_bytes(b).max(1))
}

fn random(len: usize) -> Result<Vec<u8>, IkeCryptoError> {
    let mut v = vec![0u8; len];
    ring::rand::SystemRandom::new().fill(&mut v).map_err(|_| IkeCryptoError::Random)?;
    Ok(v)
}

/// An initiator between its request and the response.
pub struct Initiator {
    pub spi_i: u64,
    /// What we offered, one proposal each, in our order.
    offer: Vec<Suite>,
    dh: Dh,
    ni: Zeroizing<Vec<u8>>,
    local: SocketAddr,
    remote: SocketAddr,
}

/// An established IKE SA's secrets and parameters, on either side.
pub struct Established {
    pub spi_i: u64,
    pub spi_r: u64,
    pub suite: Suite,
    pub keys: IkeKeys,
    pub ni: Zeroizing<Vec<u8>>,
    pub nr: Zeroizing<Vec<u8>>,
    pub nat: NatStatus,
    /// The IKE_SA_INIT messages, signed in IKE_AUTH (§2.15).
    pub request: Vec<u8>,
    pub response: Vec<u8>,
    /// What the peer announced in IKE_SA_INIT: the hashes it verifies
    /// signatures with (RFC 7427), and IKE fragmentation (RFC 7383).
    pub peer_hashes: Vec<u16>,
    pub peer_fragments: bool,
}

impl Established {
    /// The keys of the Encrypted payloads the initiator (`from_initiator`)
    /// or the responder sends.
    pub fn sk(&self, from_initiator: bool) -> SkKey<'_> {
        let k = &self.keys;
        let (encr, integ) = if from_initiator { (&k.sk_ei, &k.sk_ai) } else { (&k.sk_er, &k.sk_ar) };
        SkKey { alg: self.suite.sk_alg(), encr, integ }
    }
}

impl std::fmt::Debug for Established {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Established")
            .field("spi_i", &format_args!("{:016x}", self.spi_i))
            .field("spi_r", &format_args!("{:016x}", self.spi_r))
            .field("suite", &self.suite)
            .field("nat", &self.nat)
            .finish_non_exhaustive()
    }
}

/// Why an exchange failed on our side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitError {
    /// The peer refused with this notify (and, for INVALID_KE_PAYLOAD, the group it wants).
    Refused {
        notify: u16,
        data: Vec<u8>,
    },
    /// The response does not fit the request (SPI, missing payloads, suite not offered).
    Invalid(&'static str),
    Crypto(IkeCryptoError),
}

impl From<IkeCryptoError> for InitError {
    fn from(e: IkeCryptoError) -> Self {
        InitError::Crypto(e)
    }
}

impl Initiator {
    /// Start: the IKE_SA_INIT request (message ID 0) from `local` to
    /// `remote`, offering `offer` (one proposal each, ours first) with a
    /// KE payload for the first one's group.
    pub fn start(offer: &[Suite], local: SocketAddr, remote: SocketAddr) -> Result<(Initiator, Vec<u8>), InitError> {
        let first = offer.first().ok_or(InitError::Invalid("nothing to offer"))?;
        let spi_i = random_spi()?;
        let dh = Dh::generate(first.group)?;
        let ni = nonce()?;
        let proposals = self::offer(offer);
        let mut payloads = vec![
            Payload::Sa(proposals),
            Payload::Ke { group: first.group, data: dh.public().to_vec() },
            Payload::Nonce(ni.to_vec()),
        ];
        payloads.extend(nat_notifies(spi_i, 0, local, remote));
        payloads.extend(capability_notifies());
        let header = Header {
            spi_i,
            spi_r: 0,
            minor: 0,
            exchange: exchange::IKE_SA_INIT,
            flags: flags::INITIATOR,
            message_id: 0,
        };
        let request = Message { header, payloads }.encode();
        Ok((Initiator { spi_i, offer: offer.to_vec(), dh, ni, local, remote }, request))
    }

    /// The responder asked for another group (INVALID_KE_PAYLOAD, §1.2):
    /// our `request` again with a KE payload of that group, same SPI,
    /// nonce and any cookie. `None` when we did not offer the group.
    pub fn with_group(self, request: &[u8], group: u16) -> Option<(Initiator, Vec<u8>)> {
        if group == self.dh.group() || !self.offer.iter().any(|s| s.group == group) {
            return None;
        }
        let dh = Dh::generate(group).ok()?;
        let mut m = Message::decode(request).ok()?;
        for p in &mut m.payloads {
            if let Payload::Ke { .. } = p {
                *p = Payload::Ke { group, data: dh.public().to_vec() };
            }
        }
        Some((Initiator { dh, ..self }, m.encode()))
    }

    /// The response: keys, or why not.
    pub fn complete(self, request: Vec<u8>, response: &[u8]) -> Result<Established, InitError> {
        let m = Message::decode(response).map_err(|e| InitError::Crypto(e.into()))?;
        let h = m.header;
        if h.spi_i != self.spi_i || !h.is_response() || h.exchange != exchange::IKE_SA_INIT || h.message_id != 0 {
            return Err(InitError::Invalid("not the response to our IKE_SA_INIT"));
        }
        for p in &m.payloads {
            if let Payload::Notify { kind, data, .. } = p {
                if *kind < 16384 {
                    return Err(InitError::Refused { notify: *kind, data: data.clone() });
                }
            }
        }
        let chosen = m.payloads.iter().find_map(|p| match p {
            Payload::Sa(props) => Some(props),
            _ => None,
        });
        let Some([one]) = chosen.map(Vec::as_slice) else { return Err(InitError::Invalid("one proposal expected")) };
        // One of ours, exactly as offered, with the group of our KE (§2.7).
        let suite = match choose(std::slice::from_ref(one), &self.offer, Some(self.dh.group())) {
            Some((_, s))
                if s.group == self.dh.group() && one.transforms.len() == s.proposal(vec![]).transforms.len() =>
            {
                s
            }
            _ => return Err(InitError::Invalid("the responder chose a suite we did not offer")),
        };
        let (ke, nr) = ke_and_nonce(&m, suite.group).ok_or(InitError::Invalid("KE or nonce missing"))?;
        let g_ir = self.dh.agree(ke)?;
        let keys =
            IkeKeys::derive(suite.prf, &self.ni, nr, &g_ir, self.spi_i, h.spi_r, suite.encr_len(), suite.integ_len());
        let nat = nat_status(&m, h.spi_r, self.local, self.remote);
        let (peer_hashes, peer_fragments) = peer_capabilities(&m);
        Ok(Established {
            spi_i: self.spi_i,
            spi_r: h.spi_r,
            suite,
            keys,
            ni: self.ni,
            nr: Zeroizing::new(nr.to_vec()),
            nat,
            request,
            response: response.to_vec(),
            peer_hashes,
            peer_fragments,
        })
    }
}

fn ke_and_nonce(m: &Message, group: u16) -> Option<(&[u8], &[u8])> {
    let ke = m.payloads.iter().find_map(|p| match p {
        Payload::Ke { group: g, data } if *g == group => Some(data.as_slice()),
        _ => None,
    })?;
    let n = m.payloads.iter().find_map(|p| match p {
        Payload::Nonce(n) if (16..=256).contains(&n.len()) => Some(n.as_slice()),
        _ => None,
    })?;
    Some((ke, n))
}

/// What a responder answers to an IKE_SA_INIT request.
pub enum Response {
    /// Under load and without a valid cookie: send `message` (only a
    /// COOKIE notify), keep no state (§2.6).
    Cookie { message: Vec<u8> },
    /// The SA is established on our side; send `message`.
    Accept { message: Vec<u8>, sa: Box<Established> },
    /// Refused as §1.2/§2.7 say; send `message` (no state kept).
    Refuse { message: Vec<u8>, notify: u16 },
}

/// Answer an IKE_SA_INIT request that arrived at `local` from `remote`.
/// With `cookies` (the daemon is under load) a request must carry a valid
/// cookie first, before any Diffie-Hellman is done. `certreq`: the
/// connection's CERTREQ, when it authenticates with certificates; `ours`
/// the suites it accepts.
pub fn respond(
    request: &[u8],
    local: SocketAddr,
    remote: SocketAddr,
    cookies: Option<&CookieJar>,
    certreq: Option<Payload>,
    ours: &[Suite],
) -> Result<Response, InitError> {
    let m = Message::decode(request).map_err(|e| InitError::Crypto(e.into()))?;
    let h = m.header;
    if h.exchange != exchange::IKE_SA_INIT || h.is_response() || h.spi_r != 0 || h.message_id != 0 || h.spi_i == 0 {
        return Err(InitError::Invalid("not an IKE_SA_INIT request"));
    }
    let only = |kind: u16, data: Vec<u8>| {
        let header = Header { spi_r: 0, flags: flags::RESPONSE, ..h };
        Message { header, payloads: vec![Payload::Notify { protocol: 0, spi: vec![], kind, data }] }.encode()
    };
    let refuse = |kind: u16, data: Vec<u8>| Ok(Response::Refuse { message: only(kind, data), notify: kind });
    if let Some(jar) = cookies {
        let ni = m.payloads.iter().find_map(|p| match p {
            Payload::Nonce(n) => Some(n.as_slice()),
            _ => None,
        });
        let Some(ni) = ni else { return refuse(notify::INVALID_SYNTAX, vec![]) };
        let valid = match m.payloads.first() {
            Some(Payload::Notify { kind: notify::COOKIE, data, .. }) => jar.check(data, ni, remote.ip(), h.spi_i),
            _ => false,
        };
        if !valid {
            return Ok(Response::Cookie { message: only(notify::COOKIE, jar.make(ni, remote.ip(), h.spi_i)) });
        }
    }
    let offered = m.payloads.iter().find_map(|p| match p {
        Payload::Sa(props) => Some(props.as_slice()),
        _ => None,
    });
    let ke_group = m.payloads.iter().find_map(|p| match p {
        Payload::Ke { group, .. } => Some(*group),
        _ => None,
    });
    let Some((number, suite)) = offered.and_then(|o| choose(o, ours, ke_group)) else {
        return refuse(notify::NO_PROPOSAL_CHOSEN, vec![]);
    };
    let Some((ke, ni)) = ke_and_nonce(&m, suite.group) else {
        // A KE for another group than the chosen one: ask for ours (§1.2).
        if m.payloads.iter().any(|p| matches!(p, Payload::Ke { .. })) {
            return refuse(notify::INVALID_KE_PAYLOAD, suite.group.to_be_bytes().to_vec());
        }
        return refuse(notify::INVALID_SYNTAX, vec![]);
    };
    let spi_r = random_spi()?;
    let dh = Dh::generate(suite.group)?;
    let public = dh.public().to_vec();
    let g_ir = dh.agree(ke)?;
    let nr = nonce()?;
    let keys = IkeKeys::derive(suite.prf, ni, &nr, &g_ir, h.spi_i, spi_r, suite.encr_len(), suite.integ_len());
    let nat = nat_status(&m, 0, local, remote);
    let mut chosen = suite.proposal(vec![]);
    chosen.number = number;
    let mut payloads =
        vec![Payload::Sa(vec![chosen]), Payload::Ke { group: suite.group, data: public }, Payload::Nonce(nr.to_vec())];
    payloads.extend(certreq);
    payloads.extend(nat_notifies(h.spi_i, spi_r, local, remote));
    payloads.extend(capability_notifies());
    let (peer_hashes, peer_fragments) = peer_capabilities(&m);
    let header = Header { spi_r, flags: flags::RESPONSE, ..h };
    let message = Message { header, payloads }.encode();
    let sa = Established {
        spi_i: h.spi_i,
        spi_r,
        suite,
        keys,
        ni: Zeroizing::new(ni.to_vec()),
        nr,
        nat,
        request: request.to_vec(),
        response: message.clone(),
        peer_hashes,
        peer_fragments,
    };
    Ok(Response::Accept { message, sa: Box::new(sa) })
}
