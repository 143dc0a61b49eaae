//! strongSwan's charon as an IKEv2 peer in a network namespace (kernel-
//! libipsec: ESP in user space over a TUN device, always in UDP 4500): its
//! own mount namespace hides a private /run (the pid file path is fixed),
//! its config and vici socket live in a temporary directory, it logs the
//! child keys (`chd = 4`) to a file.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Charon {
    pub ns: String,
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub log: PathBuf,
    pub conf: PathBuf,
    pub vici: PathBuf,
}

impl Drop for Charon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Charon {
    /// Start charon in `ns` (which exists) and load `swanctl_conf`.
    pub fn start(ns: &str, swanctl_conf: &str) -> Charon {
        Self::start_with_creds(ns, swanctl_conf, &[])
    }

    /// [`Self::start`] with credential files in its swanctl directory
    /// (`SWANCTL_DIR`): (folder, name, text), e.g. ("x509", "east.crt", PEM),
    /// ("x509ca", ...), ("pkcs8", "east.key", PEM).
    pub fn start_with_creds(ns: &str, swanctl_conf: &str, creds: &[(&str, &str, &str)]) -> Charon {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_path_buf();
        for (folder, name, text) in creds {
            std::fs::create_dir_all(d.join(folder)).unwrap();
            std::fs::write(d.join(folder).join(name), text).unwrap();
        }
        std::fs::create_dir(d.join("run")).unwrap();
        let (vici, log, conf) = (d.join("charon.vici"), d.join("charon.log"), d.join("strongswan.conf"));
        std::fs::write(
            &conf,
            format!(
                "charon {{\n  load = random nonce openssl aes gcm sha1 sha2 hmac kdf pem pkcs1 pkcs8 x509 pubkey constraints kernel-libipsec kernel-netlink socket-default vici\n\
                 \x20 plugins {{ vici {{ socket = unix://{} }} }}\n\
                 \x20 filelog {{ log {{ path = {}\n flush_line = yes\n default = 1\n ike = 2\n cfg = 2\n chd = 4 }} }}\n}}\n",
                vici.display(),
                log.display()
            ),
        )
        .unwrap();
        std::fs::write(d.join("swanctl.conf"), swanctl_conf).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "sh", "-c"])
            .arg(format!("mount --bind {} /run && exec /usr/lib/ipsec/charon", d.join("run").display()))
            .env("STRONGSWAN_CONF", &conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("charon (strongswan-charon)");
        let c = Charon { ns: ns.to_string(), child: Some(child), dir, log, conf, vici };
        let mut loaded = false;
        for _ in 0..50 {
            std::thread::sleep(Duration::from_millis(200));
            let file = c.dir.path().join("swanctl.conf");
            if c.swanctl(&["--load-all", "--file", &file.display().to_string()]).0 {
                loaded = true;
                break;
            }
        }
        assert!(loaded, "swanctl could not load the config into charon:\n{}", c.log_text());
        c
    }

    /// Run `swanctl ARGS` against this charon: success and output.
    pub fn swanctl(&self, args: &[&str]) -> (bool, String) {
        let o = Command::new("ip")
            .args(["netns", "exec", &self.ns, "swanctl"])
            .args(args)
            .arg("--uri")
            .arg(format!("unix://{}", self.vici.display()))
            .env("STRONGSWAN_CONF", &self.conf)
            .env("SWANCTL_DIR", self.dir.path())
            .output()
            .unwrap();
        (o.status.success(), format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
    }

    /// Start `swanctl ARGS` without waiting.
    pub fn swanctl_spawn(&self, args: &[&str]) -> Child {
        Command::new("ip")
            .args(["netns", "exec", &self.ns, "swanctl"])
            .args(args)
            .arg("--uri")
            .arg(format!("unix://{}", self.vici.display()))
            .env("STRONGSWAN_CONF", &self.conf)
            .env("SWANCTL_DIR", self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Keys charon logs (`chd = 4`): after each `what => N bytes` line, hex
/// dump lines `  OFF: XX XX ...` up to N bytes.
pub fn logged_keys(log: &str, what: &str) -> Vec<Vec<u8>> {
    let lines: Vec<&str> = log.lines().collect();
    let mut keys = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        let Some(rest) = l.split(&format!("{what} => ")).nth(1) else { continue };
        let n: usize = rest.split(' ').next().and_then(|x| x.parse().ok()).unwrap_or(0);
        let mut key = Vec::new();
        for d in &lines[i + 1..] {
            let Some((_, dump)) = d.split_once(": ") else { break };
            key.extend(
                dump.split_whitespace().take_while(|h| h.len() == 2).filter_map(|h| u8::from_str_radix(h, 16).ok()),
            );
            if key.len() >= n {
                break;
            }
        }
        key.truncate(n);
        keys.push(key);
    }
    keys
}
