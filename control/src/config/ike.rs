//! `[[connection]]`: IKEv2 peers whose SAs the control thread negotiates
//! (issue 19), validated with file:line errors like the rest.
//!
//! ```toml
//! [[connection]]
//! name = "east"
//! local = "192.0.2.1"            # one of the gateway's port addresses
//! remote = "203.0.113.2"         # the peer
//! local_id = "west.example"      # FQDN, user@FQDN, an IP address, or with a certificate
//!                                #   a DN "CN=west, O=Example" (default: local)
//! remote_id = "east.example"     # default: remote
//! psk = "shared secret"          # or psk_file = "east.psk" (relative to the config), or
//! # cert = "west.crt"            #   certificates (PEM, relative to the config): ours (then
//! # key = "west.key"             #   any intermediates), its PKCS#8 key (ECDSA or RSA), and
//! # ca = "ca.crt"                #   the CA(s) the peer's must chain to; local_id defaults
//!                                #   to our certificate's first subjectAltName
//! ike = ["aes128gcm16-prfsha256-x25519"]  # the IKE SA's proposals (default: AES-GCM,
//!                                #   then AES-CBC + sha256; prfsha256/384/512; x25519, ecp256, ecp384, modp2048)
//! esp = ["aes128gcm16"]          # the child SAs' suites in our order: aes128gcm16,
//!                                #   aes256gcm16, chacha20poly1305, aes128-sha1, aes256-sha1
//! esn = false                    # extended sequence numbers when the peer agrees
//! local_ts = ["10.0.1.0/24"]     # the (first) child SA's selectors: our side,
//! remote_ts = ["10.0.2.0/24"]    #   the peer's side
//! [[connection.child]]           # more child SAs on the same IKE SA, each with
//! name = "voice"                 #   its own selectors, eroute (ike-east-voice)
//! local_ts = ["10.0.3.0/24"]     #   and SAs
//! remote_ts = ["10.0.4.0/24"]
//! start = "none"                 # "start": initiate at startup; "trap": on the first packet
//! rekey_seconds = 3600           # child SA rekey (make-before-break); 0 = never
//! ike_rekey_seconds = 14400      # IKE SA rekey (children kept); 0 = never
//! pfs = false                    # child rekeys with a fresh Curve25519 exchange
//! dpd_seconds = 30               # liveness check after this much silence; 0 = off
//! # wireshark_keys = "keys"      # DEBUG: append the negotiated keys to keys/esp_sa and
//!                                #   keys/ikev2_decryption_table (Wireshark's formats)
//! ```

use std::net::IpAddr;
use std::path::Path;

use espgw_core::policy::Prefix;
use serde::Deserialize;
use toml::Spanned;
use zeroize::Zeroizing;

use super::{ConfigError, Locator};
use crate::ike::cert::{dn_der, Credentials, ID_DER_ASN1_DN};
use crate::ike::esp_suite::{ChildPolicy, EspSuite};
use crate::ike::ike_auth::{Credential, Identity};
use crate::ike::sa_init::{all_suites, Suite};

/// When a connection's IKE SA is set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Only when the peer initiates (or `espgwctl ike initiate`).
    None,
    /// At startup, and again after it goes down.
    Start,
    /// On the first packet its selectors match (a `%trap` eroute).
    Trap,
}

/// A validated `[[connection]]`.
#[derive(Clone)]
pub struct ConnectionSpec {
    pub name: String,
    pub local: IpAddr,
    pub remote: IpAddr,
    pub local_id: Identity,
    pub remote_id: Identity,
    /// A PSK or certificates.
    pub credential: Credential,
    /// What the IKE SA may be, in our order of preference.
    pub ike: Vec<Suite>,
    /// What the child SAs may be (suites, ESN, PFS).
    pub child: ChildPolicy,
    /// The child SAs: the first from the connection's own `local_ts` /
    /// `remote_ts`, then its `[[connection.child]]`s.
    pub children: Vec<ChildSpec>,
    pub start: Start,
    pub rekey_seconds: u64,
    pub ike_rekey_seconds: u64,
    pub dpd_seconds: u64,
    /// Debug: the folder the negotiated keys are exported to (Wireshark's
    /// formats), relative to the config; off when `None`.
    pub wireshark_keys: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for ConnectionSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionSpec")
            .field("name", &self.name)
            .field("local", &self.local)
            .field("remote", &self.remote)
            .field("credential", &"<redacted>")
            .field("children", &self.children)
            .field("start", &self.start)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConnection {
    name: Spanned<String>,
    local: Spanned<String>,
    remote: Spanned<String>,
    local_id: Option<Spanned<String>>,
    remote_id: Option<Spanned<String>>,
    psk: Option<Spanned<String>>,
    psk_file: Option<Spanned<String>>,
    cert: Option<Spanned<String>>,
    key: Option<Spanned<String>>,
    ca: Option<Spanned<String>>,
    ike: Option<Spanned<toml::Value>>,
    esp: Option<Spanned<toml::Value>>,
    esn: Option<Spanned<bool>>,
    local_ts: Spanned<Vec<Spanned<String>>>,
    remote_ts: Spanned<Vec<Spanned<String>>>,
    child: Option<Vec<Spanned<RawChild>>>,
    start: Option<Spanned<String>>,
    rekey_seconds: Option<Spanned<i64>>,
    ike_rekey_seconds: Option<Spanned<i64>>,
    dpd_seconds: Option<Spanned<i64>>,
    pfs: Option<Spanned<bool>>,
    wireshark_keys: Option<Spanned<String>>,
}

/// One child SA of a connection: its selectors (ours, the peer's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildSpec {
    /// `None` for the connection's first child (eroute `ike-NAME`),
    /// else its name (eroute `ike-NAME-CHILD`).
    pub name: Option<String>,
    pub local_ts: Prefix,
    pub remote_ts: Prefix,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawChild {
    name: Spanned<String>,
    local_ts: Spanned<Vec<Spanned<String>>>,
    remote_ts: Spanned<Vec<Spanned<String>>>,
}

/// An identity as written: an IP address (ID_IPV4_ADDR / ID_IPV6_ADDR), a
/// distinguished name `CN=east, O=Example` (ID_DER_ASN1_DN; with
/// certificates), a user@FQDN (ID_RFC822_ADDR), or an FQDN (ID_FQDN),
/// RFC 7296 §3.5; `None` for a DN we cannot write.
pub fn identity(s: &str) -> Option<Identity> {
    Some(match s.parse::<IpAddr>() {
        Ok(IpAddr::V4(a)) => Identity { id_type: 1, data: a.octets().to_vec() },
        Ok(IpAddr::V6(a)) => Identity { id_type: 5, data: a.octets().to_vec() },
        Err(_) if s.contains('=') => Identity { id_type: ID_DER_ASN1_DN, data: dn_der(s)? },
        Err(_) if s.contains('@') => Identity { id_type: 3, data: s.as_bytes().to_vec() },
        Err(_) => Identity::fqdn(s),
    })
}

pub(super) fn validate(
    loc: &Locator<'_>,
    raw: &[Spanned<RawConnection>],
    own: &[IpAddr],
) -> Result<Vec<ConnectionSpec>, ConfigError> {
    let mut out: Vec<ConnectionSpec> = Vec::new();
    for (i, c) in raw.iter().enumerate() {
        let r = c.get_ref();
        let f = |name: &str| format!("connection[{i}].{name}");
        let name = r.name.get_ref().trim().to_string();
        if name.is_empty() || !name.chars().all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch)) {
            return Err(loc.at(&r.name, f("name"), "must be letters, digits, '-', '_' or '.'"));
        }
        if out.iter().any(|o| o.name == name) {
            return Err(loc.at(&r.name, f("name"), format!("a connection named {name:?} is already defined")));
        }
        let addr = |s: &Spanned<String>, field: &str| {
            s.get_ref()
                .parse::<IpAddr>()
                .map_err(|_| loc.at(s, f(field), format!("{:?} is not an IP address", s.get_ref())))
        };
        let local = addr(&r.local, "local")?;
        if !own.contains(&local) {
            return Err(loc.at(&r.local, f("local"), format!("{local} is not one of the ports' addresses")));
        }
        let remote = addr(&r.remote, "remote")?;
        if remote.is_ipv4() != local.is_ipv4() {
            return Err(loc.at(&r.remote, f("remote"), "not the family of local"));
        }
        let read = |p: &Spanned<String>, field: &str| {
            let path = loc.file.parent().unwrap_or(Path::new(".")).join(p.get_ref());
            std::fs::read(&path)
                .map(Zeroizing::new)
                .map_err(|e| loc.at(p, f(field), format!("cannot read {}: {e}", path.display())))
        };
        let credential = match (&r.psk, &r.psk_file, &r.cert) {
            (Some(p), None, None) => Credential::Psk(Zeroizing::new(p.get_ref().as_bytes().to_vec())),
            (None, Some(p), None) => {
                let mut v = read(p, "psk_file")?;
                while v.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                    v.pop();
                }
                Credential::Psk(v)
            }
            (None, None, Some(cert)) => {
                let (Some(key), Some(ca)) = (&r.key, &r.ca) else {
                    return Err(loc.at(cert, f("cert"), "a certificate needs its key and the ca to check the peer"));
                };
                let creds = Credentials::from_pem(&read(cert, "cert")?, &read(key, "key")?, &read(ca, "ca")?)
                    .map_err(|e| loc.at(cert, f("cert"), e.to_string()))?;
                Credential::Cert(std::sync::Arc::new(creds))
            }
            (Some(p), Some(_), _) => return Err(loc.at(p, f("psk"), "give psk or psk_file, not both")),
            (Some(p), _, Some(_)) | (_, Some(p), Some(_)) => {
                return Err(loc.at(p, f("psk"), "give a pre-shared key or a certificate, not both"))
            }
            (None, None, None) => {
                return Err(loc.at(c, f("psk"), "missing: a pre-shared key (psk or psk_file) or a certificate (cert)"))
            }
        };
        if let Credential::Psk(psk) = &credential {
            if psk.is_empty() {
                return Err(loc.at(c, f("psk"), "empty pre-shared key"));
            }
            if let Some(k) = r.key.as_ref().or(r.ca.as_ref()) {
                return Err(loc.at(k, f("key"), "key and ca go with cert"));
            }
        }
        let suites = match r.esp.as_ref() {
            None => vec![EspSuite::Aes128Gcm16],
            Some(v) => {
                let names: Vec<&str> = match v.get_ref() {
                    toml::Value::String(one) => vec![one.as_str()],
                    toml::Value::Array(list) => list.iter().map(|x| x.as_str().unwrap_or("")).collect(),
                    _ => vec![""],
                };
                let all = EspSuite::ALL.map(|(n, _)| n).join(", ");
                let mut suites = Vec::new();
                for n in names {
                    let s = EspSuite::parse(n)
                        .ok_or_else(|| loc.at(v, f("esp"), format!("{n:?}: one or more of {all}")))?;
                    if !suites.contains(&s) {
                        suites.push(s);
                    }
                }
                if suites.is_empty() {
                    return Err(loc.at(v, f("esp"), format!("at least one of {all}")));
                }
                suites
            }
        };
        let ike = match r.ike.as_ref() {
            // Ours first, as strong as the first child suite: AES-256 first with a 256-bit child.
            None => {
                let strong = matches!(
                    suites.first(),
                    Some(EspSuite::Aes256Gcm16 | EspSuite::Aes256Sha1 | EspSuite::Chacha20Poly1305)
                );
                let mut all = all_suites();
                if strong {
                    all.sort_by_key(|s| std::cmp::Reverse(s.encr_key));
                }
                all
            }
            Some(v) => {
                let names: Vec<&str> = match v.get_ref() {
                    toml::Value::String(one) => vec![one.as_str()],
                    toml::Value::Array(list) => list.iter().map(|x| x.as_str().unwrap_or("")).collect(),
                    _ => vec![""],
                };
                let mut out: Vec<Suite> = Vec::new();
                for n in names {
                    for s in Suite::parse(n).map_err(|e| loc.at(v, f("ike"), e))? {
                        if !out.contains(&s) {
                            out.push(s);
                        }
                    }
                }
                if out.is_empty() {
                    return Err(loc.at(v, f("ike"), "at least one proposal, e.g. \"aes128gcm16-prfsha256-x25519\""));
                }
                out
            }
        };
        let prefixes = |list: &Spanned<Vec<Spanned<String>>>, field: &str| -> Result<Vec<Prefix>, ConfigError> {
            if list.get_ref().is_empty() {
                return Err(loc.at(list, f(field), "at least one prefix"));
            }
            list.get_ref().iter().map(|p| p.get_ref().parse::<Prefix>().map_err(|e| loc.at(p, f(field), e))).collect()
        };
        let selectors = |l: &Spanned<Vec<Spanned<String>>>, r: &Spanned<Vec<Spanned<String>>>, at: &str| {
            let (local_ts, remote_ts) =
                (prefixes(l, &format!("{at}local_ts"))?, prefixes(r, &format!("{at}remote_ts"))?);
            if local_ts.len() != 1 || remote_ts.len() != 1 || local_ts[0].is_v6() != remote_ts[0].is_v6() {
                return Err(loc.at(l, f(&format!("{at}local_ts")), "one prefix each side, of one family"));
            }
            Ok((local_ts[0], remote_ts[0]))
        };
        let (local_ts, remote_ts) = selectors(&r.local_ts, &r.remote_ts, "")?;
        let mut children = vec![ChildSpec { name: None, local_ts, remote_ts }];
        for (k, ch) in r.child.iter().flatten().enumerate() {
            let at = format!("child[{k}].");
            let raw = ch.get_ref();
            let cname = raw.name.get_ref().trim().to_string();
            if cname.is_empty() || !cname.chars().all(|x| x.is_ascii_alphanumeric() || "-_.".contains(x)) {
                return Err(loc.at(&raw.name, f(&format!("{at}name")), "must be letters, digits, '-', '_' or '.'"));
            }
            if children.iter().any(|c| c.name.as_deref() == Some(cname.as_str())) {
                return Err(loc.at(
                    &raw.name,
                    f(&format!("{at}name")),
                    format!("a child named {cname:?} is already defined"),
                ));
            }
            let (local_ts, remote_ts) = selectors(&raw.local_ts, &raw.remote_ts, &at)?;
            if children.iter().any(|c| c.local_ts == local_ts && c.remote_ts == remote_ts) {
                return Err(loc.at(&raw.local_ts, f(&format!("{at}local_ts")), "another child has these selectors"));
            }
            children.push(ChildSpec { name: Some(cname), local_ts, remote_ts });
        }
        let start = match r.start.as_ref().map(|s| s.get_ref().as_str()) {
            None | Some("none") => Start::None,
            Some("start") => Start::Start,
            Some("trap") => Start::Trap,
            Some(other) => {
                let s = r.start.as_ref().map_or(0..0, |s| s.span());
                return Err(loc.err::<()>(s, f("start"), format!("{other:?}: none, start or trap")));
            }
        };
        let seconds = |v: &Option<Spanned<i64>>, field: &str, default: u64| match v {
            None => Ok(default),
            Some(s) if (0..=86_400 * 365).contains(s.get_ref()) => Ok(*s.get_ref() as u64),
            Some(s) => Err(loc.at(s, f(field), format!("{}: 0 .. one year in seconds", s.get_ref()))),
        };
        let rekey_seconds = seconds(&r.rekey_seconds, "rekey_seconds", 3600)?;
        let dpd_seconds = seconds(&r.dpd_seconds, "dpd_seconds", 30)?;
        let ike_rekey_seconds = seconds(&r.ike_rekey_seconds, "ike_rekey_seconds", 14_400)?;
        let id = |v: &Option<Spanned<String>>, default: IpAddr, field: &str| match v {
            Some(s) if !s.get_ref().trim().is_empty() => identity(s.get_ref().trim()).ok_or_else(|| {
                loc.at(
                    s,
                    f(field),
                    "a distinguished name of CN, C, L, ST, O, OU, SN, serialNumber, E, DC: CN=east, O=Example",
                )
            }),
            _ => identity(&default.to_string()).ok_or_else(|| loc.at(&r.name, f(field), "no identity")),
        };
        let local_id = match (&credential, &r.local_id) {
            // With a certificate our identity is one it carries (RFC 4945 §3.1).
            (Credential::Cert(creds), given) => {
                let names = creds.identities();
                match given {
                    None => names.first().cloned().ok_or_else(|| {
                        loc.at(
                            r.cert.as_ref().unwrap_or(&r.name),
                            f("cert"),
                            "the certificate names nothing to be our identity",
                        )
                    })?,
                    Some(s) => {
                        let want = id(given, local, "local_id")?;
                        // A DN is sent as the certificate has it (RFC 4945 §3.1.5).
                        let Some(found) = names.iter().find(|n| n.matches(&want)).cloned() else {
                            return Err(loc.at(
                                s,
                                f("local_id"),
                                format!("{want} is neither among our certificate's subjectAltNames nor its subject"),
                            ));
                        };
                        found
                    }
                }
            }
            (Credential::Psk(_), given) => {
                let me = id(given, local, "local_id")?;
                if me.id_type == ID_DER_ASN1_DN {
                    let s = given.as_ref().unwrap_or(&r.name);
                    return Err(loc.at(s, f("local_id"), "a distinguished name goes with a certificate"));
                }
                me
            }
        };
        out.push(ConnectionSpec {
            name,
            local,
            remote,
            local_id,
            remote_id: id(&r.remote_id, remote, "remote_id")?,
            credential,
            ike,
            children,
            start,
            rekey_seconds,
            ike_rekey_seconds,
            dpd_seconds,
            wireshark_keys: r
                .wireshark_keys
                .as_ref()
                .map(|p| loc.file.parent().unwrap_or(Path::new(".")).join(p.get_ref())),
            child: ChildPolicy {
                suites,
                esn: r.esn.as_ref().is_some_and(|b| *b.get_ref()),
                pfs: r.pfs.as_ref().is_some_and(|b| *b.get_ref()),
            },
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::Start;
    use crate::config::Config;
    use crate::ike::esp_suite::ChildPolicy;
    use std::path::Path;

    const BASE: &str = "[workers]\ncores = [0]\n[[port]]\nname = \"p\"\ndevice = \"net_null0\"\nrole = \"protected\"\n\
                        addresses = [\"192.0.2.1\"]\n";
    const CONN: &str = "[[connection]]\nname = \"east\"\nlocal = \"192.0.2.1\"\nremote = \"203.0.113.2\"\n\
                        remote_id = \"east.example\"\npsk = \"a secret\"\nlocal_ts = [\"10.0.1.0/24\"]\n\
                        remote_ts = [\"10.0.2.0/24\"]\n";

    #[test]
    fn a_connection_parses_with_its_defaults() {
        let c = Config::parse(Path::new("c.toml"), &format!("{BASE}{CONN}")).unwrap();
        let k = &c.connections[0];
        assert_eq!((k.name.as_str(), k.start), ("east", Start::None));
        assert_eq!(k.child, ChildPolicy::default());
        assert_eq!((k.rekey_seconds, k.dpd_seconds, k.ike_rekey_seconds), (3600, 30, 14_400));
        let many =
            CONN.replace("psk = ", "esp = [\"chacha20poly1305\", \"aes128-sha1\"]\nesn = true\npfs = true\npsk = ");
        let c = Config::parse(Path::new("c.toml"), &format!("{BASE}{many}")).unwrap();
        let want = vec![crate::ike::esp_suite::EspSuite::Chacha20Poly1305, crate::ike::esp_suite::EspSuite::Aes128Sha1];
        assert_eq!(c.connections[0].child, ChildPolicy { suites: want, esn: true, pfs: true });
        assert_eq!((k.local_id.id_type, k.local_id.data.as_slice()), (1, &[192, 0, 2, 1][..]));
        assert_eq!((k.remote_id.id_type, k.remote_id.data.as_slice()), (2, &b"east.example"[..]));
        assert!(!format!("{k:?}").contains("a secret"), "the PSK is never printed");
    }

    #[test]
    fn connection_errors_name_line_field_and_reason() {
        // (replace, with, line, field, reason); line 8 is `[[connection]]`.
        let cases: &[(&str, &str, usize, &str, &str)] = &[
            (
                "local = \"192.0.2.1\"",
                "local = \"192.0.2.9\"",
                10,
                "connection[0].local",
                "not one of the ports' addresses",
            ),
            ("remote = \"203.0.113.2\"", "remote = \"2001:db8::2\"", 11, "connection[0].remote", "not the family"),
            ("psk = \"a secret\"", "psk = \"\"", 8, "connection[0].psk", "empty pre-shared key"),
            ("psk = \"a secret\"", "psk = \"x\"\npsk_file = \"f\"", 13, "connection[0].psk", "not both"),
            ("psk = \"a secret\"", "esp = \"des\"", 8, "connection[0].psk", "missing"),
            (
                "local_ts = [\"10.0.1.0/24\"]",
                "local_ts = [\"10.0.1.0/24\"]\nesp = \"des\"",
                15,
                "connection[0].esp",
                "\"des\"",
            ),
            (
                "remote_ts = [\"10.0.2.0/24\"]",
                "remote_ts = [\"10.0.2.0/33\"]",
                15,
                "connection[0].remote_ts",
                "32 bits",
            ),
            (
                "remote_ts = [\"10.0.2.0/24\"]",
                "remote_ts = [\"2001:db8::/64\"]",
                14,
                "connection[0].local_ts",
                "one family",
            ),
            ("name = \"east\"", "name = \"ea st\"", 9, "connection[0].name", "letters"),
            ("psk = \"a secret\"", "psk = \"s\"\nstart = \"later\"", 14, "connection[0].start", "none, start or trap"),
            ("psk = \"a secret\"", "psk = \"s\"\ndpd_seconds = -1", 14, "connection[0].dpd_seconds", "one year"),
            ("psk = \"a secret\"", "psk = \"s\"\ncolour = 1", 14, "", "unknown field `colour`"),
        ];
        for (from, to, line, field, reason) in cases {
            let text = format!("{BASE}{}", CONN.replace(from, to));
            let e = Config::parse(Path::new("c.toml"), &text).unwrap_err();
            assert_eq!(e.line, Some(*line), "{to}: {e}");
            assert!(e.field.contains(field) && e.reason.contains(reason), "{to}: {e}");
        }
        let twice = format!("{BASE}{CONN}{CONN}");
        let e = Config::parse(Path::new("c.toml"), &twice).unwrap_err();
        assert!(e.reason.contains("already defined"), "{e}");
    }

    /// Certificates: files relative to the config, the local identity
    /// from the certificate, and every mistake named with its line.
    #[test]
    fn certificate_connections_and_their_errors() {
        use crate::ike::ike_auth::{Credential, Identity};
        use crate::ike::test_pki::{Ca, KeyKind};
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new("Test CA");
        let west = ca.issue(&["west.example", "192.0.2.1"], KeyKind::P256, |_| {});
        let other = ca.issue(&["other.example"], KeyKind::P256, |_| {});
        for (name, text) in [("ca.crt", &ca.pem), ("w.crt", &west.cert), ("w.key", &west.key), ("o.key", &other.key)] {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let path = dir.path().join("c.toml");
        let certs = "cert = \"w.crt\"\nkey = \"w.key\"\nca = \"ca.crt\"";
        let c = Config::parse(&path, &format!("{BASE}{}", CONN.replace("psk = \"a secret\"", certs))).unwrap();
        let k = &c.connections[0];
        assert!(matches!(k.credential, Credential::Cert(_)));
        assert_eq!(k.local_id, Identity::fqdn("west.example"), "the certificate's first subjectAltName");
        assert!(!format!("{k:?}").contains("PRIVATE"), "no key printed");
        // (replace psk line with, line, field, reason); line 13 is where psk was.
        let cases: &[(&str, usize, &str, &str)] = &[
            ("cert = \"w.crt\"", 13, "connection[0].cert", "needs its key and the ca"),
            ("cert = \"w.crt\"\nkey = \"w.key\"\nca = \"missing.crt\"", 15, "connection[0].ca", "cannot read"),
            ("cert = \"w.crt\"\nkey = \"o.key\"\nca = \"ca.crt\"", 13, "connection[0].cert", "not the certificate's"),
            ("cert = \"w.crt\"\nkey = \"w.crt\"\nca = \"ca.crt\"", 13, "connection[0].cert", "PKCS#8"),
            ("psk = \"s\"\ncert = \"w.crt\"", 13, "connection[0].psk", "not both"),
            ("psk = \"s\"\nkey = \"w.key\"", 14, "connection[0].key", "go with cert"),
            (
                "cert = \"w.crt\"\nkey = \"w.key\"\nca = \"ca.crt\"\nlocal_id = \"gw.example\"",
                16,
                "connection[0].local_id",
                "neither among our certificate's subjectAltNames nor its subject",
            ),
        ];
        for (to, line, field, reason) in cases {
            let text = format!("{BASE}{}", CONN.replace("psk = \"a secret\"", to));
            let e = Config::parse(&path, &text).unwrap_err();
            assert_eq!(e.line, Some(*line), "{to}: {e}");
            assert!(e.field.contains(field) && e.reason.contains(reason), "{to}: {e}");
        }
        // An IP identity the certificate carries is fine.
        let by_ip =
            format!("{BASE}{}", CONN.replace("psk = \"a secret\"", &format!("{certs}\nlocal_id = \"192.0.2.1\"")));
        assert_eq!(Config::parse(&path, &by_ip).unwrap().connections[0].local_id.id_type, 1);
    }
}
