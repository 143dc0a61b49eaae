//! espgw's control side: configuration, process bring-up and shutdown, the
//! policy store, the HTTP API and Prometheus metrics.
pub mod api;
pub mod client;
pub mod config;
pub mod events;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod gateway;
pub mod ike;
pub mod live;
pub mod log;
pub mod metrics;
pub mod server;
pub mod state;
pub mod store;
pub mod telemetry;
