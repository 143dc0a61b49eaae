//! `kill -HUP`: re-read the config file and apply what changed in its SAs
//! and eroutes as API calls would, make-before-break: outbound SAs first,
//! then eroutes (which name them), then inbound SAs (which name eroutes),
//! and only then what the file no longer has. The nonce rule holds because
//! replacements go through the same store calls as the API's.
//!
//! A file that does not parse or validate is logged with file:line and
//! nothing changes. Sections that cannot change while running (EAL, ports,
//! workers, mempool, control) are compared and, when different, reported as
//! needing a restart. Objects added through the API and not named in the
//! file are left alone.

use std::collections::HashSet;
use std::path::Path;

use espgw_core::policy::{Action, Direction};
use serde_json::json;

use crate::api::ControlState;
use crate::config::{Config, ErouteSpec, SaSpec};

/// What a reload did.
#[derive(Debug, Default)]
pub struct Outcome {
    pub added: Vec<String>,
    pub replaced: Vec<String>,
    pub deleted: Vec<String>,
    pub failed: Vec<String>,
    pub restart_needed: Vec<&'static str>,
}

/// Same SA as configured before (keys included)?
fn same_sa(a: &SaSpec, b: &SaSpec) -> bool {
    format!("{:?}{:?}", a.role, a.cfg) == format!("{:?}{:?}", b.role, b.cfg)
        && a.cfg.enc_key[..] == b.cfg.enc_key[..]
        && a.cfg.auth_key[..] == b.cfg.auth_key[..]
}

/// Reload `path` over the running `current` config; on success `current`
/// becomes the new file's config.
pub fn reload(path: &Path, current: &mut Config, control: &ControlState<'_>) -> Result<Outcome, String> {
    let new = Config::load(path).map_err(|e| e.to_string())?;
    // (Worker cores are not checked against this thread's affinity: EAL
    // pinned the main thread; they only change at restart anyway.)
    let mut out = Outcome::default();
    let fixed: [(&'static str, String, String); 5] = [
        ("eal", format!("{:?}", current.eal_args), format!("{:?}", new.eal_args)),
        ("port", format!("{:?}", current.ports), format!("{:?}", new.ports)),
        ("workers", format!("{:?}", current.worker_cores), format!("{:?}", new.worker_cores)),
        ("mempool", format!("{:?}", current.mempool), format!("{:?}", new.mempool)),
        ("control", format!("{:?}", current.control), format!("{:?}", new.control)),
    ];
    out.restart_needed = fixed.iter().filter(|(_, a, b)| a != b).map(|(n, _, _)| *n).collect();

    let old_sa = |name: &str| current.sas.iter().find(|s| s.name == name);
    let old_er = |name: &str| current.eroutes.iter().find(|e| e.name == name);
    let mut store = control.store();
    let sa_step = |store: &mut crate::store::PolicyStore, s: &SaSpec, out: &mut Outcome| {
        let exists = store.find_sa(&s.name).is_some();
        let r = match (exists, old_sa(&s.name)) {
            (true, Some(o)) if same_sa(o, s) => return,
            (true, _) => store.replace_sa(&s.name, s.clone()).map(|_| out.replaced.push(format!("sa {}", s.name))),
            (false, _) => store.add_sa(s.clone()).map(|_| out.added.push(format!("sa {}", s.name))),
        };
        if let Err(e) = r {
            out.failed.push(format!("sa {}: {e}", s.name));
        }
    };
    for s in new.sas.iter().filter(|s| s.direction() == Direction::Outbound) {
        sa_step(&mut store, s, &mut out);
    }
    // Eroutes name SAs by the new file's ids: translate to the store's.
    for e in &new.eroutes {
        let mut eroute = e.eroute;
        if let Action::Protect { sa, options } = eroute.action {
            let name = new.sas.iter().find(|s| s.id == sa).map(|s| s.name.as_str()).unwrap_or("");
            match store.find_sa(name) {
                Some((id, _)) => eroute.action = Action::Protect { sa: id, options },
                None => {
                    out.failed.push(format!("eroute {}: its SA {name:?} is not installed", e.name));
                    continue;
                }
            }
        }
        let unchanged = old_er(&e.name).is_some_and(|o| {
            let o_sa = match o.eroute.action {
                Action::Protect { sa, .. } => current.sas.iter().find(|s| s.id == sa).map(|s| s.name.clone()),
                _ => None,
            };
            let n_sa = match e.eroute.action {
                Action::Protect { sa, .. } => new.sas.iter().find(|s| s.id == sa).map(|s| s.name.clone()),
                _ => None,
            };
            format!("{:?}{:?}", o.eroute.selector, o.eroute.priority)
                == format!("{:?}{:?}", e.eroute.selector, e.eroute.priority)
                && std::mem::discriminant(&o.eroute.action) == std::mem::discriminant(&e.eroute.action)
                && o_sa == n_sa
        });
        let r = match store.eroute_id(&e.name) {
            Some(_) if unchanged => continue,
            Some(id) => {
                eroute.id = id;
                store
                    .replace_eroute(&e.name, ErouteSpec { name: e.name.clone(), eroute })
                    .map(|_| out.replaced.push(format!("eroute {}", e.name)))
            }
            None => {
                eroute.id = store.next_eroute_id();
                store
                    .add_eroute(ErouteSpec { name: e.name.clone(), eroute })
                    .map(|_| out.added.push(format!("eroute {}", e.name)))
            }
        };
        if let Err(err) = r {
            out.failed.push(format!("eroute {}: {err}", e.name));
        }
    }
    for s in new.sas.iter().filter(|s| s.direction() == Direction::Inbound) {
        sa_step(&mut store, s, &mut out);
    }
    // Break last: what the old file had and the new one does not.
    let new_er: HashSet<&str> = new.eroutes.iter().map(|e| e.name.as_str()).collect();
    for e in current.eroutes.iter().filter(|e| !new_er.contains(e.name.as_str())) {
        match store.delete_eroute(&e.name) {
            Ok(()) => out.deleted.push(format!("eroute {}", e.name)),
            Err(err) => out.failed.push(format!("eroute {}: {err}", e.name)),
        }
    }
    let new_sa: HashSet<&str> = new.sas.iter().map(|s| s.name.as_str()).collect();
    for s in current.sas.iter().filter(|s| !new_sa.contains(s.name.as_str())) {
        match store.delete_sa(&s.name, true) {
            Ok(_) => out.deleted.push(format!("sa {}", s.name)),
            Err(err) => out.failed.push(format!("sa {}: {err}", s.name)),
        }
    }
    drop(store);
    *current = new;
    Ok(out)
}

/// Reload and report: a log line, and a `config_change` (or
/// `reload_failed`) event.
pub fn reload_and_report(path: &Path, current: &mut Config, control: &ControlState<'_>) {
    match reload(path, current, control) {
        Err(e) => {
            tracing::error!(target: "espgw::reload", "reload refused, running state kept: {e}");
            control.events.publish("reload_failed", json!({ "file": path.display().to_string(), "error": e }));
        }
        Ok(o) => {
            for f in &o.failed {
                tracing::error!(target: "espgw::reload", "reload: {f}");
            }
            if !o.restart_needed.is_empty() {
                tracing::warn!(
                    target: "espgw::reload",
                    "reload: [{}] changed and only apply at restart",
                    o.restart_needed.join("], [")
                );
            }
            tracing::info!(
                target: "espgw::reload",
                added = ?o.added, replaced = ?o.replaced, deleted = ?o.deleted, failed = o.failed.len(),
                "reloaded {}", path.display()
            );
            control.events.publish(
                "config_change",
                json!({
                    "by": "reload", "file": path.display().to_string(),
                    "added": o.added, "replaced": o.replaced, "deleted": o.deleted,
                    "failed": o.failed, "restart_needed": o.restart_needed,
                }),
            );
        }
    }
}
