//! Token usage and cost as they appear on the wire.

use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Value};

/// An amount of money in integer micro-USD (1 USD = 1,000,000). On the wire it is a JSON number in
/// USD written from the integer digits, so no binary float ever touches it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MicroUsd(pub i64);

impl MicroUsd {
    pub const ZERO: MicroUsd = MicroUsd(0);

    /// Parses a non-negative decimal amount of USD with at most six decimals (`"12.5"`,
    /// `"0.000125"`) exactly; anything else (signs, exponents, more decimals) is `None`.
    pub fn parse_usd(text: &str) -> Option<MicroUsd> {
        let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
        let all_digits = |part: &str| part.bytes().all(|byte| byte.is_ascii_digit());
        if whole.is_empty() || fraction.len() > 6 || !all_digits(whole) || !all_digits(fraction) {
            return None;
        }
        let whole: i64 = whole.parse().ok()?;
        let fraction: i64 = if fraction.is_empty() {
            0
        } else {
            format!("{fraction:0<6}").parse().ok()?
        };
        whole
            .checked_mul(1_000_000)?
            .checked_add(fraction)
            .map(MicroUsd)
    }

    /// Exact decimal text in USD, e.g. `0.000125` or `12.5`.
    /// Written digit by digit into one allocation: every response prints four of these.
    pub fn to_usd_string(self) -> String {
        let micros = self.0.unsigned_abs();
        let (whole, mut fraction) = (micros / 1_000_000, micros % 1_000_000);
        let mut text = String::with_capacity(28);
        if self.0 < 0 {
            text.push('-');
        }
        push_digits(&mut text, whole);
        if fraction != 0 {
            text.push('.');
            let mut place = 100_000;
            while fraction != 0 {
                push_digit(&mut text, fraction / place);
                fraction %= place;
                place /= 10;
            }
        }
        text
    }
}

fn push_digits(text: &mut String, number: u64) {
    if number >= 10 {
        push_digits(text, number / 10);
    }
    push_digit(text, number % 10);
}

fn push_digit(text: &mut String, digit: u64) {
    text.push(char::from(b'0' + (digit % 10) as u8));
}

impl std::ops::Add for MicroUsd {
    type Output = MicroUsd;
    fn add(self, other: MicroUsd) -> MicroUsd {
        MicroUsd(self.0.saturating_add(other.0))
    }
}

impl Serialize for MicroUsd {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let raw = serde_json::value::RawValue::from_string(self.to_usd_string())
            .map_err(serde::ser::Error::custom)?;
        raw.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for MicroUsd {
    /// Upstream `cost` fields are informational; the gateway always computes its own.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(deserializer)?;
        Ok(MicroUsd::ZERO)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
    #[serde(default)]
    pub total_tokens: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens_details: Option<PromptTokensDetails>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_tokens_details: Option<CompletionTokensDetails>,
    /// Set by the gateway from the catalog price; whatever the upstream sent is discarded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<MicroUsd>,
    /// OpenRouter's breakdown of `cost`; set with it, never taken from the upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_details: Option<CostDetails>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// What one request cost, and how much of it was the prompt and the completion.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cost {
    pub total: MicroUsd,
    pub prompt: MicroUsd,
    pub completion: MicroUsd,
}

impl Cost {
    pub const FREE: Cost = Cost {
        total: MicroUsd::ZERO,
        prompt: MicroUsd::ZERO,
        completion: MicroUsd::ZERO,
    };
}

/// `usage.cost_details` in OpenRouter's names. A self-hosted gateway bills at the providers' list
/// prices, so the upstream inference cost is the cost itself; its parts add up to it exactly.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CostDetails {
    pub upstream_inference_cost: MicroUsd,
    pub upstream_inference_prompt_cost: MicroUsd,
    pub upstream_inference_completions_cost: MicroUsd,
}

impl<'de> Deserialize<'de> for CostDetails {
    /// Like `cost`: an upstream's figures are discarded, the gateway computes its own.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(deserializer)?;
        Ok(CostDetails::default())
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PromptTokensDetails {
    #[serde(default)]
    pub cached_tokens: u64,
    /// Tokens written to the provider's prompt cache (Anthropic's `cache_creation_input_tokens`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cache_write_tokens: u64,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CompletionTokensDetails {
    #[serde(default)]
    pub reasoning_tokens: u64,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

impl Usage {
    pub fn cached_tokens(&self) -> u64 {
        self.prompt_tokens_details
            .as_ref()
            .map_or(0, |details| details.cached_tokens)
    }

    pub fn cache_write_tokens(&self) -> u64 {
        self.prompt_tokens_details
            .as_ref()
            .map_or(0, |details| details.cache_write_tokens)
    }

    pub fn reasoning_tokens(&self) -> u64 {
        self.completion_tokens_details
            .as_ref()
            .map_or(0, |details| details.reasoning_tokens)
    }

    /// The contract says usage always carries cached and reasoning tokens; fill the details in.
    pub fn with_cost(mut self, cost: Cost) -> Self {
        self.total_tokens = self.prompt_tokens + self.completion_tokens;
        self.prompt_tokens_details
            .get_or_insert_with(PromptTokensDetails::default);
        self.completion_tokens_details
            .get_or_insert_with(CompletionTokensDetails::default);
        self.cost = Some(cost.total);
        self.cost_details = Some(CostDetails {
            upstream_inference_cost: cost.total,
            upstream_inference_prompt_cost: cost.prompt,
            upstream_inference_completions_cost: cost.completion,
        });
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn micro_usd_prints_exact_decimal_usd() {
        assert_eq!(MicroUsd(0).to_usd_string(), "0");
        assert_eq!(MicroUsd(125).to_usd_string(), "0.000125");
        assert_eq!(MicroUsd(12_500_000).to_usd_string(), "12.5");
        assert_eq!(MicroUsd(-7).to_usd_string(), "-0.000007");
        assert_eq!(MicroUsd(1_234_567_890).to_usd_string(), "1234.56789");
        assert_eq!(MicroUsd(10_000_001).to_usd_string(), "10.000001");
        assert_eq!(MicroUsd(i64::MIN).to_usd_string(), "-9223372036854.775808");
    }

    #[test]
    fn usage_always_carries_cached_and_reasoning_tokens_and_cost() {
        let usage = Usage {
            prompt_tokens: 3,
            completion_tokens: 4,
            ..Usage::default()
        }
        .with_cost(Cost {
            total: MicroUsd(11),
            prompt: MicroUsd(3),
            completion: MicroUsd(8),
        });
        let json = serde_json::to_string(&usage).unwrap();
        assert_eq!(
            json,
            r#"{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7,"prompt_tokens_details":{"cached_tokens":0},"completion_tokens_details":{"reasoning_tokens":0},"cost":0.000011,"cost_details":{"upstream_inference_cost":0.000011,"upstream_inference_prompt_cost":0.000003,"upstream_inference_completions_cost":0.000008}}"#
        );
    }
}
