//! Alerting rules against a real store: pending → firing → resolved with `for` and
//! `keep_firing_for`, templated labels and annotations, `ALERTS` rows that read back in
//! PromQL, and a rule whose query fails at run time being counted while the others run.

use std::sync::Arc;

use rigwatch_query::QueryService;
use rigwatch_query::rules::{self, RuleSet, parse_rule_file};
use rigwatch_storage::batch::{FieldValue, WriteBatch};
use rigwatch_storage::{Db, DbConfig, WriteOptions};

const S: i64 = 1_000;

async fn open(dir: &std::path::Path) -> Arc<Db> {
    let mut c = DbConfig::new(dir);
    c.background = false;
    Db::open(c).await.expect("open db")
}

async fn temp(db: &Db, gpu: &str, t_ms: i64, v: f64) {
    let mut b = WriteBatch::default();
    let mut r = b.row("gpu", t_ms * 1_000_000);
    r.tag("gpu_uuid", gpu).tag("worker", "w1");
    r.field("temperature", FieldValue::F64(v));
    r.finish(1).unwrap();
    db.write(b, WriteOptions::default()).await.unwrap();
}

const RULES: &str = r#"
groups:
  - name: thermal
    interval: 10s
    rules:
      - alert: GpuHot
        expr: gpu_temperature > 85
        for: 20s
        keep_firing_for: 10s
        labels:
          severity: "{{ $labels.worker }}-page"
        annotations:
          summary: "GPU {{ $labels.gpu_uuid }} at {{ $value }}C"
      - alert: Broken
        expr: gpu_temperature + on() gpu_temperature
      - alert: NotAVector
        expr: '"not a vector"'
"#;

#[tokio::test]
async fn alerts_go_pending_firing_resolved_and_failures_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path()).await;
    let service = QueryService::new(db.clone());
    let mut set = RuleSet::new(parse_rule_file(RULES).unwrap());
    let t0 = 1_700_000_000_000i64 - 1_700_000_000_000i64 % (10 * S);

    let mut fired = Vec::new();
    let mut states = Vec::new();
    for step in 0..10 {
        let t = t0 + step * 10 * S;
        // Hot for steps 0..=4, then cool.
        let v = if step <= 4 { 91.0 } else { 60.0 };
        temp(&db, "GPU-1", t, v).await;
        temp(&db, "GPU-2", t, 50.0).await;
        let out = set.eval_due(&service, t).await;
        let b = rules::alerts_batch(&out.alerts_series, t);
        if !b.is_empty() {
            db.write(b, WriteOptions::default()).await.unwrap();
        }
        let state: Vec<String> = out
            .alerts_series
            .iter()
            .map(|l| {
                format!(
                    "{}:{}",
                    l.get("alertname").unwrap(),
                    l.get("alertstate").unwrap()
                )
            })
            .collect();
        states.push(state.join(","));
        for n in out.notifications {
            fired.push((step, n));
        }
    }
    // for: 20s → firing at step 2; cool from step 5; keep_firing_for 10s → resolved at step 6.
    assert_eq!(
        states[..8],
        [
            "GpuHot:pending",
            "GpuHot:pending",
            "GpuHot:firing",
            "GpuHot:firing",
            "GpuHot:firing",
            "GpuHot:firing",
            "",
            "",
        ]
    );
    assert_eq!(fired.len(), 2, "{fired:?}");
    let (s1, n1) = &fired[0];
    assert_eq!((*s1, n1.resolved), (2, false));
    assert_eq!(n1.labels.get("severity"), Some("w1-page"));
    assert_eq!(n1.labels.get("gpu_uuid"), Some("GPU-1"));
    assert_eq!(n1.annotations["summary"], "GPU GPU-1 at 91C");
    assert_eq!(n1.starts_at_ms, t0 + 20 * S);
    let (s2, n2) = &fired[1];
    assert_eq!(
        (*s2, n2.resolved, n2.ends_at_ms),
        (6, true, Some(t0 + 60 * S))
    );
    assert_eq!(n1.fingerprint, n2.fingerprint);

    // The two bad rules failed every time, and did not stop GpuHot.
    let failures = set.metrics.evaluation_failures.get();
    assert_eq!(failures, 20, "2 failing rules x 10 evaluations");
    let broken = &set.groups[0].rules[1];
    assert!(
        broken
            .health
            .last_error
            .as_deref()
            .unwrap()
            .contains("many-to-many"),
        "{:?}",
        broken.health
    );
    let not_vec = &set.groups[0].rules[2];
    assert!(
        not_vec
            .health
            .last_error
            .as_deref()
            .unwrap()
            .contains("instant vector"),
        "{:?}",
        not_vec.health
    );

    // ALERTS reads back in PromQL.
    let expr = rigwatch_promql::parse("ALERTS{alertstate=\"firing\"}").unwrap();
    let opts = rigwatch_promql::eval::EvalOptions::default();
    let at = t0 + 30 * S;
    let sel = rigwatch_promql::eval::selections(&expr, at, at, &opts);
    let ctx = service.session_context().unwrap();
    let f = rigwatch_query::prometheus::source::fetch(&ctx, &db, sel, 1_000_000, 0)
        .await
        .unwrap();
    let r = rigwatch_promql::eval::instant_query(&f, &expr, at, &opts).unwrap();
    match r.value {
        rigwatch_promql::value::Value::Vector(v) => {
            assert_eq!(v.len(), 1, "{v:?}");
            assert_eq!(v[0].0.get("alertname"), Some("GpuHot"));
            assert_eq!(v[0].0.get("gpu_uuid"), Some("GPU-1"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn webhook_payload_is_alertmanagers() {
    let mut set = RuleSet::new(parse_rule_file(RULES).unwrap());
    let rule = &mut set.groups[0].rules[0];
    let labels = rigwatch_promql::value::Labels::from_pairs([
        ("__name__", "gpu_temperature"),
        ("gpu_uuid", "GPU-9"),
        ("worker", "w2"),
    ]);
    let mut out = rules::EvalOutput::default();
    rule.apply(vec![(labels.clone(), 95.0)], 0, &mut out);
    rule.apply(vec![(labels, 95.0)], 20_000, &mut out);
    let msg = rules::payload::message("ops", "http://rw:9800", "GpuHot", &out.notifications);
    let json = serde_json::to_value(&msg).unwrap();
    assert_eq!(json["version"], "4");
    assert_eq!(json["status"], "firing");
    assert_eq!(json["receiver"], "ops");
    assert_eq!(json["groupKey"], "{}:{alertname=\"GpuHot\"}");
    assert_eq!(json["groupLabels"]["alertname"], "GpuHot");
    assert_eq!(json["commonLabels"]["severity"], "w2-page");
    assert_eq!(json["externalURL"], "http://rw:9800");
    let a = &json["alerts"][0];
    assert_eq!(a["status"], "firing");
    assert_eq!(a["startsAt"], "1970-01-01T00:00:20.000Z");
    assert_eq!(a["endsAt"], "0001-01-01T00:00:00Z");
    assert_eq!(a["annotations"]["summary"], "GPU GPU-9 at 95C");
    assert!(
        a["generatorURL"]
            .as_str()
            .unwrap()
            .starts_with("http://rw:9800/graph?g0.expr=gpu_temperature")
    );
    assert_eq!(a["fingerprint"].as_str().unwrap().len(), 16);
}

/// A restart in the middle: the snapshot taken after each evaluation, restored into a fresh
/// rule set (through JSON, as the server keeps it), carries the `for` clock and the firing
/// announcement over, so the alert fires once and resolves once with the same identity.
#[tokio::test]
async fn alert_state_carries_over_a_restart_through_its_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path()).await;
    let service = QueryService::new(db.clone());
    let groups = || parse_rule_file(RULES).unwrap();
    let t0 = 1_700_000_000_000i64 - 1_700_000_000_000i64 % (10 * S);
    let mut set = RuleSet::new(groups());
    let mut notes = Vec::new();
    let mut snap = None;
    for step in 0..9 {
        let t = t0 + step * 10 * S;
        // Hot for steps 0..=4, then cool; the "server" restarts after steps 1 and 3.
        temp(&db, "GPU-1", t, if step <= 4 { 91.0 } else { 60.0 }).await;
        // A second GPU keeps the `Broken` rule failing (many-to-many), as above.
        temp(&db, "GPU-2", t, 50.0).await;
        if step == 2 || step == 4 {
            let json = serde_json::to_vec(snap.as_ref().unwrap()).unwrap();
            set = RuleSet::new(groups());
            let back: rules::AlertSnapshot = serde_json::from_slice(&json).unwrap();
            assert_eq!(set.restore(back, t, 3_600 * S), Ok(1), "one alert restored");
        }
        let out = set.eval_due(&service, t).await;
        notes.extend(out.notifications.into_iter().map(|n| (step, n)));
        snap = Some(set.snapshot(t));
    }
    // Pending at 0 and 1, restored pending at 2 with its clock: firing at step 2, as without
    // a restart; restored firing at 4 (not announced again); resolved at 6.
    let summary: Vec<(i64, bool)> = notes.iter().map(|(s, n)| (*s, n.resolved)).collect();
    assert_eq!(summary, [(2, false), (6, true)], "{notes:?}");
    assert_eq!(notes[0].1.fingerprint, notes[1].1.fingerprint);
    assert_eq!(notes[1].1.starts_at_ms, t0 + 20 * S);
    assert_eq!(notes[1].1.annotations["summary"], "GPU GPU-1 at 91C");

    // A stale snapshot or one for changed rules restores nothing.
    let old = set.snapshot(t0);
    let mut fresh = RuleSet::new(groups());
    assert!(
        fresh
            .restore(old.clone(), t0 + 7_200 * S, 3_600 * S)
            .is_err()
    );
    let mut renamed = RuleSet::new(parse_rule_file(&RULES.replace("GpuHot", "GpuWarm")).unwrap());
    let mut with_alert = old;
    with_alert.rules = set_with_one_alert(&groups(), t0).rules;
    assert_eq!(renamed.restore(with_alert, t0, 3_600 * S), Ok(0));
}

/// A snapshot holding one pending GpuHot alert.
fn set_with_one_alert(groups: &[rules::RuleGroup], t: i64) -> rules::AlertSnapshot {
    let mut set = RuleSet::new(groups.to_vec());
    let mut out = rules::EvalOutput::default();
    let labels = rigwatch_promql::value::Labels::from_pairs([("gpu_uuid", "GPU-1")]);
    set.groups[0].rules[0].apply(vec![(labels, 91.0)], t, &mut out);
    let snap = set.snapshot(t);
    assert_eq!(snap.rules.len(), 1);
    snap
}
