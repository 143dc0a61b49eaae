//! The IKE_AUTH exchange with pre-shared keys or X.509 certificates (RFC
//! 7296 §1.2, §2.15; [`super::cert`]) and
//! its first CHILD_SA (ESP in tunnel mode, [`EspSuite`]s), both roles as pure
//! functions of messages, after [`super::sa_init`]. The outcome is the
//! child SA's two directions — SPIs, algorithm, keys (encryption key then
//! integrity key, as KEYMAT holds them) and the narrowed traffic selectors —
//! ready for the policy store.

use std::sync::Arc;

use zeroize::Zeroizing;

use super::auth::{narrow, psk_mac, signed_octets, split_child_keys, verify_psk_auth, ChildKey, AUTH_PSK};
use super::cert::{CertError, Credentials, AUTH_DIGITAL_SIGNATURE, CERT_X509_SIGNATURE};
use super::crypto::{encrypt_message, IkeCryptoError, Inbound};
use super::esp_suite::{self, ChildPolicy, EspSuite};
use super::message::{exchange, flags, selectors, Header, Payload, TrafficSelector};
use super::sa_init::Established;

/// Notify types of IKE_AUTH failures (§3.10.1).
pub mod notify {
    pub const AUTHENTICATION_FAILED: u16 = 24;
    pub const NO_PROPOSAL_CHOSEN: u16 = 14;
    pub const TS_UNACCEPTABLE: u16 = 38;
}

/// An identity (§3.5): type (1 IPv4, 2 FQDN, 3 RFC822, 5 IPv6) and data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub id_type: u8,
    pub data: Vec<u8>,
}

impl Identity {
    pub fn fqdn(name: &str) -> Self {
        Identity { id_type: 2, data: name.as_bytes().to_vec() }
    }

    /// Is `other` this identity? Exactly, or for distinguished names
    /// (ID_DER_ASN1_DN) the same name however it was encoded: what a peer
    /// sends is compared with what we configured or its certificate says.
    pub fn matches(&self, other: &Identity) -> bool {
        use super::cert::{dn_canonical_der, ID_DER_ASN1_DN};
        match (self.id_type, other.id_type) {
            (ID_DER_ASN1_DN, ID_DER_ASN1_DN) => {
                self == other || dn_canonical_der(&self.data).is_some_and(|a| Some(a) == dn_canonical_der(&other.data))
            }
            _ => self == other,
        }
    }
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.id_type, self.data.as_slice()) {
            (1, d) if d.len() == 4 => {
                write!(f, "{}", std::net::Ipv4Addr::from(<[u8; 4]>::try_from(d).unwrap_or([0; 4])))
            }
            (5, d) if d.len() == 16 => {
                write!(f, "{}", std::net::Ipv6Addr::from(<[u8; 16]>::try_from(d).unwrap_or([0; 16])))
            }
            (2 | 3, d) => write!(f, "{}", String::from_utf8_lossy(d)),
            (9, d) => {
                write!(f, "{}", super::cert::dn_canonical_der(d).unwrap_or_else(|| "a distinguished name".into()))
            }
            (t, d) => write!(f, "id type {t} ({} bytes)", d.len()),
        }
    }
}

/// How this side proves its identity and checks the peer's.
#[derive(Clone)]
pub enum Credential {
    /// A pre-shared key, the same on both sides (§2.15).
    Psk(Zeroizing<Vec<u8>>),
    /// Our certificate and key, the CAs the peer's certificate chains to.
    Cert(Arc<Credentials>),
}

/// Whose AUTH: the initiator's covers its IKE_SA_INIT request, the
/// responder's nonce and its ID under SK_pi; the responder's the mirror.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Initiator,
    Responder,
}

fn octets(sa: &Established, side: Side, id: &Identity) -> Vec<u8> {
    match side {
        Side::Initiator => signed_octets(sa.keys.prf, &sa.request, &sa.nr, &sa.keys.sk_pi, id.id_type, &id.data),
        Side::Responder => signed_octets(sa.keys.prf, &sa.response, &sa.ni, &sa.keys.sk_pr, id.id_type, &id.data),
    }
}

impl Credential {
    /// Our CERT payloads (none with a PSK) and AUTH payload as `side`.
    fn prove(&self, sa: &Established, side: Side, me: &Identity) -> Result<(Vec<Payload>, Payload), AuthError> {
        let signed = octets(sa, side, me);
        Ok(match self {
            Credential::Psk(psk) => {
                (vec![], Payload::Auth { method: AUTH_PSK, data: psk_mac(sa.keys.prf, psk, &signed).to_vec() })
            }
            Credential::Cert(c) => {
                let data = c.sign(&signed, &sa.peer_hashes).map_err(AuthError::Credential)?;
                (c.cert_payloads(), Payload::Auth { method: AUTH_DIGITAL_SIGNATURE, data })
            }
        })
    }

    /// Check the peer's AUTH (it is `side`, its ID `id`) with the method
    /// we expect of it; why not, if not.
    fn check(&self, sa: &Established, side: Side, id: &Identity, inner: &[Payload]) -> Result<(), CertError> {
        let signed = octets(sa, side, id);
        let auth = |method: u8| {
            inner.iter().find_map(|p| match p {
                Payload::Auth { method: m, data } if *m == method => Some(data.as_slice()),
                _ => None,
            })
        };
        match self {
            Credential::Psk(psk) => match auth(AUTH_PSK) {
                Some(got) if verify_psk_auth(got, &psk_mac(sa.keys.prf, psk, &signed)) => Ok(()),
                _ => Err(CertError::BadSignature),
            },
            Credential::Cert(c) => {
                let got = auth(AUTH_DIGITAL_SIGNATURE).ok_or(CertError::BadAuth)?;
                let certs: Vec<&[u8]> = inner
                    .iter()
                    .filter_map(|p| match p {
                        Payload::Cert { encoding: CERT_X509_SIGNATURE, data } => Some(data.as_slice()),
                        _ => None,
                    })
                    .collect();
                c.verify_peer(&certs, id, got, &signed, rustls_pki_types::UnixTime::now())
            }
        }
    }

    /// The CERTREQ we send (certificates only).
    pub fn certreq(&self) -> Option<Payload> {
        match self {
            Credential::Psk(_) => None,
            Credential::Cert(c) => Some(c.certreq()),
        }
    }
}

/// What one side's configuration says about the peer and itself.
pub struct AuthConfig {
    pub me: Identity,
    pub peer: Identity,
    pub credential: Credential,
    /// What the child SAs may be.
    pub child: ChildPolicy,
}

/// A negotiated child SA, from one side's point of view.
pub struct ChildSa {
    pub spi_in: u32,
    pub spi_out: u32,
    pub suite: EspSuite,
    pub esn: bool,
    pub key_in: ChildKey,
    pub key_out: ChildKey,
    /// Selectors as the exchange left them (initiator's side, responder's side).
    pub tsi: Vec<TrafficSelector>,
    pub tsr: Vec<TrafficSelector>,
    /// The lower of the exchange's nonces (to resolve rekey collisions, §2.8.1).
    pub lowest_nonce: Vec<u8>,
}

impl std::fmt::Debug for ChildSa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChildSa")
            .field("spi_in", &format_args!("0x{:08x}", self.spi_in))
            .field("spi_out", &format_args!("0x{:08x}", self.spi_out))
            .field("suite", &self.suite)
            .field("esn", &self.esn)
            .field("tsi", &self.tsi)
            .field("tsr", &self.tsr)
            .finish_non_exhaustive()
    }
}

/// Why IKE_AUTH failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// The peer refused (its notify).
    Refused(u16),
    /// We refuse; the response carrying this notify is to be sent.
    Refuse {
        notify: u16,
        response: Vec<u8>,
    },
    /// The IKE SA is authenticated, its first child SA was refused with
    /// this notify (§1.2, §2.21.3: the responder still sends IDr and AUTH;
    /// the IKE SA stands without a child).
    ChildRefused(u16),
    /// Not a message of this exchange.
    Invalid(&'static str),
    /// We cannot prove who we are (our key cannot sign what the peer verifies).
    Credential(CertError),
    Crypto(IkeCryptoError),
}

impl From<IkeCryptoError> for AuthError {
    fn from(e: IkeCryptoError) -> Self {
        AuthError::Crypto(e)
    }
}

fn header(sa: &Established, response: bool, initiator: bool) -> Header {
    let mut f = if initiator { flags::INITIATOR } else { 0 };
    if response {
        f |= flags::RESPONSE;
    }
    Header { spi_i: sa.spi_i, spi_r: sa.spi_r, minor: 0, exchange: exchange::IKE_AUTH, flags: f, message_id: 1 }
}

/// The initiator's IKE_AUTH request: SK{IDi, AUTH, SA, TSi, TSr} with our
/// inbound SPI `spi_in`.
pub fn request(
    sa: &Established,
    cfg: &AuthConfig,
    spi_in: u32,
    tsi: &[TrafficSelector],
    tsr: &[TrafficSelector],
    iv: [u8; 8],
) -> Result<Vec<u8>, AuthError> {
    let (certs, auth) = cfg.credential.prove(sa, Side::Initiator, &cfg.me)?;
    // §1.2 order: IDi, [CERT,] [CERTREQ,] AUTH, SA, TSi, TSr.
    let mut inner = vec![Payload::Id { initiator: true, id_type: cfg.me.id_type, data: cfg.me.data.clone() }];
    inner.extend(certs);
    inner.extend(cfg.credential.certreq());
    inner.extend([
        auth,
        Payload::Sa(esp_suite::offer(&cfg.child.suites, spi_in, cfg.child.esn, None)),
        Payload::Ts { initiator: true, selectors: tsi.to_vec() },
        Payload::Ts { initiator: false, selectors: tsr.to_vec() },
    ]);
    Ok(encrypt_message(header(sa, false, true), &inner, sa.sk(true), iv)?)
}

/// The responder: check the initiator's AUTH and identity, choose the ESP
/// proposal, narrow the selectors to `allowed_tsi`/`allowed_tsr` (§2.9),
/// answer SK{IDr, AUTH, SA, TSi, TSr} with our inbound SPI `spi_in`.
pub fn respond<'a>(
    sa: &Established,
    cfg: &AuthConfig,
    msg: impl Into<Inbound<'a>>,
    spi_in: u32,
    allowed_tsi: &[TrafficSelector],
    allowed_tsr: &[TrafficSelector],
    iv: [u8; 8],
) -> Result<(Vec<u8>, ChildSa), AuthError> {
    let (h, inner) = msg.into().open(sa.sk(true))?;
    if h.exchange != exchange::IKE_AUTH || h.is_response() || (h.spi_i, h.spi_r) != (sa.spi_i, sa.spi_r) {
        return Err(AuthError::Invalid("not this IKE SA's IKE_AUTH request"));
    }
    let refuse = |kind: u16| -> Result<(Vec<u8>, ChildSa), AuthError> {
        let n = vec![Payload::Notify { protocol: 0, spi: vec![], kind, data: vec![] }];
        let response = encrypt_message(header(sa, true, false), &n, sa.sk(false), iv)?;
        Err(AuthError::Refuse { notify: kind, response })
    };
    let id = inner.iter().find_map(|p| match p {
        Payload::Id { initiator: true, id_type, data } => Some(Identity { id_type: *id_type, data: data.clone() }),
        _ => None,
    });
    let Some(id) = id else { return refuse(notify::AUTHENTICATION_FAILED) };
    // The identity must be the configured peer's, and the AUTH must verify (§2.15).
    if !cfg.peer.matches(&id) {
        tracing::info!(target: "espgw::ike", peer_id = %id, "IKE_AUTH: not the configured peer identity");
        return refuse(notify::AUTHENTICATION_FAILED);
    }
    if let Err(e) = cfg.credential.check(sa, Side::Initiator, &id, &inner) {
        tracing::info!(target: "espgw::ike", peer_id = %id, error = %e, "IKE_AUTH: the peer's AUTH does not verify");
        return refuse(notify::AUTHENTICATION_FAILED);
    }
    let offered = inner.iter().find_map(|p| match p {
        Payload::Sa(props) => Some(props.as_slice()),
        _ => None,
    });
    let (certs, auth_r) = cfg.credential.prove(sa, Side::Responder, &cfg.me)?;
    // IDr, [CERT,] AUTH first in every answer to an authenticated peer.
    let mut proof = vec![Payload::Id { initiator: false, id_type: cfg.me.id_type, data: cfg.me.data.clone() }];
    proof.extend(certs);
    proof.push(auth_r);
    // The peer is authenticated: a child SA we cannot make is refused
    // beside IDr and AUTH, and the IKE SA stands (§2.21.3).
    let refuse_child = |kind: u16| -> Result<(Vec<u8>, ChildSa), AuthError> {
        let n = Payload::Notify { protocol: 0, spi: vec![], kind, data: vec![] };
        let mut out = proof.clone();
        out.push(n);
        let response = encrypt_message(header(sa, true, false), &out, sa.sk(false), iv)?;
        Err(AuthError::Refuse { notify: kind, response })
    };
    let Some(chosen) = offered.and_then(|p| esp_suite::accept(p, &cfg.child.suites, cfg.child.esn)) else {
        return refuse_child(notify::NO_PROPOSAL_CHOSEN);
    };
    let (tsi, tsr) = (narrow(&selectors(&inner, true), allowed_tsi), narrow(&selectors(&inner, false), allowed_tsr));
    if tsi.is_empty() || tsr.is_empty() {
        return refuse_child(notify::TS_UNACCEPTABLE);
    }
    let len = chosen.suite.keymat_len();
    let km = sa.keys.child_keymat(None, &sa.ni, &sa.nr, 2 * len);
    let (i2r, r2i) = split_child_keys(&km, len).ok_or(AuthError::Invalid("key material"))?;
    let mut out = proof;
    out.extend([
        Payload::Sa(vec![chosen.suite.proposal(chosen.number, spi_in, chosen.esn, None)]),
        Payload::Ts { initiator: true, selectors: tsi.clone() },
        Payload::Ts { initiator: false, selectors: tsr.clone() },
    ]);
    let response = encrypt_message(header(sa, true, false), &out, sa.sk(false), iv)?;
    let (suite, esn, spi_out) = (chosen.suite, chosen.esn, chosen.spi);
    let lowest_nonce = sa.ni.as_slice().min(sa.nr.as_slice()).to_vec();
    Ok((response, ChildSa { spi_in, spi_out, suite, esn, key_in: i2r, key_out: r2i, tsi, tsr, lowest_nonce }))
}

/// The initiator: check the responder's AUTH and identity, take its SPI and
/// narrowed selectors.
pub fn complete<'a>(
    sa: &Established,
    cfg: &AuthConfig,
    spi_in: u32,
    msg: impl Into<Inbound<'a>>,
) -> Result<ChildSa, AuthError> {
    let (h, inner) = msg.into().open(sa.sk(false))?;
    if h.exchange != exchange::IKE_AUTH || !h.is_response() || (h.spi_i, h.spi_r) != (sa.spi_i, sa.spi_r) {
        return Err(AuthError::Invalid("not this IKE SA's IKE_AUTH response"));
    }
    let error = inner.iter().find_map(|p| match p {
        Payload::Notify { kind, .. } if *kind < 16384 => Some(*kind),
        _ => None,
    });
    let id = inner.iter().find_map(|p| match p {
        Payload::Id { initiator: false, id_type, data } => Some(Identity { id_type: *id_type, data: data.clone() }),
        _ => None,
    });
    // An error without IDr: the IKE SA itself was refused.
    if let (Some(kind), None) = (error, &id) {
        return Err(AuthError::Refused(kind));
    }
    let Some(id) = id else { return Err(AuthError::Invalid("IDr missing")) };
    if !cfg.peer.matches(&id) {
        tracing::info!(target: "espgw::ike", peer_id = %id, "IKE_AUTH: not the configured peer identity");
        return Err(AuthError::Refused(notify::AUTHENTICATION_FAILED));
    }
    if let Err(e) = cfg.credential.check(sa, Side::Responder, &id, &inner) {
        tracing::info!(target: "espgw::ike", peer_id = %id, error = %e, "IKE_AUTH: the peer's AUTH does not verify");
        return Err(AuthError::Refused(notify::AUTHENTICATION_FAILED));
    }
    if let Some(kind) = error {
        return Err(AuthError::ChildRefused(kind));
    }
    // The responder's choice must be one of ours, exactly as offered (§2.7).
    let chosen = inner.iter().find_map(|p| match p {
        Payload::Sa(props) if props.len() == 1 => esp_suite::accept(props, &cfg.child.suites, cfg.child.esn),
        _ => None,
    });
    let Some(chosen) = chosen else { return Err(AuthError::Invalid("no acceptable ESP proposal chosen")) };
    let len = chosen.suite.keymat_len();
    let km = sa.keys.child_keymat(None, &sa.ni, &sa.nr, 2 * len);
    let (i2r, r2i) = split_child_keys(&km, len).ok_or(AuthError::Invalid("key material"))?;
    Ok(ChildSa {
        spi_in,
        spi_out: chosen.spi,
        suite: chosen.suite,
        esn: chosen.esn,
        key_in: r2i,
        key_out: i2r,
        tsi: selectors(&inner, true),
        tsr: selectors(&inner, false),
        lowest_nonce: sa.ni.as_slice().min(sa.nr.as_slice()).to_vec(),
    })
}
