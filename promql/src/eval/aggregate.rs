//! Aggregation operators (`sum`, `avg`, `topk`, `quantile`, `count_values`, ...).

use std::collections::HashMap;

use super::{EvalError, Evaluator, VSample, Val};
use crate::ast::{AggOp, AggregateExpr, Grouping};
use crate::functions::{kahan_inc, quantile};
use crate::value::{Labels, METRIC_NAME};

/// Running state of one group's value, for the operators that fold each sample into a few
/// numbers (`sum`, `avg`, `count`, `group`, `min`, `max`, `stddev`, `stdvar`): the one
/// home of their arithmetic, shared by the step-at-a-time evaluation and the
/// series-at-a-time range path (`range_agg.rs`), so that both give identical floats.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Acc {
    value: f64,
    kahan: f64,
    mean: f64,
    pub count: f64,
    incremental_mean: bool,
}

impl Acc {
    /// Whether `op` folds into an [`Acc`].
    pub fn folds(op: AggOp) -> bool {
        matches!(
            op,
            AggOp::Sum
                | AggOp::Avg
                | AggOp::Count
                | AggOp::Group
                | AggOp::Max
                | AggOp::Min
                | AggOp::Stddev
                | AggOp::Stdvar
        )
    }

    /// Folds in `v` (`op` one that [`Acc::folds`], or `count_values`).
    #[inline]
    pub fn add(&mut self, op: AggOp, v: f64) {
        let first = self.count == 0.0;
        self.count += 1.0;
        match op {
            AggOp::Sum => {
                if first {
                    self.value = v;
                } else {
                    (self.value, self.kahan) = kahan_inc(v, self.value, self.kahan);
                }
            }
            AggOp::Avg => avg_add(self, v, first),
            AggOp::Count | AggOp::CountValues => self.value = self.count,
            AggOp::Group => self.value = 1.0,
            AggOp::Max if first || self.value < v || self.value.is_nan() => self.value = v,
            AggOp::Min if first || self.value > v || self.value.is_nan() => self.value = v,
            AggOp::Stddev | AggOp::Stdvar => {
                let delta = v - (self.mean + self.kahan);
                (self.mean, self.kahan) = kahan_inc(delta / self.count, self.mean, self.kahan);
                self.value += delta * (v - (self.mean + self.kahan));
            }
            _ => {}
        }
    }

    /// The group's value (`op` one that [`Acc::folds`], or `count_values`).
    pub fn result(&self, op: AggOp) -> f64 {
        match op {
            AggOp::Sum => {
                if self.value.is_infinite() {
                    self.value
                } else {
                    self.value + self.kahan
                }
            }
            AggOp::Avg => {
                if self.incremental_mean {
                    self.mean + self.kahan
                } else {
                    (self.value + self.kahan) / self.count
                }
            }
            AggOp::Stdvar => self.value / self.count,
            AggOp::Stddev => (self.value / self.count).sqrt(),
            _ => self.value,
        }
    }
}

/// Which group a sample's labels fall in, by `by (…)` or `without (…)`.
pub(super) struct Grouper<'a> {
    without: bool,
    names: &'a [String],
    name_refs: Vec<&'a str>,
    /// `without`'s names and the metric name, which a group never keeps.
    without_refs: Vec<&'a str>,
}

impl<'a> Grouper<'a> {
    pub fn new(grouping: &'a Grouping) -> Self {
        let (without, names): (bool, &[String]) = match grouping {
            Grouping::By(n) => (false, n),
            Grouping::Without(n) => (true, n),
        };
        let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut without_refs = name_refs.clone();
        without_refs.push(METRIC_NAME);
        Self {
            without,
            names,
            name_refs,
            without_refs,
        }
    }

    /// The hash of the labels that decide the group.
    pub fn key(&self, labels: &Labels) -> u64 {
        if self.without {
            labels.hash_without(self.names, true)
        } else {
            labels.hash_on(self.names)
        }
    }

    /// The group's label set.
    pub fn labels(&self, labels: &Labels) -> Labels {
        if self.without {
            labels.without(&self.without_refs)
        } else {
            labels.keep(&self.name_refs)
        }
    }
}

/// Running state of one group.
struct Group {
    labels: Labels,
    acc: Acc,
    drop_name: bool,
    /// Members kept (topk, bottomk, limitk, limit_ratio) or values (quantile).
    members: Vec<VSample>,
    values: Vec<f64>,
}

impl Evaluator<'_> {
    pub(crate) fn eval_aggregate<'s>(
        &'s self,
        a: &AggregateExpr,
        t: i64,
    ) -> Result<Val<'s>, EvalError> {
        let input = self.eval_vector(&a.expr, t)?;
        // Parameter.
        let mut k = 0i64;
        let mut q = 0.0;
        let mut ratio = 0.0;
        let mut count_label = String::new();
        match a.op {
            AggOp::Topk | AggOp::Bottomk | AggOp::Limitk => {
                let p = self.eval_param_scalar(a, t)?;
                if p.is_nan() {
                    return Err(EvalError::InvalidArgument("Parameter value is NaN".into()));
                }
                if !(-9.223_372_036_854_776e18..9.223_372_036_854_776e18).contains(&p) {
                    return Err(EvalError::InvalidArgument(format!(
                        "Scalar value {p} overflows int64"
                    )));
                }
                k = p as i64;
                if k < 1 {
                    return Ok(Val::Vector(vec![]));
                }
            }
            AggOp::Quantile => {
                q = self.eval_param_scalar(a, t)?;
                if !(0.0..=1.0).contains(&q) {
                    self.warn(format!(
                        "quantile value should be between 0 and 1, got {}",
                        crate::functions::fmt_g(q)
                    ));
                }
            }
            AggOp::LimitRatio => {
                let p = self.eval_param_scalar(a, t)?;
                if p.is_nan() {
                    return Err(EvalError::InvalidArgument("Ratio value is NaN".into()));
                }
                ratio = p;
                if !(-1.0..=1.0).contains(&p) {
                    let capped = p.clamp(-1.0, 1.0);
                    self.warn(format!(
                        "ratio value should be between -1 and 1, got {}, capping to {}",
                        crate::functions::fmt_g(p),
                        crate::functions::fmt_g(capped)
                    ));
                    ratio = capped;
                }
                if ratio == 0.0 {
                    return Ok(Val::Vector(vec![]));
                }
            }
            AggOp::CountValues => {
                let Some(p) = &a.param else {
                    return Err(EvalError::Internal("count_values without a label".into()));
                };
                count_label = self.eval_string(p, t)?;
                if count_label.is_empty() {
                    return Err(EvalError::InvalidLabelName {
                        what: "label",
                        name: count_label,
                    });
                }
            }
            _ => {}
        }

        let grouping = Grouper::new(&a.grouping);
        let mut order: Vec<Group> = Vec::new();
        let mut index: HashMap<u64, usize> = HashMap::new();
        let mut cv_buf = String::new();
        for s in input {
            let mut key = grouping.key(&s.labels);
            if a.op == AggOp::CountValues {
                cv_buf.clear();
                cv_buf.push_str(&crate::functions::fmt_float(s.v));
                key = key.wrapping_mul(31).wrapping_add(hash_str(&cv_buf));
            }
            let gi = match index.get(&key) {
                Some(&i) => i,
                None => {
                    let mut labels = grouping.labels(&s.labels);
                    if a.op == AggOp::CountValues {
                        labels = labels.with(&count_label, &cv_buf);
                    }
                    order.push(Group {
                        labels,
                        acc: Acc::default(),
                        drop_name: false,
                        members: Vec::new(),
                        values: Vec::new(),
                    });
                    index.insert(key, order.len() - 1);
                    order.len() - 1
                }
            };
            let g = &mut order[gi];
            g.drop_name |= s.drop_name;
            match a.op {
                AggOp::Sum
                | AggOp::Avg
                | AggOp::Count
                | AggOp::CountValues
                | AggOp::Group
                | AggOp::Max
                | AggOp::Min
                | AggOp::Stddev
                | AggOp::Stdvar => g.acc.add(a.op, s.v),
                AggOp::Quantile => g.values.push(s.v),
                AggOp::Topk | AggOp::Bottomk => {
                    let top = a.op == AggOp::Topk;
                    // `worse(a, b)`: a ranks below b (NaN ranks lowest either way).
                    let worse = |x: f64, y: f64| {
                        if x.is_nan() {
                            return !y.is_nan();
                        }
                        if y.is_nan() {
                            return false;
                        }
                        if top { x < y } else { x > y }
                    };
                    if (g.members.len() as i64) < k {
                        g.members.push(s);
                    } else {
                        // Replace the worst member if the new sample ranks above it.
                        let mut wi = 0;
                        for (i, m) in g.members.iter().enumerate() {
                            if worse(m.v, g.members[wi].v) {
                                wi = i;
                            }
                        }
                        if worse(g.members[wi].v, s.v) {
                            g.members[wi] = s;
                        }
                    }
                }
                AggOp::Limitk => {
                    if (g.members.len() as i64) < k {
                        g.members.push(s);
                    }
                }
                AggOp::LimitRatio => {
                    let off = ratio_offset(&s.labels);
                    let keep = if ratio >= 0.0 {
                        off < ratio
                    } else {
                        off >= 1.0 + ratio
                    };
                    if keep {
                        g.members.push(s);
                    }
                }
            }
        }

        let mut out = Vec::with_capacity(order.len());
        for mut g in order {
            let value = match a.op {
                AggOp::Quantile => quantile(q, &mut g.values),
                AggOp::Topk | AggOp::Bottomk => {
                    let top = a.op == AggOp::Topk;
                    g.members.sort_by(|x, y| {
                        use std::cmp::Ordering;
                        match (x.v.is_nan(), y.v.is_nan()) {
                            (true, true) => Ordering::Equal,
                            (true, false) => Ordering::Greater,
                            (false, true) => Ordering::Less,
                            _ => {
                                if top {
                                    y.v.partial_cmp(&x.v).unwrap_or(Ordering::Equal)
                                } else {
                                    x.v.partial_cmp(&y.v).unwrap_or(Ordering::Equal)
                                }
                            }
                        }
                    });
                    out.append(&mut g.members);
                    continue;
                }
                AggOp::Limitk | AggOp::LimitRatio => {
                    out.append(&mut g.members);
                    continue;
                }
                op => g.acc.result(op),
            };
            out.push(VSample {
                labels: g.labels,
                v: value,
                drop_name: g.drop_name,
            });
        }
        Ok(Val::Vector(out))
    }

    fn eval_param_scalar(&self, a: &AggregateExpr, t: i64) -> Result<f64, EvalError> {
        match &a.param {
            Some(p) => self.eval_scalar(p, t),
            None => Err(EvalError::Internal(format!(
                "{} without a parameter",
                a.op.as_str()
            ))),
        }
    }
}

fn avg_add(g: &mut Acc, v: f64, first: bool) {
    if first {
        g.value = v;
        g.kahan = 0.0;
        return;
    }
    if !g.incremental_mean {
        let (nv, nc) = kahan_inc(v, g.value, g.kahan);
        if !nv.is_infinite() {
            g.value = nv;
            g.kahan = nc;
            return;
        }
        g.incremental_mean = true;
        g.mean = g.value / (g.count - 1.0);
        g.kahan /= g.count - 1.0;
    }
    if g.mean.is_infinite() {
        if v.is_infinite() && (g.mean > 0.0) == (v > 0.0) {
            return;
        }
        if !v.is_infinite() && !v.is_nan() {
            return;
        }
    }
    let cur = g.mean + g.kahan;
    (g.mean, g.kahan) = kahan_inc(v / g.count - cur / g.count, g.mean, g.kahan);
}

fn hash_str(s: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    s.hash(&mut h);
    h.finish()
}

/// Where a series falls in `[0, 1)` for `limit_ratio`: a stable hash of its labels.
fn ratio_offset(l: &Labels) -> f64 {
    l.hash_all() as f64 / u64::MAX as f64
}
