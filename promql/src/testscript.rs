//! Loader for Prometheus' PromQL test scripts (`*.test`, see `FORMAT.md` beside them).
//!
//! [`parse_script`] turns a script into [`Command`]s; the conformance test
//! (`tests/conformance.rs`) runs them against [`crate::storage::MemStore`] and the
//! evaluator. Native-histogram sample values (`{{...}}`) are recognised and reported
//! as [`SeqValue::Histogram`] so a runner can skip what it cannot evaluate.

use std::fmt;

use crate::value::{Labels, stale_nan};

/// A script line that could not be understood.
#[derive(Debug, Clone, PartialEq)]
pub struct ScriptError {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ScriptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for ScriptError {}

fn err<T>(line: usize, message: impl Into<String>) -> Result<T, ScriptError> {
    Err(ScriptError {
        line,
        message: message.into(),
    })
}

/// One point of an expanded series description.
#[derive(Debug, Clone, PartialEq)]
pub enum SeqValue {
    /// `_`: no sample at this step.
    Omitted,
    /// A float (including `stale`, the staleness marker, and `NaN`/`Inf`).
    Float(f64),
    /// A native histogram `{{...}}` (not evaluated by rigwatch).
    Histogram,
}

/// `labels v1 v2 ...` in a load block or an expected result.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesDesc {
    pub labels: Labels,
    pub values: Vec<SeqValue>,
}

/// How a message expectation matches.
#[derive(Debug, Clone, PartialEq)]
pub enum MsgMatch {
    /// Any message.
    Any,
    /// Exactly this text.
    Exact(String),
    /// Unanchored regular expression (Go `regexp.MatchString` semantics).
    Regex(String),
}

/// The query kind and times of an `eval`.
#[derive(Debug, Clone, PartialEq)]
pub enum EvalKind {
    Instant { t: i64 },
    Range { start: i64, end: i64, step: i64 },
}

/// What an `eval` expects as result.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Expected {
    /// Series lines (possibly none: empty result).
    #[default]
    Series,
    /// A bare number line (scalar result).
    Scalar(f64),
    /// `expect string "..."`.
    String(String),
}

/// An `eval` command with all its expectations.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalCmd {
    pub line: usize,
    pub query: String,
    pub kind: EvalKind,
    pub fail: Option<MsgMatch>,
    pub warn: Vec<MsgMatch>,
    pub info: Vec<MsgMatch>,
    pub no_warn: bool,
    pub no_info: bool,
    pub ordered: bool,
    /// `expect range vector from A to B step S` (instant query of a range selector).
    pub range_vector: Option<(i64, i64, i64)>,
    pub expected: Expected,
    pub series: Vec<SeriesDesc>,
}

/// One script command.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Load {
        line: usize,
        interval_ms: i64,
        series: Vec<SeriesDesc>,
        /// `load_with_nhcb`: classic histograms are also converted to native ones.
        with_nhcb: bool,
    },
    Clear,
    Eval(EvalCmd),
}

/// Parses a Prometheus duration (`1m`, `10s53ms`, `1h30m`, `0`) into milliseconds.
/// A bare number is taken as seconds (as the API's time parameters are).
pub fn parse_duration(s: &str) -> Option<i64> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    if let Ok(n) = s.parse::<f64>() {
        return Some((n * 1000.0).round() as i64);
    }
    let (neg, s) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let b = s.as_bytes();
    let mut i = 0;
    let mut total: i64 = 0;
    while i < b.len() {
        let st = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if st == i {
            return None;
        }
        let n: i64 = s[st..i].parse().ok()?;
        let ust = i;
        while i < b.len() && b[i].is_ascii_alphabetic() {
            i += 1;
        }
        let mult = match &s[ust..i] {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 7 * 86_400_000,
            "y" => 365 * 86_400_000,
            _ => return None,
        };
        total = total.checked_add(n.checked_mul(mult)?)?;
    }
    Some(if neg { -total } else { total })
}

/// Parses a whole script.
pub fn parse_script(text: &str) -> Result<Vec<Command>, ScriptError> {
    let lines: Vec<&str> = text.lines().collect();
    let mut cmds = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let lineno = i + 1;
        let raw = lines[i];
        let l = raw.trim();
        i += 1;
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        if l == "clear" {
            cmds.push(Command::Clear);
            continue;
        }
        if let Some(rest) = l
            .strip_prefix("load_with_nhcb ")
            .map(|r| (r, true))
            .or_else(|| l.strip_prefix("load ").map(|r| (r, false)))
        {
            let (iv, with_nhcb) = rest;
            let Some(interval_ms) = parse_duration(iv) else {
                return err(lineno, format!("bad load interval {iv:?}"));
            };
            let mut series = Vec::new();
            while i < lines.len() && is_body_line(lines[i]) {
                let t = lines[i].trim();
                if !t.starts_with('#') {
                    series.push(parse_series_desc(t, i + 1)?);
                }
                i += 1;
            }
            cmds.push(Command::Load {
                line: lineno,
                interval_ms,
                series,
                with_nhcb,
            });
            continue;
        }
        if let Some((variant, rest)) = split_eval(l) {
            let mut cmd = parse_eval_head(rest, lineno)?;
            match variant {
                "eval_fail" => cmd.fail = Some(MsgMatch::Any),
                "eval_warn" => cmd.warn.push(MsgMatch::Any),
                "eval_info" => cmd.info.push(MsgMatch::Any),
                "eval_ordered" => cmd.ordered = true,
                _ => {}
            }
            while i < lines.len() && is_body_line(lines[i]) {
                let t = lines[i].trim();
                let n = i + 1;
                i += 1;
                if t.starts_with('#') {
                    continue;
                }
                parse_eval_body_line(&mut cmd, t, n)?;
            }
            cmds.push(Command::Eval(cmd));
            continue;
        }
        return err(lineno, format!("unknown command {l:?}"));
    }
    Ok(cmds)
}

/// Body lines of load/eval blocks: non-empty lines that do not start a new command.
fn is_body_line(raw: &str) -> bool {
    let t = raw.trim();
    if t.is_empty() {
        return false;
    }
    if t.starts_with('#') {
        return true;
    }
    !(t == "clear" || t.starts_with("load ") || t.starts_with("load_") || split_eval(t).is_some())
}

fn split_eval(l: &str) -> Option<(&str, &str)> {
    for v in [
        "eval_fail",
        "eval_warn",
        "eval_info",
        "eval_ordered",
        "eval",
    ] {
        if let Some(rest) = l.strip_prefix(v)
            && rest.starts_with(' ')
        {
            return Some((v, rest.trim_start()));
        }
    }
    None
}

fn parse_eval_head(rest: &str, line: usize) -> Result<EvalCmd, ScriptError> {
    let words = |s: &str, n: usize| -> Vec<String> {
        s.splitn(n + 1, ' ').map(str::to_string).collect::<Vec<_>>()
    };
    let kind;
    let query;
    if let Some(r) = rest.strip_prefix("instant at ") {
        let w = words(r.trim_start(), 1);
        let Some(t) = parse_duration(&w[0]) else {
            return err(line, format!("bad eval time {:?}", w[0]));
        };
        kind = EvalKind::Instant { t };
        query = w.get(1).cloned().unwrap_or_default();
    } else if let Some(r) = rest.strip_prefix("range from ") {
        let w = words(r.trim_start(), 5);
        if w.len() < 6 || w[1] != "to" || w[3] != "step" {
            return err(
                line,
                "expected `range from <start> to <end> step <step> <query>`",
            );
        }
        let (Some(start), Some(end), Some(step)) = (
            parse_duration(&w[0]),
            parse_duration(&w[2]),
            parse_duration(&w[4]),
        ) else {
            return err(line, "bad range times");
        };
        kind = EvalKind::Range { start, end, step };
        query = w[5].clone();
    } else {
        return err(line, format!("bad eval command {rest:?}"));
    }
    Ok(EvalCmd {
        line,
        query: query.trim().to_string(),
        kind,
        fail: None,
        warn: vec![],
        info: vec![],
        no_warn: false,
        no_info: false,
        ordered: false,
        range_vector: None,
        expected: Expected::Series,
        series: vec![],
    })
}

fn parse_msg_match(rest: &str, line: usize) -> Result<MsgMatch, ScriptError> {
    let rest = rest.trim();
    if rest.is_empty() {
        return Ok(MsgMatch::Any);
    }
    let unquote = |s: &str| -> String {
        let s = s.trim();
        if s.len() >= 2 && s.starts_with('"') && s.ends_with('"') {
            s[1..s.len() - 1].to_string()
        } else {
            s.to_string()
        }
    };
    if let Some(m) = rest.strip_prefix("msg:") {
        return Ok(MsgMatch::Exact(unquote(m)));
    }
    if let Some(m) = rest.strip_prefix("regex:") {
        return Ok(MsgMatch::Regex(unquote(m)));
    }
    err(
        line,
        format!("expected `msg:` or `regex:` after the expectation, got {rest:?}"),
    )
}

fn parse_eval_body_line(cmd: &mut EvalCmd, t: &str, line: usize) -> Result<(), ScriptError> {
    if let Some(r) = t.strip_prefix("expected_fail_message ") {
        cmd.fail = Some(MsgMatch::Exact(r.trim().to_string()));
        return Ok(());
    }
    if let Some(r) = t.strip_prefix("expected_fail_regexp ") {
        cmd.fail = Some(MsgMatch::Regex(r.trim().to_string()));
        return Ok(());
    }
    if let Some(r) = t.strip_prefix("expect ") {
        let r = r.trim();
        let (word, rest) = r.split_once(' ').unwrap_or((r, ""));
        let word = word.trim_end_matches(':');
        match word {
            "fail" => cmd.fail = Some(parse_msg_match(rest, line)?),
            "warn" => cmd.warn.push(parse_msg_match(rest, line)?),
            "info" => cmd.info.push(parse_msg_match(rest, line)?),
            "no_warn" => cmd.no_warn = true,
            "no_info" => cmd.no_info = true,
            "ordered" => cmd.ordered = true,
            "string" => {
                let s = rest.trim();
                let ok = s.len() >= 2
                    && ((s.starts_with('"') && s.ends_with('"'))
                        || (s.starts_with('`') && s.ends_with('`')));
                if !ok {
                    return err(
                        line,
                        format!("expect string needs a quoted string, got {s:?}"),
                    );
                }
                cmd.expected = Expected::String(s[1..s.len() - 1].to_string());
            }
            "range" => {
                // expect range vector from A to B step S
                let w: Vec<&str> = rest.split_whitespace().collect();
                if w.len() != 7
                    || w[0] != "vector"
                    || w[1] != "from"
                    || w[3] != "to"
                    || w[5] != "step"
                {
                    return err(line, "expected `expect range vector from A to B step S`");
                }
                let (Some(a), Some(b), Some(s)) = (
                    parse_duration(w[2]),
                    parse_duration(w[4]),
                    parse_duration(w[6]),
                ) else {
                    return err(line, "bad range vector times");
                };
                cmd.range_vector = Some((a, b, s));
            }
            other => return err(line, format!("unknown expectation {other:?}")),
        }
        return Ok(());
    }
    if let Some(v) = parse_number(t) {
        cmd.expected = Expected::Scalar(v);
        return Ok(());
    }
    cmd.series.push(parse_series_desc(t, line)?);
    Ok(())
}

/// Parses a float as the test language writes it (`1`, `-2.5e3`, `0x1f`, `Inf`, `NaN`).
pub fn parse_number(s: &str) -> Option<f64> {
    let s = s.trim();
    let (sign, body) = match s.as_bytes().first() {
        Some(b'-') => (-1.0, &s[1..]),
        Some(b'+') => (1.0, &s[1..]),
        _ => (1.0, s),
    };
    let lower = body.to_ascii_lowercase();
    let v = match lower.as_str() {
        "inf" => f64::INFINITY,
        "nan" => f64::NAN,
        _ => {
            if let Some(h) = lower.strip_prefix("0x") {
                i64::from_str_radix(h, 16).ok()? as f64
            } else {
                if !body
                    .bytes()
                    .all(|c| c.is_ascii_digit() || matches!(c, b'.' | b'e' | b'E' | b'+' | b'-'))
                    || body.is_empty()
                {
                    return None;
                }
                body.parse::<f64>().ok()?
            }
        }
    };
    Some(sign * v)
}

/// Parses `metric{a="b"} v1 v2 ...` (the labels part is required; values optional).
pub fn parse_series_desc(t: &str, line: usize) -> Result<SeriesDesc, ScriptError> {
    let (labels, rest) = parse_labels(t, line)?;
    let mut values = Vec::new();
    for tok in tokenize_values(rest) {
        expand_item(&tok, &mut values, line)?;
    }
    Ok(SeriesDesc { labels, values })
}

fn parse_labels(t: &str, line: usize) -> Result<(Labels, &str), ScriptError> {
    let b = t.as_bytes();
    let mut i = 0;
    while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b':') {
        i += 1;
    }
    let name = &t[..i];
    let mut pairs: Vec<(String, String)> = Vec::new();
    if !name.is_empty() {
        pairs.push(("__name__".into(), name.into()));
    }
    if i < b.len() && b[i] == b'{' {
        i += 1;
        loop {
            while i < b.len() && (b[i] == b' ' || b[i] == b',') {
                i += 1;
            }
            if i >= b.len() {
                return err(line, "unterminated label set");
            }
            if b[i] == b'}' {
                i += 1;
                break;
            }
            let st = i;
            if b[i] == b'"' {
                // Quoted label name (UTF-8 names).
                let (n, ni) = parse_quoted(t, i, line)?;
                i = ni;
                let _ = st;
                while i < b.len() && b[i] == b' ' {
                    i += 1;
                }
                if i >= b.len() || b[i] != b'=' {
                    return err(line, "expected `=` after label name");
                }
                i += 1;
                while i < b.len() && b[i] == b' ' {
                    i += 1;
                }
                let (v, vi) = parse_quoted(t, i, line)?;
                i = vi;
                pairs.push((n, v));
                continue;
            }
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            let lname = &t[st..i];
            while i < b.len() && b[i] == b' ' {
                i += 1;
            }
            if lname.is_empty() || i >= b.len() || b[i] != b'=' {
                return err(line, format!("bad label matcher at column {}", i + 1));
            }
            i += 1;
            while i < b.len() && b[i] == b' ' {
                i += 1;
            }
            let (v, vi) = parse_quoted(t, i, line)?;
            i = vi;
            pairs.push((lname.to_string(), v));
        }
    } else if name.is_empty() {
        return err(line, format!("expected a series description, got {t:?}"));
    }
    Ok((Labels::from_pairs(pairs), &t[i..]))
}

/// Parses a Go-style quoted string starting at byte `i`; returns it and the index after.
fn parse_quoted(t: &str, i: usize, line: usize) -> Result<(String, usize), ScriptError> {
    let b = t.as_bytes();
    let Some(&q) = b.get(i) else {
        return err(line, "expected a quoted string");
    };
    if q != b'"' && q != b'\'' && q != b'`' {
        return err(
            line,
            format!("expected a quoted string at column {}", i + 1),
        );
    }
    let mut out: Vec<u8> = Vec::new();
    let mut j = i + 1;
    while j < b.len() {
        let c = b[j];
        if c == q {
            let s = String::from_utf8_lossy(&out).into_owned();
            return Ok((s, j + 1));
        }
        if c == b'\\' && q != b'`' && j + 1 < b.len() {
            j += 1;
            match b[j] {
                b'n' => out.push(b'\n'),
                b't' => out.push(b'\t'),
                b'r' => out.push(b'\r'),
                b'\\' => out.push(b'\\'),
                b'"' => out.push(b'"'),
                b'\'' => out.push(b'\''),
                b'x' if j + 2 < b.len() => {
                    let h = std::str::from_utf8(&b[j + 1..j + 3]).unwrap_or("");
                    let Ok(v) = u8::from_str_radix(h, 16) else {
                        return err(line, "bad \\x escape");
                    };
                    out.push(v);
                    j += 2;
                }
                b'u' if j + 4 < b.len() => {
                    let h = std::str::from_utf8(&b[j + 1..j + 5]).unwrap_or("");
                    let Some(ch) = u32::from_str_radix(h, 16).ok().and_then(char::from_u32) else {
                        return err(line, "bad \\u escape");
                    };
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                    j += 4;
                }
                other => {
                    out.push(b'\\');
                    out.push(other);
                }
            }
            j += 1;
            continue;
        }
        out.push(c);
        j += 1;
    }
    err(line, "unterminated quoted string")
}

/// Splits the values part at whitespace outside `{{ }}`.
fn tokenize_values(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut depth = 0i32;
    let cs: Vec<char> = s.chars().collect();
    let mut k = 0;
    while k < cs.len() {
        let c = cs[k];
        if c == '{' && cs.get(k + 1) == Some(&'{') {
            depth += 1;
            cur.push_str("{{");
            k += 2;
            continue;
        }
        if c == '}' && cs.get(k + 1) == Some(&'}') && depth > 0 {
            depth -= 1;
            cur.push_str("}}");
            k += 2;
            continue;
        }
        if c.is_whitespace() && depth == 0 {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
        } else {
            cur.push(c);
        }
        k += 1;
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Expands one item: `v`, `_`, `stale`, `_xN`, `vxN`, `v+dxN`, `v-dxN`.
fn expand_item(tok: &str, out: &mut Vec<SeqValue>, line: usize) -> Result<(), ScriptError> {
    if tok.contains("{{") {
        // Histogram, possibly `{{..}}+{{..}}xN`: count the repetitions only.
        let n = tok
            .rsplit_once("}}x")
            .and_then(|(_, n)| n.parse::<usize>().ok())
            .map_or(1, |n| n + 1);
        for _ in 0..n {
            out.push(SeqValue::Histogram);
        }
        return Ok(());
    }
    match tok {
        "_" => {
            out.push(SeqValue::Omitted);
            return Ok(());
        }
        "stale" => {
            out.push(SeqValue::Float(stale_nan()));
            return Ok(());
        }
        _ => {}
    }
    if let Some(n) = tok.strip_prefix("_x") {
        let Ok(n) = n.parse::<usize>() else {
            return err(line, format!("bad repetition {tok:?}"));
        };
        for _ in 0..n {
            out.push(SeqValue::Omitted);
        }
        return Ok(());
    }
    let is_repetition = tok.rsplit_once('x').is_some_and(|(h, n)| {
        !h.is_empty() && !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit())
    });
    if !is_repetition && let Some(v) = parse_number(tok) {
        out.push(SeqValue::Float(v));
        return Ok(());
    }
    // a[+-]bxN or axN
    let Some((head, n)) = tok.rsplit_once('x') else {
        return err(line, format!("bad value {tok:?}"));
    };
    let Ok(n) = n.parse::<usize>() else {
        return err(line, format!("bad repetition count in {tok:?}"));
    };
    // Find the operator splitting start and increment: the last + or - not at the
    // start and not following an exponent `e`.
    let hb = head.as_bytes();
    let mut split = None;
    for k in (1..hb.len()).rev() {
        if (hb[k] == b'+' || hb[k] == b'-') && !matches!(hb[k - 1], b'e' | b'E') {
            split = Some(k);
            break;
        }
    }
    let (start, inc) = match split {
        Some(k) => {
            let (Some(a), Some(d)) = (parse_number(&head[..k]), parse_number(&head[k..])) else {
                return err(line, format!("bad value {tok:?}"));
            };
            (a, d)
        }
        None => match parse_number(head) {
            Some(a) => (a, 0.0),
            None => return err(line, format!("bad value {tok:?}")),
        },
    };
    let mut v = start;
    for _ in 0..=n {
        out.push(SeqValue::Float(v));
        v += inc;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1m"), Some(60_000));
        assert_eq!(parse_duration("10s53ms"), Some(10_053));
        assert_eq!(parse_duration("1h30m"), Some(5_400_000));
        assert_eq!(parse_duration("0"), Some(0));
        assert_eq!(parse_duration("5x"), None);
    }

    #[test]
    fn expands_series_notation() {
        let d = parse_series_desc(r#"m{a="x\"y", b='z'} 1+2x2 _ stale -1-1x1 _x2 3x1"#, 1).unwrap();
        assert_eq!(d.labels.get("a"), Some("x\"y"));
        assert_eq!(d.labels.get("b"), Some("z"));
        let f = |v: f64| SeqValue::Float(v);
        assert_eq!(d.values.len(), 11);
        assert_eq!(&d.values[..4], &[f(1.0), f(3.0), f(5.0), SeqValue::Omitted]);
        assert!(matches!(d.values[4], SeqValue::Float(v) if crate::value::is_stale_nan(v)));
        assert_eq!(
            &d.values[5..],
            &[
                f(-1.0),
                f(-2.0),
                SeqValue::Omitted,
                SeqValue::Omitted,
                f(3.0),
                f(3.0)
            ][..]
        );
    }

    #[test]
    fn histograms_are_recognised() {
        let d = parse_series_desc("h {{schema:1 sum:3 count:2}}+{{count:1}}x2 1", 1).unwrap();
        assert_eq!(d.values.len(), 4);
        assert_eq!(d.values[0], SeqValue::Histogram);
        assert_eq!(d.values[3], SeqValue::Float(1.0));
    }

    #[test]
    fn parses_eval_blocks() {
        let s = "load 5m\n  m{a=\"1\"} 1 2\n\neval range from 0 to 5m step 5m m\n  expect warn msg: x (1:1)\n  expect ordered\n  m{a=\"1\"} 1 2\n\neval instant at 1m 3\n  3\n";
        let c = parse_script(s).unwrap();
        assert_eq!(c.len(), 3);
        let Command::Eval(e) = &c[1] else { panic!() };
        assert_eq!(
            e.kind,
            EvalKind::Range {
                start: 0,
                end: 300_000,
                step: 300_000
            }
        );
        assert!(e.ordered);
        assert_eq!(e.warn, vec![MsgMatch::Exact("x (1:1)".into())]);
        let Command::Eval(e) = &c[2] else { panic!() };
        assert_eq!(e.expected, Expected::Scalar(3.0));
    }
}
