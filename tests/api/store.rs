//! The store, the key cache and the generation writer against real databases: every test runs on
//! SQLite and on Postgres. Also reads the tables the way a dashboard would, with plain SQL.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, SubsecRound, TimeZone, Utc};
use sha2::{Digest, Sha256};
use switchyard::accounts::{AuthError, Keys, LimitReset};
use switchyard::clock::WallClock;
use switchyard::openai::MicroUsd;
use switchyard::store::{GenerationRow, NewApiKey, Store};
use switchyard::usage::spawn_writer;

use crate::dashboard::{Dashboard, UsageDay};
use crate::db::{Backend, drop_database, fresh_database_url};
use crate::helpers::test_start;

crate::on_both_backends!(
    migrations_apply_twice_and_a_second_process_finds_nothing_to_do,
    a_key_is_found_by_its_hash_listed_in_creation_order_and_can_be_disabled,
    inserted_generations_are_read_back_only_by_their_key,
    a_batch_skips_ids_that_exist_and_keeps_the_stored_row,
    a_batch_larger_than_one_statement_is_inserted_whole,
    the_writer_writes_every_recorded_row_on_shutdown_even_past_its_queue,
    a_writer_that_cannot_write_gives_up_on_the_batch_and_still_shuts_down,
    flush_returns_once_every_recorded_row_is_readable,
    usage_daily_sums_requests_tokens_and_cost_per_day_key_model_and_provider,
    a_created_key_authenticates_and_anything_else_is_refused,
    a_key_disabled_elsewhere_is_refused_once_its_cached_verdict_is_a_second_old,
    a_key_disabled_through_keys_is_refused_at_once,
    an_unknown_key_created_elsewhere_is_accepted_within_a_second,
    an_expired_key_is_refused,
);

/// A migrated store on a database of its own, removed by [`TestDb::remove`].
struct TestDb {
    store: Store,
    url: String,
}

impl TestDb {
    async fn new(backend: Backend) -> TestDb {
        let url = fresh_database_url(backend).await;
        let store = Store::connect(&url).await.unwrap();
        store.migrate().await.unwrap();
        TestDb { store, url }
    }

    async fn count_generations(&self) -> i64 {
        let dashboard = Dashboard::open(&self.url).await;
        let count = dashboard.count_generations().await;
        dashboard.close().await;
        count
    }

    async fn remove(self) {
        drop(self.store);
        drop_database(&self.url).await;
    }
}

fn generation(id: &str, key_hash: &str) -> GenerationRow {
    GenerationRow {
        id: id.to_owned(),
        key_hash: key_hash.to_owned(),
        model: "openai/gpt-4o".to_owned(),
        provider: Some("openai".to_owned()),
        upstream_model: Some("gpt-4o-2024-08-06".to_owned()),
        app_referer: Some("https://example.com".to_owned()),
        app_title: None,
        created_at: Utc.with_ymd_and_hms(2025, 1, 31, 23, 59, 58).unwrap(),
        latency_ms: 812,
        ttft_ms: Some(120),
        prompt_tokens: 1_000,
        completion_tokens: 250,
        cached_tokens: 100,
        cache_write_tokens: 0,
        reasoning_tokens: 50,
        cost: 4_750,
        status: 200,
        finish_reason: Some("stop".to_owned()),
        streamed: true,
        cancelled: false,
        attempts: r#"[{"provider":"openai","model":"gpt-4o","status":200,"latency_ms":812}]"#
            .to_owned(),
        error: None,
        content: None,
        held: false,
    }
}

fn new_key(name: &str, hash: &str) -> NewApiKey {
    NewApiKey {
        name: name.to_owned(),
        hash: hash.to_owned(),
        prefix: "sk-sy-abcd…".to_owned(),
        limit_micros: Some(25_000_000),
        limit_reset: Some("monthly".to_owned()),
        expires_at: None,
    }
}

fn sha256_hex(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// A well-formed key nobody minted.
fn random_key() -> String {
    format!("sk-sy-{:048}", rand::random::<u64>())
}

/// A clock the test moves by hand, so cache expiry needs no sleeping.
#[derive(Clone)]
struct ManualClock {
    start: Instant,
    elapsed_ms: Arc<AtomicU64>,
}

impl ManualClock {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            elapsed_ms: Arc::default(),
        }
    }

    fn advance(&self, by: Duration) {
        self.elapsed_ms
            .fetch_add(by.as_millis() as u64, Ordering::SeqCst);
    }

    fn keys(&self, store: Store) -> Keys {
        let clock = self.clone();
        Keys::with_cache_clock(store, WallClock::system(), move || {
            clock.start + Duration::from_millis(clock.elapsed_ms.load(Ordering::SeqCst))
        })
    }
}

async fn migrations_apply_twice_and_a_second_process_finds_nothing_to_do(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = &db.store;
    store.migrate().await.unwrap();
    let second = Store::connect(&db.url).await.unwrap();
    second.migrate().await.unwrap();
    second.ping().await.unwrap();
    assert!(second.list_keys().await.unwrap().is_empty());
    if backend == Backend::Sqlite {
        let dashboard = Dashboard::open(&db.url).await;
        let Dashboard::Sqlite(pool) = &dashboard else {
            unreachable!()
        };
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(pool)
            .await
            .unwrap();
        assert_eq!(mode, "wal", "readers must not wait for the batch writer");
        dashboard.close().await;
    }
    db.remove().await;
}

async fn a_key_is_found_by_its_hash_listed_in_creation_order_and_can_be_disabled(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = &db.store;
    let expires = Utc::now().trunc_subsecs(6) + chrono::Duration::days(30);
    let first = store
        .insert_key(&NewApiKey {
            expires_at: Some(expires),
            ..new_key("first", "aa11")
        })
        .await
        .unwrap();
    let second = store
        .insert_key(&NewApiKey {
            limit_micros: None,
            limit_reset: None,
            ..new_key("second", "bb22")
        })
        .await
        .unwrap();

    assert_eq!(first.name, "first");
    assert_eq!(first.prefix, "sk-sy-abcd…");
    assert_eq!(first.limit_micros, Some(25_000_000));
    assert_eq!(first.limit_reset.as_deref(), Some("monthly"));
    assert_eq!(first.expires_at, Some(expires));
    assert!(!first.disabled);
    assert!(
        (Utc::now() - first.created_at).num_seconds() < 60,
        "{}",
        first.created_at
    );
    assert_eq!(
        second.limit_micros, None,
        "no limit is stored as NULL, not zero"
    );

    let found = store.key_by_hash("aa11").await.unwrap().unwrap();
    assert_eq!((found.id, found.created_at), (first.id, first.created_at));
    assert!(store.key_by_hash("cc33").await.unwrap().is_none());
    let listed: Vec<String> = store
        .list_keys()
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.name)
        .collect();
    assert_eq!(listed, ["first", "second"]);
    assert!(
        store.insert_key(&new_key("again", "aa11")).await.is_err(),
        "hashes are unique"
    );

    assert!(store.set_key_disabled("aa11", true).await.unwrap());
    assert!(store.key_by_hash("aa11").await.unwrap().unwrap().disabled);
    assert!(!store.key_by_hash("bb22").await.unwrap().unwrap().disabled);
    assert!(store.set_key_disabled("aa11", false).await.unwrap());
    assert!(!store.key_by_hash("aa11").await.unwrap().unwrap().disabled);
    assert!(
        !store.set_key_disabled("cc33", true).await.unwrap(),
        "no such key"
    );
    db.remove().await;
}

async fn inserted_generations_are_read_back_only_by_their_key(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = &db.store;
    let mut row = generation("gen-1", "key-a");
    // Nanoseconds: the store keeps microseconds on both backends.
    row.created_at = Utc::now();
    let failed = GenerationRow {
        provider: None,
        upstream_model: None,
        app_referer: None,
        ttft_ms: None,
        finish_reason: None,
        status: 502,
        streamed: false,
        cancelled: true,
        error: Some("every provider failed".to_owned()),
        ..generation("gen-2", "key-a")
    };
    store
        .settle_generations(vec![row.clone(), failed.clone()].into())
        .await
        .unwrap();

    let read = store.generation("gen-1", "key-a").await.unwrap().unwrap();
    assert_eq!(
        read,
        GenerationRow {
            created_at: row.created_at.trunc_subsecs(6),
            ..row
        }
    );
    assert_eq!(
        store.generation("gen-2", "key-a").await.unwrap(),
        Some(failed)
    );
    assert_eq!(
        store.generation("gen-1", "key-b").await.unwrap(),
        None,
        "another key's row"
    );
    assert_eq!(store.generation("gen-3", "key-a").await.unwrap(), None);
    store.settle_generations(Vec::new().into()).await.unwrap();
    db.remove().await;
}

async fn a_batch_skips_ids_that_exist_and_keeps_the_stored_row(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = &db.store;
    let original = generation("gen-1", "key-a");
    store
        .settle_generations(vec![original.clone()].into())
        .await
        .unwrap();
    let replay = GenerationRow {
        cost: 999_999,
        ..original.clone()
    };
    let fresh = generation("gen-2", "key-a");
    store
        .settle_generations(vec![replay, fresh.clone()].into())
        .await
        .unwrap();

    assert_eq!(
        store.generation("gen-1", "key-a").await.unwrap(),
        Some(original)
    );
    assert_eq!(
        store.generation("gen-2", "key-a").await.unwrap(),
        Some(fresh)
    );
    assert_eq!(db.count_generations().await, 2);
    db.remove().await;
}

async fn a_batch_larger_than_one_statement_is_inserted_whole(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = &db.store;
    let rows: Vec<GenerationRow> = (0..3_500)
        .map(|i| generation(&format!("gen-{i}"), "key-a"))
        .collect();
    store.settle_generations(rows.clone().into()).await.unwrap();
    assert_eq!(db.count_generations().await, 3_500);
    db.remove().await;
}

async fn the_writer_writes_every_recorded_row_on_shutdown_even_past_its_queue(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = &db.store;
    // An hour-long interval: only a full batch or the shutdown can write anything.
    let (sink, writer) = spawn_writer(store.clone(), 500, Duration::from_secs(3600));
    // More than the queue holds, recorded without yielding: the rest must wait, not vanish.
    let total = 20_003;
    for i in 0..total {
        sink.record(generation(&format!("gen-{i}"), "key-a"));
    }
    writer.shutdown().await;

    assert_eq!(db.count_generations().await, total);
    assert!(
        store
            .generation("gen-20002", "key-a")
            .await
            .unwrap()
            .is_some()
    );
    db.remove().await;
}

async fn a_writer_that_cannot_write_gives_up_on_the_batch_and_still_shuts_down(backend: Backend) {
    let db = TestDb::new(backend).await;
    let dashboard = Dashboard::open(&db.url).await;
    dashboard.execute("DROP VIEW usage_daily").await;
    dashboard.execute("DROP TABLE generations").await;
    dashboard.close().await;
    let (sink, writer) = spawn_writer(db.store.clone(), 10, Duration::from_secs(3600));
    sink.record(generation("gen-1", "key-a"));
    // Retries back off for a bounded time, then the batch is logged as lost: no hang, no spin.
    tokio::time::timeout(Duration::from_secs(30), writer.shutdown())
        .await
        .expect("shutdown must not wait forever on a failing database");
    sink.record(generation("gen-2", "key-a")); // after shutdown: logged, not a panic
    db.remove().await;
}

async fn flush_returns_once_every_recorded_row_is_readable(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = &db.store;
    let (sink, writer) = spawn_writer(store.clone(), 1_000, Duration::from_secs(3600));
    sink.record(generation("gen-1", "key-a"));
    sink.clone().record(generation("gen-2", "key-b"));
    sink.flush().await;
    assert!(store.generation("gen-1", "key-a").await.unwrap().is_some());
    assert!(store.generation("gen-2", "key-b").await.unwrap().is_some());

    sink.record(generation("gen-3", "key-a"));
    sink.flush().await;
    assert!(store.generation("gen-3", "key-a").await.unwrap().is_some());
    writer.shutdown().await;
    sink.flush().await; // a stopped writer has nothing to wait for
    db.remove().await;
}

async fn usage_daily_sums_requests_tokens_and_cost_per_day_key_model_and_provider(
    backend: Backend,
) {
    let db = TestDb::new(backend).await;
    let store = &db.store;
    let day_one = Utc.with_ymd_and_hms(2025, 3, 1, 0, 0, 0).unwrap();
    let at = |base: DateTime<Utc>, hours: i64| base + chrono::Duration::hours(hours);
    let row = |id: &str, key: &str, when: DateTime<Utc>, cost: i64| GenerationRow {
        created_at: when,
        cost,
        ..generation(id, key)
    };
    let rows = [
        row("gen-1", "key-a", at(day_one, 1), 1_500_000),
        row("gen-2", "key-a", at(day_one, 23), 250),
        row("gen-3", "key-a", at(day_one, 24), 7),
        row("gen-4", "key-b", at(day_one, 12), 10),
        GenerationRow {
            model: "mock/echo".into(),
            provider: None,
            ..row("gen-5", "key-a", at(day_one, 2), 0)
        },
    ];
    store.settle_generations(rows.clone().into()).await.unwrap();

    let usage_day =
        |day: u32, key: &str, model: &str, provider: Option<&str>, requests: i64, cost: i64| {
            UsageDay {
                day: NaiveDate::from_ymd_opt(2025, 3, day).unwrap(),
                key_hash: key.into(),
                model: model.into(),
                provider: provider.map(Into::into),
                requests,
                prompt_tokens: 1_000 * requests,
                completion_tokens: 250 * requests,
                cached_tokens: 100 * requests,
                reasoning_tokens: 50 * requests,
                cost,
            }
        };
    let dashboard = Dashboard::open(&db.url).await;
    let mut usage = dashboard.usage_daily().await;
    // NULL sorts first in SQLite and last in Postgres; the test should not care.
    usage.sort_by(|a, b| {
        (a.day, &a.key_hash, &a.model, &a.provider).cmp(&(
            b.day,
            &b.key_hash,
            &b.model,
            &b.provider,
        ))
    });
    assert_eq!(
        usage,
        [
            usage_day(1, "key-a", "mock/echo", None, 1, 0),
            usage_day(1, "key-a", "openai/gpt-4o", Some("openai"), 2, 1_500_250),
            usage_day(1, "key-b", "openai/gpt-4o", Some("openai"), 1, 10),
            usage_day(2, "key-a", "openai/gpt-4o", Some("openai"), 1, 7),
        ]
    );
    dashboard.close().await;
    db.remove().await;
}

async fn a_created_key_authenticates_and_anything_else_is_refused(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = &db.store;
    let keys = Keys::new(store.clone(), WallClock::system());
    let created = keys
        .create(
            "ci",
            Some(MicroUsd(5_000_000)),
            Some(LimitReset::Monthly),
            None,
        )
        .await
        .unwrap();

    let key = &created.key;
    assert!(key.starts_with("sk-sy-") && key.len() == 54, "{key}");
    assert!(key[6..].bytes().all(|b| b.is_ascii_alphanumeric()), "{key}");
    assert_eq!(created.row.hash, sha256_hex(key));
    assert_eq!(created.row.prefix, format!("{}…", &key[..10]));
    assert_eq!(created.row.limit_micros, Some(5_000_000));
    assert_eq!(created.row.limit_reset.as_deref(), Some("monthly"));

    for _ in 0..2 {
        // The second time comes from the cache.
        let authed = keys.authenticate(key).await.unwrap();
        assert_eq!(
            (&*authed.hash, &*authed.name),
            (created.row.hash.as_str(), "ci")
        );
    }
    assert!(matches!(
        keys.authenticate(&random_key()).await,
        Err(AuthError::Invalid)
    ));
    assert!(matches!(
        keys.authenticate(&key[..53]).await,
        Err(AuthError::Invalid)
    ));
    assert!(matches!(
        keys.authenticate("Bearer nonsense").await,
        Err(AuthError::Invalid)
    ));
    assert!(matches!(
        keys.authenticate("").await,
        Err(AuthError::Missing)
    ));
    let other = Keys::new(store.clone(), WallClock::system())
        .create("other", None, None, None)
        .await
        .unwrap();
    assert_ne!(other.key, created.key);
    assert_eq!(other.row.limit_micros, None);
    db.remove().await;
}

async fn a_key_disabled_elsewhere_is_refused_once_its_cached_verdict_is_a_second_old(
    backend: Backend,
) {
    let db = TestDb::new(backend).await;
    let store = &db.store;
    let clock = ManualClock::new();
    let keys = clock.keys(store.clone());
    let created = keys.create("ci", None, None, None).await.unwrap();
    keys.authenticate(&created.key).await.unwrap();

    // Another replica disables it: this one keeps its cached verdict for up to a second.
    assert!(
        store
            .set_key_disabled(&created.row.hash, true)
            .await
            .unwrap()
    );
    clock.advance(Duration::from_millis(900));
    keys.authenticate(&created.key).await.unwrap();
    clock.advance(Duration::from_millis(100));
    assert!(matches!(
        keys.authenticate(&created.key).await,
        Err(AuthError::Disabled)
    ));

    assert!(
        store
            .set_key_disabled(&created.row.hash, false)
            .await
            .unwrap()
    );
    assert!(matches!(
        keys.authenticate(&created.key).await,
        Err(AuthError::Disabled)
    ));
    clock.advance(Duration::from_secs(1));
    keys.authenticate(&created.key).await.unwrap();
    db.remove().await;
}

async fn a_key_disabled_through_keys_is_refused_at_once(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = &db.store;
    let keys = ManualClock::new().keys(store.clone());
    let created = keys.create("ci", None, None, None).await.unwrap();
    keys.authenticate(&created.key).await.unwrap();
    assert!(keys.set_disabled(&created.row.hash, true).await.unwrap());
    assert!(matches!(
        keys.authenticate(&created.key).await,
        Err(AuthError::Disabled)
    ));
    assert!(keys.set_disabled(&created.row.hash, false).await.unwrap());
    keys.authenticate(&created.key).await.unwrap();
    assert!(!keys.set_disabled("not-a-hash", true).await.unwrap());
    db.remove().await;
}

async fn an_unknown_key_created_elsewhere_is_accepted_within_a_second(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = &db.store;
    let clock = ManualClock::new();
    let keys = clock.keys(store.clone());
    let key = random_key();
    assert!(matches!(
        keys.authenticate(&key).await,
        Err(AuthError::Invalid)
    ));

    store
        .insert_key(&new_key("minted elsewhere", &sha256_hex(&key)))
        .await
        .unwrap();
    // The miss is cached briefly, so a flood of bad keys does not reach the database each time.
    assert!(matches!(
        keys.authenticate(&key).await,
        Err(AuthError::Invalid)
    ));
    clock.advance(Duration::from_secs(1));
    let authed = keys.authenticate(&key).await.unwrap();
    assert_eq!(&*authed.name, "minted elsewhere");
    db.remove().await;
}

async fn an_expired_key_is_refused(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = &db.store;
    let now = test_start();
    let clock = WallClock::pinned(now);
    let keys = Keys::new(store.clone(), clock.clone());
    let past = now - chrono::Duration::minutes(1);
    let expired = keys.create("old", None, None, Some(past)).await.unwrap();
    assert!(matches!(
        keys.authenticate(&expired.key).await,
        Err(AuthError::Expired)
    ));
    assert!(matches!(
        keys.authenticate(&expired.key).await,
        Err(AuthError::Expired)
    ));

    // Judged on every request, so a cached key expires at its exact instant.
    let soon = now + chrono::Duration::seconds(1);
    let current = keys.create("new", None, None, Some(soon)).await.unwrap();
    keys.authenticate(&current.key).await.unwrap();
    clock.set(soon - chrono::Duration::microseconds(1));
    keys.authenticate(&current.key).await.unwrap();
    clock.set(soon);
    assert!(matches!(
        keys.authenticate(&current.key).await,
        Err(AuthError::Expired)
    ));
    db.remove().await;
}

/// An in-memory database lives inside the sqlx pool's single connection, so its batches take
/// the pool path rather than the dedicated file connection; both must write the same rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_memory_database_records_generations_through_its_one_connection() {
    let store = Store::connect("sqlite::memory:").await.unwrap();
    store.migrate().await.unwrap();
    let row = generation("gen-memory", "key-a");
    store
        .settle_generations(vec![row.clone(), row.clone()].into())
        .await
        .unwrap();
    assert_eq!(
        store.generation("gen-memory", "key-a").await.unwrap(),
        Some(GenerationRow {
            created_at: row.created_at.trunc_subsecs(6),
            ..row
        })
    );
}
