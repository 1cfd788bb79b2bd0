//! The one GPU model table.
//!
//! A model has one canonical name (`H100`, `4090`, …: what rate cards, job constraints and
//! queries use) and the NVML product-name tokens that identify it (`NVIDIA H100 80GB HBM3`,
//! `NVIDIA GeForce RTX 4090`). [`lookup`] takes either. Prices are **illustrative** defaults
//! in US dollars per GPU-hour (written in cents, kept in micro-units), roughly 2024-2025 community-marketplace prices;
//! operators set their own rate card. Slowdown temperatures are the vendors' typical
//! thermal slowdown thresholds. `G2`/`G3` and `V100M16`/`V100M32` are the anonymised models
//! of the Alibaba openb trace; their numbers are guesses.

/// Static facts about one GPU model.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ModelFacts {
    /// The canonical name.
    pub name: &'static str,
    /// Lower-case tokens of NVML product names that identify the model (matched as whole
    /// words: `a10` does not match `A100`).
    pub nvml_tokens: &'static [&'static str],
    /// Memory of the smallest variant, MiB.
    pub min_memory_mib: u32,
    /// Memory of the largest variant, MiB.
    pub memory_mib: u32,
    /// Board power, watts.
    pub tdp_watts: f32,
    /// The GPU temperature (°C) at which the model starts slowing down.
    pub thermal_limit_c: f32,
    /// Illustrative price, micro-units ([`crate::money`]) per GPU-hour.
    pub price_micro_per_gpu_hour: i64,
}

/// Price of a model the table does not know, micro-units per GPU-hour (0.20 USD).
pub const FALLBACK_PRICE_MICRO_PER_GPU_HOUR: i64 = 200_000;
/// Thermal limit assumed for a model the table does not know.
pub const FALLBACK_THERMAL_LIMIT_C: f32 = 85.0;
/// The canonical name of every GPU the table does not know.
pub const UNKNOWN_MODEL: &str = "unknown";

const fn m(
    name: &'static str,
    nvml_tokens: &'static [&'static str],
    (min_memory_mib, memory_mib): (u32, u32),
    tdp_watts: f32,
    thermal_limit_c: f32,
    cents_per_gpu_hour: i64,
) -> ModelFacts {
    ModelFacts {
        name,
        nvml_tokens,
        min_memory_mib,
        memory_mib,
        tdp_watts,
        thermal_limit_c,
        price_micro_per_gpu_hour: cents_per_gpu_hour * 10_000,
    }
}

/// The table.
pub const MODELS: &[ModelFacts] = &[
    m(
        "H200",
        &["h200", "gh200"],
        (139_264, 143_771),
        700.0,
        87.0,
        320,
    ),
    m(
        "H100",
        &["h100", "h800"],
        (81_559, 95_830),
        700.0,
        87.0,
        250,
    ),
    m(
        "A100",
        &["a100", "a800"],
        (40_960, 81_920),
        400.0,
        90.0,
        150,
    ),
    m("L40S", &["l40s"], (46_068, 46_068), 350.0, 88.0, 90),
    m("L40", &["l40"], (46_068, 46_068), 300.0, 88.0, 80),
    m("A10", &["a10", "a10g"], (23_028, 23_028), 150.0, 88.0, 35),
    m("4090", &["4090"], (24_564, 24_564), 450.0, 88.0, 40),
    m("3090", &["3090"], (24_576, 24_576), 350.0, 93.0, 25),
    m("V100", &["v100"], (16_160, 32_768), 300.0, 87.0, 45),
    m("V100M16", &[], (16_384, 16_384), 300.0, 87.0, 45),
    m("V100M32", &[], (32_768, 32_768), 300.0, 87.0, 55),
    m("T4", &["t4"], (15_360, 15_360), 70.0, 85.0, 20),
    m("P100", &["p100"], (12_198, 16_384), 250.0, 85.0, 15),
    m("G2", &[], (24_576, 24_576), 300.0, 85.0, 30),
    m("G3", &[], (32_768, 32_768), 300.0, 85.0, 35),
];

/// The model `name` names: a canonical name (any case), or an NVML product name that
/// contains one of a model's tokens as a whole word.
pub fn lookup(name: &str) -> Option<&'static ModelFacts> {
    if let Some(f) = MODELS.iter().find(|f| f.name.eq_ignore_ascii_case(name)) {
        return Some(f);
    }
    let lower = name.to_ascii_lowercase();
    MODELS
        .iter()
        .find(|f| f.nvml_tokens.iter().any(|t| has_word(&lower, t)))
}

/// The canonical name of `name`: the table's name for a known model, else
/// [`UNKNOWN_MODEL`].
pub fn canonical(name: &str) -> &'static str {
    lookup(name).map_or(UNKNOWN_MODEL, |f| f.name)
}

/// The canonical name for a known model, else `name` itself (for tables keyed by whatever
/// name an operator wrote).
pub fn canonical_or_same(name: &str) -> &str {
    lookup(name).map_or(name, |f| f.name)
}

/// The slowdown temperature of `name`'s model, or the fallback.
pub fn thermal_limit_c(name: &str) -> f32 {
    lookup(name).map_or(FALLBACK_THERMAL_LIMIT_C, |f| f.thermal_limit_c)
}

impl ModelFacts {
    /// Whether `memory_mib` cannot be this model's (an "H100" with 24 GiB): outside three
    /// quarters of the smallest to one and a half of the largest variant. Zero (unknown)
    /// never contradicts.
    pub fn memory_contradicts(&self, memory_mib: u64) -> bool {
        memory_mib != 0
            && (memory_mib < u64::from(self.min_memory_mib) * 3 / 4
                || memory_mib > u64::from(self.memory_mib) * 3 / 2)
    }
}

/// Whether `word` occurs in `hay` with no letter or digit on either side.
fn has_word(hay: &str, word: &str) -> bool {
    let bytes = hay.as_bytes();
    hay.match_indices(word).any(|(i, _)| {
        let before = i.checked_sub(1).map(|j| bytes[j]);
        let after = bytes.get(i + word.len()).copied();
        !before.is_some_and(|b| b.is_ascii_alphanumeric())
            && !after.is_some_and(|b| b.is_ascii_alphanumeric())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nvml_names_find_their_model() {
        for (nvml, model) in [
            ("NVIDIA H100 80GB HBM3", "H100"),
            ("NVIDIA H100 PCIe", "H100"),
            ("NVIDIA H100 NVL", "H100"),
            ("NVIDIA H200", "H200"),
            ("NVIDIA A100-SXM4-80GB", "A100"),
            ("NVIDIA A100-SXM4-40GB", "A100"),
            ("NVIDIA A100 80GB PCIe", "A100"),
            ("NVIDIA L40S", "L40S"),
            ("NVIDIA L40", "L40"),
            ("NVIDIA A10", "A10"),
            ("NVIDIA A10G", "A10"),
            ("NVIDIA GeForce RTX 4090", "4090"),
            ("NVIDIA GeForce RTX 3090", "3090"),
            ("NVIDIA GeForce RTX 3090 Ti", "3090"),
            ("Tesla T4", "T4"),
            ("Tesla V100-SXM2-16GB", "V100"),
            ("Tesla V100-PCIE-32GB", "V100"),
            ("Tesla P100-PCIE-16GB", "P100"),
            ("h100", "H100"),
            ("V100M16", "V100M16"),
            ("G2", "G2"),
        ] {
            assert_eq!(canonical(nvml), model, "{nvml}");
        }
        for unknown in ["NVIDIA B200", "Radeon", "", "A1000", "XT4"] {
            assert_eq!(canonical(unknown), UNKNOWN_MODEL, "{unknown}");
        }
    }

    #[test]
    fn memory_that_cannot_be_the_model_is_a_contradiction() {
        let h100 = lookup("H100").unwrap();
        assert!(
            h100.memory_contradicts(24_564),
            "a 4090 calling itself H100"
        );
        assert!(!h100.memory_contradicts(81_559));
        assert!(!h100.memory_contradicts(95_830));
        assert!(!h100.memory_contradicts(0));
        let a100 = lookup("A100").unwrap();
        assert!(!a100.memory_contradicts(40_960) && !a100.memory_contradicts(81_920));
        assert!(lookup("4090").unwrap().memory_contradicts(81_559));
    }

    #[test]
    fn canonical_names_are_unique_and_tokens_match_one_model() {
        for (i, a) in MODELS.iter().enumerate() {
            for b in &MODELS[i + 1..] {
                assert!(!a.name.eq_ignore_ascii_case(b.name));
            }
            for t in a.nvml_tokens {
                assert_eq!(lookup(&format!("NVIDIA {t}")).unwrap().name, a.name, "{t}");
            }
            assert!(a.min_memory_mib <= a.memory_mib);
        }
    }
}
