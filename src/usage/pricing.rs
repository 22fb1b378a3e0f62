//! Exact pricing: decimal prices from the catalog, integer micro-USD costs, one rounding.

use std::fmt;

use crate::openai::{Cost, MicroUsd, Usage};

/// A price in micro-USD per million tokens, parsed exactly from the catalog's decimal USD string
/// (so `"0.0375"` USD/M is 37,500). Prices finer than one micro-USD per million are rejected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Price(i64);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "invalid price {0:?}: expected a non-negative decimal string of USD per million tokens with at most 6 decimals, e.g. \"0.15\""
)]
pub struct InvalidPrice(pub String);

impl Price {
    pub const FREE: Price = Price(0);

    pub fn parse(text: &str) -> Result<Price, InvalidPrice> {
        // USD per million with 6 decimals is exactly micro-USD per million.
        MicroUsd::parse_usd(text)
            .map(|micros| Price(micros.0))
            .ok_or_else(|| InvalidPrice(text.to_owned()))
    }

    /// A price from a JSON number (a caller's `max_price`), exactly: serde_json keeps a
    /// fractional number as the nearest `f64`, whose shortest round-trip text is the decimal the
    /// caller wrote (for up to 15 significant digits), so that text is parsed, never the float.
    pub fn from_json_number(number: &serde_json::Number) -> Result<Price, InvalidPrice> {
        let text = number.to_string();
        expand_exponent(&text)
            .ok_or_else(|| InvalidPrice(text.clone()))
            .and_then(|plain| Price::parse(&plain))
    }

    pub fn micro_usd_per_million(self) -> i64 {
        self.0
    }

    pub fn is_free(self) -> bool {
        self.0 == 0
    }

    /// USD per single token as exact decimal text, the unit OpenRouter's `pricing` fields use.
    pub fn usd_per_token(self) -> String {
        // micro-USD per million tokens = 10^-12 USD per token: shift the decimal point 12 places.
        let digits = format!("{:013}", self.0);
        let (whole, fraction) = digits.split_at(digits.len() - 12);
        let fraction = fraction.trim_end_matches('0');
        if fraction.is_empty() {
            whole.to_owned()
        } else {
            format!("{whole}.{fraction}")
        }
    }
}

impl fmt::Display for Price {
    /// USD per million tokens, as written in the catalog.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&MicroUsd(self.0).to_usd_string())
    }
}

/// `1.5e-6` as `0.0000015`: the exponent form serde_json prints for small and large numbers.
/// Exponents beyond what a price can hold are refused rather than expanded.
fn expand_exponent(text: &str) -> Option<String> {
    let Some((mantissa, exponent)) = text.split_once(['e', 'E']) else {
        return Some(text.to_owned());
    };
    let exponent: i32 = exponent.parse().ok().filter(|e: &i32| e.abs() <= 30)?;
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = format!("{whole}{fraction}");
    let point = i32::try_from(whole.len()).ok()? + exponent;
    let Ok(point) = usize::try_from(point) else {
        let zeros = "0".repeat(usize::try_from(-point).ok()?);
        return Some(format!("0.{zeros}{digits}"));
    };
    if point >= digits.len() {
        Some(format!("{digits}{}", "0".repeat(point - digits.len())))
    } else {
        let (whole, fraction) = digits.split_at(point);
        Some(format!(
            "{}.{fraction}",
            if whole.is_empty() { "0" } else { whole }
        ))
    }
}

/// What one endpoint charges for each kind of token.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pricing {
    pub prompt: Price,
    pub completion: Price,
    /// Cached prompt tokens; the prompt price when the catalog gives none.
    pub cache_read: Price,
    /// Tokens written to the prompt cache; the prompt price when the catalog gives none.
    pub cache_write: Price,
}

impl Pricing {
    /// The most `prompt_tokens` in and `completion_tokens` out can cost, whatever part of the
    /// prompt turns out cached: what a request holds against its key's limit. Rounded up, so a
    /// hold is never a fraction short of the cost it covers.
    pub fn worst_case(&self, prompt_tokens: u64, completion_tokens: u64) -> MicroUsd {
        let prompt_price = self.prompt.max(self.cache_write).max(self.cache_read);
        let total = i128::from(prompt_tokens) * i128::from(prompt_price.0)
            + i128::from(completion_tokens) * i128::from(self.completion.0);
        let micros = (total + 999_999) / 1_000_000;
        MicroUsd(i64::try_from(micros).unwrap_or(i64::MAX))
    }

    /// The cost of one request. `prompt_tokens` includes cached and cache-write tokens (OpenAI's
    /// convention) and reasoning tokens are part of `completion_tokens`, billed at the completion
    /// price. All terms are summed exactly, then rounded once, half up, to whole micro-USD; the
    /// prompt part is rounded the same way and the completion part is the rest, so the parts
    /// always add up to the total.
    pub fn cost(&self, usage: &Usage) -> Cost {
        let cached = usage.cached_tokens().min(usage.prompt_tokens);
        let cache_write = usage.cache_write_tokens().min(usage.prompt_tokens - cached);
        let uncached = usage.prompt_tokens - cached - cache_write;
        let term = |tokens: u64, price: Price| i128::from(tokens) * i128::from(price.0);
        let prompt = term(uncached, self.prompt)
            + term(cached, self.cache_read)
            + term(cache_write, self.cache_write);
        let total = prompt + term(usage.completion_tokens, self.completion);
        let round = |picos: i128| {
            MicroUsd(i64::try_from((picos + 500_000) / 1_000_000).unwrap_or(i64::MAX))
        };
        let (total, prompt) = (round(total), round(prompt));
        Cost {
            total,
            prompt,
            completion: MicroUsd(total.0 - prompt.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openai::PromptTokensDetails;

    fn price(text: &str) -> Price {
        Price::parse(text).unwrap()
    }

    #[test]
    fn prices_parse_exactly_from_decimal_strings() {
        assert_eq!(price("3").micro_usd_per_million(), 3_000_000);
        assert_eq!(price("0.0375").micro_usd_per_million(), 37_500);
        assert_eq!(price("0.000001").micro_usd_per_million(), 1);
        for bad in ["", "-1", "1e3", "0.0000001", "abc", "1.2.3", ".5"] {
            assert!(Price::parse(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn json_numbers_parse_exactly_including_exponent_forms() {
        let from = |json: &str| {
            Price::from_json_number(&serde_json::from_str(json).unwrap())
                .map(Price::micro_usd_per_million)
        };
        assert_eq!(from("3"), Ok(3_000_000));
        assert_eq!(from("0.15"), Ok(150_000));
        assert_eq!(from("0.000001"), Ok(1));
        assert_eq!(from("1.5e-5"), Ok(15));
        assert_eq!(from("2e2"), Ok(200_000_000));
        for bad in ["-1", "0.0000001", "1e-300", "1e300"] {
            assert!(from(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn per_token_prices_are_exact_decimal_text() {
        assert_eq!(price("3").usd_per_token(), "0.000003");
        assert_eq!(price("0.0375").usd_per_token(), "0.0000000375");
        assert_eq!(price("0").usd_per_token(), "0");
    }

    #[test]
    fn the_worst_case_prices_the_whole_prompt_at_its_dearest_rate_and_rounds_up() {
        let pricing = Pricing {
            prompt: price("3"),
            completion: price("15"),
            cache_read: price("0.3"),
            cache_write: price("3.75"),
        };
        // 1000 × 3.75 + 200 × 15 = 6750 micro-USD exactly.
        assert_eq!(pricing.worst_case(1_000, 200), MicroUsd(6_750));
        // 1 × 3.75 = 3.75 micro-USD, held as 4.
        assert_eq!(pricing.worst_case(1, 0), MicroUsd(4));
        assert_eq!(Pricing::default().worst_case(1_000, 1_000), MicroUsd::ZERO);
    }

    #[test]
    fn cost_sums_every_token_kind_and_rounds_once_half_up() {
        let pricing = Pricing {
            prompt: price("3"),
            completion: price("15"),
            cache_read: price("0.3"),
            cache_write: price("3.75"),
        };
        let usage = Usage {
            prompt_tokens: 1_000,
            completion_tokens: 100,
            prompt_tokens_details: Some(PromptTokensDetails {
                cached_tokens: 600,
                cache_write_tokens: 200,
                ..Default::default()
            }),
            ..Usage::default()
        };
        // 200*3 + 600*0.3 + 200*3.75 + 100*15 = 600 + 180 + 750 + 1500 = 3030 micro-USD.
        let cost = pricing.cost(&usage);
        assert_eq!(cost.total, MicroUsd(3_030));
        assert_eq!(
            (cost.prompt, cost.completion),
            (MicroUsd(1_530), MicroUsd(1_500))
        );

        let half = Usage {
            prompt_tokens: 1,
            ..Usage::default()
        };
        let half_micro = Pricing {
            prompt: price("0.5"),
            ..Pricing::default()
        };
        assert_eq!(
            half_micro.cost(&half).total,
            MicroUsd(1),
            "0.5 micro-USD rounds up"
        );
        let below = Pricing {
            prompt: price("0.499999"),
            ..Pricing::default()
        };
        assert_eq!(below.cost(&half).total, MicroUsd(0));
    }
}
