//! The order a group of usable endpoints is tried in: the caller's `sort`, or by default a
//! random draw weighted by the inverse square of price; then the caller's `order` in front, and
//! endpoints that miss a soft preference or failed lately at the back. Pure and allocation-free.

use std::cmp::Ordering;

use rand::Rng;

use super::plan::PlannedAttempt;
use super::status::EndpointStatus;
use crate::openai::SortBy;

/// An endpoint that passed every filter, with what selection knows of it.
#[derive(Debug)]
pub(super) struct Candidate {
    pub attempt: PlannedAttempt,
    pub status: EndpointStatus,
    /// The weighted-draw key, set by [`weighted_shuffle`].
    draw: f64,
}

impl Candidate {
    pub fn new(attempt: PlannedAttempt, status: EndpointStatus) -> Self {
        Self {
            attempt,
            status,
            draw: 0.0,
        }
    }

    /// Prompt plus completion price, the sum OpenRouter weighs and sorts by.
    fn price(&self) -> i64 {
        let pricing = &self.attempt.endpoint().pricing;
        pricing.prompt.micro_usd_per_million() + pricing.completion.micro_usd_per_million()
    }
}

/// How the caller wants one group ordered.
#[derive(Debug, Clone, Copy)]
pub(super) struct Preferences<'a> {
    pub sort: Option<SortBy>,
    /// Provider ids tried first, in this order.
    pub order: &'a [String],
    /// Tokens per second.
    pub min_throughput: Option<f64>,
    /// Seconds to the first token.
    pub max_latency: Option<f64>,
}

/// Orders `group` in place. Without a sort the draw is random, so load spreads over equally
/// good endpoints; each later stage is a stable sort, so it only reorders what it cares about.
pub(super) fn arrange<R: Rng + ?Sized>(
    group: &mut [Candidate],
    preferences: &Preferences<'_>,
    rng: &mut R,
) {
    match preferences.sort {
        Some(by) => group.sort_by(|a, b| compare(by, a, b)),
        None => weighted_shuffle(group, rng),
    }
    group.sort_by_key(|candidate| {
        let provider = &*candidate.attempt.endpoint().provider;
        let rank = preferences
            .order
            .iter()
            .position(|id| id == provider)
            .unwrap_or(preferences.order.len());
        (
            candidate.status.recently_failed,
            rank,
            misses_preference(candidate, preferences),
        )
    });
}

/// A weighted order without replacement (Efraimidis–Spirakis): each endpoint draws
/// `u^(1/w)` and the largest goes first, so the first place goes to an endpoint with
/// probability `w / Σw`. Here `w = 1/price²`, and the key is kept as its logarithm,
/// `ln(u) · price²`, because `u^(price²)` underflows to zero for any real price.
///
/// A free endpoint weighs as if it cost 1 micro-USD per million tokens, the smallest non-zero
/// price: free endpoints then all but always come first, sharing that place evenly, instead of
/// an infinite weight that would make their order arbitrary.
fn weighted_shuffle<R: Rng + ?Sized>(group: &mut [Candidate], rng: &mut R) {
    for candidate in group.iter_mut() {
        let price = candidate.price().max(1) as f64;
        // In (0, 1], so the logarithm is finite.
        let u = 1.0 - rng.random::<f64>();
        candidate.draw = u.ln() * price * price;
    }
    group.sort_by(|a, b| b.draw.total_cmp(&a.draw));
}

/// Cheapest, fastest or quickest first; endpoints not yet measured after every measured one.
fn compare(by: SortBy, a: &Candidate, b: &Candidate) -> Ordering {
    match by {
        SortBy::Price => a.price().cmp(&b.price()),
        SortBy::Throughput => unknown_last(a.status.throughput, b.status.throughput, |a, b| {
            b.total_cmp(&a)
        }),
        SortBy::Latency => unknown_last(a.status.latency, b.status.latency, |a, b| a.cmp(&b)),
    }
}

fn unknown_last<T>(a: Option<T>, b: Option<T>, known: impl Fn(T, T) -> Ordering) -> Ordering {
    match (a, b) {
        (Some(a), Some(b)) => known(a, b),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    }
}

/// Whether the endpoint misses `preferred_min_throughput` or `preferred_max_latency`. An
/// unmeasured endpoint counts as missing: the caller asked for a speed it has not shown.
fn misses_preference(candidate: &Candidate, preferences: &Preferences<'_>) -> bool {
    let status = &candidate.status;
    let slow = preferences
        .min_throughput
        .is_some_and(|min| status.throughput.is_none_or(|seen| seen < min));
    let late = preferences
        .max_latency
        .is_some_and(|max| status.latency.is_none_or(|seen| seen.as_secs_f64() > max));
    slow || late
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;
    use crate::config::Config;
    use crate::routing::Catalog;
    use crate::routing::plan::{plan, tests::plan_with};
    use crate::routing::status::StubHealth;

    const ONE: &str = r#"{"model":"x/one","messages":[]}"#;

    fn status(throughput: Option<f64>, latency_ms: Option<u64>) -> EndpointStatus {
        EndpointStatus {
            throughput,
            latency: latency_ms.map(Duration::from_millis),
            ..EndpointStatus::default()
        }
    }

    /// How often each provider comes first in `draws` plans of `body`, over one seeded stream.
    fn first_place_shares(catalog: &Catalog, body: &str, draws: u32) -> Vec<(String, f64)> {
        let request = serde_json::from_str(body).unwrap();
        let mut rng = StdRng::seed_from_u64(42);
        let mut counts: Vec<(String, u32)> = Vec::new();
        for _ in 0..draws {
            let plan = plan(catalog, &request, &StubHealth::default(), &mut rng).unwrap();
            let first = plan.attempts[0].endpoint().provider.to_string();
            match counts.iter_mut().find(|(provider, _)| *provider == first) {
                Some((_, count)) => *count += 1,
                None => counts.push((first, 1)),
            }
        }
        counts.sort();
        counts
            .into_iter()
            .map(|(provider, count)| (provider, f64::from(count) / f64::from(draws)))
            .collect()
    }

    #[test]
    fn the_default_draw_weighs_endpoints_by_the_inverse_square_of_price() {
        // x/one costs 3, 6 and 12 USD per million at a, b, c: weights 16 : 4 : 1.
        let shares = first_place_shares(&crate::routing::plan::tests::catalog(), ONE, 20_000);
        let expected = [("a", 16.0 / 21.0), ("b", 4.0 / 21.0), ("c", 1.0 / 21.0)];
        assert_eq!(shares.len(), 3, "{shares:?}");
        for ((provider, share), (name, want)) in shares.iter().zip(expected) {
            assert_eq!(provider, name);
            assert!((share - want).abs() < 0.02, "{provider}: {share} vs {want}");
        }
    }

    #[test]
    fn free_endpoints_share_first_place_ahead_of_any_priced_one() {
        let config: Config = toml::from_str(
            r#"
[[providers]]
id = "free1"
kind = "mock"
[[providers]]
id = "free2"
kind = "mock"
[[providers]]
id = "paid"
kind = "mock"
[[models]]
id = "x/free"
  [[models.endpoints]]
  provider = "paid"
  upstream = "m"
  prompt = "0.01"
  completion = "0"
  [[models.endpoints]]
  provider = "free1"
  upstream = "m"
  prompt = "0"
  completion = "0"
  [[models.endpoints]]
  provider = "free2"
  upstream = "m"
  prompt = "0"
  completion = "0"
"#,
        )
        .unwrap();
        let catalog = Catalog::build(&config).unwrap();
        let shares = first_place_shares(&catalog, r#"{"model":"x/free","messages":[]}"#, 10_000);
        assert_eq!(
            shares.len(),
            2,
            "the paid endpoint never comes first: {shares:?}"
        );
        for (_, share) in shares {
            assert!((share - 0.5).abs() < 0.03, "{share}");
        }
    }

    #[test]
    fn throughput_and_latency_sorts_put_unmeasured_endpoints_last() {
        let health = StubHealth(vec![
            ("a", status(None, None)),
            ("b", status(Some(40.0), Some(900))),
            ("c", status(Some(80.0), Some(300))),
        ]);
        let by = |sort: &str| {
            let body =
                format!(r#"{{"model":"x/one","provider":{{"sort":"{sort}"}},"messages":[]}}"#);
            plan_with(&body, &health, 5).unwrap()
        };
        assert_eq!(by("throughput"), ["x/one@c", "x/one@b", "x/one@a"]);
        assert_eq!(by("latency"), ["x/one@c", "x/one@b", "x/one@a"]);
        let slow_c = StubHealth(vec![
            ("b", status(None, Some(200))),
            ("c", status(None, Some(700))),
        ]);
        let body = r#"{"model":"x/one","provider":{"sort":"latency"},"messages":[]}"#;
        assert_eq!(
            plan_with(body, &slow_c, 5).unwrap(),
            ["x/one@b", "x/one@c", "x/one@a"]
        );
    }

    #[test]
    fn soft_preferences_move_misses_and_unmeasured_endpoints_back_without_dropping_them() {
        let health = StubHealth(vec![
            ("a", status(Some(20.0), Some(200))),
            ("b", status(Some(90.0), Some(2_500))),
            ("c", status(Some(70.0), Some(400))),
        ]);
        let with = |preference: &str| {
            let body = format!(
                r#"{{"model":"x/one","provider":{{"sort":"price",{preference}}},"messages":[]}}"#
            );
            plan_with(&body, &health, 9).unwrap()
        };
        assert_eq!(
            with(r#""preferred_min_throughput":50"#),
            ["x/one@b", "x/one@c", "x/one@a"]
        );
        assert_eq!(
            with(r#""preferred_max_latency":1"#),
            ["x/one@a", "x/one@c", "x/one@b"]
        );
        assert_eq!(
            with(r#""preferred_min_throughput":50,"preferred_max_latency":1"#),
            ["x/one@c", "x/one@a", "x/one@b"]
        );
        let unmeasured = StubHealth(vec![("a", status(None, None))]);
        let body = r#"{"model":"x/one","provider":{"sort":"price","preferred_min_throughput":1},"messages":[]}"#;
        assert_eq!(
            plan_with(body, &unmeasured, 9).unwrap(),
            ["x/one@a", "x/one@b", "x/one@c"],
            "all unmeasured: all miss, so the sort decides"
        );
    }

    #[test]
    fn recently_failing_endpoints_go_last_even_before_an_explicit_order() {
        let failing = StubHealth(vec![(
            "a",
            EndpointStatus {
                recently_failed: true,
                ..EndpointStatus::default()
            },
        )]);
        let sorted = r#"{"model":"x/one","provider":{"sort":"price"},"messages":[]}"#;
        assert_eq!(
            plan_with(sorted, &failing, 2).unwrap(),
            ["x/one@b", "x/one@c", "x/one@a"]
        );
        let ordered = r#"{"model":"x/one","provider":{"order":["a","c"]},"messages":[]}"#;
        assert_eq!(
            plan_with(ordered, &failing, 2).unwrap(),
            ["x/one@c", "x/one@b", "x/one@a"]
        );
    }
}
