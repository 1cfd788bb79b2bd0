use proptest::prelude::*;
use rigwatch_storage::batch::{FieldValue, RowError, WriteBatch};

use super::*;
use crate::error::{After, Expected, LineErrorKind};

const DEFAULT_MS: i64 = 7;

fn parse_all(body: &str) -> (WriteBatch, Vec<LineError>) {
    let mut batch = WriteBatch::default();
    let errors = parse(body, DEFAULT_MS, &mut batch);
    (batch, errors)
}

type Sample<'a> = (&'a str, Vec<(&'a str, &'a str)>, f64, i64);

fn samples(batch: &WriteBatch) -> Vec<Sample<'_>> {
    batch
        .rows()
        .map(|r| {
            let fields: Vec<_> = r.fields().collect();
            assert_eq!(fields.len(), 1);
            let ("value", FieldValue::F64(v)) = fields[0] else {
                panic!("{fields:?}")
            };
            (r.table(), r.tags().collect(), v, r.time())
        })
        .collect()
}

fn error(body: &str) -> (usize, usize, LineErrorKind) {
    let (batch, errors) = parse_all(body);
    assert!(batch.is_empty(), "{body:?} gave rows");
    assert_eq!(errors.len(), 1, "{body:?}: {errors:?}");
    let e = errors.into_iter().next().unwrap();
    (e.column, e.byte_offset, e.kind)
}

fn expected(expected: Expected, after: After) -> LineErrorKind {
    LineErrorKind::Expected { expected, after }
}

#[test]
fn exposition_example() {
    let body = "# HELP gpu_temp_celsius GPU temperature.\r\n\
                # TYPE gpu_temp_celsius gauge\r\n\
                gpu_temp_celsius{gpu_uuid=\"GPU-1\",model=\"H100 \\\"SXM\\\"\"} 61.5 1700000000000\r\n\
                \r\n\
                # a free comment\n\
                job:up:rate5m 1\n\
                m{} 2 -3\n\
                m { a = \"x\" , b=\"y\", } 3\n\
                \tm{esc=\"back\\\\slash\\nnew\",empty=\"\"} 4\n";
    let (batch, errors) = parse_all(body);
    assert!(errors.is_empty(), "{errors:?}");
    let ms = 1_000_000;
    assert_eq!(
        samples(&batch),
        vec![
            (
                "gpu_temp_celsius",
                vec![("gpu_uuid", "GPU-1"), ("model", "H100 \"SXM\"")],
                61.5,
                1_700_000_000_000 * ms
            ),
            ("job:up:rate5m", vec![], 1.0, DEFAULT_MS * ms),
            ("m", vec![], 2.0, -3 * ms),
            ("m", vec![("a", "x"), ("b", "y")], 3.0, DEFAULT_MS * ms),
            ("m", vec![("esc", "back\\slash\nnew")], 4.0, DEFAULT_MS * ms),
        ]
    );
    let lines: Vec<_> = batch.rows().map(|r| r.line()).collect();
    assert_eq!(lines, vec![3, 6, 7, 8, 9]);
}

#[test]
fn names_inside_braces_and_unicode() {
    let body = "{__name__=\"up\",job=\"a\"} 1\n{\"my.metric\",\"my.label\"=\"温度 🚀\"} 2\n";
    let (batch, errors) = parse_all(body);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(
        samples(&batch),
        vec![
            ("up", vec![("job", "a")], 1.0, DEFAULT_MS * 1_000_000),
            (
                "my.metric",
                vec![("my.label", "温度 🚀")],
                2.0,
                DEFAULT_MS * 1_000_000
            ),
        ]
    );
}

#[test]
fn special_values() {
    let body = "a NaN\nb +Inf\nc -Inf\nd inf\ne -1.5e-3\nf 0x1p-2\ng .5\nh -0x1.8P1\n";
    let (batch, errors) = parse_all(body);
    assert!(errors.is_empty(), "{errors:?}");
    let values: Vec<f64> = samples(&batch).iter().map(|s| s.2).collect();
    assert!(values[0].is_nan());
    assert_eq!(
        values[1..],
        [
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::INFINITY,
            -0.0015,
            0.25,
            0.5,
            -3.0
        ]
    );
}

#[test]
fn go_floats() {
    for (text, want) in [
        ("1", Some(1.0)),
        ("-0", Some(-0.0)),
        ("1e3", Some(1000.0)),
        ("+1.5E+2", Some(150.0)),
        ("Infinity", Some(f64::INFINITY)),
        ("-INF", Some(f64::NEG_INFINITY)),
        ("0x10p0", Some(16.0)),
        ("0X_1_0P-4", Some(1.0)),
        ("0x.8p1", Some(1.0)),
        ("0x1.fffffffffffffp1023", Some(f64::MAX)),
        ("0x1p-1074", Some(f64::from_bits(1))),
        (
            "0x123456789abcdef0123p0",
            Some(0x0123_4567_89ab_cdef_0123_u128 as f64),
        ),
        ("0x1p1024", None),
        ("1e400", None),
        ("0x1", None),
        ("0x1p", None),
        ("0xp1", None),
        ("0x1__0p0", None),
        ("0x10_p0", None),
        ("1_000", None),
        ("--1", None),
        ("+-1", None),
        ("+nan", Some(f64::NAN)),
        ("1.2.3", None),
        ("", None),
        ("abc", None),
    ] {
        let got = parse_go_float(text);
        match (got, want) {
            (Some(g), Some(w)) if w.is_nan() => assert!(g.is_nan(), "{text}: {g}"),
            (Some(g), Some(w)) => assert_eq!(g.to_bits(), w.to_bits(), "{text}: {g} != {w}"),
            (None, None) => {}
            _ => panic!("{text}: got {got:?}, want {want:?}"),
        }
    }
}

#[test]
fn errors_name_their_position() {
    use Expected as E;
    let label = |n: &str| After::LabelName(n.into());
    let cases: Vec<(&str, usize, LineErrorKind)> = vec![
        ("1 2", 1, expected(E::MetricName, After::Nothing)),
        ("m", 2, expected(E::SampleValue, After::MetricName)),
        ("m-x 1", 2, expected(E::SampleValue, After::MetricName)),
        ("m{a=\"b\"}", 9, expected(E::SampleValue, After::Labels)),
        ("m{a=\"b\"}  ", 11, expected(E::SampleValue, After::Labels)),
        ("m{a=b} 1", 5, expected(E::LabelValue, label("a"))),
        ("m{a} 1", 4, expected(E::Equals, label("a"))),
        (
            "m{a=\"b\" c=\"d\"} 1",
            9,
            expected(E::CommaOrBrace, After::LabelValue("a".into())),
        ),
        (
            "m{a=\"b\"",
            8,
            expected(E::CommaOrBrace, After::LabelValue("a".into())),
        ),
        ("m{,} 1", 3, expected(E::LabelName, After::Brace)),
        (
            "m{a=\"b\",1=\"c\"} 1",
            9,
            expected(E::LabelName, After::Comma),
        ),
        ("m 1 2 3", 7, expected(E::EndOfLine, After::Timestamp)),
        ("m{a=\"b} 1", 5, LineErrorKind::UnterminatedString),
        ("m{a=\"b\\", 5, LineErrorKind::UnterminatedString),
        (
            "m{a=\"x\\ty\"} 1",
            7,
            LineErrorKind::InvalidEscape { escape: 't' },
        ),
        (
            "m x",
            3,
            LineErrorKind::InvalidSampleValue { text: "x".into() },
        ),
        (
            "m 1e400",
            3,
            LineErrorKind::InvalidSampleValue {
                text: "1e400".into(),
            },
        ),
        (
            "m 1 1.5",
            5,
            LineErrorKind::BadTimestamp { text: "1.5".into() },
        ),
        ("m 1 -", 5, LineErrorKind::BadTimestamp { text: "-".into() }),
        (
            "m 1 9223372036854775807",
            5,
            LineErrorKind::TimestampOverflow {
                value: i64::MAX,
                unit: "ms",
            },
        ),
        ("m{__name__=\"x\"} 1", 3, LineErrorKind::MetricNameTwice),
        ("{\"a\",\"b\"} 1", 6, LineErrorKind::MetricNameTwice),
        ("{a=\"b\"} 1", 1, LineErrorKind::MissingMetricName),
        (
            "m{a=\"1\",a=\"2\"} 1",
            1,
            RowError::DuplicateTag { key: "a".into() }.into(),
        ),
        (
            "m{time=\"1\"} 1",
            1,
            RowError::ReservedName { key: "time".into() }.into(),
        ),
        ("{\"\"} 1", 1, RowError::EmptyTable.into()),
    ];
    for (body, column, kind) in cases {
        let (c, byte, k) = error(body);
        assert_eq!((c, &k), (column, &kind), "{body:?}");
        assert_eq!(byte, column - 1, "{body:?}");
    }
}

#[test]
fn bad_lines_do_not_lose_good_ones() {
    let body = "# TYPE a counter\na 1\r\nb{x=\"1\" 2\r\nc{é=\"1\"} 3\nd 4 5\n";
    let (batch, errors) = parse_all(body);
    let names: Vec<_> = batch.rows().map(|r| (r.table(), r.line())).collect();
    assert_eq!(names, vec![("a", 2), ("d", 5)]);
    // Line 3 starts at byte 22, line 4 at byte 33.
    let at: Vec<_> = errors
        .iter()
        .map(|e| (e.line, e.column, e.byte_offset))
        .collect();
    assert_eq!(at, vec![(3, 9, 30), (4, 3, 35)]);
    assert_eq!(
        errors[0].to_string(),
        "line 3, column 9 (byte 30): expected ',' or '}' after the value of label \"x\""
    );
    assert_eq!(
        errors[1].to_string(),
        "line 4, column 3 (byte 35): expected a label name after '{'"
    );
    assert_eq!(batch.field_count(), 2);
}

proptest! {
    /// Rendered samples parse back to the same name, labels, value and time.
    #[test]
    fn rendered_samples_parse_back(
        name in "[a-zA-Z_:][a-zA-Z0-9_:]{0,10}",
        labels in proptest::collection::btree_map("[a-zA-Z_][a-zA-Z0-9_]{0,6}", "[^\n]{1,8}", 0..4),
        value in any::<f64>(),
        time in proptest::option::of(-9_000_000_000_000i64..9_000_000_000_000),
    ) {
        prop_assume!(!labels.contains_key("__name__") && !labels.contains_key("time"));
        let mut line = name.clone();
        line.push('{');
        for (k, v) in &labels {
            let v = v.replace('\\', "\\\\").replace('"', "\\\"");
            line.push_str(&format!("{k}=\"{v}\","));
        }
        let rendered = if value.is_nan() {
            "NaN".to_owned()
        } else if value.is_infinite() {
            if value > 0.0 { "+Inf".to_owned() } else { "-Inf".to_owned() }
        } else {
            format!("{value:e}")
        };
        line.push_str(&format!("}} {rendered}"));
        if let Some(t) = time {
            line.push_str(&format!(" {t}"));
        }
        let (batch, errors) = parse_all(&line);
        prop_assert!(errors.is_empty(), "{:?} {}", errors, line);
        let s = samples(&batch);
        prop_assert_eq!(s[0].0, name.as_str());
        let want: Vec<_> = labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        prop_assert_eq!(&s[0].1, &want);
        prop_assert!(s[0].2.to_bits() == value.to_bits() || value.is_nan() && s[0].2.is_nan());
        prop_assert_eq!(s[0].3, time.unwrap_or(DEFAULT_MS) * 1_000_000);
    }

    #[test]
    fn every_line_is_a_row_or_an_error(body in "([a-z{}=\",\\\\ \t#0-9.+-]{0,20}\r?\n?){0,6}") {
        let (batch, errors) = parse_all(&body);
        let content_lines = body
            .split('\n')
            .map(|l| l.strip_suffix('\r').unwrap_or(l).trim_start_matches([' ', '\t']))
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .count();
        prop_assert_eq!(batch.len() + errors.len(), content_lines);
        for e in &errors {
            prop_assert!(e.byte_offset <= body.len() && body.is_char_boundary(e.byte_offset));
            prop_assert!(e.column >= 1 && !e.to_string().is_empty());
        }
    }
}
