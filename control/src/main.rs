//! `espgw --config FILE [-- EAL args…]` — the gateway process.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use control::config::Config;
use control::gateway::{self, GatewayError, RunOptions};

/// IPsec ESP security gateway on DPDK.
#[derive(Parser, Debug)]
#[command(name = "espgw", version, about)]
struct Cli {
    /// Configuration file (TOML).
    #[arg(short, long, value_name = "FILE", required_unless_present_any = ["man", "man_config"])]
    config: Option<PathBuf>,
    /// Validate the configuration and exit without starting DPDK: the file,
    /// the policy, and this machine (PCI devices present and bound, EAL
    /// options known, next hops on-link).
    #[arg(long)]
    check: bool,
    /// With --check: skip the checks against this machine (a config written
    /// for another box).
    #[arg(long, requires = "check")]
    offline: bool,
    /// Stop once no packet has arrived for this many milliseconds (pcap replay, tests).
    #[arg(long, value_name = "MS")]
    stop_when_idle: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long, value_name = "SECONDS")]
    duration: Option<f64>,
    /// Wait up to this many milliseconds for every port's link to come up
    /// before forwarding (virtual links such as memif connect asynchronously).
    #[arg(long, value_name = "MS")]
    wait_link: Option<u64>,
    /// Also write the final report as JSON to this file.
    #[arg(long, value_name = "FILE")]
    report_json: Option<PathBuf>,
    /// Print the EAL arguments that would be used and exit.
    #[arg(long)]
    print_eal_args: bool,
    /// Print the espgw(8) manual page (roff) and exit.
    #[arg(long, hide = true)]
    man: bool,
    /// Print the espgw.toml(5) manual page (roff), generated from the
    /// configuration schema, and exit.
    #[arg(long, hide = true)]
    man_config: bool,
    /// Log line format (to stderr): human, or JSON lines for collectors.
    #[arg(long, value_enum, default_value = "human")]
    log_format: control::log::LogFormat,
    /// Log level or filter (e.g. `debug`, `info,espgw::api=debug`); default
    /// `info`, or the ESPGW_LOG environment variable.
    #[arg(long, value_name = "FILTER")]
    log_level: Option<String>,
    /// Extra EAL arguments, after `--`.
    #[arg(last = true, value_name = "EAL_ARGS")]
    eal: Vec<String>,
}

/// Exit codes scripts can rely on.
mod exit {
    pub const RUNTIME: u8 = 1;
    pub const CONFIG: u8 = 2;
    pub const LEAK: u8 = 3;
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = control::log::init(cli.log_format, cli.log_level.as_deref()) {
        eprintln!("espgw: {e}");
        return ExitCode::from(exit::CONFIG);
    }
    // intel-ipsec-mb as the `ipsec-mb` backend (and `auto` where it runs).
    espgw_dpdk::ipsec_mb::register();
    if cli.man_config {
        print!("{}", control::config::schema::man_page());
        return ExitCode::SUCCESS;
    }
    if cli.man {
        use clap::CommandFactory;
        return match clap_mangen::Man::new(Cli::command()).section("8").render(&mut std::io::stdout()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("espgw: {e}");
                ExitCode::from(exit::RUNTIME)
            }
        };
    }
    let Some(config) = cli.config.clone() else {
        eprintln!("espgw: --config FILE is required");
        return ExitCode::from(exit::CONFIG);
    };
    let cfg = match Config::load(&config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("espgw: config error: {e}");
            return ExitCode::from(exit::CONFIG);
        }
    };
    if let Err(e) = gateway::check_cores(&cfg) {
        eprintln!("espgw: config error: {e}");
        return ExitCode::from(exit::CONFIG);
    }
    let findings = if cli.offline { Default::default() } else { cfg.preflight(std::path::Path::new("/sys")) };
    for w in &findings.warnings {
        eprintln!("espgw: warning: {w}");
    }
    if !findings.errors.is_empty() {
        for e in &findings.errors {
            eprintln!("espgw: config error: {e}");
        }
        return ExitCode::from(exit::CONFIG);
    }
    if cli.check {
        // Also load the policy as the gateway would (SAD/SPD consistency).
        if let Err(e) = control::store::PolicyStore::from_config(&cfg) {
            eprintln!("espgw: config error: {}: policy: {e}", config.display());
            return ExitCode::from(exit::CONFIG);
        }
        println!(
            "espgw: {} is valid ({} ports, {} workers)",
            config.display(),
            cfg.ports.len(),
            cfg.worker_cores.len()
        );
        return ExitCode::SUCCESS;
    }
    if cli.print_eal_args {
        println!("{}", gateway::eal_args(&cfg, &cli.eal).join(" "));
        return ExitCode::SUCCESS;
    }
    let opts = RunOptions {
        extra_eal_args: cli.eal.clone(),
        stop_when_idle: cli.stop_when_idle.map(Duration::from_millis),
        duration: cli.duration.filter(|d| d.is_finite() && *d > 0.0).map(Duration::from_secs_f64),
        wait_link: cli.wait_link.map(Duration::from_millis),
        config_path: Some(config.clone()),
    };
    match gateway::run(&cfg, &opts) {
        Ok(report) => {
            print!("{}", report.render());
            if let Some(path) = &cli.report_json {
                let json = serde_json::to_string_pretty(&report).expect("report serialises");
                if let Err(e) = std::fs::write(path, json) {
                    eprintln!("espgw: cannot write report to {}: {e}", path.display());
                    return ExitCode::from(exit::RUNTIME);
                }
            }
            if report.mbufs_in_use != 0 {
                return ExitCode::from(exit::LEAK);
            }
            ExitCode::SUCCESS
        }
        Err(e @ GatewayError::Config(_)) => {
            eprintln!("espgw: config error: {e}");
            ExitCode::from(exit::CONFIG)
        }
        Err(e) => {
            eprintln!("espgw: error: {e}");
            ExitCode::from(exit::RUNTIME)
        }
    }
}
