//! The GPU agent (`rigwatch agent`) and the server routes it talks to.
//!
//! ```text
//!   collector thread (std::thread, never a tokio worker)          async transport task
//!  ┌──────────────────────────────────────────────────┐        ┌───────────────────────────────┐
//!  │ Collector: nvml::Nvml | sim::Simulator | dcgm::…  │        │ gzip → POST /api/v1/agent/write│
//!  │   inventory() once, then every --interval:        │ batch  │   2xx: done                    │
//!  │   sample(now) + events(now) → line protocol       ├───────►│   down: spool (on disk, bounded│
//!  │   (gpu, gpu_fault, heartbeat, host rows)          │        │   oldest dropped, counted) and │
//!  └──────────────────────────────────────────────────┘        │   drain in order when back     │
//!                                                               └───────────────────────────────┘
//!   server: routes::router — register (gpu_inventory; claims: a GPU belongs to the first
//!   supplier that registers it), write (stamps supplier from the token, worker from ?worker=,
//!   model from the registration; rejects rows claiming another supplier or a GPU not this
//!   worker's, and anything outside the fixed schema of `schema`)
//! ```
//!
//! Every collector (real NVML, the simulator, a dcgm-exporter scrape) produces the same
//! [`GpuSample`]s, so everything after collection is one code path. Field names, units and
//! their DCGM / NVML sources are listed in [`fields`] (and in `agent/README.md`).

pub mod claims;
pub mod dcgm;
pub mod dedup;
pub mod fields;
pub mod host;
pub mod lag;
pub mod nvml;
pub mod registry;
pub mod routes;
pub mod runner;
pub mod schema;
pub mod sim;
pub mod spool;
pub mod transport;

pub use fields::{GpuEvent, GpuInfo, GpuSample, Metric};
pub use runner::{AgentConfig, AgentHandle, AgentStats};

/// Why a collector could not deliver.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    /// The NVIDIA management library could not be loaded or initialised.
    #[error(
        "no NVIDIA driver found: could not load {library} ({reason}). \
         Install the NVIDIA driver, or run `rigwatch agent --simulate N` to stream N simulated GPUs"
    )]
    NvmlUnavailable { library: String, reason: String },
    /// An NVML call failed for a reason other than "not supported".
    #[error("NVML {call} failed on GPU {index}: {reason}")]
    Nvml {
        call: &'static str,
        index: u32,
        reason: String,
    },
    /// The dcgm-exporter endpoint could not be scraped.
    #[error("cannot scrape dcgm-exporter at {url}: {reason}")]
    Scrape { url: String, reason: String },
}

/// A source of GPU inventory, samples and events. Runs on the agent's collector thread, so
/// implementations may block (NVML calls, an HTTP scrape).
pub trait Collector: Send + 'static {
    /// The GPUs present, with their stable attributes. Called at start (registration).
    fn inventory(&mut self) -> Result<Vec<GpuInfo>, CollectError>;

    /// Appends one sample per reachable GPU taken at `now_ns`. Metrics a GPU does not
    /// support are left unset (omitted), never zero. A GPU that cannot be reached is left
    /// out.
    fn sample(&mut self, now_ns: i64, out: &mut Vec<GpuSample>) -> Result<(), CollectError>;

    /// Appends the fault events (XID errors) seen since the last call.
    fn events(&mut self, now_ns: i64, out: &mut Vec<GpuEvent>);

    /// Reads the host the GPUs sit in (table `host`) into `out`. Real collectors read this
    /// machine through `proc`; the simulator simulates a host of its own.
    fn host(&mut self, now_ns: i64, proc: &mut host::ProcHost, out: &mut host::HostSample) {
        proc.sample(now_ns, out);
    }
}

impl Collector for Box<dyn Collector> {
    fn inventory(&mut self) -> Result<Vec<GpuInfo>, CollectError> {
        (**self).inventory()
    }
    fn sample(&mut self, now_ns: i64, out: &mut Vec<GpuSample>) -> Result<(), CollectError> {
        (**self).sample(now_ns, out)
    }
    fn events(&mut self, now_ns: i64, out: &mut Vec<GpuEvent>) {
        (**self).events(now_ns, out)
    }
    fn host(&mut self, now_ns: i64, proc: &mut host::ProcHost, out: &mut host::HostSample) {
        (**self).host(now_ns, proc, out)
    }
}

/// Wall-clock time in nanoseconds since the Unix epoch.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}
