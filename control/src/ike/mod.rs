//! IKEv2 (RFC 7296) in the control thread (issue 19). The exchanges are pure
//! code tested without sockets: the message codec ([`message`]), the crypto
//! ([`crypto`]), IKE_SA_INIT with cookies ([`sa_init`]), IKE_AUTH with
//! pre-shared keys or certificates ([`cert`]) and the first child SA
//! ([`auth`], [`ike_auth`]), child
//! SA rekeying ([`create_child`]), IKE SA rekeying ([`ike_rekey`]) and
//! INFORMATIONAL liveness checks and deletes ([`informational`]). The
//! [`daemon`] runs them for the `[[connection]]`s over the workers' IKE
//! queues (retransmission, timers, the store); each interoperates with
//! strongSwan on the real binary in the tests.
pub mod auth;
pub mod cert;
pub mod create_child;
pub mod crypto;
pub mod daemon;
pub mod esp_suite;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod ike_auth;
pub mod ike_rekey;
pub mod informational;
pub mod key_log;
pub mod message;
pub mod sa_init;

#[cfg(test)]
mod cert_tests;
#[cfg(test)]
mod daemon_tests;
#[cfg(test)]
pub(crate) mod test_pki;
#[cfg(test)]
mod tests;
