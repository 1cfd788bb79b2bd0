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
//!   alone in their      merged here with last-write-wins per field
//!   partition; stats
//!   and page pruning)
//! ```
//!
//! Filters are pushed down as `Inexact`: they prune, and DataFusion still applies them.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{SchemaProvider, Session, TableProvider};
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::datasource::TableType;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::{DataFusionError, Result as DFResult};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::utils::{conjunction, split_conjunction};
use datafusion::logical_expr::{BinaryExpr, Expr, Operator, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::union::UnionExec;
use datafusion::prelude::SessionContext;

use crate::batch::TIME_COLUMN;
use crate::catalog::FileMeta;
use crate::db::Db;
use crate::schema::TableDef;
use crate::{dedup, persist};

/// The URL under which the database's object store is registered with DataFusion.
pub const OBJECT_STORE_URL: &str = "rigwatch://store";

/// Registers the object store and every table of `db` as the default schema of `ctx`.
pub fn register(db: &Arc<Db>, ctx: &SessionContext) -> DFResult<()> {
    let url = ObjectStoreUrl::parse(OBJECT_STORE_URL)?;
    ctx.register_object_store(url.as_ref(), db.store().clone());
    let catalog = ctx
        .catalog("datafusion")
        .ok_or_else(|| DataFusionError::Internal("default catalog missing".into()))?;
    catalog.register_schema("public", Arc::new(DbSchema { db: db.clone() }))?;
    Ok(())
}

/// All tables of a [`Db`].
#[derive(Debug)]
pub struct DbSchema {
    db: Arc<Db>,
}

impl DbSchema {
    pub fn new(db: Arc<Db>) -> Self {
        Self { db }
    }
}

#[async_trait]
impl SchemaProvider for DbSchema {
    fn table_names(&self) -> Vec<String> {
        self.db.schemas().names()
    }

    async fn table(&self, name: &str) -> DFResult<Option<Arc<dyn TableProvider>>> {
        Ok(self
            .db
            .table(name)
            .map(|def| Arc::new(DbTable::new(self.db.clone(), def)) as Arc<dyn TableProvider>))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.db.table(name).is_some()
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
        let mut parts: BTreeMap<i64, (Vec<FileMeta>, Vec<RecordBatch>)> = BTreeMap::new();
        for f in snap.files {
            parts.entry(f.partition).or_default().0.push(f);
        }
        for (p, b) in snap.buffered {
            parts.entry(p).or_default().1.push(b);
        }
        let mut direct = Vec::new();
        let mut memory = Vec::new();
        for (_, (files, batches)) in parts {
            if self.def.append_only || files.len() + batches.len() <= 1 {
                direct.extend(files);
                memory.extend(batches);
                continue;
            }
            let mut inputs = Vec::new();
            for f in &files {
                match persist::read(self.db.store(), &f.path, &self.schema).await {
                    Ok(b) => inputs.extend(b),
                    Err(e) => self.db.quarantine(f, &e.to_string()),
                }
            }
            inputs.extend(batches);
            memory.push(dedup::merge(&self.def, &self.schema, &inputs)?);
        }

        let target = state.config().target_partitions().max(1);
        let mut plans: Vec<Arc<dyn ExecutionPlan>> = Vec::new();
        if !direct.is_empty() {
            let mut source = ParquetSource::new(self.schema.clone()).with_enable_page_index(true);
            if let Some(expr) = conjunction(filters.to_vec()) {
                let df_schema = DFSchema::try_from(self.schema.clone())?;
                source = source.with_predicate(state.create_physical_expr(expr, &df_schema)?);
            }
            let mut groups = vec![Vec::new(); target.min(direct.len())];
            let n = groups.len();
            for (i, f) in direct.iter().enumerate() {
                groups[i % n].push(PartitionedFile::new(f.path.clone(), f.size));
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
