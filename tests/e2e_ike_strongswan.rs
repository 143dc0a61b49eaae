//! espgw's IKEv2 code (control::ike: codec, crypto, IKE_SA_INIT, IKE_AUTH
//! with a pre-shared key) against a real strongSwan 5.9 charon — an
//! implementation we did not write. charon runs in a network namespace
//! (its own mount namespace hides a private /run, as its pid file path is
//! fixed) with kernel-libipsec; this test is the initiator over plain UDP
//! sockets, follows charon to port 4500 when NAT detection says so (libipsec
//! always asks for UDP encapsulation), and must end with an IKE SA and a
//! CHILD_SA that charon reports established.

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use control::ike::ike_auth::{self, AuthConfig, Credential, Identity};
use control::ike::message::{Payload, TrafficSelector};
use control::ike::sa_init::{Initiator, SUITES};
use control::ike::{create_child, informational};
use zeroize::Zeroizing;

mod common;
use common::sh;
use common::strongswan::{logged_keys, Charon};

struct Lab {
    ns: String,
    link: String,
    charon: Option<Charon>,
    log: PathBuf,
}

impl Drop for Lab {
    fn drop(&mut self) {
        drop(self.charon.take());
        let _ = Command::new("ip").args(["link", "del", &self.link]).status();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

fn ts(start: &str, end: &str) -> TrafficSelector {
    TrafficSelector {
        protocol: 0,
        start_port: 0,
        end_port: 65535,
        start: start.parse().unwrap(),
        end: end.parse().unwrap(),
    }
}

/// One datagram out, its answer back (retransmitted like an initiator would).
fn exchange(sock: &UdpSocket, to: SocketAddr, marker: bool, msg: &[u8]) -> Vec<u8> {
    let mut out = if marker { vec![0; 4] } else { Vec::new() };
    out.extend_from_slice(msg);
    sock.set_read_timeout(Some(Duration::from_millis(1000))).unwrap();
    let mut buf = vec![0u8; 65536];
    for _ in 0..5 {
        sock.send_to(&out, to).unwrap();
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            let skip = if marker { 4 } else { 0 };
            return buf[skip..n].to_vec();
        }
    }
    panic!("no answer from charon at {to}");
}

/// charon in its namespace at 203.0.113.2 (we are 203.0.113.1 on the veth),
/// east.example with PSK "shared secret" for west.example, its network
/// 10.0.2.0/24 to ours 10.0.1.0/24; the connection loaded.
fn start_charon(suffix: &str) -> Lab {
    let tag = format!("{}{suffix}", std::process::id() % 100_000);
    let mut lab = Lab { ns: format!("ss-{tag}"), link: format!("sr{tag}"), charon: None, log: PathBuf::new() };
    let peer_if = format!("sp{tag}");
    sh(&["ip", "netns", "add", &lab.ns]);
    sh(&["ip", "link", "add", &lab.link, "type", "veth", "peer", "name", &peer_if, "netns", &lab.ns]);
    sh(&["ip", "addr", "add", "203.0.113.1/30", "dev", &lab.link]);
    sh(&["ip", "link", "set", &lab.link, "up"]);
    sh(&["ip", "-n", &lab.ns, "addr", "add", "203.0.113.2/30", "dev", &peer_if]);
    sh(&["ip", "-n", &lab.ns, "link", "set", &peer_if, "up"]);
    sh(&["ip", "-n", &lab.ns, "link", "set", "lo", "up"]);
    // charon's protected network (libipsec routes the tunnel from an address in it).
    sh(&["ip", "-n", &lab.ns, "addr", "add", "10.0.2.1/24", "dev", "lo"]);
    let charon = Charon::start(
        &lab.ns,
        "connections { espgw {\n local_addrs = 203.0.113.2\n remote_addrs = 203.0.113.1\n\
         proposals = aes128gcm16-prfsha256-x25519\n\
         local { auth = psk\n id = east.example }\n remote { auth = psk\n id = west.example }\n\
         children { net { local_ts = 10.0.2.0/24\n remote_ts = 10.0.1.0/24\n esp_proposals = aes128gcm16 } } } }\n\
         secrets { ike-1 { id-1 = west.example\n id-2 = east.example\n secret = \"shared secret\" } }\n",
    );
    lab.log = charon.log.clone();
    lab.charon = Some(charon);
    lab
}

/// The tests use the same addresses and ports: one at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn strongswan_accepts_our_ike_sa_init_and_psk_ike_auth() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let lab = start_charon("i");
    let log = lab.log.clone();

    // IKE_SA_INIT on 500.
    let local: SocketAddr = "203.0.113.1:500".parse().unwrap();
    let remote: SocketAddr = "203.0.113.2:500".parse().unwrap();
    let sock = UdpSocket::bind(local).unwrap();
    let (init, req) = Initiator::start(&SUITES[..1], local, remote).unwrap();
    let resp = exchange(&sock, remote, false, &req);
    let sa = init
        .complete(req, &resp)
        .unwrap_or_else(|e| panic!("IKE_SA_INIT: {e:?}\n{}", std::fs::read_to_string(&log).unwrap_or_default()));
    // NAT detected (libipsec fakes it to force UDP encapsulation): IKE moves to 4500 (§2.23).
    let (sock, to, marker) = if sa.nat.any() {
        let l4500: SocketAddr = "203.0.113.1:4500".parse().unwrap();
        (UdpSocket::bind(l4500).unwrap(), "203.0.113.2:4500".parse().unwrap(), true)
    } else {
        (sock, remote, false)
    };
    let cfg = AuthConfig {
        me: Identity::fqdn("west.example"),
        peer: Identity::fqdn("east.example"),
        credential: Credential::Psk(Zeroizing::new(b"shared secret".to_vec())),
        child: Default::default(),
    };
    let spi_in = 0xc0de_0001;
    let auth_req =
        ike_auth::request(&sa, &cfg, spi_in, &[ts("10.0.1.0", "10.0.1.255")], &[ts("10.0.2.0", "10.0.2.255")], [7; 8])
            .unwrap();
    let auth_resp = exchange(&sock, to, marker, &auth_req);
    let child = ike_auth::complete(&sa, &cfg, spi_in, &auth_resp).unwrap_or_else(|e| {
        std::thread::sleep(Duration::from_millis(500));
        panic!("IKE_AUTH: {e:?}\n{}", std::fs::read_to_string(&log).unwrap_or_default())
    });
    assert_eq!(child.tsr, vec![ts("10.0.2.0", "10.0.2.255")]);
    assert_ne!(child.spi_out, 0);
    // charon agrees: the IKE SA and the CHILD_SA are established on its side.
    std::thread::sleep(Duration::from_millis(300));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(text.contains("IKE_SA espgw[1] established"), "charon's log:\n{text}");
    assert!(text.contains("CHILD_SA net{1} established"), "charon's log:\n{text}");
    assert!(
        text.contains(&format!("{:08x}_o", spi_in)) || text.contains(&format!("{:08x}", spi_in)),
        "our SPI in charon's SA:\n{text}"
    );
    // CREATE_CHILD_SA: the child SA rekeyed (a new SPI, fresh keys).
    let (rekey, req) = create_child::request(
        &sa,
        true,
        2,
        Some(spi_in),
        spi_in + 1,
        &Default::default(),
        &[ts("10.0.1.0", "10.0.1.255")],
        &[ts("10.0.2.0", "10.0.2.255")],
        [6; 8],
    )
    .unwrap();
    let ans = exchange(&sock, to, marker, &req);
    let child2 = rekey.complete(&sa, true, &ans).unwrap_or_else(|e| {
        std::thread::sleep(Duration::from_millis(500));
        panic!("CREATE_CHILD_SA: {e:?}\n{}", std::fs::read_to_string(&log).unwrap_or_default())
    });
    assert_ne!(child2.spi_out, child.spi_out);
    assert_ne!(child2.key_out[..], child.key_out[..], "fresh keys");
    std::thread::sleep(Duration::from_millis(200));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(text.contains("CHILD_SA net{2} established"), "charon's log:\n{text}");
    assert!(text.contains(&format!("{:08x}", spi_in + 1)), "our new SPI in charon's CHILD_SA:\n{text}");
    // charon's own child keys (its log at chd = 4), initiator's then
    // responder's, for the first CHILD_SA and the rekeyed one: ours exactly.
    let (init_keys, resp_keys) =
        (logged_keys(&text, "encryption initiator key"), logged_keys(&text, "encryption responder key"));
    assert_eq!(
        init_keys,
        vec![child.key_out.to_vec(), child2.key_out.to_vec()],
        "our outbound keys are charon's initiator keys"
    );
    assert_eq!(
        resp_keys,
        vec![child.key_in.to_vec(), child2.key_in.to_vec()],
        "our inbound keys are charon's responder keys"
    );
    // INFORMATIONAL: a liveness check answered, then the IKE SA deleted.
    let dpd = informational::request(&sa, true, 3, &[], [8; 8]).unwrap();
    let ans = exchange(&sock, to, marker, &dpd);
    assert_eq!(informational::response(&sa, true, 3, &ans).unwrap(), vec![], "DPD answered empty");
    let del = Payload::Delete { protocol: informational::PROTO_IKE, spi_size: 0, spis: vec![] };
    let req = informational::request(&sa, true, 4, &[del], [9; 8]).unwrap();
    let ans = exchange(&sock, to, marker, &req);
    informational::response(&sa, true, 4, &ans).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(text.contains("received DELETE for IKE_SA espgw[1]"), "charon's log:\n{text}");
    assert!(text.contains("IKE_SA deleted"), "charon's log:\n{text}");
}

/// The other way round: charon initiates (`swanctl --initiate`) and our
/// responder answers IKE_SA_INIT on 500 and IKE_AUTH on 4500 (charon forces
/// UDP encapsulation), narrowing charon's selectors to our policy; charon
/// must report both SAs established, with the SPI we chose.
#[test]
fn strongswan_initiates_and_our_responder_answers() {
    use control::ike::sa_init::{self, Response};
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let lab = start_charon("r");
    let s500 = UdpSocket::bind("203.0.113.1:500").unwrap();
    let s4500 = UdpSocket::bind("203.0.113.1:4500").unwrap();
    for s in [&s500, &s4500] {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    }
    let initiate = lab.charon.as_ref().unwrap().swanctl_spawn(&["--initiate", "--child", "net", "--timeout", "10"]);
    let mut buf = vec![0u8; 65536];
    // IKE_SA_INIT.
    let (n, from) = s500.recv_from(&mut buf).expect("charon's IKE_SA_INIT");
    let Response::Accept { message, sa } =
        sa_init::respond(&buf[..n], "203.0.113.1:500".parse().unwrap(), from, None, None, &SUITES).unwrap()
    else {
        panic!("refused charon's proposal")
    };
    s500.send_to(&message, from).unwrap();
    // IKE_AUTH, behind the non-ESP marker on 4500 (or on 500 if charon stayed).
    let (auth_req, from, marker) = match s4500.recv_from(&mut buf) {
        Ok((n, from)) if n > 4 && buf[..4] == [0, 0, 0, 0] => (buf[4..n].to_vec(), from, true),
        other => panic!("no IKE_AUTH on 4500: {other:?}\n{}", std::fs::read_to_string(&lab.log).unwrap_or_default()),
    };
    let cfg = AuthConfig {
        me: Identity::fqdn("west.example"),
        peer: Identity::fqdn("east.example"),
        credential: Credential::Psk(Zeroizing::new(b"shared secret".to_vec())),
        child: Default::default(),
    };
    let spi_in = 0xc0de_0002;
    let (resp, child) = ike_auth::respond(
        &sa,
        &cfg,
        &auth_req,
        spi_in,
        &[ts("10.0.2.0", "10.0.2.255")],
        &[ts("10.0.1.0", "10.0.1.255")],
        [9; 8],
    )
    .unwrap_or_else(|e| panic!("IKE_AUTH: {e:?}\n{}", std::fs::read_to_string(&lab.log).unwrap_or_default()));
    let mut out = if marker { vec![0; 4] } else { Vec::new() };
    out.extend_from_slice(&resp);
    s4500.send_to(&out, from).unwrap();
    let mut initiate = initiate;
    let _ = initiate.wait();
    std::thread::sleep(Duration::from_millis(300));
    let text = std::fs::read_to_string(&lab.log).unwrap_or_default();
    assert!(text.contains("authentication of 'west.example' with pre-shared key successful"), "charon's log:\n{text}");
    assert!(text.contains("IKE_SA espgw[1] established"), "charon's log:\n{text}");
    assert!(text.contains("CHILD_SA net{1} established"), "charon's log:\n{text}");
    assert!(text.contains(&format!("{spi_in:08x}")), "our SPI in charon's CHILD_SA:\n{text}");
    assert_eq!((child.tsi, child.tsr), (vec![ts("10.0.2.0", "10.0.2.255")], vec![ts("10.0.1.0", "10.0.1.255")]));
    assert_ne!(child.spi_out, 0);
}
