//! `espgw-pcap`: make test traffic and read captures, for the demo and tests.
//!
//!     espgw-pcap gen OUT.pcap [--count N] [--seed S]
//!     espgw-pcap show FILE.pcap [--max N]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use espgw_testkit::traffic;

#[derive(Parser)]
#[command(name = "espgw-pcap", about = "Make test traffic and summarise captures")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Write a capture of mixed cleartext IPv4 UDP traffic (60..1514-byte frames, some DF).
    Gen {
        out: PathBuf,
        #[arg(long, default_value_t = 300)]
        count: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Also add this many 3000-byte packets without DF (for a jumbo private side).
        #[arg(long, default_value_t = 0)]
        big: usize,
    },
    /// Which packets of SENT arrived in RECEIVED unchanged (TTL and header checksum aside)?
    Compare { sent: PathBuf, received: PathBuf },
    /// Print one line per packet, then a total.
    Show {
        file: PathBuf,
        /// Print at most this many packet lines.
        #[arg(long, default_value_t = 20)]
        max: usize,
    },
}

fn main() -> ExitCode {
    match Cli::parse().cmd {
        Cmd::Gen { out, count, seed, big } => {
            let mut frames = traffic::mixed_frames(count, seed);
            let mut rng = traffic::Rng::new(seed ^ 0xb16);
            for i in 0..big {
                frames.push(traffic::udp4_frame(
                    3014,
                    [10, 0, 1, 10],
                    [10, 0, 2, 20],
                    4000,
                    5000,
                    60000 + i as u16,
                    false,
                    &mut rng,
                ));
            }
            if let Err(e) = traffic::write_pcap(&out, &frames) {
                eprintln!("espgw-pcap: {}: {e}", out.display());
                return ExitCode::FAILURE;
            }
            let bytes: usize = frames.iter().map(Vec::len).sum();
            println!("wrote {} packets ({bytes} bytes) to {}", frames.len(), out.display());
        }
        Cmd::Show { file, max } => {
            let frames = match traffic::read_pcap(&file) {
                Ok(f) => f,
                Err(e) => {
                    eprintln!("espgw-pcap: {e}");
                    return ExitCode::FAILURE;
                }
            };
            // A reader that stops early (`| head`) is fine: stop quietly.
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            for (i, f) in frames.iter().take(max).enumerate() {
                if writeln!(out, "  {:>4}  {}", i + 1, traffic::summarize(f)).is_err() {
                    return ExitCode::SUCCESS;
                }
            }
            if frames.len() > max {
                let _ = writeln!(out, "  ...   ({} more)", frames.len() - max);
            }
            let bytes: usize = frames.iter().map(Vec::len).sum();
            let _ = writeln!(out, "  {}: {} packets, {bytes} bytes", file.display(), frames.len());
        }
        Cmd::Compare { sent, received } => {
            let (a, b) = match (traffic::read_pcap(&sent), traffic::read_pcap(&received)) {
                (Ok(a), Ok(b)) => (a, b),
                (Err(e), _) | (_, Err(e)) => {
                    eprintln!("espgw-pcap: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let c = traffic::compare(&a, &b);
            println!(
                "  {} of {} sent packets arrived unchanged (TTL aside); {} did not arrive; {} received packets were not sent",
                c.arrived, a.len(), c.missing, c.unexpected
            );
            if c.unexpected > 0 {
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}
