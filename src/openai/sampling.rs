//! The sampling parameters: the one list of request fields that an endpoint may silently not
//! support (they are dropped for it, or it is skipped under `provider.require_parameters`), and a
//! small set type over them. Knows nothing of endpoints or providers.

use serde_json::Value;

use super::ChatRequest;

/// Every sampling parameter, as the request and the catalog's `supports` spell them.
pub const SAMPLING_PARAMETERS: [&str; 14] = [
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "top_a",
    "seed",
    "frequency_penalty",
    "presence_penalty",
    "repetition_penalty",
    "logit_bias",
    "logprobs",
    "top_logprobs",
    "stop",
    "n",
];

/// A set of sampling parameters, one bit each: checking a request against an endpoint is a few
/// integer operations and allocates nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SamplingSet(u16);

impl SamplingSet {
    pub const EMPTY: SamplingSet = SamplingSet(0);
    pub const ALL: SamplingSet = SamplingSet((1 << SAMPLING_PARAMETERS.len()) - 1);

    /// The set holding just this parameter, or `None` when it is not a sampling parameter.
    pub fn of(name: &str) -> Option<SamplingSet> {
        SAMPLING_PARAMETERS
            .iter()
            .position(|known| *known == name)
            .map(|index| SamplingSet(1 << index))
    }

    /// The set of these names that are sampling parameters; other names are ignored.
    pub fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> SamplingSet {
        names
            .into_iter()
            .filter_map(SamplingSet::of)
            .fold(SamplingSet::EMPTY, SamplingSet::union)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn contains(self, other: SamplingSet) -> bool {
        self.0 & other.0 == other.0
    }

    #[must_use]
    pub fn union(self, other: SamplingSet) -> SamplingSet {
        SamplingSet(self.0 | other.0)
    }

    #[must_use]
    pub fn intersection(self, other: SamplingSet) -> SamplingSet {
        SamplingSet(self.0 & other.0)
    }

    /// The members of `self` that are not in `other`.
    #[must_use]
    pub fn difference(self, other: SamplingSet) -> SamplingSet {
        SamplingSet(self.0 & !other.0)
    }

    /// The members' names, in [`SAMPLING_PARAMETERS`] order.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        SAMPLING_PARAMETERS
            .iter()
            .enumerate()
            .filter(move |(index, _)| self.0 & (1 << index) != 0)
            .map(|(_, name)| *name)
    }
}

impl ChatRequest {
    /// The sampling parameters the request sets (a JSON `null` counts as not set).
    pub fn sampling_parameters(&self) -> SamplingSet {
        let mut set = SamplingSet::EMPTY;
        for (index, name) in SAMPLING_PARAMETERS.iter().enumerate() {
            let present = match *name {
                "temperature" => self.temperature.is_some(),
                "top_p" => self.top_p.is_some(),
                "n" => self.n.is_some(),
                other => self.extra.get(other).is_some_and(|value| !value.is_null()),
            };
            if present {
                set.0 |= 1 << index;
            }
        }
        set
    }

    /// A copy without these sampling parameters. Copies the whole request, so callers do it only
    /// when something is to be dropped.
    #[must_use]
    pub fn without_sampling(&self, drop: SamplingSet) -> ChatRequest {
        let mut request = self.clone();
        for name in drop.names() {
            match name {
                "temperature" => request.temperature = None,
                "top_p" => request.top_p = None,
                "n" => request.n = None,
                other => {
                    request.extra.remove(other);
                }
            }
        }
        request
    }

    /// Whether the request asks for reasoning: a `reasoning` object that does not switch it off
    /// (`effort: "none"` or `enabled: false`).
    pub fn wants_reasoning(&self) -> bool {
        match &self.reasoning {
            None | Some(Value::Null | Value::Bool(false)) => false,
            Some(Value::Object(reasoning)) => {
                let off = reasoning.get("effort").and_then(Value::as_str) == Some("none")
                    || reasoning.get("enabled").and_then(Value::as_bool) == Some(false);
                !off
            }
            Some(_) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(body: &str) -> ChatRequest {
        serde_json::from_str(body).unwrap()
    }

    #[test]
    fn the_set_knows_only_sampling_parameters() {
        assert!(SamplingSet::of("top_k").is_some());
        assert_eq!(SamplingSet::of("tools"), None);
        let set = SamplingSet::from_names(["seed", "tools", "temperature"]);
        assert_eq!(set.names().collect::<Vec<_>>(), ["temperature", "seed"]);
        assert!(SamplingSet::ALL.contains(set));
        assert!(!set.contains(SamplingSet::ALL));
        assert_eq!(SamplingSet::ALL.names().count(), SAMPLING_PARAMETERS.len());
        assert!(
            SamplingSet::ALL
                .difference(set)
                .intersection(set)
                .is_empty()
        );
    }

    #[test]
    fn typed_and_extra_parameters_are_found_and_nulls_are_not() {
        let found = request(
            r#"{"model":"m","messages":[],"temperature":0.2,"top_k":5,"stop":null,"user":"u"}"#,
        )
        .sampling_parameters();
        assert_eq!(found.names().collect::<Vec<_>>(), ["temperature", "top_k"]);
    }

    #[test]
    fn dropping_removes_exactly_the_named_parameters() {
        let original = request(
            r#"{"model":"m","messages":[],"temperature":0.2,"top_p":0.9,"top_k":5,"seed":1}"#,
        );
        let dropped = original.without_sampling(SamplingSet::from_names(["temperature", "top_k"]));
        assert_eq!(dropped.temperature, None);
        assert_eq!(dropped.top_p, Some(0.9));
        assert!(!dropped.extra.contains_key("top_k"));
        assert_eq!(dropped.extra["seed"], 1);
    }

    #[test]
    fn reasoning_is_wanted_unless_switched_off() {
        let wants = |reasoning: &str| {
            request(&format!(
                r#"{{"model":"m","messages":[],"reasoning":{reasoning}}}"#
            ))
            .wants_reasoning()
        };
        assert!(wants(r#"{"effort":"high"}"#));
        assert!(wants(r#"{"max_tokens":100}"#));
        assert!(wants(r#"{"exclude":true}"#));
        assert!(!wants(r#"{"effort":"none"}"#));
        assert!(!wants(r#"{"enabled":false}"#));
        assert!(!wants("null"));
        assert!(!request(r#"{"model":"m","messages":[]}"#).wants_reasoning());
    }
}
