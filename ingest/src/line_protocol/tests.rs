use rigwatch_common::http_error::HttpError;
use std::collections::BTreeMap;

use proptest::prelude::*;
use rigwatch_storage::batch::{FieldType, FieldValue, RowError, WriteBatch};

use super::*;
use crate::error::{After, Expected, LineErrorKind};

const DEFAULT: i64 = 42;

fn parse_all(body: &str) -> (WriteBatch, Vec<LineError>) {
    let mut batch = WriteBatch::default();
    let errors = parse(body, Precision::Ns, DEFAULT, &mut batch);
    (batch, errors)
}

fn parse_ok(body: &str) -> WriteBatch {
    let (batch, errors) = parse_all(body);
    assert!(errors.is_empty(), "{body:?}: {errors:?}");
    batch
}

/// The single error of a one-line body: (column, byte, kind).
fn error(body: &str) -> (usize, usize, LineErrorKind) {
    let (batch, errors) = parse_all(body);
    assert!(batch.is_empty(), "{body:?} gave rows");
    assert_eq!(errors.len(), 1, "{body:?}: {errors:?}");
    let e = errors.into_iter().next().unwrap();
    assert_eq!(e.line, 1);
    (e.column, e.byte_offset, e.kind)
}

fn expected(expected: Expected, after: After) -> LineErrorKind {
    LineErrorKind::Expected { expected, after }
}

#[test]
fn every_value_type() {
    let b = parse_ok(
        "gpu,gpu_uuid=GPU-1,model=H100 util=97,temp=61.5,neg=-1e3,c=12i,n=-7i,u=18446744073709551615u,\
         ok=t,s=\"hi there\" 1700000000000000000",
    );
    assert_eq!(b.len(), 1);
    let r = b.get(0).unwrap();
    assert_eq!(
        (r.table(), r.time(), r.line()),
        ("gpu", 1_700_000_000_000_000_000, 1)
    );
    assert_eq!(
        r.tags().collect::<Vec<_>>(),
        vec![("gpu_uuid", "GPU-1"), ("model", "H100")]
    );
    assert_eq!(
        r.fields().collect::<Vec<_>>(),
        vec![
            ("util", FieldValue::F64(97.0)),
            ("temp", FieldValue::F64(61.5)),
            ("neg", FieldValue::F64(-1000.0)),
            ("c", FieldValue::I64(12)),
            ("n", FieldValue::I64(-7)),
            ("u", FieldValue::U64(u64::MAX)),
            ("ok", FieldValue::Bool(true)),
            ("s", FieldValue::Str("hi there")),
        ]
    );
}

#[test]
fn booleans_and_floats() {
    let trues = ["t", "T", "true", "True", "TRUE"];
    let falses = ["f", "F", "false", "False", "FALSE"];
    for (text, want) in trues
        .iter()
        .map(|t| (t, true))
        .chain(falses.iter().map(|f| (f, false)))
    {
        let b = parse_ok(&format!("m v={text}"));
        assert_eq!(
            b.get(0).unwrap().fields().next(),
            Some(("v", FieldValue::Bool(want)))
        );
    }
    for (text, want) in [
        ("1", 1.0_f64),
        ("-0", -0.0),
        (".5", 0.5),
        ("5.", 5.0),
        ("-1.5E-2", -0.015),
        ("1e+3", 1000.0),
        ("9223372036854775808", 9.223_372_036_854_776e18),
    ] {
        let b = parse_ok(&format!("m v={text}"));
        let (_, v) = b.get(0).unwrap().fields().next().unwrap();
        let FieldValue::F64(v) = v else {
            panic!("{text}: {v:?}")
        };
        assert_eq!(v.to_bits(), want.to_bits(), "{text}");
    }
}

#[test]
fn escapes() {
    let b = parse_ok(concat!(
        r#"my\ meas\,ure=x,t\=k\ 1=v\,1\ 2\=3=4,path=C:\x\\y f\ 1=1,s="a \"q\" \\ b \n",e="""#,
        "\n",
        r#"m,t=a\\ f=1"#,
    ));
    let r = b.get(0).unwrap();
    assert_eq!(r.table(), "my meas,ure=x");
    assert_eq!(
        r.tags().collect::<Vec<_>>(),
        vec![("path", r"C:\x\y"), ("t=k 1", "v,1 2=3=4")]
    );
    assert_eq!(
        r.fields().collect::<Vec<_>>(),
        vec![
            ("f 1", FieldValue::F64(1.0)),
            ("s", FieldValue::Str(r#"a "q" \ b \n"#)),
            ("e", FieldValue::Str("")),
        ]
    );
    // An escaped backslash before the separator ends the token.
    let r = b.get(1).unwrap();
    assert_eq!(r.tags().collect::<Vec<_>>(), vec![("t", "a\\")]);
}

#[test]
fn precision_and_default_time() {
    for (p, want) in [
        (Precision::Ns, 2),
        (Precision::Us, 2_000),
        (Precision::Ms, 2_000_000),
        (Precision::S, 2_000_000_000),
        (Precision::M, 120_000_000_000),
        (Precision::H, 7_200_000_000_000),
    ] {
        let mut b = WriteBatch::default();
        assert!(parse("m f=1 2\nm f=1 -2\nm f=1", p, DEFAULT, &mut b).is_empty());
        let times: Vec<_> = b.rows().map(|r| r.time()).collect();
        assert_eq!(times, vec![want, -want, DEFAULT], "{p}");
        assert_eq!(p.as_str().parse::<Precision>().unwrap(), p);
    }
    for (s, p) in [
        ("n", Precision::Ns),
        ("u", Precision::Us),
        ("µ", Precision::Us),
    ] {
        assert_eq!(s.parse::<Precision>().unwrap(), p);
    }
    let err = "sec".parse::<Precision>().unwrap_err();
    assert!(matches!(err, IngestError::UnknownPrecision { ref value } if value == "sec"));
    assert_eq!(err.status_code().as_u16(), 400);
}

#[test]
fn comments_blank_lines_crlf_whitespace() {
    let body = "# a comment\r\n\r\n  \t\n  m,t=1 f=1 5\r\n\tm f=2   \r\nm  f=3  7  \n#m f=4\n";
    let b = parse_ok(body);
    let rows: Vec<_> = b.rows().map(|r| (r.line(), r.time())).collect();
    assert_eq!(rows, vec![(4, 5), (5, DEFAULT), (6, 7)]);
    assert_eq!(parse_ok("").len(), 0);
    assert_eq!(parse_ok("\n\n# x\n").len(), 0);
}

#[test]
fn unicode() {
    let b = parse_ok("温度,地点=東京 値=1,s=\"🚀 ok\",µ=2i");
    let r = b.get(0).unwrap();
    assert_eq!(r.table(), "温度");
    assert_eq!(r.tags().next(), Some(("地点", "東京")));
    assert_eq!(r.fields().nth(1), Some(("s", FieldValue::Str("🚀 ok"))));
    assert_eq!(r.fields().nth(2), Some(("µ", FieldValue::I64(2))));
    // Columns count characters, byte offsets count bytes.
    let (column, byte, kind) = error("温度 値");
    assert_eq!((column, byte), (5, 10));
    assert_eq!(
        kind,
        expected(Expected::Equals, After::FieldKey("値".into()))
    );
}

#[test]
fn syntax_errors_name_their_position() {
    use Expected as E;
    let cases: Vec<(&str, usize, LineErrorKind)> = vec![
        ("m", 2, expected(E::FieldSet, After::Measurement)),
        ("m,t=1", 6, expected(E::FieldSet, After::Tags)),
        ("m,t=1 ", 7, expected(E::FieldSet, After::Tags)),
        (",t=1 f=1", 1, expected(E::MeasurementName, After::Nothing)),
        ("m,t f=1", 4, expected(E::Equals, After::TagKey("t".into()))),
        ("m,=v f=1", 3, expected(E::TagKey, After::Comma)),
        (
            "m,t= f=1",
            5,
            expected(E::TagValue, After::TagKey("t".into())),
        ),
        ("m,t=1, f=1", 7, expected(E::TagKey, After::Comma)),
        ("m f", 4, expected(E::Equals, After::FieldKey("f".into()))),
        (
            "m f,g=1",
            4,
            expected(E::Equals, After::FieldKey("f".into())),
        ),
        (
            "m f=",
            5,
            expected(E::FieldValue, After::FieldKey("f".into())),
        ),
        (
            "m f= 1",
            5,
            expected(E::FieldValue, After::FieldKey("f".into())),
        ),
        ("m f=1,", 7, expected(E::FieldKey, After::Comma)),
        ("m =1", 3, expected(E::FieldKey, After::Measurement)),
        ("m,t=1 =1", 7, expected(E::FieldKey, After::Tags)),
        (
            "m f=\"a\"x",
            8,
            expected(E::FieldSeparator, After::FieldValue("f".into())),
        ),
        ("m f=1 1 2", 9, expected(E::EndOfLine, After::Timestamp)),
    ];
    for (body, column, kind) in cases {
        let (c, byte, k) = error(body);
        assert_eq!((c, &k), (column, &kind), "{body:?}");
        assert_eq!(byte, column - 1, "{body:?}");
    }
}

#[test]
fn value_and_timestamp_errors() {
    let invalid = |text: &str, ty| LineErrorKind::InvalidNumber {
        field: "f".into(),
        text: text.into(),
        ty,
    };
    let cases: Vec<(&str, usize, LineErrorKind)> = vec![
        ("m f=1.2.3", 5, invalid("1.2.3", FieldType::F64)),
        ("m f=12x,g=1", 5, invalid("12x", FieldType::F64)),
        ("m f=-inf", 5, invalid("-inf", FieldType::F64)),
        (
            "m f=+1",
            5,
            LineErrorKind::InvalidFieldValue {
                field: "f".into(),
                text: "+1".into(),
            },
        ),
        (
            "m f=nan",
            5,
            LineErrorKind::InvalidFieldValue {
                field: "f".into(),
                text: "nan".into(),
            },
        ),
        (
            "m f=tru",
            5,
            LineErrorKind::InvalidFieldValue {
                field: "f".into(),
                text: "tru".into(),
            },
        ),
        (
            "m f=9223372036854775808i",
            5,
            invalid("9223372036854775808i", FieldType::I64),
        ),
        ("m f=1.5i", 5, invalid("1.5i", FieldType::I64)),
        ("m f=-i", 5, invalid("-i", FieldType::I64)),
        ("m f=-1u", 5, invalid("-1u", FieldType::U64)),
        (
            "m f=18446744073709551616u",
            5,
            invalid("18446744073709551616u", FieldType::U64),
        ),
        ("m f=\"abc", 5, LineErrorKind::UnterminatedString),
        ("m f=\"abc\\\"", 5, LineErrorKind::UnterminatedString),
        (
            "m f=1 12a",
            7,
            LineErrorKind::BadTimestamp { text: "12a".into() },
        ),
        (
            "m f=1 +1",
            7,
            LineErrorKind::BadTimestamp { text: "+1".into() },
        ),
        (
            "m f=1 1.5",
            7,
            LineErrorKind::BadTimestamp { text: "1.5".into() },
        ),
        (
            "m f=1 9223372036854775808",
            7,
            LineErrorKind::BadTimestamp {
                text: "9223372036854775808".into(),
            },
        ),
        (
            "m,t=1,t=2 f=1",
            1,
            RowError::DuplicateTag { key: "t".into() }.into(),
        ),
        (
            "m f=1,f=2i",
            1,
            RowError::DuplicateField { key: "f".into() }.into(),
        ),
        (
            "m time=1",
            1,
            RowError::ReservedName { key: "time".into() }.into(),
        ),
        (
            "m,time=x f=1",
            1,
            RowError::ReservedName { key: "time".into() }.into(),
        ),
    ];
    for (body, column, kind) in cases {
        let (c, byte, k) = error(body);
        assert_eq!((c, &k), (column, &kind), "{body:?}");
        assert_eq!(byte, column - 1, "{body:?}");
    }
    let mut b = WriteBatch::default();
    let errors = parse("m f=1 9223372036854775807", Precision::S, 0, &mut b);
    assert_eq!(
        errors[0].kind,
        LineErrorKind::TimestampOverflow {
            value: i64::MAX,
            unit: "s"
        }
    );
    assert_eq!(
        errors[0].to_string(),
        "line 1, column 7 (byte 6): timestamp 9223372036854775807 s does not fit in 64-bit nanoseconds"
    );
}

#[test]
fn bad_lines_do_not_lose_good_ones() {
    let body =
        "a f=1 1\r\nb f=oops 2\r\n\r\nc,t=x f=3i 3\r\nd,t=x,t=y f=1\nd f=\"unterminated\ne f=5 5";
    let (b, errors) = parse_all(body);
    let rows: Vec<_> = b.rows().map(|r| (r.table(), r.line(), r.time())).collect();
    assert_eq!(rows, vec![("a", 1, 1), ("c", 4, 3), ("e", 7, 5)]);
    let summary: Vec<_> = errors
        .iter()
        .map(|e| (e.line, e.column, e.byte_offset))
        .collect();
    // Line 2 starts at byte 9, line 5 at byte 37, line 6 at byte 51.
    assert_eq!(summary, vec![(2, 5, 13), (5, 1, 37), (6, 5, 55)]);
    assert_eq!(
        errors[0].to_string(),
        "line 2, column 5 (byte 13): invalid value \"oops\" for field \"f\": \
         expected a number, a boolean or a quoted string"
    );
    assert_eq!(
        errors[1].to_string(),
        "line 5, column 1 (byte 37): duplicate tag key `t`"
    );
    // The failed rows left nothing behind in the batch.
    assert_eq!(b.field_count(), 3);
}

#[test]
fn error_display_matches_the_documented_form() {
    let body = "gpu f=1\ngpu f=2\ngpu,gpu_uuid=GPU-1 temp 1\n";
    let (_, errors) = parse_all(body);
    assert_eq!(
        errors[0].to_string(),
        "line 3, column 24 (byte 39): expected '=' after field key \"temp\""
    );
}

/// A value as the round-trip test renders it.
#[derive(Debug, Clone)]
enum Value {
    F64(f64, bool),
    I64(i64),
    U64(u64),
    Bool(bool, usize),
    Str(String),
}

#[derive(Debug, Clone)]
struct Line {
    measurement: String,
    tags: BTreeMap<String, String>,
    fields: BTreeMap<String, Value>,
    time: Option<i64>,
}

fn escape(s: &str, special: &[char], out: &mut String) {
    for c in s.chars() {
        if c == '\\' || special.contains(&c) {
            out.push('\\');
        }
        out.push(c);
    }
}

fn render(line: &Line) -> String {
    let mut out = String::new();
    escape(&line.measurement, &[',', ' '], &mut out);
    for (k, v) in &line.tags {
        out.push(',');
        escape(k, &[',', '=', ' '], &mut out);
        out.push('=');
        escape(v, &[',', '=', ' '], &mut out);
    }
    for (i, (k, v)) in line.fields.iter().enumerate() {
        out.push(if i == 0 { ' ' } else { ',' });
        escape(k, &[',', '=', ' '], &mut out);
        out.push('=');
        match v {
            Value::F64(x, false) => out.push_str(&format!("{x}")),
            Value::F64(x, true) => out.push_str(&format!("{x:e}")),
            Value::I64(x) => out.push_str(&format!("{x}i")),
            Value::U64(x) => out.push_str(&format!("{x}u")),
            Value::Bool(b, spelling) => {
                let names = if *b {
                    ["t", "T", "true", "True", "TRUE"]
                } else {
                    ["f", "F", "false", "False", "FALSE"]
                };
                out.push_str(names[spelling % 5]);
            }
            Value::Str(s) => {
                out.push('"');
                escape(s, &['"'], &mut out);
                out.push('"');
            }
        }
    }
    if let Some(t) = line.time {
        out.push_str(&format!(" {t}"));
    }
    out
}

fn name() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_ ,=\\\\\"#.\t\r'é🚀-]{1,8}".prop_filter("reserved", |s| s != "time")
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        (
            any::<f64>().prop_filter("finite", |x| x.is_finite()),
            any::<bool>()
        )
            .prop_map(|(x, e)| Value::F64(x, e)),
        any::<i64>().prop_map(Value::I64),
        any::<u64>().prop_map(Value::U64),
        (any::<bool>(), 0..5usize).prop_map(|(b, s)| Value::Bool(b, s)),
        "[^\n]{0,12}".prop_map(Value::Str),
    ]
}

fn line() -> impl Strategy<Value = Line> {
    (
        name().prop_filter("comment or indent", |m| !m.starts_with(['#', '\t'])),
        proptest::collection::btree_map(name(), name(), 0..4),
        proptest::collection::btree_map(name(), value(), 1..6),
        proptest::option::of(any::<i64>()),
    )
        .prop_map(|(measurement, tags, fields, time)| Line {
            measurement,
            tags,
            fields,
            time,
        })
}

fn same(a: &Value, b: FieldValue<'_>) -> bool {
    match (a, b) {
        (Value::F64(x, _), FieldValue::F64(y)) => x.to_bits() == y.to_bits(),
        (Value::I64(x), FieldValue::I64(y)) => *x == y,
        (Value::U64(x), FieldValue::U64(y)) => *x == y,
        (Value::Bool(x, _), FieldValue::Bool(y)) => *x == y,
        (Value::Str(x), FieldValue::Str(y)) => x == y,
        _ => false,
    }
}

proptest! {
    #[test]
    fn rendered_rows_parse_back(lines in proptest::collection::vec(line(), 1..6), crlf in any::<bool>()) {
        let sep = if crlf { "\r\n" } else { "\n" };
        let body = lines.iter().map(render).collect::<Vec<_>>().join(sep);
        let (batch, errors) = parse_all(&body);
        prop_assert!(errors.is_empty(), "{:?}\n{}", errors, body);
        prop_assert_eq!(batch.len(), lines.len());
        for (line, row) in lines.iter().zip(batch.rows()) {
            prop_assert_eq!(row.table(), line.measurement.as_str());
            prop_assert_eq!(row.time(), line.time.unwrap_or(DEFAULT));
            let tags: Vec<_> = line.tags.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            prop_assert_eq!(row.tags().collect::<Vec<_>>(), tags);
            prop_assert_eq!(row.field_count(), line.fields.len());
            for ((k, v), (k2, v2)) in line.fields.iter().zip(row.fields()) {
                prop_assert_eq!(k.as_str(), k2);
                prop_assert!(same(v, v2), "{:?} != {:?}", v, v2);
            }
        }
    }

    /// Any input: no panic, and every non-blank, non-comment line gives a row or an error,
    /// with a position inside the body.
    #[test]
    fn every_line_is_a_row_or_an_error(body in "([a-z ,=\\\\\"#\t\r0-9.eiu-]{0,20}\n?){0,6}") {
        let (batch, errors) = parse_all(&body);
        let content_lines = body
            .split('\n')
            .map(|l| l.strip_suffix('\r').unwrap_or(l).trim_start_matches([' ', '\t']))
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .count();
        prop_assert_eq!(batch.len() + errors.len(), content_lines);
        for e in &errors {
            prop_assert!(e.byte_offset <= body.len());
            prop_assert!(body.is_char_boundary(e.byte_offset));
            prop_assert!(e.column >= 1);
            prop_assert!(!e.to_string().is_empty());
        }
    }
}
