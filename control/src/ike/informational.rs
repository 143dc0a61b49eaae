//! INFORMATIONAL exchanges on an established IKE SA (RFC 7296 §1.4): the
//! empty one is the liveness check (DPD, §2.4), a Delete payload closes a
//! child SA or the IKE SA itself. Pure: requests and responses as bytes.
//!
//! Whoever sends protects with its own direction's key (the original
//! initiator SK_ei, the original responder SK_er) and sets the Initiator
//! flag only if it was the IKE SA's initiator; message IDs count the
//! requests of each side (§2.2).

use super::crypto::{encrypt_message, IkeCryptoError, Inbound, SkKey};
use super::message::{exchange, flags, Header, Payload};
use super::sa_init::Established;

/// Protocol ids in Delete payloads (§3.11).
pub const PROTO_IKE: u8 = 1;
pub const PROTO_ESP: u8 = 3;

/// Why an INFORMATIONAL message was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InfoError {
    /// Not the message we expected (exchange, SPIs, direction, message ID).
    Unexpected(&'static str),
    Crypto(IkeCryptoError),
}

impl From<IkeCryptoError> for InfoError {
    fn from(e: IkeCryptoError) -> Self {
        InfoError::Crypto(e)
    }
}

/// Our sending and receiving keys.
fn keys(sa: &Established, we_initiated: bool) -> (SkKey<'_>, SkKey<'_>) {
    (sa.sk(we_initiated), sa.sk(!we_initiated))
}

fn header(sa: &Established, we_initiated: bool, response: bool, message_id: u32) -> Header {
    let mut f = if we_initiated { flags::INITIATOR } else { 0 };
    if response {
        f |= flags::RESPONSE;
    }
    Header { spi_i: sa.spi_i, spi_r: sa.spi_r, minor: 0, exchange: exchange::INFORMATIONAL, flags: f, message_id }
}

/// An INFORMATIONAL request from us (`we_initiated`: we were the IKE SA's
/// initiator) with `payloads` (none: a liveness check).
pub fn request(
    sa: &Established,
    we_initiated: bool,
    message_id: u32,
    payloads: &[Payload],
    iv: [u8; 8],
) -> Result<Vec<u8>, InfoError> {
    let (send, _) = keys(sa, we_initiated);
    Ok(encrypt_message(header(sa, we_initiated, false, message_id), payloads, send, iv)?)
}

/// The peer's response to our request `message_id`: its payloads.
pub fn response<'a>(
    sa: &Established,
    we_initiated: bool,
    message_id: u32,
    msg: impl Into<Inbound<'a>>,
) -> Result<Vec<Payload>, InfoError> {
    let (_, recv) = keys(sa, we_initiated);
    let (h, inner) = msg.into().open(recv)?;
    if h.exchange != exchange::INFORMATIONAL || (h.spi_i, h.spi_r) != (sa.spi_i, sa.spi_r) {
        return Err(InfoError::Unexpected("not an INFORMATIONAL message of this IKE SA"));
    }
    if !h.is_response() || h.message_id != message_id || h.is_initiator() == we_initiated {
        return Err(InfoError::Unexpected("not the response to our request"));
    }
    Ok(inner)
}

/// A request from the peer: its message ID and payloads, and the response
/// to send — empty for a liveness check; for a Delete of child SAs, a
/// Delete of our matching inbound SPIs (`ours` maps the peer's SPI to ours,
/// §1.4.1); for a Delete of the IKE SA, empty (the SA is then gone).
pub fn answer<'a>(
    sa: &Established,
    we_initiated: bool,
    msg: impl Into<Inbound<'a>>,
    ours: impl Fn(u32) -> Option<u32>,
    iv: [u8; 8],
) -> Result<(u32, Vec<Payload>, Vec<u8>), InfoError> {
    let (send, recv) = keys(sa, we_initiated);
    let (h, inner) = msg.into().open(recv)?;
    if h.exchange != exchange::INFORMATIONAL || (h.spi_i, h.spi_r) != (sa.spi_i, sa.spi_r) || h.is_response() {
        return Err(InfoError::Unexpected("not an INFORMATIONAL request of this IKE SA"));
    }
    let mut reply = Vec::new();
    for p in &inner {
        if let Payload::Delete { protocol: PROTO_ESP, spi_size: 4, spis } = p {
            let mine: Vec<Vec<u8>> = spis
                .iter()
                .filter_map(|s| <[u8; 4]>::try_from(s.as_slice()).ok())
                .filter_map(|s| ours(u32::from_be_bytes(s)))
                .map(|s| s.to_be_bytes().to_vec())
                .collect();
            if !mine.is_empty() {
                reply.push(Payload::Delete { protocol: PROTO_ESP, spi_size: 4, spis: mine });
            }
        }
    }
    let out = encrypt_message(header(sa, we_initiated, true, h.message_id), &reply, send, iv)?;
    Ok((h.message_id, inner, out))
}
