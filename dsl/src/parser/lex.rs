//! Tokens: whitespace, keywords, symbols, identifiers, strings, numbers, durations and
//! calendar times. Every token parser skips the whitespace before it, so a failure points
//! at the token, not at the blank before it.

use nom::Parser;
use nom::bytes::complete::{tag, take_while, take_while1};
use nom::character::complete::{char, digit1, multispace0, satisfy};
use nom::combinator::{not, opt, peek, recognize};
use nom::sequence::pair;

use super::{P, PError, PResult};
use crate::ast::{Duration, Span, Timestamp};
use crate::error::Error;

/// Words that cannot name a field or function.
pub(crate) const RESERVED: &[&str] = &[
    "and", "or", "not", "in", "by", "as", "on", "asc", "desc", "true", "false", "null",
];

pub(crate) fn ws(i: &str) -> &str {
    match multispace0::<&str, PError<'_>>.parse(i) {
        Ok((rest, _)) => rest,
        Err(_) => i,
    }
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// A failure "expected `what`" at `at`.
pub(crate) fn expected<'a>(at: &'a str, what: &str) -> nom::Err<PError<'a>> {
    nom::Err::Error(PError::Expected {
        at,
        what: vec![what.to_string()],
    })
}

/// The keyword `word`, not followed by a letter, digit or `_`.
pub(crate) fn kw<'a>(word: &'static str) -> impl FnMut(&'a str) -> PResult<'a, &'a str> {
    move |i: &'a str| {
        let i = ws(i);
        let r: PResult<'a, &'a str> =
            recognize(pair(tag(word), not(peek(satisfy(is_ident_char))))).parse(i);
        r.map_err(|_| expected(i, &format!("`{word}`")))
    }
}

/// A punctuation symbol. `=` is not matched by the start of `==`, nor `<` by `<=`, nor `.`
/// by `..`.
pub(crate) fn sym<'a>(s: &'static str) -> impl FnMut(&'a str) -> PResult<'a, &'a str> {
    move |i: &'a str| {
        let i = ws(i);
        let r: PResult<'a, &'a str> = tag(s).parse(i);
        match r {
            Ok((rest, t)) => {
                let doubled = matches!(s, "=" | "<" | ">" | "!" | ".")
                    && (rest.starts_with('=') || (s == "." && rest.starts_with('.')));
                if doubled {
                    Err(expected(i, &format!("`{s}`")))
                } else {
                    Ok((rest, t))
                }
            }
            Err(_) => Err(expected(i, &format!("`{s}`"))),
        }
    }
}

impl<'a> P<'a> {
    /// An identifier that is not a reserved word: `[A-Za-z_][A-Za-z0-9_]*`.
    pub(crate) fn ident(&self, i: &'a str) -> PResult<'a, (&'a str, Span)> {
        let i = ws(i);
        let r: PResult<'a, &'a str> = recognize(pair(
            satisfy(|c| c.is_ascii_alphabetic() || c == '_'),
            take_while(is_ident_char),
        ))
        .parse(i);
        match r {
            Ok((rest, name)) if !RESERVED.contains(&name) => Ok((rest, (name, self.span(i, rest)))),
            _ => Err(expected(i, "a name")),
        }
    }

    /// A string in double or single quotes, with `\"`, `\'`, `\\`, `\n` and `\t` escapes.
    pub(crate) fn string(&self, i: &'a str) -> PResult<'a, (String, Span)> {
        let i = ws(i);
        let Some(quote) = i.chars().next().filter(|c| *c == '"' || *c == '\'') else {
            return Err(expected(i, "a string"));
        };
        let mut out = String::new();
        let mut chars = i[1..].char_indices();
        while let Some((k, c)) = chars.next() {
            match c {
                c if c == quote => {
                    let rest = &i[1 + k + 1..];
                    return Ok((rest, (out, self.span(i, rest))));
                }
                '\\' => match chars.next() {
                    Some((_, 'n')) => out.push('\n'),
                    Some((_, 't')) => out.push('\t'),
                    Some((_, c @ ('"' | '\'' | '\\'))) => out.push(c),
                    Some(_) => {
                        return Err(self.fatal(Error::Syntax {
                            pos: self.pos(&i[1 + k..]),
                            expected: "an escape (\\\", \\', \\\\, \\n or \\t)".into(),
                            found: super::found(&i[1 + k..]),
                        }));
                    }
                    None => break,
                },
                c => out.push(c),
            }
        }
        Err(self.fatal(Error::Syntax {
            pos: self.pos(i),
            expected: format!("a closing {quote} for this string"),
            found: "the end of the query".into(),
        }))
    }

    /// An unsigned integer.
    pub(crate) fn integer(&self, i: &'a str) -> PResult<'a, (u64, Span)> {
        let i = ws(i);
        let r: PResult<'a, &'a str> = digit1.parse(i);
        let (rest, digits) = r.map_err(|_| expected(i, "a whole number"))?;
        if rest.starts_with(|c: char| c.is_ascii_alphabetic() || c == '.') {
            return Err(expected(i, "a whole number"));
        }
        let span = self.span(i, rest);
        let n = digits.parse().map_err(|_| {
            self.fatal(Error::Value {
                pos: self.pos(i),
                message: "number too large",
            })
        })?;
        Ok((rest, (n, span)))
    }

    /// A duration: one or more `<digits><unit>` with units ms, s, m, h, d, w.
    pub(crate) fn duration(&self, i: &'a str) -> PResult<'a, Duration> {
        let i = ws(i);
        match self.number(i)? {
            (rest, Number::Duration(d)) => Ok((rest, d)),
            _ => Err(expected(i, "a duration such as 5m")),
        }
    }

    /// An integer, a float (`1.5`, `2e3`) or a duration (`90s`, `1h30m`).
    pub(crate) fn number(&self, i: &'a str) -> PResult<'a, Number> {
        let start = ws(i);
        let r: PResult<'a, &'a str> = digit1.parse(start);
        let (mut rest, int) = r.map_err(|_| expected(start, "a number"))?;
        // A float: digits, then a fraction and/or an exponent.
        let frac: PResult<'a, Option<&'a str>> =
            opt(recognize(pair(char('.'), digit1))).parse(rest);
        let (after_frac, frac) = frac?;
        let exp: PResult<'a, Option<&'a str>> = opt(recognize((
            satisfy(|c| c == 'e' || c == 'E'),
            opt(satisfy(|c| c == '+' || c == '-')),
            digit1,
        )))
        .parse(after_frac);
        let (after_exp, exp) = exp?;
        if frac.is_some() || exp.is_some() {
            let text = &start[..start.len() - after_exp.len()];
            if after_exp.starts_with(is_ident_char) {
                return Err(self.fatal(Error::Syntax {
                    pos: self.pos(after_exp),
                    expected: "an operator after the number".into(),
                    found: super::found(after_exp),
                }));
            }
            let v: f64 = text.parse().map_err(|_| {
                self.fatal(Error::Value {
                    pos: self.pos(start),
                    message: "not a number",
                })
            })?;
            if !v.is_finite() {
                return Err(self.fatal(Error::Value {
                    pos: self.pos(start),
                    message: "number too large",
                }));
            }
            return Ok((after_exp, Number::Float(v)));
        }
        if !rest.starts_with(|c: char| c.is_ascii_alphabetic()) {
            let v: i64 = int.parse().map_err(|_| {
                self.fatal(Error::Value {
                    pos: self.pos(start),
                    message: "integer too large (at most 9223372036854775807)",
                })
            })?;
            return Ok((rest, Number::Int(v)));
        }
        // A duration: `<digits><unit>` repeated.
        let mut total: i64 = 0;
        let mut digits = int;
        let mut digits_at = start;
        loop {
            let r: PResult<'a, &'a str> =
                take_while1(|c: char| c.is_ascii_alphabetic()).parse(rest);
            let (after_unit, unit) = r?;
            let size: i64 = match unit {
                "ms" => 1,
                "s" => 1_000,
                "m" => 60_000,
                "h" => 3_600_000,
                "d" => 86_400_000,
                "w" => 604_800_000,
                _ => {
                    return Err(self.fatal(Error::Syntax {
                        pos: self.pos(rest),
                        expected: "a duration unit (ms, s, m, h, d or w)".into(),
                        found: format!("`{unit}`"),
                    }));
                }
            };
            let too_long = || {
                self.fatal(Error::Value {
                    pos: self.pos(digits_at),
                    message: "duration too long",
                })
            };
            let n: i64 = digits.parse().map_err(|_| too_long())?;
            total = n
                .checked_mul(size)
                .and_then(|v| v.checked_add(total))
                .ok_or_else(too_long)?;
            rest = after_unit;
            let r: PResult<'a, &'a str> = digit1.parse(rest);
            match r {
                Ok((after_digits, d))
                    if after_digits.starts_with(|c: char| c.is_ascii_alphabetic()) =>
                {
                    digits_at = rest;
                    digits = d;
                    rest = after_digits;
                }
                Ok(_) => {
                    return Err(self.fatal(Error::Syntax {
                        pos: self.pos(rest),
                        expected: "a duration unit (ms, s, m, h, d or w)".into(),
                        found: super::found(rest),
                    }));
                }
                Err(_) => break,
            }
        }
        if rest.starts_with(is_ident_char) {
            return Err(self.fatal(Error::Syntax {
                pos: self.pos(rest),
                expected: "an operator after the duration".into(),
                found: super::found(rest),
            }));
        }
        Ok((
            rest,
            Number::Duration(Duration {
                ms: total,
                span: self.span(start, rest),
            }),
        ))
    }

    /// `YYYY-MM-DD`, optionally followed by `THH:MM[:SS]` or ` HH:MM[:SS]`, and `Z`.
    pub(crate) fn timestamp(&self, i: &'a str) -> PResult<'a, (Timestamp, Span)> {
        let start = ws(i);
        let fixed = |s: &'a str, n: usize| -> Option<(u32, &'a str)> {
            let d = s.get(..n)?;
            if d.bytes().all(|b| b.is_ascii_digit()) {
                Some((d.parse().ok()?, &s[n..]))
            } else {
                None
            }
        };
        let date = (|| {
            let (y, r) = fixed(start, 4)?;
            let (mo, r) = fixed(r.strip_prefix('-')?, 2)?;
            let (d, r) = fixed(r.strip_prefix('-')?, 2)?;
            Some((y, mo, d, r))
        })();
        let Some((year, month, day, mut rest)) = date else {
            return Err(expected(start, "a date such as 2026-11-01"));
        };
        let (mut hour, mut minute, mut second) = (0, 0, 0);
        let time = rest
            .strip_prefix('T')
            .or_else(|| rest.strip_prefix(' '))
            .and_then(|r| {
                let (h, r) = fixed(r, 2)?;
                let (m, r) = fixed(r.strip_prefix(':')?, 2)?;
                match r.strip_prefix(':').and_then(|r| fixed(r, 2)) {
                    Some((s, r)) => Some((h, m, s, r)),
                    None => Some((h, m, 0, r)),
                }
            });
        if let Some((h, m, s, r)) = time {
            (hour, minute, second, rest) = (h, m, s, r);
        }
        rest = rest.strip_prefix('Z').unwrap_or(rest);
        let span = self.span(start, rest);
        let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
        let days_in_month = match month {
            1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
            4 | 6 | 9 | 11 => 30,
            2 if leap => 29,
            2 => 28,
            _ => 0,
        };
        if day == 0 || day > days_in_month || hour > 23 || minute > 59 || second > 59 {
            return Err(self.fatal(Error::Value {
                pos: self.pos(start),
                message: "not a valid UTC date and time",
            }));
        }
        let ts = Timestamp {
            year: year as u16,
            month: month as u8,
            day: day as u8,
            hour: hour as u8,
            minute: minute as u8,
            second: second as u8,
        };
        Ok((rest, (ts, span)))
    }
}

/// A numeric literal.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Number {
    Int(i64),
    Float(f64),
    Duration(Duration),
}
