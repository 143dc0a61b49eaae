//! Finds the system DPDK through pkg-config, compiles the static-inline shim and
//! generates bindings. The pkg-config cflags go unchanged to both bindgen and cc
//! so that the shim and the bindings see exactly the headers DPDK was built with.

use std::env;
use std::path::PathBuf;

const MIN_DPDK: &str = "22.11";
const INSTALL_HINT: &str = "espgw needs DPDK >= 22.11 and its headers.\n\
    On Debian/Ubuntu: apt-get install -y dpdk dpdk-dev libdpdk-dev libipsec-mb-dev libclang-dev pkg-config\n\
    (or run `make deps`, which does this for you).";

fn main() {
    println!("cargo:rerun-if-changed=wrapper.h");
    println!("cargo:rerun-if-changed=shim.h");
    println!("cargo:rerun-if-changed=shim.c");
    println!("cargo:rerun-if-changed=ipsec_mb_shim.h");
    println!("cargo:rerun-if-changed=ipsec_mb_shim.c");

    // Shared linking: Debian's EAL loads PMDs (net_pcap, net_ring, ...) from its
    // driver directory at run time, so no `-d` is needed for vdevs.
    let dpdk = match pkg_config::Config::new().atleast_version(MIN_DPDK).statik(false).probe("libdpdk") {
        Ok(lib) => lib,
        Err(e) => {
            eprintln!("\nerror: DPDK not found via pkg-config: {e}\n{INSTALL_HINT}\n");
            std::process::exit(1);
        }
    };

    // The pkg-config crate reports include paths but drops other cflags
    // (`-include rte_config.h`, `-march=...`), so ask pkg-config for all of them.
    let pkg_config = env::var("PKG_CONFIG").unwrap_or_else(|_| "pkg-config".into());
    let cflags = match std::process::Command::new(&pkg_config).args(["--cflags", "libdpdk"]).output() {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim().to_string(),
        _ => {
            eprintln!("\nerror: `{pkg_config} --cflags libdpdk` failed\n{INSTALL_HINT}\n");
            std::process::exit(1);
        }
    };
    let cflags: Vec<String> = split_flags(&cflags);

    let mut build = cc::Build::new();
    build.file("shim.c").include(".").opt_level(3).warnings(false);
    for f in &cflags {
        build.flag(f);
    }
    build.compile("espgw_dpdk_shim");

    // intel-ipsec-mb (the library DPDK's crypto_aesni_mb PMD is built on):
    // multi-buffer AES-CBC + HMAC-SHA1 and AES-GCM for the `ipsec-mb` backend.
    if !std::path::Path::new("/usr/include/intel-ipsec-mb.h").exists() && env::var_os("IPSEC_MB_INCLUDE").is_none() {
        eprintln!("\nerror: intel-ipsec-mb.h not found.\n{INSTALL_HINT}\n");
        std::process::exit(1);
    }
    let mut imb = cc::Build::new();
    imb.file("ipsec_mb_shim.c").include(".").opt_level(3).warnings(false);
    if let Some(inc) = env::var_os("IPSEC_MB_INCLUDE") {
        imb.include(inc);
    }
    imb.compile("espgw_ipsec_mb_shim");
    println!("cargo:rustc-link-lib=IPSec_MB");

    let mut builder = bindgen::Builder::default()
        .header("wrapper.h")
        .clang_arg("-I.")
        .clang_args(cflags.iter().cloned())
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        .layout_tests(true)
        .derive_default(true)
        .derive_debug(false)
        .generate_comments(false)
        .prepend_enum_name(false)
        .default_enum_style(bindgen::EnumVariation::Consts)
        // Types bindgen mishandles (packed + aligned, SIMD) are opaque: espgw
        // never looks inside them.
        .opaque_type("rte_arp_ipv4")
        .opaque_type("rte_arp_hdr")
        .opaque_type("rte_l2tpv2_combined_msg_hdr")
        .opaque_type("rte_gtp_psc_generic_hdr")
        .opaque_type("rte_xmm")
        .opaque_type("rte_ymm")
        .opaque_type("rte_zmm")
        .opaque_type("rte_eth_fdir_.*")
        .blocklist_type("max_align_t");

    for f in [
        "rte_eal_init",
        "rte_eal_cleanup",
        "rte_strerror",
        "rte_socket_id",
        "rte_lcore_count",
        "rte_thread_register",
        "rte_thread_unregister",
        "rte_eal_remote_launch",
        "rte_eal_wait_lcore",
        "rte_get_main_lcore",
        "rte_lcore_is_enabled",
        "rte_lcore_to_cpu_id",
        "rte_eth_dev_count_avail",
        "rte_eth_dev_get_port_by_name",
        "rte_eth_dev_get_name_by_port",
        "rte_eth_dev_info_get",
        "rte_eth_dev_configure",
        "rte_eth_rx_queue_setup",
        "rte_eth_tx_queue_setup",
        "rte_eth_dev_start",
        "rte_eth_dev_stop",
        "rte_eth_dev_close",
        "rte_eth_dev_set_mtu",
        "rte_eth_dev_get_mtu",
        "rte_eth_macaddr_get",
        "rte_eth_promiscuous_enable",
        "rte_eth_link_get_nowait",
        "rte_eth_stats_get",
        "rte_eth_stats_reset",
        "rte_eth_xstats_get",
        "rte_eth_xstats_get_names",
        "rte_eth_dev_socket_id",
        "rte_eth_dev_is_valid_port",
        "rte_pktmbuf_pool_create",
        "rte_pktmbuf_free_bulk",
        "rte_mempool_free",
        "rte_mempool_avail_count",
        "rte_mempool_in_use_count",
        "rte_telemetry_register_cmd",
        "rte_tel_data_.*",
        "rte_pdump_init",
        "rte_pdump_uninit",
        "espgw_.*",
    ] {
        builder = builder.allowlist_function(f);
    }
    for t in [
        "rte_mbuf",
        "rte_mempool",
        "rte_eth_conf",
        "rte_eth_dev_info",
        "rte_eth_rxconf",
        "rte_eth_txconf",
        "rte_eth_stats",
        "rte_eth_link",
        "rte_eth_xstat",
        "rte_eth_xstat_name",
        "rte_ether_addr",
        "lcore_function_t",
        "telemetry_cb",
        "rte_tel_value_type",
    ] {
        builder = builder.allowlist_type(t);
    }
    for v in [
        "RTE_ETH_MQ_RX_.*",
        "RTE_ETH_MQ_TX_.*",
        "RTE_MBUF_DEFAULT_.*",
        "RTE_PKTMBUF_HEADROOM",
        "RTE_MAX_ETHPORTS",
        "RTE_MAX_LCORE",
        "RTE_ETH_NAME_MAX_LEN",
        "RTE_ETH_XSTATS_NAME_SIZE",
        "RTE_ETHER_ADDR_LEN",
        "SOCKET_ID_ANY",
        "RTE_ETH_LINK_.*",
        "ESPGW_IMB_.*",
        "RTE_MBUF_F_RX_IP_CKSUM_.*",
        "RTE_TEL_.*",
    ] {
        builder = builder.allowlist_var(v);
    }

    let bindings = match builder.generate() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("\nerror: bindgen failed on the DPDK headers: {e}\n{INSTALL_HINT}\n");
            std::process::exit(1);
        }
    };
    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("bindings.rs");
    bindings.write_to_file(&out).expect("writing bindings.rs");

    // pkg-config already emitted the -l/-L lines for the shared libraries; the
    // version goes to dependents as DEP_DPDK_VERSION.
    println!("cargo:version={}", dpdk.version);
}

/// Split a pkg-config flag string on whitespace, keeping `-include X` together
/// as two separate arguments (as the compiler expects them).
fn split_flags(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_string).collect()
}
