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

mod expr;
mod functions;
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
    let mut l = Lowerer {
        loc: Locator { text },
        catalog,
        ctes: Vec::new(),
        cols: Vec::new(),
        what: query.source.qualifier().to_string(),
        primary: query.source.qualifier(),
        noun: None,
        joined: false,
        aliases: Vec::new(),
        order: Vec::new(),
        promql_sources: 0,
    };
    let (sql, cols) = l.source_sql(&query.source)?;
    if let SourceKind::Table(n) = query.source.kind {
        l.noun = Some(n);
        l.aliases = n.aliases().iter().map(|&(a, c)| (None, a, c)).collect();
    }
    l.cols = cols;
    l.push(sql);
    let mut explain = query.explain;
    for stage in &query.stages {
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
            StageKind::Join { source, on } => l.join(source, on)?,
            StageKind::Sort(keys) => {
                let mut order = Vec::new();
                for k in keys {
                    order.push((l.resolve(&k.field)?.name.clone(), k.desc));
                }
                l.order = order;
            }
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
    Ok(Lowered {
        sql: l.finish(),
        explain,
    })
}

/// A column of the relation at some step.
#[derive(Debug, Clone)]
pub(crate) struct Col {
    /// The SQL column name (`leases.supplier` after a join).
    pub name: String,
    pub ty: Ty,
}

pub(crate) struct Lowerer<'t, 'c> {
    pub loc: Locator<'t>,
    catalog: &'c dyn Catalog,
    /// `(name, SELECT …)` of each step.
    ctes: Vec<(String, String)>,
    /// The columns of the latest step.
    pub cols: Vec<Col>,
    /// What the latest step reads, for messages ("gpus", "leases joined with gpus").
    pub what: String,
    /// The qualifier of the pipeline's own source.
    pub primary: &'static str,
    /// The source noun while the rows are still that source's rows (not aggregated or
    /// joined): per-series functions need them.
    pub noun: Option<Noun>,
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
        match self.ctes.len() {
            0 => "s0".into(),
            n => format!("s{}", n - 1),
        }
    }

    /// Adds a step.
    pub fn push(&mut self, select: String) {
        let name = format!("s{}", self.ctes.len());
        self.ctes.push((name, select));
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
        let list: Vec<String> = cols.iter().map(|c| quote(&c.name)).collect();
        let prev = self.rel();
        self.push(format!("SELECT {} FROM {prev}", list.join(", ")));
        self.cols = cols;
        Ok(())
    }

    fn join(&mut self, source: &Source, on: &[JoinKey]) -> Result<(), Error> {
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
        self.push(format!(
            "SELECT {} FROM {prev} AS l JOIN ({right_sql}) AS r ON {}",
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
        self.order.clear();
        Ok(())
    }

    /// A stats step resets what the rows are.
    pub(crate) fn reset_after_stats(&mut self, cols: Vec<Col>) {
        self.cols = cols;
        self.what = "the stats result".into();
        self.noun = None;
        self.joined = false;
        self.aliases.clear();
        self.order.clear();
    }
}
