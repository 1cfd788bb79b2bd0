//! The PromQL lexer: turns the input into [`Token`]s with byte offsets.
//!
//! Like Prometheus' lexer it has three modes: outside braces (keywords, operators,
//! numbers, durations), inside `{...}` (every word is a label name, keywords
//! included) and inside `[...]` (durations and `:`). Keywords are not resolved here:
//! words stay [`Tok::Ident`] and the parser compares them case-insensitively, except
//! `Inf` and `NaN`, which are numbers everywhere outside braces.

use nom::{
    IResult, Parser,
    bytes::complete::{take_while, take_while1},
    character::complete::satisfy,
    combinator::recognize,
    sequence::pair,
};

use super::ParseError;

/// A token kind.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    /// A word: identifier, keyword or metric name (may contain `:` outside braces).
    Ident(String),
    /// A number literal (`Inf`, `NaN` included).
    Number(f64),
    /// A duration literal such as `1h30m`, in milliseconds.
    Duration(i64),
    /// A string literal, unescaped.
    Str(String),
    LParen,
    RParen,
    LBrace,
    RBrace,
    LBracket,
    RBracket,
    Comma,
    Colon,
    At,
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
    /// `=` (label matcher)
    Assign,
    /// `==`
    EqEq,
    /// `!=`
    Ne,
    /// `=~`
    ReMatch,
    /// `!~`
    ReNoMatch,
    Lt,
    Le,
    Gt,
    Ge,
    Eof,
}

impl Tok {
    /// How the token is named in "unexpected ..." messages.
    pub(crate) fn describe(&self) -> String {
        match self {
            Tok::Ident(w) => format!("identifier \"{w}\""),
            Tok::Number(_) => "number".to_owned(),
            Tok::Duration(_) => "duration".to_owned(),
            Tok::Str(_) => "string".to_owned(),
            Tok::Eof => "end of input".to_owned(),
            other => format!("\"{}\"", other.symbol()),
        }
    }

    fn symbol(&self) -> &'static str {
        match self {
            Tok::LParen => "(",
            Tok::RParen => ")",
            Tok::LBrace => "{",
            Tok::RBrace => "}",
            Tok::LBracket => "[",
            Tok::RBracket => "]",
            Tok::Comma => ",",
            Tok::Colon => ":",
            Tok::At => "@",
            Tok::Add => "+",
            Tok::Sub => "-",
            Tok::Mul => "*",
            Tok::Div => "/",
            Tok::Mod => "%",
            Tok::Pow => "^",
            Tok::Assign => "=",
            Tok::EqEq => "==",
            Tok::Ne => "!=",
            Tok::ReMatch => "=~",
            Tok::ReNoMatch => "!~",
            Tok::Lt => "<",
            Tok::Le => "<=",
            Tok::Gt => ">",
            Tok::Ge => ">=",
            Tok::Ident(_) | Tok::Number(_) | Tok::Duration(_) | Tok::Str(_) | Tok::Eof => "",
        }
    }
}

/// A token and the byte range it covers.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Token {
    pub tok: Tok,
    pub start: usize,
    pub end: usize,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Normal,
    Braces,
    Brackets,
}

/// Splits `input` into tokens, ending with [`Tok::Eof`]. A lexical error ends the
/// token list early (with an `Eof` where the error is) and is returned beside it: the
/// parser reports it only if it gets that far without an error of its own, as
/// Prometheus' lazy lexer does.
pub(crate) fn tokenize(input: &str) -> (Vec<Token>, Option<ParseError>) {
    let mut lx = Lexer {
        input,
        pos: 0,
        mode: Mode::Normal,
        paren_depth: 0,
        tokens: Vec::new(),
    };
    match lx.run() {
        Ok(()) => (lx.tokens, None),
        Err(e) => {
            lx.tokens.push(Token {
                tok: Tok::Eof,
                start: e.offset,
                end: e.offset,
            });
            (lx.tokens, Some(e))
        }
    }
}

struct Lexer<'a> {
    input: &'a str,
    pos: usize,
    mode: Mode,
    paren_depth: i64,
    tokens: Vec<Token>,
}

fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r')
}

fn is_alpha(c: char) -> bool {
    c == '_' || c.is_ascii_alphabetic()
}

fn is_alnum(c: char) -> bool {
    is_alpha(c) || c.is_ascii_digit()
}

/// A word outside braces: `[a-zA-Z_:][a-zA-Z0-9_:]*`.
fn metric_word(i: &str) -> IResult<&str, &str> {
    recognize(pair(
        satisfy(|c| is_alpha(c) || c == ':'),
        take_while(|c: char| is_alnum(c) || c == ':'),
    ))
    .parse(i)
}

/// A word inside braces: `[a-zA-Z_][a-zA-Z0-9_]*`.
fn label_word(i: &str) -> IResult<&str, &str> {
    recognize(pair(satisfy(is_alpha), take_while(is_alnum))).parse(i)
}

/// Whitespace and `#` comments (to the end of the line).
fn skip_trivia(i: &str) -> &str {
    let mut rest = i;
    loop {
        let trimmed = rest.trim_start_matches(is_space);
        if let Some(comment) = trimmed.strip_prefix('#') {
            rest = comment.trim_start_matches(|c| c != '\n' && c != '\r');
        } else {
            return trimmed;
        }
    }
}

/// `[0-9]+(ms|[smhdwy])` repeated, as one duration literal.
fn duration_text(i: &str) -> IResult<&str, &str> {
    recognize(nom::multi::many1(pair(
        take_while1(|c: char| c.is_ascii_digit()),
        nom::branch::alt((
            nom::bytes::complete::tag("ms"),
            recognize(satisfy(|c| "smhdwy".contains(c))),
        )),
    )))
    .parse(i)
}

impl<'a> Lexer<'a> {
    fn err(&self, offset: usize, message: impl Into<String>) -> ParseError {
        ParseError::new(self.input, offset, message)
    }

    fn push(&mut self, tok: Tok, start: usize, end: usize) {
        self.tokens.push(Token { tok, start, end });
        self.pos = end;
    }

    fn rest(&self) -> &'a str {
        &self.input[self.pos..]
    }

    fn run(&mut self) -> Result<(), ParseError> {
        loop {
            let rest = skip_trivia(self.rest());
            self.pos = self.input.len() - rest.len();
            let start = self.pos;
            let Some(c) = rest.chars().next() else {
                return match self.mode {
                    Mode::Braces => Err(self.err(start, "unexpected end of input inside braces")),
                    Mode::Brackets => Err(self.err(start, "unclosed left bracket")),
                    Mode::Normal if self.paren_depth > 0 => {
                        Err(self.err(start, "unclosed left parenthesis"))
                    }
                    Mode::Normal => {
                        self.push(Tok::Eof, start, start);
                        Ok(())
                    }
                };
            };
            match self.mode {
                Mode::Braces => self.lex_in_braces(c, start)?,
                Mode::Normal | Mode::Brackets => self.lex_normal(c, start)?,
            }
        }
    }

    fn lex_in_braces(&mut self, c: char, start: usize) -> Result<(), ParseError> {
        let rest = self.rest();
        match c {
            c if is_alpha(c) => {
                let (after, word) =
                    label_word(rest).map_err(|_| self.err(start, "bad label name"))?;
                let end = self.input.len() - after.len();
                self.push(Tok::Ident(word.to_owned()), start, end);
            }
            ',' => self.push(Tok::Comma, start, start + 1),
            '"' | '\'' | '`' => self.lex_string(c, start)?,
            '=' if rest.starts_with("=~") => self.push(Tok::ReMatch, start, start + 2),
            '=' => self.push(Tok::Assign, start, start + 1),
            '!' if rest.starts_with("!~") => self.push(Tok::ReNoMatch, start, start + 2),
            '!' if rest.starts_with("!=") => self.push(Tok::Ne, start, start + 2),
            '}' => {
                self.push(Tok::RBrace, start, start + 1);
                self.mode = Mode::Normal;
            }
            '{' => return Err(self.err(start, "unexpected left brace \"{\" inside braces")),
            other => {
                return Err(self.err(
                    start,
                    format!("unexpected character inside braces: {other:?}"),
                ));
            }
        }
        Ok(())
    }

    fn lex_normal(&mut self, c: char, start: usize) -> Result<(), ParseError> {
        let rest = self.rest();
        let two = |s: &str| rest.starts_with(s);
        match c {
            ',' => self.push(Tok::Comma, start, start + 1),
            '*' => self.push(Tok::Mul, start, start + 1),
            '/' => self.push(Tok::Div, start, start + 1),
            '%' => self.push(Tok::Mod, start, start + 1),
            '+' => self.push(Tok::Add, start, start + 1),
            '-' => self.push(Tok::Sub, start, start + 1),
            '^' => self.push(Tok::Pow, start, start + 1),
            '@' => self.push(Tok::At, start, start + 1),
            '=' if two("==") => self.push(Tok::EqEq, start, start + 2),
            '=' if two("=~") => {
                return Err(self.err(start, "unexpected character after '=': '~'"));
            }
            '=' => self.push(Tok::Assign, start, start + 1),
            '!' if two("!=") => self.push(Tok::Ne, start, start + 2),
            '!' => {
                return Err(self.err(start, "unexpected character after '!', expected '='"));
            }
            '<' if two("<=") => self.push(Tok::Le, start, start + 2),
            '<' => self.push(Tok::Lt, start, start + 1),
            '>' if two(">=") => self.push(Tok::Ge, start, start + 2),
            '>' => self.push(Tok::Gt, start, start + 1),
            '"' | '\'' | '`' => self.lex_string(c, start)?,
            c if c.is_ascii_digit()
                || (c == '.' && rest[1..].starts_with(|d: char| d.is_ascii_digit())) =>
            {
                self.lex_number_or_duration(start)?
            }
            ':' if self.mode == Mode::Brackets => {
                self.push(Tok::Colon, start, start + 1);
            }
            c if is_alpha(c) || c == ':' => {
                let (after, word) =
                    metric_word(rest).map_err(|_| self.err(start, "bad identifier"))?;
                let end = self.input.len() - after.len();
                let tok = if word.eq_ignore_ascii_case("inf") {
                    Tok::Number(f64::INFINITY)
                } else if word.eq_ignore_ascii_case("nan") {
                    Tok::Number(f64::NAN)
                } else {
                    Tok::Ident(word.to_owned())
                };
                self.push(tok, start, end);
            }
            '(' => {
                self.paren_depth += 1;
                self.push(Tok::LParen, start, start + 1);
            }
            ')' => {
                self.paren_depth -= 1;
                if self.paren_depth < 0 {
                    return Err(self.err(start, "unexpected right parenthesis \")\""));
                }
                self.push(Tok::RParen, start, start + 1);
            }
            '{' if self.mode == Mode::Normal => {
                self.push(Tok::LBrace, start, start + 1);
                self.mode = Mode::Braces;
            }
            '}' => return Err(self.err(start, "unexpected right brace \"}\"")),
            '[' if self.mode == Mode::Normal => {
                self.push(Tok::LBracket, start, start + 1);
                self.mode = Mode::Brackets;
            }
            '[' => return Err(self.err(start, "unexpected left bracket \"[\" inside brackets")),
            ']' if self.mode == Mode::Brackets => {
                self.push(Tok::RBracket, start, start + 1);
                self.mode = Mode::Normal;
            }
            ']' => return Err(self.err(start, "unexpected right bracket \"]\"")),
            other => return Err(self.err(start, format!("unexpected character: {other:?}"))),
        }
        Ok(())
    }

    fn lex_number_or_duration(&mut self, start: usize) -> Result<(), ParseError> {
        let rest = self.rest();
        if let Ok((after, text)) = duration_text(rest)
            && !after.starts_with(|c: char| is_alnum(c) || c == '.')
        {
            let end = start + text.len();
            let ms = parse_duration(text).map_err(|m| self.err(start, m))?;
            self.push(Tok::Duration(ms), start, end);
            return Ok(());
        }
        let len = scan_number(rest);
        let text = &rest[..len];
        let next = rest[len..].chars().next();
        if len == 0 || next.is_some_and(|c| is_alnum(c) || c == '.') {
            let bad_end = len
                + rest[len..]
                    .find(|c: char| !(is_alnum(c) || c == '.'))
                    .unwrap_or(rest.len() - len);
            return Err(self.err(
                start,
                format!("bad number or duration syntax: {:?}", &rest[..bad_end]),
            ));
        }
        let value = parse_number(text)
            .ok_or_else(|| self.err(start, format!("bad number syntax: {text:?}")))?;
        if value.is_infinite() {
            return Err(self.err(
                start,
                format!("error parsing number {text:?}: value out of range"),
            ));
        }
        self.push(Tok::Number(value), start, start + len);
        Ok(())
    }

    fn lex_string(&mut self, quote: char, start: usize) -> Result<(), ParseError> {
        let body_start = start + 1;
        let body = &self.input[body_start..];
        if quote == '`' {
            let Some(close) = body.find('`') else {
                return Err(self.err(start, "unterminated raw string"));
            };
            self.push(
                Tok::Str(body[..close].to_owned()),
                start,
                body_start + close + 1,
            );
            return Ok(());
        }
        let mut bytes: Vec<u8> = Vec::new();
        let mut chars = body.char_indices();
        loop {
            let Some((i, c)) = chars.next() else {
                return Err(self.err(start, "unterminated quoted string"));
            };
            match c {
                '\n' => return Err(self.err(start, "unterminated quoted string")),
                c if c == quote => {
                    let value = String::from_utf8(bytes)
                        .map_err(|_| self.err(start, "string escapes produce invalid UTF-8"))?;
                    self.push(Tok::Str(value), start, body_start + i + 1);
                    return Ok(());
                }
                '\\' => {
                    let esc_at = body_start + i;
                    let Some((_, e)) = chars.next() else {
                        return Err(self.err(esc_at, "escape sequence not terminated"));
                    };
                    let simple = match e {
                        'a' => Some(0x07u8),
                        'b' => Some(0x08),
                        'f' => Some(0x0c),
                        'n' => Some(b'\n'),
                        'r' => Some(b'\r'),
                        't' => Some(b'\t'),
                        'v' => Some(0x0b),
                        '\\' => Some(b'\\'),
                        e if e == quote => Some(e as u8),
                        _ => None,
                    };
                    if let Some(b) = simple {
                        bytes.push(b);
                        continue;
                    }
                    let (digits, base, max, first) = match e {
                        '0'..='7' => (3, 8, 255, Some(e)),
                        'x' => (2, 16, 255, None),
                        'u' => (4, 16, 0x10ffff, None),
                        'U' => (8, 16, 0x10ffff, None),
                        other => {
                            return Err(
                                self.err(esc_at, format!("unknown escape sequence \\{other}"))
                            );
                        }
                    };
                    let mut value: u32 = 0;
                    let mut n = 0;
                    if let Some(f) = first {
                        value = f.to_digit(8).unwrap_or(0);
                        n = 1;
                    }
                    while n < digits {
                        let Some((_, d)) = chars.next() else {
                            return Err(self.err(esc_at, "escape sequence not terminated"));
                        };
                        let Some(v) = d.to_digit(base) else {
                            return Err(self.err(
                                esc_at,
                                format!("illegal character {d:?} in escape sequence"),
                            ));
                        };
                        value = value * base + v;
                        n += 1;
                    }
                    if value > max || (0xD800..0xE000).contains(&value) {
                        return Err(
                            self.err(esc_at, "escape sequence is an invalid Unicode code point")
                        );
                    }
                    if matches!(e, 'u' | 'U') {
                        let ch = char::from_u32(value).unwrap_or(char::REPLACEMENT_CHARACTER);
                        let mut buf = [0u8; 4];
                        bytes.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                    } else {
                        // \x and octal escapes are raw bytes, as in Go.
                        bytes.push(value as u8);
                    }
                }
                c => {
                    let mut buf = [0u8; 4];
                    bytes.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
            }
        }
    }
}

/// Length of the number at the start of `s` (0 if none): decimal with optional
/// fraction and exponent, or `0x` hex; `_` allowed between digits.
fn scan_number(s: &str) -> usize {
    let b = s.as_bytes();
    let digits = |mut i: usize, hex: bool| {
        while i < b.len() {
            let c = b[i];
            let is_digit = if hex {
                c.is_ascii_hexdigit()
            } else {
                c.is_ascii_digit()
            };
            if is_digit {
                i += 1;
            } else if c == b'_' && i > 0 && i + 1 < b.len() {
                let next_ok = if hex {
                    b[i + 1].is_ascii_hexdigit()
                } else {
                    b[i + 1].is_ascii_digit()
                };
                let prev_ok = b[i - 1].is_ascii_hexdigit() || b[i - 1] == b'x' || b[i - 1] == b'X';
                if next_ok && prev_ok {
                    i += 1;
                } else {
                    break;
                }
            } else {
                break;
            }
        }
        i
    };
    if b.len() > 2 && b[0] == b'0' && (b[1] == b'x' || b[1] == b'X') {
        let end = digits(2, true);
        return if end > 2 { end } else { 0 };
    }
    let mut i = digits(0, false);
    let int_digits = i;
    if i < b.len() && b[i] == b'.' {
        let frac_end = digits(i + 1, false);
        if int_digits == 0 && frac_end == i + 1 {
            return 0;
        }
        i = frac_end;
    }
    if i == 0 {
        return 0;
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        let mut j = i + 1;
        if j < b.len() && (b[j] == b'+' || b[j] == b'-') {
            j += 1;
        }
        let exp_end = digits(j, false);
        if exp_end > j {
            i = exp_end;
        }
    }
    i
}

/// The value of a number scanned by [`scan_number`], with Go's `ParseInt(s, 0, 64)`
/// then `ParseFloat` semantics (so `010` is octal 8, like Prometheus).
fn parse_number(text: &str) -> Option<f64> {
    let clean: String = text.chars().filter(|&c| c != '_').collect();
    if let Some(hex) = clean
        .strip_prefix("0x")
        .or_else(|| clean.strip_prefix("0X"))
    {
        return u64::from_str_radix(hex, 16).ok().map(|v| v as f64);
    }
    if clean.len() > 1
        && clean.starts_with('0')
        && clean.bytes().all(|c| (b'0'..=b'7').contains(&c))
    {
        return i64::from_str_radix(&clean[1..], 8).ok().map(|v| v as f64);
    }
    clean.parse::<f64>().ok()
}

/// The longest duration Prometheus can represent (`time.Duration` is int64
/// nanoseconds), in milliseconds.
pub(crate) const MAX_DURATION_MS: i64 = i64::MAX / 1_000_000;

/// Parses `1h30m`-style durations: units `y w d h m s ms` in that order, each at
/// most once. Returns milliseconds.
pub(crate) fn parse_duration(text: &str) -> Result<i64, String> {
    const UNITS: [(&str, i64); 7] = [
        ("y", 365 * 24 * 3_600_000),
        ("w", 7 * 24 * 3_600_000),
        ("d", 24 * 3_600_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ];
    let invalid = || format!("not a valid duration string: {text:?}");
    let too_long = || format!("duration out of range: {text:?}");
    let mut rest = text;
    let mut next_unit = 0;
    let mut total: i64 = 0;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(invalid());
        }
        let n: i64 = rest[..digits].parse().map_err(|_| too_long())?;
        rest = &rest[digits..];
        let unit_len = if rest.starts_with("ms") { 2 } else { 1 };
        let unit = rest.get(..unit_len).ok_or_else(invalid)?;
        let idx = UNITS[next_unit..]
            .iter()
            .position(|(u, _)| *u == unit)
            .ok_or_else(invalid)?
            + next_unit;
        next_unit = idx + 1;
        total = n
            .checked_mul(UNITS[idx].1)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(too_long)?;
        rest = &rest[unit_len..];
    }
    if total > MAX_DURATION_MS {
        return Err(too_long());
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(s: &str) -> Vec<Tok> {
        let (tokens, err) = tokenize(s);
        assert_eq!(err, None);
        tokens.into_iter().map(|t| t.tok).collect()
    }

    fn lex_fails(s: &str) -> bool {
        tokenize(s).1.is_some()
    }

    #[test]
    fn numbers() {
        assert_eq!(toks("0x1f")[0], Tok::Number(31.0));
        assert_eq!(toks("1e3")[0], Tok::Number(1000.0));
        assert_eq!(toks(".5")[0], Tok::Number(0.5));
        assert_eq!(toks("5.")[0], Tok::Number(5.0));
        assert_eq!(toks("1_000")[0], Tok::Number(1000.0));
        assert_eq!(toks("010")[0], Tok::Number(8.0));
        assert_eq!(toks("09")[0], Tok::Number(9.0));
        assert_eq!(toks("1.5e-3")[0], Tok::Number(0.0015));
        assert!(matches!(toks("NaN")[0], Tok::Number(v) if v.is_nan()));
        assert_eq!(toks("iNf")[0], Tok::Number(f64::INFINITY));
        assert!(lex_fails("1_"));
        assert!(lex_fails("1__0"));
        assert!(lex_fails("1.2.3"));
        assert!(lex_fails("12abc"));
        assert!(lex_fails(&"9".repeat(400)), "overflows f64");
    }

    #[test]
    fn durations() {
        assert_eq!(toks("1h30m")[0], Tok::Duration(5_400_000));
        assert_eq!(toks("1y")[0], Tok::Duration(31_536_000_000));
        assert_eq!(toks("1w")[0], Tok::Duration(604_800_000));
        assert_eq!(toks("1d")[0], Tok::Duration(86_400_000));
        assert_eq!(toks("1ms")[0], Tok::Duration(1));
        assert_eq!(toks("1m1ms")[0], Tok::Duration(60_001));
        assert!(lex_fails("1m1h"), "units must descend");
        assert!(lex_fails("1m1m"), "each unit once");
        assert!(lex_fails("1.5m"));
        assert_eq!(toks("292y")[0], Tok::Duration(292 * 31_536_000_000));
        assert!(lex_fails("293y"), "beyond int64 nanoseconds");
        let (_, err) = tokenize("x[99999999999999999999y]");
        assert_eq!(
            err.map(|e| (e.offset, e.message)),
            Some((
                2,
                "duration out of range: \"99999999999999999999y\"".to_owned()
            ))
        );
        assert!(
            lex_fails("1000000000000000w"),
            "overflows while multiplying"
        );
    }

    #[test]
    fn strings() {
        assert_eq!(toks(r#""a\"b""#)[0], Tok::Str("a\"b".into()));
        assert_eq!(toks(r"'a\'b'")[0], Tok::Str("a'b".into()));
        assert_eq!(
            toks(r#""\x41\101\u00e9\U0001F600""#)[0],
            Tok::Str("AAé😀".into())
        );
        assert_eq!(toks(r#""\n\t\\""#)[0], Tok::Str("\n\t\\".into()));
        assert_eq!(toks("`a\\nb`")[0], Tok::Str("a\\nb".into()));
        assert!(lex_fails(r#""\q""#));
        assert!(lex_fails(r#""\xff""#), "invalid UTF-8");
        assert!(lex_fails("\"abc"));
        assert!(lex_fails("\"a\nb\""));
        assert!(lex_fails(r"'a\'"));
    }

    #[test]
    fn comments_and_modes() {
        assert_eq!(
            toks("foo # comment\n + 1"),
            vec![
                Tok::Ident("foo".into()),
                Tok::Add,
                Tok::Number(1.0),
                Tok::Eof
            ]
        );
        // Inside braces `inf` and keywords are plain label names.
        assert_eq!(toks("{inf=\"x\"}")[1], Tok::Ident("inf".into()));
        assert_eq!(toks("x[5m:1m]")[2], Tok::Duration(300_000));
        assert_eq!(toks("x[5m:1m]")[3], Tok::Colon);
        assert!(lex_fails("x{"));
        assert!(lex_fails("x[5m"));
        assert!(lex_fails("(x"));
        assert!(lex_fails("x)"));
    }
}
