//! Built-in facts about GPU models: memory, thermal slowdown limit and an illustrative
//! price.
//!
//! The prices are **illustrative** defaults in minor units (cents) per GPU-hour, roughly the
//! order of 2024-2025 community-marketplace prices; operators configure their own rate card
//! (see [`crate::ledger::RateCard`]). Thermal limits are the vendors' typical slowdown
//! temperatures. `G2`/`G3` are the anonymised models of the Alibaba openb trace; their
//! numbers are guesses.

/// Static facts about one GPU model.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ModelFacts {
    pub name: &'static str,
    pub memory_mib: u32,
    pub thermal_limit_c: f32,
    /// Illustrative price, minor units per GPU-hour.
    pub rate_per_gpu_hour: i64,
}

/// Rate used for a model the catalog does not know, minor units per GPU-hour.
pub const FALLBACK_RATE_PER_GPU_HOUR: i64 = 20;
/// Thermal limit assumed for a model the catalog does not know.
pub const FALLBACK_THERMAL_LIMIT_C: f32 = 85.0;

/// The catalog, matched case-insensitively by [`lookup`].
pub const MODELS: &[ModelFacts] = &[
    ModelFacts {
        name: "H100",
        memory_mib: 81_559,
        thermal_limit_c: 87.0,
        rate_per_gpu_hour: 250,
    },
    ModelFacts {
        name: "H200",
        memory_mib: 143_771,
        thermal_limit_c: 87.0,
        rate_per_gpu_hour: 320,
    },
    ModelFacts {
        name: "A100",
        memory_mib: 81_920,
        thermal_limit_c: 85.0,
        rate_per_gpu_hour: 150,
    },
    ModelFacts {
        name: "L40S",
        memory_mib: 46_068,
        thermal_limit_c: 88.0,
        rate_per_gpu_hour: 90,
    },
    ModelFacts {
        name: "A10",
        memory_mib: 23_028,
        thermal_limit_c: 88.0,
        rate_per_gpu_hour: 35,
    },
    ModelFacts {
        name: "4090",
        memory_mib: 24_564,
        thermal_limit_c: 90.0,
        rate_per_gpu_hour: 40,
    },
    ModelFacts {
        name: "3090",
        memory_mib: 24_576,
        thermal_limit_c: 90.0,
        rate_per_gpu_hour: 25,
    },
    ModelFacts {
        name: "V100",
        memory_mib: 16_384,
        thermal_limit_c: 85.0,
        rate_per_gpu_hour: 45,
    },
    ModelFacts {
        name: "V100M16",
        memory_mib: 16_384,
        thermal_limit_c: 85.0,
        rate_per_gpu_hour: 45,
    },
    ModelFacts {
        name: "V100M32",
        memory_mib: 32_768,
        thermal_limit_c: 85.0,
        rate_per_gpu_hour: 55,
    },
    ModelFacts {
        name: "T4",
        memory_mib: 15_360,
        thermal_limit_c: 85.0,
        rate_per_gpu_hour: 20,
    },
    ModelFacts {
        name: "P100",
        memory_mib: 16_384,
        thermal_limit_c: 85.0,
        rate_per_gpu_hour: 15,
    },
    ModelFacts {
        name: "G2",
        memory_mib: 24_576,
        thermal_limit_c: 85.0,
        rate_per_gpu_hour: 30,
    },
    ModelFacts {
        name: "G3",
        memory_mib: 32_768,
        thermal_limit_c: 85.0,
        rate_per_gpu_hour: 35,
    },
];

/// Facts for `model` (case-insensitive), if the catalog knows it.
pub fn lookup(model: &str) -> Option<&'static ModelFacts> {
    MODELS.iter().find(|m| m.name.eq_ignore_ascii_case(model))
}
