//! [`ScopeCompactor`]: [`scope_batch`](super::scope_batch) for one stream, with the
//! rebuilt dictionaries cached from batch to batch.
//!
//! The batches of one Parquet column chunk share one dictionary values array (the same
//! buffers). Rebuilding the dictionary of every batch re-filters those values each time;
//! instead each projected column keeps, for the values array it last saw:
//!
//! ```text
//!   input values  [GPU-a1, GPU-b1, GPU-a2, GPU-b2]   held, and compared by buffer identity
//!   U (used)      [  1   ,   0   ,   1   ,   0   ]   keys of kept rows of earlier batches
//!   V (emitted)   [GPU-a1, GPU-a2]                   the input values filtered by U
//!   remap         [  0   ,   -   ,   1   ,   -   ]   input key -> key into V
//! ```
//!
//! A batch whose kept rows use only keys in U reuses V (the same `Arc`) and only remaps its
//! keys; one that uses another key adds it to U and rebuilds V; one with another values
//! array starts over from its own keys.
//!
//! # Why no other supplier's value leaves
//!
//! U only ever gains the keys of rows that passed the supplier filter, in this stream, of
//! batches whose values array is the one held (same buffers, which the held copy keeps
//! alive, so no other array can reuse them: an identity match means the same bytes). So
//! every value in V is the value of at least one row of the caller's supplier that this
//! node has emitted or is emitting, and a value that only another supplier's rows use is
//! never in U and never in V. Passing a values array through whole is the case U = every
//! value: each of them is used by a kept row.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayData, ArrayRef, AsArray, DictionaryArray, Int32Array, RecordBatch, UInt32Array,
};
use arrow::compute::take;
use arrow::datatypes::{Int32Type, SchemaRef};
use arrow::error::ArrowError;

use super::{Selection, compact};

/// Keeps one supplier's rows of each batch of a stream, projected and compacted like
/// [`scope_batch`](super::scope_batch), caching each dictionary column's rebuilt values
/// while consecutive batches share a values array. One per stream: it is not shared.
#[derive(Debug)]
pub struct ScopeCompactor {
    supplier: Arc<str>,
    /// Index of the supplier column in the input.
    column: usize,
    /// Input columns to emit, in order.
    projection: Arc<[usize]>,
    schema: SchemaRef,
    /// One per projected column.
    slots: Vec<DictCache>,
}

impl ScopeCompactor {
    pub fn new(
        supplier: Arc<str>,
        column: usize,
        projection: Arc<[usize]>,
        schema: SchemaRef,
    ) -> Self {
        let slots = projection.iter().map(|_| DictCache::default()).collect();
        Self {
            supplier,
            column,
            projection,
            schema,
            slots,
        }
    }

    /// `batch`'s rows of the supplier, projected, every array compacted; `None` when the
    /// batch holds none of them. Row for row the same values as
    /// [`scope_batch`](super::scope_batch).
    pub fn scope(&mut self, batch: &RecordBatch) -> Result<Option<RecordBatch>, ArrowError> {
        let Some(selection) = Selection::of(batch, &self.supplier, self.column)? else {
            return Ok(None);
        };
        let mut columns = Vec::with_capacity(self.projection.len());
        for (slot, &i) in self.slots.iter_mut().zip(self.projection.iter()) {
            let col = batch.column(i);
            columns.push(match col.as_dictionary_opt::<Int32Type>() {
                Some(dict) => slot.compact(dict, &selection)?,
                // Other key types are not written by the store: rebuilt every batch.
                None => compact(selection.filter(col)?)?,
            });
        }
        selection.batch(&self.schema, columns).map(Some)
    }
}

/// The cache of one `Dictionary(Int32, _)` column.
#[derive(Debug, Default)]
struct DictCache {
    cached: Option<Cached>,
    /// The occupancy of the current batch's kept keys (kept to reuse its allocation).
    occupancy: Vec<u64>,
}

#[derive(Debug)]
struct Cached {
    /// The input values array described, held so that its buffers stay alive.
    input: ArrayData,
    /// U: bit `k` set when a kept row of an earlier batch has key `k`.
    used: Vec<u64>,
    /// V: the input values filtered by `used`, compacted.
    values: ArrayRef,
    /// Input key to key into `values`; `None` when `used` holds every key.
    remap: Option<Vec<i32>>,
}

impl DictCache {
    /// The selected rows of `dict`, with values only those in the cached V.
    fn compact(
        &mut self,
        dict: &DictionaryArray<Int32Type>,
        selection: &Selection,
    ) -> Result<ArrayRef, ArrowError> {
        let keys = match &selection.predicate {
            Some(p) => p.filter(dict.keys())?.as_primitive::<Int32Type>().clone(),
            None => dict.keys().clone(),
        };
        let values = dict.values();
        occupancy(&keys, values.len(), &mut self.occupancy)?;
        let input = values.to_data();
        match &mut self.cached {
            Some(c) if c.input.ptr_eq(&input) => {
                if !is_subset(&self.occupancy, &c.used) {
                    for (u, o) in c.used.iter_mut().zip(&self.occupancy) {
                        *u |= o;
                    }
                    (c.values, c.remap) = rebuild(values, &c.used)?;
                }
            }
            _ => {
                // A values array not seen last: U starts from this batch's keys alone.
                let used = std::mem::take(&mut self.occupancy);
                let (v, remap) = rebuild(values, &used)?;
                self.cached = Some(Cached {
                    input,
                    used,
                    values: v,
                    remap,
                });
            }
        }
        let Some(c) = &self.cached else {
            unreachable!("the cache was filled above")
        };
        let keys = match &c.remap {
            // Null keys may hold any value: mapped to 0, and still null.
            Some(remap) => keys.unary(|k| remap.get(k as usize).copied().unwrap_or(0)),
            None => keys,
        };
        Ok(Arc::new(DictionaryArray::try_new(keys, c.values.clone())?))
    }
}

/// Sets `bits` to the keys that `keys`' valid slots use, out of `len` values.
fn occupancy(keys: &Int32Array, len: usize, bits: &mut Vec<u64>) -> Result<(), ArrowError> {
    bits.clear();
    bits.resize(len.div_ceil(64), 0);
    let raw = keys.values();
    let mut in_range = true;
    let mut set = |k: i32| {
        // A negative key becomes too large here.
        let k = k as u32 as usize;
        if k < len {
            bits[k / 64] |= 1 << (k % 64);
        } else {
            in_range = false;
        }
    };
    match keys.nulls().filter(|n| n.null_count() > 0) {
        Some(nulls) => nulls.valid_indices().for_each(|i| set(raw[i])),
        None => raw.iter().for_each(|&k| set(k)),
    }
    if in_range {
        Ok(())
    } else {
        Err(ArrowError::InvalidArgumentError(
            "dictionary key beyond its values".into(),
        ))
    }
}

fn is_subset(a: &[u64], b: &[u64]) -> bool {
    a.iter().zip(b).all(|(a, b)| a & !b == 0)
}

/// V and the remap for the values of `values` whose bit is set in `used`.
fn rebuild(values: &ArrayRef, used: &[u64]) -> Result<(ArrayRef, Option<Vec<i32>>), ArrowError> {
    let n = values.len();
    let count = used.iter().map(|w| w.count_ones() as usize).sum::<usize>();
    if count == n {
        // Every value is used by a kept row.
        return Ok((compact(values.clone())?, None));
    }
    let mut remap = vec![0; n];
    let mut indices = Vec::with_capacity(count);
    for (w, &word) in used.iter().enumerate() {
        let mut bits = word;
        while bits != 0 {
            let old = w * 64 + bits.trailing_zeros() as usize;
            // `old` is a valid Int32 key, so the count below it fits too.
            remap[old] = indices.len() as i32;
            indices.push(old as u32);
            bits &= bits - 1;
        }
    }
    let filtered = take(values, &UInt32Array::from(indices), None)?;
    Ok((compact(filtered)?, Some(remap)))
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use arrow::array::{Float64Array, StringArray, make_array};
    use arrow::buffer::NullBuffer;
    use arrow::compute::cast;
    use arrow::datatypes::{DataType, Field, Schema};
    use proptest::prelude::*;

    use super::super::scope_batch;
    use super::super::tests::{contains, ipc_bytes};
    use super::*;

    const GPUS: [&str; 5] = ["GPU-a1", "GPU-b1", "GPU-a2", "GPU-b2", "GPU-a3"];
    const FOREIGN: [&str; 2] = ["GPU-b1", "GPU-b2"];

    fn tag() -> DataType {
        DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
    }

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("supplier", tag(), true),
            Field::new("gpu_uuid", tag(), true),
            Field::new("v", DataType::Float64, true),
        ]))
    }

    fn strings(values: &[&str]) -> ArrayRef {
        Arc::new(StringArray::from(values.to_vec()))
    }

    /// A new array over the same buffers, as the Parquet reader hands out per batch.
    fn same_buffers(a: &ArrayRef) -> ArrayRef {
        make_array(a.to_data())
    }

    /// One row per supplier in `suppliers` ("a" or "b"), its GPU the key in `gpus` into
    /// `gpu_values`; the supplier dictionary is shared by every batch built here.
    fn batch(suppliers: &[&str], gpus: Int32Array, gpu_values: &ArrayRef) -> RecordBatch {
        thread_local! {
            static SUPPLIERS: ArrayRef = strings(&["a", "b"]);
        }
        let supplier_keys: Int32Array = suppliers.iter().map(|s| i32::from(*s == "b")).collect();
        let supplier_values = SUPPLIERS.with(same_buffers);
        let n = suppliers.len();
        RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(DictionaryArray::try_new(supplier_keys, supplier_values).unwrap()),
                Arc::new(DictionaryArray::try_new(gpus, gpu_values.clone()).unwrap()),
                Arc::new(Float64Array::from_iter_values((0..n).map(|i| i as f64))),
            ],
        )
        .unwrap()
    }

    fn rows(rows: &[(&str, i32)], gpu_values: &ArrayRef) -> RecordBatch {
        let suppliers: Vec<&str> = rows.iter().map(|r| r.0).collect();
        let keys: Int32Array = rows.iter().map(|r| r.1).collect();
        batch(&suppliers, keys, gpu_values)
    }

    /// Supplier "a"'s output for each batch of one stream, all columns projected.
    fn run(batches: &[RecordBatch]) -> Vec<Option<RecordBatch>> {
        let mut c = ScopeCompactor::new("a".into(), 0, Arc::from([0, 1, 2]), schema());
        batches.iter().map(|b| c.scope(b).unwrap()).collect()
    }

    fn uncached(b: &RecordBatch) -> Option<RecordBatch> {
        scope_batch(b, "a", 0, &[0, 1, 2], &schema()).unwrap()
    }

    fn logical(col: &ArrayRef) -> Vec<Option<String>> {
        let s = cast(col, &DataType::Utf8).unwrap();
        s.as_string::<i32>()
            .iter()
            .map(|v| v.map(str::to_owned))
            .collect()
    }

    fn gpu_values(b: &RecordBatch) -> &ArrayRef {
        b.column(1).as_any_dictionary().values()
    }

    /// Same rows and values as the uncached path, and no foreign GPU in any byte.
    fn check(input: &RecordBatch, out: &RecordBatch) {
        let expected = uncached(input).unwrap();
        assert_eq!(out.schema(), expected.schema());
        for (o, e) in out.columns().iter().zip(expected.columns()) {
            assert_eq!(logical(o), logical(e));
        }
        let bytes = ipc_bytes(out);
        for secret in FOREIGN {
            assert!(!contains(&bytes, secret), "{secret} leaked");
        }
    }

    #[test]
    fn shared_values_leak_nothing_and_match_the_uncached_path() {
        let g = strings(&GPUS);
        let batches = [
            rows(&[("a", 0), ("b", 1), ("a", 2)], &g),
            rows(&[("b", 3), ("a", 0), ("b", 1)], &same_buffers(&g)),
        ];
        // The inputs do carry b's GPUs: the checks below could fail.
        assert!(contains(&ipc_bytes(&batches[1]), "GPU-b2"));
        for (input, out) in batches.iter().zip(run(&batches)) {
            check(input, &out.unwrap());
        }
    }

    #[test]
    fn a_subset_batch_reuses_the_compacted_values() {
        let g = strings(&GPUS);
        let batches = [
            rows(&[("a", 0), ("b", 1), ("a", 2)], &g),
            rows(&[("b", 3), ("a", 2)], &same_buffers(&g)),
        ];
        let out = run(&batches);
        let (o1, o2) = (out[0].as_ref().unwrap(), out[1].as_ref().unwrap());
        check(&batches[1], o2);
        assert!(Arc::ptr_eq(gpu_values(o1), gpu_values(o2)));
        assert_eq!(logical(gpu_values(o2)).len(), 2);
        // Without the cache each batch gets its own values.
        let (u1, u2) = (
            uncached(&batches[0]).unwrap(),
            uncached(&batches[1]).unwrap(),
        );
        assert!(!Arc::ptr_eq(gpu_values(&u1), gpu_values(&u2)));
    }

    #[test]
    fn a_new_value_grows_the_cache_and_leaks_nothing() {
        let g = strings(&GPUS);
        let batches = [
            rows(&[("a", 0), ("b", 1)], &g),
            rows(&[("a", 4), ("b", 3), ("a", 0)], &same_buffers(&g)),
            rows(&[("b", 1), ("a", 4)], &same_buffers(&g)),
        ];
        let out: Vec<RecordBatch> = run(&batches).into_iter().map(Option::unwrap).collect();
        for (input, o) in batches.iter().zip(&out) {
            check(input, o);
        }
        assert_eq!(
            logical(gpu_values(&out[1])),
            [Some("GPU-a1".to_owned()), Some("GPU-a3".to_owned())]
        );
        assert!(!Arc::ptr_eq(gpu_values(&out[0]), gpu_values(&out[1])));
        // The grown set is reused in turn.
        assert!(Arc::ptr_eq(gpu_values(&out[1]), gpu_values(&out[2])));
    }

    #[test]
    fn a_different_values_array_resets_the_cache() {
        let g = strings(&GPUS);
        let other = strings(&["GPU-b9", "GPU-a9"]);
        let batches = [
            rows(&[("a", 0), ("a", 2), ("b", 1)], &g),
            // Key 1 here is a9; a stale remap would turn it into another value.
            rows(&[("b", 0), ("a", 1)], &other),
        ];
        let out = run(&batches);
        let o2 = out[1].as_ref().unwrap();
        check(&batches[1], o2);
        assert_eq!(logical(gpu_values(o2)), [Some("GPU-a9".to_owned())]);
        let bytes = ipc_bytes(o2);
        assert!(!contains(&bytes, "GPU-b9") && !contains(&bytes, "GPU-a1"));
    }

    #[test]
    fn null_keys_stay_null_and_their_slots_select_nothing() {
        let g = strings(&GPUS);
        // The null slots hold b2's key and one beyond the values.
        let nulls = NullBuffer::from(vec![true, false, true, false]);
        let keys = Int32Array::new(vec![0, 3, 2, 99].into(), Some(nulls));
        let first = batch(&["a", "a", "a", "a"], keys, &g);
        let keys = Int32Array::new(vec![3, 2].into(), Some(NullBuffer::from(vec![false, true])));
        let second = batch(&["a", "a"], keys, &same_buffers(&g));
        let out = run(&[first.clone(), second.clone()]);
        let (o1, o2) = (out[0].as_ref().unwrap(), out[1].as_ref().unwrap());
        check(&first, o1);
        check(&second, o2);
        assert_eq!(
            logical(o1.column(1)),
            [Some("GPU-a1".into()), None, Some("GPU-a2".into()), None]
        );
        assert_eq!(logical(o2.column(1)), [None, Some("GPU-a2".into())]);
        assert!(Arc::ptr_eq(gpu_values(o1), gpu_values(o2)));
    }

    proptest! {
        /// Differential against `scope_batch`, and the barrier's rule: every emitted GPU
        /// value is one that a kept row of this stream has used.
        #[test]
        fn the_cached_path_agrees_with_the_uncached_one_and_emits_only_kept_values(
            batches in prop::collection::vec(
                (0..3usize, prop::collection::vec((any::<bool>(), prop::option::of(0..5i32)), 1..20)),
                1..8,
            )
        ) {
            let g = strings(&GPUS);
            let h = strings(&["h-0", "h-1", "h-2", "h-3", "h-4"]);
            let inputs: Vec<RecordBatch> = batches
                .iter()
                .map(|(array, rows)| {
                    let values = match array {
                        0 => same_buffers(&g),
                        1 => same_buffers(&h),
                        _ => strings(&GPUS),
                    };
                    let suppliers: Vec<&str> =
                        rows.iter().map(|r| if r.0 { "a" } else { "b" }).collect();
                    let keys: Int32Array = rows.iter().map(|r| r.1).collect();
                    batch(&suppliers, keys, &values)
                })
                .collect();
            let mut seen = HashSet::new();
            for (input, out) in inputs.iter().zip(run(&inputs)) {
                let expected = uncached(input);
                prop_assert_eq!(out.is_some(), expected.is_some());
                let (Some(out), Some(expected)) = (out, expected) else { continue };
                seen.extend(logical(expected.column(1)).into_iter().flatten());
                for (o, e) in out.columns().iter().zip(expected.columns()) {
                    prop_assert_eq!(logical(o), logical(e));
                }
                for v in logical(gpu_values(&out)).into_iter().flatten() {
                    prop_assert!(seen.contains(&v), "{} emitted but no kept row used it", v);
                }
            }
        }
    }
}
