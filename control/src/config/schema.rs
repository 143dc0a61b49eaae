//! Every configuration key, once: its section, type, default and meaning.
//! `espgw --man-config` renders espgw.toml(5) from this table; tests check
//! that its keys are exactly the ones the parser accepts (section by
//! section) and that the defaults it states are the ones the parser applies,
//! so the manual cannot drift from the code.

/// One key of the configuration file.
#[derive(Debug, Clone, Copy)]
pub struct Key {
    /// `eal`, `port` (an array of tables `[[port]]`), ...
    pub section: &'static str,
    pub key: &'static str,
    pub ty: &'static str,
    /// The default, or `required`, or `-` (absent means off / not set).
    pub default: &'static str,
    pub meaning: &'static str,
}

/// A section: its name, whether it repeats (`[[x]]`), and what it is for.
#[derive(Debug, Clone, Copy)]
pub struct Section {
    pub name: &'static str,
    pub repeated: bool,
    pub about: &'static str,
}

pub const SECTIONS: &[Section] = &[
    Section { name: "eal", repeated: false, about: "Arguments for DPDK's rte_eal_init. Devices come from [[port]], lcores from [workers]." },
    Section { name: "mempool", repeated: false, about: "The packet buffer pool (a jumbo pool for reassembly is sized from it)." },
    Section { name: "workers", repeated: false, about: "Poll-mode workers, one per core, pinned. Required." },
    Section { name: "port", repeated: true, about: "A network port: a PCI NIC or a DPDK virtual device, on the cleartext or the protected side." },
    Section { name: "forward", repeated: true, about: "Plain forwarding between two ports, bypassing IPsec (benchmarks, a management port)." },
    Section { name: "policy", repeated: false, about: "Defaults for traffic no eroute matches, and path MTU ageing." },
    Section { name: "sa", repeated: true, about: "A security association: one direction of a tunnel or transport SA with its keys. Keys are never printed." },
    Section { name: "eroute", repeated: true, about: "Which traffic is protected by which SA, passed, dropped or trapped. Most specific match wins, then lower priority, then lower id." },
    Section { name: "route", repeated: true, about: "Routes, longest prefix first; for ESP the OUTER destination picks the egress port and its MTU." },
    Section { name: "neighbor", repeated: true, about: "Static next-hop MAC addresses (others are learned with ARP/ND)." },
    Section { name: "control", repeated: false, about: "The control API (HTTP over a Unix socket and/or TCP), Prometheus metrics, the event stream and DPDK telemetry commands." },
    Section { name: "metrics", repeated: false, about: "What /metrics exports per SA (totals over every SA are always exported). Applies at restart." },
    Section { name: "connection", repeated: true, about: "An IKEv2 peer (RFC 7296): the control thread negotiates, rekeys and deletes the child SAs and the eroute it installs (named ike-NAME). IKE on UDP 500/4500 to local goes from the workers to the control thread, never through the kernel." },
    Section { name: "connection.child", repeated: true, about: "Another child SA of the [[connection]] above it, on the same IKE SA: its own selectors, SAs and eroute (ike-NAME-CHILD). espgw creates it with CREATE_CHILD_SA after IKE_AUTH when it initiated; as responder it takes the peer's request for it. Suites, ESN, PFS and lifetimes are the connection's." },
    Section { name: "state", repeated: false, about: "Where sequence-number leases and replay tops persist across restarts (the nonce rule)." },
];

pub const KEYS: &[Key] = &[
    Key { section: "eal", key: "args", ty: "array of strings", default: "[]", meaning: "EAL arguments, e.g. [\"--file-prefix\", \"gw1\"] or [\"--no-huge\", \"-m\", \"512\"]. Lcore options (-l, -c, --lcores) are refused: espgw places lcores from workers.cores. Use a --file-prefix (not --in-memory) for dpdk-telemetry.py and dpdk-dumpcap." },
    Key { section: "eal", key: "capture", ty: "boolean", default: "false", meaning: "Let dpdk-dumpcap capture the ports (rte_pdump_init; needs a --file-prefix and hugepages). Off by default: in DPDK 22.11 a capture that ends while traffic flows can free its buffers under a worker still copying into them (the pdump library removes its RX callback without waiting for the workers), so enable it for troubleshooting, not permanently." },
    Key { section: "mempool", key: "mbufs", ty: "integer 1023..4194303", default: "16383", meaning: "Mbufs in the pool. Reassembly may hold at most 1/8 of them." },
    Key { section: "mempool", key: "cache", ty: "integer 0..512", default: "256", meaning: "Per-lcore mbuf cache." },
    Key { section: "mempool", key: "data_room", ty: "integer 1152..65535", default: "2176", meaning: "Bytes per mbuf, including DPDK's 128-byte headroom." },
    Key { section: "workers", key: "cores", ty: "array of integers 0..1023", default: "required", meaning: "CPU cores, one worker each (worker i runs on lcore i+1; lcore 0 is the main/control thread)." },
    Key { section: "workers", key: "idle_sleep_us", ty: "integer", default: "0", meaning: "Sleep this long after a run of empty polls (shared or demo machines); 0 busy-polls." },
    Key { section: "port", key: "name", ty: "string", default: "required", meaning: "The port's name in routes, metrics and the API (letters, digits, '-', '_')." },
    Key { section: "port", key: "device", ty: "string", default: "required", meaning: "A PCI address (0000:01:00.0, bound to vfio-pci; ,devargs allowed) or a DPDK vdev spec (net_pcap0,rx_pcap=in.pcap, net_tap0,iface=x, ...)." },
    Key { section: "port", key: "role", ty: "\"cleartext\" | \"protected\" | \"host\"", default: "required", meaning: "cleartext: the private side (traffic to protect, decrypted traffic out); protected: the public side (ESP in and out); host: the kernel's side of the host path (a net_tap, e.g. net_tap0,iface=espgw0): traffic for the gateway's own addresses (IKE, ping, SSH, decrypted transport payload) goes to the kernel, the kernel's own traffic comes back through the eroutes (IKE bypasses them). At most one." },
    Key { section: "port", key: "mtu", ty: "integer 1280..9600", default: "the device's", meaning: "The port's MTU: ESP is fragmented after encryption to it, DF packets get ICMP need-frag with the tunnel MTU." },
    Key { section: "port", key: "rx_desc", ty: "integer", default: "1024", meaning: "RX ring descriptors per queue." },
    Key { section: "port", key: "tx_desc", ty: "integer", default: "1024", meaning: "TX ring descriptors per queue." },
    Key { section: "port", key: "mac", ty: "MAC string", default: "the device's", meaning: "Source MAC written on egress." },
    Key { section: "port", key: "addresses", ty: "array of IP addresses", default: "[]", meaning: "The gateway's own addresses on this port: ARP/ND answered, ICMP errors sent from them, traffic to them never forwarded." },
    Key { section: "port", key: "host_rate", ty: "integer 100..10000000", default: "10000", meaning: "role = host: packets per second per worker handed to the kernel, per bucket (IKE on UDP 500/4500 has its own); beyond it they are dropped and counted as host_rate_limited." },
    Key { section: "port", key: "kernel_setup", ty: "boolean", default: "true", meaning: "role = host: at start bring the kernel interface up, give it every other port's addresses (/32, /128) and send traffic from them back through it (ip rule from ADDR lookup kernel_table; default routes in that table); undone at exit. Needs iproute2. false: configure the interface yourself." },
    Key { section: "port", key: "kernel_table", ty: "integer 1..2^31-1 (not 253..255)", default: "4500", meaning: "role = host: the kernel routing table of the policy routes kernel_setup adds." },
    Key { section: "port", key: "peer_mac", ty: "MAC string", default: "-", meaning: "Next-hop MAC used when no [[neighbor]] or learned entry matches." },
    Key { section: "forward", key: "from", ty: "port name", default: "required", meaning: "Frames received on this port..." },
    Key { section: "forward", key: "to", ty: "port name", default: "required", meaning: "...leave untouched by this one." },
    Key { section: "policy", key: "default_outbound", ty: "\"drop\" | \"pass\"", default: "drop", meaning: "Cleartext-side traffic no eroute matches." },
    Key { section: "policy", key: "default_inbound_clear", ty: "\"drop\" | \"pass\"", default: "drop", meaning: "Non-ESP traffic arriving on a protected port that no pass eroute allows." },
    Key { section: "policy", key: "pmtu_ageing_s", ty: "integer 1..86400", default: "600", meaning: "A path MTU learned from ICMP is forgotten after this many seconds." },
    Key { section: "sa", key: "name", ty: "string", default: "required", meaning: "The SA's name in eroutes, the API and metrics." },
    Key { section: "sa", key: "direction", ty: "\"in\" | \"out\"", default: "required", meaning: "out: we encrypt with it; in: we decrypt with it." },
    Key { section: "sa", key: "spi", ty: "integer 256..2^32-1", default: "required", meaning: "Security Parameter Index (0x hex in TOML is fine)." },
    Key { section: "sa", key: "algorithm", ty: "string", default: "required", meaning: "aes128-gcm16, aes256-gcm16, chacha20-poly1305 (RFC 7634; 36-byte key: 32 + 4 salt), aes128-cbc-hmac-sha1-96, aes256-cbc-hmac-sha1-96 or null-hmac-sha1-96." },
    Key { section: "sa", key: "backend", ty: "\"auto\" | \"ipsec-mb\" | \"ring\" | \"rustcrypto\"", default: "auto", meaning: "Crypto implementation; auto picks intel-ipsec-mb where it runs (the fastest measured)." },
    Key { section: "sa", key: "enc_key", ty: "hex string", default: "required", meaning: "Encryption key; GCM: key + 4-byte salt (RFC 4106). Never printed." },
    Key { section: "sa", key: "auth_key", ty: "hex string", default: "required for CBC/NULL", meaning: "20-byte HMAC-SHA1 key. Never printed." },
    Key { section: "sa", key: "mode", ty: "\"tunnel\" | \"transport\"", default: "required", meaning: "Tunnel: a new outer header local -> remote; transport: the packet keeps its header." },
    Key { section: "sa", key: "local", ty: "IP address", default: "required in tunnel mode", meaning: "Outer source (outbound) / destination (inbound)." },
    Key { section: "sa", key: "remote", ty: "IP address", default: "required in tunnel mode", meaning: "The peer's address." },
    Key { section: "sa", key: "esn", ty: "boolean", default: "false", meaning: "64-bit extended sequence numbers (RFC 4303 §2.2.1)." },
    Key { section: "sa", key: "replay_window", ty: "integer 64..4096 or 0", default: "1024", meaning: "Anti-replay window in packets; 0 turns anti-replay off (not with ESN)." },
    Key { section: "sa", key: "df", ty: "\"copy\" | \"set\" | \"clear\"", default: "copy", meaning: "The outer header's DF bit." },
    Key { section: "sa", key: "ttl", ty: "integer 1..255", default: "64", meaning: "The outer header's TTL / hop limit." },
    Key { section: "sa", key: "encap", ty: "\"none\" | \"udp\"", default: "none", meaning: "udp: NAT traversal, ESP in UDP (RFC 3948). Outbound adds a UDP header (IPv4 checksum 0, IPv6 computed; 8 bytes more overhead, counted in the tunnel MTU); inbound takes ESP only in UDP to local_port (and plain ESP only for SAs without encap). NAT-keepalives are consumed and counted, IKE (SPI 0) goes to the host path." },
    Key { section: "sa", key: "local_port", ty: "integer 1..65535", default: "4500", meaning: "encap = udp: our UDP port (outbound source, inbound destination)." },
    Key { section: "sa", key: "remote_port", ty: "integer 1..65535", default: "4500", meaning: "encap = udp: the peer's UDP port (outbound destination; inbound, a packet from another port or address is a NAT rebinding)." },
    Key { section: "sa", key: "nat_follow", ty: "boolean", default: "false", meaning: "encap = udp: when an authenticated packet shows the peer's NAT rebound, move this SA (and every following UDP SA to the same peer address and port) to the new address/port. Reported as a nat_mapping event either way." },
    Key { section: "sa", key: "eroute", ty: "eroute name or array of names", default: "-", meaning: "Inbound: decrypted traffic must match these eroutes' selectors, mirrored. An inbound SA needs eroute or its own src/dst (RFC 4301 §5.2)." },
    Key { section: "sa", key: "src", ty: "prefix", default: "-", meaning: "Inbound, own selectors: decrypted packets' source must be in it." },
    Key { section: "sa", key: "dst", ty: "prefix", default: "-", meaning: "Inbound, own selectors: decrypted packets' destination must be in it." },
    Key { section: "sa", key: "proto", ty: "protocol name or number", default: "any", meaning: "Inbound, own selectors: the protocol." },
    Key { section: "sa", key: "sport", ty: "port or \"lo-hi\"", default: "any", meaning: "Inbound, own selectors: source port range (tcp/udp/sctp)." },
    Key { section: "sa", key: "dport", ty: "port or \"lo-hi\"", default: "any", meaning: "Inbound, own selectors: destination port range." },
    Key { section: "sa", key: "soft_bytes", ty: "integer", default: "-", meaning: "Soft lifetime in bytes: an event (sa_soft_expired) asks for a rekey." },
    Key { section: "sa", key: "hard_bytes", ty: "integer", default: "-", meaning: "Hard lifetime in bytes: the SA stops exactly there." },
    Key { section: "sa", key: "soft_packets", ty: "integer", default: "-", meaning: "Soft lifetime in packets." },
    Key { section: "sa", key: "hard_packets", ty: "integer", default: "-", meaning: "Hard lifetime in packets." },
    Key { section: "sa", key: "soft_seconds", ty: "integer", default: "-", meaning: "Soft lifetime in seconds since the SA was added." },
    Key { section: "sa", key: "hard_seconds", ty: "integer", default: "-", meaning: "Hard lifetime in seconds since the SA was added." },
    Key { section: "sa", key: "soft_use_seconds", ty: "integer", default: "-", meaning: "Soft lifetime in seconds since its first packet." },
    Key { section: "sa", key: "hard_use_seconds", ty: "integer", default: "-", meaning: "Hard lifetime in seconds since its first packet." },
    Key { section: "eroute", key: "name", ty: "string", default: "required", meaning: "The eroute's name." },
    Key { section: "eroute", key: "src", ty: "prefix", default: "required", meaning: "Source selector (0.0.0.0/0 or ::/0 for any)." },
    Key { section: "eroute", key: "dst", ty: "prefix", default: "required", meaning: "Destination selector." },
    Key { section: "eroute", key: "proto", ty: "protocol name or number", default: "any", meaning: "tcp, udp, icmp, ... or a number." },
    Key { section: "eroute", key: "sport", ty: "port or \"lo-hi\"", default: "any", meaning: "Source ports (tcp/udp/sctp)." },
    Key { section: "eroute", key: "dport", ty: "port or \"lo-hi\"", default: "any", meaning: "Destination ports." },
    Key { section: "eroute", key: "priority", ty: "integer", default: "100", meaning: "Among equally specific eroutes, the lower wins." },
    Key { section: "eroute", key: "action", ty: "\"protect\" | \"pass\" | \"drop\" | \"trap\"", default: "required", meaning: "protect: encrypt with sa; pass: forward in clear; drop; trap: drop and report an ACQUIRE event." },
    Key { section: "eroute", key: "sa", ty: "SA name", default: "required with protect", meaning: "The outbound SA that protects the traffic." },
    Key { section: "eroute", key: "mss_clamp", ty: "boolean", default: "false", meaning: "Clamp TCP SYN MSS to the tunnel MTU." },
    Key { section: "eroute", key: "fragment_before_encryption", ty: "boolean", default: "false", meaning: "Fragment too-big inner IPv4 (DF clear) before encryption (RFC 4459 §5.1) instead of the outer packet after." },
    Key { section: "route", key: "prefix", ty: "prefix", default: "required", meaning: "Destination prefix (IPv4 or IPv6)." },
    Key { section: "route", key: "port", ty: "port name", default: "required", meaning: "Egress port." },
    Key { section: "route", key: "via", ty: "IP address", default: "-", meaning: "Next hop (on-link destination without it)." },
    Key { section: "neighbor", key: "ip", ty: "IP address", default: "required", meaning: "A next hop's address." },
    Key { section: "neighbor", key: "mac", ty: "MAC string", default: "required", meaning: "Its MAC address." },
    Key { section: "control", key: "socket", ty: "path", default: "/run/espgw/api.sock", meaning: "The API's Unix socket (mode 0660; no token needed: file permissions decide). \"\" turns it off. Relative to the config's folder." },
    Key { section: "control", key: "socket_group", ty: "group name or gid", default: "-", meaning: "Group of the socket." },
    Key { section: "control", key: "listen", ty: "address:port", default: "-", meaning: "A TCP listener (Prometheus, remote tools); always needs the token." },
    Key { section: "control", key: "token", ty: "string, 16+ printable characters", default: "-", meaning: "Bearer token. Never printed." },
    Key { section: "control", key: "token_file", ty: "path", default: "-", meaning: "Read the token from this file (relative to the config's folder)." },
    Key { section: "metrics", key: "per_sa", ty: "\"top\" | \"all\" | \"off\"", default: "top", meaning: "top: series for the top_sas busiest SAs plus the top_sas with most drops; all: every SA; off: totals only." },
    Key { section: "metrics", key: "top_sas", ty: "integer 1..100000", default: "100", meaning: "N for per_sa = \"top\"." },
    Key { section: "connection", key: "name", ty: "string", default: "required", meaning: "The connection's name (letters, digits, '-', '_', '.'); its eroute is ike-NAME, its SAs ike-NAME-SPI-in/out." },
    Key { section: "connection", key: "local", ty: "IP address", default: "required", meaning: "Our address: one of the ports' addresses. IKE is sent from it, the child SAs' outer source." },
    Key { section: "connection", key: "remote", ty: "IP address", default: "required", meaning: "The peer's address (same family as local)." },
    Key { section: "connection", key: "local_id", ty: "IP address, FQDN, user@FQDN or DN", default: "local (with cert: its first subjectAltName, else its subject)", meaning: "Our IKE identity (ID_IPV4_ADDR/ID_IPV6_ADDR, ID_FQDN, ID_RFC822_ADDR, or with a certificate a distinguished name \"CN=west, O=Example\", ID_DER_ASN1_DN). With a certificate it must be one the certificate carries." },
    Key { section: "connection", key: "remote_id", ty: "IP address, FQDN, user@FQDN or DN", default: "remote", meaning: "The identity the peer must prove (a DN is compared by its attributes, case-blind, however it is encoded); any other is refused with AUTHENTICATION_FAILED." },
    Key { section: "connection", key: "child", ty: "array of tables", default: "none", meaning: "More child SAs: [[connection.child]] sections below." },
    Key { section: "connection.child", key: "name", ty: "string", default: "required", meaning: "The child's name: letters, digits, '-', '_' or '.'; its eroute is ike-CONNECTION-NAME." },
    Key { section: "connection.child", key: "local_ts", ty: "array of one prefix", default: "required", meaning: "Our side's selector (one prefix)." },
    Key { section: "connection.child", key: "remote_ts", ty: "array of one prefix", default: "required", meaning: "The peer's side's selector (one prefix, the family of local_ts)." },
    Key { section: "connection", key: "wireshark_keys", ty: "path", default: "off", meaning: "DEBUG ONLY: append every negotiated key to this folder (relative to the config's folder) in Wireshark's formats: esp_sa (ESP SAs) and ikev2_decryption_table (IKE SAs), so a capture can be decrypted. The folder is made 0700, the files 0600; espgw warns at startup while it is on." },
    Key { section: "connection", key: "psk", ty: "string", default: "required unless psk_file or cert", meaning: "The pre-shared key. Never printed." },
    Key { section: "connection", key: "psk_file", ty: "path", default: "-", meaning: "Read the pre-shared key from this file (relative to the config's folder; a trailing newline is dropped)." },
    Key { section: "connection", key: "cert", ty: "path", default: "-", meaning: "Authenticate with this X.509 certificate instead of a PSK (PEM, then any intermediates; relative to the config's folder). local_id must be one of its subjectAltNames and defaults to the first." },
    Key { section: "connection", key: "key", ty: "path", default: "required with cert", meaning: "The certificate's private key: PKCS#8 PEM (ECDSA P-256/P-384 or RSA) or an RSA PRIVATE KEY. Never printed." },
    Key { section: "connection", key: "ca", ty: "path", default: "required with cert", meaning: "The CA certificate(s) (PEM) the peer's certificate must chain to; the peer's identity must be one of its certificate's subjectAltNames." },
    Key { section: "connection", key: "esp", ty: "a suite or an array of suites", default: "\"aes128gcm16\"", meaning: "The child SAs' algorithms in our order of preference: aes128gcm16, aes256gcm16, chacha20poly1305, aes128-sha1 (AES-CBC + HMAC-SHA1-96), aes256-sha1; as responder the peer's first proposal among them wins." },
    Key { section: "connection", key: "ike", ty: "a proposal or an array of proposals", default: "all we run", meaning: "The IKE SA's proposals, strongSwan's way: encryption aes128gcm16 or aes256gcm16, or AES-CBC aes128 or aes256 with integrity sha256 (HMAC-SHA256-128) or sha1 (HMAC-SHA1-96); PRF prfsha256 (the default), prfsha384 or prfsha512; Diffie-Hellman group x25519, ecp256, ecp384 or modp2048 (several of each type allowed: every combination), e.g. \"aes256gcm16-prfsha256-ecp384\", \"aes128-sha256-x25519\". The first group is in our KE payload; a peer that wants another offered one says so and we retry. Default: AES-GCM then AES-CBC with HMAC-SHA256, every PRF (SHA-256 first), every group (Curve25519 first), AES-256 first when the first esp suite is 256-bit." },
    Key { section: "connection", key: "esn", ty: "boolean", default: "false", meaning: "Offer and accept 64-bit extended sequence numbers for the child SAs (chosen only when the peer agrees)." },
    Key { section: "connection", key: "local_ts", ty: "array of one prefix", default: "required", meaning: "The child SA's traffic selector on our side (narrowed as RFC 7296 §2.9 says)." },
    Key { section: "connection", key: "remote_ts", ty: "array of one prefix", default: "required", meaning: "The child SA's traffic selector on the peer's side." },
    Key { section: "connection", key: "start", ty: "\"none\" | \"start\" | \"trap\"", default: "none", meaning: "none: wait for the peer (or espgwctl ike initiate); start: initiate at startup and again after the tunnel goes down; trap: install a trap eroute and initiate on its first packet (ACQUIRE)." },
    Key { section: "connection", key: "rekey_seconds", ty: "integer 0..31536000", default: "3600", meaning: "Rekey the child SA after this long, make-before-break (the new SA is installed before the old is deleted); 0 never." },
    Key { section: "connection", key: "ike_rekey_seconds", ty: "integer 0..31536000", default: "14400", meaning: "Rekey the IKE SA after this long (less up to a tenth at random), keeping its child SAs (RFC 7296 §2.18); 0 never. The peer may rekey it sooner." },
    Key { section: "connection", key: "pfs", ty: "boolean", default: "false", meaning: "Our child SA rekeys carry a fresh Curve25519 exchange (perfect forward secrecy; strongSwan: esp_proposals = aes128gcm16-x25519). A peer that asks for PFS gets it either way." },
    Key { section: "connection", key: "dpd_seconds", ty: "integer 0..31536000", default: "30", meaning: "Liveness check (an empty INFORMATIONAL) after this much silence; a peer that does not answer the retransmissions is declared dead and its SAs removed. 0 off." },
    Key { section: "state", key: "file", ty: "path", default: "<config stem>.state next to the config", meaning: "The state file (fsync'd before any leased sequence number is used)." },
];

/// Escape text for roff.
fn roff(s: &str) -> String {
    let s = s.replace('\\', "\\\\").replace('-', "\\-");
    if s.starts_with('.') || s.starts_with('\'') {
        format!("\\&{s}")
    } else {
        s
    }
}

/// espgw.toml(5) in roff.
pub fn man_page() -> String {
    let mut m = String::new();
    m += &format!(".TH ESPGW.TOML 5 \"\" \"espgw {}\" \"File Formats\"\n", env!("CARGO_PKG_VERSION"));
    m += ".SH NAME\nespgw.toml \\- configuration of the espgw IPsec gateway\n";
    m += ".SH SYNOPSIS\n/etc/espgw/espgw.toml\n";
    m += ".SH DESCRIPTION\nA TOML file read by \\fBespgw\\fR(8) at start, by \\fBespgw \\-\\-check\\fR, and again on SIGHUP \
         (SAs and eroutes are applied live; other sections need a restart). Every error names the file, the line, the \
         field and the reason. Keys are never printed.\n";
    for s in SECTIONS {
        let head = if s.repeated { format!("[[{}]]", s.name) } else { format!("[{}]", s.name) };
        m += &format!(".SH {}\n{}\n", roff(&head), roff(s.about));
        for k in KEYS.iter().filter(|k| k.section == s.name) {
            m += &format!(
                ".TP\n\\fB{}\\fR = \\fI{}\\fR (default: {})\n{}\n",
                roff(k.key),
                roff(k.ty),
                roff(k.default),
                roff(k.meaning)
            );
        }
    }
    m += ".SH EXAMPLE\nSee /usr/share/doc/espgw/README.md and /etc/espgw/espgw.toml.\n";
    m += ".SH SEE ALSO\n\\fBespgw\\fR(8), \\fBespgwctl\\fR(8), \\fBdpdk\\-telemetry.py\\fR(1), \\fBdpdk\\-dumpcap\\fR(1)\n";
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::collections::BTreeSet;
    use std::path::Path;

    const MINIMAL: &str =
        "[workers]\ncores = [0]\n[[port]]\nname = \"p\"\ndevice = \"net_null0\"\nrole = \"protected\"\n";

    /// The keys the parser accepts in `section`, from serde's own list in
    /// its "unknown field" error (deny_unknown_fields everywhere).
    fn accepted(section: &Section) -> BTreeSet<String> {
        let text = if let Some((parent, _)) = section.name.split_once('.') {
            format!("{MINIMAL}[[{parent}]]\n[[{}]]\nzz_not_a_key = 1\n", section.name)
        } else if section.repeated {
            format!("{MINIMAL}[[{}]]\nzz_not_a_key = 1\n", section.name)
        } else if section.name == "workers" {
            "[workers]\ncores = [0]\nzz_not_a_key = 1\n".to_string()
        } else {
            format!("{MINIMAL}[{}]\nzz_not_a_key = 1\n", section.name)
        };
        let err = Config::parse(Path::new("s.toml"), &text).unwrap_err().reason;
        let list = err.split("expected one of").nth(1).or_else(|| err.split("expected").nth(1)).unwrap_or_else(|| {
            panic!("[{}]: no list of keys in {err:?}", section.name);
        });
        list.split('`').skip(1).step_by(2).map(str::to_string).collect()
    }

    #[test]
    fn the_manual_lists_exactly_the_keys_the_parser_accepts() {
        for s in SECTIONS {
            let documented: BTreeSet<String> =
                KEYS.iter().filter(|k| k.section == s.name).map(|k| k.key.to_string()).collect();
            assert_eq!(documented, accepted(s), "section {}: manual vs parser", s.name);
        }
        for k in KEYS {
            assert!(SECTIONS.iter().any(|s| s.name == k.section), "{}.{}: unknown section", k.section, k.key);
            assert!(!k.meaning.is_empty() && !k.ty.is_empty() && !k.default.is_empty());
        }
    }

    #[test]
    fn every_top_level_section_is_documented() {
        let err = Config::parse(Path::new("s.toml"), &format!("{MINIMAL}[zz_not_a_section]\n")).unwrap_err().reason;
        let top: BTreeSet<&str> = err.split('`').skip(1).step_by(2).filter(|w| *w != "zz_not_a_section").collect();
        let documented: BTreeSet<&str> = SECTIONS.iter().map(|s| s.name).filter(|n| !n.contains('.')).collect();
        assert_eq!(top, documented);
    }

    #[test]
    fn stated_defaults_are_the_applied_ones() {
        let d = |s: &str, k: &str| KEYS.iter().find(|x| x.section == s && x.key == k).unwrap().default;
        let text = format!(
            "{MINIMAL}[[sa]]\nname = \"o\"\ndirection = \"out\"\nspi = 4096\nalgorithm = \"aes128-gcm16\"\n\
             enc_key = \"0x00112233445566778899aabbccddeeff01020304\"\nmode = \"transport\"\n\
             [[eroute]]\nname = \"e\"\nsrc = \"10.0.0.0/8\"\ndst = \"10.0.0.0/8\"\naction = \"drop\"\n"
        );
        let c = Config::parse(Path::new("s.toml"), &text).unwrap();
        assert_eq!(d("mempool", "mbufs"), c.mempool.mbufs.to_string());
        assert_eq!(d("mempool", "cache"), c.mempool.cache.to_string());
        assert_eq!(d("mempool", "data_room"), c.mempool.data_room.to_string());
        assert_eq!(d("port", "rx_desc"), c.ports[0].rx_desc.to_string());
        assert_eq!(d("port", "tx_desc"), c.ports[0].tx_desc.to_string());
        assert_eq!(d("workers", "idle_sleep_us"), c.idle_sleep_us.to_string());
        assert_eq!(d("eal", "capture"), c.capture.to_string());
        assert_eq!(d("policy", "pmtu_ageing_s"), (c.policy.pmtu_ageing_ms / 1000).to_string());
        let sa = &c.sas[0].cfg;
        assert_eq!(d("sa", "replay_window"), sa.replay_window.to_string());
        assert_eq!(d("sa", "ttl"), sa.ttl.to_string());
        assert_eq!(d("sa", "esn"), sa.esn.to_string());
        assert_eq!(d("sa", "backend"), sa.backend.name());
        assert_eq!(d("metrics", "top_sas"), super::super::DEFAULT_TOP_SAS.to_string());
        assert_eq!(d("control", "socket"), super::super::DEFAULT_CONTROL_SOCKET);
        assert_eq!(d("eroute", "priority"), c.eroutes[0].eroute.priority.to_string());
    }

    #[test]
    fn the_page_renders_every_key() {
        let page = man_page();
        assert!(page.starts_with(".TH ESPGW.TOML 5"));
        for k in KEYS {
            assert!(page.contains(&format!("\\fB{}\\fR", roff(k.key))), "{}", k.key);
        }
    }
}
