//! Writer, rotation, removal and replay tests, including torn and corrupt segments.

use std::fs::{self, OpenOptions};
use std::path::Path;

use super::segment::{HEADER_LEN, RECORD_HEADER_LEN, segment_path};
use super::*;
use crate::batch::{FieldValue, WriteBatch};

/// A batch with `rows` rows whose times start at `seed * 1000`, so batches are distinguishable.
pub(super) fn batch(seed: i64, rows: usize) -> WriteBatch {
    let mut b = WriteBatch::default();
    for i in 0..rows {
        let mut r = b.row("gpu", seed * 1000 + i as i64);
        r.tag("gpu_uuid", &format!("GPU-{seed}"))
            .tag("host", "rig-ü")
            .field("utilization", FieldValue::F64(seed as f64 + 0.5))
            .field("model", FieldValue::Str("H100"));
        r.finish(i as u32 + 1).expect("valid row");
    }
    b
}

pub(super) fn replay_all(
    dir: &Path,
    after: Option<SegmentId>,
) -> (Vec<(SegmentId, WriteBatch)>, ReplayStats) {
    let mut got = Vec::new();
    let stats = replay(dir, after, |id, b| got.push((id, b))).expect("replay");
    (got, stats)
}

fn small() -> WalOptions {
    WalOptions {
        segment_max_bytes: 1 << 20,
    }
}

#[test]
fn append_sync_replay_in_order() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("wal");
    let mut w = WalWriter::open(&dir, WalOptions::default()).expect("open");
    assert_eq!(w.current_segment(), SegmentId(1));
    assert_eq!(w.dir(), dir);
    let batches: Vec<_> = (0..50).map(|i| batch(i, 1 + i as usize % 4)).collect();
    let mut bytes = HEADER_LEN as u64;
    for b in &batches {
        bytes += w.append(b).expect("append");
    }
    w.sync().expect("sync");
    w.sync().expect("second sync is a no-op");
    assert_eq!(
        fs::metadata(segment_path(&dir, SegmentId(1)))
            .expect("stat")
            .len(),
        bytes
    );

    let (got, stats) = replay_all(&dir, None);
    assert_eq!(got.len(), batches.len());
    for ((id, b), want) in got.iter().zip(&batches) {
        assert_eq!(*id, SegmentId(1));
        assert_eq!(b, want);
    }
    let rows: usize = batches.iter().map(WriteBatch::len).sum();
    assert_eq!(
        stats,
        ReplayStats {
            segments: 1,
            records: 50,
            rows,
            corrupt_segments: 0,
            skipped_bytes: 0
        }
    );
}

#[test]
fn empty_batch_round_trips() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut w = WalWriter::open(tmp.path(), small()).expect("open");
    w.append(&WriteBatch::default()).expect("append");
    w.sync().expect("sync");
    let (got, stats) = replay_all(tmp.path(), None);
    assert_eq!(got, vec![(SegmentId(1), WriteBatch::default())]);
    assert_eq!(stats.corrupt_segments, 0);
}

#[test]
fn missing_dir_replays_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("nope");
    assert_eq!(replay_all(&dir, None).1, ReplayStats::default());
    assert_eq!(list_segments(&dir).expect("list"), vec![]);
    assert_eq!(remove_segments_through(&dir, SegmentId(9)).expect("rm"), 0);
}

#[test]
fn rotate_remove_and_replay_after() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    fs::write(dir.join("notes.txt"), "not a segment").expect("write");
    let mut w = WalWriter::open(dir, small()).expect("open");
    w.append(&batch(1, 2)).expect("append");
    w.append(&batch(2, 1)).expect("append");
    assert_eq!(w.rotate().expect("rotate"), SegmentId(1));
    assert_eq!(w.current_segment(), SegmentId(2));
    w.append(&batch(3, 1)).expect("append");
    assert_eq!(w.rotate().expect("rotate"), SegmentId(2));
    w.append(&batch(4, 1)).expect("append");
    w.sync().expect("sync");
    let ids = [SegmentId(1), SegmentId(2), SegmentId(3)];
    assert_eq!(list_segments(dir).expect("list"), ids);

    let (got, _) = replay_all(dir, None);
    let seen: Vec<_> = got
        .iter()
        .map(|(id, b)| (id.0, b.get(0).map(|r| r.time())))
        .collect();
    assert_eq!(
        seen,
        [
            (1, Some(1000)),
            (1, Some(2000)),
            (2, Some(3000)),
            (3, Some(4000))
        ]
    );

    let (got, stats) = replay_all(dir, Some(SegmentId(1)));
    assert_eq!(got.iter().map(|(id, _)| id.0).collect::<Vec<_>>(), [2, 3]);
    assert_eq!(stats.segments, 2);

    assert_eq!(remove_segments_through(dir, SegmentId(2)).expect("rm"), 2);
    assert_eq!(remove_segments_through(dir, SegmentId(2)).expect("rm"), 0);
    assert_eq!(list_segments(dir).expect("list"), [SegmentId(3)]);
    assert!(dir.join("notes.txt").exists());
    let (got, _) = replay_all(dir, None);
    assert_eq!(got, vec![(SegmentId(3), batch(4, 1))]);

    // The writer still works on its (kept) current segment.
    w.append(&batch(5, 1)).expect("append");
    w.sync().expect("sync");
    assert_eq!(replay_all(dir, None).1.records, 2);
}

#[test]
fn rotates_automatically_past_segment_max_bytes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let opts = WalOptions {
        segment_max_bytes: 1000,
    };
    let mut w = WalWriter::open(tmp.path(), opts).expect("open");
    let b = batch(1, 3);
    let size = w.append(&b).expect("append");
    assert!(
        size < 1000,
        "test batch should be smaller than a segment: {size}"
    );
    let per_segment = (1000 - HEADER_LEN as u64) / size + 1;
    for _ in 1..3 * per_segment {
        w.append(&b).expect("append");
    }
    w.sync().expect("sync");
    assert_eq!(w.current_segment(), SegmentId(3));
    let ids = list_segments(tmp.path()).expect("list");
    assert_eq!(ids, [SegmentId(1), SegmentId(2), SegmentId(3)]);
    for id in &ids[..2] {
        let len = fs::metadata(segment_path(tmp.path(), *id))
            .expect("stat")
            .len();
        assert!(
            len > 1000 && len <= 1000 + size,
            "segment {id} has {len} bytes"
        );
    }
    let (got, stats) = replay_all(tmp.path(), None);
    assert_eq!(got.len() as u64, 3 * per_segment);
    assert!(got.iter().all(|(_, g)| *g == b));
    assert_eq!(stats.segments, 3);

    // A single record larger than the limit still goes in (alone in its segment).
    let mut w = WalWriter::open(
        tmp.path(),
        WalOptions {
            segment_max_bytes: 0,
        },
    )
    .expect("open");
    w.append(&batch(9, 100)).expect("append");
    w.append(&batch(10, 100)).expect("append");
    assert_eq!(w.rotate().expect("rotate"), SegmentId(5));
}

#[test]
fn open_starts_past_the_highest_existing_segment() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    {
        let mut w = WalWriter::open(dir, small()).expect("open");
        w.append(&batch(1, 1)).expect("append");
        w.sync().expect("sync");
    }
    // A segment left by someone else (or a much older run) with a high id.
    fs::copy(
        segment_path(dir, SegmentId(1)),
        segment_path(dir, SegmentId(41)),
    )
    .expect("copy");
    let mut w = WalWriter::open(dir, small()).expect("open");
    assert_eq!(w.current_segment(), SegmentId(42));
    w.append(&batch(2, 1)).expect("append");
    w.sync().expect("sync");
    drop(w);
    let w = WalWriter::open(dir, small()).expect("open");
    assert_eq!(w.current_segment(), SegmentId(43));
    // Segment 41 holds a header naming segment 1: it is skipped, the others replay.
    let (got, stats) = replay_all(dir, None);
    assert_eq!(got.iter().map(|(id, _)| id.0).collect::<Vec<_>>(), [1, 42]);
    assert_eq!((stats.segments, stats.corrupt_segments), (4, 1));
}

/// Writes `n` one-row batches to segment 1, rotates, writes one more to segment 2. Returns
/// the byte offset at which each record of segment 1 starts.
fn two_segments(dir: &Path, n: i64) -> Vec<u64> {
    let mut w = WalWriter::open(dir, small()).expect("open");
    let mut offsets = Vec::new();
    let mut at = HEADER_LEN as u64;
    for i in 0..n {
        offsets.push(at);
        at += w.append(&batch(i, 1)).expect("append");
    }
    w.rotate().expect("rotate");
    w.append(&batch(100, 1)).expect("append");
    w.sync().expect("sync");
    offsets
}

#[test]
fn torn_tail_keeps_every_record_before_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    two_segments(dir, 5);
    // Tear the *last* segment in the middle of its only record...
    let last = segment_path(dir, SegmentId(2));
    let len = fs::metadata(&last).expect("stat").len();
    let file = OpenOptions::new().write(true).open(&last).expect("open");
    file.set_len(len - 3).expect("truncate");
    drop(file);
    let (got, stats) = replay_all(dir, None);
    assert_eq!(got.len(), 5);
    assert_eq!(stats.corrupt_segments, 1);
    assert_eq!(stats.skipped_bytes, len - 3 - HEADER_LEN as u64);

    // ...and every possible cut of the first segment: never a panic, never a lost record
    // before the cut.
    let first = segment_path(dir, SegmentId(1));
    let full = fs::read(&first).expect("read");
    let ends = record_ends(&full);
    for cut in 0..full.len() {
        fs::write(&first, &full[..cut]).expect("write");
        let (got, stats) = replay_all(dir, None);
        let intact = ends.iter().filter(|&&end| end <= cut as u64).count();
        assert_eq!(got.len(), intact, "cut at {cut}");
        let clean = cut == HEADER_LEN || ends.contains(&(cut as u64));
        assert_eq!(
            stats.corrupt_segments,
            if clean { 1 } else { 2 },
            "cut at {cut}"
        );
    }
}

/// End offsets of the records in a segment file's bytes (header excluded).
fn record_ends(bytes: &[u8]) -> Vec<u64> {
    let mut ends = Vec::new();
    let mut at = HEADER_LEN;
    while at + RECORD_HEADER_LEN <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        at += RECORD_HEADER_LEN + len;
        ends.push(at as u64);
    }
    ends
}

#[test]
fn flipped_byte_is_caught_by_the_checksum() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let offsets = two_segments(dir, 5);
    let first = segment_path(dir, SegmentId(1));
    let mut bytes = fs::read(&first).expect("read");
    let bad = offsets[3] as usize + RECORD_HEADER_LEN + 5;
    bytes[bad] ^= 0x40;
    fs::write(&first, &bytes).expect("write");

    let (got, stats) = replay_all(dir, None);
    let times: Vec<_> = got
        .iter()
        .map(|(id, b)| (id.0, b.get(0).expect("row").time()))
        .collect();
    assert_eq!(times, [(1, 0), (1, 1000), (1, 2000), (2, 100_000)]);
    assert_eq!(stats.corrupt_segments, 1);
    assert_eq!(stats.skipped_bytes, bytes.len() as u64 - offsets[3]);
    assert_eq!(stats.records, 4);
}

#[test]
fn bad_headers_skip_only_their_segment() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    two_segments(dir, 2);
    let first = segment_path(dir, SegmentId(1));
    let good = fs::read(&first).expect("read");
    let mut cases: Vec<Vec<u8>> = Vec::new();
    let mut v = good.clone();
    v[0] = b'X'; // magic
    cases.push(v);
    let mut v = good.clone();
    v[8] = 2; // version
    cases.push(v);
    let mut v = good.clone();
    v[10] = 9; // id
    cases.push(v);
    cases.push(Vec::new());
    cases.push(good[..HEADER_LEN - 1].to_vec());
    for case in cases {
        fs::write(&first, &case).expect("write");
        let (got, stats) = replay_all(dir, None);
        assert_eq!(got, vec![(SegmentId(2), batch(100, 1))]);
        assert_eq!((stats.segments, stats.corrupt_segments), (2, 1));
        assert_eq!(stats.skipped_bytes, case.len() as u64);
    }
}

#[test]
fn zeroed_tail_and_garbage_length_are_corruption() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    two_segments(dir, 3);
    let first = segment_path(dir, SegmentId(1));
    let good = fs::read(&first).expect("read");
    for tail in [vec![0u8; 64], vec![0xff; 64], vec![0u8; 5]] {
        let mut v = good.clone();
        v.extend_from_slice(&tail);
        fs::write(&first, &v).expect("write");
        let (got, stats) = replay_all(dir, None);
        assert_eq!(got.len(), 4);
        assert_eq!(stats.corrupt_segments, 1);
        assert_eq!(stats.skipped_bytes, tail.len() as u64);
    }
}
