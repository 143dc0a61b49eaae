//! Certificate authentication (issue 19): loading credentials, the RFC 7427
//! signature checked by an implementation we did not write (Python
//! `cryptography`), and whole IKE_AUTH exchanges with certificates — what
//! must pass and what an attacker or a careless operator tries.

use std::sync::Arc;

use rcgen::{date_time_ymd, ExtendedKeyUsagePurpose};

use super::cert::{CertError, Credentials, AUTH_DIGITAL_SIGNATURE, OUR_HASHES};
use super::ike_auth::{complete, request, respond, AuthConfig, AuthError, Credential, Identity};
use super::message::{Payload, TrafficSelector};
use super::sa_init::{self, Established, Initiator, Response, SUITES};
use super::test_pki::{Ca, Issued, KeyKind};

fn creds(i: &Issued, ca: &Ca) -> Credentials {
    Credentials::from_pem(i.cert.as_bytes(), i.key.as_bytes(), ca.pem.as_bytes()).unwrap()
}

#[test]
fn credentials_load_and_name_themselves() {
    let ca = Ca::new("Test CA");
    for kind in [KeyKind::P256, KeyKind::P384, KeyKind::Rsa(2048)] {
        let c = creds(&ca.issue(&["gw.example", "ops@gw.example", "192.0.2.1", "2001:db8::1"], kind, |_| {}), &ca);
        let ids = c.identities();
        assert_eq!(ids[0], Identity::fqdn("gw.example"), "{kind:?}");
        assert!(ids.contains(&Identity { id_type: 3, data: b"ops@gw.example".to_vec() }));
        assert!(ids.contains(&Identity { id_type: 1, data: vec![192, 0, 2, 1] }));
        assert!(ids.iter().any(|i| i.id_type == 5));
        assert_eq!(c.cert_payloads().len(), 1);
        let Payload::CertReq { encoding: 4, data } = c.certreq() else { panic!("CERTREQ") };
        assert_eq!(data.len(), 20, "one SHA-1 per CA");
        assert!(!format!("{c:?}").contains("BEGIN"), "no key material in Debug");
    }
}

#[test]
fn bad_credentials_are_refused_with_a_reason() {
    let ca = Ca::new("Test CA");
    let (a, b) = (ca.issue(&["a.example"], KeyKind::P256, |_| {}), ca.issue(&["b.example"], KeyKind::P256, |_| {}));
    let load = |c: &str, k: &str, ca: &str| Credentials::from_pem(c.as_bytes(), k.as_bytes(), ca.as_bytes()).err();
    assert_eq!(load(&a.cert, &b.key, &ca.pem), Some(CertError::KeyMismatch));
    assert_eq!(load(&a.key, &a.key, &ca.pem), Some(CertError::NoPem("CERTIFICATE")));
    assert_eq!(load(&a.cert, &a.cert, &ca.pem), Some(CertError::BadKey));
    assert_eq!(load(&a.cert, &a.key, ""), Some(CertError::NoPem("CERTIFICATE (CA)")));
    let sec1 = a.key.replace("PRIVATE KEY", "EC PRIVATE KEY");
    let e = load(&a.cert, &sec1, &ca.pem).unwrap();
    assert!(e.to_string().contains("openssl pkcs8 -topk8"), "{e}");
}

/// Our RFC 7427 AUTH, checked by pyca/cryptography against the
/// certificate's public key: the AlgorithmIdentifier says the hash, the
/// signature is DER ECDSA or PKCS#1 v1.5.
#[test]
fn signatures_verify_with_python_cryptography() {
    let ca = Ca::new("Test CA");
    for kind in [KeyKind::P256, KeyKind::P384, KeyKind::Rsa(2048)] {
        let issued = ca.issue(&["gw.example"], kind, |_| {});
        let c = creds(&issued, &ca);
        let octets = b"IKE_SA_INIT | nonce | prf(SK_p, ID)".repeat(3);
        let auth = c.sign(&octets, &OUR_HASHES).unwrap();
        let script = r#"
import sys
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
cert = x509.load_pem_x509_certificate(sys.argv[1].encode())
auth, octets = bytes.fromhex(sys.argv[2]), bytes.fromhex(sys.argv[3])
alg, sig = auth[1:1 + auth[0]], auth[1 + auth[0]:]
oid = alg[4:4 + alg[3]]
h = {bytes.fromhex('2a8648ce3d040302'): hashes.SHA256(), bytes.fromhex('2a8648ce3d040303'): hashes.SHA384(),
     bytes.fromhex('2a864886f70d01010b'): hashes.SHA256()}[oid]
k = cert.public_key()
if isinstance(k, rsa.RSAPublicKey):
    k.verify(sig, octets, padding.PKCS1v15(), h)
else:
    k.verify(sig, octets, ec.ECDSA(h))
print('ok')
"#;
        let out = std::process::Command::new("python3")
            .args(["-c", script, &issued.cert, &hex::encode(&auth), &hex::encode(&octets)])
            .output()
            .expect("python3");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "ok",
            "{kind:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A peer that verifies no hash our key signs with gets no signature.
#[test]
fn no_common_hash_no_signature() {
    let ca = Ca::new("Test CA");
    let c = creds(&ca.issue(&["gw.example"], KeyKind::P384, |_| {}), &ca);
    assert_eq!(c.sign(b"x", &[2]).err(), Some(CertError::NoCommonHash));
    assert_eq!(c.sign(b"x", &[]).err(), Some(CertError::NoCommonHash));
}

fn ts(net: &str) -> Vec<TrafficSelector> {
    let (start, end) = match net {
        "west" => ("10.0.1.0", "10.0.1.255"),
        _ => ("10.0.2.0", "10.0.2.255"),
    };
    vec![TrafficSelector {
        protocol: 0,
        start_port: 0,
        end_port: 65535,
        start: start.parse().unwrap(),
        end: end.parse().unwrap(),
    }]
}

/// IKE_SA_INIT between two pure sides; the responder sends `certreq`.
fn sa_pair(certreq: Option<Payload>) -> (Established, Established, Vec<u8>) {
    let a = |s: &str| s.parse().unwrap();
    let (i, req) = Initiator::start(&SUITES[..1], a("192.0.2.1:500"), a("198.51.100.1:500")).unwrap();
    let Response::Accept { message, sa } =
        sa_init::respond(&req, a("198.51.100.1:500"), a("192.0.2.1:500"), None, certreq, &SUITES).unwrap()
    else {
        panic!("refused")
    };
    (i.complete(req, &message.clone()).unwrap(), *sa, message)
}

fn cfg(me: &str, peer: &str, c: Credentials) -> AuthConfig {
    AuthConfig {
        me: Identity::fqdn(me),
        peer: Identity::fqdn(peer),
        credential: Credential::Cert(Arc::new(c)),
        child: Default::default(),
    }
}

/// Run IKE_AUTH west → east; the responder's refusal notify, or the
/// initiator's verdict on the answer.
fn auth(ci: &AuthConfig, cr: &AuthConfig) -> Result<(), String> {
    let (l, r, init_resp) = sa_pair(cr.credential.certreq());
    assert!(l.peer_hashes.contains(&2) && r.peer_hashes.contains(&2), "both announce RFC 7427 hashes");
    assert!(l.peer_fragments && r.peer_fragments, "both announce RFC 7383");
    let init = super::message::Message::decode(&init_resp).unwrap();
    let has_certreq = init.payloads.iter().any(|p| matches!(p, Payload::CertReq { .. }));
    assert_eq!(has_certreq, matches!(cr.credential, Credential::Cert(_)), "CERTREQ in IKE_SA_INIT");
    let req = request(&l, ci, 0xc000_0001, &ts("west"), &ts("east"), [1; 8]).map_err(|e| format!("{e:?}"))?;
    if matches!(ci.credential, Credential::Cert(_)) {
        let (_, inner) = super::crypto::decrypt_message(&req, l.sk(true)).unwrap();
        assert!(inner.iter().any(|p| matches!(p, Payload::Cert { encoding: 4, .. })));
        assert!(inner.iter().any(|p| matches!(p, Payload::CertReq { .. })));
        assert!(inner.iter().any(|p| matches!(p, Payload::Auth { method: AUTH_DIGITAL_SIGNATURE, .. })));
    }
    let (resp, _) = match respond(&r, cr, &req, 0xd000_0002, &ts("west"), &ts("east"), [2; 8]) {
        Ok(ok) => ok,
        Err(AuthError::Refuse { notify, .. }) => return Err(format!("responder refused {notify}")),
        Err(e) => return Err(format!("{e:?}")),
    };
    complete(&l, ci, 0xc000_0001, &resp).map(|_| ()).map_err(|e| format!("initiator: {e:?}"))
}

#[test]
fn ike_auth_with_certificates_both_ways() {
    let ca = Ca::new("Test CA");
    for (kw, ke) in [(KeyKind::P256, KeyKind::P256), (KeyKind::P384, KeyKind::Rsa(2048))] {
        let west = cfg("west.example", "east.example", creds(&ca.issue(&["west.example"], kw, |_| {}), &ca));
        let east = cfg("east.example", "west.example", creds(&ca.issue(&["east.example"], ke, |_| {}), &ca));
        assert_eq!(auth(&west, &east), Ok(()), "{kw:?} / {ke:?}");
    }
}

#[test]
fn certificates_that_must_not_authenticate() {
    let ca = Ca::new("Test CA");
    let east = || cfg("east.example", "west.example", creds(&ca.issue(&["east.example"], KeyKind::P256, |_| {}), &ca));
    let west = |c: Credentials| cfg("west.example", "east.example", c);
    let refused = Err("responder refused 24".to_string());
    let issue = |edit: &dyn Fn(&mut rcgen::CertificateParams)| {
        creds(&ca.issue(&["west.example"], KeyKind::P256, |p| edit(p)), &ca)
    };

    // Signed by another CA (a self-made one with the same name).
    let rogue = Ca::new("Test CA").issue(&["west.example"], KeyKind::P256, |_| {});
    let w = Credentials::from_pem(rogue.cert.as_bytes(), rogue.key.as_bytes(), ca.pem.as_bytes()).unwrap();
    assert_eq!(auth(&west(w), &east()), refused, "foreign CA");
    // A valid certificate for another name than the identity claimed.
    let other = creds(&ca.issue(&["mallory.example"], KeyKind::P256, |_| {}), &ca);
    assert_eq!(auth(&west(other), &east()), refused, "identity not in the certificate");
    // Expired; not yet valid.
    let old = issue(&|p| (p.not_before, p.not_after) = (date_time_ymd(2000, 1, 1), date_time_ymd(2001, 1, 1)));
    assert_eq!(auth(&west(old), &east()), refused, "expired");
    let future = issue(&|p| (p.not_before, p.not_after) = (date_time_ymd(2200, 1, 1), date_time_ymd(2201, 1, 1)));
    assert_eq!(auth(&west(future), &east()), refused, "not yet valid");
    // For something else (code signing only) ...
    let code = issue(&|p| p.extended_key_usages = vec![ExtendedKeyUsagePurpose::CodeSigning]);
    assert_eq!(auth(&west(code), &east()), refused, "EKU");
    // ... while a TLS client certificate is fine.
    let tls = issue(&|p| p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth]);
    assert_eq!(auth(&west(tls), &east()), Ok(()), "clientAuth EKU");

    // A PSK initiator against a certificate responder, and the other way round.
    let psk = || Credential::Psk(zeroize::Zeroizing::new(b"a secret".to_vec()));
    let psk_west = AuthConfig { credential: psk(), ..west(issue(&|_| {})) };
    assert_eq!(auth(&psk_west, &east()), refused, "PSK AUTH where a signature is due");
    let psk_east = AuthConfig { credential: psk(), ..east() };
    assert_eq!(auth(&west(issue(&|_| {})), &psk_east), refused, "signature where a PSK is due");
    // The responder's certificate is checked too.
    let rogue_east = Ca::new("Test CA").issue(&["east.example"], KeyKind::P256, |_| {});
    let e = Credentials::from_pem(rogue_east.cert.as_bytes(), rogue_east.key.as_bytes(), ca.pem.as_bytes()).unwrap();
    let r = auth(&west(issue(&|_| {})), &cfg("east.example", "west.example", e));
    assert_eq!(r, Err("initiator: Refused(24)".to_string()), "rogue responder");
}

/// Distinguished names as identities (ID_DER_ASN1_DN, strongSwan's default
/// with certificates): written `CN=..., O=...` in the config, compared
/// with what the peer sends however it is encoded (string type, case),
/// bound to the certificate's subject.
#[test]
fn distinguished_names_as_identities() {
    use super::cert::{dn_canonical, dn_canonical_der, dn_der, ID_DER_ASN1_DN};
    let der = dn_der("CN=west.example, O=espgw test, C=ZZ").unwrap();
    assert_eq!(dn_canonical_der(&der), dn_canonical("cn=WEST.example,o=espgw test,c=zz"));
    assert_eq!(dn_der("CN=x, XX=y"), None, "an attribute type we cannot write");
    let ca = Ca::new("Test CA");
    // Certificates without subjectAltNames: the subject is the identity.
    let no_san = |name: &str| {
        let name = name.to_string();
        creds(
            &ca.issue(&[&name], KeyKind::P256, |p| {
                p.subject_alt_names.clear();
                p.distinguished_name.push(rcgen::DnType::OrganizationName, "espgw test");
            }),
            &ca,
        )
    };
    let (w, e) = (no_san("west.example"), no_san("east.example"));
    assert_eq!(w.identities().len(), 1);
    assert_eq!(w.identities()[0].id_type, ID_DER_ASN1_DN);
    let dn = |s: &str| Identity { id_type: ID_DER_ASN1_DN, data: dn_der(s).unwrap() };
    let (w_id, e_id) = (w.identities()[0].clone(), e.identities()[0].clone());
    let west = AuthConfig {
        me: w_id,
        peer: dn("CN=east.example, O=espgw test"),
        credential: Credential::Cert(Arc::new(w)),
        child: Default::default(),
    };
    let east = |peer: Identity, e: Credentials| AuthConfig {
        me: e_id.clone(),
        peer,
        credential: Credential::Cert(Arc::new(e)),
        child: Default::default(),
    };
    assert_eq!(auth(&west, &east(dn("cn=west.example,o=ESPGW TEST"), no_san("east.example"))), Ok(()));
    let refused = Err("responder refused 24".to_string());
    assert_eq!(auth(&west, &east(dn("CN=west.example, O=other"), no_san("east.example"))), refused, "another DN");
    assert_eq!(auth(&west, &east(Identity::fqdn("west.example"), no_san("east.example"))), refused, "an FQDN");
}
