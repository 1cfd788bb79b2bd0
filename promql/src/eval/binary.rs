//! Binary operators: arithmetic, comparison (with and without `bool`) and set
//! operators, with `on`/`ignoring` and `group_left`/`group_right` vector matching.

use std::collections::{HashMap, HashSet};

use super::{EvalError, Evaluator, VSample, Val};
use crate::ast::{BinOp, BinaryExpr, Cardinality, VectorMatching};
use crate::value::{Labels, METRIC_NAME};

/// Applies `op` to two floats. Returns the value and whether a comparison holds
/// (always true for arithmetic).
pub(crate) fn scalar_binop(op: BinOp, l: f64, r: f64) -> (f64, bool) {
    match op {
        BinOp::Add => (l + r, true),
        BinOp::Sub => (l - r, true),
        BinOp::Mul => (l * r, true),
        BinOp::Div => (l / r, true),
        BinOp::Mod => (l % r, true),
        BinOp::Pow => (l.powf(r), true),
        BinOp::Atan2 => (l.atan2(r), true),
        BinOp::Eq => (l, l == r),
        BinOp::Ne => (l, l != r),
        BinOp::Gt => (l, l > r),
        BinOp::Lt => (l, l < r),
        BinOp::Ge => (l, l >= r),
        BinOp::Le => (l, l <= r),
        BinOp::And | BinOp::Or | BinOp::Unless => (f64::NAN, false),
    }
}

/// Matching signature of a sample's labels.
fn signature(m: &VectorMatching, l: &Labels) -> u64 {
    if m.on {
        l.hash_on(&m.labels)
    } else {
        l.hash_without(&m.labels, true)
    }
}

/// The labels a match group is reported with in errors.
fn match_labels(m: &VectorMatching, l: &Labels) -> Labels {
    if m.on {
        let names: Vec<&str> = m.labels.iter().map(String::as_str).collect();
        l.keep(&names)
    } else {
        let mut names: Vec<&str> = m.labels.iter().map(String::as_str).collect();
        names.push(METRIC_NAME);
        l.without(&names)
    }
}

impl Evaluator<'_> {
    /// Evaluates both operands, then combines them. Kept small: its frame is on the
    /// stack once per level of a chain like `a + b + c + ...` (see `MAX_DEPTH`).
    pub(crate) fn eval_binary<'s>(&'s self, b: &BinaryExpr, t: i64) -> Result<Val<'s>, EvalError> {
        let lhs = self.eval(&b.lhs, t)?;
        let rhs = self.eval(&b.rhs, t)?;
        self.combine(b, lhs, rhs)
    }

    #[inline(never)]
    fn combine<'s>(
        &'s self,
        b: &BinaryExpr,
        lhs: Val<'s>,
        rhs: Val<'s>,
    ) -> Result<Val<'s>, EvalError> {
        match (lhs, rhs) {
            (Val::Scalar(l), Val::Scalar(r)) => {
                let (v, keep) = scalar_binop(b.op, l, r);
                if b.op.is_comparison() {
                    Ok(Val::Scalar(if keep { 1.0 } else { 0.0 }))
                } else {
                    Ok(Val::Scalar(v))
                }
            }
            (Val::Vector(v), Val::Scalar(s)) => Ok(Val::Vector(self.vector_scalar(b, v, s, false))),
            (Val::Scalar(s), Val::Vector(v)) => Ok(Val::Vector(self.vector_scalar(b, v, s, true))),
            (Val::Vector(l), Val::Vector(r)) => {
                let default = VectorMatching {
                    card: if b.op.is_set() {
                        Cardinality::ManyToMany
                    } else {
                        Cardinality::OneToOne
                    },
                    on: false,
                    labels: vec![],
                    include: vec![],
                };
                let m = b.matching.as_ref().unwrap_or(&default);
                let out = match b.op {
                    BinOp::And => and(m, l, r),
                    BinOp::Or => or(m, l, r),
                    BinOp::Unless => unless(m, l, r),
                    _ => vector_vector(b.op, b.return_bool, m, l, r)?,
                };
                Ok(Val::Vector(out))
            }
            (l, r) => Err(EvalError::Unsupported(format!(
                "binary operator {} not defined between {} and {}",
                b.op.as_str(),
                l.type_name(),
                r.type_name()
            ))),
        }
    }

    fn vector_scalar(&self, b: &BinaryExpr, v: Vec<VSample>, s: f64, swap: bool) -> Vec<VSample> {
        let cmp = b.op.is_comparison();
        let mut out = Vec::with_capacity(v.len());
        for mut x in v {
            let (l, r) = if swap { (s, x.v) } else { (x.v, s) };
            let (mut val, keep) = scalar_binop(b.op, l, r);
            if cmp && swap {
                val = x.v;
            }
            if b.return_bool {
                val = if keep { 1.0 } else { 0.0 };
            } else if !keep {
                continue;
            }
            if !cmp || b.return_bool {
                x.drop_name = true;
            }
            x.v = val;
            out.push(x);
        }
        out
    }
}

fn and(m: &VectorMatching, l: Vec<VSample>, r: Vec<VSample>) -> Vec<VSample> {
    let sigs: HashSet<u64> = r.iter().map(|s| signature(m, &s.labels)).collect();
    l.into_iter()
        .filter(|s| sigs.contains(&signature(m, &s.labels)))
        .collect()
}

fn or(m: &VectorMatching, mut l: Vec<VSample>, r: Vec<VSample>) -> Vec<VSample> {
    let sigs: HashSet<u64> = l.iter().map(|s| signature(m, &s.labels)).collect();
    l.extend(
        r.into_iter()
            .filter(|s| !sigs.contains(&signature(m, &s.labels))),
    );
    l
}

fn unless(m: &VectorMatching, l: Vec<VSample>, r: Vec<VSample>) -> Vec<VSample> {
    let sigs: HashSet<u64> = r.iter().map(|s| signature(m, &s.labels)).collect();
    l.into_iter()
        .filter(|s| !sigs.contains(&signature(m, &s.labels)))
        .collect()
}

fn vector_vector(
    op: BinOp,
    return_bool: bool,
    m: &VectorMatching,
    lhs: Vec<VSample>,
    rhs: Vec<VSample>,
) -> Result<Vec<VSample>, EvalError> {
    if m.card == Cardinality::ManyToMany {
        return Err(EvalError::Unsupported(
            "many-to-many only allowed for set operators".into(),
        ));
    }
    let swapped = m.card == Cardinality::OneToMany;
    let (many, one) = if swapped { (rhs, lhs) } else { (lhs, rhs) };
    // The "one" side must be unique per signature.
    let mut one_sigs: HashMap<u64, usize> = HashMap::with_capacity(one.len());
    for (i, s) in one.iter().enumerate() {
        let sig = signature(m, &s.labels);
        if let Some(&j) = one_sigs.get(&sig) {
            let (a, b) = {
                let (x, y) = (&one[j].labels, &s.labels);
                if x <= y { (x, y) } else { (y, x) }
            };
            return Err(EvalError::ManyToMany {
                group: match_labels(m, &s.labels).to_string(),
                side: if swapped { "left" } else { "right" },
                first: a.to_string(),
                second: b.to_string(),
            });
        }
        one_sigs.insert(sig, i);
    }
    let cmp = op.is_comparison();
    let names: Vec<&str> = m.labels.iter().map(String::as_str).collect();
    let mut matched: HashMap<u64, HashSet<u64>> = HashMap::new();
    let mut out = Vec::with_capacity(many.len());
    for ls in many {
        let sig = signature(m, &ls.labels);
        let Some(&ri) = one_sigs.get(&sig) else {
            continue;
        };
        let rs = &one[ri];
        if m.card == Cardinality::OneToOne && matched.insert(sig, HashSet::new()).is_some() {
            return Err(EvalError::MultipleMatches);
        }
        let (fl, fr) = if swapped { (rs.v, ls.v) } else { (ls.v, rs.v) };
        let (mut val, keep) = scalar_binop(op, fl, fr);
        if return_bool {
            val = if keep { 1.0 } else { 0.0 };
        } else if !keep {
            continue;
        }
        let metric = result_metric(&ls.labels, &rs.labels, m, &names);
        if m.card != Cardinality::OneToOne {
            let set = matched.entry(sig).or_default();
            if !set.insert(metric.hash_all()) {
                return Err(EvalError::InvalidArgument(
                    "multiple matches for labels: grouping labels must ensure unique matches"
                        .into(),
                ));
            }
        }
        out.push(VSample {
            labels: metric,
            v: val,
            drop_name: ls.drop_name || return_bool || !cmp,
        });
    }
    Ok(out)
}

/// The labels of a vector-vector result: the "many" side's, reduced to the
/// matching labels for one-to-one `on`, without them for one-to-one `ignoring`,
/// plus `group_x` labels copied from the "one" side.
fn result_metric(l: &Labels, r: &Labels, m: &VectorMatching, names: &[&str]) -> Labels {
    let mut out = l.clone();
    if m.card == Cardinality::OneToOne {
        out = if m.on {
            out.keep(names)
        } else {
            out.without(names)
        };
    }
    for name in &m.include {
        out = out.with(name, r.get(name).unwrap_or(""));
    }
    out
}
