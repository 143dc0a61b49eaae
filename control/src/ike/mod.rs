//! IKEv2 (RFC 7296), written as pure code tested without sockets (issue 19).
//! So far: the message codec ([`message`]), the crypto ([`crypto`]), the
//! IKE_SA_INIT exchange ([`sa_init`]), IKE_AUTH with pre-shared keys and the
//! first child SA ([`auth`], [`ike_auth`]), child SA rekeying
//! ([`create_child`]) and INFORMATIONAL liveness checks and deletes
//! ([`informational`]) — each interoperating with strongSwan in the tests.
//! Still to come: the state machine (message ID windows, retransmission,
//! cookies, fragmentation), the sockets and the worker→control queue in the
//! gateway, `[[connection]]` configuration and traffic through negotiated SAs.
pub mod auth;
pub mod create_child;
pub mod crypto;
pub mod daemon;
pub mod ike_auth;
pub mod ike_rekey;
pub mod informational;
pub mod message;
pub mod sa_init;

#[cfg(test)]
mod daemon_tests;
#[cfg(test)]
mod tests;
