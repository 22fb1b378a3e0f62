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
    pub fn to_usd_string(self) -> String {
        UsdText::of(self).as_str().to_owned()
    }
}

/// An amount's USD text, written into a buffer of its own: every response prints four, and none
/// needs the heap. The longest, `i64::MIN` micro-USD, is `-9223372036854.775808`.
struct UsdText {
    bytes: [u8; 24],
    len: usize,
}

impl UsdText {
    fn of(amount: MicroUsd) -> UsdText {
        let micros = amount.0.unsigned_abs();
        let (mut whole, mut fraction) = (micros / 1_000_000, micros % 1_000_000);
        let mut text = UsdText {
            bytes: [0; 24],
            len: 0,
        };
        if amount.0 < 0 {
            text.push(b'-');
        }
        // At most 13 digits: |i64::MIN| / 1,000,000 < 10^13.
        let mut reversed = [0_u8; 13];
        let mut count = 0;
        while count < reversed.len() {
            reversed[count] = digit(whole % 10);
            count += 1;
            whole /= 10;
            if whole == 0 {
                break;
            }
        }
        for &byte in reversed[..count].iter().rev() {
            text.push(byte);
        }
        if fraction != 0 {
            text.push(b'.');
            let mut place = 100_000;
            while fraction != 0 {
                text.push(digit(fraction / place));
                fraction %= place;
                place /= 10;
            }
        }
        text
    }

    fn push(&mut self, byte: u8) {
        if let Some(slot) = self.bytes.get_mut(self.len) {
            *slot = byte;
            self.len += 1;
        }
    }

    fn as_str(&self) -> &str {
        // Only ASCII digits, '-' and '.' are ever pushed.
        std::str::from_utf8(&self.bytes[..self.len]).unwrap_or_default()
    }
}

fn digit(value: u64) -> u8 {
    b'0' + (value % 10) as u8
}

impl std::ops::Add for MicroUsd {
    type Output = MicroUsd;
    fn add(self, other: MicroUsd) -> MicroUsd {
        MicroUsd(self.0.saturating_add(other.0))
    }
}

impl Serialize for MicroUsd {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let text = UsdText::of(*self);
        let raw: &serde_json::value::RawValue =
            serde_json::from_str(text.as_str()).map_err(serde::ser::Error::custom)?;
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
