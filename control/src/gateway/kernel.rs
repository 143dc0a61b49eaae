//! The kernel side of the host path (`kernel_setup = true`): the `net_tap`
//! interface is brought up and given the gateway's addresses, and what the
//! kernel sends *from* those addresses is routed back through it by a policy
//! rule (`ip rule add from ADDR lookup TABLE`, default routes in TABLE) — the
//! machine's main routing table is not touched, so its own management
//! traffic keeps its routes. The same rule satisfies strict reverse-path
//! filtering for what arrives on the interface. Undone when espgw stops (the
//! interface goes with the process; the rules would stay).
//!
//! Done with iproute2's `ip`, as an operator would (and as strongSwan's
//! updown scripts do), so that every step can be read in the log.

use std::net::IpAddr;
use std::process::Command;

/// What was set up, to undo at exit.
#[derive(Debug)]
pub struct KernelSide {
    iface: String,
    table: u32,
    rules: Vec<IpAddr>,
}

/// Run `ip ARGS`; an error names the command and what `ip` said.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e} (install iproute2, or set kernel_setup = false)", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// Bring `iface` up with the MAC espgw sends to (`mac`), `addrs` and policy
/// routes in `table`.
pub fn setup(iface: &str, mac: [u8; 6], addrs: &[IpAddr], table: u32) -> Result<KernelSide, String> {
    let t = table.to_string();
    let mac = crate::config::fmt_mac(&mac);
    ip(&["link", "set", "dev", iface, "address", &mac, "up"])?;
    let mut side = KernelSide { iface: iface.to_string(), table, rules: Vec::new() };
    for a in addrs {
        let (fam, plen, default) = if a.is_ipv4() { ("-4", "32", "0.0.0.0/0") } else { ("-6", "128", "::/0") };
        let cidr = format!("{a}/{plen}");
        // An address the interface has already (a restart) is fine.
        let mut add = vec![fam, "addr", "replace", &cidr, "dev", iface];
        if a.is_ipv6() {
            add.push("nodad");
        }
        ip(&add)?;
        ip(&[fam, "route", "replace", default, "dev", iface, "table", &t])?;
        let from = a.to_string();
        // Rules from an earlier run that did not end cleanly go first.
        while ip(&[fam, "rule", "del", "from", &from, "lookup", &t]).is_ok() {}
        ip(&[fam, "rule", "add", "from", &from, "lookup", &t])?;
        side.rules.push(*a);
    }
    tracing::info!(
        target: "espgw::host",
        iface, table, addresses = ?addrs,
        "host path: kernel interface up, traffic from the gateway's addresses routed through it"
    );
    Ok(side)
}

impl Drop for KernelSide {
    fn drop(&mut self) {
        let t = self.table.to_string();
        for a in &self.rules {
            let fam = if a.is_ipv4() { "-4" } else { "-6" };
            let _ = ip(&[fam, "rule", "del", "from", &a.to_string(), "lookup", &t]);
        }
        let _ = ip(&["route", "flush", "table", &t]);
        let _ = ip(&["-6", "route", "flush", "table", &t]);
        tracing::info!(target: "espgw::host", iface = %self.iface, "host path: policy rules removed");
    }
}
