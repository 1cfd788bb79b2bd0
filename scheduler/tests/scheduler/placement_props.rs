//! Over random fleets, jobs and faults, no policy ever places on an unhealthy or offline
//! GPU, over-allocates a GPU, breaks a model or memory constraint, or splits a multi-GPU
//! job across nodes.

use proptest::prelude::*;
use rigwatch_scheduler::allocator::{Allocator, AllocatorConfig};
use rigwatch_scheduler::policy::POLICY_NAMES;
use rigwatch_scheduler::{
    EndReason, GpuDemand, GpuSpec, Health, Job, LiveView, NodeSpec, Sample, TaskDistribution,
    WHOLE_GPU, policy_by_name,
};

const MODELS: [&str; 4] = ["H100", "A100", "T4", "4090"];

#[derive(Clone, Debug)]
enum Op {
    Submit {
        demand: GpuDemand,
        models: u8,
        min_mem: u32,
        cpu: u32,
    },
    Finish(usize),
    Fault(usize),
    SetHealth(usize, Health),
    Heartbeat(usize),
    Hot(usize, f32),
    Tick(i64),
}

fn demand() -> impl Strategy<Value = GpuDemand> {
    prop_oneof![
        (1u16..1000).prop_map(GpuDemand::Fraction),
        (1u8..=8).prop_map(GpuDemand::Whole),
        Just(GpuDemand::Whole(1)),
    ]
}

fn health() -> impl Strategy<Value = Health> {
    prop_oneof![
        Just(Health::Healthy),
        Just(Health::Degraded),
        Just(Health::Unhealthy),
        Just(Health::Offline)
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (demand(), 0u8..16, prop_oneof![Just(0u32), 0u32..40_000], 0u32..40_000)
            .prop_map(|(demand, models, min_mem, cpu)| Op::Submit { demand, models, min_mem, cpu }),
        2 => any::<usize>().prop_map(Op::Finish),
        1 => any::<usize>().prop_map(Op::Fault),
        1 => (any::<usize>(), health()).prop_map(|(g, h)| Op::SetHealth(g, h)),
        1 => any::<usize>().prop_map(Op::Heartbeat),
        1 => (any::<usize>(), 30f32..100.0).prop_map(|(g, t)| Op::Hot(g, t)),
        1 => (0i64..120_000).prop_map(Op::Tick),
    ]
}

type Fleet = Vec<(u8, Vec<(usize, Health)>)>;

fn fleet() -> impl Strategy<Value = Fleet> {
    prop::collection::vec(
        (
            16u8..=128,
            prop::collection::vec((0..4usize, health()), 1..=8),
        ),
        1..10,
    )
}

fn build(f: &Fleet) -> (LiveView, Vec<String>) {
    let mut v = LiveView::new();
    v.heartbeat_timeout_ms = Some(60_000);
    let mut uuids = Vec::new();
    for (n, (cores, gpus)) in f.iter().enumerate() {
        let name = format!("node-{n}");
        v.add_node(NodeSpec {
            name: name.clone(),
            supplier: format!("s{}", n % 3),
            cpu_milli: u32::from(*cores) * 1000,
            memory_mib: 0,
        });
        for (i, (m, h)) in gpus.iter().enumerate() {
            let uuid = format!("GPU-{n}-{i}");
            v.add_gpu(
                GpuSpec {
                    uuid: uuid.clone(),
                    node: name.clone(),
                    model: MODELS[*m].into(),
                    memory_total_mib: 0,
                },
                0,
            )
            .unwrap();
            v.set_health(&uuid, *h).unwrap();
            uuids.push(uuid);
        }
    }
    (v, uuids)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    #[test]
    fn no_policy_ever_breaks_a_hard_constraint(
        f in fleet(),
        ops in prop::collection::vec(op(), 1..80),
        seed in any::<u64>(),
    ) {
        // Each policy against the neutral distribution, and against one with model-bound
        // and CPU-hungry shapes (rigwatch's pool pressure and host stranding then act).
        for (name, skewed) in POLICY_NAMES.iter().map(|n| (*n, false)).chain([("rigwatch", true)]) {
            let (view, uuids) = build(&f);
            let dist = if skewed { skewed_distribution(&view) } else { TaskDistribution::generic() };
            let mut a = Allocator::new(view, policy_by_name(name, seed).unwrap(), dist, AllocatorConfig::default());
            let mut now = 0i64;
            let mut running: Vec<u64> = Vec::new();
            let mut next = 0u64;
            let mut wants: std::collections::HashMap<u64, (Vec<String>, u32, GpuDemand)> = std::collections::HashMap::new();
            for op in &ops {
                match op {
                    Op::Submit { demand, models, min_mem, cpu } => {
                        let names: Vec<String> = (0..4).filter(|b| models & (1 << b) != 0).map(|b| MODELS[b].to_string()).collect();
                        let job = Job { models: names.clone(), min_gpu_memory_mib: *min_mem, cpu_milli: *cpu, expected_duration_ms: (next % 4) * 700, ..Job::new(next, *demand) };
                        next += 1;
                        wants.insert(job.id, (names.clone(), *min_mem, *demand));
                        // Every other job goes through the queue (reservations, backfilling).
                        if job.id % 2 == 1 {
                            let _ = a.submit(job, now);
                            continue;
                        }
                        // State the placement is decided on, to check against.
                        let eff: Vec<Health> = (0..uuids.len() as u32).map(|g| a.view.effective_health(g, now)).collect();
                        if let Some(s) = a.try_start(job, now).unwrap() {
                            running.push(s.job);
                            prop_assert_eq!(s.leases.len(), demand.gpu_count(), "{}: wrong GPU count", name);
                            let nodes: std::collections::BTreeSet<&str> = s.leases.iter().map(|l| l.node.as_str()).collect();
                            prop_assert_eq!(nodes.len(), 1, "{}: job split across nodes", name);
                            for l in &s.leases {
                                let g = a.view.gpu_index(&l.gpu_uuid).unwrap();
                                prop_assert!(eff[g as usize].placeable(), "{}: placed on {:?} GPU {}", name, eff[g as usize], l.gpu_uuid);
                                prop_assert!(names.is_empty() || names.contains(&l.model), "{}: model {} not in {:?}", name, l.model, names);
                                prop_assert!(a.view.gpu(&l.gpu_uuid).unwrap().memory_total_mib >= *min_mem);
                                prop_assert_eq!(l.share_milli, demand.per_gpu_milli());
                            }
                        }
                    }
                    Op::Finish(i) if !running.is_empty() => {
                        let j = running.swap_remove(i % running.len());
                        a.finish(j, EndReason::Completed, now).unwrap();
                    }
                    Op::Fault(g) => {
                        let closed = a.fault_gpu(&uuids[g % uuids.len()], now).unwrap();
                        for l in &closed {
                            prop_assert_eq!(l.end_reason, Some(EndReason::FaultHardware));
                        }
                        running.retain(|j| !closed.iter().any(|l| l.job_id == *j));
                        prop_assert_eq!(a.gpu_used_milli(&uuids[g % uuids.len()]), Some(0));
                    }
                    Op::SetHealth(g, h) => a.view.set_health(&uuids[g % uuids.len()], *h).unwrap(),
                    Op::Heartbeat(g) => a.view.heartbeat(&uuids[g % uuids.len()], now).unwrap(),
                    Op::Hot(g, t) => a.view.observe_sample(&uuids[g % uuids.len()], &Sample { ts_ms: now, utilization_pct: 50.0, temperature_c: *t, memory_free_mib: 1000 }).unwrap(),
                    Op::Tick(d) => now += d,
                    Op::Finish(_) => {}
                }
                let eff: Vec<Health> = (0..uuids.len() as u32).map(|g| a.view.effective_health(g, now)).collect();
                for st in a.schedule(now) {
                    running.push(st.job);
                    let (names, min_mem, demand) = &wants[&st.job];
                    prop_assert_eq!(st.leases.len(), demand.gpu_count(), "{}: wrong GPU count (queued)", name);
                    for l in &st.leases {
                        let g = a.view.gpu_index(&l.gpu_uuid).unwrap();
                        prop_assert!(eff[g as usize].placeable(), "{}: queued job placed on {:?} GPU", name, eff[g as usize]);
                        prop_assert!(names.is_empty() || names.contains(&l.model), "{}: queued model {} not in {:?}", name, l.model, names);
                        prop_assert!(a.view.gpu(&l.gpu_uuid).unwrap().memory_total_mib >= *min_mem);
                        prop_assert_eq!(l.node.as_str(), st.leases[0].node.as_str());
                    }
                }
                for (i, g) in a.view.gpus().iter().enumerate() {
                    prop_assert!(g.used_milli <= WHOLE_GPU, "{}: GPU {} over-allocated: {}", name, i, g.used_milli);
                    prop_assert_eq!(g.leases.iter().map(|l| l.1).sum::<u32>(), g.used_milli);
                }
                for n in a.view.nodes() {
                    prop_assert!(n.cpu_used_milli <= n.cpu_total_milli);
                }
            }
            // Rebuilding from the open lease rows reproduces every GPU's share.
            let rows: Vec<_> = a.open_leases().cloned().collect();
            let (view2, _) = build(&f);
            let b = Allocator::rebuild(view2, policy_by_name(name, seed).unwrap(), TaskDistribution::generic(), AllocatorConfig::default(), &rows).unwrap();
            for u in &uuids {
                prop_assert_eq!(a.gpu_used_milli(u), b.gpu_used_milli(u));
            }
            prop_assert_eq!(a.running_jobs(), b.running_jobs());
        }
    }
}

fn skewed_distribution(view: &LiveView) -> TaskDistribution {
    let jobs: Vec<Job> = (0..40u64)
        .map(|i| Job {
            models: if i % 2 == 0 {
                vec!["T4".into()]
            } else {
                Vec::new()
            },
            cpu_milli: 4000 + 2000 * (i % 5) as u32,
            ..Job::new(
                i,
                if i % 3 == 0 {
                    GpuDemand::Fraction(300)
                } else {
                    GpuDemand::Whole(1 + (i % 2) as u8)
                },
            )
        })
        .collect();
    TaskDistribution::from_jobs(view, &jobs, 32)
}

/// Half the expected work can run only on T4: rigwatch keeps an unconstrained job off the
/// T4 pool even where the T4 node comes first; FGD (and first-fit) take the T4.
#[test]
fn rigwatch_keeps_flexible_work_off_a_pool_that_constrained_work_needs() {
    let fleet = || {
        let mut v = LiveView::new();
        for (node, model, gpus) in [("a", "T4", 2), ("b", "H100", 8)] {
            v.add_node(NodeSpec {
                name: node.into(),
                supplier: "s".into(),
                cpu_milli: 0,
                memory_mib: 0,
            });
            for i in 0..gpus {
                let spec = GpuSpec {
                    uuid: format!("{node}{i}"),
                    node: node.into(),
                    model: model.into(),
                    memory_total_mib: 0,
                };
                v.add_gpu(spec, 0).unwrap();
            }
        }
        v
    };
    let v = fleet();
    let shapes: Vec<Job> = (0..10u64)
        .map(|i| Job {
            models: if i % 2 == 0 {
                vec!["T4".into()]
            } else {
                Vec::new()
            },
            ..Job::new(i, GpuDemand::Whole(1))
        })
        .collect();
    let dist = TaskDistribution::from_jobs(&v, &shapes, 32);
    let place = |name: &str| -> String {
        let mut a = Allocator::new(
            fleet(),
            policy_by_name(name, 1).unwrap(),
            dist.clone(),
            AllocatorConfig::default(),
        );
        let s = a
            .try_start(Job::new(100, GpuDemand::Whole(1)), 0)
            .unwrap()
            .unwrap();
        s.leases[0].model.clone()
    };
    assert_eq!(place("rigwatch"), "H100");
    assert_eq!(place("first-fit"), "T4");
    // Without the pool term rigwatch behaves like FGD here.
    assert_eq!(place("rigwatch:pool=0"), place("fgd"));
}

fn small() -> (LiveView, Vec<String>) {
    build(&vec![
        (64, vec![(0, Health::Healthy); 4]),
        (64, vec![(1, Health::Healthy); 2]),
    ])
}

#[test]
fn rebuild_refuses_double_leases() {
    let (view, _) = small();
    let mut a = Allocator::new(
        view,
        policy_by_name("rigwatch", 1).unwrap(),
        TaskDistribution::generic(),
        AllocatorConfig::default(),
    );
    a.try_start(Job::new(1, GpuDemand::Whole(4)), 0)
        .unwrap()
        .unwrap();
    let mut rows: Vec<_> = a.open_leases().cloned().collect();
    // Identical duplicates (a row persisted twice) are merged.
    rows.extend(rows.clone());
    let (v2, _) = small();
    let b = Allocator::rebuild(
        v2,
        policy_by_name("rigwatch", 1).unwrap(),
        TaskDistribution::generic(),
        AllocatorConfig::default(),
        &rows,
    )
    .unwrap();
    assert_eq!(b.running_jobs(), 1);
    // A second lease on a full GPU is refused.
    let mut extra = rows[0].clone();
    extra.lease_id = 999;
    extra.job_id = 2;
    rows.push(extra);
    let (v3, _) = small();
    let err = Allocator::rebuild(
        v3,
        policy_by_name("rigwatch", 1).unwrap(),
        TaskDistribution::generic(),
        AllocatorConfig::default(),
        &rows,
    )
    .unwrap_err();
    assert!(err.to_string().contains("over-allocated"), "{err}");
    // The same lease id with different contents is refused.
    let mut conflicting: Vec<_> = a.open_leases().cloned().collect();
    let mut c = conflicting[0].clone();
    c.share_milli = 500;
    conflicting.push(c);
    let (v4, _) = small();
    assert!(
        Allocator::rebuild(
            v4,
            policy_by_name("rigwatch", 1).unwrap(),
            TaskDistribution::generic(),
            AllocatorConfig::default(),
            &conflicting
        )
        .is_err()
    );
}

/// A first-fit allocator over [`small`] with node-0 (4 H100, job 100) and node-1 (2 A100,
/// job 101) full.
fn full_small_fleet(aging_ms: i64, starvation_ms: i64) -> Allocator {
    let (view, _) = small();
    let cfg = AllocatorConfig {
        aging_ms,
        starvation_ms,
        max_attempts_per_pass: 100,
        ..AllocatorConfig::default()
    };
    let mut a = Allocator::new(
        view,
        policy_by_name("first-fit", 1).unwrap(),
        TaskDistribution::generic(),
        cfg,
    );
    a.try_start(Job::new(100, GpuDemand::Whole(4)), 0)
        .unwrap()
        .unwrap();
    a.try_start(Job::new(101, GpuDemand::Whole(2)), 0)
        .unwrap()
        .unwrap();
    a
}

#[test]
fn queue_is_fifo_within_priority_and_aging_prevents_starvation() {
    let mut a = full_small_fleet(1000, 5000);
    // A big low-priority job, then a stream of small high-priority ones.
    a.submit(
        Job {
            priority: 0,
            ..Job::new(1, GpuDemand::Whole(4))
        },
        0,
    )
    .unwrap();
    a.submit(
        Job {
            priority: 5,
            ..Job::new(2, GpuDemand::Whole(1))
        },
        0,
    )
    .unwrap();
    a.submit(
        Job {
            priority: 5,
            ..Job::new(3, GpuDemand::Whole(1))
        },
        0,
    )
    .unwrap();
    assert!(a.schedule(0).is_empty());
    a.finish(101, EndReason::Completed, 10).unwrap();
    let s: Vec<u64> = a.schedule(10).iter().map(|s| s.job).collect();
    assert_eq!(s, vec![2, 3], "FIFO within priority 5");
    a.finish(100, EndReason::Completed, 20).unwrap();
    // After 6 s the big job has aged to priority 6 and is starving: it runs before newer
    // high-priority work that would fit in its place.
    a.submit(
        Job {
            priority: 5,
            ..Job::new(4, GpuDemand::Whole(1))
        },
        6000,
    )
    .unwrap();
    let s: Vec<u64> = a.schedule(6000).iter().map(|s| s.job).collect();
    assert_eq!(s, vec![1]);
    assert!(matches!(
        a.submit(Job::new(9, GpuDemand::Whole(8)), 0),
        Err(rigwatch_scheduler::Error::Unplaceable { .. })
    ));
}

#[test]
fn rigwatch_prefers_cool_healthy_gpus_and_respects_price_caps() {
    let (mut view, uuids) = small();
    view.set_health(&uuids[0], Health::Degraded).unwrap();
    view.observe_sample(
        &uuids[1],
        &Sample {
            ts_ms: 0,
            utilization_pct: 90.0,
            temperature_c: 86.0,
            memory_free_mib: 1,
        },
    )
    .unwrap();
    let mut a = Allocator::new(
        view,
        policy_by_name("rigwatch", 1).unwrap(),
        TaskDistribution::generic(),
        AllocatorConfig::default(),
    );
    let s = a
        .try_start(
            Job {
                models: vec!["H100".into()],
                ..Job::new(1, GpuDemand::Fraction(500))
            },
            0,
        )
        .unwrap()
        .unwrap();
    assert!(
        s.leases[0].gpu_uuid != uuids[0] && s.leases[0].gpu_uuid != uuids[1],
        "{:?}",
        s.leases[0].gpu_uuid
    );
    // H100 costs 2.50/h, A100 1.50/h in the catalog: a cap of 2.00 only admits the A100s.
    let s = a
        .try_start(
            Job {
                price_cap_micro_per_gpu_hour: Some(2_000_000),
                ..Job::new(2, GpuDemand::Whole(1))
            },
            0,
        )
        .unwrap()
        .unwrap();
    assert_eq!(s.leases[0].model, "A100");
    assert!(
        a.try_start(
            Job {
                price_cap_micro_per_gpu_hour: Some(100_000),
                ..Job::new(3, GpuDemand::Whole(1))
            },
            0
        )
        .unwrap()
        .is_none()
    );
}

#[test]
fn requeue_keeps_the_original_place_and_accepts_what_the_seen_fleet_cannot_hold() {
    let mut a = full_small_fleet(1_000_000, 10_000_000);
    // Job 1 (submitted at 50) is requeued after job 2 was submitted (at 60): it still goes
    // first, as its aging counts from its own submit time.
    a.submit(Job::new(2, GpuDemand::Whole(1)), 60).unwrap();
    a.requeue(Job::new(1, GpuDemand::Whole(1)), 50).unwrap();
    assert!(
        a.requeue(Job::new(1, GpuDemand::Whole(1)), 50).is_err(),
        "twice"
    );
    // A job no GPU seen so far could hold is still requeued (its GPUs may come back).
    a.requeue(Job::new(3, GpuDemand::Whole(8)), 70).unwrap();
    assert!(a.submit(Job::new(4, GpuDemand::Whole(8)), 70).is_err());
    assert_eq!(a.queue_len(), 3);
    a.finish(101, EndReason::Completed, 100).unwrap();
    let s: Vec<u64> = a.schedule(100).iter().map(|s| s.job).collect();
    assert_eq!(s, vec![1, 2]);
}

/// node-0 (4 H100) runs a 2-GPU job until t=1000, node-1 (2 A100) is full until t=5000; a
/// 4-GPU job (node-0 only) is blocked at t=10. With EASY backfilling it holds node-0 from
/// t=1000: a 1-GPU job that would run past that waits, one that ends before starts; without
/// reservations the long one takes node-0 and the big job misses t=1000.
fn easy_fleet(reserve: bool) -> Allocator {
    let (view, _) = small();
    let cfg = AllocatorConfig {
        reserve,
        ..AllocatorConfig::default()
    };
    let mut a = Allocator::new(
        view,
        policy_by_name("first-fit", 1).unwrap(),
        TaskDistribution::generic(),
        cfg,
    );
    let timed = |id, k, ms| Job {
        expected_duration_ms: ms,
        ..Job::new(id, GpuDemand::Whole(k))
    };
    a.try_start_on(timed(100, 2, 1000), 0, 0).unwrap().unwrap();
    a.try_start_on(timed(101, 2, 5000), 1, 0).unwrap().unwrap();
    a.submit(timed(1, 4, 3000), 10).unwrap();
    a.submit(timed(2, 1, 2000), 10).unwrap();
    a.submit(timed(3, 1, 500), 10).unwrap();
    a
}

#[test]
fn easy_backfilling_never_delays_the_blocked_job() {
    let mut a = easy_fleet(true);
    let s: Vec<u64> = a.schedule(10).iter().map(|s| s.job).collect();
    assert_eq!(s, vec![3], "only the job that ends before t=1000 backfills");
    a.finish(3, EndReason::Completed, 510).unwrap();
    assert!(
        a.schedule(510).is_empty(),
        "job 2 would still run past t=1000"
    );
    a.finish(100, EndReason::Completed, 1000).unwrap();
    let s: Vec<u64> = a.schedule(1000).iter().map(|s| s.job).collect();
    assert_eq!(s, vec![1], "the 4-GPU job starts at its reserved time");

    let mut b = easy_fleet(false);
    let s: Vec<u64> = b.schedule(10).iter().map(|s| s.job).collect();
    assert_eq!(s, vec![2, 3], "plain backfilling takes node-0");
    b.finish(100, EndReason::Completed, 1000).unwrap();
    assert!(
        b.schedule(1000).is_empty(),
        "and the 4-GPU job misses t=1000"
    );
}

#[test]
fn expected_earnings_are_booked_while_a_job_runs() {
    let (view, _) = small();
    let mut a = Allocator::new(
        view,
        policy_by_name("first-fit", 1).unwrap(),
        TaskDistribution::generic(),
        AllocatorConfig::default(),
    );
    let booked = |a: &Allocator| -> i64 { a.view.suppliers().iter().map(|s| s.booked_micro).sum() };
    // 2 H100 (2.50/h in the catalog) for two hours: 10.00 booked.
    let job = Job {
        expected_duration_ms: 7_200_000,
        ..Job::new(1, GpuDemand::Whole(2))
    };
    a.try_start(job, 0).unwrap().unwrap();
    assert_eq!(booked(&a), 10_000_000);
    // No declared duration: one hour.
    a.try_start(Job::new(2, GpuDemand::Fraction(500)), 0)
        .unwrap()
        .unwrap();
    assert_eq!(booked(&a), 11_250_000);
    a.finish(1, EndReason::Completed, 10).unwrap();
    a.finish(2, EndReason::Cancelled, 10).unwrap();
    assert_eq!(booked(&a), 0);
}

#[test]
fn cpu_bound_level_compares_workload_cpu_per_gpu_with_the_fleet() {
    // Two nodes of 4 GPUs and 8 cores: 2 cores per free GPU.
    let f: Fleet = vec![
        (8, vec![(0, Health::Healthy); 4]),
        (8, vec![(0, Health::Healthy); 4]),
    ];
    let (view, _) = build(&f);
    let dist = |cores: u32| {
        let jobs: Vec<Job> = (0..10u64)
            .map(|i| Job {
                cpu_milli: cores * 1000,
                ..Job::new(i, GpuDemand::Whole(1))
            })
            .collect();
        TaskDistribution::from_jobs(&view, &jobs, 32)
    };
    let level = rigwatch_scheduler::policy::cpu_bound_level;
    assert!((level(&view, &dist(4)) - 2.0).abs() < 1e-9);
    assert!((level(&view, &dist(1)) - 0.5).abs() < 1e-9);
    // Equal fragmentation either way: CPU-bound, rigwatch spreads a 1-GPU job to the
    // emptier node; GPU-bound, the tie goes to the lower node (fairness off, so that
    // supplier earnings do not break the tie).
    for (cores, want) in [(4, "node-1"), (1, "node-0")] {
        let (view, _) = build(&f);
        let d = dist(cores);
        let mut a = Allocator::new(
            view,
            policy_by_name("rigwatch:fairness=0", 1).unwrap(),
            d,
            AllocatorConfig::default(),
        );
        let one = |id| Job {
            cpu_milli: 1000,
            ..Job::new(id, GpuDemand::Whole(1))
        };
        a.try_start_on(one(1), 0, 0).unwrap().unwrap();
        let s = a.try_start(one(2), 0).unwrap().unwrap();
        assert_eq!(s.node, want, "workload of {cores} cores per GPU");
    }
}
