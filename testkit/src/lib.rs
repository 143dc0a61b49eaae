//! Test helpers for espgw, kept out of the shipped crates: synthetic traffic
//! and pcap files, and the checker that holds every API answer to
//! `docs/openapi.json`.
#![forbid(unsafe_code)]

pub mod fuzz_corpus;
pub mod openapi;
pub mod traffic;
