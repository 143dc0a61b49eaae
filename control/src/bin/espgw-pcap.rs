//! `espgw-pcap`: make test traffic and read captures, for the demo and tests.
//!
//!     espgw-pcap gen OUT.pcap [--count N] [--seed S]
//!     espgw-pcap show FILE.pcap [--max N]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use control::traffic;

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
    },
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
        Cmd::Gen { out, count, seed } => {
            let frames = traffic::mixed_frames(count, seed);
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
            for (i, f) in frames.iter().take(max).enumerate() {
                println!("  {:>4}  {}", i + 1, traffic::summarize(f));
            }
            if frames.len() > max {
                println!("  ...   ({} more)", frames.len() - max);
            }
            let bytes: usize = frames.iter().map(Vec::len).sum();
            println!("  {}: {} packets, {bytes} bytes", file.display(), frames.len());
        }
    }
    ExitCode::SUCCESS
}
