//! IKEv2 (RFC 7296), written as pure code tested without sockets. So far:
//! the message codec ([`message`]); the exchanges and the state machine
//! build on it (issue 19).
pub mod auth;
pub mod crypto;
pub mod message;
pub mod sa_init;

#[cfg(test)]
mod tests;
