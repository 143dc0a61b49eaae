//! espgw's control side: configuration, process bring-up and shutdown, the
//! policy store, the HTTP API and Prometheus metrics.
pub mod api;
pub mod config;
pub mod gateway;
pub mod live;
pub mod metrics;
pub mod state;
pub mod store;
