//! The shipped Prometheus alert rules: valid (`promtool check rules`), their
//! behaviour pinned by unit tests (`promtool test rules`), and every metric
//! they name one that espgw exports.

use std::path::Path;
use std::process::Command;

fn configs() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../configs"))
}

fn promtool(args: &[&str]) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(configs())
        .output()
        .expect("promtool is installed (package prometheus; scripts/deps.sh test installs it)");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

#[test]
fn alert_rules_are_valid_and_their_tests_pass() {
    let check = promtool(&["check", "rules", "espgw-alerts.yml"]);
    assert!(check.contains("SUCCESS: 12 rules found"), "{check}");
    let test = promtool(&["test", "rules", "espgw-alerts.test.yml"]);
    assert!(test.contains("SUCCESS"), "{test}");
}

#[test]
fn every_alert_is_tested_and_names_real_metrics() {
    let rules = std::fs::read_to_string(configs().join("espgw-alerts.yml")).unwrap();
    let tests = std::fs::read_to_string(configs().join("espgw-alerts.test.yml")).unwrap();
    let metrics_src = [include_str!("../control/src/metrics.rs"), include_str!("../core/src/stats.rs")].concat();
    let mut alerts = 0;
    for line in rules.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix("- alert: ") {
            alerts += 1;
            assert!(
                tests.contains(&format!("alertname: {name}\n")),
                "alert {name} has no case in espgw-alerts.test.yml"
            );
        }
        if let Some(expr) = line.strip_prefix("expr: ") {
            for m in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).filter(|w| w.starts_with("espgw_"))
            {
                assert!(metrics_src.contains(&format!("\"{m}\"")), "alert expression names unknown metric {m}");
            }
        }
    }
    assert_eq!(alerts, 12);
}
