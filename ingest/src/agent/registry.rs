//! The registered workers, kept in `<data-dir>/agents.jsonl` so the write route's
//! `?worker=` check survives restarts without a query.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::PathBuf;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tracing::warn;

use super::fields::GpuInfo;

/// The registry file, in the data directory.
pub const REGISTRY_FILE: &str = "agents.jsonl";

/// A registered worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerRecord {
    pub supplier: String,
    pub worker: String,
    pub registered_unix_ms: i64,
    #[serde(default)]
    pub agent_version: String,
    pub gpus: Vec<GpuInfo>,
}

/// Registered workers, backed by an append-only JSON-lines file: one line per
/// registration, the last line of a worker wins. Appending keeps a registration O(1)
/// however many workers there are; a torn last line (a crash mid-write) is ignored.
#[derive(Debug)]
pub struct Registry {
    path: PathBuf,
    /// Keyed by `supplier/worker`.
    workers: Mutex<BTreeMap<String, WorkerRecord>>,
    /// Serialises appends (held across the write and fsync, not while serving reads).
    append: Mutex<()>,
    /// Where nodes sharing a catalog keep every registration (written before the file).
    mirror: Option<rigwatch_storage::shared_lines::SharedLines>,
}

/// Applies registration lines in order (the last line of a worker wins); `source` names
/// where they came from, for the log.
fn apply_lines(workers: &mut BTreeMap<String, WorkerRecord>, text: &str, source: &str) {
    for (i, line) in text.lines().enumerate() {
        match serde_json::from_str::<WorkerRecord>(line) {
            Ok(rec) => {
                workers.insert(Registry::key(&rec.supplier, &rec.worker), rec);
            }
            Err(e) => {
                warn!(error = %e, source, line = i + 1, "skipping an unreadable agent registration");
            }
        }
    }
}

impl Registry {
    pub fn open(path: PathBuf) -> Self {
        let mut workers = BTreeMap::new();
        if let Ok(text) = fs::read_to_string(&path) {
            apply_lines(&mut workers, &text, &path.display().to_string());
        }
        Registry {
            path,
            workers: Mutex::new(workers),
            append: Mutex::new(()),
            mirror: None,
        }
    }

    /// Every registration from now on also goes to `mirror`, first.
    pub fn with_mirror(
        mut self,
        mirror: Option<rigwatch_storage::shared_lines::SharedLines>,
    ) -> Self {
        self.mirror = mirror;
        self
    }

    /// Beside other nodes: takes in the registrations other shards' owners made since this
    /// node last looked (each owner writes only its own suppliers' workers).
    pub async fn catch_up(&self) {
        let Some(m) = &self.mirror else {
            return;
        };
        match m.news(REGISTRY_FILE).await {
            Ok(text) => apply_lines(&mut self.workers.lock(), &text, "the shared registry"),
            Err(e) => {
                warn!(error = %e, "cannot read other nodes' registrations; listing this node's")
            }
        }
    }

    fn key(supplier: &str, worker: &str) -> String {
        format!("{supplier}/{worker}")
    }

    pub fn contains(&self, supplier: &str, worker: &str) -> bool {
        self.workers
            .lock()
            .contains_key(&Self::key(supplier, worker))
    }

    pub fn get(&self, supplier: &str, worker: &str) -> Option<WorkerRecord> {
        self.workers
            .lock()
            .get(&Self::key(supplier, worker))
            .cloned()
    }

    /// How many workers `supplier` has registered.
    pub fn count(&self, supplier: &str) -> usize {
        // Keys are `supplier/worker` and supplier names have no `/`: one contiguous range.
        let prefix = format!("{supplier}/");
        self.workers
            .lock()
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .count()
    }

    /// Records a worker durably (append + fsync); an unchanged re-registration (an agent
    /// restart) writes nothing.
    pub fn put(&self, rec: WorkerRecord) -> std::io::Result<()> {
        let key = Self::key(&rec.supplier, &rec.worker);
        let _guard = self.append.lock();
        let unchanged = self
            .workers
            .lock()
            .get(&key)
            .is_some_and(|old| old.gpus == rec.gpus && old.agent_version == rec.agent_version);
        if !unchanged {
            let mut line = serde_json::to_vec(&rec).expect("registration serializes");
            line.push(b'\n');
            if let Some(m) = &self.mirror {
                m.append_blocking(REGISTRY_FILE, &line)?;
            }
            let mut f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
            f.write_all(&line)?;
            f.sync_data()?;
        }
        self.workers.lock().insert(key, rec);
        Ok(())
    }

    /// Drops GPU `uuid` from every registration that lists it (durably).
    pub fn remove_gpu(&self, uuid: &str) -> std::io::Result<()> {
        let listing: Vec<WorkerRecord> = self
            .workers
            .lock()
            .values()
            .filter(|w| w.gpus.iter().any(|g| g.uuid == uuid))
            .cloned()
            .collect();
        for mut rec in listing {
            rec.gpus.retain(|g| g.uuid != uuid);
            self.put(rec)?;
        }
        Ok(())
    }

    pub fn list(&self, supplier: Option<&str>) -> Vec<WorkerRecord> {
        self.workers
            .lock()
            .values()
            .filter(|w| supplier.is_none_or(|s| w.supplier == s))
            .cloned()
            .collect()
    }
}
