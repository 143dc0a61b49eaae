//! The child SAs' algorithms: which ESP transforms (RFC 7296 §3.3.2,
//! RFC 8221) espgw offers and accepts, how much key material each takes
//! from KEYMAT (§2.17: encryption key, then integrity key, per direction),
//! and what the policy store calls them. One list: config, proposals and
//! the installed SAs all come from [`EspSuite`].

use super::message::{Attribute, Proposal, Transform, ATTR_KEY_LENGTH};
use super::sa_init::transform;

/// Protocol id of ESP in proposals.
pub const PROTO_ESP: u8 = 3;
/// Transform type 5: extended sequence numbers (0 = no, 1 = yes).
pub const ESN: u8 = 5;

const ENCR_AES_CBC: u16 = 12;
const ENCR_AES_GCM_16: u16 = 20;
const ENCR_CHACHA20_POLY1305: u16 = 28;
const AUTH_HMAC_SHA1_96: u16 = 2;

/// What a connection's child SAs may be: the suites in our order of
/// preference, extended sequence numbers, PFS on our rekeys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildPolicy {
    pub suites: Vec<EspSuite>,
    pub esn: bool,
    pub pfs: bool,
}

impl Default for ChildPolicy {
    fn default() -> Self {
        ChildPolicy { suites: vec![EspSuite::Aes128Gcm16], esn: false, pfs: false }
    }
}

/// A child SA algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EspSuite {
    Aes128Gcm16,
    Aes256Gcm16,
    Chacha20Poly1305,
    Aes128Sha1,
    Aes256Sha1,
}

impl EspSuite {
    /// Every suite, by its configuration name (strongSwan's spelling).
    pub const ALL: [(&'static str, EspSuite); 5] = [
        ("aes128gcm16", EspSuite::Aes128Gcm16),
        ("aes256gcm16", EspSuite::Aes256Gcm16),
        ("chacha20poly1305", EspSuite::Chacha20Poly1305),
        ("aes128-sha1", EspSuite::Aes128Sha1),
        ("aes256-sha1", EspSuite::Aes256Sha1),
    ];

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
    }

    pub fn name(self) -> &'static str {
        Self::ALL.iter().find(|(_, s)| *s == self).map_or("?", |(n, _)| n)
    }

    fn encr(self) -> (u16, Option<u16>) {
        match self {
            EspSuite::Aes128Gcm16 => (ENCR_AES_GCM_16, Some(128)),
            EspSuite::Aes256Gcm16 => (ENCR_AES_GCM_16, Some(256)),
            EspSuite::Chacha20Poly1305 => (ENCR_CHACHA20_POLY1305, None),
            EspSuite::Aes128Sha1 => (ENCR_AES_CBC, Some(128)),
            EspSuite::Aes256Sha1 => (ENCR_AES_CBC, Some(256)),
        }
    }

    fn integ(self) -> Option<u16> {
        matches!(self, EspSuite::Aes128Sha1 | EspSuite::Aes256Sha1).then_some(AUTH_HMAC_SHA1_96)
    }

    /// Encryption key bytes per direction (AEAD: with the 4-byte salt, RFC 4106 / RFC 7634).
    pub fn enc_len(self) -> usize {
        match self {
            EspSuite::Aes128Gcm16 => 20,
            EspSuite::Aes256Gcm16 | EspSuite::Chacha20Poly1305 => 36,
            EspSuite::Aes128Sha1 => 16,
            EspSuite::Aes256Sha1 => 32,
        }
    }

    /// Integrity key bytes per direction.
    pub fn integ_len(self) -> usize {
        if self.integ().is_some() {
            20
        } else {
            0
        }
    }

    /// KEYMAT bytes per direction.
    pub fn keymat_len(self) -> usize {
        self.enc_len() + self.integ_len()
    }

    /// The SA's `algorithm` in the policy store.
    pub fn algorithm(self) -> &'static str {
        match self {
            EspSuite::Aes128Gcm16 => "aes128-gcm16",
            EspSuite::Aes256Gcm16 => "aes256-gcm16",
            EspSuite::Chacha20Poly1305 => "chacha20-poly1305",
            EspSuite::Aes128Sha1 => "aes128-cbc-hmac-sha1-96",
            EspSuite::Aes256Sha1 => "aes256-cbc-hmac-sha1-96",
        }
    }

    /// This suite as proposal `number` with our SPI; `esn` the ESN
    /// transform's value, `pfs` the Diffie-Hellman group of a rekey with PFS.
    pub fn proposal(self, number: u8, spi: u32, esn: bool, pfs: Option<u16>) -> Proposal {
        let (id, bits) = self.encr();
        let attributes = bits.map(|b| vec![Attribute::Tv { kind: ATTR_KEY_LENGTH, value: b }]).unwrap_or_default();
        let mut transforms = vec![Transform { kind: transform::ENCR, id, attributes }];
        if let Some(i) = self.integ() {
            transforms.push(Transform { kind: transform::INTEG, id: i, attributes: vec![] });
        }
        if let Some(group) = pfs {
            transforms.push(Transform { kind: transform::KE, id: group, attributes: vec![] });
        }
        transforms.push(Transform { kind: ESN, id: u16::from(esn), attributes: vec![] });
        Proposal { number, protocol: PROTO_ESP, spi: spi.to_be_bytes().to_vec(), transforms }
    }

    /// Does the peer's proposal offer this suite (its encryption, and its
    /// integrity or, for an AEAD, none)?
    fn offered_in(self, p: &Proposal) -> bool {
        let (id, bits) = self.encr();
        let encr = p.transforms.iter().any(|t| t.kind == transform::ENCR && t.id == id && t.key_length() == bits);
        let integs: Vec<u16> =
            p.transforms.iter().filter(|t| t.kind == transform::INTEG && t.id != 0).map(|t| t.id).collect();
        let integ = match self.integ() {
            Some(i) => integs.contains(&i),
            None => integs.is_empty(),
        };
        encr && integ
    }
}

/// Our offer: one proposal per suite, numbered from 1.
pub fn offer(suites: &[EspSuite], spi: u32, esn: bool, pfs: Option<u16>) -> Vec<Proposal> {
    suites.iter().zip(1u8..).map(|(s, n)| s.proposal(n, spi, esn, pfs)).collect()
}

/// What we accept of the peer's ESP proposals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted {
    pub number: u8,
    /// The peer's SPI (its inbound, our outbound).
    pub spi: u32,
    pub suite: EspSuite,
    pub esn: bool,
}

/// The peer's first proposal (in its order) of a suite in `ours`, with an
/// ESN choice we can make: ESN when `esn` allows and the peer offers it,
/// else none if offered.
pub fn accept(props: &[Proposal], ours: &[EspSuite], esn: bool) -> Option<Accepted> {
    props.iter().find_map(|p| {
        let spi = <[u8; 4]>::try_from(p.spi.as_slice()).ok().map(u32::from_be_bytes)?;
        if p.protocol != PROTO_ESP {
            return None;
        }
        let suite = *ours.iter().find(|s| s.offered_in(p))?;
        let esns: Vec<u16> = p.transforms.iter().filter(|t| t.kind == ESN).map(|t| t.id).collect();
        let with_esn = if esn && esns.contains(&1) {
            true
        } else if esns.contains(&0) || esns.is_empty() {
            false
        } else {
            return None;
        };
        Some(Accepted { number: p.number, spi, suite, esn: with_esn })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_proposals_and_choices() {
        for (name, s) in EspSuite::ALL {
            assert_eq!(EspSuite::parse(name), Some(s));
            assert_eq!(s.name(), name);
            let p = s.proposal(1, 0x1234, false, None);
            assert_eq!(accept(&[p], &[s], false).map(|a| (a.suite, a.spi, a.esn)), Some((s, 0x1234, false)));
        }
        assert_eq!(EspSuite::parse("des"), None);
        // The peer's order wins among what we run; a suite we do not run is skipped.
        let peer = offer(&[EspSuite::Aes256Sha1, EspSuite::Chacha20Poly1305, EspSuite::Aes128Gcm16], 7, false, None);
        let a = accept(&peer, &[EspSuite::Aes128Gcm16, EspSuite::Chacha20Poly1305], false).unwrap();
        assert_eq!((a.number, a.suite), (2, EspSuite::Chacha20Poly1305));
        // GCM with an integrity transform is not our GCM; CBC needs SHA1-96.
        let mut odd = EspSuite::Aes128Gcm16.proposal(1, 7, false, None);
        odd.transforms.push(Transform { kind: transform::INTEG, id: 12, attributes: vec![] });
        assert_eq!(accept(&[odd], &[EspSuite::Aes128Gcm16], false), None);
        // ESN: chosen only when both want it; a peer insisting on it is refused without.
        let esn_only = EspSuite::Aes128Gcm16.proposal(1, 7, true, None);
        assert_eq!(accept(std::slice::from_ref(&esn_only), &[EspSuite::Aes128Gcm16], true).map(|a| a.esn), Some(true));
        assert_eq!(accept(&[esn_only], &[EspSuite::Aes128Gcm16], false), None);
        assert_eq!(EspSuite::Aes256Sha1.keymat_len(), 52);
        assert_eq!(EspSuite::Chacha20Poly1305.keymat_len(), 36);
    }
}
