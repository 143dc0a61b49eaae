//! Rekeying the IKE SA itself (RFC 7296 §1.3.2, §2.18), without losing its
//! child SAs: a CREATE_CHILD_SA carrying an IKE proposal with the new SPI
//! of its sender, a nonce and a fresh Diffie-Hellman share. The new IKE
//! SA's SPIs are the two proposals' SPIs (the rekey's initiator's first),
//! its keys `prf+(prf(SK_d old, g^ir new | Ni | Nr), Ni | Nr | SPIi | SPIr)`,
//! its message IDs start at 0, and whoever initiated the rekey is the new
//! SA's original initiator. The child SAs move to it; the initiator then
//! deletes the old IKE SA.

use zeroize::Zeroizing;

use super::create_child::{open_response, seal_request, RekeyError};
use super::crypto::{encrypt_message, Dh, IkeKeys, Inbound, SkKey};
use super::message::{proposals, Header, Payload};
use super::sa_init::{choose, nonce, notify, random_spi, Established, Suite};

/// An IKE SA rekey we started.
pub struct IkeRekey {
    message_id: u32,
    suite: Suite,
    dh: Dh,
    ni: Zeroizing<Vec<u8>>,
    spi: u64,
}

/// The nonce and the Curve25519 share of a message, if both are there.
fn nonce_and_ke(inner: &[Payload], group: u16) -> Option<(Vec<u8>, Vec<u8>)> {
    let n = inner.iter().find_map(|p| match p {
        Payload::Nonce(n) if (16..=256).contains(&n.len()) => Some(n.clone()),
        _ => None,
    })?;
    let ke = inner.iter().find_map(|p| match p {
        Payload::Ke { group: g, data } if *g == group => Some(data.clone()),
        _ => None,
    })?;
    Some((n, ke))
}

/// Is this CREATE_CHILD_SA request (decrypted payloads) an IKE SA rekey?
pub fn is_ike_rekey(inner: &[Payload]) -> bool {
    inner.iter().any(|p| matches!(p, Payload::Sa(props) if props.iter().any(|x| x.protocol == 1)))
}

/// Start rekeying `sa` (`we_initiated`: we were its original initiator)
/// with the suite it runs.
pub fn request(
    sa: &Established,
    we_initiated: bool,
    message_id: u32,
    iv: [u8; 8],
) -> Result<(IkeRekey, Vec<u8>), RekeyError> {
    let (spi, dh, ni) = (random_spi()?, Dh::generate(sa.suite.group)?, nonce()?);
    let payloads = vec![
        Payload::Sa(vec![sa.suite.proposal(spi.to_be_bytes().to_vec())]),
        Payload::Nonce(ni.to_vec()),
        Payload::Ke { group: sa.suite.group, data: dh.public().to_vec() },
    ];
    let bytes = seal_request(sa, we_initiated, message_id, &payloads, iv)?;
    Ok((IkeRekey { message_id, suite: sa.suite, dh, ni, spi }, bytes))
}

impl IkeRekey {
    /// The peer's response: the new IKE SA, of which we are the original initiator.
    pub fn complete<'a>(
        self,
        sa: &Established,
        we_initiated: bool,
        msg: impl Into<Inbound<'a>>,
    ) -> Result<Established, RekeyError> {
        let inner = open_response(sa, we_initiated, self.message_id, msg)?;
        let chosen = inner.iter().find_map(|p| match p {
            Payload::Sa(props) => props.first().cloned(),
            _ => None,
        });
        let Some(chosen) =
            chosen.filter(|p| choose(std::slice::from_ref(p), &[self.suite], None).map(|c| c.1) == Some(self.suite))
        else {
            return Err(RekeyError::Invalid("the peer chose a suite we did not offer"));
        };
        let spi_r = <[u8; 8]>::try_from(chosen.spi.as_slice())
            .map(u64::from_be_bytes)
            .map_err(|_| RekeyError::Invalid("the new responder SPI is not 8 bytes"))?;
        let (nr, ke) = nonce_and_ke(&inner, self.suite.group).ok_or(RekeyError::Invalid("nonce or KE missing"))?;
        let g_ir = self.dh.agree(&ke)?;
        let keys = IkeKeys::derive_rekey(
            self.suite.prf,
            &sa.keys,
            &g_ir,
            &self.ni,
            &nr,
            self.spi,
            spi_r,
            self.suite.encr_len(),
            self.suite.integ_len(),
        );
        Ok(Established {
            spi_i: self.spi,
            spi_r,
            suite: self.suite,
            keys,
            ni: self.ni,
            nr: Zeroizing::new(nr),
            nat: sa.nat,
            request: Vec::new(),
            response: Vec::new(),
            peer_hashes: sa.peer_hashes.clone(),
            peer_fragments: sa.peer_fragments,
        })
    }
}

/// What the responder of an IKE SA rekey did: the new IKE SA (the peer is
/// its original initiator) and the response, or a refusal to send.
pub enum IkeRekeyAnswer {
    Rekeyed { new: Box<Established>, response: Vec<u8> },
    Refused { notify: u16, response: Vec<u8> },
}

/// Answer the peer's IKE SA rekey (`h` its header, `inner` its decrypted
/// payloads; `send` our encryption key on the old SA; `ours` the suites
/// the connection accepts).
pub fn respond(
    sa: &Established,
    h: Header,
    response_flags: u8,
    inner: &[Payload],
    send: SkKey<'_>,
    ours: &[Suite],
    iv: [u8; 8],
) -> Result<IkeRekeyAnswer, RekeyError> {
    let header = Header { flags: response_flags, ..h };
    let refuse = |kind: u16, data: Vec<u8>| -> Result<IkeRekeyAnswer, RekeyError> {
        let n = vec![Payload::Notify { protocol: 0, spi: vec![], kind, data }];
        Ok(IkeRekeyAnswer::Refused { notify: kind, response: encrypt_message(header, &n, send, iv)? })
    };
    let offered = proposals(inner);
    let ke_group = inner.iter().find_map(|p| match p {
        Payload::Ke { group, .. } => Some(*group),
        _ => None,
    });
    let Some((number, suite)) = choose(&offered, ours, ke_group) else {
        return refuse(notify::NO_PROPOSAL_CHOSEN, vec![]);
    };
    let Some(spi_i) = offered
        .iter()
        .find(|p| p.number == number && p.protocol == 1)
        .and_then(|p| <[u8; 8]>::try_from(p.spi.as_slice()).ok())
        .map(u64::from_be_bytes)
    else {
        return refuse(notify::INVALID_SYNTAX, vec![]);
    };
    let Some((ni, ke)) = nonce_and_ke(inner, suite.group) else {
        return refuse(notify::INVALID_KE_PAYLOAD, suite.group.to_be_bytes().to_vec());
    };
    let (spi_r, dh, nr) = (random_spi()?, Dh::generate(suite.group)?, nonce()?);
    let public = dh.public().to_vec();
    let g_ir = dh.agree(&ke)?;
    let keys =
        IkeKeys::derive_rekey(suite.prf, &sa.keys, &g_ir, &ni, &nr, spi_i, spi_r, suite.encr_len(), suite.integ_len());
    let mut chosen = suite.proposal(spi_r.to_be_bytes().to_vec());
    chosen.number = number;
    let out =
        vec![Payload::Sa(vec![chosen]), Payload::Nonce(nr.to_vec()), Payload::Ke { group: suite.group, data: public }];
    let response = encrypt_message(header, &out, send, iv)?;
    let new = Established {
        spi_i,
        spi_r,
        suite,
        keys,
        ni: Zeroizing::new(ni),
        nr,
        nat: sa.nat,
        request: Vec::new(),
        response: Vec::new(),
        peer_hashes: sa.peer_hashes.clone(),
        peer_fragments: sa.peer_fragments,
    };
    Ok(IkeRekeyAnswer::Rekeyed { new: Box::new(new), response })
}
