//! The IKEv2 message codec (RFC 7296 §3): a message is a header and a chain
//! of payloads, each naming the type of the next. [`Message::decode`] checks
//! every length against the bytes that are there (no panic on any input)
//! and turns the chain into typed [`Payload`]s; [`Message::encode`] writes
//! them back, computing the chain and every length, so that
//! `decode(encode(m)) == m` for every message `decode` accepts.
//!
//! The Encrypted payload (SK, 46) and Encrypted Fragment (SKF, 53) are kept
//! opaque here (IV, ciphertext, ICV as one body, plus the type of the first
//! inner payload): decrypting them is the SA's business, and the plaintext
//! is a payload chain that [`decode_chain`] reads. An unknown payload is
//! kept as raw bytes, unless its critical bit is set: then the message is
//! refused (§2.5: the responder answers UNSUPPORTED_CRITICAL_PAYLOAD).

use std::net::IpAddr;

use thiserror::Error;

/// IKE header length.
pub const HEADER_LEN: usize = 28;
/// Generic payload header length.
pub const PAYLOAD_HEADER_LEN: usize = 4;

/// Exchange types (§3.1).
pub mod exchange {
    pub const IKE_SA_INIT: u8 = 34;
    pub const IKE_AUTH: u8 = 35;
    pub const CREATE_CHILD_SA: u8 = 36;
    pub const INFORMATIONAL: u8 = 37;
}

/// Header flags (§3.1).
pub mod flags {
    /// Sent by the original initiator of the IKE SA.
    pub const INITIATOR: u8 = 0x08;
    /// The sender speaks a higher major version.
    pub const VERSION: u8 = 0x10;
    /// A response.
    pub const RESPONSE: u8 = 0x20;
}

/// Payload type numbers (§3.2), one list.
pub mod kind {
    pub const NONE: u8 = 0;
    pub const SA: u8 = 33;
    pub const KE: u8 = 34;
    pub const IDI: u8 = 35;
    pub const IDR: u8 = 36;
    pub const CERT: u8 = 37;
    pub const CERTREQ: u8 = 38;
    pub const AUTH: u8 = 39;
    pub const NONCE: u8 = 40;
    pub const NOTIFY: u8 = 41;
    pub const DELETE: u8 = 42;
    pub const VENDOR_ID: u8 = 43;
    pub const TSI: u8 = 44;
    pub const TSR: u8 = 45;
    pub const SK: u8 = 46;
    pub const CP: u8 = 47;
    pub const EAP: u8 = 48;
    /// RFC 7383.
    pub const SKF: u8 = 53;
}

/// Why a message could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum IkeError {
    #[error("shorter than its header or a length field says")]
    Truncated,
    #[error("the length field disagrees with the datagram")]
    BadLength,
    #[error("major version {0}, not 2")]
    Version(u8),
    #[error("a payload length is below its header's or beyond the message")]
    BadPayloadLength,
    #[error("payload {0} is malformed")]
    Malformed(u8),
    #[error("unknown payload {0} marked critical")]
    UnsupportedCritical(u8),
    #[error("bytes after Encrypted payload {0} (it must be the last)")]
    AfterEncrypted(u8),
}

/// The IKE header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub spi_i: u64,
    pub spi_r: u64,
    /// Minor version (the major is always 2 here).
    pub minor: u8,
    pub exchange: u8,
    pub flags: u8,
    pub message_id: u32,
}

impl Header {
    pub fn is_response(&self) -> bool {
        self.flags & flags::RESPONSE != 0
    }
    pub fn is_initiator(&self) -> bool {
        self.flags & flags::INITIATOR != 0
    }
}

/// A transform attribute (§3.3.5): key length is the one IKEv2 defines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attribute {
    /// Type/value form (AF set): type 14 is the key length in bits.
    Tv { kind: u16, value: u16 },
    /// Type/length/value form.
    Tlv { kind: u16, value: Vec<u8> },
}

/// Transform attribute type: key length (§3.3.5).
pub const ATTR_KEY_LENGTH: u16 = 14;

/// A transform (§3.3.2): type (1 ENCR, 2 PRF, 3 INTEG, 4 DH/KE, 5 ESN) and id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transform {
    pub kind: u8,
    pub id: u16,
    pub attributes: Vec<Attribute>,
}

impl Transform {
    /// The key length attribute, if any.
    pub fn key_length(&self) -> Option<u16> {
        self.attributes.iter().find_map(|a| match a {
            Attribute::Tv { kind: ATTR_KEY_LENGTH, value } => Some(*value),
            _ => None,
        })
    }
}

/// A proposal (§3.3.1): number, protocol (1 IKE, 2 AH, 3 ESP), SPI, transforms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposal {
    pub number: u8,
    pub protocol: u8,
    pub spi: Vec<u8>,
    pub transforms: Vec<Transform>,
}

/// A traffic selector (§3.13.1), IPv4 (7) or IPv6 (8) address range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrafficSelector {
    pub protocol: u8,
    pub start_port: u16,
    pub end_port: u16,
    pub start: IpAddr,
    pub end: IpAddr,
}

impl TrafficSelector {
    /// Every protocol and port between two addresses of one family.
    pub fn range(start: IpAddr, end: IpAddr) -> Self {
        TrafficSelector { protocol: 0, start_port: 0, end_port: 65535, start, end }
    }
}

/// The selectors of the TSi (`initiator`) or TSr payload in `payloads` (none: empty).
pub fn selectors(payloads: &[Payload], initiator: bool) -> Vec<TrafficSelector> {
    payloads
        .iter()
        .find_map(|p| match p {
            Payload::Ts { initiator: i, selectors } if *i == initiator => Some(selectors.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

/// Every proposal of the SA payloads in `payloads`, in order.
pub fn proposals(payloads: &[Payload]) -> Vec<Proposal> {
    payloads
        .iter()
        .filter_map(|p| match p {
            Payload::Sa(props) => Some(props.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

/// One payload, typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    Sa(Vec<Proposal>),
    Ke {
        group: u16,
        data: Vec<u8>,
    },
    /// IDi / IDr: `initiator` tells which; id type (1 IPv4, 2 FQDN, 3 RFC822, 5 IPv6, ...).
    Id {
        initiator: bool,
        id_type: u8,
        data: Vec<u8>,
    },
    Cert {
        encoding: u8,
        data: Vec<u8>,
    },
    CertReq {
        encoding: u8,
        data: Vec<u8>,
    },
    Auth {
        method: u8,
        data: Vec<u8>,
    },
    Nonce(Vec<u8>),
    Notify {
        protocol: u8,
        spi: Vec<u8>,
        kind: u16,
        data: Vec<u8>,
    },
    Delete {
        protocol: u8,
        spi_size: u8,
        spis: Vec<Vec<u8>>,
    },
    VendorId(Vec<u8>),
    /// TSi / TSr.
    Ts {
        initiator: bool,
        selectors: Vec<TrafficSelector>,
    },
    /// SK: `first` names the first payload inside; `body` is IV || ciphertext || ICV.
    Encrypted {
        first: u8,
        body: Vec<u8>,
    },
    /// SKF (RFC 7383): fragment number and total, then as SK.
    EncryptedFragment {
        first: u8,
        number: u16,
        total: u16,
        body: Vec<u8>,
    },
    Cp {
        cfg_type: u8,
        attributes: Vec<u8>,
    },
    Eap(Vec<u8>),
    /// Anything else (never critical: that is refused).
    Unknown {
        kind: u8,
        data: Vec<u8>,
    },
}

impl Payload {
    /// This payload's type number.
    pub fn kind(&self) -> u8 {
        match self {
            Payload::Sa(_) => kind::SA,
            Payload::Ke { .. } => kind::KE,
            Payload::Id { initiator: true, .. } => kind::IDI,
            Payload::Id { initiator: false, .. } => kind::IDR,
            Payload::Cert { .. } => kind::CERT,
            Payload::CertReq { .. } => kind::CERTREQ,
            Payload::Auth { .. } => kind::AUTH,
            Payload::Nonce(_) => kind::NONCE,
            Payload::Notify { .. } => kind::NOTIFY,
            Payload::Delete { .. } => kind::DELETE,
            Payload::VendorId(_) => kind::VENDOR_ID,
            Payload::Ts { initiator: true, .. } => kind::TSI,
            Payload::Ts { initiator: false, .. } => kind::TSR,
            Payload::Encrypted { .. } => kind::SK,
            Payload::EncryptedFragment { .. } => kind::SKF,
            Payload::Cp { .. } => kind::CP,
            Payload::Eap(_) => kind::EAP,
            Payload::Unknown { kind, .. } => *kind,
        }
    }
}

/// A whole IKE message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub header: Header,
    pub payloads: Vec<Payload>,
}

/// A cursor over bytes that cannot read past its end.
struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (h, t) = (self.b.get(..n)?, self.b.get(n..)?);
        self.b = t;
        Some(h)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8).map(|b| u64::from_be_bytes(b.try_into().unwrap_or([0; 8])))
    }
    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.b)
    }
}

impl Message {
    /// Decode a datagram's IKE message (UDP 500, or 4500 after the non-ESP marker).
    pub fn decode(bytes: &[u8]) -> Result<Message, IkeError> {
        let mut r = Reader { b: bytes };
        let h = r.take(HEADER_LEN).ok_or(IkeError::Truncated)?;
        let mut hr = Reader { b: h };
        let (spi_i, spi_r) = (hr.u64().ok_or(IkeError::Truncated)?, hr.u64().ok_or(IkeError::Truncated)?);
        let next = hr.u8().ok_or(IkeError::Truncated)?;
        let version = hr.u8().ok_or(IkeError::Truncated)?;
        if version >> 4 != 2 {
            return Err(IkeError::Version(version >> 4));
        }
        let (exchange, fl) = (hr.u8().ok_or(IkeError::Truncated)?, hr.u8().ok_or(IkeError::Truncated)?);
        let message_id = hr.u32().ok_or(IkeError::Truncated)?;
        let length = hr.u32().ok_or(IkeError::Truncated)? as usize;
        if length != bytes.len() {
            return Err(if length > bytes.len() { IkeError::Truncated } else { IkeError::BadLength });
        }
        let header = Header { spi_i, spi_r, minor: version & 0x0f, exchange, flags: fl, message_id };
        let payloads = decode_chain(next, r.rest())?;
        Ok(Message { header, payloads })
    }

    /// Encode: the payload chain, every length and the header's.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        let h = &self.header;
        out.extend_from_slice(&h.spi_i.to_be_bytes());
        out.extend_from_slice(&h.spi_r.to_be_bytes());
        out.push(self.payloads.first().map_or(kind::NONE, Payload::kind));
        out.push(0x20 | (h.minor & 0x0f));
        out.push(h.exchange);
        out.push(h.flags);
        out.extend_from_slice(&h.message_id.to_be_bytes());
        out.extend_from_slice(&[0; 4]);
        encode_chain(&self.payloads, &mut out);
        let len = (out.len() as u32).to_be_bytes();
        out[24..28].copy_from_slice(&len);
        out
    }
}

/// Decode a payload chain starting with type `first` (a message's, or the
/// plaintext of an Encrypted payload).
pub fn decode_chain(first: u8, bytes: &[u8]) -> Result<Vec<Payload>, IkeError> {
    let mut r = Reader { b: bytes };
    let mut next = first;
    let mut out = Vec::new();
    while next != kind::NONE {
        let this = next;
        let hdr = r.take(PAYLOAD_HEADER_LEN).ok_or(IkeError::Truncated)?;
        next = hdr[0];
        let critical = hdr[1] & 0x80 != 0;
        let len = usize::from(u16::from_be_bytes([hdr[2], hdr[3]]));
        let body = len.checked_sub(PAYLOAD_HEADER_LEN).and_then(|n| r.take(n)).ok_or(IkeError::BadPayloadLength)?;
        let p = decode_payload(this, next, critical, body)?;
        let encrypted = matches!(p, Payload::Encrypted { .. } | Payload::EncryptedFragment { .. });
        out.push(p);
        if encrypted {
            // Its "next" names the first payload inside; it must be the last outside.
            if !r.b.is_empty() {
                return Err(IkeError::AfterEncrypted(this));
            }
            break;
        }
    }
    if !r.b.is_empty() {
        return Err(IkeError::BadPayloadLength); // bytes after the chain's end
    }
    Ok(out)
}

fn decode_payload(this: u8, next: u8, critical: bool, body: &[u8]) -> Result<Payload, IkeError> {
    let bad = || IkeError::Malformed(this);
    let mut r = Reader { b: body };
    Ok(match this {
        kind::SA => Payload::Sa(decode_proposals(body).ok_or_else(bad)?),
        kind::KE => {
            let group = r.u16().ok_or_else(bad)?;
            r.take(2).ok_or_else(bad)?;
            Payload::Ke { group, data: r.rest().to_vec() }
        }
        kind::IDI | kind::IDR => {
            let id_type = r.u8().ok_or_else(bad)?;
            r.take(3).ok_or_else(bad)?;
            Payload::Id { initiator: this == kind::IDI, id_type, data: r.rest().to_vec() }
        }
        kind::CERT | kind::CERTREQ => {
            let encoding = r.u8().ok_or_else(bad)?;
            let data = r.rest().to_vec();
            if this == kind::CERT {
                Payload::Cert { encoding, data }
            } else {
                Payload::CertReq { encoding, data }
            }
        }
        kind::AUTH => {
            let method = r.u8().ok_or_else(bad)?;
            r.take(3).ok_or_else(bad)?;
            Payload::Auth { method, data: r.rest().to_vec() }
        }
        kind::NONCE => Payload::Nonce(body.to_vec()),
        kind::NOTIFY => {
            let (protocol, spi_size) = (r.u8().ok_or_else(bad)?, r.u8().ok_or_else(bad)?);
            let kind = r.u16().ok_or_else(bad)?;
            let spi = r.take(usize::from(spi_size)).ok_or_else(bad)?.to_vec();
            Payload::Notify { protocol, spi, kind, data: r.rest().to_vec() }
        }
        kind::DELETE => {
            let (protocol, spi_size) = (r.u8().ok_or_else(bad)?, r.u8().ok_or_else(bad)?);
            let n = r.u16().ok_or_else(bad)?;
            if spi_size == 0 && n != 0 {
                return Err(bad());
            }
            let spis = (0..n).map(|_| r.take(usize::from(spi_size)).map(<[u8]>::to_vec)).collect::<Option<Vec<_>>>();
            let spis = spis.ok_or_else(bad)?;
            if !r.rest().is_empty() {
                return Err(bad());
            }
            Payload::Delete { protocol, spi_size, spis }
        }
        kind::VENDOR_ID => Payload::VendorId(body.to_vec()),
        kind::TSI | kind::TSR => {
            let n = r.u8().ok_or_else(bad)?;
            r.take(3).ok_or_else(bad)?;
            let mut selectors = Vec::with_capacity(usize::from(n).min(16));
            for _ in 0..n {
                selectors.push(decode_selector(&mut r).ok_or_else(bad)?);
            }
            if !r.rest().is_empty() {
                return Err(bad());
            }
            Payload::Ts { initiator: this == kind::TSI, selectors }
        }
        // The first inner payload's type is the generic header's "next".
        kind::SK => Payload::Encrypted { first: next, body: body.to_vec() },
        kind::SKF => {
            let (number, total) = (r.u16().ok_or_else(bad)?, r.u16().ok_or_else(bad)?);
            if number == 0 || number > total {
                return Err(bad());
            }
            Payload::EncryptedFragment { first: next, number, total, body: r.rest().to_vec() }
        }
        kind::CP => {
            let cfg_type = r.u8().ok_or_else(bad)?;
            r.take(3).ok_or_else(bad)?;
            Payload::Cp { cfg_type, attributes: r.rest().to_vec() }
        }
        kind::EAP => Payload::Eap(body.to_vec()),
        other if critical => return Err(IkeError::UnsupportedCritical(other)),
        other => Payload::Unknown { kind: other, data: body.to_vec() },
    })
}

/// The SK/SKF payload's "next payload" is its first inner payload's type,
/// so the chain link of the *following* payload must be NONE (it is last).
fn next_field(payloads: &[Payload], i: usize) -> u8 {
    match &payloads[i] {
        Payload::Encrypted { first, .. } | Payload::EncryptedFragment { first, .. } => *first,
        _ => payloads.get(i + 1).map_or(kind::NONE, Payload::kind),
    }
}

/// Encode a payload chain (a message's, or an Encrypted payload's plaintext).
pub fn encode_chain(payloads: &[Payload], out: &mut Vec<u8>) {
    for i in 0..payloads.len() {
        let start = out.len();
        out.push(next_field(payloads, i));
        out.push(0);
        out.extend_from_slice(&[0, 0]);
        encode_body(&payloads[i], out);
        let len = ((out.len() - start) as u16).to_be_bytes();
        out[start + 2..start + 4].copy_from_slice(&len);
    }
}

fn encode_body(p: &Payload, out: &mut Vec<u8>) {
    match p {
        Payload::Sa(props) => encode_proposals(props, out),
        Payload::Ke { group, data } => {
            out.extend_from_slice(&group.to_be_bytes());
            out.extend_from_slice(&[0, 0]);
            out.extend_from_slice(data);
        }
        Payload::Id { id_type, data, .. } => {
            out.extend_from_slice(&[*id_type, 0, 0, 0]);
            out.extend_from_slice(data);
        }
        Payload::Cert { encoding, data } | Payload::CertReq { encoding, data } => {
            out.push(*encoding);
            out.extend_from_slice(data);
        }
        Payload::Auth { method, data } => {
            out.extend_from_slice(&[*method, 0, 0, 0]);
            out.extend_from_slice(data);
        }
        Payload::Nonce(d) | Payload::VendorId(d) | Payload::Eap(d) => out.extend_from_slice(d),
        Payload::Notify { protocol, spi, kind, data } => {
            out.extend_from_slice(&[*protocol, spi.len() as u8]);
            out.extend_from_slice(&kind.to_be_bytes());
            out.extend_from_slice(spi);
            out.extend_from_slice(data);
        }
        Payload::Delete { protocol, spi_size, spis } => {
            out.extend_from_slice(&[*protocol, *spi_size]);
            out.extend_from_slice(&(spis.len() as u16).to_be_bytes());
            for s in spis {
                out.extend_from_slice(s);
            }
        }
        Payload::Ts { selectors, .. } => {
            out.extend_from_slice(&[selectors.len() as u8, 0, 0, 0]);
            for s in selectors {
                encode_selector(s, out);
            }
        }
        Payload::Encrypted { body, .. } => out.extend_from_slice(body),
        Payload::EncryptedFragment { number, total, body, .. } => {
            out.extend_from_slice(&number.to_be_bytes());
            out.extend_from_slice(&total.to_be_bytes());
            out.extend_from_slice(body);
        }
        Payload::Cp { cfg_type, attributes } => {
            out.extend_from_slice(&[*cfg_type, 0, 0, 0]);
            out.extend_from_slice(attributes);
        }
        Payload::Unknown { data, .. } => out.extend_from_slice(data),
    }
}

/// Proposal substructures (§3.3.1): each says whether another follows (2) or not (0).
fn decode_proposals(body: &[u8]) -> Option<Vec<Proposal>> {
    let mut r = Reader { b: body };
    let mut out = Vec::new();
    loop {
        let last = r.u8()?;
        r.u8()?;
        let len = usize::from(r.u16()?);
        let mut p = Reader { b: r.take(len.checked_sub(4)?)? };
        let (number, protocol, spi_size, n) = (p.u8()?, p.u8()?, p.u8()?, p.u8()?);
        let spi = p.take(usize::from(spi_size))?.to_vec();
        let mut transforms = Vec::with_capacity(usize::from(n));
        for i in 0..n {
            let t_last = p.u8()?;
            if (t_last == 0) != (i + 1 == n) || !matches!(t_last, 0 | 3) {
                return None;
            }
            p.u8()?;
            let t_len = usize::from(p.u16()?);
            let mut t = Reader { b: p.take(t_len.checked_sub(4)?)? };
            let kind = t.u8()?;
            t.u8()?;
            let id = t.u16()?;
            let mut attributes = Vec::new();
            while !t.b.is_empty() {
                let ty = t.u16()?;
                if ty & 0x8000 != 0 {
                    attributes.push(Attribute::Tv { kind: ty & 0x7fff, value: t.u16()? });
                } else {
                    let l = usize::from(t.u16()?);
                    attributes.push(Attribute::Tlv { kind: ty, value: t.take(l)?.to_vec() });
                }
            }
            transforms.push(Transform { kind, id, attributes });
        }
        if !p.b.is_empty() {
            return None;
        }
        out.push(Proposal { number, protocol, spi, transforms });
        match last {
            0 if r.b.is_empty() => return Some(out),
            2 => continue,
            _ => return None,
        }
    }
}

fn encode_proposals(props: &[Proposal], out: &mut Vec<u8>) {
    for (i, p) in props.iter().enumerate() {
        let start = out.len();
        out.extend_from_slice(&[if i + 1 == props.len() { 0 } else { 2 }, 0, 0, 0]);
        out.extend_from_slice(&[p.number, p.protocol, p.spi.len() as u8, p.transforms.len() as u8]);
        out.extend_from_slice(&p.spi);
        for (j, t) in p.transforms.iter().enumerate() {
            let ts = out.len();
            out.extend_from_slice(&[if j + 1 == p.transforms.len() { 0 } else { 3 }, 0, 0, 0]);
            out.extend_from_slice(&[t.kind, 0]);
            out.extend_from_slice(&t.id.to_be_bytes());
            for a in &t.attributes {
                match a {
                    Attribute::Tv { kind, value } => {
                        out.extend_from_slice(&(kind | 0x8000).to_be_bytes());
                        out.extend_from_slice(&value.to_be_bytes());
                    }
                    Attribute::Tlv { kind, value } => {
                        out.extend_from_slice(&(kind & 0x7fff).to_be_bytes());
                        out.extend_from_slice(&(value.len() as u16).to_be_bytes());
                        out.extend_from_slice(value);
                    }
                }
            }
            let l = ((out.len() - ts) as u16).to_be_bytes();
            out[ts + 2..ts + 4].copy_from_slice(&l);
        }
        let l = ((out.len() - start) as u16).to_be_bytes();
        out[start + 2..start + 4].copy_from_slice(&l);
    }
}

fn decode_selector(r: &mut Reader<'_>) -> Option<TrafficSelector> {
    let ts_type = r.u8()?;
    let protocol = r.u8()?;
    let len = usize::from(r.u16()?);
    let alen = match (ts_type, len) {
        (7, 16) => 4,
        (8, 40) => 16,
        _ => return None,
    };
    let (start_port, end_port) = (r.u16()?, r.u16()?);
    let addr = |b: &[u8]| -> IpAddr {
        match <[u8; 4]>::try_from(b) {
            Ok(a) => IpAddr::from(a),
            Err(_) => IpAddr::from(<[u8; 16]>::try_from(b).unwrap_or([0; 16])),
        }
    };
    let start = addr(r.take(alen)?);
    let end = addr(r.take(alen)?);
    Some(TrafficSelector { protocol, start_port, end_port, start, end })
}

fn encode_selector(s: &TrafficSelector, out: &mut Vec<u8>) {
    let (ty, len) = if s.start.is_ipv4() { (7u8, 16u16) } else { (8, 40) };
    out.extend_from_slice(&[ty, s.protocol]);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&s.start_port.to_be_bytes());
    out.extend_from_slice(&s.end_port.to_be_bytes());
    for a in [s.start, s.end] {
        match a {
            IpAddr::V4(a) => out.extend_from_slice(&a.octets()),
            IpAddr::V6(a) => out.extend_from_slice(&a.octets()),
        }
    }
}

/// Fuzz/roundtrip oracle: whatever decodes re-encodes to a message that
/// decodes to the same thing, and an accepted message's encoding is as long
/// as its length field says.
pub fn check_roundtrip(bytes: &[u8]) -> Result<(), String> {
    let Ok(m) = Message::decode(bytes) else { return Ok(()) };
    let again = m.encode();
    let m2 = Message::decode(&again).map_err(|e| format!("re-encoded message refused: {e}"))?;
    if m2 != m {
        return Err(format!("decode(encode(m)) != m\n  m:  {m:?}\n  m2: {m2:?}"));
    }
    Ok(())
}
