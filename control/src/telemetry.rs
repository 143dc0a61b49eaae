//! espgw's commands on DPDK's telemetry socket, so `dpdk-telemetry.py`
//! shows the gateway and not only its ethdevs:
//!
//! | command | answer |
//! |---|---|
//! | `/espgw/sa/list[,AFTER]` | SA names in name order, at most 512; `,AFTER` continues after that name |
//! | `/espgw/sa/info,NAME` | one SA: parameters (never keys), counters, lifetimes left, drops by class |
//! | `/espgw/eroute/list[,AFTER]` | eroute names, paged the same way |
//! | `/espgw/stats` | packets, drops (total and each non-zero reason), events, uptime |
//!
//! DPDK calls the commands on its own telemetry thread, which must not
//! touch the policy store behind the control thread's back: each command is
//! a request to the control thread (over a channel its event loop serves)
//! answered within [`ANSWER_TIMEOUT`], so the answer is exactly what the
//! HTTP API would say at that moment.

use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::Mutex;
use std::time::Duration;

use espgw_dpdk::telemetry::{self, TelScalar, TelValue, MAX_ARRAY};
use espgw_dpdk::DpdkError;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use crate::api::ControlState;
use crate::store::SaStatus;

/// The commands: name, help (what `/help,CMD` shows).
pub const COMMANDS: &[(&str, &str)] = &[
    ("/espgw/sa/list", "SA names, 512 at a time. Parameters: the name to continue after (optional)"),
    ("/espgw/sa/info", "One SA: parameters, counters, lifetimes left, drops. Parameters: SA name"),
    ("/espgw/eroute/list", "Eroute names, 512 at a time. Parameters: the name to continue after (optional)"),
    ("/espgw/stats", "Gateway counters: packets, drops by reason, events. Takes no parameters"),
];

/// How long the telemetry thread waits for the control thread.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);

/// A command on its way to the control thread.
pub struct Request {
    cmd: String,
    params: String,
    reply: SyncSender<TelValue>,
}

static QUEUE: Mutex<Option<UnboundedSender<Request>>> = Mutex::new(None);

/// Register the commands with DPDK (once, after EAL is up).
pub fn register() -> Result<(), DpdkError> {
    for (cmd, help) in COMMANDS {
        telemetry::register(cmd, help, forward)?;
    }
    Ok(())
}

/// The control thread takes the requests from here on (until [`detach`]).
pub fn attach() -> UnboundedReceiver<Request> {
    let (tx, rx) = unbounded_channel();
    *QUEUE.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
    rx
}

/// The control thread stops answering: commands say so.
pub fn detach() {
    *QUEUE.lock().unwrap_or_else(|p| p.into_inner()) = None;
}

fn error(reason: impl Into<String>) -> TelValue {
    TelValue::Dict(vec![("error".into(), TelScalar::Str(reason.into()))])
}

/// On DPDK's telemetry thread: hand the command to the control thread and wait.
fn forward(cmd: &str, params: &str) -> TelValue {
    let (reply, answer) = sync_channel(1);
    let req = Request { cmd: cmd.to_string(), params: params.to_string(), reply };
    let sent = QUEUE.lock().unwrap_or_else(|p| p.into_inner()).as_ref().is_some_and(|q| q.send(req).is_ok());
    if !sent {
        return error("the espgw control thread is not running");
    }
    answer.recv_timeout(ANSWER_TIMEOUT).unwrap_or_else(|_| error("the espgw control thread did not answer in time"))
}

/// On the control thread: answer one request.
pub fn serve(state: &ControlState<'_>, req: Request) {
    let _ = req.reply.try_send(answer(state, &req.cmd, &req.params));
}

/// What a command answers (pure: the tests call it without DPDK).
pub fn answer(state: &ControlState<'_>, cmd: &str, params: &str) -> TelValue {
    let params = params.trim();
    let after = (!params.is_empty()).then_some(params);
    match cmd {
        "/espgw/sa/list" => {
            let (page, _) = state.store().sas_page(after, MAX_ARRAY, |_| true);
            TelValue::Strings(page.into_iter().map(|s| s.sa.name).collect())
        }
        "/espgw/eroute/list" => {
            let (page, _) = state.store().eroutes_page(after, MAX_ARRAY, |_| true);
            TelValue::Strings(page.into_iter().map(|e| e.name).collect())
        }
        "/espgw/sa/info" if params.is_empty() => error("give the SA's name: /espgw/sa/info,NAME"),
        "/espgw/sa/info" => match state.store().sa(params) {
            Ok(s) => sa_info(&s),
            Err(e) => error(e.to_string()),
        },
        "/espgw/stats" => stats(state),
        _ => error(format!("unknown command {cmd}")),
    }
}

fn sa_info(s: &SaStatus) -> TelValue {
    use TelScalar::{Str, U64};
    let (v, st) = (&s.sa, &s.state);
    let mut d: Vec<(String, TelScalar)> = vec![
        ("name".into(), Str(v.name.clone())),
        ("direction".into(), Str(v.direction.into())),
        ("spi".into(), U64(v.spi.into())),
        ("spi_hex".into(), Str(v.spi_hex.clone())),
        ("algorithm".into(), Str(v.algorithm.into())),
        ("backend".into(), Str(st.backend.into())),
        ("mode".into(), Str(v.mode.into())),
        ("esn".into(), U64(v.esn.into())),
        ("replay_window".into(), U64(v.replay_window.into())),
        ("packets".into(), U64(st.packets)),
        ("bytes".into(), U64(st.bytes)),
        ("soft_expired".into(), U64(st.soft_expired.into())),
        ("hard_expired".into(), U64(st.hard_expired.into())),
        ("next_seq".into(), U64(st.next_seq)),
        ("replay_top".into(), U64(st.replay_top)),
    ];
    for (k, a) in [("local", v.local), ("remote", v.remote)] {
        if let Some(a) = a {
            d.push((k.into(), Str(a.to_string())));
        }
    }
    for (k, x) in [("seconds_left", st.seconds_left), ("bytes_left", st.bytes_left), ("packets_left", st.packets_left)]
    {
        if let Some(x) = x {
            d.push((k.into(), U64(x)));
        }
    }
    if let Some(m) = st.path_mtu {
        d.push(("path_mtu".into(), U64(m.into())));
    }
    d.extend(st.drops.iter().map(|(k, n)| (format!("drops_{k}"), U64(*n))));
    TelValue::Dict(d)
}

fn stats(state: &ControlState<'_>) -> TelValue {
    use TelScalar::U64;
    let Some(l) = &state.live else { return error("the data plane is not running") };
    let (sas, eroutes) = state.store().counts();
    let ports = l.ports();
    let drops = l.drops();
    let mut d: Vec<(String, TelScalar)> = vec![
        ("uptime_s".into(), U64(l.uptime_s() as u64)),
        ("sas".into(), U64(sas as u64)),
        ("eroutes".into(), U64(eroutes as u64)),
        ("rx_packets".into(), U64(ports.iter().map(|p| p.rx_packets).sum())),
        ("tx_packets".into(), U64(ports.iter().map(|p| p.tx_packets).sum())),
        ("drops".into(), U64(drops.iter().map(|(_, n)| n).sum())),
    ];
    d.extend(drops.into_iter().filter(|(_, n)| *n > 0).map(|(r, n)| (format!("drop_{}", r.label()), U64(n))));
    d.extend(l.events().into_iter().filter(|(_, n)| *n > 0).map(|(e, n)| (e.label().to_string(), U64(n))));
    TelValue::Dict(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::PolicyStore;

    fn state() -> ControlState<'static> {
        let cfg = crate::config::n_outbound_sas(600);
        ControlState {
            store: Mutex::new(PolicyStore::from_config(&cfg).unwrap()),
            events: Default::default(),
            live: None,
            token: None,
            metrics: Default::default(),
            ike: None,
        }
    }

    #[test]
    fn lists_page_within_dpdk_limits() {
        let st = state();
        let TelValue::Strings(first) = answer(&st, "/espgw/sa/list", "") else { panic!() };
        assert_eq!(first.len(), MAX_ARRAY);
        let TelValue::Strings(rest) = answer(&st, "/espgw/sa/list", first.last().unwrap()) else { panic!() };
        assert_eq!(rest.len(), 600 - MAX_ARRAY);
        assert_eq!(rest[0], format!("sa{:05}", MAX_ARRAY));
    }

    #[test]
    fn sa_info_shows_state_never_keys() {
        let st = state();
        let TelValue::Dict(d) = answer(&st, "/espgw/sa/info", "sa00007") else { panic!() };
        let get = |k: &str| d.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        assert_eq!(get("spi_hex"), Some(TelScalar::Str("0x00001007".into())));
        assert_eq!(get("drops_replay"), Some(TelScalar::U64(0)));
        assert!(d.iter().all(|(n, _)| !n.contains("key")));
        assert!(d.len() <= telemetry::MAX_DICT);
        let TelValue::Dict(e) = answer(&st, "/espgw/sa/info", "nope") else { panic!() };
        assert_eq!(e[0].0, "error");
        assert_eq!(answer(&st, "/espgw/stats", ""), error("the data plane is not running"));
    }

    #[test]
    fn without_the_control_thread_commands_say_so() {
        detach();
        assert_eq!(forward("/espgw/stats", ""), error("the espgw control thread is not running"));
    }
}
