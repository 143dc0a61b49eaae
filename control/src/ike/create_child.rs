//! CREATE_CHILD_SA for rekeying a child SA (RFC 7296 §1.3.3): the
//! initiator of this exchange names the SA it rekeys (REKEY_SA with its
//! inbound SPI), offers the ESP proposal with the new SPI, a fresh nonce and
//! the selectors; the new KEYMAT is `prf+(SK_d, Ni | Nr)` of this
//! exchange's nonces, this exchange's initiator-to-responder key first.
//! With perfect forward secrecy (§1.3.1, §2.17) the proposal carries a
//! Diffie-Hellman group (Curve25519), both sides send a KE payload, and the
//! KEYMAT is `prf+(SK_d, g^ir (new) | Ni | Nr)`: a later leak of the IKE
//! SA's keys does not reveal the child's.
//! Make-before-break: the old SA stays until the new one is installed and
//! the old is deleted by an INFORMATIONAL exchange.

use zeroize::Zeroizing;

use super::auth::split_child_keys;
use super::crypto::{encrypt_message, Dh, IkeCryptoError, Inbound, GROUP_X25519};
use super::esp_suite::{self, ChildPolicy};
use super::ike_auth::ChildSa;
use super::ike_rekey::IkeRekeyAnswer;
use super::message::{exchange, flags, proposals, selectors, Header, Payload, Proposal, TrafficSelector};
use super::sa_init::transform;
use super::sa_init::{nonce, Established};

/// REKEY_SA (§3.10.1).
pub const REKEY_SA: u16 = 16393;
/// Refusals of a rekey (§3.10.1): the SA is being closed, try later; no
/// such SA.
pub const TEMPORARY_FAILURE: u16 = 43;
pub const CHILD_SA_NOT_FOUND: u16 = 44;

/// What the child SA a peer's REKEY_SA names is to us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RekeyTarget {
    /// One of ours, live (or being rekeyed by us too: a collision, §2.8.1).
    Ours,
    /// One we are deleting: TEMPORARY_FAILURE (§2.25).
    Closing,
    /// None of ours: CHILD_SA_NOT_FOUND.
    Unknown,
}

/// The lower of an exchange's two nonces: of two colliding rekeys, the
/// one with the lowest of the four nonces made the redundant SA (§2.8.1).
fn lowest(a: &[u8], b: &[u8]) -> Vec<u8> {
    a.min(b).to_vec()
}

/// Why a rekey did not complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RekeyError {
    Refused(u16),
    Invalid(&'static str),
    Crypto(IkeCryptoError),
}

impl From<IkeCryptoError> for RekeyError {
    fn from(e: IkeCryptoError) -> Self {
        RekeyError::Crypto(e)
    }
}

/// A rekey we started: what its completion needs.
pub struct Rekey {
    message_id: u32,
    ni: Zeroizing<Vec<u8>>,
    spi_in: u32,
    policy: ChildPolicy,
    /// Our Diffie-Hellman half when we asked for PFS.
    dh: Option<Dh>,
}

/// Does the peer's proposal `number` ask for PFS? `Some(Some(group))`
/// with a group we run (the peer's first such), `Some(None)` without a
/// group (or with NONE among them), `None` when it only names groups we
/// do not run.
fn pfs_asked(props: &[Proposal], number: u8) -> Option<Option<u16>> {
    let p = props.iter().find(|p| p.number == number && p.protocol == 3)?;
    let groups: Vec<u16> = p.transforms.iter().filter(|t| t.kind == transform::KE).map(|t| t.id).collect();
    if groups.is_empty() || groups == [0] {
        Some(None)
    } else if let Some(g) = groups.iter().find(|g| Dh::supports(**g)) {
        Some(Some(*g))
    } else {
        groups.contains(&0).then_some(None)
    }
}

/// The peer's share in `group`, if it sent one.
fn ke_of(inner: &[Payload], group: u16) -> Option<&[u8]> {
    inner.iter().find_map(|p| match p {
        Payload::Ke { group: g, data } if *g == group => Some(data.as_slice()),
        _ => None,
    })
}

/// Start rekeying the child SA whose inbound SPI is `old_spi_in` (REKEY_SA),
/// or, with `None`, creating a new child SA (§1.3.1); the new one will
/// receive on `new_spi_in`. `we_initiated`: we were the IKE SA's initiator.
#[allow(clippy::too_many_arguments)]
pub fn request(
    sa: &Established,
    we_initiated: bool,
    message_id: u32,
    old_spi_in: Option<u32>,
    new_spi_in: u32,
    policy: &ChildPolicy,
    tsi: &[TrafficSelector],
    tsr: &[TrafficSelector],
    iv: [u8; 8],
) -> Result<(Rekey, Vec<u8>), RekeyError> {
    // Our rekeys with PFS use Curve25519 (the peer may ask us for another group).
    let pfs = policy.pfs.then_some(GROUP_X25519);
    let ni = nonce()?;
    let dh = pfs.map(Dh::generate).transpose()?;
    let mut payloads: Vec<Payload> = old_spi_in
        .map(|old| Payload::Notify { protocol: 3, spi: old.to_be_bytes().to_vec(), kind: REKEY_SA, data: vec![] })
        .into_iter()
        .collect();
    payloads.push(Payload::Sa(esp_suite::offer(&policy.suites, new_spi_in, policy.esn, pfs)));
    payloads.push(Payload::Nonce(ni.to_vec()));
    if let Some(dh) = &dh {
        payloads.push(Payload::Ke { group: dh.group(), data: dh.public().to_vec() });
    }
    payloads.push(Payload::Ts { initiator: true, selectors: tsi.to_vec() });
    payloads.push(Payload::Ts { initiator: false, selectors: tsr.to_vec() });
    let bytes = seal_request(sa, we_initiated, message_id, &payloads, iv)?;
    Ok((Rekey { message_id, ni, spi_in: new_spi_in, policy: policy.clone(), dh }, bytes))
}

/// A CREATE_CHILD_SA request of ours on `sa` (`we_initiated`: we were its
/// original initiator, which sets the I flag and picks the key).
pub(super) fn seal_request(
    sa: &Established,
    we_initiated: bool,
    message_id: u32,
    payloads: &[Payload],
    iv: [u8; 8],
) -> Result<Vec<u8>, RekeyError> {
    let flags = if we_initiated { flags::INITIATOR } else { 0 };
    let h =
        Header { spi_i: sa.spi_i, spi_r: sa.spi_r, minor: 0, exchange: exchange::CREATE_CHILD_SA, flags, message_id };
    let key = sa.sk(we_initiated);
    Ok(encrypt_message(h, payloads, key, iv)?)
}

/// The peer's response to our CREATE_CHILD_SA `message_id`: its payloads,
/// or the error it notified.
pub(super) fn open_response<'a>(
    sa: &Established,
    we_initiated: bool,
    message_id: u32,
    msg: impl Into<Inbound<'a>>,
) -> Result<Vec<Payload>, RekeyError> {
    let key = sa.sk(!we_initiated);
    let (h, inner) = msg.into().open(key)?;
    if h.exchange != exchange::CREATE_CHILD_SA
        || !h.is_response()
        || h.message_id != message_id
        || (h.spi_i, h.spi_r) != (sa.spi_i, sa.spi_r)
    {
        return Err(RekeyError::Invalid("not the response to our CREATE_CHILD_SA"));
    }
    if let Some(k) = inner.iter().find_map(|p| match p {
        Payload::Notify { kind, .. } if *kind < 16384 => Some(*kind),
        _ => None,
    }) {
        return Err(RekeyError::Refused(k));
    }
    Ok(inner)
}

impl Rekey {
    /// The peer's response: the new child SA (our outbound key first from KEYMAT).
    pub fn complete<'a>(
        self,
        sa: &Established,
        we_initiated: bool,
        msg: impl Into<Inbound<'a>>,
    ) -> Result<ChildSa, RekeyError> {
        let inner = open_response(sa, we_initiated, self.message_id, msg)?;
        let Some(chosen) = inner.iter().find_map(|p| match p {
            Payload::Sa(props) if props.len() == 1 => esp_suite::accept(props, &self.policy.suites, self.policy.esn),
            _ => None,
        }) else {
            return Err(RekeyError::Invalid("no acceptable ESP proposal chosen"));
        };
        let Some(nr) = inner.iter().find_map(|p| match p {
            Payload::Nonce(n) if (16..=256).contains(&n.len()) => Some(n.clone()),
            _ => None,
        }) else {
            return Err(RekeyError::Invalid("no nonce"));
        };
        let g_ir = match self.dh {
            Some(dh) => {
                let ke = ke_of(&inner, dh.group()).ok_or(RekeyError::Invalid("PFS asked for, no KE answered"))?;
                Some(dh.agree(ke)?)
            }
            None => None,
        };
        let len = chosen.suite.keymat_len();
        let km = sa.keys.child_keymat(g_ir.as_deref().map(|g| g.as_slice()), &self.ni, &nr, 2 * len);
        let (i2r, r2i) = split_child_keys(&km, len).ok_or(RekeyError::Invalid("key material"))?;
        Ok(ChildSa {
            spi_in: self.spi_in,
            spi_out: chosen.spi,
            suite: chosen.suite,
            esn: chosen.esn,
            key_in: r2i,
            key_out: i2r,
            tsi: selectors(&inner, true),
            tsr: selectors(&inner, false),
            lowest_nonce: lowest(&self.ni, &nr),
        })
    }
}

/// What the responder of a CREATE_CHILD_SA request did.
pub enum Answer {
    /// A child SA rekeyed: the peer's SPI of the old one (its REKEY_SA),
    /// the new child, the response to send.
    Rekeyed { old_spi_out: u32, child: ChildSa, response: Vec<u8> },
    /// A new child SA (no REKEY_SA, §1.3.1), the response to send.
    Created { child: ChildSa, response: Vec<u8> },
    /// The IKE SA itself rekeyed (§1.3.2): the new one (the peer is its
    /// original initiator), the response to send on the old one.
    IkeRekeyed { new: Box<Established>, response: Vec<u8> },
    /// Refused with this notify (a new child, PFS, no acceptable
    /// proposal); the response to send.
    Refused { notify: u16, response: Vec<u8> },
}

/// Answer the peer's CREATE_CHILD_SA request (`we_initiated`: we were the
/// IKE SA's initiator): a rekey of one of our child SAs (`target` says
/// what the REKEY_SA SPI, our outbound SPI, is to us) is
/// accepted with our new inbound SPI `new_spi_in`, the selectors narrowed
/// to `allowed_tsi`/`allowed_tsr`; with `new_children` a new child SA
/// (no REKEY_SA) is made the same way; an IKE SA rekey is answered with
/// one of the suites `ike`; anything else is refused as §1.3 says.
#[allow(clippy::too_many_arguments)]
pub fn respond<'a>(
    sa: &Established,
    we_initiated: bool,
    msg: impl Into<Inbound<'a>>,
    target: impl Fn(u32) -> RekeyTarget,
    new_children: bool,
    new_spi_in: u32,
    policy: &ChildPolicy,
    ike: &[super::sa_init::Suite],
    allowed_tsi: &[TrafficSelector],
    allowed_tsr: &[TrafficSelector],
    iv: [u8; 8],
) -> Result<(u32, Answer), RekeyError> {
    let (recv, send) = (sa.sk(!we_initiated), sa.sk(we_initiated));
    let (h, inner) = msg.into().open(recv)?;
    if h.exchange != exchange::CREATE_CHILD_SA || h.is_response() || (h.spi_i, h.spi_r) != (sa.spi_i, sa.spi_r) {
        return Err(RekeyError::Invalid("not a CREATE_CHILD_SA request of this IKE SA"));
    }
    let f = flags::RESPONSE | if we_initiated { flags::INITIATOR } else { 0 };
    let header = Header { flags: f, ..h };
    let refuse = |notify: u16| -> Result<(u32, Answer), RekeyError> {
        let n = vec![Payload::Notify { protocol: 0, spi: vec![], kind: notify, data: vec![] }];
        Ok((h.message_id, Answer::Refused { notify, response: encrypt_message(header, &n, send, iv)? }))
    };
    if super::ike_rekey::is_ike_rekey(&inner) {
        return Ok((
            h.message_id,
            match super::ike_rekey::respond(sa, h, f, &inner, send, ike, iv)? {
                IkeRekeyAnswer::Rekeyed { new, response } => Answer::IkeRekeyed { new, response },
                IkeRekeyAnswer::Refused { notify, response } => Answer::Refused { notify, response },
            },
        ));
    }
    let old = inner.iter().find_map(|p| match p {
        Payload::Notify { kind: REKEY_SA, protocol: 3, spi, .. } => <[u8; 4]>::try_from(spi.as_slice()).ok(),
        _ => None,
    });
    // No REKEY_SA: a new child SA (§1.3.1), e.g. the peer recreating one
    // that expired on its side.
    let old = old.map(u32::from_be_bytes);
    match old.map(&target) {
        Some(RekeyTarget::Ours) => {}
        Some(RekeyTarget::Closing) => return refuse(TEMPORARY_FAILURE),
        Some(RekeyTarget::Unknown) => return refuse(CHILD_SA_NOT_FOUND),
        None if !new_children => return refuse(super::sa_init::notify::NO_ADDITIONAL_SAS),
        None => {}
    }
    let offered = proposals(&inner);
    let Some(chosen) = esp_suite::accept(&offered, &policy.suites, policy.esn) else {
        return refuse(super::ike_auth::notify::NO_PROPOSAL_CHOSEN);
    };
    let Some(pfs) = pfs_asked(&offered, chosen.number) else {
        return refuse(super::ike_auth::notify::NO_PROPOSAL_CHOSEN);
    };
    let peer_ke = pfs.and_then(|g| ke_of(&inner, g));
    if let (Some(group), None) = (pfs, peer_ke) {
        // §1.3: the group we want, and the peer tries again with it.
        let n = vec![Payload::Notify {
            protocol: 0,
            spi: vec![],
            kind: super::sa_init::notify::INVALID_KE_PAYLOAD,
            data: group.to_be_bytes().to_vec(),
        }];
        let response = encrypt_message(header, &n, send, iv)?;
        return Ok((h.message_id, Answer::Refused { notify: super::sa_init::notify::INVALID_KE_PAYLOAD, response }));
    }
    let Some(ni) = inner.iter().find_map(|p| match p {
        Payload::Nonce(n) if (16..=256).contains(&n.len()) => Some(n.clone()),
        _ => None,
    }) else {
        return Err(RekeyError::Invalid("no nonce"));
    };
    let tsi = super::auth::narrow(&selectors(&inner, true), allowed_tsi);
    let tsr = super::auth::narrow(&selectors(&inner, false), allowed_tsr);
    if tsi.is_empty() || tsr.is_empty() {
        return refuse(super::ike_auth::notify::TS_UNACCEPTABLE);
    }
    let nr = nonce()?;
    let answer = chosen.suite.proposal(chosen.number, new_spi_in, chosen.esn, pfs);
    let mut out = vec![Payload::Sa(vec![answer]), Payload::Nonce(nr.to_vec())];
    let g_ir = match (pfs, peer_ke) {
        (Some(group), Some(ke)) => {
            let dh = Dh::generate(group)?;
            out.push(Payload::Ke { group, data: dh.public().to_vec() });
            Some(dh.agree(ke)?)
        }
        _ => None,
    };
    out.push(Payload::Ts { initiator: true, selectors: tsi.clone() });
    out.push(Payload::Ts { initiator: false, selectors: tsr.clone() });
    let response = encrypt_message(header, &out, send, iv)?;
    let len = chosen.suite.keymat_len();
    let km = sa.keys.child_keymat(g_ir.as_deref().map(|g| g.as_slice()), &ni, &nr, 2 * len);
    let (i2r, r2i) = split_child_keys(&km, len).ok_or(RekeyError::Invalid("key material"))?;
    let (spi_out, suite, esn) = (chosen.spi, chosen.suite, chosen.esn);
    let lowest_nonce = lowest(&ni, &nr);
    let child = ChildSa { spi_in: new_spi_in, spi_out, suite, esn, key_in: i2r, key_out: r2i, tsi, tsr, lowest_nonce };
    Ok((
        h.message_id,
        match old {
            Some(old_spi_out) => Answer::Rekeyed { old_spi_out, child, response },
            None => Answer::Created { child, response },
        },
    ))
}
