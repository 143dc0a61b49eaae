//! Checks against the machine that a config can pass on its own but that
//! would fail (or misbehave) once DPDK starts: PCI devices that are not
//! there, EAL options DPDK does not know (a typo there surfaces as a bare
//! "Invalid EAL arguments"), next hops that are not on-link. `espgw --check`
//! and the gateway's start run them; errors name the config line.

use std::path::Path;

use super::{Config, ConfigError, Device, Locator, RawConfig};

/// What the checks found: errors stop the gateway, warnings are printed.
#[derive(Debug, Default)]
pub struct Findings {
    pub errors: Vec<ConfigError>,
    pub warnings: Vec<ConfigError>,
}

/// EAL options of DPDK 22.11 (`dpdk-testpmd --help` lists the same):
/// (option, takes a value).
const EAL_OPTIONS: &[(&str, bool)] = &[
    ("-c", true),
    ("-l", true),
    ("--lcores", true),
    ("--main-lcore", true),
    ("-s", true),
    ("--service-coremask", true),
    ("-S", true),
    ("--service-corelist", true),
    ("-n", true),
    ("-r", true),
    ("-b", true),
    ("--block", true),
    ("-a", true),
    ("--allow", true),
    ("--vdev", true),
    ("-d", true),
    ("-m", true),
    ("--socket-mem", true),
    ("--socket-limit", true),
    ("--huge-dir", true),
    ("--file-prefix", true),
    ("--proc-type", true),
    ("--iova-mode", true),
    ("--base-virtaddr", true),
    ("--vfio-intr", true),
    ("--vfio-vf-token", true),
    ("--log-level", true),
    ("--trace", true),
    ("--trace-dir", true),
    ("--trace-bufsz", true),
    ("--trace-mode", true),
    ("--mbuf-pool-ops-name", true),
    ("--force-max-simd-bitwidth", true),
    ("--huge-worker-stack", false),
    ("--syslog", false),
    ("--no-pci", false),
    ("--no-huge", false),
    ("--no-hpet", false),
    ("--no-shconf", false),
    ("--in-memory", false),
    ("--create-uio-dev", false),
    ("--legacy-mem", false),
    ("--single-file-segments", false),
    ("--match-allocations", false),
    ("--huge-unlink", false),
    ("--telemetry", false),
    ("--no-telemetry", false),
    ("--vmware-tsc-map", false),
    ("-v", false),
    ("-h", false),
    ("--help", false),
];

/// Drivers a DPDK PMD can drive a PCI NIC through (mlx* are bifurcated:
/// the kernel driver stays).
const DPDK_DRIVERS: &[&str] = &["vfio-pci", "uio_pci_generic", "igb_uio", "mlx5_core", "mlx4_core"];

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            cur.push((prev[j] + usize::from(ca != *cb)).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Why an EAL argument is not one DPDK knows, with the nearest it does.
fn eal_option_problem(arg: &str) -> Option<String> {
    let name = arg.split('=').next().unwrap_or(arg);
    let known = |n: &str| EAL_OPTIONS.iter().any(|(o, _)| *o == n);
    // Short options may carry their value: -m512, -n4, -a0000:01:00.0.
    let short_with_value =
        !name.starts_with("--") && name.len() > 2 && EAL_OPTIONS.iter().any(|(o, v)| *v && *o == &name[..2]);
    if known(name) || short_with_value {
        return None;
    }
    let nearest =
        EAL_OPTIONS.iter().map(|(o, _)| (edit_distance(name, o), *o)).filter(|(d, o)| *d <= 2 && o.len() > 2).min();
    Some(match nearest {
        Some((_, o)) => format!("{name:?} is not an EAL option (did you mean {o:?}?)"),
        None => format!("{name:?} is not an EAL option of DPDK 22.11 (see dpdk-testpmd --help)"),
    })
}

/// The canonical sysfs name of a PCI address (`01:00.0` -> `0000:01:00.0`).
fn pci_sysfs_name(addr: &str) -> String {
    let a = addr.split(',').next().unwrap_or(addr).to_ascii_lowercase();
    if a.matches(':').count() == 1 {
        format!("0000:{a}")
    } else {
        a
    }
}

impl Config {
    /// The line of something in the config's raw text (for errors found
    /// after parsing), located by `find` as a byte offset.
    pub(super) fn line_of(&self, find: impl FnOnce(&RawConfig) -> Option<usize>) -> Option<usize> {
        let src = std::fs::read_to_string(&self.file).ok()?;
        let raw: RawConfig = toml::from_str(&src).ok()?;
        let at = find(&raw)?;
        Some(Locator { file: &self.file, src: &src }.line(at))
    }

    /// An error at `port[i].device`.
    pub fn port_device_error(&self, i: usize, reason: impl Into<String>) -> ConfigError {
        let line = self.line_of(|r| Some(r.ports.get(i)?.get_ref().device.span().start));
        ConfigError { file: self.file.clone(), line, field: format!("port[{i}].device"), reason: reason.into() }
    }

    /// Check the config against this machine; `sysfs` is `/sys` (tests give another root).
    pub fn preflight(&self, sysfs: &Path) -> Findings {
        let mut f = Findings::default();
        for (i, a) in self.eal_args.iter().enumerate() {
            if !a.starts_with('-') {
                continue;
            }
            if let Some(reason) = eal_option_problem(a) {
                let line = self.line_of(|r| Some(r.eal.args.get(i)?.span().start));
                f.errors.push(ConfigError { file: self.file.clone(), line, field: format!("eal.args[{i}]"), reason });
            }
        }
        for (i, p) in self.ports.iter().enumerate() {
            let Device::Pci { addr } = &p.device else { continue };
            let name = pci_sysfs_name(addr);
            let dev = sysfs.join("bus/pci/devices").join(&name);
            if !dev.exists() {
                f.errors.push(self.port_device_error(
                    i,
                    format!("no PCI device {name} on this machine (dpdk-devbind.py --status lists the NICs)"),
                ));
                continue;
            }
            let driver = std::fs::read_link(dev.join("driver"))
                .ok()
                .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()));
            match driver.as_deref() {
                Some(d) if DPDK_DRIVERS.contains(&d) => {}
                Some(d) => f.warnings.push(self.port_device_error(
                    i,
                    format!("{name} is bound to the kernel driver {d}: bind it for DPDK with dpdk-devbind.py -b vfio-pci {name}"),
                )),
                None => f.warnings.push(self.port_device_error(
                    i,
                    format!("{name} has no driver: bind it with dpdk-devbind.py -b vfio-pci {name}"),
                )),
            }
        }
        // A `via` must be on-link: covered by a route without `via` on the
        // same port, or a static neighbour, as Linux refuses a gateway it
        // cannot reach directly ("Nexthop has invalid gateway").
        for (i, r) in self.routes.iter().enumerate() {
            let Some(via) = r.via else { continue };
            let on_link = self.routes.iter().any(|o| o.via.is_none() && o.port == r.port && o.prefix.contains(via))
                || self.neighbors.iter().any(|(ip, _)| *ip == via)
                || self.ports.get(r.port).is_some_and(|p| p.peer_mac.is_some() || p.addresses.contains(&via));
            if !on_link {
                let line = self.line_of(|raw| Some(raw.routes.get(i)?.span().start));
                f.warnings.push(ConfigError {
                    file: self.file.clone(),
                    line,
                    field: format!("route[{i}].via"),
                    reason: format!(
                        "next hop {via} is not on-link on port {}: no route without via covers it and no \
                         [[neighbor]] names it (ARP/ND will be tried, but a typo here blackholes the route)",
                        self.ports.get(r.port).map_or("?", |p| p.name.as_str())
                    ),
                });
            }
        }
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eal_typos_get_the_nearest_option() {
        assert_eq!(eal_option_problem("--file-prefix=x"), None);
        assert_eq!(eal_option_problem("-m512"), None);
        assert_eq!(eal_option_problem("--no-huge"), None);
        let r = eal_option_problem("--file-prefx").unwrap();
        assert!(r.contains("did you mean \"--file-prefix\""), "{r}");
        let r = eal_option_problem("--nohuge").unwrap();
        assert!(r.contains("\"--no-huge\""), "{r}");
        assert!(eal_option_problem("--frobnicate").unwrap().contains("not an EAL option of DPDK"));
    }

    #[test]
    fn pci_names_are_canonical() {
        assert_eq!(pci_sysfs_name("01:00.0"), "0000:01:00.0");
        assert_eq!(pci_sysfs_name("0000:AF:00.1,rxq=2"), "0000:af:00.1");
    }

    #[test]
    fn pci_devices_are_looked_up_in_sysfs() {
        let sys = tempfile::tempdir().unwrap();
        let devs = sys.path().join("bus/pci/devices");
        std::fs::create_dir_all(devs.join("0000:01:00.0")).unwrap();
        std::fs::create_dir_all(devs.join("0000:01:00.1")).unwrap();
        std::fs::create_dir_all(sys.path().join("bus/pci/drivers/ixgbe")).unwrap();
        std::os::unix::fs::symlink(sys.path().join("bus/pci/drivers/ixgbe"), devs.join("0000:01:00.1/driver")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("nic.toml");
        let text = "[workers]\ncores = [0]\n[[port]]\nname = \"a\"\ndevice = \"01:00.0\"\nrole = \"cleartext\"\n\
                    [[port]]\nname = \"b\"\ndevice = \"0000:01:00.1\"\nrole = \"protected\"\n\
                    [[port]]\nname = \"c\"\ndevice = \"0000:02:00.0\"\nrole = \"protected\"\n";
        std::fs::write(&file, text).unwrap();
        let cfg = Config::load(&file).unwrap();
        let f = cfg.preflight(sys.path());
        assert_eq!(f.errors.len(), 1, "{:?}", f.errors);
        assert_eq!((f.errors[0].line, f.errors[0].field.as_str()), (Some(13), "port[2].device"));
        assert!(f.errors[0].reason.contains("no PCI device 0000:02:00.0"));
        let w: Vec<String> = f.warnings.iter().map(|w| w.to_string()).collect();
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].contains(":5: port[0].device: 0000:01:00.0 has no driver"), "{w:?}");
        assert!(w[1].contains(
            "bound to the kernel driver ixgbe: bind it for DPDK with dpdk-devbind.py -b vfio-pci 0000:01:00.1"
        ));
    }

    /// The shipped 2-NIC example is clean on a box that has its NICs bound.
    #[test]
    fn the_two_nic_example_passes_on_its_box() {
        let sys = tempfile::tempdir().unwrap();
        let vfio = sys.path().join("bus/pci/drivers/vfio-pci");
        std::fs::create_dir_all(&vfio).unwrap();
        for d in ["0000:01:00.0", "0000:01:00.1"] {
            let dev = sys.path().join("bus/pci/devices").join(d);
            std::fs::create_dir_all(&dev).unwrap();
            std::os::unix::fs::symlink(&vfio, dev.join("driver")).unwrap();
        }
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/tunnel-gcm.toml");
        let f = Config::load(&file).unwrap().preflight(sys.path());
        assert!(f.errors.is_empty() && f.warnings.is_empty(), "{f:?}");
    }
}
