//! Certificates for tests (unit tests include this module; the end-to-end
//! tests include the same file by path): a CA and end-entity certificates
//! it signs, made with rcgen; RSA keys come from the `rsa` crate, as ring
//! cannot generate them.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// The key an end-entity certificate gets.
#[derive(Debug, Clone, Copy)]
pub enum KeyKind {
    P256,
    P384,
    /// RSA with this many bits.
    Rsa(usize),
}

fn key(kind: KeyKind) -> KeyPair {
    match kind {
        KeyKind::P256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("P-256 key"),
        KeyKind::P384 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).expect("P-384 key"),
        KeyKind::Rsa(bits) => {
            use rsa::pkcs8::EncodePrivateKey;
            let k = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, bits).expect("RSA key");
            let pem = k.to_pkcs8_pem(rsa::pkcs8::LineEnding::LF).expect("PKCS#8");
            KeyPair::from_pem_and_sign_algo(&pem, &rcgen::PKCS_RSA_SHA256).expect("RSA key pair")
        }
    }
}

/// A certification authority.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    /// Its certificate, PEM.
    pub pem: String,
}

/// An issued certificate and its key, PEM.
pub struct Issued {
    pub cert: String,
    pub key: String,
}

impl Ca {
    /// A self-signed CA named `name` with a P-256 key.
    pub fn new(name: &str) -> Ca {
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
        p.distinguished_name = DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, name);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let k = key(KeyKind::P256);
        let cert = p.self_signed(&k).expect("CA certificate");
        Ca { issuer: Issuer::new(p, k), pem: cert.pem() }
    }

    /// An end-entity certificate for `names` (FQDNs, user@FQDNs, IP
    /// addresses), `edit` changing anything else (validity, EKU).
    pub fn issue(&self, names: &[&str], kind: KeyKind, edit: impl FnOnce(&mut CertificateParams)) -> Issued {
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
        p.distinguished_name = DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, names.first().copied().unwrap_or("nobody"));
        p.subject_alt_names = names
            .iter()
            .map(|n| match n.parse::<std::net::IpAddr>() {
                Ok(a) => SanType::IpAddress(a),
                Err(_) if n.contains('@') => SanType::Rfc822Name((*n).try_into().expect("email")),
                Err(_) => SanType::DnsName((*n).try_into().expect("name")),
            })
            .collect();
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        edit(&mut p);
        let k = key(kind);
        let cert = p.signed_by(&k, &self.issuer).expect("certificate");
        Issued { cert: cert.pem(), key: k.serialize_pem() }
    }
}
