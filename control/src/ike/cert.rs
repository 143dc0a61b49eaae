//! X.509 certificate authentication in IKE_AUTH (RFC 7296 §2.15, §3.6,
//! §3.7), with the Digital Signature method of RFC 7427 and the RFC 4945
//! profile, on well-kept crates: `rustls-webpki` builds and checks the
//! peer's chain to the connection's CAs and verifies its signature,
//! `x509-parser` reads names and keys, `ring` signs.
//!
//! - We sign with our key (ECDSA P-256/P-384 or RSA, PKCS#8) over the same
//!   octets a PSK MAC covers ([`super::auth::signed_octets`]), announced as
//!   an AlgorithmIdentifier (method 14), with a hash the peer listed in its
//!   SIGNATURE_HASH_ALGORITHMS notify.
//! - We send our certificate (and any intermediates after it in the file)
//!   as CERT payloads, and CERTREQ naming our CAs (SHA-1 of their public
//!   key info, §3.7) so a peer that sends its certificate only when asked
//!   (strongSwan's default) does.
//! - The peer's certificate must chain to one of our CAs now (validity,
//!   signatures, basic constraints, EKU if present: IKE, server or client
//!   auth, or any), its identity (ID payload) must be one of the
//!   certificate's subjectAltNames (§3.5 and RFC 4945 §3.1: FQDN to
//!   dNSName, RFC822 to rfc822Name, IP to iPAddress) and equal the
//!   configured remote identity, and the AUTH must verify with its key.

use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair};
use rustls_pki_types::{CertificateDer, SignatureVerificationAlgorithm, UnixTime};
use thiserror::Error;
use webpki::{EndEntityCert, KeyPurposeId, KeyPurposeIdIter};

use super::ike_auth::Identity;
use super::message::Payload;

/// AUTH method 14, Digital Signature (RFC 7427).
pub const AUTH_DIGITAL_SIGNATURE: u8 = 14;
/// CERT / CERTREQ encoding 4, X.509 Certificate - Signature (§3.6).
pub const CERT_X509_SIGNATURE: u8 = 4;
/// The notify that lists the hashes a peer verifies (RFC 7427 §4).
pub const SIGNATURE_HASH_ALGORITHMS: u16 = 16431;
/// Hash algorithm ids (RFC 7427 §7): SHA2-256, SHA2-384, SHA2-512.
pub const HASH_SHA2_256: u16 = 2;
pub const HASH_SHA2_384: u16 = 3;
pub const HASH_SHA2_512: u16 = 4;
/// The hashes we verify, as we announce them.
pub const OUR_HASHES: [u16; 3] = [HASH_SHA2_256, HASH_SHA2_384, HASH_SHA2_512];

/// The signature AlgorithmIdentifiers of RFC 7427 Appendix A (DER), each
/// with a hash of [`OUR_HASHES`], and the webpki algorithms that verify it
/// (the right one is the one that fits the certificate's key).
struct SigAlg {
    der: &'static [u8],
    verify: &'static [&'static dyn SignatureVerificationAlgorithm],
}

const ECDSA_SHA256: &[u8] = &[0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];
const ECDSA_SHA384: &[u8] = &[0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03];
const RSA_SHA256: &[u8] = &[0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b, 0x05, 0x00];
const RSA_SHA384: &[u8] = &[0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c, 0x05, 0x00];
const RSA_SHA512: &[u8] = &[0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d, 0x05, 0x00];

const SIG_ALGS: [SigAlg; 5] = [
    SigAlg { der: ECDSA_SHA256, verify: &[webpki::ring::ECDSA_P256_SHA256, webpki::ring::ECDSA_P384_SHA256] },
    SigAlg { der: ECDSA_SHA384, verify: &[webpki::ring::ECDSA_P384_SHA384, webpki::ring::ECDSA_P256_SHA384] },
    SigAlg { der: RSA_SHA256, verify: &[webpki::ring::RSA_PKCS1_2048_8192_SHA256] },
    SigAlg { der: RSA_SHA384, verify: &[webpki::ring::RSA_PKCS1_2048_8192_SHA384] },
    SigAlg { der: RSA_SHA512, verify: &[webpki::ring::RSA_PKCS1_2048_8192_SHA512] },
];

/// What a chain may be signed with.
const CHAIN_ALGS: &[&dyn SignatureVerificationAlgorithm] = &[
    webpki::ring::ECDSA_P256_SHA256,
    webpki::ring::ECDSA_P256_SHA384,
    webpki::ring::ECDSA_P384_SHA256,
    webpki::ring::ECDSA_P384_SHA384,
    webpki::ring::ED25519,
    webpki::ring::RSA_PKCS1_2048_8192_SHA256,
    webpki::ring::RSA_PKCS1_2048_8192_SHA384,
    webpki::ring::RSA_PKCS1_2048_8192_SHA512,
    webpki::ring::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
    webpki::ring::RSA_PSS_2048_8192_SHA384_LEGACY_KEY,
    webpki::ring::RSA_PSS_2048_8192_SHA512_LEGACY_KEY,
];

/// Why credentials could not be loaded or a peer not be authenticated.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CertError {
    #[error("no PEM {0} in the file")]
    NoPem(&'static str),
    #[error("not a certificate this gateway can read: {0}")]
    BadCert(String),
    #[error(
        "the private key is not PKCS#8 ECDSA P-256/P-384 or RSA (an \"EC PRIVATE KEY\" converts with `openssl pkcs8 -topk8 -nocrypt`)"
    )]
    BadKey,
    #[error("the private key is not the certificate's")]
    KeyMismatch,
    #[error("the identity {0} is not among the certificate's subjectAltNames")]
    IdentityNotInCert(String),
    #[error("the peer sent no certificate")]
    NoPeerCert,
    #[error("the peer's certificate does not verify: {0}")]
    Untrusted(String),
    #[error("the AUTH payload is malformed or uses an algorithm we do not verify")]
    BadAuth,
    #[error("the signature does not verify with the peer's certificate")]
    BadSignature,
    #[error("the peer accepts none of the hashes our key signs with (SIGNATURE_HASH_ALGORITHMS)")]
    NoCommonHash,
    #[error("signing failed")]
    Sign,
}

/// Our private key.
enum SigningKey {
    Ecdsa { pair: EcdsaKeyPair, alg: &'static [u8], hash: u16 },
    Rsa(RsaKeyPair),
}

/// One connection's certificate credentials: ours, and the CAs the peer's
/// must chain to.
pub struct Credentials {
    /// Our certificate then intermediates, DER.
    chain: Vec<Vec<u8>>,
    key: SigningKey,
    /// Trust anchors, DER.
    cas: Vec<Vec<u8>>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("certs", &self.chain.len()).field("cas", &self.cas.len()).finish()
    }
}

/// Every PEM block labelled `label` (DER).
fn pem_blocks(text: &[u8], label: &str) -> Vec<Vec<u8>> {
    x509_parser::pem::Pem::iter_from_buffer(text)
        .map_while(Result::ok)
        .filter(|p| p.label == label)
        .map(|p| p.contents)
        .collect()
}

fn parse(der: &[u8]) -> Result<x509_parser::certificate::X509Certificate<'_>, CertError> {
    match x509_parser::parse_x509_certificate(der) {
        Ok(([], c)) => Ok(c),
        Ok(_) => Err(CertError::BadCert("trailing bytes after the certificate".into())),
        Err(e) => Err(CertError::BadCert(e.to_string())),
    }
}

impl Credentials {
    /// From PEM text: our certificate (then any intermediates), our private
    /// key (PKCS#8 "PRIVATE KEY", or "RSA PRIVATE KEY"), the CA
    /// certificate(s).
    pub fn from_pem(cert: &[u8], key: &[u8], ca: &[u8]) -> Result<Self, CertError> {
        let chain = pem_blocks(cert, "CERTIFICATE");
        let Some(leaf) = chain.first() else { return Err(CertError::NoPem("CERTIFICATE")) };
        let cas = pem_blocks(ca, "CERTIFICATE");
        if cas.is_empty() {
            return Err(CertError::NoPem("CERTIFICATE (CA)"));
        }
        for c in chain.iter().chain(&cas) {
            parse(c)?;
            webpki::anchor_from_trusted_cert(&CertificateDer::from(c.as_slice()))
                .map_err(|e| CertError::BadCert(format!("{e:?}")))?;
        }
        let rng = SystemRandom::new();
        let key = if let Some(k) = pem_blocks(key, "PRIVATE KEY").first() {
            let ec = |alg, der, hash| {
                EcdsaKeyPair::from_pkcs8(alg, k, &rng).ok().map(|pair| SigningKey::Ecdsa { pair, alg: der, hash })
            };
            ec(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_SHA256, HASH_SHA2_256)
                .or_else(|| ec(&signature::ECDSA_P384_SHA384_ASN1_SIGNING, ECDSA_SHA384, HASH_SHA2_384))
                .or_else(|| RsaKeyPair::from_pkcs8(k).ok().map(SigningKey::Rsa))
                .ok_or(CertError::BadKey)?
        } else if let Some(k) = pem_blocks(key, "RSA PRIVATE KEY").first() {
            SigningKey::Rsa(RsaKeyPair::from_der(k).map_err(|_| CertError::BadKey)?)
        } else {
            return Err(CertError::BadKey);
        };
        let public = match &key {
            SigningKey::Ecdsa { pair, .. } => pair.public_key().as_ref().to_vec(),
            SigningKey::Rsa(pair) => pair.public_key().as_ref().to_vec(),
        };
        if parse(leaf)?.public_key().subject_public_key.data.as_ref() != public.as_slice() {
            return Err(CertError::KeyMismatch);
        }
        Ok(Credentials { chain, key, cas })
    }

    /// The identities our certificate carries (subjectAltNames), the first
    /// being the default local identity.
    pub fn identities(&self) -> Vec<Identity> {
        self.chain.first().map(|c| cert_identities(c)).unwrap_or_default()
    }

    /// Our CERT payloads: the end-entity certificate, then intermediates.
    pub fn cert_payloads(&self) -> Vec<Payload> {
        self.chain.iter().map(|c| Payload::Cert { encoding: CERT_X509_SIGNATURE, data: c.clone() }).collect()
    }

    /// The CERTREQ naming our CAs (SHA-1 of each one's SubjectPublicKeyInfo).
    pub fn certreq(&self) -> Payload {
        certreq(self.cas.iter().map(Vec::as_slice))
    }

    /// The AUTH payload's data (method 14) over `octets`, with a hash the
    /// peer verifies (`peer_hashes` from its SIGNATURE_HASH_ALGORITHMS).
    pub fn sign(&self, octets: &[u8], peer_hashes: &[u16]) -> Result<Vec<u8>, CertError> {
        let rng = SystemRandom::new();
        let (alg, sig) = match &self.key {
            SigningKey::Ecdsa { pair, alg, hash } => {
                if !peer_hashes.contains(hash) {
                    return Err(CertError::NoCommonHash);
                }
                (*alg, pair.sign(&rng, octets).map_err(|_| CertError::Sign)?.as_ref().to_vec())
            }
            SigningKey::Rsa(pair) => {
                let (alg, enc): (&[u8], &'static dyn signature::RsaEncoding) = match () {
                    _ if peer_hashes.contains(&HASH_SHA2_256) => (RSA_SHA256, &signature::RSA_PKCS1_SHA256),
                    _ if peer_hashes.contains(&HASH_SHA2_384) => (RSA_SHA384, &signature::RSA_PKCS1_SHA384),
                    _ if peer_hashes.contains(&HASH_SHA2_512) => (RSA_SHA512, &signature::RSA_PKCS1_SHA512),
                    _ => return Err(CertError::NoCommonHash),
                };
                let mut sig = vec![0; pair.public().modulus_len()];
                pair.sign(enc, &rng, octets, &mut sig).map_err(|_| CertError::Sign)?;
                (alg, sig)
            }
        };
        let mut out = vec![alg.len() as u8];
        out.extend_from_slice(alg);
        out.extend_from_slice(&sig);
        Ok(out)
    }

    /// Authenticate the peer: `certs` its CERT payloads (end entity first),
    /// `id` its ID payload, `auth` its AUTH payload (method 14) over
    /// `octets`, at `now`.
    pub fn verify_peer(
        &self,
        certs: &[&[u8]],
        id: &Identity,
        auth: &[u8],
        octets: &[u8],
        now: UnixTime,
    ) -> Result<(), CertError> {
        let (leaf, intermediates) = certs.split_first().ok_or(CertError::NoPeerCert)?;
        let leaf_der = CertificateDer::from(*leaf);
        let ee = EndEntityCert::try_from(&leaf_der).map_err(|e| CertError::Untrusted(format!("{e:?}")))?;
        let cas: Vec<CertificateDer<'_>> = self.cas.iter().map(|c| CertificateDer::from(c.as_slice())).collect();
        let anchors: Vec<_> = cas.iter().filter_map(|c| webpki::anchor_from_trusted_cert(c).ok()).collect();
        let inter: Vec<CertificateDer<'_>> = intermediates.iter().map(|c| CertificateDer::from(*c)).collect();
        ee.verify_for_usage(CHAIN_ALGS, &anchors, &inter, now, IkeEku, None, None)
            .map_err(|e| CertError::Untrusted(format!("{e:?}")))?;
        if !cert_identities(leaf).iter().any(|c| c.matches(id)) {
            return Err(CertError::IdentityNotInCert(id.to_string()));
        }
        let (alg, sig) = split_auth(auth).ok_or(CertError::BadAuth)?;
        let a = SIG_ALGS.iter().find(|a| a.der == alg).ok_or(CertError::BadAuth)?;
        if a.verify.iter().any(|v| ee.verify_signature(*v, octets, sig).is_ok()) {
            Ok(())
        } else {
            Err(CertError::BadSignature)
        }
    }
}

/// RFC 7427 §3: ASN.1 length (1 octet) | AlgorithmIdentifier | signature.
fn split_auth(auth: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, rest) = auth.split_first()?;
    let len = usize::from(*len);
    (rest.len() > len).then(|| rest.split_at(len))
}

/// A CERTREQ for these CA certificates (DER).
pub fn certreq<'a>(cas: impl Iterator<Item = &'a [u8]>) -> Payload {
    let mut data = Vec::new();
    for c in cas {
        if let Ok(cert) = parse(c) {
            let h = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, cert.public_key().raw);
            data.extend_from_slice(h.as_ref());
        }
    }
    Payload::CertReq { encoding: CERT_X509_SIGNATURE, data }
}

/// ID_DER_ASN1_DN (§3.5).
pub const ID_DER_ASN1_DN: u8 = 9;

/// The short names of the DN attributes we spell out.
/// The DN attributes we spell out: short name, dotted OID, OID in DER.
const DN_NAMES: [(&str, &str, &[u8]); 10] = [
    ("CN", "2.5.4.3", &[0x55, 4, 3]),
    ("C", "2.5.4.6", &[0x55, 4, 6]),
    ("L", "2.5.4.7", &[0x55, 4, 7]),
    ("ST", "2.5.4.8", &[0x55, 4, 8]),
    ("O", "2.5.4.10", &[0x55, 4, 10]),
    ("OU", "2.5.4.11", &[0x55, 4, 11]),
    ("SN", "2.5.4.4", &[0x55, 4, 4]),
    ("serialNumber", "2.5.4.5", &[0x55, 4, 5]),
    ("E", "1.2.840.113549.1.9.1", &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 1, 9, 1]),
    ("DC", "0.9.2342.19200300.100.1.25", &[0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 1, 0x19]),
];

/// A DN attribute type as written (short name, `emailAddress`, or dotted
/// OID): its entry in [`DN_NAMES`].
fn dn_attribute(t: &str) -> Option<&'static (&'static str, &'static str, &'static [u8])> {
    let t = if t.eq_ignore_ascii_case("emailAddress") { "E" } else { t };
    DN_NAMES.iter().find(|(n, o, _)| n.eq_ignore_ascii_case(t) || *o == t)
}

/// A distinguished name in one comparable form: `TYPE=value` pairs in
/// order, the type's short name (or dotted OID), compared case-blind and
/// whatever ASN.1 string type held the value (as strongSwan compares).
pub fn dn_canonical(text: &str) -> Option<String> {
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (t, v) = part.split_once('=')?;
        let t = dn_attribute(t.trim()).map_or(t.trim(), |(n, _, _)| n);
        out.push(format!("{}={}", t.to_ascii_uppercase(), v.trim().to_lowercase()));
    }
    (!out.is_empty()).then(|| out.join(","))
}

/// The DER of a DN written `CN=east, O=Example` (the attribute types of
/// [`DN_NAMES`], values as UTF8String), for a configured identity.
pub fn dn_der(text: &str) -> Option<Vec<u8>> {
    fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        match body.len() {
            n if n < 0x80 => out.push(n as u8),
            n if n < 0x100 => out.extend([0x81, n as u8]),
            n => out.extend([0x82, (n >> 8) as u8, n as u8]),
        }
        out.extend_from_slice(body);
        out
    }
    let mut rdns = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (t, v) = part.split_once('=')?;
        let (_, _, oid) = dn_attribute(t.trim())?;
        let atv = tlv(0x30, &[tlv(0x06, oid), tlv(0x0c, v.trim().as_bytes())].concat());
        rdns.extend(tlv(0x31, &atv));
    }
    (!rdns.is_empty()).then(|| tlv(0x30, &rdns))
}

/// The comparable form of a DER-encoded Name (an ID_DER_ASN1_DN payload,
/// a certificate's subject).
pub fn dn_canonical_der(der: &[u8]) -> Option<String> {
    use x509_parser::prelude::FromDer;
    let (rest, name) = x509_parser::x509::X509Name::from_der(der).ok()?;
    if !rest.is_empty() {
        return None;
    }
    let mut text = Vec::new();
    for rdn in name.iter() {
        for a in rdn.iter() {
            let oid = a.attr_type().to_id_string();
            let t = dn_attribute(&oid).map_or(oid.clone(), |(n, _, _)| n.to_string());
            text.push(format!("{t}={}", a.as_str().ok()?));
        }
    }
    dn_canonical(&text.join(","))
}

/// The identities a certificate vouches for: its subjectAltNames of the
/// ID types we speak (FQDN, RFC822, IPv4, IPv6), then its subject (a DN).
fn cert_identities(der: &[u8]) -> Vec<Identity> {
    use x509_parser::extensions::GeneralName;
    let Ok(cert) = parse(der) else { return vec![] };
    let subject = Identity { id_type: ID_DER_ASN1_DN, data: cert.subject().as_raw().to_vec() };
    let Ok(Some(san)) = cert.subject_alternative_name() else { return vec![subject] };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(d) => Some(Identity::fqdn(&d.to_ascii_lowercase())),
            GeneralName::RFC822Name(e) => Some(Identity { id_type: 3, data: e.as_bytes().to_vec() }),
            GeneralName::IPAddress(a) if a.len() == 4 => Some(Identity { id_type: 1, data: a.to_vec() }),
            GeneralName::IPAddress(a) if a.len() == 16 => Some(Identity { id_type: 5, data: a.to_vec() }),
            _ => None,
        })
        .chain([subject])
        .collect()
}

/// The peer's certificate may be for IKE (RFC 4945 §5.1.3.12: id-kp-ipsecIKE
/// or anyExtendedKeyUsage), or for TLS server or client auth as many CAs
/// issue them; without an EKU extension it is for anything.
struct IkeEku;

const EKU_ANY: &[u8] = &[0x55, 0x1d, 0x25, 0x00];
const EKU_SERVER_AUTH: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x01];
const EKU_CLIENT_AUTH: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x02];
const EKU_IPSEC_IKE: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x11];

impl webpki::ExtendedKeyUsageValidator for IkeEku {
    fn validate(&self, iter: KeyPurposeIdIter<'_, '_>) -> Result<(), webpki::Error> {
        let ok = [EKU_IPSEC_IKE, EKU_ANY, EKU_SERVER_AUTH, EKU_CLIENT_AUTH].map(KeyPurposeId::new);
        let mut present = Vec::new();
        for id in iter {
            let id = id?;
            if ok.contains(&id) {
                return Ok(());
            }
            present.push(id.to_decoded_oid());
        }
        if present.is_empty() {
            return Ok(());
        }
        let required = webpki::KeyUsage::required(EKU_IPSEC_IKE);
        Err(webpki::Error::RequiredEkuNotFoundContext(webpki::RequiredEkuNotFoundContext { required, present }))
    }
}
