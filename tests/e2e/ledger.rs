//! What the crash test writes, what it remembers about each row, and how a restarted server is
//! checked against that.
//!
//! Three tables exercise the three ways rows can go wrong:
//! - `rig` (upsert): one row per `seq`, a unique (series, time) each, spread over three
//!   one-minute partitions so every persist writes several files and compaction has work.
//! - `gpu_state` (upsert): a few keys rewritten over and over with an increasing `version`; the
//!   row must hold the newest acknowledged version (or a newer in-flight one), never an older
//!   one and never two rows.
//! - `rig_event` (append-only): every row has a unique `seq`, and rows share (series, time) in
//!   threes, so a replay twice over or a lost WAL record shows up as a duplicate or a gap.
//!
//! A row whose write was not acknowledged may or may not survive; the first restart decides,
//! and every later restart must agree (a row seen once never vanishes, a row missing once never
//! reappears).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::harness::Server;

const BASE: i64 = 1_700_000_000_000_000_000;
const MINUTE: i64 = 60_000_000_000;
const SECOND: i64 = 1_000_000_000;

/// Rows per batch, per table.
const POINTS_PER_BATCH: u64 = 10;
const FAULTS_PER_BATCH: u64 = 3;
const STATES_PER_BATCH: u64 = 2;
/// `gpu_state` keys per writer.
const STATE_KEYS: u64 = 6;

/// What is known about a row whose write was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Sent, no answer yet (or a non-204 answer): may or may not be stored.
    Sent,
    /// 204: must be stored exactly once.
    Acked,
    /// Not acknowledged, but seen after a restart: must stay.
    Seen,
    /// Not acknowledged and missing after a restart: must stay missing.
    Lost,
}

#[derive(Debug, Default)]
struct StateKey {
    /// Newest version that must be stored (acknowledged, or seen after a restart).
    floor: Option<u64>,
    /// Versions the stored row may hold: those sent since the last check, plus the one seen.
    allowed: BTreeSet<u64>,
}

/// What was sent and what was acknowledged.
#[derive(Debug, Default)]
pub struct Ledger {
    pub points: BTreeMap<u64, Fate>,
    faults: BTreeMap<u64, Fate>,
    states: BTreeMap<String, StateKey>,
    next_point: u64,
    next_fault: u64,
    next_version: u64,
    /// Writer failures other than "the server is gone".
    pub errors: Vec<String>,
}

/// The rows of one batch, to mark acknowledged on a 204.
#[derive(Debug, Default)]
pub struct Sent {
    points: Vec<u64>,
    faults: Vec<u64>,
    states: Vec<(String, u64)>,
}

fn point_row(seq: u64) -> (String, i64, f64) {
    let t = BASE + (seq % 3) as i64 * MINUTE + seq as i64 * 1000;
    (format!("GPU-{}", seq % 8), t, (seq % 1000) as f64 / 4.0)
}

fn fault_row(seq: u64) -> (String, i64, u64) {
    // Three consecutive rows share (series, time): only append-only keeps all three.
    let g = seq / 3;
    let t = BASE + (g % 3) as i64 * MINUTE + g as i64 * 1000;
    (format!("GPU-{}", g % 4), t, seq % 13)
}

fn state_key(writer: usize, k: u64) -> String {
    format!("R{writer}-{k}")
}

fn state_row(k: u64, version: u64) -> (i64, u64) {
    (BASE + k as i64 * 25 * SECOND, version * 7 + k)
}

impl Ledger {
    /// The next batch of `writer`, its rows recorded as sent.
    pub fn next_batch(&mut self, writer: usize, batch_no: u64) -> (String, Sent) {
        let mut lp = String::new();
        let mut sent = Sent::default();
        for _ in 0..POINTS_PER_BATCH {
            let seq = self.next_point;
            self.next_point += 1;
            let (gpu, t, u) = point_row(seq);
            lp += &format!("rig,gpu_uuid={gpu} utilization={u:?},seq={seq}i {t}\n");
            self.points.insert(seq, Fate::Sent);
            sent.points.push(seq);
        }
        for _ in 0..FAULTS_PER_BATCH {
            let seq = self.next_fault;
            self.next_fault += 1;
            let (gpu, t, code) = fault_row(seq);
            lp += &format!("rig_event,gpu_uuid={gpu} code={code}i,seq={seq}i {t}\n");
            self.faults.insert(seq, Fate::Sent);
            sent.faults.push(seq);
        }
        for i in 0..STATES_PER_BATCH {
            let k = (batch_no * STATES_PER_BATCH + i) % STATE_KEYS;
            let rig = state_key(writer, k);
            let version = self.next_version;
            self.next_version += 1;
            let (t, chk) = state_row(k, version);
            lp += &format!("gpu_state,rig={rig} version={version}i,chk={chk}i {t}\n");
            self.states
                .entry(rig.clone())
                .or_default()
                .allowed
                .insert(version);
            sent.states.push((rig, version));
        }
        (lp, sent)
    }

    pub fn ack(&mut self, sent: &Sent) {
        for s in &sent.points {
            self.points.insert(*s, Fate::Acked);
        }
        for s in &sent.faults {
            self.faults.insert(*s, Fate::Acked);
        }
        for (rig, v) in &sent.states {
            let key = self.states.entry(rig.clone()).or_default();
            key.floor = Some(key.floor.map_or(*v, |f| f.max(*v)));
        }
    }
}

fn int(row: &Value, col: &str) -> Option<i64> {
    row.get(col).and_then(Value::as_i64)
}

fn text<'a>(row: &'a Value, col: &str) -> &'a str {
    row.get(col).and_then(Value::as_str).unwrap_or("<missing>")
}

/// What a check found, for the failure message.
#[derive(Debug, Default)]
pub struct Check {
    pub problems: Vec<String>,
    pub rows: [usize; 3],
    pub seen_unacked: usize,
    pub lost_unacked: usize,
}

impl Check {
    fn problem(&mut self, p: String) {
        self.problems.push(p);
    }
}

/// Checks every table against the ledger and resolves unacknowledged rows.
pub async fn verify(server: &Server, ledger: &mut Ledger) -> Check {
    let mut check = Check::default();
    verify_points(server, ledger, &mut check).await;
    verify_faults(server, ledger, &mut check).await;
    verify_states(server, ledger, &mut check).await;
    check
}

/// Applies the rules of [`Fate`] to the rows stored per `seq`, for one table.
fn check_fates(
    table: &str,
    fates: &mut BTreeMap<u64, Fate>,
    stored: &BTreeMap<u64, usize>,
    check: &mut Check,
) {
    for (seq, n) in stored {
        if !fates.contains_key(seq) {
            check.problem(format!("{table}: seq={seq} stored {n}x but never written"));
        }
    }
    for (seq, fate) in fates.iter_mut() {
        let n = stored.get(seq).copied().unwrap_or(0);
        match (*fate, n) {
            (_, n) if n > 1 => check.problem(format!(
                "{table}: seq={seq} ({fate:?}) stored {n} times (duplicate)"
            )),
            (Fate::Acked | Fate::Seen, 0) => check.problem(format!(
                "{table}: seq={seq} missing although {}",
                if *fate == Fate::Acked {
                    "acknowledged (204)"
                } else {
                    "seen after an earlier restart"
                }
            )),
            (Fate::Lost, 1) => check.problem(format!(
                "{table}: seq={seq} reappeared after it was missing at an earlier restart"
            )),
            (Fate::Sent, 1) => {
                *fate = Fate::Seen;
                check.seen_unacked += 1;
            }
            (Fate::Sent, 0) => {
                *fate = Fate::Lost;
                check.lost_unacked += 1;
            }
            _ => {}
        }
    }
}

async fn verify_points(server: &Server, ledger: &mut Ledger, check: &mut Check) {
    let rows = server
        .rows("SELECT seq, utilization, gpu_uuid, CAST(time AS BIGINT) AS t FROM rig")
        .await;
    check.rows[0] = rows.len();
    let mut stored: BTreeMap<u64, usize> = BTreeMap::new();
    for row in &rows {
        let Some(seq) = int(row, "seq") else {
            check.problem(format!("rig: row without seq: {row}"));
            continue;
        };
        let seq = seq as u64;
        *stored.entry(seq).or_default() += 1;
        let (gpu, t, u) = point_row(seq);
        let got_u = row.get("utilization").and_then(Value::as_f64);
        if text(row, "gpu_uuid") != gpu || int(row, "t") != Some(t) || got_u != Some(u) {
            check.problem(format!(
                "rig: seq={seq} stored as {row}, expected gpu_uuid={gpu} t={t} utilization={u}"
            ));
        }
    }
    let count = server.count("rig").await;
    if count != rows.len() as u64 {
        check.problem(format!(
            "rig: count(*) = {count} but SELECT returned {} rows",
            rows.len()
        ));
    }
    check_fates("rig", &mut ledger.points, &stored, check);
}

async fn verify_faults(server: &Server, ledger: &mut Ledger, check: &mut Check) {
    let rows = server
        .rows("SELECT seq, code, gpu_uuid, CAST(time AS BIGINT) AS t FROM rig_event")
        .await;
    check.rows[1] = rows.len();
    let mut stored: BTreeMap<u64, usize> = BTreeMap::new();
    for row in &rows {
        let Some(seq) = int(row, "seq") else {
            check.problem(format!("rig_event: row without seq: {row}"));
            continue;
        };
        let seq = seq as u64;
        *stored.entry(seq).or_default() += 1;
        let (gpu, t, code) = fault_row(seq);
        if text(row, "gpu_uuid") != gpu
            || int(row, "t") != Some(t)
            || int(row, "code") != Some(code as i64)
        {
            check.problem(format!(
                "rig_event: seq={seq} stored as {row}, expected gpu_uuid={gpu} t={t} code={code}"
            ));
        }
    }
    let count = server.count("rig_event").await;
    if count != rows.len() as u64 {
        check.problem(format!(
            "rig_event: count(*) = {count} but SELECT returned {} rows",
            rows.len()
        ));
    }
    check_fates("rig_event", &mut ledger.faults, &stored, check);
}

async fn verify_states(server: &Server, ledger: &mut Ledger, check: &mut Check) {
    let rows = server
        .rows("SELECT rig, version, chk, CAST(time AS BIGINT) AS t FROM gpu_state")
        .await;
    check.rows[2] = rows.len();
    let mut stored: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for row in &rows {
        stored
            .entry(text(row, "rig").to_string())
            .or_default()
            .push(row);
    }
    for rig in stored.keys() {
        if !ledger.states.contains_key(rig) {
            check.problem(format!("gpu_state: rig={rig} stored but never written"));
        }
    }
    for (rig, key) in ledger.states.iter_mut() {
        let k: u64 = rig.rsplit('-').next().and_then(|k| k.parse().ok()).unwrap();
        let rows = stored.get(rig).map(Vec::as_slice).unwrap_or_default();
        match rows {
            [] => {
                if let Some(floor) = key.floor {
                    check.problem(format!(
                        "gpu_state: rig={rig} missing although version {floor} was acknowledged"
                    ));
                }
                // Unacknowledged versions sent so far are gone for good.
                key.allowed.clear();
            }
            [row] => {
                let version = int(row, "version").map(|v| v as u64);
                let (t, _) = state_row(k, 0);
                let Some(version) = version else {
                    check.problem(format!("gpu_state: rig={rig} row without version: {row}"));
                    continue;
                };
                let (_, chk) = state_row(k, version);
                if int(row, "t") != Some(t) || int(row, "chk") != Some(chk as i64) {
                    check.problem(format!(
                        "gpu_state: rig={rig} stored as {row}, expected t={t} chk={chk} \
                         (fields of different versions mixed?)"
                    ));
                }
                if key.floor.is_some_and(|f| version < f) {
                    check.problem(format!(
                        "gpu_state: rig={rig} holds version {version}, older than version {} \
                         which was acknowledged or seen (lost update)",
                        key.floor.unwrap()
                    ));
                } else if !key.allowed.contains(&version) {
                    check.problem(format!(
                        "gpu_state: rig={rig} holds version {version}, which was missing at an \
                         earlier restart or never written to this key"
                    ));
                } else {
                    key.floor = Some(version);
                    key.allowed = BTreeSet::from([version]);
                }
            }
            many => check.problem(format!(
                "gpu_state: rig={rig} stored {} times (upsert key duplicated): {many:?}",
                many.len()
            )),
        }
    }
}
