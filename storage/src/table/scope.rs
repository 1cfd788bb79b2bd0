//! [`ScopeExec`]: the tenancy barrier under every supplier-scoped scan.
//!
//! ```text
//!   query (filters, casts, joins, aggregates, output formats …)
//!        │   sees only batches that ScopeExec emitted
//!   ScopeExec   keep rows with supplier = S; project; rebuild every dictionary to the
//!        │      values those rows use; compact byte arrays that carry other rows' bytes
//!   DbTable scan (Parquet ∪ write buffer), pruned by the time range and by the query's
//!               filters only where evaluating them cannot fail (comparisons of columns
//!               and literals): pruning never runs an expression that could error on,
//!               and so reveal, another supplier's value
//! ```
//!
//! The node is a barrier by construction: it keeps DataFusion's defaults that refuse to
//! push filters, limits or projections through a node, so no optimizer rule, present or
//! future, can move an expression of the query below it, and it reports unknown
//! statistics, so no row count of the whole table reaches a plan or an aggregate.
//!
//! Each partition's stream rebuilds dictionaries through a [`ScopeCompactor`], which
//! caches the rebuilt values of a dictionary shared by consecutive batches (see
//! [`compactor`]); [`scope_batch`] is the same barrier without a cache.

mod compactor;

pub use compactor::ScopeCompactor;

use std::fmt;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, RecordBatch, RecordBatchOptions, UInt32Array,
};
use arrow::compute::kernels::cmp::eq;
use arrow::compute::{FilterBuilder, FilterPredicate, cast, take};
use arrow::datatypes::{DataType, Int32Type, SchemaRef};
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::error::{DataFusionError, Result as DFResult};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Expr, Operator};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::ReplaceChildrenOptions;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use futures::StreamExt;

/// Emits only one supplier's rows of its input, projected, with no other row's value left
/// in any array (dictionary values included).
#[derive(Debug)]
pub struct ScopeExec {
    input: Arc<dyn ExecutionPlan>,
    supplier: Arc<str>,
    /// Index of the supplier column in the input.
    column: usize,
    /// Input columns to emit, in order.
    projection: Arc<[usize]>,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
}

impl ScopeExec {
    pub fn try_new(
        input: Arc<dyn ExecutionPlan>,
        supplier: &str,
        column: usize,
        projection: Vec<usize>,
    ) -> DFResult<Self> {
        let schema = Arc::new(input.schema().project(&projection)?);
        let input_props = input.properties();
        let properties = PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(input_props.partitioning.partition_count()),
            input_props.emission_type,
            input_props.boundedness,
        );
        Ok(Self {
            input,
            supplier: supplier.into(),
            column,
            projection: projection.into(),
            schema,
            properties: Arc::new(properties),
        })
    }
}

impl DisplayAs for ScopeExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        // The supplier is the caller's own name; nothing else is shown.
        write!(f, "ScopeExec")
    }
}

impl ExecutionPlan for ScopeExec {
    fn name(&self) -> &str {
        "ScopeExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DFResult<TreeNodeRecursion>,
    ) -> DFResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> DFResult<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return Err(DataFusionError::Internal(
                "ScopeExec has exactly one child".into(),
            ));
        }
        Ok(Arc::new(ScopeExec::try_new(
            children.swap_remove(0),
            &self.supplier,
            self.column,
            self.projection.to_vec(),
        )?))
    }

    #[allow(deprecated)]
    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DFResult<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(
                datafusion::physical_plan::execution_plan::ChildrenPropertiesMode::Recompute,
            ),
        )
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DFResult<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context)?;
        // One compactor, and so one dictionary cache, per partition's stream.
        let mut compactor = ScopeCompactor::new(
            self.supplier.clone(),
            self.column,
            self.projection.clone(),
            self.schema.clone(),
        );
        let stream = input.filter_map(move |batch| {
            let result = batch.and_then(|b| compactor.scope(&b).map_err(Into::into));
            futures::future::ready(result.transpose())
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            stream,
        )))
    }
}

/// `batch`'s rows of `supplier`, projected to `projection`, every array compacted; `None`
/// when the batch holds none of them.
pub fn scope_batch(
    batch: &RecordBatch,
    supplier: &str,
    column: usize,
    projection: &[usize],
    schema: &SchemaRef,
) -> Result<Option<RecordBatch>, arrow::error::ArrowError> {
    let Some(selection) = Selection::of(batch, supplier, column)? else {
        return Ok(None);
    };
    let columns = projection
        .iter()
        .map(|&i| compact(selection.filter(batch.column(i))?))
        .collect::<Result<Vec<_>, _>>()?;
    selection.batch(schema, columns).map(Some)
}

/// The rows of one supplier in a batch.
struct Selection {
    rows: usize,
    /// One prepared predicate for every column; `None` when every row is kept.
    predicate: Option<FilterPredicate>,
}

impl Selection {
    /// `batch`'s rows whose supplier (column `column`) is `supplier`; `None` when there are
    /// none.
    fn of(
        batch: &RecordBatch,
        supplier: &str,
        column: usize,
    ) -> Result<Option<Self>, arrow::error::ArrowError> {
        let mask = supplier_mask(batch.column(column), supplier)?;
        let rows = mask.true_count();
        if rows == 0 {
            return Ok(None);
        }
        let predicate =
            (rows < batch.num_rows()).then(|| FilterBuilder::new(&mask).optimize().build());
        Ok(Some(Self { rows, predicate }))
    }

    /// The selected rows of `array` (dictionary values and byte buffers left whole).
    fn filter(&self, array: &ArrayRef) -> Result<ArrayRef, arrow::error::ArrowError> {
        match &self.predicate {
            Some(p) => p.filter(array),
            None => Ok(array.clone()),
        }
    }

    fn batch(
        &self,
        schema: &SchemaRef,
        columns: Vec<ArrayRef>,
    ) -> Result<RecordBatch, arrow::error::ArrowError> {
        let options = RecordBatchOptions::new().with_row_count(Some(self.rows));
        RecordBatch::try_new_with_options(schema.clone(), columns, &options)
    }
}

/// True where the row's supplier is `supplier` (null suppliers never match).
fn supplier_mask(col: &ArrayRef, supplier: &str) -> Result<BooleanArray, arrow::error::ArrowError> {
    if let Some(dict) = col.as_dictionary_opt::<Int32Type>()
        && let Some(values) = dict.values().as_string_opt::<i32>()
    {
        // Compare keys, not strings: find the keys whose value is the supplier (a dictionary
        // may hold a value more than once), then test each row's key.
        let matching: Vec<i32> = (0..values.len())
            .filter(|&k| values.is_valid(k) && values.value(k) == supplier)
            .map(|k| k as i32)
            .collect();
        let keys = dict.keys();
        let mut bits: Option<BooleanArray> = None;
        for k in matching {
            // Vectorised key comparison; a null key compares as null, dropped below.
            let m = eq(keys, &arrow::array::Int32Array::new_scalar(k))?;
            bits = Some(match bits {
                None => m,
                Some(b) => arrow::compute::or(&b, &m)?,
            });
        }
        return Ok(match bits {
            None => BooleanArray::new(arrow::buffer::BooleanBuffer::new_unset(keys.len()), None),
            Some(m) => without_nulls(m),
        });
    }
    let strings = cast(col, &DataType::Utf8)?;
    let scalar = arrow::array::StringArray::new_scalar(supplier);
    let m = eq(&strings, &scalar)?;
    Ok(without_nulls(m))
}

/// A mask whose nulls (rows without a supplier) count as not matching.
fn without_nulls(m: BooleanArray) -> BooleanArray {
    match m.nulls() {
        Some(n) => BooleanArray::new(m.values() & n.inner(), None),
        None => m,
    }
}

/// `batch` with every array holding only the bytes its rows use (see [`compact`]): what an
/// encoder that writes whole buffers (Arrow IPC writes dictionaries whole) should be given.
pub fn compact_batch(batch: &RecordBatch) -> Result<RecordBatch, arrow::error::ArrowError> {
    let columns = batch
        .columns()
        .iter()
        .map(|c| compact(c.clone()))
        .collect::<Result<Vec<_>, _>>()?;
    let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    RecordBatch::try_new_with_options(batch.schema(), columns, &options)
}

/// An array holding only the bytes its rows use.
pub fn compact(array: ArrayRef) -> Result<ArrayRef, arrow::error::ArrowError> {
    match array.data_type() {
        DataType::Dictionary(..) => {
            let Some(dict) = array.as_any_dictionary_opt() else {
                return Ok(array);
            };
            let gc = arrow_select::dictionary::garbage_collect_any_dictionary(dict)?;
            // The remaining values may themselves be a slice of a larger buffer.
            let gc_dict = gc.as_any_dictionary();
            let values = compact(gc_dict.values().clone())?;
            if Arc::ptr_eq(&values, gc_dict.values()) {
                Ok(gc)
            } else {
                Ok(gc_dict.with_values(values))
            }
        }
        DataType::Utf8 => {
            let s = span(array.as_string::<i32>().value_offsets());
            compact_span(s, array)
        }
        DataType::LargeUtf8 => {
            let s = span(array.as_string::<i64>().value_offsets());
            compact_span(s, array)
        }
        DataType::Binary => {
            let s = span(array.as_binary::<i32>().value_offsets());
            compact_span(s, array)
        }
        DataType::LargeBinary => {
            let s = span(array.as_binary::<i64>().value_offsets());
            compact_span(s, array)
        }
        DataType::Utf8View => Ok(Arc::new(array.as_string_view().gc())),
        DataType::BinaryView => Ok(Arc::new(array.as_binary_view().gc())),
        _ => Ok(array),
    }
}

/// The byte range a byte array's rows use.
fn span<O: arrow::array::OffsetSizeTrait>(offsets: &[O]) -> (usize, usize) {
    (
        offsets.first().map_or(0, |o| o.as_usize()),
        offsets.last().map_or(0, |o| o.as_usize()),
    )
}

/// Copies a byte array whose value buffer holds more than its rows' bytes (a slice).
fn compact_span(
    (first, last): (usize, usize),
    array: ArrayRef,
) -> Result<ArrayRef, arrow::error::ArrowError> {
    let data = array.to_data();
    let values_len = data.buffers().get(1).map_or(0, |b| b.len());
    if first == 0 && last == values_len {
        return Ok(array);
    }
    let indices = UInt32Array::from_iter_values(0..array.len() as u32);
    take(&array, &indices, None)
}

/// Whether the query's filter `e` may be handed to the scan below [`ScopeExec`] to prune
/// files, row groups and pages. Pruning evaluates it against statistics of rows of every
/// supplier, so only expressions that cannot fail (and so cannot report a value in an
/// error) qualify: columns, literals, comparisons, boolean logic, IN lists, BETWEEN and
/// null tests, and casts between string types.
pub fn prunes_safely(e: &Expr) -> bool {
    !e.exists(|node| {
        Ok(match node {
            Expr::Column(_) | Expr::Literal(..) => false,
            Expr::BinaryExpr(b) => !matches!(
                b.op,
                Operator::Eq
                    | Operator::NotEq
                    | Operator::Lt
                    | Operator::LtEq
                    | Operator::Gt
                    | Operator::GtEq
                    | Operator::And
                    | Operator::Or
                    | Operator::IsDistinctFrom
                    | Operator::IsNotDistinctFrom
            ),
            Expr::Between(_)
            | Expr::InList(_)
            | Expr::IsNull(_)
            | Expr::IsNotNull(_)
            | Expr::Not(_) => false,
            Expr::Cast(c) => !is_string(c.field.data_type()),
            Expr::TryCast(_) => false,
            _ => true,
        })
    })
    .unwrap_or(false)
}

fn is_string(t: &DataType) -> bool {
    match t {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => true,
        DataType::Dictionary(_, v) => is_string(v),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{DictionaryArray, Float64Array, StringArray};
    use arrow::compute::filter;
    use arrow::datatypes::{Field, Schema};
    use datafusion::prelude::{col, lit};

    fn dict(values: &[&str]) -> ArrayRef {
        Arc::new(
            values
                .iter()
                .copied()
                .collect::<DictionaryArray<Int32Type>>(),
        )
    }

    fn batch() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new(
                "supplier",
                DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
                true,
            ),
            Field::new(
                "gpu_uuid",
                DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
                true,
            ),
            Field::new("note", DataType::Utf8, true),
            Field::new("v", DataType::Float64, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                dict(&["a", "b", "a", "b"]),
                dict(&["GPU-a1", "GPU-b1", "GPU-a2", "GPU-b2"]),
                Arc::new(StringArray::from(vec!["x", "secret-b", "y", "secret-b2"])),
                Arc::new(Float64Array::from(vec![1.0, 2.0, 3.0, 4.0])),
            ],
        )
        .unwrap()
    }

    /// Every byte the IPC writer would send for `batch`.
    pub(super) fn ipc_bytes(batch: &RecordBatch) -> Vec<u8> {
        let mut out = Vec::new();
        let mut w = arrow::ipc::writer::StreamWriter::try_new(&mut out, &batch.schema()).unwrap();
        w.write(batch).unwrap();
        w.finish().unwrap();
        drop(w);
        out
    }

    pub(super) fn contains(hay: &[u8], needle: &str) -> bool {
        hay.windows(needle.len()).any(|w| w == needle.as_bytes())
    }

    #[test]
    fn a_scoped_batch_carries_no_other_suppliers_bytes() {
        let b = batch();
        // The unscoped batch does carry them: the check below could fail.
        assert!(contains(&ipc_bytes(&b), "GPU-b1"));
        let out_schema = Arc::new(b.schema().project(&[1, 2, 3]).unwrap());
        let scoped = scope_batch(&b, "a", 0, &[1, 2, 3], &out_schema)
            .unwrap()
            .unwrap();
        assert_eq!(scoped.num_rows(), 2);
        let bytes = ipc_bytes(&scoped);
        for secret in ["GPU-b1", "GPU-b2", "secret-b"] {
            assert!(!contains(&bytes, secret), "{secret} leaked");
        }
        assert!(contains(&bytes, "GPU-a2"));
    }

    #[test]
    fn a_batch_wholly_of_the_supplier_still_loses_foreign_dictionary_values() {
        let b = batch();
        // Rows 0 and 2 only, but the dictionaries still hold b's values.
        let sliced = RecordBatch::try_new(
            b.schema(),
            b.columns()
                .iter()
                // `filter` keeps dictionary values whole: the leak being guarded against.
                .map(|c| filter(c, &BooleanArray::from(vec![true, false, true, false])).unwrap())
                .collect(),
        )
        .unwrap();
        assert!(contains(&ipc_bytes(&sliced), "GPU-b1"));
        let out_schema = Arc::new(b.schema().project(&[0, 1]).unwrap());
        let scoped = scope_batch(&sliced, "a", 0, &[0, 1], &out_schema)
            .unwrap()
            .unwrap();
        let bytes = ipc_bytes(&scoped);
        assert!(!contains(&bytes, "GPU-b1") && !contains(&bytes, "\u{1}b"));
        assert_eq!(scoped.num_rows(), 2);
    }

    #[test]
    fn sliced_strings_are_copied_out_of_their_parent_buffer() {
        let all = Arc::new(StringArray::from(vec!["mine", "theirs-secret"])) as ArrayRef;
        let slice = all.slice(0, 1);
        let c = compact(slice).unwrap();
        let data = c.to_data();
        assert_eq!(data.buffers()[1].len(), 4);
    }

    #[test]
    fn no_rows_of_the_supplier_yields_nothing() {
        let b = batch();
        let out_schema = Arc::new(b.schema().project(&[3]).unwrap());
        assert!(
            scope_batch(&b, "c", 0, &[3], &out_schema)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn only_infallible_filters_reach_the_pruning_scan() {
        assert!(prunes_safely(&col("model").eq(lit("H100"))));
        assert!(prunes_safely(
            &col("time").gt(lit(5)).and(col("v").lt_eq(lit(1.0)))
        ));
        assert!(!prunes_safely(
            &datafusion::logical_expr::cast(col("gpu_uuid"), DataType::Int32).eq(lit(0))
        ));
        assert!(!prunes_safely(&(col("v") / lit(0)).eq(lit(1))));
        assert!(!prunes_safely(
            &datafusion::functions::expr_fn::concat(vec![col("a"), lit("x")]).eq(lit("y"))
        ));
    }
}
