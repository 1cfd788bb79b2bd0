//! Who owns which GPU: `gpu_uuid → (supplier, worker)`. The first supplier to register a
//! GPU keeps it until the claim is released; a GPU may move between workers of its
//! supplier.
//!
//! A GPU's UUID is what fault detection, health and the allocator key on, so an agent that
//! could speak for another supplier's GPU could mark it unhealthy and end that supplier's
//! paid lease. The server therefore takes GPU identity from these claims, never from a row:
//! registration refuses a GPU claimed by another supplier, and the write route refuses rows
//! for GPUs not claimed by the writing worker.
//!
//! Claims are kept in `<data-dir>/gpu_claims.jsonl`, appended and fsynced before the request
//! that made them is answered (the same pattern as the agent registry). One JSON object a
//! line, format version 1:
//!
//! ```text
//! {"v":1,"op":"claim","gpu_uuid":"GPU-…","supplier":"acme","worker":"n1","unix_ms":1700000000000}
//! {"v":1,"op":"release","gpu_uuid":"GPU-…","supplier":"acme","worker":"n1","unix_ms":1700000060000}
//! ```
//!
//! Replaying the lines in order gives the current claims. A torn last line (a crash during
//! an append) is ignored; so is any other line that cannot be read, with a warning.

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;

use parking_lot::Mutex;
use rigwatch_storage::shared_lines::SharedLines;
use serde::{Deserialize, Serialize};
use tracing::warn;

/// The claims file, in the data directory.
pub const CLAIMS_FILE: &str = "gpu_claims.jsonl";

/// The version written on every line.
pub const FORMAT_VERSION: u32 = 1;

/// Longest accepted GPU UUID (NVML's are 40 bytes, MIG device UUIDs 41).
pub const MAX_UUID_BYTES: usize = 96;

/// Why a GPU UUID is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UuidError {
    #[error("the uuid is empty")]
    Empty,
    #[error("the uuid is {len} bytes long; at most {MAX_UUID_BYTES} are allowed")]
    TooLong { len: usize },
    #[error(
        "the uuid has a byte that is not printable ASCII (a space, a control character or \
         non-ASCII) at byte {offset}"
    )]
    Unprintable { offset: usize },
}

/// A GPU UUID must be 1 to [`MAX_UUID_BYTES`] bytes of printable ASCII without spaces.
pub fn validate_uuid(uuid: &str) -> Result<(), UuidError> {
    if uuid.is_empty() {
        return Err(UuidError::Empty);
    }
    if uuid.len() > MAX_UUID_BYTES {
        return Err(UuidError::TooLong { len: uuid.len() });
    }
    match uuid.bytes().position(|b| !b.is_ascii_graphic()) {
        Some(offset) => Err(UuidError::Unprintable { offset }),
        None => Ok(()),
    }
}

/// The owner of a GPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub supplier: String,
    pub worker: String,
    pub claimed_unix_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Op {
    Claim,
    Release,
}

/// One line of the claims file.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    v: u32,
    op: Op,
    gpu_uuid: String,
    supplier: String,
    worker: String,
    unix_ms: i64,
}

/// Why GPUs could not be claimed.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    /// `uuids[index]` belongs to another supplier; nothing was claimed.
    #[error("GPU `{uuid}` is claimed by another supplier")]
    Conflict { index: usize, uuid: String },
    #[error("cannot save the GPU claims: {0}")]
    Io(#[from] io::Error),
}

#[derive(Debug, Default)]
struct Inner {
    by_gpu: HashMap<String, Claim>,
    per_supplier: HashMap<String, usize>,
}

impl Inner {
    /// Applies the lines of `text` in order (from `source`, for the log).
    fn apply_lines(&mut self, text: &[u8], source: &str) {
        let lines: Vec<&[u8]> = text.split(|b| *b == b'\n').collect();
        for (i, line) in lines.iter().enumerate() {
            if line.is_empty() {
                continue;
            }
            let torn = i + 1 == lines.len();
            match serde_json::from_slice::<Record>(line) {
                Ok(r) if r.v == FORMAT_VERSION => self.apply(r),
                Ok(r) => {
                    warn!(
                        source,
                        line = i + 1,
                        version = r.v,
                        "skipping a GPU claim of an unknown format version"
                    );
                }
                Err(error) if torn => {
                    warn!(%error, source, line = i + 1, "ignoring a torn last GPU claim");
                }
                Err(error) => {
                    warn!(%error, source, line = i + 1, "skipping an unreadable GPU claim");
                }
            }
        }
    }

    fn apply(&mut self, r: Record) {
        match r.op {
            Op::Claim => {
                let claim = Claim {
                    supplier: r.supplier,
                    worker: r.worker,
                    claimed_unix_ms: r.unix_ms,
                };
                *self.per_supplier.entry(claim.supplier.clone()).or_default() += 1;
                if let Some(old) = self.by_gpu.insert(r.gpu_uuid, claim) {
                    self.forget(&old.supplier);
                }
            }
            Op::Release => {
                if let Some(old) = self.by_gpu.remove(&r.gpu_uuid) {
                    self.forget(&old.supplier);
                }
            }
        }
    }

    fn forget(&mut self, supplier: &str) {
        if let Some(n) = self.per_supplier.get_mut(supplier) {
            *n -= 1;
            if *n == 0 {
                self.per_supplier.remove(supplier);
            }
        }
    }
}

/// The GPU claims, in memory and in their file.
#[derive(Debug)]
pub struct Claims {
    path: PathBuf,
    inner: Mutex<Inner>,
    /// Serialises appends (held across the write and fsync, not while serving reads): every
    /// change goes through it, so what a writer checked still holds when it applies.
    append: Mutex<()>,
    /// Where nodes sharing a catalog keep every claim (written before the file).
    mirror: Option<SharedLines>,
}

impl Claims {
    /// Reads the claims at `path` (none if the file does not exist yet).
    pub fn open(path: PathBuf) -> io::Result<Self> {
        let mut inner = Inner::default();
        let text = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        inner.apply_lines(&text, &path.display().to_string());
        Ok(Claims {
            path,
            inner: Mutex::new(inner),
            append: Mutex::new(()),
            mirror: None,
        })
    }

    /// Every claim from now on also goes to `mirror`, first.
    pub fn with_mirror(mut self, mirror: Option<SharedLines>) -> Self {
        self.mirror = mirror;
        self
    }

    /// Who holds `uuid`, if anyone.
    pub fn owner(&self, uuid: &str) -> Option<Claim> {
        self.inner.lock().by_gpu.get(uuid).cloned()
    }

    /// How many GPUs `supplier` holds.
    pub fn count(&self, supplier: &str) -> usize {
        self.inner
            .lock()
            .per_supplier
            .get(supplier)
            .copied()
            .unwrap_or(0)
    }

    /// The GPUs of `uuids` held by a supplier other than `supplier`: (index, uuid, owner).
    pub fn conflicts<'u>(&self, supplier: &str, uuids: &[&'u str]) -> Vec<(usize, &'u str, Claim)> {
        let inner = self.inner.lock();
        uuids
            .iter()
            .enumerate()
            .filter_map(|(i, u)| {
                inner
                    .by_gpu
                    .get(*u)
                    .filter(|c| c.supplier != supplier)
                    .map(|c| (i, *u, c.clone()))
            })
            .collect()
    }

    /// How many of `uuids` `supplier` does not hold yet.
    pub fn new_for(&self, supplier: &str, uuids: &[&str]) -> usize {
        let inner = self.inner.lock();
        uuids
            .iter()
            .filter(|u| inner.by_gpu.get(**u).is_none_or(|c| c.supplier != supplier))
            .count()
    }

    /// Claims every GPU of `uuids` for `supplier`'s `worker` (a GPU of another worker of the
    /// same supplier moves to this one), durably. If any is held by another supplier, nothing
    /// is claimed. Returns how many claims changed.
    pub fn claim(
        &self,
        supplier: &str,
        worker: &str,
        uuids: &[&str],
        unix_ms: i64,
    ) -> Result<usize, ClaimError> {
        self.append_claims(supplier, worker, uuids, unix_ms, false)
    }

    /// Claims for `worker` the GPUs of `uuids` that nobody holds (others are left as they
    /// are): registrations from before claims existed.
    pub fn adopt(
        &self,
        supplier: &str,
        worker: &str,
        uuids: &[&str],
        unix_ms: i64,
    ) -> io::Result<usize> {
        match self.append_claims(supplier, worker, uuids, unix_ms, true) {
            Ok(n) => Ok(n),
            Err(ClaimError::Io(e)) => Err(e),
            Err(ClaimError::Conflict { .. }) => unreachable!("adopting skips held GPUs"),
        }
    }

    fn append_claims(
        &self,
        supplier: &str,
        worker: &str,
        uuids: &[&str],
        unix_ms: i64,
        skip_held: bool,
    ) -> Result<usize, ClaimError> {
        let _guard = self.append.lock();
        self.change(|inner| {
            let mut records = Vec::new();
            for (index, uuid) in uuids.iter().enumerate() {
                match inner.by_gpu.get(*uuid) {
                    Some(c) if c.supplier == supplier && c.worker == worker => continue,
                    Some(c) if c.supplier != supplier || skip_held => {
                        if skip_held {
                            continue;
                        }
                        return Err(ClaimError::Conflict {
                            index,
                            uuid: uuid.to_string(),
                        });
                    }
                    _ => {}
                }
                records.push(Record {
                    v: FORMAT_VERSION,
                    op: Op::Claim,
                    gpu_uuid: uuid.to_string(),
                    supplier: supplier.to_string(),
                    worker: worker.to_string(),
                    unix_ms,
                });
            }
            Ok(records)
        })
    }

    /// Releases `uuid` durably; the claim it had, or `None` if nobody held it.
    pub fn release(&self, uuid: &str, unix_ms: i64) -> io::Result<Option<Claim>> {
        let _guard = self.append.lock();
        let mut released = None;
        let changed = self.change(|inner| {
            let Some(claim) = inner.by_gpu.get(uuid).cloned() else {
                return Ok(Vec::new());
            };
            let r = Record {
                v: FORMAT_VERSION,
                op: Op::Release,
                gpu_uuid: uuid.to_string(),
                supplier: claim.supplier.clone(),
                worker: claim.worker.clone(),
                unix_ms,
            };
            released = Some(claim);
            Ok(vec![r])
        });
        match changed {
            Ok(_) => Ok(released),
            Err(ClaimError::Io(e)) => Err(e),
            Err(ClaimError::Conflict { .. }) => unreachable!("a release conflicts with nothing"),
        }
    }

    /// Makes a change (the caller holds `append`): `decide` looks at the claims as they are
    /// and answers the records to append, durably, then apply; how many. Beside other
    /// nodes it decides under the cluster-wide lock, after taking in the claims other shards'
    /// owners made meanwhile, so a GPU one of them gave another supplier is seen here.
    fn change(
        &self,
        decide: impl FnOnce(&Inner) -> Result<Vec<Record>, ClaimError>,
    ) -> Result<usize, ClaimError> {
        let encode = |records: &[Record]| {
            let mut buf = Vec::with_capacity(records.len() * 160);
            for r in records {
                serde_json::to_writer(&mut buf, r).expect("a claim serializes");
                buf.push(b'\n');
            }
            buf
        };
        let records = match &self.mirror {
            None => {
                let records = decide(&self.inner.lock())?;
                self.append(&encode(&records))?;
                records
            }
            Some(m) => {
                let mut decided = Vec::new();
                m.append_checked_blocking(CLAIMS_FILE, |others| {
                    let mut inner = self.inner.lock();
                    inner.apply_lines(others.as_bytes(), "the shared GPU claims");
                    decided = decide(&inner)?;
                    Ok::<_, ClaimError>(encode(&decided))
                })?;
                self.append(&encode(&decided))?;
                decided
            }
        };
        let n = records.len();
        let mut inner = self.inner.lock();
        for r in records {
            inner.apply(r);
        }
        Ok(n)
    }

    /// Appends encoded records to the file and fsyncs (the caller holds `append`).
    fn append(&self, buf: &[u8]) -> io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        f.write_all(buf)?;
        f.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_supplier_wins_and_claims_replay_after_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CLAIMS_FILE);
        let c = Claims::open(path.clone()).unwrap();
        assert_eq!(c.claim("a", "w1", &["GPU-1", "GPU-2"], 1).unwrap(), 2);
        assert!(matches!(
            c.claim("b", "x", &["GPU-3", "GPU-2"], 2),
            Err(ClaimError::Conflict { index: 1, .. })
        ));
        assert_eq!(c.owner("GPU-3"), None, "nothing of a refused claim is kept");
        // The same supplier may move a GPU between its workers.
        assert_eq!(c.claim("a", "w2", &["GPU-2"], 3).unwrap(), 1);
        assert_eq!(c.claim("a", "w2", &["GPU-2"], 4).unwrap(), 0);
        assert_eq!(c.count("a"), 2);
        assert_eq!(c.release("GPU-1", 5).unwrap().unwrap().worker, "w1");
        assert_eq!(c.release("GPU-1", 6).unwrap(), None);
        assert_eq!(c.adopt("b", "x", &["GPU-1", "GPU-2"], 7).unwrap(), 1);
        drop(c);
        // A crash in the middle of an append.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(br#"{"v":1,"op":"claim","gpu_uuid":"GPU-9","sup"#)
            .unwrap();
        drop(f);
        let c = Claims::open(path).unwrap();
        assert_eq!(c.owner("GPU-1").unwrap().supplier, "b");
        assert_eq!(c.owner("GPU-2").unwrap().worker, "w2");
        assert_eq!(c.owner("GPU-9"), None);
        assert_eq!((c.count("a"), c.count("b")), (1, 1));
        assert_eq!(c.new_for("a", &["GPU-1", "GPU-2", "GPU-5"]), 2);
    }

    #[test]
    fn uuids_are_bounded_printable_ascii() {
        assert_eq!(
            validate_uuid("GPU-5e8f1b2c-0000-0000-0000-000000000001"),
            Ok(())
        );
        assert_eq!(validate_uuid(""), Err(UuidError::Empty));
        assert_eq!(
            validate_uuid(&"x".repeat(97)),
            Err(UuidError::TooLong { len: 97 })
        );
        assert_eq!(
            validate_uuid("GPU-\n1"),
            Err(UuidError::Unprintable { offset: 4 })
        );
        assert_eq!(
            validate_uuid("GPU 1"),
            Err(UuidError::Unprintable { offset: 3 })
        );
    }
}
