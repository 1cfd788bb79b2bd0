//! Failure handling of [`WalWriter`], driven by injected faults: what is refused after a
//! failed write or sync, how `rotate` recovers, and where automatic rotation reports errors.

use super::*;
use crate::wal::tests::{batch, replay_all};

fn ids_and_times(dir: &Path) -> Vec<(u64, i64)> {
    replay_all(dir, None)
        .0
        .iter()
        .map(|(id, b)| (id.0, b.get(0).map_or(-1, |r| r.time())))
        .collect()
}

#[test]
fn failed_write_refuses_more_until_rotate() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut w = WalWriter::open(tmp.path(), WalOptions::default()).expect("open");
    w.append(&batch(1, 1)).expect("append");
    w.faults.write = true;
    assert!(w.append(&batch(2, 1)).is_err());
    assert!(
        w.append(&batch(3, 1)).is_err(),
        "appends after a failed write"
    );
    assert!(w.sync().is_err(), "sync after a failed write");
    assert!(format!("{w:?}").contains("WriteFailed"));
    // Rotation syncs what was whole (batch 1) and moves on.
    assert_eq!(w.rotate().expect("rotate"), SegmentId(1));
    w.append(&batch(4, 1)).expect("append");
    w.sync().expect("sync");
    assert_eq!(ids_and_times(tmp.path()), [(1, 1000), (2, 4000)]);
}

#[test]
fn failed_sync_abandons_the_segment_on_rotate() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut w = WalWriter::open(tmp.path(), WalOptions::default()).expect("open");
    w.append(&batch(1, 1)).expect("append");
    w.sync().expect("sync");
    w.append(&batch(2, 1)).expect("append");
    w.faults.sync = true;
    assert!(w.sync().is_err());
    assert!(
        w.append(&batch(3, 1)).is_err(),
        "appends after a failed sync"
    );
    assert!(w.sync().is_err(), "a retried sync proves nothing");
    // Rotation must not fsync the abandoned segment: the armed fault stays armed.
    w.faults.sync = true;
    assert_eq!(w.rotate().expect("rotate"), SegmentId(1));
    assert!(w.faults.sync);
    w.faults.sync = false;
    w.append(&batch(4, 1)).expect("append");
    w.sync().expect("sync");
    let got = ids_and_times(tmp.path());
    assert_eq!(got.first(), Some(&(1, 1000)));
    assert_eq!(got.last(), Some(&(2, 4000)));
}

#[test]
fn rotate_after_failed_write_fails_if_its_sync_fails() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut w = WalWriter::open(tmp.path(), WalOptions::default()).expect("open");
    w.append(&batch(1, 1)).expect("append");
    w.faults.write = true;
    assert!(w.append(&batch(2, 1)).is_err());
    w.faults.sync = true;
    assert!(
        w.rotate().is_err(),
        "batch 1 is not durable: rotate must say so"
    );
    assert_eq!(w.current_segment(), SegmentId(1));
    assert!(w.append(&batch(3, 1)).is_err());
    assert_eq!(w.rotate().expect("rotate"), SegmentId(1));
    w.append(&batch(4, 1)).expect("append");
    w.sync().expect("sync");
    assert_eq!(w.current_segment(), SegmentId(2));
}

#[test]
fn failed_segment_creation_keeps_the_old_segment() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut w = WalWriter::open(tmp.path(), WalOptions::default()).expect("open");
    w.append(&batch(1, 1)).expect("append");
    w.faults.create = true;
    assert!(w.rotate().is_err());
    assert_eq!(w.current_segment(), SegmentId(1));
    w.append(&batch(2, 1)).expect("append");
    w.sync().expect("sync");
    assert_eq!(ids_and_times(tmp.path()), [(1, 1000), (1, 2000)]);
}

#[test]
fn automatic_rotation_defers_the_old_segments_sync() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let opts = WalOptions {
        segment_max_bytes: 0,
    };
    let mut w = WalWriter::open(tmp.path(), opts).expect("open");
    w.append(&batch(1, 1)).expect("append");
    // A failed rotation fails only this append; the writer stays healthy.
    w.faults.create = true;
    assert!(w.append(&batch(2, 1)).is_err());
    assert_eq!(w.current_segment(), SegmentId(1));
    // The rotation itself does not fsync, so a sync failure surfaces at `sync`.
    w.faults.sync = true;
    w.append(&batch(3, 1))
        .expect("append rotates without syncing");
    assert_eq!(w.current_segment(), SegmentId(2));
    assert_eq!(w.unsynced.len(), 1);
    assert!(w.sync().is_err());
    assert_eq!(w.rotate().expect("rotate"), SegmentId(2));
    assert!(w.unsynced.is_empty());

    w.append(&batch(4, 1)).expect("append");
    w.append(&batch(5, 1)).expect("append");
    assert_eq!(w.unsynced.len(), 1);
    w.sync().expect("sync");
    assert!(w.unsynced.is_empty() && !w.dirty);
    assert_eq!(
        ids_and_times(tmp.path()),
        [(1, 1000), (2, 3000), (3, 4000), (4, 5000)]
    );
}
