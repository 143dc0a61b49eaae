//! An explicit debug export of negotiated keys in Wireshark's own formats
//! (off by default; a connection's `wireshark_keys = "DIR"`). `DIR` is laid
//! out like a Wireshark configuration profile: `esp_sa` (ESP SAs, the
//! "ESP SAs" table of the ESP dissector) and `ikev2_decryption_table`
//! (IKE SAs, the ISAKMP dissector's table), one row appended per SA as it
//! is made. Point Wireshark at the folder as a profile (or copy the files
//! into one) and it decrypts the captured IKE and ESP.
//!
//! This writes secret keys to disk, which is the point: the folder is
//! made 0700 and the files 0600, and the daemon logs a warning when a
//! connection has it on.

use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use super::crypto::Integ;
use super::esp_suite::EspSuite;
use super::ike_auth::ChildSa;
use super::sa_init::Established;

/// Wireshark's name of a child suite's encryption and integrity (the
/// ESP dissector's value strings).
fn esp_names(suite: EspSuite) -> (&'static str, &'static str) {
    match suite {
        EspSuite::Aes128Gcm16 | EspSuite::Aes256Gcm16 => ("AES-GCM with 16 octet ICV [RFC4106]", "NULL"),
        EspSuite::Chacha20Poly1305 => ("ChaCha20 with Poly1305 [RFC7634]", "NULL"),
        EspSuite::Aes128Sha1 | EspSuite::Aes256Sha1 => ("AES-CBC [RFC3602]", "HMAC-SHA-1-96 [RFC2404]"),
    }
}

/// Lower-case hex, no prefix.
pub(super) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The two `esp_sa` rows of a child SA seen from `local` (ours) to `remote`.
pub fn esp_rows(local: IpAddr, remote: IpAddr, child: &ChildSa) -> String {
    let family = if local.is_ipv4() { "IPv4" } else { "IPv6" };
    let (encr, integ) = esp_names(child.suite);
    let enc_len = child.suite.enc_len();
    let row = |src: IpAddr, dst: IpAddr, spi: u32, key: &[u8]| {
        let (e, a) = key.split_at(enc_len.min(key.len()));
        let a = if a.is_empty() { String::new() } else { format!("0x{}", hex(a)) };
        format!("\"{family}\",\"{src}\",\"{dst}\",\"0x{spi:08x}\",\"{encr}\",\"0x{}\",\"{integ}\",\"{a}\"\n", hex(e))
    };
    row(local, remote, child.spi_out, &child.key_out) + &row(remote, local, child.spi_in, &child.key_in)
}

/// The `ikev2_decryption_table` row of an IKE SA.
pub fn ike_row(est: &Established) -> String {
    let bits = est.suite.encr_key * 8;
    let (encr, integ) = match est.suite.integ {
        None => (format!("AES-GCM-{bits} with 16 octet ICV [RFC5282]"), "NONE [RFC4306]"),
        Some(Integ::HmacSha1_96) => (format!("AES-CBC-{bits} [RFC3602]"), "HMAC_SHA1_96 [RFC2404]"),
        Some(Integ::HmacSha256_128) => (format!("AES-CBC-{bits} [RFC3602]"), "HMAC_SHA2_256_128 [RFC4868]"),
    };
    let k = &est.keys;
    format!(
        "{:016x},{:016x},{},{},\"{encr}\",{},{},\"{integ}\"\n",
        est.spi_i,
        est.spi_r,
        hex(&k.sk_ei),
        hex(&k.sk_er),
        hex(&k.sk_ai),
        hex(&k.sk_ar)
    )
}

/// Append `text` to `dir/file` (both made private if new).
pub fn append(dir: &Path, file: &str, text: &str) -> std::io::Result<()> {
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let mut f = std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(dir.join(file))?;
    f.write_all(text.as_bytes())
}
