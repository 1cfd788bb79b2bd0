//! Fault injection into the engine: each rule fires, transitions and recovers as documented;
//! 1,000 injected faults are all detected within their bound; a clean simulated day raises
//! nothing.

use std::time::Instant;

use super::*;
use crate::model::Health;
use crate::rng::SplitMix64 as Rng;

const S: i64 = 1_000_000_000;
const STEP: i64 = 10 * S;

fn gpu(i: usize, uuid: &mut String) -> GpuRef<'_> {
    uuid.clear();
    use std::fmt::Write;
    let _ = write!(uuid, "GPU-{i:04}");
    GpuRef {
        supplier: "acme",
        worker: "w1",
        gpu_uuid: uuid,
        model: "NVIDIA H100 80GB HBM3",
    }
}

/// A healthy sample: busy or idle, cool, counters creeping as they do on a good GPU.
fn clean(step: i64, rng: &mut Rng, prev: &Telemetry) -> Telemetry {
    let mut m = Telemetry {
        utilization: Some(if rng.next_f64() < 0.5 {
            100.0
        } else {
            rng.next_f64() * 90.0
        }),
        temperature: Some(35.0 + rng.next_f64() * 45.0),
        memory_temperature: Some(40.0 + rng.next_f64() * 45.0),
        power_watts: Some(100.0 + rng.next_f64() * 600.0),
        power_limit_watts: Some(700.0),
        energy_mj: Some(prev.energy_mj.unwrap_or(0.0) + 5_000_000.0),
        ecc_dbe_total: Some(0.0),
        remapped_rows_uncorrectable: Some(0.0),
        row_remap_failure: Some(0.0),
        pcie_replay_total: Some(prev.pcie_replay_total.unwrap_or(0.0) + (step % 3) as f64),
        // Idle, app clocks, SW power cap: normal reasons.
        throttle_reasons: Some([0u64, 0x1, 0x2, 0x4][(rng.next_u64() % 4) as usize]),
    };
    // Short thermal blips (one sample) are normal too.
    if rng.next_f64() < 0.01 {
        m.throttle_reasons = Some(throttle::SW_THERMAL_SLOWDOWN);
    }
    m
}

fn transitions(ev: &[Event]) -> Vec<(Health, Health)> {
    ev.iter()
        .filter_map(|e| match e {
            Event::Transition(t) => Some((t.from, t.to)),
            _ => None,
        })
        .collect()
}

fn faults(ev: &[Event]) -> Vec<&Fault> {
    ev.iter()
        .filter_map(|e| match e {
            Event::Fault(f) => Some(f),
            _ => None,
        })
        .collect()
}

#[test]
fn another_suppliers_row_for_a_gpu_neither_faults_nor_heals_it() {
    let mut e = HealthEngine::new(HealthConfig::default());
    let mut u = String::new();
    let mut out = Vec::new();
    let mut rng = Rng::new(3);
    let m = clean(0, &mut rng, &Telemetry::default());
    e.observe_sample(gpu(0, &mut u), 0, &m, &mut out);
    fn forged(u: &str) -> GpuRef<'_> {
        GpuRef {
            supplier: "rival",
            worker: "w9",
            gpu_uuid: u,
            model: "NVIDIA H100 80GB HBM3",
        }
    }
    // A hardware XID under another supplier's name for acme's GPU: nothing happens to it.
    e.observe_xid(forged("GPU-0000"), 5 * S, 79, &mut out);
    e.observe_reset(forged("GPU-0000"), 6 * S, &mut out);
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(e.health("GPU-0000").map(|h| h.0), Some(Health::Healthy));
    // The owner's own XID still drains it, and the rival's reset does not heal it.
    e.observe_xid(gpu(0, &mut u), 7 * S, 79, &mut out);
    assert_eq!(transitions(&out), [(Health::Healthy, Health::Unhealthy)]);
    out.clear();
    e.observe_reset(forged("GPU-0000"), 8 * S, &mut out);
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(e.health("GPU-0000").map(|h| h.0), Some(Health::Unhealthy));
}

#[test]
fn hardware_xid_drains_until_reset_and_application_xid_does_not() {
    let mut e = HealthEngine::new(HealthConfig::default());
    let mut u = String::new();
    let mut out = Vec::new();
    let mut rng = Rng::new(1);
    let m = clean(0, &mut rng, &Telemetry::default());
    e.observe_sample(gpu(0, &mut u), 0, &m, &mut out);
    assert!(out.is_empty());
    e.observe_xid(gpu(0, &mut u), 5 * S, 13, &mut out);
    let f = faults(&out);
    assert_eq!(f.len(), 1);
    assert_eq!((f[0].class, f[0].severity), ("application", Severity::Info));
    assert!(
        transitions(&out).is_empty(),
        "application XIDs are the job's"
    );
    out.clear();
    e.observe_xid(gpu(0, &mut u), 6 * S, 79, &mut out);
    assert_eq!(transitions(&out), [(Health::Healthy, Health::Unhealthy)]);
    let f = faults(&out);
    assert_eq!(
        (f[0].code, f[0].class, f[0].severity),
        (79, "hardware", Severity::Critical)
    );
    assert!(f[0].action.contains("reboot"), "{}", f[0].action);
    out.clear();
    // Time alone does not heal a hardware XID.
    e.tick(6 * S, &mut out); // seen live
    e.tick(3_600 * S, &mut out);
    assert_eq!(transitions(&out), [(Health::Unhealthy, Health::Offline)]);
    out.clear();
    let mut m2 = clean(1, &mut rng, &m);
    m2.energy_mj = m.energy_mj;
    e.observe_sample(gpu(0, &mut u), 3_601 * S, &m2, &mut out);
    assert_eq!(transitions(&out), [(Health::Offline, Health::Unhealthy)]);
    out.clear();
    e.observe_reset(gpu(0, &mut u), 3_602 * S, &mut out);
    assert_eq!(transitions(&out), [(Health::Unhealthy, Health::Healthy)]);
    // Informational: recorded, no change.
    out.clear();
    e.observe_xid(gpu(0, &mut u), 3_603 * S, 63, &mut out);
    assert_eq!(faults(&out)[0].class, "informational");
    assert!(transitions(&out).is_empty());
}

#[test]
fn energy_counter_going_back_is_a_reset() {
    let mut e = HealthEngine::new(HealthConfig::default());
    let mut u = String::new();
    let mut out = Vec::new();
    let mut m = Telemetry {
        energy_mj: Some(1e9),
        ecc_dbe_total: Some(0.0),
        ..Default::default()
    };
    e.observe_sample(gpu(0, &mut u), 0, &m, &mut out);
    m.ecc_dbe_total = Some(2.0);
    m.energy_mj = Some(1.1e9);
    e.observe_sample(gpu(0, &mut u), STEP, &m, &mut out);
    let f = faults(&out);
    assert_eq!(f[0].kind, FaultKind::EccUncorrectable);
    assert!(f[0].evidence.contains("0 -> 2"), "{}", f[0].evidence);
    assert_eq!(transitions(&out), [(Health::Healthy, Health::Unhealthy)]);
    out.clear();
    m.energy_mj = Some(1_000.0);
    m.ecc_dbe_total = Some(0.0);
    e.observe_sample(gpu(0, &mut u), 2 * STEP, &m, &mut out);
    assert_eq!(transitions(&out), [(Health::Unhealthy, Health::Healthy)]);
}

#[test]
fn sustained_conditions_fire_after_their_window_and_recover_after_a_clean_interval() {
    let cfg = HealthConfig::default();
    let mut e = HealthEngine::new(cfg);
    let mut u = String::new();
    let mut out = Vec::new();
    let hot = Telemetry {
        temperature: Some(92.0),
        throttle_reasons: Some(throttle::HW_THERMAL_SLOWDOWN),
        ..Default::default()
    };
    let mut t = 0;
    while t < cfg.throttle_window_ns + STEP {
        e.observe_sample(gpu(0, &mut u), t, &hot, &mut out);
        t += STEP;
    }
    let f = faults(&out);
    let kinds: Vec<_> = f.iter().map(|f| (f.kind, f.time_ns)).collect();
    assert_eq!(
        kinds,
        [
            (FaultKind::OverTemperature, cfg.temperature_window_ns),
            (FaultKind::ThermalThrottle, cfg.throttle_window_ns)
        ]
    );
    assert!(
        f[0].evidence.contains("temperature=92C (limit 87C"),
        "{}",
        f[0].evidence
    );
    assert_eq!(transitions(&out), [(Health::Healthy, Health::Unhealthy)]);
    out.clear();
    let cool = Telemetry {
        temperature: Some(60.0),
        throttle_reasons: Some(0),
        ..Default::default()
    };
    let cooled_at = t;
    while t < cooled_at + cfg.clean_interval_ns + 2 * STEP {
        e.observe_sample(gpu(0, &mut u), t, &cool, &mut out);
        e.tick(t, &mut out);
        t += STEP;
    }
    let tr = transitions(&out);
    assert_eq!(tr, [(Health::Unhealthy, Health::Healthy)]);
}

#[test]
fn pcie_spike_row_remap_failure_and_stuck_utilization() {
    let mut e = HealthEngine::new(HealthConfig::default());
    let mut u = String::new();
    let mut out = Vec::new();
    let mut m = Telemetry {
        pcie_replay_total: Some(10.0),
        row_remap_failure: Some(0.0),
        utilization: Some(100.0),
        ..Default::default()
    };
    e.observe_sample(gpu(0, &mut u), 0, &m, &mut out);
    m.pcie_replay_total = Some(15.0); // 30/min: fine
    e.observe_sample(gpu(0, &mut u), STEP, &m, &mut out);
    assert!(out.is_empty());
    m.pcie_replay_total = Some(500.0);
    e.observe_sample(gpu(0, &mut u), 2 * STEP, &m, &mut out);
    assert_eq!(faults(&out)[0].kind, FaultKind::PcieReplay);
    assert_eq!(transitions(&out), [(Health::Healthy, Health::Degraded)]);
    out.clear();
    m.row_remap_failure = Some(1.0);
    e.observe_sample(gpu(0, &mut u), 3 * STEP, &m, &mut out);
    assert_eq!(faults(&out)[0].kind, FaultKind::RowRemapFailure);
    assert_eq!(transitions(&out), [(Health::Degraded, Health::Unhealthy)]);
    let (_, reasons) = e.health("GPU-0000").unwrap();
    assert_eq!(reasons.len(), 2, "{reasons:?}");

    // Stuck utilization: skipped while the lease view is unknown.
    let mut e = HealthEngine::new(HealthConfig::default());
    let busy = Telemetry {
        utilization: Some(100.0),
        ..Default::default()
    };
    out.clear();
    for i in 0..200 {
        e.observe_sample(gpu(1, &mut u), i * STEP, &busy, &mut out);
    }
    assert!(out.is_empty());
    e.set_lease_oracle(Box::new(|uuid| Some(uuid == "GPU-0002")));
    for i in 200..300 {
        e.observe_sample(gpu(1, &mut u), i * STEP, &busy, &mut out);
        e.observe_sample(gpu(2, &mut u), i * STEP, &busy, &mut out);
    }
    let f = faults(&out);
    assert_eq!(f.len(), 1, "only the unleased GPU: {f:?}");
    assert_eq!(
        (f[0].kind, f[0].gpu.gpu_uuid.as_str()),
        (FaultKind::StuckUtilization, "GPU-0001")
    );
}

/// Injects 1,000 faults of every class into a 64-GPU fleet sampled every 10 s and checks that
/// each is detected (a fault event of the right kind on the right GPU, and a transition where
/// the class changes health) within its bound in data time; prints data-time and wall-clock
/// latencies. Then a clean day over the same fleet must raise nothing.
#[test]
fn thousand_injected_faults_all_detected_and_a_clean_day_is_silent() {
    const GPUS: usize = 64;
    let cfg = HealthConfig::default();
    let mut rng = Rng::new(42);
    let mut e = HealthEngine::new(cfg);
    let mut u = String::new();
    let mut out = Vec::new();
    let mut prev = vec![Telemetry::default(); GPUS];

    // A clean simulated day.
    let day = 86_400 * S;
    let mut t = 0;
    while t < day {
        for (i, p) in prev.iter_mut().enumerate() {
            let m = clean(t / STEP, &mut rng, p);
            e.observe_sample(gpu(i, &mut u), t, &m, &mut out);
            *p = m;
        }
        e.tick(t, &mut out);
        t += STEP;
    }
    assert!(
        out.is_empty(),
        "false positives on a clean day: {:?}",
        &out[..out.len().min(5)]
    );

    // 1,000 faults, one GPU at a time, each followed by recovery (reset or clean data).
    #[derive(Clone, Copy, Debug)]
    enum Inject {
        XidHw,
        XidApp,
        Ecc,
        Thermal,
        Temp,
        Pcie,
        Offline,
    }
    let kinds = [
        Inject::XidHw,
        Inject::XidApp,
        Inject::Ecc,
        Inject::Thermal,
        Inject::Temp,
        Inject::Pcie,
        Inject::Offline,
    ];
    let mut xid_wall = Vec::new();
    let mut delays: Vec<(Inject, i64)> = Vec::new();
    let mut missed = 0;
    for n in 0..1_000 {
        let kind = kinds[n % kinds.len()];
        let g = rng.next_u64() as usize % GPUS;
        let injected_at = t;
        let mut detected: Option<i64> = None;
        out.clear();
        // Run the fleet until detection (or a generous bound), injecting into GPU g.
        let bound = injected_at + 2 * cfg.offline_after_ns.max(cfg.throttle_window_ns);
        while t < bound && detected.is_none() {
            for (i, p) in prev.iter_mut().enumerate() {
                if i == g && matches!(kind, Inject::Offline) {
                    continue;
                }
                let mut m = clean(t / STEP, &mut rng, p);
                if i == g {
                    match kind {
                        Inject::Ecc if t == injected_at => {
                            m.ecc_dbe_total = Some(1.0);
                        }
                        Inject::Thermal => m.throttle_reasons = Some(throttle::HW_THERMAL_SLOWDOWN),
                        Inject::Temp => m.temperature = Some(95.0),
                        Inject::Pcie if t == injected_at => {
                            m.pcie_replay_total = m.pcie_replay_total.map(|v| v + 1_000.0)
                        }
                        _ => {}
                    }
                }
                e.observe_sample(gpu(i, &mut u), t, &m, &mut out);
                *p = m;
                if i == g
                    && t == injected_at
                    && let Inject::XidHw | Inject::XidApp = kind
                {
                    {
                        let code = if matches!(kind, Inject::XidHw) {
                            48
                        } else {
                            31
                        };
                        let w = Instant::now();
                        let before = out.len();
                        e.observe_xid(gpu(g, &mut u), t, code, &mut out);
                        assert!(out.len() > before);
                        xid_wall.push(w.elapsed());
                    }
                }
            }
            e.tick(t, &mut out);
            let uuid = format!("GPU-{g:04}");
            for ev in &out {
                match ev {
                    Event::Fault(f) if f.gpu.gpu_uuid == uuid => {
                        detected.get_or_insert(f.time_ns);
                    }
                    Event::Fault(f) => panic!("false positive on {}: {f:?}", f.gpu.gpu_uuid),
                    _ => {}
                }
            }
            t += STEP;
        }
        match detected {
            Some(d) => delays.push((kind, d - injected_at)),
            None => missed += 1,
        }
        // Recovery: reset, clean data, and a clean interval.
        e.observe_reset(gpu(g, &mut u), t, &mut out);
        let until = t + cfg.clean_interval_ns + 2 * STEP;
        while t < until {
            for (i, p) in prev.iter_mut().enumerate() {
                let mut m = clean(t / STEP, &mut rng, p);
                m.ecc_dbe_total = p.ecc_dbe_total; // keep the counter where it is
                if i == g {
                    m.throttle_reasons = Some(0);
                }
                e.observe_sample(gpu(i, &mut u), t, &m, &mut out);
                *p = m;
            }
            e.tick(t, &mut out);
            t += STEP;
        }
        let (h, reasons) = e.health(&format!("GPU-{g:04}")).unwrap();
        assert_eq!(
            h,
            Health::Healthy,
            "fault {n} ({kind:?}) did not recover: {reasons:?}"
        );
    }
    assert_eq!(missed, 0);
    assert_eq!(delays.len(), 1_000);
    let pct = |mut v: Vec<i64>, p: f64| {
        v.sort_unstable();
        v[((v.len() as f64 * p).ceil() as usize).saturating_sub(1)]
    };
    for k in kinds {
        let d: Vec<i64> = delays
            .iter()
            .filter(|(kk, _)| std::mem::discriminant(kk) == std::mem::discriminant(&k))
            .map(|(_, d)| *d)
            .collect();
        let (p50, p99) = (pct(d.clone(), 0.5), pct(d.clone(), 0.99));
        let bound = match k {
            Inject::XidHw | Inject::XidApp | Inject::Ecc | Inject::Pcie => 0,
            Inject::Thermal => cfg.throttle_window_ns,
            Inject::Temp => cfg.temperature_window_ns,
            Inject::Offline => cfg.offline_after_ns + STEP,
        };
        eprintln!(
            "{k:?}: n={} data-time detection delay p50={}s p99={}s (bound {}s)",
            d.len(),
            p50 / S,
            p99 / S,
            bound / S
        );
        assert!(p99 <= bound, "{k:?} p99 {p99} over {bound}");
    }
    xid_wall.sort_unstable();
    eprintln!(
        "XID wall-clock engine latency over {} faults: p50={:?} p99={:?} max={:?}",
        xid_wall.len(),
        xid_wall[xid_wall.len() / 2],
        xid_wall[xid_wall.len() * 99 / 100],
        xid_wall.last().unwrap()
    );
}

#[test]
fn restored_states_need_the_same_recovery() {
    let cfg = HealthConfig::default();
    let mut e = HealthEngine::new(cfg);
    let mut u = String::new();
    let mut out = Vec::new();
    e.restore(gpu(0, &mut u), 0, Health::Unhealthy, true, "xid: XID 79");
    e.restore(
        gpu(1, &mut u),
        0,
        Health::Degraded,
        false,
        "pcie_replay: ...",
    );
    let m = Telemetry {
        utilization: Some(10.0),
        ..Default::default()
    };
    let mut t = STEP;
    while t < cfg.clean_interval_ns + 2 * STEP {
        e.observe_sample(gpu(0, &mut u), t, &m, &mut out);
        e.observe_sample(gpu(1, &mut u), t, &m, &mut out);
        e.tick(t, &mut out);
        t += STEP;
    }
    // The degraded one healed by time; the hardware one waits for a reset.
    assert_eq!(transitions(&out), [(Health::Degraded, Health::Healthy)]);
    assert_eq!(e.health("GPU-0000").unwrap().0, Health::Unhealthy);
    out.clear();
    e.observe_reset(gpu(0, &mut u), t, &mut out);
    assert_eq!(transitions(&out), [(Health::Unhealthy, Health::Healthy)]);
}

#[test]
fn backfilled_rows_never_go_offline() {
    let mut e = HealthEngine::new(HealthConfig::default());
    let mut u = String::new();
    let mut out = Vec::new();
    let m = Telemetry {
        utilization: Some(10.0),
        ..Default::default()
    };
    // A day of old rows imported at "now" = day 400.
    let now = 400 * 86_400 * S;
    for i in 0..100 {
        e.observe_sample(gpu(0, &mut u), i * STEP, &m, &mut out);
    }
    e.tick(now, &mut out);
    e.tick(now + 3_600 * S, &mut out);
    assert!(out.is_empty(), "{out:?}");
    // Live rows arm it; silence then makes it offline.
    e.observe_sample(gpu(0, &mut u), now, &m, &mut out);
    e.tick(now + S, &mut out);
    e.tick(now + 120 * S, &mut out);
    assert_eq!(transitions(&out), [(Health::Healthy, Health::Offline)]);
}
