//! The simulator on the real openb trace. Debug builds place ~150 decisions/s per 1,000
//! GPUs with FGD, so packing runs on a deterministic subset: every 8th node of the default
//! node list (152 nodes, 770 GPUs, all models represented) with the full default pod list
//! cycled to 1.3× that capacity. `examples/sim.rs` runs the whole trace.

use std::path::PathBuf;

use rigwatch_scheduler::sim::{self, Mode, SimOptions};

fn data(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(rel)
}

fn opts(mode: Mode, stride: usize) -> SimOptions {
    SimOptions {
        nodes: data(sim::DEFAULT_NODES),
        pods: data(sim::DEFAULT_PODS),
        runtimes: data(sim::DEFAULT_RUNTIMES),
        mode,
        node_stride: stride,
        ..SimOptions::default()
    }
}

#[test]
fn packing_every_policy_on_openb_default_keeps_invariants() {
    let o = opts(Mode::Packing, 8);
    if !o.nodes.exists() {
        panic!("openb trace missing at {}", o.nodes.display());
    }
    let report = sim::run(&o).unwrap();
    assert_eq!(report.results.len(), 6);
    let mut at100 = std::collections::BTreeMap::new();
    for r in &report.results {
        let p = r.packing.as_ref().unwrap();
        assert!(p.invariants_ok, "{}: over-allocation", r.policy);
        assert_eq!(p.tasks_placed + p.tasks_failed, p.tasks_arrived);
        assert!(p.cpu_only_tasks > 0);
        assert_eq!(p.snapshots.len(), 6, "{}", r.policy);
        let mut last = 0.0;
        for s in &p.snapshots {
            assert!(
                s.allocation_ratio >= last && s.allocation_ratio <= 1.0,
                "{}: {:?}",
                r.policy,
                s
            );
            assert!(
                s.fragmented_share >= 0.0 && s.fragmented_share <= 1.0 - s.allocation_ratio + 1e-9
            );
            // Nothing is allocated that did not arrive (one task overshoots by ≤ 8 GPUs).
            assert!(
                s.allocation_ratio <= f64::from(s.arrived_pct) / 100.0 + 8.0 / report.gpus as f64
            );
            last = s.allocation_ratio;
        }
        if r.policy == "fgd" || r.policy == "rigwatch" {
            // Below saturation FGD-style packing fits everything that arrives.
            let s = &p.snapshots[0];
            assert!(
                (s.allocation_ratio - 0.5).abs() < 0.01,
                "{}: {s:?}",
                r.policy
            );
        }
        at100.insert(r.policy.clone(), p.snapshots[3].allocation_ratio);
    }
    println!("{}", report.render_table());
    assert!(
        at100["fgd"] > at100["random"] && at100["rigwatch"] > at100["random"],
        "{at100:?}"
    );
    assert!(at100["rigwatch"] > at100["spread"], "{at100:?}");
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(
        json["results"][0]["packing"]["snapshots"][3]["arrived_pct"],
        100
    );
}

#[test]
fn time_mode_on_a_subset_is_bounded_and_fair() {
    let mut o = opts(Mode::Time, 16);
    o.policies = vec!["rigwatch".into(), "first-fit".into()];
    let report = sim::run(&o).unwrap();
    for r in &report.results {
        let t = r.time.as_ref().unwrap();
        assert!(
            t.utilization > 0.3 && t.utilization <= t.bound + 1e-9,
            "{}: {t:?}",
            r.policy
        );
        assert!(t.jain_fairness > 0.0 && t.jain_fairness <= 1.0);
        assert!(t.queue_delay_p99_s >= t.queue_delay_mean_s * 0.0);
        assert!(t.jobs_started > 0 && t.earnings_total_minor > 0);
    }
}

/// Generated variants (paper-style resampling) keep every invariant for every policy, and
/// rigwatch's host- and pool-aware measure beats FGD's on a type-constrained, CPU-heavy mix.
#[test]
fn packing_on_a_generated_variant_keeps_invariants() {
    let mut o = opts(Mode::Packing, 8);
    o.variant = Some(sim::VariantSpec::parse("spec=0.33+cpu=2+seed=2").unwrap());
    let report = sim::run(&o).unwrap();
    assert!(report.pods_file.contains("spec=0.33"));
    let at100 = |name: &str| {
        let r = report.results.iter().find(|r| r.policy == name).unwrap();
        r.packing.as_ref().unwrap().snapshots[3].allocation_ratio
    };
    for r in &report.results {
        let p = r.packing.as_ref().unwrap();
        assert!(p.invariants_ok, "{}: over-allocation", r.policy);
        assert_eq!(p.tasks_placed + p.tasks_failed, p.tasks_arrived);
    }
    println!("{}", report.render_table());
    assert!(
        at100("rigwatch") > at100("fgd"),
        "{}",
        report.render_table()
    );
    assert!(at100("rigwatch") > at100("random"));
    let rows = sim::sweep::run(&o, &[None]).unwrap();
    assert!(sim::sweep::render(&rows, 100).contains("rigwatch"));
}

#[test]
fn missing_trace_file_names_the_path() {
    let mut o = opts(Mode::Packing, 1);
    o.nodes = "/nonexistent/nodes.csv".into();
    let err = sim::run(&o).unwrap_err().to_string();
    assert!(err.contains("/nonexistent/nodes.csv"), "{err}");
}
