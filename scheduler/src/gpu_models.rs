//! Built-in facts about GPU models: the one model table of `rigwatch-common`, seen from the
//! allocator. Names are canonical names or NVML product names alike
//! ([`rigwatch_common::gpu_model::lookup`]).

pub use rigwatch_common::gpu_model::{
    FALLBACK_PRICE_MICRO_PER_GPU_HOUR, FALLBACK_THERMAL_LIMIT_C, MODELS, ModelFacts,
    canonical_or_same, lookup,
};
