//! The health engine on the agent's own simulator (the data `rigwatch agent --simulate`
//! and the demo produce): a fault-free simulated day raises nothing, and every injected
//! hardware XID, cooling failure and disconnect is caught.

use std::time::Duration;

use rigwatch_ingest::agent::sim::Simulator;
use rigwatch_ingest::agent::{Collector, GpuEvent, GpuSample};
use rigwatch_scheduler::health::{Event, FaultKind, GpuRef, HealthConfig, HealthEngine};

use super::*;

const STEP_NS: i64 = 10_000_000_000;

struct Fleet {
    sim: Simulator,
    infos: Vec<rigwatch_ingest::agent::GpuInfo>,
    engine: HealthEngine,
    samples: Vec<GpuSample>,
    xids: Vec<GpuEvent>,
    t: i64,
}

impl Fleet {
    fn new(gpus: usize, seed: u64) -> Self {
        let mut sim = Simulator::new(gpus, seed, Duration::from_nanos(STEP_NS as u64));
        sim.set_fault_rate(0.0);
        let infos = sim.inventory().unwrap();
        Self {
            sim,
            infos,
            engine: HealthEngine::new(HealthConfig::default()),
            samples: Vec::new(),
            xids: Vec::new(),
            t: 1_700_000_000_000_000_000,
        }
    }

    fn step(&mut self, out: &mut Vec<Event>) {
        self.samples.clear();
        self.xids.clear();
        self.sim.sample(self.t, &mut self.samples).unwrap();
        self.sim.events(self.t, &mut self.xids);
        for s in &self.samples {
            let info = &self.infos[s.gpu];
            let g = GpuRef {
                supplier: "acme",
                worker: "w1",
                gpu_uuid: &info.uuid,
                model: &info.model,
            };
            let mut m = Telemetry::default();
            for (metric, v) in s.iter() {
                m.set(metric.spec().name, v);
            }
            m.power_limit_watts = info.power_limit_watts;
            self.engine.observe_sample(g, s.time_ns, &m, out);
        }
        for e in &self.xids {
            let info = &self.infos[e.gpu];
            let g = GpuRef {
                supplier: "acme",
                worker: "w1",
                gpu_uuid: &info.uuid,
                model: &info.model,
            };
            self.engine.observe_xid(g, e.time_ns, e.xid, out);
        }
        self.engine.tick(self.t, out);
        self.t += STEP_NS;
    }
}

#[test]
fn simulated_clean_day_is_silent() {
    let mut f = Fleet::new(16, 7);
    let mut out = Vec::new();
    for _ in 0..8_640 {
        f.step(&mut out);
    }
    assert!(
        out.is_empty(),
        "false positives on a fault-free simulated day: {:?}",
        &out[..out.len().min(5)]
    );
}

#[test]
fn simulated_faults_are_all_caught() {
    let mut f = Fleet::new(8, 11);
    let mut out = Vec::new();
    for _ in 0..30 {
        f.step(&mut out);
    }
    assert!(out.is_empty(), "{out:?}");
    // A hardware XID, a cooling failure under full load, a fall off the bus.
    f.sim.inject_xid(0, 95);
    f.sim.set_load(1, 100.0, 1_000);
    f.sim.cooling_failure(1, Duration::from_secs(1_800));
    f.sim.disconnect(2, Duration::from_secs(600));
    f.sim.inject_xid(3, 13);
    for _ in 0..120 {
        f.step(&mut out);
    }
    let kinds = |gpu: usize| -> Vec<FaultKind> {
        out.iter()
            .filter_map(|e| match e {
                Event::Fault(x) if x.gpu.gpu_uuid == f.infos[gpu].uuid => Some(x.kind),
                _ => None,
            })
            .collect()
    };
    let k0 = kinds(0);
    assert!(k0.contains(&FaultKind::Xid), "{k0:?}");
    // (Datacenter models also report the DBE counter step as `ecc_uncorrectable`.)
    let k1 = kinds(1);
    assert!(
        k1.contains(&FaultKind::OverTemperature) || k1.contains(&FaultKind::ThermalThrottle),
        "{k1:?}"
    );
    assert_eq!(kinds(2), [FaultKind::Offline]);
    assert_eq!(kinds(3), [FaultKind::Xid], "application XID: recorded only");
    assert_eq!(
        f.engine.health(&f.infos[0].uuid).unwrap().0,
        Health::Unhealthy
    );
    assert_eq!(
        f.engine.health(&f.infos[2].uuid).unwrap().0,
        Health::Healthy,
        "back after 10 min"
    );
    assert_eq!(
        f.engine.health(&f.infos[3].uuid).unwrap().0,
        Health::Healthy
    );
    for gpu in 4..8 {
        assert!(kinds(gpu).is_empty(), "gpu {gpu}: {:?}", kinds(gpu));
    }
}
