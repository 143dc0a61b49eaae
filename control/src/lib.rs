//! espgw's control side: configuration, process bring-up and shutdown, and
//! (in later modules) the HTTP API and metrics.
pub mod config;
pub mod gateway;
pub mod traffic;
