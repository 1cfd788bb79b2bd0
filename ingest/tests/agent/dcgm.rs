//! dcgm-exporter scrapes: a page in NVIDIA's format, served over loopback HTTP, maps onto
//! the same `gpu` fields as NVML; DCGM's blank sentinels are missing values; XIDs are
//! `gpu_fault` events.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use parking_lot::Mutex;
use rigwatch_ingest::agent::dcgm::DcgmScraper;
use rigwatch_ingest::agent::{AgentConfig, AgentHandle, Collector, GpuEvent, Metric};
use tokio::task::JoinHandle;

use super::support::AgentServer;

const FIXTURE: &str = include_str!("fixtures/dcgm-exporter.txt");
const H100: &str = "GPU-604ac76c-d9cf-fef3-62e9-d92044ab6e52";
const A100: &str = "GPU-9b2e1a44-0c1f-4a7e-b2d3-5f6e7a8b9c0d";

/// A fake dcgm-exporter: serves whatever page the test puts in.
struct Exporter {
    url: String,
    page: Arc<Mutex<String>>,
    task: JoinHandle<()>,
}

impl Exporter {
    async fn start(page: &str) -> Self {
        let page = Arc::new(Mutex::new(page.to_string()));
        let served = page.clone();
        let app = Router::new().route(
            "/metrics",
            get(move || {
                let body = served.lock().clone();
                async move { ([("content-type", "text/plain; version=0.0.4")], body) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/metrics", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Exporter { url, page, task }
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test]
async fn scrape_maps_dcgm_fields_and_treats_sentinels_as_missing() {
    let exporter = Exporter::start(FIXTURE).await;
    let url = exporter.url.clone();
    // The scraper blocks (it runs on the agent's collector thread): keep it off the runtime.
    let (inventory, samples, events, events_again) = tokio::task::spawn_blocking(move || {
        let mut s = DcgmScraper::new(&url).unwrap();
        let inv = s.inventory().unwrap();
        let mut samples = Vec::new();
        s.sample(1_000, &mut samples).unwrap();
        let mut events = Vec::new();
        s.events(1_000, &mut events);
        // The same page again: nothing new happened, so no new events.
        let mut again_samples = Vec::new();
        s.sample(2_000, &mut again_samples).unwrap();
        let mut again = Vec::new();
        s.events(2_000, &mut again);
        (inv, samples, events, again)
    })
    .await
    .unwrap();

    assert_eq!(inventory.len(), 2);
    assert_eq!(inventory[0].uuid, H100);
    assert_eq!(inventory[0].model, "NVIDIA H100 80GB HBM3");
    assert_eq!(inventory[0].pci_bus_id, "00000000:18:00.0");
    assert_eq!(inventory[0].driver_version, "550.54.15");
    // Total = used + free + reserved.
    assert_eq!(inventory[0].memory_total_mib, 60914 + 20125 + 520);
    assert_eq!(inventory[1].uuid, A100);
    assert_eq!(inventory[1].index, 1);

    assert_eq!(samples.len(), 2);
    let h = &samples[0];
    assert_eq!(h.gpu, 0);
    assert_eq!(h.get(Metric::Utilization), Some(87.0));
    assert_eq!(h.get(Metric::MemoryUtilization), Some(41.0));
    assert_eq!(h.get(Metric::SmClockMhz), Some(1980.0));
    assert_eq!(h.get(Metric::MemoryClockMhz), Some(2619.0));
    assert_eq!(h.get(Metric::Temperature), Some(61.0));
    assert_eq!(h.get(Metric::MemoryTemperature), Some(58.0));
    assert_eq!(h.get(Metric::PowerWatts), Some(612.345));
    assert_eq!(h.get(Metric::EnergyMj), Some(3_871_234_567_890.0));
    assert_eq!(h.get(Metric::MemoryUsedMib), Some(60914.0));
    assert_eq!(h.get(Metric::MemoryFreeMib), Some(20125.0));
    assert_eq!(h.get(Metric::PcieReplayTotal), Some(3.0));
    assert_eq!(h.get(Metric::PcieTxBytesPerS), Some(7_431_245.0));
    assert_eq!(h.get(Metric::RemappedRowsUncorrectable), Some(1.0));
    assert_eq!(h.get(Metric::RemappedRowsCorrectable), Some(4.0));
    assert_eq!(h.get(Metric::EccDbeTotal), Some(0.0));
    // Not exported by this page: absent, not zero.
    assert_eq!(h.get(Metric::ThrottleReasons), None);

    let a = &samples[1];
    assert_eq!(a.gpu, 1);
    assert_eq!(a.get(Metric::Utilization), Some(0.0));
    // DCGM_INT64_BLANK + 2, DCGM_FP64_BLANK, DCGM_FP64_BLANK + 2, DCGM_INT32_BLANK + 2.
    assert_eq!(a.get(Metric::MemoryTemperature), None);
    assert_eq!(a.get(Metric::PcieTxBytesPerS), None);
    assert_eq!(a.get(Metric::PcieRxBytesPerS), None);
    assert_eq!(a.get(Metric::EccDbeTotal), None);
    // Just below the int32 sentinel range: a real value.
    assert_eq!(a.get(Metric::EnergyMj), Some(2_147_480_000.0));

    let mut codes: Vec<(usize, u32)> = events.iter().map(|e: &GpuEvent| (e.gpu, e.xid)).collect();
    codes.sort();
    assert_eq!(codes, vec![(0, 13), (0, 13), (1, 79)]);
    assert!(events_again.is_empty(), "{events_again:?}");

    // A new XID on the H100 shows up as one more event.
    *exporter.page.lock() = FIXTURE.replace(
        "err_code=\"0\",err_msg=\"No Error\"} 0",
        "err_code=\"48\",err_msg=\"DBE (Double Bit Error) ECC Error\"} 48",
    );
    let url = exporter.url.clone();
    let more = tokio::task::spawn_blocking(move || {
        let mut s = DcgmScraper::new(&url).unwrap();
        s.inventory().unwrap();
        let mut samples = Vec::new();
        s.sample(3_000, &mut samples).unwrap();
        let mut events = Vec::new();
        s.events(3_000, &mut events);
        events
    })
    .await
    .unwrap();
    assert!(more.iter().any(|e| e.gpu == 0 && e.xid == 48), "{more:?}");
}

#[tokio::test]
async fn scraped_gpus_stream_through_the_agent_into_gpu_and_gpu_fault() {
    let exporter = Exporter::start(FIXTURE).await;
    let server = AgentServer::start().await;
    let token = server.supplier("acme");
    let scraper = tokio::task::spawn_blocking({
        let url = exporter.url.clone();
        move || DcgmScraper::new(&url).unwrap()
    })
    .await
    .unwrap();
    let mut config = AgentConfig::new(
        &server.base,
        &token,
        "dgx-7",
        server.dir.path().join("spool"),
    );
    config.interval = Duration::from_millis(100);
    let agent = AgentHandle::spawn(config, scraper).unwrap();
    server
        .wait_count("gpu", Duration::from_secs(20), |n| n >= 4)
        .await;
    agent.stop().await.unwrap();
    let rows = server
        .rows(&format!(
            "SELECT model, utilization, power_watts, energy_mj, memory_total_mib FROM gpu \
             WHERE gpu_uuid = '{H100}' LIMIT 1"
        ))
        .await;
    assert_eq!(
        rows,
        vec![vec![
            // dcgm-exporter's modelName "NVIDIA H100 80GB HBM3", as the one model table names it.
            "H100".to_string(),
            "87.0".to_string(),
            "612.345".to_string(),
            "3871234567890".to_string(),
            "81559".to_string(),
        ]]
    );
    // The A100's blanks were never stored as numbers.
    let blank = server
        .rows(&format!(
            "SELECT count(memory_temperature), count(pcie_tx_bytes_per_s), count(*) FROM gpu \
             WHERE gpu_uuid = '{A100}'"
        ))
        .await;
    assert_eq!(blank[0][0], "0");
    assert_eq!(blank[0][1], "0");
    let faults = server
        .rows("SELECT gpu_uuid, code, severity FROM gpu_fault ORDER BY code")
        .await;
    assert_eq!(
        faults,
        vec![
            vec![H100.to_string(), "13".into(), "application".into()],
            vec![H100.to_string(), "13".into(), "application".into()],
            vec![A100.to_string(), "79".into(), "hardware".into()],
        ]
    );
}
