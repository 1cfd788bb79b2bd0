//! One set of facts per GPU model. For every NVML name the agent's simulator reports and every
//! model of the openb trace, the allocator's live view (thermal limit, price for price caps),
//! fault detection (the temperature limit) and the ledger's rate card (what a minute pays)
//! read the same numbers from the one model table (`rigwatch_common::gpu_model`), and the
//! simulator's own memory, power and slowdown temperature are the table's too.

use std::collections::BTreeSet;
use std::path::PathBuf;

use rigwatch_common::gpu_model;
use rigwatch_ingest::agent::sim::CATALOG;
use rigwatch_scheduler::health::temperature_limit;
use rigwatch_scheduler::sim::{self, trace};
use rigwatch_scheduler::{LiveView, RateCard};

/// Every model name in the openb node list (`../shared/data`, as the simulator reads it).
fn openb_models() -> BTreeSet<String> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(sim::DEFAULT_NODES);
    let nodes = trace::load_nodes(&path)
        .unwrap_or_else(|e| panic!("the openb node list at {}: {e}", path.display()));
    nodes
        .into_iter()
        .map(|n| n.model)
        .filter(|m| !m.is_empty())
        .collect()
}

#[test]
fn every_simulated_and_traced_model_has_one_set_of_facts() {
    let openb = openb_models();
    assert!(openb.len() >= 3, "too few openb models: {openb:?}");
    let names: Vec<String> = CATALOG
        .iter()
        .map(|m| m.name.to_string())
        .chain(openb)
        .collect();
    let card = RateCard::illustrative();
    let mut view = LiveView::new();
    for name in &names {
        let facts =
            gpu_model::lookup(name).unwrap_or_else(|| panic!("`{name}` is not in the model table"));
        let id = view.intern_model(name).unwrap();
        let seen = &view.models()[usize::from(id)];
        assert_eq!(seen.name, facts.name, "allocator's model of `{name}`");
        assert_eq!(
            seen.thermal_limit_c, facts.thermal_limit_c,
            "allocator's limit for `{name}`"
        );
        assert_eq!(
            seen.price_micro_per_gpu_hour, facts.price_micro_per_gpu_hour,
            "allocator's price for `{name}`"
        );
        assert_eq!(
            temperature_limit(name),
            f64::from(facts.thermal_limit_c),
            "fault detection's limit for `{name}`"
        );
        assert_eq!(
            card.rate_at(name, 0),
            facts.price_micro_per_gpu_hour,
            "the ledger's rate for `{name}`"
        );
    }
    for m in CATALOG {
        let facts = gpu_model::lookup(m.name).unwrap();
        assert_eq!(m.slowdown_c, f64::from(facts.thermal_limit_c), "{}", m.name);
        assert_eq!(m.tdp_watts, f64::from(facts.tdp_watts), "{}", m.name);
        assert!(
            !facts.memory_contradicts(m.memory_mib),
            "{}: {} MiB",
            m.name,
            m.memory_mib
        );
    }
}
