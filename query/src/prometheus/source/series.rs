//! Grouping scanned rows into series.

use std::collections::HashMap;

use arrow::array::{Array, ArrayRef, AsArray, Float64Array, RecordBatch};
use arrow::buffer::ScalarBuffer;
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type, Int32Type, TimestampNanosecondType};
use rigwatch_promql::value::Sample;

use super::FetchError;

/// Groups rows into series by their tag values without touching strings per row, and
/// builds each series' samples with one allocation and one copy.
///
/// - Each tag column is dictionary-encoded (as the store keeps tags). Files are sorted by
///   series, so rows come in runs of one series: a run starts where any tag column's key
///   changes, found with one pass over each column's keys. Only a run's first row turns
///   its keys into interned ids (one string lookup per distinct key and batch).
/// - A run adds a *segment* (batch, rows) to its series, per metric: no sample is copied
///   while scanning. `finish` orders each series' segments by time (files are scanned in
///   parallel, so they arrive interleaved), sizes the sample vector exactly, and copies
///   each segment once. Only segments that overlap in time (a series written twice over
///   the same span in one partition's buffer and file, say) cost a sort.
pub(super) struct SeriesAccumulator {
    ntags: usize,
    nmetrics: usize,
    /// Per tag column: value -> id (0 = absent or empty).
    interned: Vec<HashMap<String, u32>>,
    /// Per tag column: id -> value.
    names: Vec<Vec<Option<String>>>,
    index: HashMap<Box<[u32]>, usize>,
    /// Per series: its tag ids' values and, per metric, its segments.
    series: Vec<(Vec<Option<String>>, Vec<Vec<Segment>>)>,
    /// The scanned columns the segments point into: per batch, its metrics and times.
    batches: Vec<(Vec<Float64Array>, ScalarBuffer<i64>)>,
    pub samples: usize,
}

/// Rows `start..end` of batch `batch`, all of one series.
#[derive(Debug, Clone, Copy)]
struct Segment {
    batch: u32,
    start: u32,
    end: u32,
    /// Time (ns) of the first row, to order segments.
    first_ns: i64,
}

/// One tag set's values (`None` where the tag is absent) and its samples per metric.
pub(super) type TagSeries = (Vec<Option<String>>, Vec<Vec<Sample>>);

impl SeriesAccumulator {
    pub fn new(ntags: usize, nmetrics: usize) -> Self {
        Self {
            ntags,
            nmetrics,
            interned: vec![HashMap::new(); ntags],
            names: vec![vec![None]; ntags],
            index: HashMap::new(),
            series: Vec::new(),
            batches: Vec::new(),
            samples: 0,
        }
    }

    /// The interned id (0 = absent or empty) of the value under dictionary key `key` of
    /// tag column `t`, whose values are `values`; `cache` remembers this batch's answers.
    fn intern(
        &mut self,
        t: usize,
        values: &arrow::array::StringArray,
        key: Option<i32>,
        cache: &mut [u32],
    ) -> u32 {
        let Some(k) = key.map(|k| k as usize) else {
            return 0;
        };
        if let Some(&id) = cache.get(k)
            && id != u32::MAX
        {
            return id;
        }
        let id = if k >= values.len() || !values.is_valid(k) || values.value(k).is_empty() {
            0
        } else {
            let v = values.value(k);
            let (interned, names) = (&mut self.interned[t], &mut self.names[t]);
            match interned.get(v) {
                Some(&id) => id,
                None => {
                    let id = names.len() as u32;
                    names.push(Some(v.to_string()));
                    interned.insert(v.to_string(), id);
                    id
                }
            }
        };
        if let Some(slot) = cache.get_mut(k) {
            *slot = id;
        }
        id
    }

    /// The series of the tag ids in `key`, created on first sight.
    fn series_id(&mut self, key: &[u32]) -> usize {
        if let Some(&id) = self.index.get(key) {
            return id;
        }
        let id = self.series.len();
        let tag_values = key
            .iter()
            .enumerate()
            .map(|(t, &i)| self.names[t][i as usize].clone())
            .collect();
        self.series
            .push((tag_values, vec![Vec::new(); self.nmetrics]));
        self.index.insert(key.into(), id);
        id
    }

    /// Adds a batch whose columns are the tags, the metrics and `time`, in that order.
    pub fn push(&mut self, batch: &RecordBatch) -> Result<(), FetchError> {
        let n = batch.num_rows();
        if n == 0 {
            return Ok(());
        }
        let dict_type = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
        let mut tags: Vec<(ArrayRef, ArrayRef)> = Vec::with_capacity(self.ntags);
        for t in 0..self.ntags {
            let col = batch.column(t);
            let col = if col.data_type() == &dict_type {
                col.clone()
            } else {
                cast(col, &dict_type)?
            };
            let values = cast(col.as_dictionary::<Int32Type>().values(), &DataType::Utf8)?;
            tags.push((col, values));
        }
        // Run starts: rows where some tag column's key (or its nullness) changes.
        let mut starts = vec![false; n];
        starts[0] = true;
        // Columns that share one key buffer (an indexed file's scan keys every tag column by
        // the row's series) change at the same rows: each buffer is compared once.
        let mut compared: Vec<*const i32> = Vec::with_capacity(self.ntags);
        for (col, _) in &tags {
            let keys = col.as_dictionary::<Int32Type>().keys();
            let k = keys.values();
            if keys.nulls().is_none() {
                if compared.contains(&k.as_ptr()) {
                    continue;
                }
                compared.push(k.as_ptr());
            }
            match keys.nulls() {
                None => {
                    for i in 1..n {
                        starts[i] |= k[i] != k[i - 1];
                    }
                }
                Some(nulls) => {
                    for i in 1..n {
                        let (a, b) = (nulls.is_valid(i - 1), nulls.is_valid(i));
                        starts[i] |= a != b || (b && k[i] != k[i - 1]);
                    }
                }
            }
        }
        let values: Vec<Float64Array> = (0..self.nmetrics)
            .map(|i| {
                cast(batch.column(self.ntags + i), &DataType::Float64)
                    .map(|c| c.as_primitive::<Float64Type>().clone())
            })
            .collect::<Result<_, _>>()?;
        let time = batch
            .column(self.ntags + self.nmetrics)
            .as_primitive::<TimestampNanosecondType>()
            .values()
            .clone();
        let b = self.batches.len() as u32;
        let mut caches: Vec<Vec<u32>> = tags.iter().map(|(_, v)| vec![u32::MAX; v.len()]).collect();
        let mut key: Vec<u32> = vec![0; self.ntags];
        let mut start = 0;
        while start < n {
            let mut end = start + 1;
            while end < n && !starts[end] {
                end += 1;
            }
            for (t, (col, vals)) in tags.iter().enumerate() {
                let keys = col.as_dictionary::<Int32Type>().keys();
                let k = keys.is_valid(start).then(|| keys.value(start));
                key[t] = self.intern(t, vals.as_string::<i32>(), k, &mut caches[t]);
            }
            let id = self.series_id(&key);
            for (m, col) in values.iter().enumerate() {
                let present = match col.nulls() {
                    None => end - start,
                    Some(nulls) => (start..end).filter(|&r| nulls.is_valid(r)).count(),
                };
                if present == 0 {
                    continue;
                }
                self.samples += present;
                self.series[id].1[m].push(Segment {
                    batch: b,
                    start: start as u32,
                    end: end as u32,
                    first_ns: time[start],
                });
            }
            start = end;
        }
        self.batches.push((values, time));
        Ok(())
    }

    /// Every tag set with its samples per metric, each sorted by time. With a `grid`, only
    /// the samples its evaluation times read are kept ([`Grid::thin`]).
    pub fn finish(self, grid: Option<Grid>) -> Vec<TagSeries> {
        let batches = self.batches;
        let samples_of = |m: usize, s: &Segment| {
            let (cols, time) = &batches[s.batch as usize];
            let col = &cols[m];
            let ms = |t: i64| t.div_euclid(1_000_000);
            (s.start as usize..s.end as usize)
                .filter(move |&r| col.is_valid(r))
                .map(move |r| Sample {
                    t: ms(time[r]),
                    v: col.value(r),
                })
        };
        let last_ns = |s: &Segment| batches[s.batch as usize].1[s.end as usize - 1];
        self.series
            .into_iter()
            .map(|(tags, per_metric)| {
                let samples = per_metric
                    .into_iter()
                    .enumerate()
                    .map(|(m, mut segs)| {
                        segs.sort_unstable_by_key(|s| s.first_ns);
                        let in_order = segs.windows(2).all(|w| last_ns(&w[0]) < w[1].first_ns);
                        if let (Some(grid), true) = (grid, in_order) {
                            // Thinned while copied: the skipped samples are never stored.
                            let dense = segs
                                .iter()
                                .all(|s| batches[s.batch as usize].0[m].nulls().is_none());
                            if dense {
                                let runs: Vec<(&[i64], &[f64])> = segs
                                    .iter()
                                    .map(|s| {
                                        let (cols, time) = &batches[s.batch as usize];
                                        let (a, b) = (s.start as usize, s.end as usize);
                                        (&time[a..b], &cols[m].values()[a..b])
                                    })
                                    .collect();
                                return grid.thin_runs(&runs);
                            }
                            return grid.thin(segs.iter().flat_map(|s| samples_of(m, s)));
                        }
                        let total: usize = segs.iter().map(|s| (s.end - s.start) as usize).sum();
                        let mut out = Vec::with_capacity(total);
                        for s in &segs {
                            let (cols, time) = &batches[s.batch as usize];
                            let col = &cols[m];
                            let (a, b) = (s.start as usize, s.end as usize);
                            match col.nulls() {
                                // The common case, without a validity check per row.
                                None => out.extend(time[a..b].iter().zip(&col.values()[a..b]).map(
                                    |(&t, &v)| Sample {
                                        t: t.div_euclid(1_000_000),
                                        v,
                                    },
                                )),
                                Some(_) => out.extend(samples_of(m, s)),
                            }
                        }
                        if !out.is_sorted_by_key(|s| s.t) {
                            out.sort_by_key(|s| s.t);
                        }
                        match grid {
                            Some(grid) => grid.thin(out.into_iter()),
                            None => out,
                        }
                    })
                    .collect();
                (tags, samples)
            })
            .collect()
    }
}

/// The times an instant selector is evaluated at: `first + k * step` up to `last` (`first`
/// alone when `step` is 0), as [`rigwatch_promql::eval::Reads::Last`] describes them. At
/// each, the evaluator reads only the last sample at or before it (if within the lookback
/// and not a staleness marker).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Grid {
    pub first: i64,
    pub step: i64,
    pub last: i64,
}

impl Grid {
    /// The first evaluation time at or after `t`, if any.
    fn at_or_after(&self, t: i64) -> Option<i64> {
        let at = if t <= self.first {
            self.first
        } else if self.step <= 0 {
            return None;
        } else {
            // Called once per evaluation time reached, so 128 bits cost nothing and no
            // time overflows.
            let (first, step) = (i128::from(self.first), i128::from(self.step));
            let k = (i128::from(t) - first - 1) / step + 1;
            i64::try_from(first + k * step).ok()?
        };
        (at <= self.last).then_some(at)
    }

    /// The first evaluation time at or after `t`, given `prev`, the one for an earlier
    /// sample: mostly the same or the next (no division), since steps are wider than the
    /// gaps between samples.
    fn next_at(&self, prev: Option<i64>, t: i64) -> Option<i64> {
        match prev {
            Some(p) if t <= p => Some(p),
            Some(p) if self.step > 0 && t <= p.saturating_add(self.step) => {
                let at = p + self.step;
                (at <= self.last).then_some(at)
            }
            _ => self.at_or_after(t),
        }
    }

    /// Of `samples` (sorted by time), those that some evaluation time reads: each sample
    /// whose next sample comes after the first evaluation time at or after it. The
    /// evaluator's answer from them is its answer from all of them, since a step never
    /// reads any other sample: a 1 m step over 10 s samples keeps one in six.
    pub fn thin(&self, samples: impl Iterator<Item = Sample>) -> Vec<Sample> {
        let mut out = Vec::new();
        let mut it = samples.peekable();
        let mut at = None;
        while let Some(s) = it.next() {
            at = self.next_at(at, s.t);
            // Past the last evaluation time: so is every later sample.
            let Some(a) = at else { break };
            if it.peek().is_none_or(|n| n.t > a) {
                out.push(s);
            }
        }
        out
    }

    /// [`Grid::thin`] over runs of (nanosecond times, values), one after another in time
    /// and without gaps in the values: each evaluation time's sample is found by binary
    /// search, without visiting the samples between.
    pub fn thin_runs(&self, runs: &[(&[i64], &[f64])]) -> Vec<Sample> {
        let ms = |ns: i64| ns.div_euclid(1_000_000);
        // The first nanosecond whose millisecond is after `at`.
        let after = |at: i64| at.saturating_add(1).saturating_mul(1_000_000);
        // Room for one sample per evaluation time, or per sample where there are fewer.
        let rows: usize = runs.iter().map(|r| r.0.len()).sum();
        let times_at = match self.step {
            s if s > 0 => (self.last.saturating_sub(self.first) / s).saturating_add(1),
            _ => 1,
        };
        let mut out = Vec::with_capacity(rows.min(usize::try_from(times_at).unwrap_or(rows)));
        let mut at: Option<i64> = None;
        // The last sample of the previous run, the latest for evaluation time `at` so far:
        // kept unless the next run starts at or before `at`.
        let mut pending: Option<Sample> = None;
        for &(times, values) in runs {
            let mut i = 0;
            while i < times.len() {
                let ns = times[i];
                if let Some(p) = pending.take()
                    && at.is_some_and(|a| ns >= after(a))
                {
                    out.push(p);
                }
                at = self.next_at(at, ms(ns));
                let Some(a) = at else {
                    return out;
                };
                let end = after(a);
                // Steps are a few samples apart: look at the next few, then search.
                let mut j = i + 1;
                while j < times.len() && j < i + 8 && times[j] < end {
                    j += 1;
                }
                if j == i + 8 {
                    j += times[j..].partition_point(|&x| x < end);
                }
                let last = Sample {
                    t: ms(times[j - 1]),
                    v: values[j - 1],
                };
                if j < times.len() {
                    out.push(last);
                } else {
                    pending = Some(last);
                }
                i = j;
            }
        }
        out.extend(pending);
        out
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{DictionaryArray, Float64Array, TimestampNanosecondArray};
    use arrow::datatypes::Int32Type;

    use super::*;

    fn batch(tags: &[Option<&str>], vals: &[Option<f64>], times_ms: &[i64]) -> RecordBatch {
        let tag: DictionaryArray<Int32Type> = tags.iter().copied().collect();
        let v = Float64Array::from(vals.to_vec());
        let t = TimestampNanosecondArray::from(
            times_ms.iter().map(|t| t * 1_000_000).collect::<Vec<_>>(),
        );
        RecordBatch::try_from_iter([
            ("gpu", Arc::new(tag) as ArrayRef),
            ("util", Arc::new(v) as ArrayRef),
            ("time", Arc::new(t) as ArrayRef),
        ])
        .unwrap()
    }

    #[test]
    fn segments_interleaved_across_batches_come_out_in_order() {
        // Two files scanned in parallel: batches of one series arrive interleaved, each
        // batch a sorted run; one batch also splits a file's rows for the series.
        let mut acc = SeriesAccumulator::new(1, 1);
        for times in [&[1, 2, 3][..], &[7, 8], &[4, 5, 6], &[10], &[9]] {
            let tags = vec![Some("a"); times.len()];
            let vals: Vec<Option<f64>> = times.iter().map(|&t| Some(t as f64)).collect();
            acc.push(&batch(&tags, &vals, times)).unwrap();
        }
        // Overlapping runs (the same span written twice) still come out sorted.
        acc.push(&batch(
            &[Some("a"), Some("a")],
            &[Some(2.5), Some(11.0)],
            &[2, 11],
        ))
        .unwrap();
        let got = acc.finish(None);
        let ts: Vec<i64> = got[0].1[0].iter().map(|s| s.t).collect();
        assert_eq!(ts, [1, 2, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
    }

    #[test]
    fn tag_columns_sharing_one_key_buffer_split_runs_where_the_keys_change() {
        // As an indexed file's scan builds them: one key per row (its series), and each tag
        // column's values per series.
        let keys = arrow::array::Int32Array::from(vec![0, 0, 1, 1, 2]);
        let gpu = DictionaryArray::<Int32Type>::try_new(
            keys.clone(),
            Arc::new(arrow::array::StringArray::from(vec!["g0", "g1", "g2"])),
        )
        .unwrap();
        let region = DictionaryArray::<Int32Type>::try_new(
            keys,
            Arc::new(arrow::array::StringArray::from(vec!["eu", "eu", "us"])),
        )
        .unwrap();
        let batch = RecordBatch::try_from_iter([
            ("gpu", Arc::new(gpu) as ArrayRef),
            ("region", Arc::new(region) as ArrayRef),
            (
                "util",
                Arc::new(Float64Array::from(vec![1.0, 2.0, 3.0, 4.0, 5.0])) as ArrayRef,
            ),
            (
                "time",
                Arc::new(TimestampNanosecondArray::from(vec![1, 2, 1, 2, 1])) as ArrayRef,
            ),
        ])
        .unwrap();
        let mut acc = SeriesAccumulator::new(2, 1);
        acc.push(&batch).unwrap();
        let got: Vec<(Vec<Option<String>>, usize)> = acc
            .finish(None)
            .into_iter()
            .map(|(tags, m)| (tags, m[0].len()))
            .collect();
        let s = |g: &str, r: &str| vec![Some(g.to_string()), Some(r.to_string())];
        assert_eq!(
            got,
            vec![(s("g0", "eu"), 2), (s("g1", "eu"), 2), (s("g2", "us"), 1)]
        );
    }

    #[test]
    fn runs_nulls_and_out_of_order_batches() {
        let mut acc = SeriesAccumulator::new(1, 1);
        acc.push(&batch(
            &[Some("a"), Some("a"), Some("b"), None, Some("a")],
            &[Some(1.0), None, Some(3.0), Some(4.0), Some(5.0)],
            &[30, 40, 30, 30, 50],
        ))
        .unwrap();
        acc.push(&batch(
            &[Some("a"), Some("b")],
            &[Some(0.5), None],
            &[10, 5],
        ))
        .unwrap();
        assert_eq!(acc.samples, 5);
        let got: Vec<(Option<String>, Vec<(i64, f64)>)> = acc
            .finish(None)
            .into_iter()
            .map(|(tags, m)| (tags[0].clone(), m[0].iter().map(|s| (s.t, s.v)).collect()))
            .collect();
        assert_eq!(
            got,
            vec![
                (Some("a".into()), vec![(10, 0.5), (30, 1.0), (50, 5.0)]),
                (Some("b".into()), vec![(30, 3.0)]),
                (None, vec![(30, 4.0)]),
            ]
        );
    }

    /// What an instant selector reads at `at`: the last sample at or before it.
    fn read_at(samples: &[Sample], at: i64) -> Option<(i64, u64)> {
        let i = samples.partition_point(|s| s.t <= at);
        (i > 0).then(|| (samples[i - 1].t, samples[i - 1].v.to_bits()))
    }

    proptest::proptest! {
        /// At every evaluation time, the thinned samples give the sample the whole series
        /// gives (so lookback and staleness decide the same), and nothing is kept that no
        /// time reads.
        #[test]
        fn thinning_keeps_what_every_step_reads(
            gaps in proptest::collection::vec(1i64..40, 0..60),
            first in -20i64..200,
            step in proptest::prop_oneof![proptest::strategy::Just(0i64), 1i64..50],
            steps in 0i64..30,
        ) {
            let mut t = 0;
            let samples: Vec<Sample> = gaps
                .iter()
                .map(|g| {
                    t += g;
                    Sample { t, v: t as f64 }
                })
                .collect();
            let grid = Grid { first, step, last: first + step * steps };
            let thin = grid.thin(samples.iter().copied());
            let times: Vec<i64> = (0..=if step == 0 { 0 } else { steps })
                .map(|k| first + k * step)
                .collect();
            for &at in &times {
                proptest::prop_assert_eq!(read_at(&thin, at), read_at(&samples, at), "at {}", at);
            }
            // The same, found by binary search over runs split anywhere.
            let ns: Vec<i64> = samples.iter().map(|s| s.t * 1_000_000 + 999_999).collect();
            let vs: Vec<f64> = samples.iter().map(|s| s.v).collect();
            let cut = (first.unsigned_abs() as usize) % (samples.len() + 1);
            let runs = [(&ns[..cut], &vs[..cut]), (&ns[cut..], &vs[cut..])];
            let runs: Vec<(&[i64], &[f64])> = runs.into_iter().filter(|r| !r.0.is_empty()).collect();
            let by_runs = grid.thin_runs(&runs);
            proptest::prop_assert_eq!(&by_runs, &thin);
            for s in &thin {
                proptest::prop_assert!(
                    times.iter().any(|&at| read_at(&samples, at) == Some((s.t, s.v.to_bits()))),
                    "{:?} is read by no step", s
                );
            }
        }
    }

    #[test]
    fn finish_thins_across_segments_and_batches() {
        // One series in three batches (10 s samples); steps every 60 s from 55 s to 175 s.
        let mut acc = SeriesAccumulator::new(1, 1);
        for times in [
            &[10_000, 20_000, 30_000, 40_000][..],
            &[50_000, 60_000, 70_000, 80_000],
            &[90_000, 100_000, 110_000, 120_000, 130_000],
        ] {
            let tags = vec![Some("a"); times.len()];
            let vals: Vec<Option<f64>> = times.iter().map(|&t| Some(t as f64)).collect();
            acc.push(&batch(&tags, &vals, times)).unwrap();
        }
        let grid = Grid {
            first: 55_000,
            step: 60_000,
            last: 175_000,
        };
        let got = acc.finish(Some(grid));
        let times: Vec<i64> = got[0].1[0].iter().map(|s| s.t).collect();
        // 55 s reads 50 s, 115 s reads 110 s, 175 s reads 130 s.
        assert_eq!(times, vec![50_000, 110_000, 130_000]);
    }
}
