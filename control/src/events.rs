//! What a key daemon or an operator listens to: one stream of events, as
//! JSON objects, served at `GET /api/v1/events` (Server-Sent Events) and
//! logged (target `espgw::event`).
//!
//! Kinds (`"type"`): `acquire` (a `%trap` eroute was hit: the packet's
//! selectors, rate-limited per eroute, as KLIPS's trap → pluto ACQUIRE),
//! `sa_soft_expired` / `sa_hard_expired` (which limit), `replay_failures` /
//! `icv_failures` (per second, when there were any), `link_up` /
//! `link_down`, `nat_mapping` (a UDP SA's peer rebound: old and new address
//! and port, the SAs that followed; at most one per SA and mapping per 10 s),
//! `config_change` (every change through the API or a reload),
//! `lost` (a slow listener missed this many).
//!
//! Publishing never blocks: a bounded broadcast ring; a listener that falls
//! behind is told how many it lost.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use tokio::sync::broadcast;

/// Events kept for listeners that are behind.
pub const BACKLOG: usize = 4096;
/// At most one `acquire` per eroute in this interval.
pub const ACQUIRE_INTERVAL: Duration = Duration::from_secs(1);

/// The event stream's sending side (cheap to share).
pub struct EventBus {
    tx: broadcast::Sender<Arc<str>>,
    seq: AtomicU64,
    /// Last `acquire` per eroute, for the rate limit.
    acquired: std::sync::Mutex<HashMap<u32, Instant>>,
}

impl Default for EventBus {
    fn default() -> Self {
        EventBus::new()
    }
}

impl EventBus {
    pub fn new() -> EventBus {
        let (tx, _) = broadcast::channel(BACKLOG);
        EventBus { tx, seq: AtomicU64::new(0), acquired: std::sync::Mutex::new(HashMap::new()) }
    }

    /// Publish one event: `kind` and its fields (an object). Adds `seq` and
    /// `time` (seconds since the epoch), logs it, and returns the JSON.
    pub fn publish(&self, kind: &str, fields: Value) -> Arc<str> {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let time = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
        let mut v = json!({ "type": kind, "seq": seq, "time": (time * 1000.0).round() / 1000.0 });
        if let (Some(o), Value::Object(f)) = (v.as_object_mut(), fields) {
            o.extend(f);
        }
        let line: Arc<str> = v.to_string().into();
        tracing::info!(target: "espgw::event", "{line}");
        let _ = self.tx.send(line.clone()); // no listener: fine
        line
    }

    /// An `acquire` for a trap eroute, unless one went out for it within
    /// [`ACQUIRE_INTERVAL`]. Returns whether it was published.
    pub fn acquire(&self, eroute_id: u32, fields: Value) -> bool {
        let now = Instant::now();
        {
            let mut last = self.acquired.lock().unwrap_or_else(|p| p.into_inner());
            if last.get(&eroute_id).is_some_and(|t| now.duration_since(*t) < ACQUIRE_INTERVAL) {
                return false;
            }
            if last.len() > 65536 {
                last.retain(|_, t| now.duration_since(*t) < ACQUIRE_INTERVAL);
            }
            last.insert(eroute_id, now);
        }
        self.publish("acquire", fields);
        true
    }

    /// A new listener: it receives what is published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<str>> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_carry_seq_and_reach_listeners() {
        let bus = EventBus::new();
        let mut rx = bus.subscribe();
        bus.publish("link_down", json!({ "port": "public" }));
        let v: Value = serde_json::from_str(&rx.try_recv().unwrap()).unwrap();
        assert_eq!(
            (v["type"].as_str(), v["port"].as_str(), v["seq"].as_u64()),
            (Some("link_down"), Some("public"), Some(1))
        );
    }

    #[test]
    fn acquires_are_rate_limited_per_eroute() {
        let bus = EventBus::new();
        assert!(bus.acquire(7, json!({})));
        assert!(!bus.acquire(7, json!({})), "the same eroute within a second");
        assert!(bus.acquire(8, json!({})), "another eroute");
    }
}
