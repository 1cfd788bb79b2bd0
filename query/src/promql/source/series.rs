//! Grouping scanned rows into series.

use std::collections::HashMap;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type, TimestampNanosecondType};
use rigwatch_promql::value::Sample;

use super::FetchError;

/// Groups rows into series by their tag values without touching strings per row: each tag
/// column is dictionary-encoded (as the store keeps tags), each distinct value is interned
/// once per batch into a small id, and a row's series is found by its tuple of ids. Files
/// are sorted by series, so rows come in runs of one series: a run is looked up once and
/// its samples are appended column by column.
pub(super) struct SeriesAccumulator {
    ntags: usize,
    nmetrics: usize,
    /// Per tag column: value -> id (0 = absent or empty).
    interned: Vec<HashMap<String, u32>>,
    /// Per tag column: id -> value.
    names: Vec<Vec<Option<String>>>,
    index: HashMap<Box<[u32]>, usize>,
    series: Vec<TagSeries>,
    pub samples: usize,
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
            samples: 0,
        }
    }

    /// The dictionary keys of `col` per row (-1 where null) and, per key, the interned
    /// id of its value (0 = absent or empty). Rows are compared by key, and a key is
    /// turned into an id only where a run of one series starts.
    fn keys(&mut self, t: usize, col: &ArrayRef) -> Result<(Vec<i32>, Vec<u32>), FetchError> {
        let dict_type = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
        let col = if col.data_type() == &dict_type {
            col.clone()
        } else {
            cast(col, &dict_type)?
        };
        let dict = col.as_dictionary::<arrow::datatypes::Int32Type>();
        let values = cast(dict.values(), &DataType::Utf8)?;
        let values = values.as_string::<i32>();
        // Dictionary key -> id, resolved once per distinct value of this batch.
        let (interned, names) = (&mut self.interned[t], &mut self.names[t]);
        let by_key: Vec<u32> = (0..values.len())
            .map(|k| {
                if !values.is_valid(k) || values.value(k).is_empty() {
                    return 0;
                }
                let v = values.value(k);
                match interned.get(v) {
                    Some(&id) => id,
                    None => {
                        let id = names.len() as u32;
                        names.push(Some(v.to_string()));
                        interned.insert(v.to_string(), id);
                        id
                    }
                }
            })
            .collect();
        let keys = dict.keys();
        let keys: Vec<i32> = if keys.null_count() == 0 {
            keys.values().to_vec()
        } else {
            (0..keys.len())
                .map(|r| if keys.is_valid(r) { keys.value(r) } else { -1 })
                .collect()
        };
        Ok((keys, by_key))
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
        let tags: Vec<(Vec<i32>, Vec<u32>)> = (0..self.ntags)
            .map(|t| self.keys(t, batch.column(t)))
            .collect::<Result<_, _>>()?;
        let values: Vec<ArrayRef> = (0..self.nmetrics)
            .map(|i| cast(batch.column(self.ntags + i), &DataType::Float64))
            .collect::<Result<_, _>>()?;
        let values: Vec<&arrow::array::Float64Array> = values
            .iter()
            .map(|c| c.as_primitive::<Float64Type>())
            .collect();
        let time = batch.column(self.ntags + self.nmetrics);
        let time = time.as_primitive::<TimestampNanosecondType>().values();
        let mut key: Vec<u32> = vec![0; self.ntags];
        let mut start = 0;
        while start < n {
            // The run of rows with the same tags as row `start`.
            let mut end = start + 1;
            while end < n && tags.iter().all(|(k, _)| k[end] == k[start]) {
                end += 1;
            }
            for (id, (keys, by_key)) in key.iter_mut().zip(&tags) {
                let k = keys[start];
                *id = if k < 0 { 0 } else { by_key[k as usize] };
            }
            let id = self.series_id(&key);
            let per_metric = &mut self.series[id].1;
            for (samples, col) in per_metric.iter_mut().zip(&values) {
                let before = samples.len();
                let vals = &col.values()[start..end];
                let times = &time[start..end];
                if col.null_count() == 0 {
                    samples.extend(times.iter().zip(vals).map(|(&t, &v)| Sample {
                        t: t.div_euclid(1_000_000),
                        v,
                    }));
                } else {
                    samples.extend((start..end).filter(|&r| col.is_valid(r)).map(|r| Sample {
                        t: time[r].div_euclid(1_000_000),
                        v: col.value(r),
                    }));
                }
                self.samples += samples.len() - before;
            }
            start = end;
        }
        Ok(())
    }

    /// Every tag set with its samples per metric, each sorted by time.
    pub fn finish(mut self) -> Vec<TagSeries> {
        for (_, per_metric) in &mut self.series {
            for samples in per_metric {
                sort_runs(samples);
            }
        }
        self.series
    }
}

/// Sorts `samples` by time. Each file and buffer yields a series' rows in time order, but
/// files are scanned in parallel, so the samples arrive as a few sorted runs, usually one
/// per time partition and not overlapping: those are put in order with one copy. Runs
/// that overlap go to the stable sort, which merges runs in about linear time.
fn sort_runs(samples: &mut Vec<Sample>) {
    if samples.is_sorted_by_key(|s| s.t) {
        return;
    }
    let mut runs: Vec<(usize, usize)> = Vec::new();
    let mut start = 0;
    for i in 1..=samples.len() {
        if i == samples.len() || samples[i].t < samples[i - 1].t {
            runs.push((start, i));
            start = i;
        }
    }
    runs.sort_unstable_by_key(|&(a, _)| samples[a].t);
    let disjoint = runs
        .windows(2)
        .all(|w| samples[w[0].1 - 1].t < samples[w[1].0].t);
    if !disjoint {
        samples.sort_by_key(|s| s.t);
        return;
    }
    let mut out = Vec::with_capacity(samples.len());
    for (a, b) in runs {
        out.extend_from_slice(&samples[a..b]);
    }
    *samples = out;
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
    fn sort_runs_orders_disjoint_and_overlapping_runs() {
        let mk =
            |ts: &[i64]| -> Vec<Sample> { ts.iter().map(|&t| Sample { t, v: t as f64 }).collect() };
        for ts in [
            &[5, 6, 7, 1, 2, 3, 10, 11][..],
            &[1, 2, 3],
            &[3, 2, 1],
            &[1, 5, 2, 6, 3, 7],
            &[],
        ] {
            let mut got = mk(ts);
            sort_runs(&mut got);
            let mut want = mk(ts);
            want.sort_by_key(|s| s.t);
            assert_eq!(got, want, "{ts:?}");
        }
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
            .finish()
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
}
