//! The IKE daemon's fuzz driver (`fuzz/fuzz_targets/ike_daemon.rs`; feature
//! `fuzzing`, and the unit tests). Two daemons, an initiator A and a
//! responder B, each with its own policy store, talk over their queues; the
//! input is a script of what the network and the operator do to them:
//! deliver, corrupt, lose or forge datagrams, let time pass (retransmission,
//! liveness checks, rekeys of child and IKE SAs), and run `espgwctl ike`
//! commands. After every step the stores must agree with the daemons: each
//! child SA a daemon holds is exactly one inbound and one outbound SA in its
//! store, nothing else of IKE's is left there, and the connection's
//! eroutes (it has two children) point at outbound SAs that exist, one at
//! least whenever a child does.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use espgw_core::pipeline::{IkeDatagram, IkeQueues};

use super::daemon::Daemon;
use crate::api::ControlState;
use crate::config::Config;
use crate::store::PolicyStore;

/// One side: its daemon, its queues, its store.
pub struct Side {
    pub daemon: Daemon,
    pub queues: IkeQueues,
    pub control: ControlState<'static>,
}

/// A side's configuration: `me` talks to `peer`, protecting `my_net` <-> `peer_net`.
pub fn config(me: &str, peer: &str, my_net: &str, peer_net: &str, extra: &str) -> Config {
    // A second child: A's subnet to a second one behind B (10.0.12.0/24).
    let (vl, vr) = if my_net == "10.0.1.0/24" { (my_net, "10.0.12.0/24") } else { ("10.0.12.0/24", peer_net) };
    let src = format!(
        "[workers]\ncores = [0]\n[[port]]\nname = \"clear\"\ndevice = \"net_null0\"\nrole = \"cleartext\"\n\
         [[port]]\nname = \"public\"\ndevice = \"net_null1\"\nrole = \"protected\"\naddresses = [\"{me}\"]\n\
         [[connection]]\nname = \"peer\"\nlocal = \"{me}\"\nremote = \"{peer}\"\nlocal_id = \"{me}\"\n\
         psk = \"secret\"\nlocal_ts = [\"{my_net}\"]\nremote_ts = [\"{peer_net}\"]\n{extra}\n\
         [[connection.child]]\nname = \"voice\"\nlocal_ts = [\"{vl}\"]\nremote_ts = [\"{vr}\"]\n"
    );
    Config::parse(Path::new("fuzz.toml"), &src).expect("the fuzz driver's config is valid")
}

pub fn side(cfg: &Config) -> Side {
    let queues = IkeQueues::new();
    let control = ControlState {
        events: Default::default(),
        store: Mutex::new(PolicyStore::from_config(cfg).expect("an empty policy is valid")),
        live: None,
        token: None,
        metrics: Default::default(),
        ike: None,
    };
    Side { daemon: Daemon::new(cfg.connections.clone(), queues.clone()), queues, control }
}

/// What `from` sent, into `to` (seen from `to`), each datagram passed to
/// `edit` first (corrupt it, or return `None` to lose it).
fn carry(from: &Side, to: &Side, mut edit: impl FnMut(&[u8]) -> Option<Vec<u8>>) {
    while let Some(d) = from.queues.from_control.pop() {
        if let Some(bytes) = edit(d.payload()) {
            if let Some(got) = IkeDatagram::new(d.remote, d.local, &bytes) {
                let _ = to.queues.to_control.push(got);
            }
        }
    }
}

/// Deliver unchanged.
fn keep(m: &[u8]) -> Option<Vec<u8>> {
    Some(m.to_vec())
}

/// The store agrees with the daemon (see the module doc).
fn consistent(s: &Side, who: &str, now: Instant) -> Result<(), String> {
    let list = s.daemon.list(now);
    let children: usize = list.iter().map(|x| x.children.len()).sum();
    let store = s.control.store();
    let ike_sas: Vec<String> = store.sas().into_iter().map(|x| x.sa.name).filter(|n| n.starts_with("ike-")).collect();
    if ike_sas.len() != 2 * children {
        return Err(format!(
            "{who}: {} IKE SAs in the store for {children} child SAs: {ike_sas:?} {list:?}",
            ike_sas.len()
        ));
    }
    for x in &list {
        for c in &x.children {
            let spi_in = c.split('/').next().unwrap_or_default();
            for dir in ["in", "out"] {
                let name = format!("ike-peer-{spi_in}-{dir}");
                if !ike_sas.contains(&name) {
                    return Err(format!("{who}: child {c} has no {name} in the store: {ike_sas:?}"));
                }
            }
        }
    }
    let mut routed = 0;
    for er in ["ike-peer", "ike-peer-voice"] {
        let Ok(e) = store.eroute(er) else { continue };
        let v = serde_json::to_value(&e).map_err(|e| e.to_string())?;
        if let Some(out) = v["sa"].as_str() {
            if !ike_sas.iter().any(|n| n == out) {
                return Err(format!("{who}: {er} points at {out:?}, not in the store: {ike_sas:?}"));
            }
            routed += 1;
        }
    }
    if children > 0 && routed == 0 {
        return Err(format!("{who}: {children} child SAs but no eroute into any: {list:?}"));
    }
    if list.len() > 2048 {
        return Err(format!("{who}: {} IKE SAs held", list.len()));
    }
    Ok(())
}

/// Run one script (see the module doc) and check the invariants.
pub fn daemons(data: &[u8]) -> Result<(), String> {
    let mut a = side(&config(
        "192.0.2.1",
        "198.51.100.1",
        "10.0.1.0/24",
        "10.0.2.0/24",
        "start = \"start\"\nrekey_seconds = 40\ndpd_seconds = 15",
    ));
    let mut b = side(&config(
        "198.51.100.1",
        "192.0.2.1",
        "10.0.2.0/24",
        "10.0.1.0/24",
        "ike_rekey_seconds = 70\nrekey_seconds = 55\ndpd_seconds = 20",
    ));
    let mut now = Instant::now();
    let (addr_a, addr_b): (SocketAddr, SocketAddr) =
        ("192.0.2.1:500".parse().unwrap(), "198.51.100.1:500".parse().unwrap());
    let mut ops = data.chunks(4);
    // Without input: the handshake completes (the seeds start from there).
    for _ in 0..64 {
        let op = ops.next().unwrap_or(&[0, 0, 0, 0]);
        let (kind, x, y) = (op[0] % 12, op.get(1).copied().unwrap_or(0), op.get(2).copied().unwrap_or(0));
        let corrupt = |m: &[u8]| {
            let mut v = m.to_vec();
            if !v.is_empty() {
                let at = usize::from(x) * 7 % v.len();
                v[at] ^= y | 1;
            }
            Some(v)
        };
        match kind {
            0..=3 => {
                // Deliver both ways (the usual case).
                a.daemon.poll(&a.control, now);
                carry(&a, &b, keep);
                b.daemon.poll(&b.control, now);
                carry(&b, &a, keep);
            }
            4 => carry(&a, &b, corrupt),
            5 => carry(&b, &a, corrupt),
            6 => carry(if x % 2 == 0 { &a } else { &b }, &b, |_| None),
            7 => {
                // A forged datagram into one side, from the other's address.
                let (to, from, local) = if x % 2 == 0 { (&b, addr_a, addr_b) } else { (&a, addr_b, addr_a) };
                let body: Vec<u8> = op.iter().copied().cycle().take(usize::from(y)).collect();
                if let Some(d) = IkeDatagram::new(local, from, &body) {
                    let _ = to.queues.to_control.push(d);
                }
            }
            8 | 9 => now += Duration::from_secs(u64::from(x % 90) + 1),
            10 => {
                let s = if x % 2 == 0 { &mut a } else { &mut b };
                let _ = match y % 4 {
                    0 => s.daemon.rekey_named("peer", now).map(drop),
                    1 => s.daemon.initiate_named("peer", now),
                    2 => {
                        s.daemon.terminate_named(&s.control, "peer");
                        Ok(())
                    }
                    _ => s.daemon.rekey_named("nobody", now).map(drop),
                };
            }
            _ => {
                a.daemon.poll(&a.control, now);
                b.daemon.poll(&b.control, now);
            }
        }
        if std::env::var_os("ESPGW_FUZZ_TRACE").is_some() {
            // Debugging a found input: every step and what each side holds.
            eprintln!("op {kind} {x} {y}\n  A {:?}\n  B {:?}", a.daemon.list(now), b.daemon.list(now));
        }
        consistent(&a, "A", now)?;
        consistent(&b, "B", now)?;
    }
    Ok(())
}

/// IKE fragmentation (RFC 7383) under attack (`fuzz/fuzz_targets/
/// ike_fragments.rs`): two messages of one IKE SA are cut into fragments
/// (sizes from the input), and the script delivers, repeats, reorders and
/// corrupts them. Whatever the order, a message comes out only when all
/// its fragments came in authentic, and it is exactly what was sent.
pub fn fragments(data: &[u8]) -> Result<(), String> {
    use super::crypto::{encrypt_message, fragment, Inbound, Reassembly};
    use super::message::{Header, Payload};
    let (head, script) = data.split_at(data.len().min(3));
    let byte = |i: usize| usize::from(head.get(i).copied().unwrap_or(0));
    let max = 100 + byte(0) * 4;
    let key_bytes = [0x42u8; 20];
    let key = super::crypto::SkKey::gcm(&key_bytes);
    let mut iv = 0u64;
    let mut messages = Vec::new();
    for (id, len) in [(5u32, byte(1) * 16 + 1), (6, byte(2) * 8 + 40)] {
        let inner = vec![Payload::VendorId(vec![id as u8; len]), Payload::Nonce(vec![7; 32])];
        let h = Header { spi_i: 1, spi_r: 2, minor: 0, exchange: 37, flags: 0x08, message_id: id };
        let whole = encrypt_message(h, &inner, key, [0xff; 8]).map_err(|e| e.to_string())?;
        let frags = fragment(&whole, key, max, || {
            iv += 1;
            iv.to_be_bytes()
        })
        .map_err(|e| format!("fragmenting {} bytes to {max}: {e}", whole.len()))?;
        if frags.iter().any(|f| f.len() > max) {
            return Err(format!("a fragment larger than {max}"));
        }
        messages.push((inner, frags));
    }
    let mut slot = None;
    for op in script.chunks(2) {
        let (k, x) = (op[0], usize::from(op.get(1).copied().unwrap_or(0)));
        let frags = &messages[usize::from(k & 1)].1;
        let mut bytes = frags[x % frags.len()].clone();
        if k & 6 == 6 {
            // Corrupted anywhere: never accepted.
            let at = (x * 13 + usize::from(k)) % bytes.len();
            bytes[at] ^= (k >> 3) | 1;
        }
        let Ok(Some(done)) = Reassembly::add(&mut slot, &bytes, key) else { continue };
        let (h, got) = Inbound::Reassembled(&done).open(key).map_err(|e| format!("reassembled, not opened: {e}"))?;
        let want = &messages[usize::from(h.message_id == 6)].0;
        if &got != want || (h.message_id != 5 && h.message_id != 6) {
            return Err(format!("message {} reassembled as something never sent", h.message_id));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// In order, every fragment once: each message comes out; a fragment
    /// flipped is never part of one.
    #[test]
    fn fragments_driver_holds() {
        // max 100 + 40*4 = 260 bytes; 12 fragments of message 5 in order, then of 6.
        let mut script = vec![40, 40, 10];
        for i in 0..12 {
            script.extend([0, i]);
        }
        fragments(&script).unwrap();
        let mut flipped = vec![40, 40, 10];
        for i in 0..12 {
            flipped.extend([6, i, 0, i]);
        }
        fragments(&flipped).unwrap();
    }

    /// With no script the two daemons negotiate and every check holds; an
    /// SA taken from the store behind the daemon's back is caught.
    #[test]
    fn the_checks_hold_and_catch_a_leak() {
        daemons(&[]).unwrap();
        let mut a = side(&config("192.0.2.1", "198.51.100.1", "10.0.1.0/24", "10.0.2.0/24", "start = \"start\""));
        let mut b = side(&config("198.51.100.1", "192.0.2.1", "10.0.2.0/24", "10.0.1.0/24", ""));
        let now = Instant::now();
        for _ in 0..4 {
            a.daemon.poll(&a.control, now);
            carry(&a, &b, keep);
            b.daemon.poll(&b.control, now);
            carry(&b, &a, keep);
        }
        assert_eq!(b.daemon.list(now)[0].state, "established");
        assert_eq!(b.daemon.list(now)[0].children.len(), 2, "both children");
        consistent(&b, "B", now).unwrap();
        let name = b.control.store().sas().into_iter().map(|x| x.sa.name).find(|n| n.ends_with("-in")).unwrap();
        b.control.store().delete_sa(&name, true).unwrap();
        assert!(consistent(&b, "B", now).is_err());
    }
}
