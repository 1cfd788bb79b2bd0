//! Money: integer micro-units of a currency, exact decimal parsing and formatting, and each
//! currency's minor unit.
//!
//! Every amount rigwatch stores or serves is an `i64` count of micro-units (µ): one
//! millionth of the currency's unit (1 USD = 1,000,000 µ). A price is µ per GPU-hour. No
//! amount is ever a float on the money path: decimals typed by people (`--rate H100=2.50`)
//! are parsed digit by digit, and shown by integer division. An `i64` holds
//! 9,223,372,036,854 units in µ; PromQL serves amounts as float64, exact up to 2^53 µ
//! (about 9 billion units).

use std::fmt;

/// Micro-units per currency unit.
pub const MICRO_PER_UNIT: i64 = 1_000_000;

/// Decimals a typed amount may have: one per power of ten down to the micro-unit.
pub const MAX_DECIMALS: u32 = 6;

/// A currency: its ISO 4217 code and how many decimals its minor unit has (USD: 2, cents;
/// JPY: 0). Settlement rounds down to the minor unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Currency {
    pub code: &'static str,
    pub minor_digits: u32,
}

/// The currencies `--currency` accepts (ISO 4217 codes and their minor units).
pub const CURRENCIES: &[Currency] = &[
    Currency {
        code: "USD",
        minor_digits: 2,
    },
    Currency {
        code: "EUR",
        minor_digits: 2,
    },
    Currency {
        code: "GBP",
        minor_digits: 2,
    },
    Currency {
        code: "CHF",
        minor_digits: 2,
    },
    Currency {
        code: "CAD",
        minor_digits: 2,
    },
    Currency {
        code: "AUD",
        minor_digits: 2,
    },
    Currency {
        code: "NZD",
        minor_digits: 2,
    },
    Currency {
        code: "SGD",
        minor_digits: 2,
    },
    Currency {
        code: "HKD",
        minor_digits: 2,
    },
    Currency {
        code: "CNY",
        minor_digits: 2,
    },
    Currency {
        code: "INR",
        minor_digits: 2,
    },
    Currency {
        code: "BRL",
        minor_digits: 2,
    },
    Currency {
        code: "MXN",
        minor_digits: 2,
    },
    Currency {
        code: "SEK",
        minor_digits: 2,
    },
    Currency {
        code: "NOK",
        minor_digits: 2,
    },
    Currency {
        code: "DKK",
        minor_digits: 2,
    },
    Currency {
        code: "PLN",
        minor_digits: 2,
    },
    Currency {
        code: "CZK",
        minor_digits: 2,
    },
    Currency {
        code: "ZAR",
        minor_digits: 2,
    },
    Currency {
        code: "AED",
        minor_digits: 2,
    },
    Currency {
        code: "JPY",
        minor_digits: 0,
    },
    Currency {
        code: "KRW",
        minor_digits: 0,
    },
    Currency {
        code: "CLP",
        minor_digits: 0,
    },
    Currency {
        code: "ISK",
        minor_digits: 0,
    },
    Currency {
        code: "KWD",
        minor_digits: 3,
    },
    Currency {
        code: "BHD",
        minor_digits: 3,
    },
    Currency {
        code: "OMR",
        minor_digits: 3,
    },
    Currency {
        code: "JOD",
        minor_digits: 3,
    },
];

impl Currency {
    /// The default currency.
    pub const USD: Currency = Currency {
        code: "USD",
        minor_digits: 2,
    };

    /// The currency with ISO code `code` (any case).
    pub fn lookup(code: &str) -> Option<Currency> {
        CURRENCIES
            .iter()
            .find(|c| c.code.eq_ignore_ascii_case(code.trim()))
            .copied()
    }

    /// µ in one minor unit (USD: 10,000 µ = 1 cent).
    pub const fn micro_per_minor(&self) -> i64 {
        10i64.pow(MAX_DECIMALS - self.minor_digits)
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code)
    }
}

/// `--currency`'s parser: an ISO code from [`CURRENCIES`].
pub fn parse_currency(s: &str) -> Result<Currency, String> {
    Currency::lookup(s).ok_or_else(|| {
        let known: Vec<&str> = CURRENCIES.iter().map(|c| c.code).collect();
        format!(
            "unknown currency `{s}`: expected an ISO 4217 code, one of {}",
            known.join(", ")
        )
    })
}

/// Why a typed amount was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AmountError {
    Empty,
    Negative,
    /// A character that is not a digit or the one decimal point, at this byte.
    NotADigit(usize),
    TooManyDecimals(usize),
    TooLarge,
}

impl fmt::Display for AmountError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AmountError::Empty => f.write_str("the amount is empty"),
            AmountError::Negative => f.write_str("the amount must not be negative"),
            AmountError::NotADigit(at) => write!(
                f,
                "the amount must be digits with at most one `.` (unexpected character at position {})",
                at + 1
            ),
            AmountError::TooManyDecimals(n) => write!(
                f,
                "the amount has {n} decimals; at most {MAX_DECIMALS} (one micro-unit) are allowed"
            ),
            AmountError::TooLarge => f.write_str("the amount is too large"),
        }
    }
}

impl std::error::Error for AmountError {}

/// A non-negative decimal amount of currency units (`2.50`, `3`, `0.000001`) as µ, exactly.
/// No sign, exponent, grouping or more than six decimals.
pub fn parse_micro(s: &str) -> Result<i64, AmountError> {
    let s = s.trim();
    if s.is_empty() {
        return Err(AmountError::Empty);
    }
    if s.starts_with('-') {
        return Err(AmountError::Negative);
    }
    let (whole, frac) = match s.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (s, None),
    };
    if whole.is_empty() && frac.is_none_or(str::is_empty) {
        return Err(AmountError::NotADigit(0));
    }
    if let Some(i) = whole.bytes().position(|b| !b.is_ascii_digit()) {
        return Err(AmountError::NotADigit(i));
    }
    let frac = frac.unwrap_or("");
    if let Some(i) = frac.bytes().position(|b| !b.is_ascii_digit()) {
        return Err(AmountError::NotADigit(whole.len() + 1 + i));
    }
    if frac.len() > MAX_DECIMALS as usize {
        return Err(AmountError::TooManyDecimals(frac.len()));
    }
    let mut micro: i64 = 0;
    for b in whole.bytes() {
        micro = micro
            .checked_mul(10)
            .and_then(|m| m.checked_add(i64::from(b - b'0')))
            .ok_or(AmountError::TooLarge)?;
    }
    micro = micro
        .checked_mul(MICRO_PER_UNIT)
        .ok_or(AmountError::TooLarge)?;
    let mut scale = MICRO_PER_UNIT / 10;
    for b in frac.bytes() {
        micro = micro
            .checked_add(i64::from(b - b'0') * scale)
            .ok_or(AmountError::TooLarge)?;
        scale /= 10;
    }
    Ok(micro)
}

/// `micro` as a decimal with `decimals` places (0..=6), truncated toward zero: `2500000`
/// with 2 places is `2.50`. Never rounds up: a shown amount is never more than the amount.
pub fn format_micro(micro: i64, decimals: u32) -> String {
    let decimals = decimals.min(MAX_DECIMALS);
    let sign = if micro < 0 { "-" } else { "" };
    let abs = micro.unsigned_abs();
    let unit = MICRO_PER_UNIT as u64;
    let whole = abs / unit;
    if decimals == 0 {
        return format!("{sign}{whole}");
    }
    let frac = (abs % unit) / 10u64.pow(MAX_DECIMALS - decimals);
    format!("{sign}{whole}.{frac:0width$}", width = decimals as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_exactly() {
        assert_eq!(parse_micro("2.50"), Ok(2_500_000));
        assert_eq!(parse_micro("2.5"), Ok(2_500_000));
        assert_eq!(parse_micro("3"), Ok(3_000_000));
        assert_eq!(parse_micro("0.000001"), Ok(1));
        assert_eq!(parse_micro(".5"), Ok(500_000));
        assert_eq!(parse_micro("7."), Ok(7_000_000));
        assert_eq!(parse_micro(" 0.1 "), Ok(100_000));
        // 0.1 + 0.2 is exact here, unlike in floats.
        assert_eq!(
            parse_micro("0.1").unwrap() + parse_micro("0.2").unwrap(),
            parse_micro("0.3").unwrap()
        );
        assert_eq!(parse_micro("9223372036854.775807"), Ok(i64::MAX));
    }

    #[test]
    fn refuses_what_is_not_an_amount() {
        assert_eq!(parse_micro(""), Err(AmountError::Empty));
        assert_eq!(parse_micro("-1"), Err(AmountError::Negative));
        assert_eq!(
            parse_micro("0.0000001"),
            Err(AmountError::TooManyDecimals(7))
        );
        assert_eq!(parse_micro("1e3"), Err(AmountError::NotADigit(1)));
        assert_eq!(parse_micro("2,50"), Err(AmountError::NotADigit(1)));
        assert_eq!(parse_micro("1.2.3"), Err(AmountError::NotADigit(3)));
        assert_eq!(parse_micro("+1"), Err(AmountError::NotADigit(0)));
        assert_eq!(parse_micro("."), Err(AmountError::NotADigit(0)));
        assert_eq!(parse_micro("abc"), Err(AmountError::NotADigit(0)));
        assert_eq!(
            parse_micro("9223372036854.775808"),
            Err(AmountError::TooLarge)
        );
        assert_eq!(
            parse_micro("99999999999999999999"),
            Err(AmountError::TooLarge)
        );
    }

    #[test]
    fn formats_by_truncation() {
        assert_eq!(format_micro(2_500_000, 2), "2.50");
        assert_eq!(format_micro(2_509_999, 2), "2.50");
        assert_eq!(format_micro(1, 6), "0.000001");
        assert_eq!(format_micro(1, 2), "0.00");
        assert_eq!(format_micro(-1_250_000, 2), "-1.25");
        assert_eq!(format_micro(12_345_678, 0), "12");
        assert_eq!(format_micro(i64::MIN, 6), "-9223372036854.775808");
        for s in ["0.000001", "2.500000", "123456.789012"] {
            assert_eq!(format_micro(parse_micro(s).unwrap(), 6), s);
        }
    }

    #[test]
    fn currencies() {
        assert_eq!(Currency::lookup("usd"), Some(Currency::USD));
        assert_eq!(Currency::USD.micro_per_minor(), 10_000);
        assert_eq!(
            Currency::lookup("JPY").unwrap().micro_per_minor(),
            1_000_000
        );
        assert_eq!(Currency::lookup("KWD").unwrap().micro_per_minor(), 1_000);
        assert!(parse_currency("XYZ").unwrap_err().contains("USD"));
        let mut codes: Vec<_> = CURRENCIES.iter().map(|c| c.code).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), CURRENCIES.len(), "a currency is listed twice");
    }
}
