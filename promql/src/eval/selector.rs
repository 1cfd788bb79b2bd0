//! Instant and range vector selectors and subqueries.

use std::borrow::Cow;
use std::collections::HashMap;
use std::rc::Rc;

use super::cursor::seek;
use super::{EvalError, Evaluator, RSeries, VSample, Val, subquery_steps};
use crate::ast::VectorSelector;
use crate::value::{Labels, Sample, is_stale_nan};

impl Evaluator<'_> {
    /// The latest sample of each selected series in `(ref - lookback, ref]`, unless
    /// it is a staleness marker. With `keep_ts`, values are the sample timestamps in
    /// seconds (for `timestamp()`).
    pub fn eval_vector_selector(
        &self,
        vs: &VectorSelector,
        t: i64,
        keep_ts: bool,
    ) -> Result<Vec<VSample>, EvalError> {
        let r = self.ref_time(vs.at, vs.offset_ms, t);
        let Some(data) = self.selector_data(vs) else {
            return Ok(Vec::new());
        };
        let mut cursors = data.cursors.borrow_mut();
        let mut out = Vec::with_capacity(data.series.len());
        for (s, c) in data.series.iter().zip(cursors.iter_mut()) {
            let idx = seek(&s.samples, c.1, r);
            c.1 = idx;
            if idx == 0 {
                continue;
            }
            let x = s.samples[idx - 1];
            if x.t <= r.saturating_sub(self.opts.lookback_ms) || is_stale_nan(x.v) {
                continue;
            }
            out.push(VSample {
                labels: s.labels.clone(),
                v: if keep_ts { x.t as f64 / 1000.0 } else { x.v },
                drop_name: false,
            });
        }
        self.add_samples(out.len())?;
        Ok(out)
    }

    pub(super) fn eval_matrix_selector<'s>(
        &'s self,
        vs: &VectorSelector,
        range: i64,
        t: i64,
    ) -> Result<Vec<RSeries<'s>>, EvalError> {
        let r = self.ref_time(vs.at, vs.offset_ms, t);
        let Some(data) = self.selector_data(vs) else {
            return Ok(Vec::new());
        };
        let mut cursors = data.cursors.borrow_mut();
        let mut out = Vec::with_capacity(data.series.len());
        let mut n = 0;
        for (s, c) in data.series.iter().zip(cursors.iter_mut()) {
            // The window is `(r - range, r]`.
            let lo = seek(&s.samples, c.0, r.saturating_sub(range));
            let hi = seek(&s.samples, c.1.max(lo), r);
            *c = (lo, hi);
            if lo >= hi {
                continue;
            }
            n += hi - lo;
            out.push(RSeries {
                labels: s.labels.clone(),
                samples: Cow::Borrowed(&s.samples[lo..hi]),
                drop_name: false,
            });
        }
        self.add_samples(n)?;
        Ok(out)
    }

    pub(super) fn eval_subquery<'s>(
        &'s self,
        sq: &crate::ast::Subquery,
        t: i64,
    ) -> Result<Vec<RSeries<'s>>, EvalError> {
        let r = self.ref_time(sq.at, sq.offset_ms, t);
        let step = sq
            .step_ms
            .unwrap_or(self.opts.default_subquery_step_ms)
            .max(1);
        let (first, last) = subquery_steps(r, r, sq.range_ms, step);
        let mut index: HashMap<Labels, usize> = HashMap::new();
        let mut out: Vec<RSeries<'s>> = Vec::new();
        let mut ti = first;
        let before = self.in_flight.get();
        let key = sq as *const crate::ast::Subquery as usize;
        if let Some(m) = self.subquery_memo.borrow_mut().get_mut(&key) {
            *m = m.split_off(&first);
        }
        let mut held = 0usize;
        while ti <= last {
            self.check_deadline("subquery evaluation")?;
            let memo = self
                .subquery_memo
                .borrow()
                .get(&key)
                .and_then(|m| m.get(&ti).cloned());
            let val = match memo {
                Some(v) => v,
                None => {
                    let v = Rc::new(match self.eval(&sq.expr, ti)? {
                        Val::Scalar(x) => Val::Scalar(x),
                        Val::Vector(v) => Val::Vector(v),
                        other => {
                            return Err(EvalError::Unsupported(format!(
                                "subquery is only allowed on instant vector, got {} in {}",
                                other.type_name(),
                                sq.expr
                            )));
                        }
                    });
                    self.subquery_memo
                        .borrow_mut()
                        .entry(key)
                        .or_default()
                        .insert(ti, Rc::clone(&v));
                    v
                }
            };
            match &*val {
                Val::Scalar(v) => {
                    let v = *v;
                    let i = *index.entry(Labels::empty()).or_insert_with(|| {
                        out.push(RSeries {
                            labels: Labels::empty(),
                            samples: Cow::Owned(Vec::new()),
                            drop_name: false,
                        });
                        out.len() - 1
                    });
                    out[i].samples.to_mut().push(Sample { t: ti, v });
                }
                Val::Vector(v) => {
                    for s in v {
                        let i = match index.get(&s.labels) {
                            Some(&i) => i,
                            None => {
                                out.push(RSeries {
                                    labels: s.labels.clone(),
                                    samples: Cow::Owned(Vec::new()),
                                    drop_name: false,
                                });
                                index.insert(s.labels.clone(), out.len() - 1);
                                out.len() - 1
                            }
                        };
                        out[i].drop_name |= s.drop_name;
                        out[i].samples.to_mut().push(Sample { t: ti, v: s.v });
                    }
                }
                _ => {
                    return Err(EvalError::Internal(
                        "memoised subquery step is neither scalar nor vector".into(),
                    ));
                }
            }
            // Count as we go: `x[292y:1ms]` must fail at the sample limit, not after
            // building the whole matrix.
            held += match &*val {
                Val::Vector(v) => v.len(),
                _ => 1,
            };
            if before.saturating_add(held) > self.opts.max_samples {
                return Err(EvalError::TooManySamples {
                    limit: self.opts.max_samples,
                });
            }
            ti = match ti.checked_add(step) {
                Some(next) => next,
                None => break,
            };
        }
        let n: usize = out.iter().map(|s| s.samples.len()).sum();
        self.in_flight.set(before);
        self.add_samples(n)?;
        Ok(out)
    }
}
