//! A collector that scrapes NVIDIA's dcgm-exporter (`rigwatch agent --scrape
//! http://127.0.0.1:9400/metrics`) instead of calling NVML itself.
//!
//! dcgm-exporter serves Prometheus text: one metric per DCGM field, one sample per GPU,
//! labelled `gpu` (index), `UUID`, `device` (`nvidia0`), `modelName`, `Hostname`,
//! `pci_bus_id` and the configured label fields (e.g. `DCGM_FI_DRIVER_VERSION`). The page
//! is parsed with [`crate::prom_text`]; each `DCGM_FI_*` metric with a `gpu` field of its
//! own (see [`Metric::from_dcgm`]) sets that field, so rows look exactly like NVML rows.
//!
//! DCGM reports "no value" with sentinels rather than by leaving a sample out
//! (`dcgm_structs.h`): `DCGM_INT32_BLANK` = 0x7ffffff0 (2147483632) and the next 15 values
//! (not found, not supported, no permission, ...), `DCGM_INT64_BLANK` =
//! 0x7ffffffffffffff0 (≈ 9.223372036854775792e18) and up, `DCGM_FP64_BLANK` = 2^47 =
//! 140737488355328.0 and up to +15. Those are missing values here, never numbers.
//!
//! XIDs: `DCGM_FI_DEV_XID_ERRORS` holds the last XID of a GPU (0 = none; newer exporters
//! add `err_code` / `err_msg` labels); a change to a non-zero value is one `gpu_fault`
//! event. `DCGM_EXP_XID_ERRORS_COUNT` counts XIDs per code (label `xid` or `err_code`) over
//! a window; an increase of n is n events. The first scrape compares against zero, so a
//! restarted agent may report the last XID again. MIG instance samples (a non-empty
//! `GPU_I_ID` label) are skipped: rows are per physical GPU.

use std::collections::HashMap;
use std::time::Duration;

use rigwatch_storage::batch::{FieldValue, WriteBatch};

use super::fields::{GpuEvent, GpuInfo, GpuSample, Metric};
use super::{CollectError, Collector};
use crate::prom_text;

/// Whether `v` is one of DCGM's blank / not-found / not-supported sentinels.
pub fn is_blank(v: f64) -> bool {
    const INT32_BLANK: f64 = 2_147_483_632.0;
    const INT64_BLANK: f64 = 9_223_372_036_854_775_792.0;
    const FP64_BLANK: f64 = 140_737_488_355_328.0;
    !v.is_finite()
        || (INT32_BLANK..=INT32_BLANK + 15.0).contains(&v)
        || (FP64_BLANK..=FP64_BLANK + 15.0).contains(&v)
        // 0x7ffffffffffffff0 is not exactly representable: every value that rounds near it.
        || v >= INT64_BLANK - 1024.0
}

/// One GPU as seen in a scrape.
#[derive(Debug, Clone, Default)]
struct Seen {
    info: GpuInfo,
    fb_used: Option<f64>,
    fb_free: Option<f64>,
    fb_reserved: Option<f64>,
}

/// The dcgm-exporter collector.
#[derive(Debug)]
pub struct DcgmScraper {
    url: String,
    http: reqwest::blocking::Client,
    /// Inventory order: position ↔ UUID.
    gpus: Vec<GpuInfo>,
    /// Last `DCGM_FI_DEV_XID_ERRORS` per UUID.
    last_xid: HashMap<String, f64>,
    /// Last `DCGM_EXP_XID_ERRORS_COUNT` per (UUID, code).
    last_xid_count: HashMap<(String, u32), f64>,
    pending: Vec<GpuEvent>,
}

impl DcgmScraper {
    pub fn new(url: &str) -> Result<Self, CollectError> {
        let http = reqwest::blocking::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| CollectError::Scrape {
                url: url.to_string(),
                reason: e.to_string(),
            })?;
        Ok(DcgmScraper {
            url: url.to_string(),
            http,
            gpus: Vec::new(),
            last_xid: HashMap::new(),
            last_xid_count: HashMap::new(),
            pending: Vec::new(),
        })
    }

    fn fetch(&self) -> Result<String, CollectError> {
        let err = |reason: String| CollectError::Scrape {
            url: self.url.clone(),
            reason,
        };
        let resp = self
            .http
            .get(&self.url)
            .send()
            .map_err(|e| err(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(err(format!("HTTP {}", resp.status())));
        }
        resp.text().map_err(|e| err(e.to_string()))
    }

    /// Parses a page into per-GPU samples (by UUID) and XID events.
    fn parse(&mut self, page: &str, now_ns: i64, samples: &mut Vec<GpuSample>) -> Vec<Seen> {
        let mut batch = WriteBatch::with_capacity(256, page.len());
        // Bad lines are skipped: one odd metric must not cost the whole page.
        let _ = prom_text::parse(page, now_ns / 1_000_000, &mut batch);
        let mut seen: Vec<Seen> = Vec::new();
        let mut by_uuid: HashMap<String, usize> = HashMap::new();
        for row in batch.rows() {
            let value = match row.fields().next() {
                Some((_, FieldValue::F64(v))) => v,
                _ => continue,
            };
            let mut uuid = "";
            let mut index = None;
            let mut labels: [&str; 5] = [""; 5]; // model, pci, driver, err_code, xid
            let mut mig = false;
            for (k, v) in row.tags() {
                match k {
                    "UUID" => uuid = v,
                    "gpu" => index = v.parse::<u32>().ok(),
                    "modelName" => labels[0] = v,
                    "pci_bus_id" => labels[1] = v,
                    "DCGM_FI_DRIVER_VERSION" => labels[2] = v,
                    "err_code" => labels[3] = v,
                    "xid" => labels[4] = v,
                    "GPU_I_ID" => mig = !v.is_empty(),
                    _ => {}
                }
            }
            if uuid.is_empty() || mig {
                continue;
            }
            let pos = *by_uuid.entry(uuid.to_string()).or_insert_with(|| {
                seen.push(Seen {
                    info: GpuInfo {
                        index: index.unwrap_or(seen.len() as u32),
                        uuid: uuid.to_string(),
                        model: labels[0].to_string(),
                        memory_total_mib: 0,
                        pci_bus_id: labels[1].to_string(),
                        driver_version: labels[2].to_string(),
                        cuda_version: String::new(),
                        power_limit_watts: None,
                        mig_enabled: None,
                    },
                    ..Seen::default()
                });
                seen.len() - 1
            });
            // Samples and events are indexed by inventory position once there is one.
            let slot = if self.gpus.is_empty() {
                Some(pos)
            } else {
                self.gpus.iter().position(|g| g.uuid == uuid)
            };
            let s = &mut seen[pos];
            if s.info.model.is_empty() {
                s.info.model = labels[0].to_string();
            }
            if s.info.pci_bus_id.is_empty() {
                s.info.pci_bus_id = labels[1].to_string();
            }
            if s.info.driver_version.is_empty() {
                s.info.driver_version = labels[2].to_string();
            }
            let blank = is_blank(value);
            match row.table() {
                "DCGM_FI_DEV_FB_USED" if !blank => s.fb_used = Some(value),
                "DCGM_FI_DEV_FB_FREE" if !blank => s.fb_free = Some(value),
                _ => {}
            }
            match row.table() {
                "DCGM_FI_DEV_FB_RESERVED" if !blank => s.fb_reserved = Some(value),
                "DCGM_FI_DEV_FB_TOTAL" if !blank => s.info.memory_total_mib = value as u64,
                "DCGM_FI_DEV_POWER_MGMT_LIMIT" | "DCGM_FI_DEV_ENFORCED_POWER_LIMIT" if !blank => {
                    s.info.power_limit_watts = Some(value)
                }
                "DCGM_FI_DEV_XID_ERRORS" if !blank => {
                    let code = labels[3].parse::<f64>().unwrap_or(value);
                    let last = self.last_xid.insert(uuid.to_string(), value);
                    if let Some(gpu) = slot
                        && value != 0.0
                        && last != Some(value)
                        && code > 0.0
                    {
                        self.pending.push(GpuEvent {
                            gpu,
                            time_ns: now_ns,
                            xid: code as u32,
                        });
                    }
                }
                "DCGM_EXP_XID_ERRORS_COUNT" if !blank => {
                    let code = labels[4]
                        .parse::<u32>()
                        .or_else(|_| labels[3].parse::<u32>())
                        .unwrap_or(0);
                    if let Some(gpu) = slot
                        && code > 0
                    {
                        let last = self
                            .last_xid_count
                            .insert((uuid.to_string(), code), value)
                            .unwrap_or(0.0);
                        // A window that rolled over starts from zero again.
                        let new = if value >= last { value - last } else { value };
                        for _ in 0..(new as u64).min(1000) {
                            self.pending.push(GpuEvent {
                                gpu,
                                time_ns: now_ns,
                                xid: code,
                            });
                        }
                    }
                }
                name => {
                    if let (Some(m), Some(slot)) = (Metric::from_dcgm(name), slot) {
                        while samples.len() <= slot {
                            samples.push(GpuSample::new(samples.len(), now_ns));
                        }
                        if !blank {
                            samples[slot].set(m, value);
                        }
                    }
                }
            }
        }
        for s in &mut seen {
            if s.info.memory_total_mib == 0
                && let (Some(u), Some(f)) = (s.fb_used, s.fb_free)
            {
                s.info.memory_total_mib = (u + f + s.fb_reserved.unwrap_or(0.0)) as u64;
            }
        }
        seen
    }
}

impl Collector for DcgmScraper {
    fn inventory(&mut self) -> Result<Vec<GpuInfo>, CollectError> {
        let page = self.fetch()?;
        let mut samples = Vec::new();
        let seen = self.parse(&page, super::now_ns(), &mut samples);
        // Events of the first scrape are reported with the first sample.
        if seen.is_empty() {
            return Err(CollectError::Scrape {
                url: self.url.clone(),
                reason: "the page has no DCGM_FI_* samples with a UUID label".into(),
            });
        }
        self.gpus = seen.into_iter().map(|s| s.info).collect();
        Ok(self.gpus.clone())
    }

    fn sample(&mut self, now_ns: i64, out: &mut Vec<GpuSample>) -> Result<(), CollectError> {
        let page = self.fetch()?;
        let mut samples = Vec::new();
        self.parse(&page, now_ns, &mut samples);
        out.extend(samples.into_iter().filter(|s| !s.is_empty()));
        Ok(())
    }

    fn events(&mut self, _now_ns: i64, out: &mut Vec<GpuEvent>) {
        out.append(&mut self.pending);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentinels_are_blank_and_real_values_are_not() {
        for v in [
            2_147_483_632.0,
            2_147_483_634.0,
            9.223_372_036_854_776e18,
            9.223372036854776e18,
            140_737_488_355_328.0,
            140_737_488_355_330.0,
            f64::NAN,
        ] {
            assert!(is_blank(v), "{v} should be blank");
        }
        for v in [0.0, 97.0, 2_147_483_631.0, 3.6e12, 140_737_488_355_327.0] {
            assert!(!is_blank(v), "{v} should be a value");
        }
    }
}
