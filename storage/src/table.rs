//! DataFusion access: a [`TableProvider`] per table and a [`SchemaProvider`] over all of them.
//!
//! A scan takes a snapshot of the table (files plus buffered chunks), prunes it by the time
//! bounds found in the filters, and plans:
//!
//! ```text
//!            UnionExec
//!           /         \
//!  DataSourceExec     DataSourceExec (memory)
//!  (Parquet: files      buffered chunks, and partitions whose files and buffer overlap,
//!   alone in their      merged here with last-write-wins per field (each file read with
//!   partition; stats    the query's tag and time terms pushed into it: pruned by
//!   and page pruning)   statistics and page index, footers from the metadata cache)
//! ```
//!
//! Filters are pushed down as `Inexact`: they prune, and DataFusion still applies them. Terms
//! over tags alone also narrow each file to the rows of the series they keep, through the
//! file's series index ([`crate::series_index`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{SchemaProvider, Session, TableProvider};
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::datasource::TableType;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::physical_plan::parquet::{
    CachedParquetFileReaderFactory, ParquetRowSelection,
};
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::{DataFusionError, Result as DFResult};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::utils::{conjunction, split_conjunction};
use datafusion::logical_expr::{BinaryExpr, Expr, Operator, TableProviderFilterPushDown};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::filter::{FilterExec, batch_filter};
use datafusion::physical_plan::union::UnionExec;
use datafusion::prelude::SessionContext;
use futures::{StreamExt, TryStreamExt};

use crate::batch::TIME_COLUMN;
use crate::catalog::FileMeta;
use crate::db::Db;
use crate::merge;
use crate::schema::{ColumnKind, TableDef};
use crate::series_index::Selection;

mod reader;
pub mod scope;
mod series_scan;

/// Footers a scan fetches at once.
const FOOTER_FETCHES: usize = 16;

/// The URL under which the database's object store is registered with DataFusion.
pub const OBJECT_STORE_URL: &str = "rigwatch://store";

/// Registers the object store and every table of `db` as the default schema of `ctx`.
pub fn register(db: &Arc<Db>, ctx: &SessionContext) -> DFResult<()> {
    register_scoped(db, ctx, None)
}

/// The tag column that names a row's supplier; the tenancy boundary.
pub const SUPPLIER_TAG: &str = "supplier";

/// Like [`register`], but when `scope` names a supplier every table is confined to that
/// supplier's rows: a table without a `supplier` tag is invisible, and every scan of the
/// others is filtered on `supplier = scope` below whatever the query says. This is where
/// tenancy is enforced, for SQL and the query language alike.
pub fn register_scoped(db: &Arc<Db>, ctx: &SessionContext, scope: Option<&str>) -> DFResult<()> {
    let url = ObjectStoreUrl::parse(OBJECT_STORE_URL)?;
    ctx.register_object_store(url.as_ref(), db.store().clone());
    let catalog = ctx
        .catalog("datafusion")
        .ok_or_else(|| DataFusionError::Internal("default catalog missing".into()))?;
    catalog.register_schema(
        "public",
        Arc::new(DbSchema {
            db: db.clone(),
            scope: scope.map(str::to_string),
        }),
    )?;
    Ok(())
}

/// All tables of a [`Db`], optionally confined to one supplier.
#[derive(Debug)]
pub struct DbSchema {
    db: Arc<Db>,
    scope: Option<String>,
}

impl DbSchema {
    pub fn new(db: Arc<Db>) -> Self {
        Self { db, scope: None }
    }

    fn visible(&self, def: &TableDef) -> bool {
        self.scope.is_none()
            || def
                .column_index(SUPPLIER_TAG)
                .is_some_and(|i| def.columns[i].kind == crate::schema::ColumnKind::Tag)
    }
}

#[async_trait]
impl SchemaProvider for DbSchema {
    fn table_names(&self) -> Vec<String> {
        let mut names = self.db.schemas().names();
        names.retain(|n| self.db.table(n).is_some_and(|d| self.visible(&d)));
        names
    }

    async fn table(&self, name: &str) -> DFResult<Option<Arc<dyn TableProvider>>> {
        let Some(def) = self.db.table(name).filter(|d| self.visible(d)) else {
            return Ok(None);
        };
        let table = DbTable::new(self.db.clone(), def);
        Ok(Some(match &self.scope {
            None => Arc::new(table),
            Some(s) => Arc::new(ScopedTable {
                inner: table,
                supplier: s.clone(),
            }),
        }))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.db.table(name).is_some_and(|d| self.visible(&d))
    }
}

/// A table confined to one supplier's rows.
#[derive(Debug)]
pub struct ScopedTable {
    inner: DbTable,
    supplier: String,
}

impl ScopedTable {
    fn predicate(&self) -> Expr {
        Expr::Column(datafusion::common::Column::from_name(SUPPLIER_TAG)).eq(Expr::Literal(
            ScalarValue::Dictionary(
                Box::new(arrow::datatypes::DataType::Int32),
                Box::new(ScalarValue::Utf8(Some(self.supplier.clone()))),
            ),
            None,
        ))
    }
}

#[async_trait]
impl TableProvider for ScopedTable {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DFResult<Vec<TableProviderFilterPushDown>> {
        self.inner.supports_filters_pushdown(filters)
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        _limit: Option<usize>,
    ) -> DFResult<Arc<dyn ExecutionPlan>> {
        let schema = self.inner.schema();
        let sup = schema.index_of(SUPPLIER_TAG)?;
        // Scan with the supplier column included; ScopeExec keeps the supplier's rows and
        // projects to what was asked.
        let wanted: Vec<usize> = projection
            .cloned()
            .unwrap_or_else(|| (0..schema.fields().len()).collect());
        let mut scan_cols = wanted.clone();
        if !scan_cols.contains(&sup) {
            scan_cols.push(sup);
        }
        // Only filters that cannot fail reach the scan (it prunes with them over every
        // supplier's statistics); DataFusion applies all of them above ScopeExec anyway.
        let mut pushed: Vec<Expr> = filters
            .iter()
            .filter(|f| scope::prunes_safely(f))
            .cloned()
            .collect();
        pushed.push(self.predicate());
        let plan = self
            .inner
            .scan(state, Some(&scan_cols), &pushed, None)
            .await?;
        // `scan_cols` starts with `wanted`, so the output columns are its first ones.
        let column = scan_cols
            .iter()
            .position(|&c| c == sup)
            .unwrap_or(wanted.len());
        let out: Vec<usize> = (0..wanted.len()).collect();
        Ok(Arc::new(scope::ScopeExec::try_new(
            plan,
            &self.supplier,
            column,
            out,
        )?))
    }
}

/// One table as of the moment it was looked up (its schema is fixed for the query).
#[derive(Debug)]
pub struct DbTable {
    db: Arc<Db>,
    def: Arc<TableDef>,
    schema: SchemaRef,
}

impl DbTable {
    pub fn new(db: Arc<Db>, def: Arc<TableDef>) -> Self {
        let schema = def.arrow_schema();
        Self { db, def, schema }
    }
}

#[async_trait]
impl TableProvider for DbTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DFResult<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        _limit: Option<usize>,
    ) -> DFResult<Arc<dyn ExecutionPlan>> {
        let (min, max) = time_bounds(filters);
        let snap = self.db.snapshot(&self.def, min, max);
        // Files and buffered rows of one partition may share keys and are merged; different
        // partitions never do. A tier file holds a whole tier of partitions, so everything in
        // its span is one group (a late write into a tier already merged).
        let tiers: Vec<(i64, i64)> = snap
            .files
            .iter()
            .filter(|f| f.is_tier())
            .map(|f| (f.partition, f.partition.saturating_add(f.span)))
            .collect();
        let group_of = |p: i64| {
            tiers
                .iter()
                .find(|(start, end)| (*start..*end).contains(&p))
                .map_or(p, |(start, _)| *start)
        };
        let mut parts: BTreeMap<i64, (Vec<FileMeta>, Vec<RecordBatch>)> = BTreeMap::new();
        for f in snap.files {
            parts.entry(group_of(f.partition)).or_default().0.push(f);
        }
        for (p, b) in snap.buffered {
            parts.entry(group_of(p)).or_default().1.push(b);
        }
        let mut direct = Vec::new();
        let mut memory = Vec::new();
        // Rows of one key (tags, time) agree on every term that reads only tags and time, so
        // such terms may run before the merge: a partition is merged from the rows the query
        // can use, read with pruning, not from whole files. Only terms that cannot fail run
        // here (the others run above, as always).
        // Built at the first partition that needs a merge (most scans have none).
        let mut key_filter: Option<Option<Arc<dyn PhysicalExpr>>> = None;
        let series_filter = if parts.values().any(|(files, _)| !files.is_empty()) {
            self.series_filter(state, filters)?
        } else {
            None
        };
        let shared_keys = snap.shared_keys;
        for (group, (files, batches)) in parts {
            // Buffered batches alone need no merge unless two of them may hold one key: the
            // partitions of a group hold different times, and each chunk has one row a key.
            let disjoint =
                || files.is_empty() && !shared_keys.iter().any(|p| group_of(*p) == group);
            if self.def.append_only || files.len() + batches.len() <= 1 || disjoint() {
                direct.extend(files);
                memory.extend(batches);
                continue;
            }
            let key_filter = match &key_filter {
                Some(k) => k.clone(),
                None => {
                    let k = self.key_filter(state, filters)?;
                    key_filter = Some(k.clone());
                    k
                }
            };
            let mut inputs = Vec::new();
            for f in &files {
                let selection = self.series_selection(f, series_filter.as_ref()).await?;
                match self
                    .read_file(state, f, key_filter.as_ref(), selection)
                    .await
                {
                    Ok(b) => inputs.extend(b),
                    Err(e) => self.db.quarantine(f, &e.to_string()),
                }
            }
            for b in batches {
                inputs.push(match &key_filter {
                    Some(p) => batch_filter(&b, p)?,
                    None => b,
                });
            }
            memory.push(merge::merge(&self.def, &self.schema, &inputs)?);
        }

        let target = state.config().target_partitions().max(1);
        let mut plans: Vec<Arc<dyn ExecutionPlan>> = Vec::new();
        if !direct.is_empty() {
            let mut source = self.parquet_source();
            if let Some(expr) = conjunction(filters.to_vec()) {
                let df_schema = DFSchema::try_from(self.schema.clone())?;
                source = source.with_predicate(state.create_physical_expr(expr, &df_schema)?);
            }
            // A tier file holds one row group per partition: its byte ranges go to every scan
            // thread (a range reads the row groups that start in it), as separate files would.
            let mut pieces = Vec::new();
            // Footers not cached yet are fetched a few at a time (object stores are slow to
            // answer, not to answer many).
            // Where the projection holds tags, a file with a series index is read without
            // them: the index labels its rows (`series_scan.rs`).
            let tags: Vec<usize> = self.def.tag_indices().collect();
            let projected = projection
                .cloned()
                .unwrap_or_else(|| (0..self.schema.fields().len()).collect());
            let labelled = projected.iter().any(|i| tags.contains(i));
            // Footers not cached yet are fetched a few at a time (object stores are slow to
            // answer, not to answer many).
            let lookups: Vec<_> = direct
                .iter()
                .map(|f| async {
                    let selection = self.series_selection(f, series_filter.as_ref()).await?;
                    // A footer that cannot be read leaves the file to the Parquet scan, which
                    // reports it.
                    let indexed = if labelled && selection != Selection::None {
                        match self.db.series_index(f).await {
                            Ok(Some(index)) => {
                                self.db.footer(f).await.ok().map(|footer| (index, footer))
                            }
                            _ => None,
                        }
                    } else {
                        None
                    };
                    Ok::<_, DataFusionError>((selection, indexed))
                })
                .collect();
            let selections: Vec<_> = futures::stream::iter(lookups)
                .buffered(FOOTER_FETCHES)
                .try_collect()
                .await?;
            let mut indexed = Vec::new();
            for (f, (selection, index)) in direct.iter().zip(selections) {
                let rows = match selection {
                    Selection::None => continue,
                    Selection::All => None,
                    Selection::Rows(r) => Some(r),
                };
                if let Some((index, footer)) = index {
                    indexed.push(series_scan::IndexedFile {
                        file: f.clone(),
                        index,
                        footer,
                        rows,
                    });
                    continue;
                }
                let rows = rows.map(ParquetRowSelection::new);
                let with_rows = |p: PartitionedFile| match &rows {
                    Some(r) => p.with_extension(r.clone()),
                    None => p,
                };
                let splits = if f.is_tier() { target as u64 } else { 1 };
                let step = f.size.div_ceil(splits).max(1);
                for k in 0..splits {
                    let (lo, hi) = (k * step, ((k + 1) * step).min(f.size));
                    if lo >= hi {
                        break;
                    }
                    pieces.push(with_rows(if splits == 1 {
                        PartitionedFile::new(f.path.clone(), f.size)
                    } else {
                        PartitionedFile::new_with_range(
                            f.path.clone(),
                            f.size,
                            lo as i64,
                            hi as i64,
                        )
                    }));
                }
            }
            if let Some(exec) = series_scan::SeriesScanExec::try_new(
                &self.db,
                indexed,
                &self.schema,
                &projected,
                |i| tags.contains(&i),
                (min, max),
                target,
            )? {
                plans.push(Arc::new(exec));
            }
            if !pieces.is_empty() {
                let mut groups = vec![Vec::new(); target.min(pieces.len())];
                let n = groups.len();
                for (i, piece) in pieces.into_iter().enumerate() {
                    groups[i % n].push(piece);
                }
                let config = FileScanConfigBuilder::new(
                    ObjectStoreUrl::parse(OBJECT_STORE_URL)?,
                    Arc::new(source),
                )
                .with_projection_indices(projection.cloned())?
                .with_file_groups(groups.into_iter().map(FileGroup::new).collect())
                .build();
                plans.push(DataSourceExec::from_data_source(config));
            }
        }
        if !memory.is_empty() || plans.is_empty() {
            let mut partitions = vec![Vec::new(); target.min(memory.len()).max(1)];
            let n = partitions.len();
            for (i, b) in memory.into_iter().enumerate() {
                partitions[i % n].push(b);
            }
            plans.push(MemorySourceConfig::try_new_exec(
                &partitions,
                self.schema.clone(),
                projection.cloned(),
            )?);
        }
        UnionExec::try_new(plans)
    }
}

impl DbTable {
    /// The conjunction of `filters`' terms that read only tags (and `time`, if `time` says
    /// so) and cannot fail.
    fn safe_terms(&self, filters: &[Expr], time: bool) -> Option<Expr> {
        conjunction(
            filters
                .iter()
                .flat_map(|f| split_conjunction(f))
                .filter(|e| reads_only(e, &self.def, time) && scope::prunes_safely(e))
                .cloned(),
        )
    }

    /// The conjunction of `filters`' terms that read only tags and `time` and cannot fail,
    /// as a physical expression over the table's schema; `None` when there is none.
    fn key_filter(
        &self,
        state: &dyn Session,
        filters: &[Expr],
    ) -> DFResult<Option<Arc<dyn PhysicalExpr>>> {
        let Some(e) = self.safe_terms(filters, true) else {
            return Ok(None);
        };
        let df_schema = DFSchema::try_from(self.schema.clone())?;
        Ok(Some(state.create_physical_expr(e, &df_schema)?))
    }

    /// The rows of one data file (every column, in the table's schema) that `predicate`
    /// keeps, read with footer, statistics and page-index pruning.
    async fn read_file(
        &self,
        state: &dyn Session,
        file: &FileMeta,
        predicate: Option<&Arc<dyn PhysicalExpr>>,
        selection: Selection,
    ) -> DFResult<Vec<RecordBatch>> {
        let mut source = self.parquet_source();
        if let Some(p) = predicate {
            source = source.with_predicate(p.clone());
        }
        let mut piece = PartitionedFile::new(file.path.clone(), file.size);
        match selection {
            Selection::None => return Ok(Vec::new()),
            Selection::All => {}
            Selection::Rows(r) => piece = piece.with_extension(ParquetRowSelection::new(r)),
        }
        let config =
            FileScanConfigBuilder::new(ObjectStoreUrl::parse(OBJECT_STORE_URL)?, Arc::new(source))
                .with_file_groups(vec![FileGroup::new(vec![piece])])
                .build();
        let mut plan: Arc<dyn ExecutionPlan> = DataSourceExec::from_data_source(config);
        if let Some(p) = predicate {
            plan = Arc::new(FilterExec::try_new(p.clone(), plan)?);
        }
        datafusion::physical_plan::collect(plan, state.task_ctx()).await
    }

    /// A Parquet source over the table's schema that reads footers through the store's
    /// metadata cache.
    fn parquet_source(&self) -> ParquetSource {
        ParquetSource::new(self.schema.clone())
            .with_enable_page_index(true)
            // Data files carry no bloom filters: looking for them only costs time.
            .with_bloom_filter_on_read(false)
            .with_parquet_file_reader_factory(Arc::new(reader::IndexedReaderFactory(
                CachedParquetFileReaderFactory::new(
                    self.db.store().clone(),
                    self.db.parquet_metadata(),
                ),
            )))
    }

    /// The conjunction of `filters`' terms that read only tags and cannot fail, over the
    /// table's tag columns alone: what a file's series index evaluates once per series.
    fn series_filter(
        &self,
        state: &dyn Session,
        filters: &[Expr],
    ) -> DFResult<Option<(SchemaRef, Arc<dyn PhysicalExpr>)>> {
        let Some(e) = self.safe_terms(filters, false) else {
            return Ok(None);
        };
        let tags: SchemaRef = Arc::new(arrow::datatypes::Schema::new(
            self.def
                .tag_indices()
                .map(|i| self.schema.field(i).clone())
                .collect::<Vec<_>>(),
        ));
        let df_schema = DFSchema::try_from(tags.clone())?;
        Ok(Some((tags, state.create_physical_expr(e, &df_schema)?)))
    }

    /// Which rows of `file` the series filter can match, from the file's series index.
    async fn series_selection(
        &self,
        file: &FileMeta,
        filter: Option<&(SchemaRef, Arc<dyn PhysicalExpr>)>,
    ) -> DFResult<Selection> {
        let Some((tags, predicate)) = filter else {
            return Ok(Selection::All);
        };
        let Ok(Some(index)) = self.db.series_index(file).await else {
            // No index (or no footer: the scan itself reports that) reads the whole file.
            return Ok(Selection::All);
        };
        let batch = index.series_batch(tags)?;
        let keep = predicate.evaluate(&batch)?.into_array(batch.num_rows())?;
        let keep = keep
            .as_any()
            .downcast_ref::<arrow::array::BooleanArray>()
            .ok_or_else(|| DataFusionError::Internal("a tag filter is not boolean".into()))?;
        Ok(index.selection(keep))
    }
}

/// Whether `e` reads no column but tags (and `time`, if `time` says so).
fn reads_only(e: &Expr, def: &TableDef, time: bool) -> bool {
    let mut ok = true;
    let _ = e.apply(|x| {
        if let Expr::Column(c) = x
            && !(time && c.name == TIME_COLUMN)
            && !def
                .column_index(&c.name)
                .is_some_and(|i| def.columns[i].kind == ColumnKind::Tag)
        {
            ok = false;
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    ok && !matches!(e, Expr::Literal(..))
}

/// The `[min, max]` time range (ns, inclusive) that `filters` allow.
pub fn time_bounds(filters: &[Expr]) -> (i64, i64) {
    let (mut lo, mut hi) = (i64::MIN, i64::MAX);
    let mut apply = |op: Operator, v: i64| match op {
        Operator::Gt => lo = lo.max(v.saturating_add(1)),
        Operator::GtEq => lo = lo.max(v),
        Operator::Lt => hi = hi.min(v.saturating_sub(1)),
        Operator::LtEq => hi = hi.min(v),
        Operator::Eq => {
            lo = lo.max(v);
            hi = hi.min(v);
        }
        _ => {}
    };
    for f in filters {
        for e in split_conjunction(f) {
            match e {
                Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
                    if is_time(left)
                        && let Some(v) = literal_ns(right)
                    {
                        apply(*op, v);
                    } else if is_time(right)
                        && let (Some(v), Some(op)) = (literal_ns(left), op.swap())
                    {
                        apply(op, v);
                    }
                }
                Expr::Between(b) if !b.negated && is_time(&b.expr) => {
                    if let (Some(l), Some(h)) = (literal_ns(&b.low), literal_ns(&b.high)) {
                        apply(Operator::GtEq, l);
                        apply(Operator::LtEq, h);
                    }
                }
                _ => {}
            }
        }
    }
    (lo, hi)
}

fn is_time(e: &Expr) -> bool {
    matches!(e, Expr::Column(c) if c.name == TIME_COLUMN)
}

fn literal_ns(e: &Expr) -> Option<i64> {
    let Expr::Literal(v, _) = e else { return None };
    match v {
        ScalarValue::TimestampNanosecond(Some(x), _) => Some(*x),
        ScalarValue::TimestampMicrosecond(Some(x), _) => x.checked_mul(1_000),
        ScalarValue::TimestampMillisecond(Some(x), _) => x.checked_mul(1_000_000),
        ScalarValue::TimestampSecond(Some(x), _) => x.checked_mul(1_000_000_000),
        _ => None,
    }
}
