//! The IPsec test setup shared by the end-to-end tests: algorithms with
//! their keys, a gateway pair's config, test traffic, and scapy as the
//! independent ESP implementation.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::*;

pub struct Alg {
    pub name: &'static str,
    pub enc_key: &'static str,
    pub auth_key: &'static str,
    /// Largest inner IPv4 packet through an IPv4 tunnel at MTU 1500.
    pub tunnel_mtu: usize,
}

pub const GCM128: Alg =
    Alg { name: "aes128-gcm16", enc_key: "000102030405060708090a0b0c0d0e0f10111213", auth_key: "", tunnel_mtu: 1446 };
pub const GCM256: Alg = Alg {
    name: "aes256-gcm16",
    enc_key: "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20212223",
    auth_key: "",
    tunnel_mtu: 1446,
};
/// RFC 7634: the same overhead as GCM (8-byte IV, 16-byte ICV, 4-byte alignment).
pub const CHACHA: Alg = Alg {
    name: "chacha20-poly1305",
    enc_key: "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f07000000",
    auth_key: "",
    tunnel_mtu: 1446,
};
pub const CBC128: Alg = Alg {
    name: "aes128-cbc-hmac-sha1-96",
    enc_key: "000102030405060708090a0b0c0d0e0f",
    auth_key: "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3",
    tunnel_mtu: 1438,
};

pub const A_IP: &str = "192.0.2.1";
pub const B_IP: &str = "198.51.100.1";

/// One gateway's config. `me`/`peer` are outer addresses, `mine`/`theirs` the
/// protected subnets; SPIs 0x1001 (A→B) and 0x2001 (B→A).
#[allow(clippy::too_many_arguments)]
pub fn gw_config(test: &str, alg: &Alg, is_a: bool, private_dev: &str, public_dev: &str, cores: &str) -> String {
    let (me, peer, mine, theirs, out_spi, in_spi) = if is_a {
        (A_IP, B_IP, "10.0.1.0/24", "10.0.2.0/24", 0x1001, 0x2001)
    } else {
        (B_IP, A_IP, "10.0.2.0/24", "10.0.1.0/24", 0x2001, 0x1001)
    };
    let auth = |k: &str| if k.is_empty() { String::new() } else { format!("auth_key = \"{k}\"\n") };
    format!(
        r#"
[eal]
{eal}

[mempool]
mbufs = 4095
data_room = 10368

[workers]
cores = {cores}
idle_sleep_us = 20

[[port]]
name = "private"
device = "{private_dev}"
role = "cleartext"
mtu = 9000
addresses = ["{private_addr}"]
peer_mac = "02:00:00:00:00:99"

[[port]]
name = "public"
device = "{public_dev}"
role = "protected"
mtu = 1500
addresses = ["{me}"]
peer_mac = "02:00:00:00:00:98"

[[sa]]
name = "out"
direction = "out"
spi = {out_spi}
algorithm = "{alg}"
enc_key = "{ek}"
{auth}mode = "tunnel"
local = "{me}"
remote = "{peer}"

[[sa]]
name = "in"
direction = "in"
spi = {in_spi}
algorithm = "{alg}"
enc_key = "{ek}"
{auth}mode = "tunnel"
local = "{me}"
remote = "{peer}"
eroute = "nets"

[[eroute]]
name = "nets"
src = "{mine}"
dst = "{theirs}"
action = "protect"
sa = "out"

[[route]]
prefix = "{mine}"
port = "private"

[[route]]
prefix = "0.0.0.0/0"
port = "public"
via = "{peer}"
"#,
        eal = eal_args_toml(test).replace("\"256\"", "\"512\""),
        private_addr = if is_a { "10.0.1.254" } else { "10.0.2.254" },
        alg = alg.name,
        ek = alg.enc_key,
        auth = auth(alg.auth_key),
    )
}

/// Frames from `src_net` hosts to `dst_net` hosts: mixed sizes up to 1514,
/// every third with DF, plus `big` 3000-byte frames without DF.
pub fn traffic(count: usize, seed: u64, from_a: bool, big: usize) -> Vec<Vec<u8>> {
    let mut rng = Rng::new(seed);
    let sizes = [60usize, 64, 128, 512, 1000, 1400, 1460, 1480, 1500, 1514];
    let (s3, d3) = if from_a { (1u8, 2u8) } else { (2, 1) };
    let mut v: Vec<Vec<u8>> = (0..count)
        .map(|i| {
            let len = sizes[rng.below(sizes.len() as u64) as usize];
            let f = (i % 4) as u8;
            udp4_frame(
                len,
                [10, 0, s3, 10 + f],
                [10, 0, d3, 20 + f],
                4000 + f as u16,
                5000,
                i as u16,
                i % 3 == 0,
                &mut rng,
            )
        })
        .collect();
    for i in 0..big {
        v.push(udp4_frame(3014, [10, 0, s3, 50], [10, 0, d3, 60], 7000, 7001, 50_000 + i as u16, false, &mut rng));
    }
    v
}

/// Frames a gateway must refuse with ICMP: DF set and too big for the tunnel.
pub fn refused(frames: &[Vec<u8>], tunnel_mtu: usize) -> usize {
    frames.iter().filter(|f| f[20] & 0x40 != 0 && f.len() - 14 > tunnel_mtu).count()
}

pub fn scapy(cmd: &str, input: &Path, output: &Path, alg: &Alg, spi: u32, local: &str, remote: &str) -> String {
    scapy_with(cmd, input, output, alg, spi, local, remote, &[])
}

/// [`scapy`] with extra options of `pcap_esp.py` (e.g. `--nat-t 31000:4500`).
#[allow(clippy::too_many_arguments)]
pub fn scapy_with(
    cmd: &str,
    input: &Path,
    output: &Path,
    alg: &Alg,
    spi: u32,
    local: &str,
    remote: &str,
    extra: &[&str],
) -> String {
    let mut c = Command::new("python3");
    c.arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/py/pcap_esp.py"))
        .arg(cmd)
        .arg(input)
        .arg(output)
        .args([
            "--algorithm",
            alg.name,
            "--enc-key",
            alg.enc_key,
            "--spi",
            &spi.to_string(),
            "--local",
            local,
            "--remote",
            remote,
        ]);
    if !alg.auth_key.is_empty() {
        c.args(["--auth-key", alg.auth_key]);
    }
    c.args(extra);
    let out = c.output().expect("python3 (make test-deps installs scapy)");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "scapy {cmd} failed: {text}");
    text
}
