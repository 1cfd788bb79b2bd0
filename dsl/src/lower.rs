//! Lowering: a [`Query`] to one SQL statement, a chain of common table expressions, one per
//! step, over the caller's own tables:
//!
//! ```text
//! gpus[5m] | where model == "H100" | stats avg(utilization) by region | sort avg_utilization desc
//!
//! WITH
//!   s0 AS (SELECT * FROM "gpu" WHERE "time" > now() - INTERVAL '5 minutes'),
//!   s1 AS (SELECT * FROM s0 WHERE ("model" = 'H100')),
//!   s2 AS (SELECT "region" AS "region", avg("utilization") AS "avg_utilization" FROM s1 GROUP BY "region")
//! SELECT * FROM s2 ORDER BY "avg_utilization" DESC NULLS LAST
//! ```
//!
//! The lowering tracks the columns of every step (from the caller's schemas, so names are
//! checked against what the caller may read) and their types (so `sum` of a tag is an error
//! here, with a position, rather than a planner message). A `sort` is carried to the final
//! `SELECT` (an `ORDER BY` inside a subquery orders nothing); `top` materialises its
//! `ORDER BY … LIMIT` and is re-sorted at the end.

mod domain;
mod expr;
mod fill;
pub(crate) mod functions;
mod stats;
#[cfg(test)]
mod tests;

use crate::ast::{JoinKey, Noun, Query, Source, SourceKind, StageKind, TimeRange};
use crate::catalog::{Catalog, TableRef, Ty, interval, quote};
use crate::error::{Error, Locator};

/// The SQL of a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lowered {
    /// One `WITH … SELECT …` statement.
    pub sql: String,
    /// `explain` was asked for: answer with `sql` instead of running it.
    pub explain: bool,
}

/// Lowers `query` (parsed from `text`) against the caller's `catalog`.
pub fn lower(text: &str, query: &Query, catalog: &dyn Catalog) -> Result<Lowered, Error> {
    let mut l = Lowerer::new(Locator { text }, catalog, query, String::new());
    let explain = l.pipeline(query)?;
    Ok(Lowered {
        sql: l.finish(),
        explain,
    })
}

impl<'t, 'c> Lowerer<'t, 'c> {
    fn new(loc: Locator<'t>, catalog: &'c dyn Catalog, query: &Query, prefix: String) -> Self {
        Lowerer {
            loc,
            catalog,
            ctes: Vec::new(),
            prefix,
            steps: 0,
            joins: 0,
            cols: Vec::new(),
            what: query.source.qualifier().to_string(),
            primary: query.source.qualifier(),
            noun: None,
            range: None,
            bucket: None,
            joined: false,
            aliases: Vec::new(),
            order: Vec::new(),
            promql_sources: 0,
        }
    }

    /// Lowers the source and every stage; whether `explain` was asked for.
    fn pipeline(&mut self, query: &Query) -> Result<bool, Error> {
        let l = self;
        let (sql, cols) = l.source_sql(&query.source)?;
        if let SourceKind::Table(n) = query.source.kind {
            l.noun = Some(n);
            l.aliases = n.aliases().iter().map(|&(a, c)| (None, a, c)).collect();
            l.range = query.source.range.as_ref().map(|r| l.range_of(r));
        }
        l.cols = cols;
        l.push(sql);
        let mut explain = query.explain;
        for stage in &query.stages {
            // Only a `sort` keeps what `fill` needs to know of the stats before it.
            let bucket = l.bucket.take();
            match &stage.kind {
                StageKind::Where(e) => {
                    let (cond, _) = l.expr(e)?;
                    let prev = l.rel();
                    l.push(format!("SELECT * FROM {prev} WHERE {cond}"));
                }
                StageKind::Extend(assigns) => {
                    for a in assigns {
                        l.extend(&a.name.name, &a.value)?;
                    }
                }
                StageKind::Stats { aggs, by } => l.stats(aggs, by)?,
                StageKind::Join { source, on, left } => l.join(source, on, *left)?,
                StageKind::Sort(keys) => {
                    let mut order = Vec::new();
                    for k in keys {
                        order.push((l.resolve(&k.field)?.name.clone(), k.desc));
                    }
                    l.order = order;
                    l.bucket = bucket;
                }
                StageKind::Fill(value) => l.fill(stage.span, bucket, value.as_ref())?,
                StageKind::Top { n, by } => {
                    let col = l.resolve(by)?.name.clone();
                    let prev = l.rel();
                    l.push(format!(
                        "SELECT * FROM {prev} ORDER BY {} DESC NULLS LAST LIMIT {n}",
                        quote(&col)
                    ));
                    l.order = vec![(col, true)];
                }
                StageKind::Select(fields) => l.select(fields)?,
                StageKind::Explain => explain = true,
            }
        }
        Ok(explain)
    }
}

/// A column of the relation at some step.
#[derive(Debug, Clone)]
pub(crate) struct Col {
    /// The SQL column name (`leases.supplier` after a join).
    pub name: String,
    pub ty: Ty,
}

/// A source's time range, for `uptime()` and `fill`.
#[derive(Debug, Clone)]
pub(crate) struct Range {
    /// Its length.
    pub ms: i64,
    /// Its first instant, as SQL.
    pub start_sql: String,
    /// Its end, as SQL.
    pub end_sql: String,
}

pub(crate) struct Lowerer<'t, 'c> {
    pub loc: Locator<'t>,
    catalog: &'c dyn Catalog,
    /// `(name, SELECT …)` of each step, a joined pipeline's steps before the join's.
    ctes: Vec<(String, String)>,
    /// Before each step's name: empty for the query, `j1_` for its first joined pipeline.
    prefix: String,
    /// This pipeline's own steps so far.
    steps: usize,
    /// Joined pipelines so far (to name their steps apart).
    joins: usize,
    /// The columns of the latest step.
    pub cols: Vec<Col>,
    /// What the latest step reads, for messages ("gpus", "leases joined with gpus").
    pub what: String,
    /// The qualifier of the pipeline's own source.
    pub primary: &'static str,
    /// The source noun while the rows are still that source's rows (not aggregated or
    /// joined): per-series functions need them.
    pub noun: Option<Noun>,
    /// The source's time range while the rows are still that source's rows.
    pub range: Option<Range>,
    /// Set by a `stats … by bucket(…)` for a following `fill`.
    pub bucket: Option<fill::Bucketed>,
    /// Whether columns are qualified (`leases.x`) by a join.
    pub joined: bool,
    /// DSL names for columns: `(qualifier after a join, name, column)`.
    pub aliases: Vec<(Option<&'static str>, &'static str, &'static str)>,
    /// The order the final rows are sorted in: `(column, descending)`.
    order: Vec<(String, bool)>,
    /// `promql(…)` sources seen so far (their tables are numbered in text order).
    promql_sources: usize,
}

impl Lowerer<'_, '_> {
    /// The latest step's name.
    pub fn rel(&self) -> String {
        format!("{}s{}", self.prefix, self.steps.saturating_sub(1))
    }

    /// Adds a step.
    pub fn push(&mut self, select: String) {
        let name = format!("{}s{}", self.prefix, self.steps);
        self.steps += 1;
        self.ctes.push((name, select));
    }

    /// The range of a source, as `uptime()` and `fill` need it.
    fn range_of(&self, r: &TimeRange) -> Range {
        match r {
            TimeRange::Last(d) => Range {
                ms: d.ms,
                start_sql: format!("now() - {}", interval(d.ms)),
                end_sql: "now()".into(),
            },
            TimeRange::Between { from, to, .. } => Range {
                ms: to.unix_ms() - from.unix_ms(),
                start_sql: format!("TIMESTAMP '{}'", from.sql()),
                end_sql: format!("TIMESTAMP '{}'", to.sql()),
            },
        }
    }

    /// The statement: every step, then the final `SELECT` with the pending order.
    fn finish(self) -> String {
        let mut out = String::from("WITH\n");
        for (i, (name, body)) in self.ctes.iter().enumerate() {
            let sep = if i + 1 == self.ctes.len() { "" } else { "," };
            out.push_str(&format!("  {name} AS ({body}){sep}\n"));
        }
        out.push_str(&format!("SELECT * FROM {}", self.rel()));
        if !self.order.is_empty() {
            let keys: Vec<String> = self
                .order
                .iter()
                .map(|(c, desc)| {
                    format!(
                        "{} {} NULLS LAST",
                        quote(c),
                        if *desc { "DESC" } else { "ASC" }
                    )
                })
                .collect();
            out.push_str(&format!(" ORDER BY {}", keys.join(", ")));
        }
        out
    }

    /// The `SELECT` of a source with its time range, and its columns.
    fn source_sql(&mut self, source: &Source) -> Result<(String, Vec<Col>), Error> {
        let table = match &source.kind {
            SourceKind::Table(n) => TableRef::stored(n.table()),
            SourceKind::Promql { .. } => {
                self.promql_sources += 1;
                TableRef::promql(self.promql_sources - 1)
            }
            SourceKind::Pipeline(q) => return self.joined_pipeline(q),
        };
        let schema = self.catalog.schema(&table).ok_or_else(|| Error::NoTable {
            pos: self.loc.pos(source.span),
            source_name: source.qualifier().to_string(),
            table: table.name.clone(),
        })?;
        let cols: Vec<Col> = schema
            .fields()
            .iter()
            .map(|f| Col {
                name: f.name().clone(),
                ty: Ty::from_arrow(f.data_type()),
            })
            .collect();
        let mut sql = format!("SELECT * FROM {}", table.sql());
        // A promql source's rows are already its range.
        if let SourceKind::Table(_) = source.kind {
            match &source.range {
                Some(TimeRange::Last(d)) => {
                    sql.push_str(&format!(" WHERE \"time\" > now() - {}", interval(d.ms)));
                }
                Some(TimeRange::Between { from, to, .. }) => sql.push_str(&format!(
                    " WHERE \"time\" >= TIMESTAMP '{}' AND \"time\" < TIMESTAMP '{}'",
                    from.sql(),
                    to.sql()
                )),
                None => {}
            }
        }
        Ok((sql, cols))
    }

    fn extend(&mut self, name: &str, value: &crate::ast::Expr) -> Result<(), Error> {
        let (sql, ty) = self.expr(value)?;
        let prev = self.rel();
        if self.cols.iter().any(|c| c.name == name) {
            let list: Vec<String> = self
                .cols
                .iter()
                .map(|c| {
                    if c.name == name {
                        format!("{sql} AS {}", quote(name))
                    } else {
                        quote(&c.name)
                    }
                })
                .collect();
            self.push(format!("SELECT {} FROM {prev}", list.join(", ")));
            if let Some(c) = self.cols.iter_mut().find(|c| c.name == name) {
                c.ty = ty;
            }
        } else {
            self.push(format!("SELECT *, {sql} AS {} FROM {prev}", quote(name)));
            self.cols.push(Col {
                name: name.to_string(),
                ty,
            });
        }
        Ok(())
    }

    fn select(&mut self, fields: &[crate::ast::FieldRef]) -> Result<(), Error> {
        let mut cols: Vec<Col> = Vec::new();
        for f in fields {
            let c = self.resolve(f)?.clone();
            if cols.iter().any(|x| x.name == c.name) {
                return Err(Error::DuplicateColumn {
                    pos: self.loc.pos(f.span),
                    name: c.name,
                });
            }
            cols.push(c);
        }
        if let Some((dropped, _)) = self
            .order
            .iter()
            .find(|(o, _)| !cols.iter().any(|c| &c.name == o))
        {
            return Err(Error::Misplaced {
                pos: self.loc.pos(fields[0].span),
                what: format!("this `select` drops `{dropped}`, which an earlier `sort`"),
                rule: "orders by: select it too, or sort after the select",
            });
        }
        // After a join a selected field is named by its last part (`leases.supplier` is
        // `supplier`) unless another selected field has the same last part.
        let last = |n: &str| n.rsplit_once('.').map_or(n, |(_, l)| l).to_string();
        let renamed: Vec<String> = cols
            .iter()
            .map(|c| {
                let short = last(&c.name);
                let unique = cols.iter().filter(|o| last(&o.name) == short).count() == 1;
                if self.joined && unique {
                    short
                } else {
                    c.name.clone()
                }
            })
            .collect();
        let list: Vec<String> = cols
            .iter()
            .zip(&renamed)
            .map(|(c, n)| {
                if &c.name == n {
                    quote(n)
                } else {
                    format!("{} AS {}", quote(&c.name), quote(n))
                }
            })
            .collect();
        let prev = self.rel();
        self.push(format!("SELECT {} FROM {prev}", list.join(", ")));
        for (o, _) in &mut self.order {
            if let Some(i) = cols.iter().position(|c| &c.name == o) {
                *o = renamed[i].clone();
            }
        }
        self.cols = cols
            .into_iter()
            .zip(renamed)
            .map(|(c, name)| Col { name, ty: c.ty })
            .collect();
        if self.joined && !self.cols.iter().any(|c| c.name.contains('.')) {
            self.joined = false;
            self.aliases.clear();
            self.what = "the selected fields".into();
        }
        Ok(())
    }

    /// A `join (…)` pipeline: its steps join this query's (named apart), and its result is
    /// read like a table.
    fn joined_pipeline(&mut self, q: &Query) -> Result<(String, Vec<Col>), Error> {
        self.joins += 1;
        let prefix = format!("{}j{}_", self.prefix, self.joins);
        let mut inner = Lowerer::new(self.loc, self.catalog, q, prefix);
        inner.promql_sources = self.promql_sources;
        inner.pipeline(q)?;
        self.promql_sources = inner.promql_sources;
        let sql = format!("SELECT * FROM {}", inner.rel());
        self.ctes.append(&mut inner.ctes);
        Ok((sql, inner.cols))
    }

    fn join(&mut self, source: &Source, on: &[JoinKey], left_join: bool) -> Result<(), Error> {
        let q = source.qualifier();
        let taken = q == self.primary && !self.joined
            || self
                .cols
                .iter()
                .any(|c| c.name.strip_prefix(q).is_some_and(|r| r.starts_with('.')));
        if taken {
            return Err(Error::Misplaced {
                pos: self.loc.pos(source.span),
                what: format!("`join {q}`: `{q}` is already in the pipeline;"),
                rule: "each source can be joined once",
            });
        }
        let (right_sql, right_cols) = self.source_sql(source)?;
        let mut conds = Vec::new();
        for key in on {
            let (left, right) = match key {
                JoinKey::Same(f) => (f, f),
                JoinKey::Pair(l, r) => (l, r),
            };
            let lcol = self.resolve(left)?.name.clone();
            let rname = match &right.qualifier {
                Some(rq) if rq == q => right.name.as_str(),
                Some(_) if matches!(key, JoinKey::Same(_)) => right.name.as_str(),
                Some(rq) => {
                    return Err(Error::Misplaced {
                        pos: self.loc.pos(right.span),
                        what: format!("`{rq}.{}`: the right side of a join key", right.name),
                        rule: "names a field of the joined source",
                    });
                }
                None => right.name.as_str(),
            };
            if !right_cols.iter().any(|c| c.name == rname) {
                return Err(Error::UnknownField {
                    pos: self.loc.pos(right.span),
                    name: rname.to_string(),
                    relation: q.to_string(),
                    suggestion: crate::error::Suggestion(crate::suggest::nearest(
                        rname,
                        right_cols.iter().map(|c| c.name.as_str()),
                    )),
                });
            }
            conds.push(format!("l.{} = r.{}", quote(&lcol), quote(rname)));
        }
        let mut list = Vec::new();
        let mut cols = Vec::new();
        for c in &self.cols {
            let name = if self.joined {
                c.name.clone()
            } else {
                format!("{}.{}", self.primary, c.name)
            };
            list.push(format!("l.{} AS {}", quote(&c.name), quote(&name)));
            cols.push(Col { name, ty: c.ty });
        }
        for c in &right_cols {
            let name = format!("{q}.{}", c.name);
            list.push(format!("r.{} AS {}", quote(&c.name), quote(&name)));
            cols.push(Col { name, ty: c.ty });
        }
        let prev = self.rel();
        let kind = if left_join { "LEFT JOIN" } else { "JOIN" };
        self.push(format!(
            "SELECT {} FROM {prev} AS l {kind} ({right_sql}) AS r ON {}",
            list.join(", "),
            conds.join(" AND ")
        ));
        if !self.joined {
            for a in &mut self.aliases {
                a.0 = a.0.or(Some(self.primary));
            }
        }
        if let SourceKind::Table(n) = source.kind {
            self.aliases
                .extend(n.aliases().iter().map(|&(a, c)| (Some(q), a, c)));
        }
        self.what = format!("{} joined with {q}", self.what);
        self.cols = cols;
        self.joined = true;
        self.noun = None;
        self.range = None;
        self.order.clear();
        Ok(())
    }

    /// A stats step resets what the rows are.
    pub(crate) fn reset_after_stats(&mut self, cols: Vec<Col>) {
        self.cols = cols;
        self.what = "the stats result".into();
        self.noun = None;
        self.range = None;
        self.joined = false;
        self.aliases.clear();
        self.order.clear();
    }
}
