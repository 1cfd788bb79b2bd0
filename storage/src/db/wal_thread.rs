//! The WAL thread: group commit, buffer apply, and the freeze that starts a persist.
//!
//! One OS thread owns the [`Wal`]. It takes every command that is waiting, appends all
//! writes, fsyncs once for the group (if any member asked for it), applies the group to the
//! buffer in order, publishes it to subscribers and only then acknowledges. A singleton's
//! write, fenced by a lease of its own, is committed as a group of its own, so that losing
//! that lease refuses it alone.

use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Weak};
use std::time::Instant;

use tokio::sync::oneshot;
use tracing::{error, warn};

use super::{Db, FrozenGen, now_ms};
use crate::error::{Error, Result};
use crate::lease::Held;
use crate::schema::ValidatedBatch;
use crate::wal::Wal;

/// Most commands taken into one group.
const MAX_GROUP: usize = 4096;

pub(crate) enum WalCmd {
    Write {
        batch: ValidatedBatch,
        sync: bool,
        /// A lease the node must still hold when the group is committed (a singleton's).
        fence: Option<Held>,
        done: oneshot::Sender<Result<()>>,
    },
    /// Rotate the WAL and freeze the buffer; answers the new frozen generation, if any.
    Freeze {
        done: oneshot::Sender<Result<Option<Arc<FrozenGen>>>>,
    },
    Stop {
        done: oneshot::Sender<Result<()>>,
    },
}

type Pending = Vec<(ValidatedBatch, oneshot::Sender<Result<()>>)>;

pub(crate) fn run(db: Weak<Db>, mut wal: Wal, rx: Receiver<WalCmd>) {
    let mut pending: Pending = Vec::new();
    let mut scratch_group = Vec::with_capacity(64);
    while let Ok(first) = rx.recv() {
        scratch_group.push(first);
        while scratch_group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(c) => scratch_group.push(c),
                Err(_) => break,
            }
        }
        let Some(db) = db.upgrade() else { return };
        let mut need_sync = false;
        for cmd in scratch_group.drain(..) {
            match cmd {
                WalCmd::Write {
                    batch,
                    fence: Some(fence),
                    done,
                    ..
                } => {
                    commit(&db, &mut wal, &mut pending, need_sync, None);
                    need_sync = false;
                    match wal.append(&batch.batch) {
                        Ok(bytes) => {
                            db.metrics.wal_bytes.inc_by(bytes);
                            pending.push((batch, done));
                            commit(&db, &mut wal, &mut pending, true, Some(&fence));
                        }
                        Err(e) => {
                            error!(error = %e, "WAL append failed");
                            let _ = done.send(Err(e));
                            recover(&mut wal);
                        }
                    }
                }
                WalCmd::Write {
                    batch, sync, done, ..
                } => match wal.append(&batch.batch) {
                    Ok(bytes) => {
                        crate::crash::point("wal:after_append");
                        db.metrics.wal_bytes.inc_by(bytes);
                        need_sync |= sync || wal.always_syncs();
                        pending.push((batch, done));
                    }
                    Err(e) => {
                        error!(error = %e, "WAL append failed");
                        let _ = done.send(Err(e));
                        recover(&mut wal);
                    }
                },
                WalCmd::Freeze { done } => {
                    commit(&db, &mut wal, &mut pending, need_sync, None);
                    need_sync = false;
                    let _ = done.send(freeze(&db, &mut wal));
                }
                WalCmd::Stop { done } => {
                    commit(&db, &mut wal, &mut pending, true, None);
                    let _ = done.send(wal.sync());
                    return;
                }
            }
        }
        commit(&db, &mut wal, &mut pending, need_sync, None);
    }
    // All senders gone: the Db was dropped. Make what was appended durable.
    let _ = wal.sync();
}

/// After a failed append the segment may end in a partial record; later records must not
/// follow it, or replay would stop before them.
fn recover(wal: &mut Wal) {
    if let Err(e) = wal.rotate() {
        error!(error = %e, "cannot rotate WAL after a failed append");
    }
}

/// Makes the group durable (if asked), applies it and acknowledges it; with `fence`, only
/// if the node still holds that lease as the group is committed.
fn commit(db: &Db, wal: &mut Wal, pending: &mut Pending, need_sync: bool, fence: Option<&Held>) {
    if pending.is_empty() {
        return;
    }
    if need_sync {
        let start = Instant::now();
        if let Err(e) = wal.sync_fenced(fence) {
            error!(error = %e, "WAL fsync failed; failing the group");
            let msg = e.to_string();
            let fenced = matches!(e, Error::Fenced(_));
            for (_, done) in pending.drain(..) {
                let _ = done.send(Err(if fenced {
                    Error::Fenced(msg.clone())
                } else {
                    Error::Internal(format!("WAL fsync failed: {msg}"))
                }));
            }
            recover(wal);
            return;
        }
        crate::crash::point("wal:after_sync");
        db.metrics.wal_syncs.inc();
        db.metrics
            .wal_sync_seconds
            .observe(start.elapsed().as_secs_f64());
    }
    db.metrics.wal_group_writes.observe(pending.len() as f64);
    let (rows, bytes) = {
        let mut st = db.state.write();
        if st.buffer.is_empty() {
            db.oldest_unpersisted_ms.store(now_ms(), Ordering::Relaxed);
        }
        let before = st.buffer.bytes();
        for (v, _) in pending.iter() {
            st.buffer.apply(v);
        }
        (st.buffer.rows(), st.buffer.bytes() - before)
    };
    db.buffer_bytes.fetch_add(bytes, Ordering::Relaxed);
    db.metrics.buffer_rows.set(rows as i64);
    db.metrics
        .buffer_bytes
        .set(db.buffer_bytes.load(Ordering::Relaxed) as i64);
    let publish = db.subscribers.receiver_count() > 0;
    for (v, done) in pending.drain(..) {
        db.metrics.rows_written.inc_by(v.batch.len() as u64);
        db.metrics
            .values_written
            .inc_by(v.batch.field_count() as u64);
        let _ = done.send(Ok(()));
        if publish {
            let _ = db.subscribers.send(Arc::new(v.batch));
        } else {
            v.batch.recycle();
        }
    }
}

fn freeze(db: &Db, wal: &mut Wal) -> Result<Option<Arc<FrozenGen>>> {
    if db.state.read().buffer.is_empty() {
        return Ok(None);
    }
    let through = wal
        .rotate()
        .inspect_err(|e| warn!(error = %e, "WAL rotate failed"))?;
    let mut st = db.state.write();
    let frozen = st.buffer.freeze();
    let generation = Arc::new(FrozenGen {
        frozen,
        wal_through: through,
    });
    st.frozen.push(generation.clone());
    db.oldest_unpersisted_ms.store(0, Ordering::Relaxed);
    db.metrics.buffer_rows.set(0);
    Ok(Some(generation))
}
