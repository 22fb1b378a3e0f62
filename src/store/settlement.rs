//! Settling generations and releasing holds: what each batch moves in `ledger`, `usage_rollups`
//! and `key_credits`. Bookkeeping over rows only (no pricing: a row's cost is already exact).
//!
//! A request that held credit gets a refund of the unused part of its hold (or a charge for what
//! exceeded it), so per held generation the ledger's charges and refunds add up to minus its cost.
//! Requests that never took a hold (keys without a limit) are charged together: one `charge` per
//! key per batch, without a generation id, for the sum of their costs. A ledger row per such request
//! would double what settlement writes for the busiest keys, and `generations` already keeps each
//! request's cost. A hold released without a generation (its gateway died) is refunded whole.
//! `key_credits` moves by the same amounts, so per key it always equals the sum of the ledger.

use foldhash::{HashMap, HashMapExt};

use chrono::{DateTime, NaiveDate, Utc};

use super::GenerationRow;

/// A hold deleted from `credit_holds`, by the settlement of its generation or by expiry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ReleasedHold {
    pub generation_id: String,
    pub key_hash: String,
    pub amount: i64,
    pub period_start: i64,
}

/// What one batch changes, aggregated so each rollup row and each key is written once.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Movements<'a> {
    pub ledger: Vec<LedgerEntry<'a>>,
    pub rollups: Vec<RollupDelta<'a>>,
    pub keys: Vec<KeyDelta<'a>>,
}

#[derive(Debug, PartialEq, Eq)]
pub(super) struct LedgerEntry<'a> {
    pub key_hash: &'a str,
    pub kind: &'static str,
    /// Signed micro-USD as it moves the key's balance.
    pub amount: i64,
    /// `None` for the charge of a batch's requests that held nothing.
    pub generation_id: Option<&'a str>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct RollupDelta<'a> {
    pub day: NaiveDate,
    pub key_hash: &'a str,
    pub model: &'a str,
    /// `''` when no provider served.
    pub provider: &'a str,
    /// The caller's `HTTP-Referer`, else its `X-Title`, else `''`.
    pub app: &'a str,
    pub requests: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cached_tokens: i64,
    pub cache_write_tokens: i64,
    pub reasoning_tokens: i64,
    pub cost: i64,
}

/// The change to one `key_credits` row.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct KeyDelta<'a> {
    pub key_hash: &'a str,
    pub balance: i64,
    pub usage: i64,
    pub held: i64,
    /// Added to `period_spent` whatever the period: costs of requests that held nothing.
    pub unheld_spent: i64,
    /// The latest period a released hold was taken in, and what its releases add to
    /// `period_spent` if that is still the key's current period. Holds from older periods were
    /// forgotten when the period rolled over, so their releases leave it alone.
    pub hold_period: i64,
    pub hold_period_spent: i64,
}

impl<'a> Movements<'a> {
    /// The movements for settling `generations` (each with the hold it released, if any) and for
    /// releasing `expired` holds that no generation claimed.
    pub fn of(
        generations: &[(&'a GenerationRow, Option<&'a ReleasedHold>)],
        expired: &'a [ReleasedHold],
        now: DateTime<Utc>,
    ) -> Self {
        let mut movements = Movements::default();
        let mut rollups: HashMap<(NaiveDate, &str, &str, &str, &str), usize> = HashMap::new();
        let mut keys: HashMap<&str, usize> = HashMap::new();
        let mut pooled: HashMap<&str, i64> = HashMap::new();
        for &(row, hold) in generations {
            if let Some(cost) = movements.settle(row, hold, &mut keys) {
                *pooled.entry(&row.key_hash).or_default() += cost;
            }
            let delta = RollupDelta::of(row);
            let at = (
                delta.day,
                delta.key_hash,
                delta.model,
                delta.provider,
                delta.app,
            );
            match rollups.get(&at) {
                Some(&index) => movements.rollups[index].add(&delta),
                None => {
                    rollups.insert(at, movements.rollups.len());
                    movements.rollups.push(delta);
                }
            }
        }
        for hold in expired {
            movements.entry(
                hold.key_hash.as_str(),
                "refund",
                hold.amount,
                Some(&hold.generation_id),
                now,
            );
            movements.release(hold, 0, &mut keys);
        }
        let mut pooled: Vec<(&str, i64)> = pooled.into_iter().collect();
        pooled.sort_unstable();
        for (key_hash, cost) in pooled {
            movements.entry(key_hash, "charge", -cost, None, now);
        }
        // Every gateway locks the rows it updates in the same order, so two settling at once
        // cannot deadlock on each other's keys or rollups.
        movements
            .keys
            .sort_unstable_by(|a, b| a.key_hash.cmp(b.key_hash));
        movements.rollups.sort_unstable_by(|a, b| {
            (a.day, a.key_hash, a.model, a.provider, a.app)
                .cmp(&(b.day, b.key_hash, b.model, b.provider, b.app))
        });
        movements
    }

    /// Returns the cost to add to the key's pooled charge: that of a request that never took a
    /// hold.
    fn settle(
        &mut self,
        row: &'a GenerationRow,
        hold: Option<&'a ReleasedHold>,
        keys: &mut HashMap<&'a str, usize>,
    ) -> Option<i64> {
        let cost = row.cost;
        if let Some(hold) = hold {
            let kind = if hold.amount >= cost {
                "refund"
            } else {
                "charge"
            };
            let amount = hold.amount - cost;
            self.entry(&row.key_hash, kind, amount, Some(&row.id), row.created_at);
            self.release(hold, cost, keys);
            return None;
        }
        let key = self.key(&row.key_hash, keys);
        key.balance -= cost;
        key.usage += cost;
        key.unheld_spent += cost;
        if row.held {
            // Its hold expired before it settled (and was refunded whole): charged on its own,
            // like every request that took a hold.
            self.entry(
                &row.key_hash,
                "charge",
                -cost,
                Some(&row.id),
                row.created_at,
            );
            return None;
        }
        Some(cost)
    }

    /// Releases `hold`, of which the request used `cost` (0 when it never finished).
    fn release(&mut self, hold: &'a ReleasedHold, cost: i64, keys: &mut HashMap<&'a str, usize>) {
        let key = self.key(&hold.key_hash, keys);
        key.balance += hold.amount - cost;
        key.usage += cost;
        key.held -= hold.amount;
        if hold.period_start > key.hold_period {
            key.hold_period = hold.period_start;
            key.hold_period_spent = 0;
        }
        if hold.period_start == key.hold_period {
            key.hold_period_spent += cost - hold.amount;
        }
    }

    fn entry(
        &mut self,
        key_hash: &'a str,
        kind: &'static str,
        amount: i64,
        generation_id: Option<&'a str>,
        created_at: DateTime<Utc>,
    ) {
        if amount != 0 {
            self.ledger.push(LedgerEntry {
                key_hash,
                kind,
                amount,
                generation_id,
                created_at,
            });
        }
    }

    fn key(&mut self, key_hash: &'a str, keys: &mut HashMap<&'a str, usize>) -> &mut KeyDelta<'a> {
        let index = *keys.entry(key_hash).or_insert_with(|| {
            self.keys.push(KeyDelta {
                key_hash,
                hold_period: i64::MIN,
                ..KeyDelta::default()
            });
            self.keys.len() - 1
        });
        &mut self.keys[index]
    }
}

impl<'a> RollupDelta<'a> {
    fn of(row: &'a GenerationRow) -> Self {
        Self {
            day: row.created_at.date_naive(),
            key_hash: &row.key_hash,
            model: &row.model,
            provider: row.provider.as_deref().unwrap_or_default(),
            app: row
                .app_referer
                .as_deref()
                .or(row.app_title.as_deref())
                .unwrap_or_default(),
            requests: 1,
            prompt_tokens: row.prompt_tokens,
            completion_tokens: row.completion_tokens,
            cached_tokens: row.cached_tokens,
            cache_write_tokens: row.cache_write_tokens,
            reasoning_tokens: row.reasoning_tokens,
            cost: row.cost,
        }
    }

    fn add(&mut self, other: &RollupDelta<'_>) {
        self.requests += other.requests;
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
        self.cached_tokens += other.cached_tokens;
        self.cache_write_tokens += other.cache_write_tokens;
        self.reasoning_tokens += other.reasoning_tokens;
        self.cost += other.cost;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, key: &str, cost: i64) -> GenerationRow {
        GenerationRow {
            id: id.to_owned(),
            key_hash: key.to_owned(),
            model: "m".to_owned(),
            provider: Some("p".to_owned()),
            upstream_model: None,
            app_referer: None,
            app_title: Some("app".to_owned()),
            created_at: DateTime::from_timestamp(86_400 * 3 + 5, 0).unwrap(),
            latency_ms: 1,
            ttft_ms: None,
            prompt_tokens: 10,
            completion_tokens: 20,
            cached_tokens: 1,
            cache_write_tokens: 2,
            reasoning_tokens: 3,
            cost,
            status: 200,
            finish_reason: None,
            streamed: false,
            cancelled: false,
            attempts: "[]".to_owned(),
            error: None,
            content: None,
            held: true,
        }
    }

    /// A row of a request that took no hold.
    fn unheld(row: GenerationRow) -> GenerationRow {
        GenerationRow { held: false, ..row }
    }

    fn hold(id: &str, key: &str, amount: i64, period_start: i64) -> ReleasedHold {
        ReleasedHold {
            generation_id: id.to_owned(),
            key_hash: key.to_owned(),
            amount,
            period_start,
        }
    }

    fn ledger_sum(movements: &Movements<'_>, key: &str) -> i64 {
        movements
            .ledger
            .iter()
            .filter(|entry| entry.key_hash == key)
            .map(|entry| entry.amount)
            .sum()
    }

    #[test]
    fn a_held_request_is_refunded_what_it_did_not_use() {
        let (row, hold) = (row("g1", "k", 300), hold("g1", "k", 1_000, 77));
        let movements = Movements::of(&[(&row, Some(&hold))], &[], Utc::now());
        assert_eq!(movements.ledger.len(), 1);
        assert_eq!(movements.ledger[0].kind, "refund");
        assert_eq!(movements.ledger[0].amount, 700);
        let key = &movements.keys[0];
        assert_eq!(
            (key.balance, key.usage, key.held, key.unheld_spent),
            (700, 300, -1_000, 0)
        );
        assert_eq!((key.hold_period, key.hold_period_spent), (77, -700));
    }

    #[test]
    fn a_request_that_cost_more_than_its_hold_is_charged_the_difference() {
        let (row, hold) = (row("g1", "k", 1_250), hold("g1", "k", 1_000, 0));
        let movements = Movements::of(&[(&row, Some(&hold))], &[], Utc::now());
        assert_eq!(movements.ledger[0].kind, "charge");
        assert_eq!(movements.ledger[0].amount, -250);
        assert_eq!(movements.keys[0].hold_period_spent, 250);
    }

    #[test]
    fn requests_without_a_hold_are_charged_together_per_key_and_free_ones_move_nothing() {
        let rows = [
            unheld(row("g1", "k", 40)),
            unheld(row("g2", "k", 0)),
            unheld(row("g3", "k", 2)),
            unheld(row("g4", "other", 7)),
        ];
        let unheld: Vec<_> = rows.iter().map(|row| (row, None)).collect();
        let movements = Movements::of(&unheld, &[], Utc::now());
        let charges: Vec<_> = movements
            .ledger
            .iter()
            .map(|entry| {
                (
                    entry.key_hash,
                    entry.kind,
                    entry.amount,
                    entry.generation_id,
                )
            })
            .collect();
        assert_eq!(
            charges,
            [("k", "charge", -42, None), ("other", "charge", -7, None)]
        );
        let key = &movements.keys[0];
        assert_eq!((key.balance, key.usage, key.unheld_spent), (-42, 42, 42));
    }

    #[test]
    fn a_free_request_without_a_hold_writes_no_ledger_row() {
        let free = unheld(row("g1", "k", 0));
        assert!(
            Movements::of(&[(&free, None)], &[], Utc::now())
                .ledger
                .is_empty()
        );
    }

    #[test]
    fn a_request_whose_hold_expired_first_is_charged_on_its_own() {
        let (late, other) = (row("g1", "k", 30), unheld(row("g2", "k", 5)));
        let movements = Movements::of(&[(&late, None), (&other, None)], &[], Utc::now());
        let charges: Vec<_> = movements
            .ledger
            .iter()
            .map(|entry| (entry.amount, entry.generation_id))
            .collect();
        assert_eq!(charges, [(-30, Some("g1")), (-5, None)]);
        assert_eq!(movements.keys[0].unheld_spent, 35);
    }

    #[test]
    fn an_expired_hold_is_refunded_whole() {
        let expired = [hold("g9", "k", 500, 10)];
        let movements = Movements::of(&[], &expired, Utc::now());
        assert_eq!(
            (movements.ledger[0].kind, movements.ledger[0].amount),
            ("refund", 500)
        );
        let key = &movements.keys[0];
        assert_eq!((key.balance, key.usage, key.held), (500, 0, -500));
        assert_eq!((key.hold_period, key.hold_period_spent), (10, -500));
    }

    #[test]
    fn only_releases_of_the_latest_period_count_against_it() {
        let rows = [row("g1", "k", 100), row("g2", "k", 100)];
        let holds = [hold("g1", "k", 400, 1), hold("g2", "k", 400, 2)];
        let movements = Movements::of(
            &[(&rows[0], Some(&holds[0])), (&rows[1], Some(&holds[1]))],
            &[],
            Utc::now(),
        );
        let key = &movements.keys[0];
        assert_eq!((key.hold_period, key.hold_period_spent), (2, -300));
        assert_eq!(key.balance, ledger_sum(&movements, "k"));
    }

    #[test]
    fn the_ledger_and_the_key_deltas_agree_for_every_key() {
        let rows = [row("a", "k1", 10), row("b", "k1", 900), row("c", "k2", 5)];
        let holds = [hold("a", "k1", 50, 0), hold("b", "k1", 500, 0)];
        let expired = [hold("z", "k2", 70, 0)];
        let movements = Movements::of(
            &[
                (&rows[0], Some(&holds[0])),
                (&rows[1], Some(&holds[1])),
                (&rows[2], None),
            ],
            &expired,
            Utc::now(),
        );
        for key in &movements.keys {
            assert_eq!(key.balance, ledger_sum(&movements, key.key_hash), "{key:?}");
        }
    }

    #[test]
    fn rollups_add_up_rows_of_the_same_day_key_model_provider_and_app() {
        let mut other_app = row("c", "k", 5);
        other_app.app_title = None;
        let rows = [row("a", "k", 10), row("b", "k", 20), other_app];
        let movements = Movements::of(
            &[(&rows[0], None), (&rows[1], None), (&rows[2], None)],
            &[],
            Utc::now(),
        );
        assert_eq!(movements.rollups.len(), 2);
        // Sorted by their key: no app ('') before "app".
        assert_eq!(movements.rollups[0].app, "");
        let first = &movements.rollups[1];
        assert_eq!(first.day.to_string(), "1970-01-04");
        assert_eq!((first.app, first.provider), ("app", "p"));
        assert_eq!(
            (first.requests, first.cost, first.prompt_tokens),
            (2, 30, 20)
        );
        assert_eq!(
            (
                first.cached_tokens,
                first.cache_write_tokens,
                first.reasoning_tokens
            ),
            (2, 4, 6)
        );
    }
}
