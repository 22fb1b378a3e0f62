//! Key provisioning (`/keys`, `/keys/{hash}` with the admin token), `GET /key` and `GET /credits`
//! through the HTTP API, on SQLite and Postgres, with the tables checked in plain SQL.

use std::time::{Duration, Instant};

use chrono::{DateTime, Days, Utc};
use reqwest::{Method, Response};
use serde_json::{Value, json};
use sqlx::{PgPool, SqlitePool};
use switchyard::accounts::LimitReset;
use switchyard::accounts::period::{PeriodStarts, period_start};
use switchyard::clock::WallClock;

use crate::db::Backend;
use crate::helpers::{Extra, TestApp, spawn_app_on, spawn_app_with, test_start};
use crate::on_both_backends;

on_both_backends!(
    a_created_key_is_shown_once_and_works_for_chat,
    patch_changes_name_limit_and_reset_and_a_disabled_key_is_refused_at_once,
    grants_in_the_ledger_sum_to_the_limit_after_every_change,
    concurrent_limit_changes_leave_grants_summing_to_the_final_limit,
    a_deleted_key_is_refused_and_no_longer_found_but_its_ledger_stays,
    an_expired_key_is_refused,
    the_provisioning_api_needs_the_admin_token,
    invalid_input_is_a_400_in_the_error_shape,
    get_key_reports_usage_by_utc_period_and_what_is_left_of_the_limit,
    credits_are_totalled_for_the_calling_key_or_for_every_key_with_the_admin_token,
    a_key_disabled_on_one_replica_is_refused_by_another_within_a_second,
);

const ADMIN: &str = "admin-secret-for-tests-0123456789abcdef";

async fn spawn(backend: Backend) -> TestApp {
    spawn_app_with(backend, admin_config()).await
}

fn admin_config() -> Extra<'static> {
    Extra {
        server: r#"admin_token = "admin-secret-for-tests-0123456789abcdef""#,
        ..Extra::default()
    }
}

/// A request with the admin token; `body` is sent as JSON when given.
async fn admin(app: &TestApp, method: Method, path: &str, body: Option<Value>) -> Response {
    as_bearer(app, ADMIN, method, path, body).await
}

async fn as_bearer(
    app: &TestApp,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Response {
    let mut request = app
        .client
        .request(method, format!("{}{path}", app.base))
        .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.unwrap()
}

async fn json_of(response: Response, status: u16) -> Value {
    let actual = response.status();
    let text = response.text().await.unwrap();
    assert_eq!(actual, status, "{text}");
    serde_json::from_str(&text).unwrap()
}

/// Creates a key through the API; returns the plaintext key and its hash.
async fn create(app: &TestApp, body: Value) -> (String, String) {
    let created = json_of(admin(app, Method::POST, "/v1/keys", Some(body)).await, 201).await;
    let key = created["key"].as_str().unwrap().to_owned();
    let hash = created["data"]["hash"].as_str().unwrap().to_owned();
    (key, hash)
}

async fn chat(app: &TestApp, key: &str) -> u16 {
    app.client
        .post(format!("{}/v1/chat/completions", app.base))
        .bearer_auth(key)
        .json(&json!({"model": "switchyard/echo", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn a_created_key_is_shown_once_and_works_for_chat(backend: Backend) {
    let app = spawn(backend).await;
    let response = admin(
        &app,
        Method::POST,
        "/v1/keys",
        Some(json!({"name": "ci", "limit": 5, "limit_reset": "monthly",
                    "expires_at": "2099-12-31T23:59:59Z", "include_byok_in_limit": false})),
    )
    .await;
    let created = json_of(response, 201).await;
    let key = created["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("sk-sy-"), "{created}");
    let data = &created["data"];
    let hash = data["hash"].as_str().unwrap().to_owned();
    assert_eq!(hash.len(), 64);
    assert_eq!(data["name"], "ci");
    assert!(key.starts_with(data["label"].as_str().unwrap().trim_end_matches('…')));
    assert_eq!(data["disabled"], false);
    assert_eq!(data["limit"], 5);
    assert_eq!(data["limit_remaining"], 5);
    assert_eq!(data["limit_reset"], "monthly");
    assert_eq!(data["usage"], 0);
    assert_eq!(data["usage_monthly"], 0);
    assert_eq!(data["expires_at"], "2099-12-31T23:59:59Z");
    assert_eq!(data["updated_at"], Value::Null);
    assert!(data["created_at"].as_str().unwrap().ends_with('Z'));

    assert_eq!(chat(&app, &key).await, 200);

    for path in ["/v1/keys", "/api/v1/keys", &format!("/api/v1/keys/{hash}")] {
        let response = admin(&app, Method::GET, path, None).await;
        assert_eq!(response.status(), 200, "{path}");
        let text = response.text().await.unwrap();
        assert!(text.contains(&hash), "{path}: {text}");
        assert!(!text.contains(&key), "{path} shows the key again: {text}");
    }
    let listed = json_of(admin(&app, Method::GET, "/v1/keys", None).await, 200).await;
    let names: Vec<&str> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|key| key["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["test", "ci"], "oldest first");
}

async fn patch_changes_name_limit_and_reset_and_a_disabled_key_is_refused_at_once(
    backend: Backend,
) {
    let app = spawn(backend).await;
    let (key, hash) = create(&app, json!({"name": "before", "limit": 1})).await;
    let path = format!("/v1/keys/{hash}");
    assert_eq!(chat(&app, &key).await, 200);

    let patch = json!({"name": "after", "limit": "2.5", "limit_reset": "weekly"});
    let patched = json_of(admin(&app, Method::PATCH, &path, Some(patch)).await, 200).await;
    let data = &patched["data"];
    assert_eq!(data["name"], "after");
    assert_eq!(data["limit"], 2.5);
    assert_eq!(data["limit_remaining"], 2.5);
    assert_eq!(data["limit_reset"], "weekly");
    assert!(data["updated_at"].is_string(), "{patched}");

    // Absent fields are left alone; null clears.
    let patch = json!({"limit_reset": null});
    let patched = json_of(admin(&app, Method::PATCH, &path, Some(patch)).await, 200).await;
    assert_eq!(patched["data"]["limit_reset"], Value::Null);
    assert_eq!(patched["data"]["limit"], 2.5);
    assert_eq!(patched["data"]["name"], "after");
    let patch = json!({"limit": null});
    let patched = json_of(admin(&app, Method::PATCH, &path, Some(patch)).await, 200).await;
    assert_eq!(patched["data"]["limit"], Value::Null);
    assert_eq!(patched["data"]["limit_remaining"], Value::Null);

    // The key's verdict is cached from the chat above; disabling must not wait for it to expire.
    let patch = json!({"disabled": true});
    let patched = json_of(admin(&app, Method::PATCH, &path, Some(patch)).await, 200).await;
    assert_eq!(patched["data"]["disabled"], true);
    assert_eq!(chat(&app, &key).await, 401);

    let listed = json_of(admin(&app, Method::GET, "/v1/keys", None).await, 200).await;
    assert!(
        !listed.to_string().contains(&hash),
        "disabled keys are left out by default"
    );
    let listed = json_of(
        admin(&app, Method::GET, "/v1/keys?include_disabled=true", None).await,
        200,
    )
    .await;
    assert!(listed.to_string().contains(&hash), "{listed}");

    let patch = json!({"disabled": false});
    json_of(admin(&app, Method::PATCH, &path, Some(patch)).await, 200).await;
    assert_eq!(chat(&app, &key).await, 200);
}

async fn grants_in_the_ledger_sum_to_the_limit_after_every_change(backend: Backend) {
    let app = spawn(backend).await;
    let sql = Sql::open(&app.database_url).await;
    let (_, hash) = create(&app, json!({"name": "granted", "limit": 10})).await;
    assert_eq!(sql.grants(&hash).await, 10_000_000);
    assert_eq!(sql.balance(&hash).await, sql.ledger_sum(&hash).await);
    let path = format!("/v1/keys/{hash}");
    for (limit, expected) in [
        (json!(25), 25_000_000),
        (json!(7.5), 7_500_000),
        (json!(7.5), 7_500_000),
        (Value::Null, 0),
        (json!("0.000003"), 3),
    ] {
        let patch = json!({"limit": limit});
        json_of(admin(&app, Method::PATCH, &path, Some(patch)).await, 200).await;
        assert_eq!(sql.grants(&hash).await, expected, "after limit {limit}");
        assert_eq!(sql.ledger_sum(&hash).await, expected);
        assert_eq!(sql.balance(&hash).await, expected);
    }
    // 10, +15, -17.5, (no change), -7.5, +0.000003: an unchanged limit writes no grant.
    assert_eq!(sql.grant_rows(&hash).await, 5);
    // A key without a limit has its key_credits row and no grant.
    let (_, unlimited) = create(&app, json!({"name": "unlimited"})).await;
    assert_eq!(sql.grant_rows(&unlimited).await, 0);
    assert_eq!(sql.balance(&unlimited).await, 0);
    sql.close().await;
}

async fn concurrent_limit_changes_leave_grants_summing_to_the_final_limit(backend: Backend) {
    let app = spawn(backend).await;
    let (_, hash) = create(&app, json!({"name": "contended", "limit": 1})).await;
    let path = format!("/v1/keys/{hash}");
    let changes = (1..=16).map(|dollars| {
        let (app, path) = (&app, &path);
        async move {
            let patch = Some(json!({"limit": dollars}));
            json_of(admin(app, Method::PATCH, path, patch).await, 200).await;
        }
    });
    futures_util::future::join_all(changes).await;
    let shown = json_of(admin(&app, Method::GET, &path, None).await, 200).await;
    let limit = (shown["data"]["limit"].as_f64().unwrap() * 1e6).round() as i64;
    let sql = Sql::open(&app.database_url).await;
    assert_eq!(sql.grants(&hash).await, limit, "whichever change came last");
    assert_eq!(sql.balance(&hash).await, limit);
    assert_eq!(sql.ledger_sum(&hash).await, limit);
    sql.close().await;
}

async fn a_deleted_key_is_refused_and_no_longer_found_but_its_ledger_stays(backend: Backend) {
    let app = spawn(backend).await;
    let (key, hash) = create(&app, json!({"name": "doomed", "limit": 1})).await;
    let path = format!("/api/v1/keys/{hash}");
    assert_eq!(chat(&app, &key).await, 200);

    let deleted = json_of(admin(&app, Method::DELETE, &path, None).await, 200).await;
    assert_eq!(deleted, json!({"deleted": true}));
    assert_eq!(chat(&app, &key).await, 401);
    json_of(admin(&app, Method::GET, &path, None).await, 404).await;
    json_of(admin(&app, Method::DELETE, &path, None).await, 404).await;
    let patch = Some(json!({"name": "ghost"}));
    json_of(admin(&app, Method::PATCH, &path, patch).await, 404).await;

    let sql = Sql::open(&app.database_url).await;
    assert_eq!(sql.grants(&hash).await, 1_000_000, "history stays");
    assert_eq!(sql.credit_rows(&hash).await, 0);
    sql.close().await;
}

async fn an_expired_key_is_refused(backend: Backend) {
    let app = spawn(backend).await;
    let past = (app.clock.now() - chrono::Duration::seconds(5)).to_rfc3339();
    let (expired, _) = create(&app, json!({"name": "old", "expires_at": past})).await;
    let response = as_bearer(&app, &expired, Method::GET, "/v1/key", None).await;
    let error = json_of(response, 401).await;
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired")
    );
    assert_eq!(chat(&app, &expired).await, 401);
}

async fn the_provisioning_api_needs_the_admin_token(backend: Backend) {
    let app = spawn(backend).await;
    let hash_path = format!("/v1/keys/{}", app.key_hash);
    let routes = [
        (Method::GET, "/v1/keys"),
        (Method::POST, "/v1/keys"),
        (Method::GET, hash_path.as_str()),
        (Method::PATCH, hash_path.as_str()),
        (Method::DELETE, hash_path.as_str()),
    ];
    let body = || Some(json!({"name": "sneaky"}));
    for (method, path) in &routes {
        let missing = app
            .client
            .request(method.clone(), format!("{}{path}", app.base))
            .json(&json!({"name": "sneaky"}))
            .send()
            .await
            .unwrap();
        let error = json_of(missing, 401).await;
        assert_eq!(error["error"]["code"], 401, "{method} {path}");
        let wrong = as_bearer(
            &app,
            &ADMIN[..ADMIN.len() - 1],
            method.clone(),
            path,
            body(),
        )
        .await;
        json_of(wrong, 401).await;
        // A key is not the admin token.
        let key = as_bearer(&app, &app.key, method.clone(), path, body()).await;
        json_of(key, 401).await;
    }
    // Nothing was created, changed or deleted.
    let listed = json_of(admin(&app, Method::GET, "/v1/keys", None).await, 200).await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 1);
    assert_eq!(listed["data"][0]["name"], "test");

    let unconfigured = spawn_app_with(backend, Extra::default()).await;
    for (method, path) in &routes {
        let response = admin(&unconfigured, method.clone(), path, body()).await;
        let error = json_of(response, 403).await;
        let message = error["error"]["message"].as_str().unwrap();
        assert!(message.contains("[server] admin_token"), "{message}");
    }
}

async fn invalid_input_is_a_400_in_the_error_shape(backend: Backend) {
    let app = spawn(backend).await;
    let invalid = [
        json!({"name": "x", "limit": -1}),
        json!({"name": "x", "limit": "-1"}),
        json!({"name": "x", "limit": 1e-7}),
        json!({"name": "x", "limit": "0.0000001"}),
        json!({"name": "x", "limit": "ten"}),
        json!({"name": "x", "limit": true}),
        json!({"name": "x", "limit_reset": "yearly"}),
        json!({"name": "x", "expires_at": "next tuesday"}),
        json!({"name": "x", "expires_at": "2027-12-31"}),
        json!({"name": "  "}),
        json!({"name": "n".repeat(129)}),
        json!({"name": "a\nforged log line"}),
        json!({"name": "x".repeat(1 << 20)}),
        json!({"limit": 5}),
    ];
    for body in invalid {
        let response = admin(&app, Method::POST, "/v1/keys", Some(body.clone())).await;
        let error = json_of(response, 400).await;
        assert_eq!(error["error"]["code"], 400, "{body}");
        assert_eq!(error["error"]["type"], "invalid_request_error", "{body}");
    }
    let path = format!("/v1/keys/{}", app.key_hash);
    for patch in [
        json!({"limit": -5}),
        json!({"limit_reset": "hourly"}),
        json!({"name": ""}),
        json!({"name": "\u{1b}[2J"}),
        json!({"disabled": "yes"}),
    ] {
        let response = admin(&app, Method::PATCH, &path, Some(patch.clone())).await;
        let error = json_of(response, 400).await;
        assert_eq!(error["error"]["code"], 400, "{patch}");
    }
    let response = admin(&app, Method::GET, "/v1/keys?offset=-1", None).await;
    json_of(response, 400).await;
    // Nothing was created.
    let listed = json_of(admin(&app, Method::GET, "/v1/keys", None).await, 200).await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 1);
}

async fn get_key_reports_usage_by_utc_period_and_what_is_left_of_the_limit(backend: Backend) {
    let clock = WallClock::pinned(test_start());
    let app = spawn_app_with(
        backend,
        Extra {
            clock: Some(clock.clone()),
            ..admin_config()
        },
    )
    .await;
    let sql = Sql::open(&app.database_url).await;
    // The days whose periods overlap or straddle a boundary, and the suite's own start.
    let instants = [
        "2026-11-30T23:59:59Z", // a Monday, the month's last day: its week began today
        "2026-12-01T00:00:00Z", // the 1st: its week began last month
        "2026-12-05T12:00:00Z", // its week began on the day before this month began
        "2026-12-06T23:59:59Z", // a Sunday, one second before its week ends
        "2026-12-31T23:59:59Z", // a year's last second
        "2027-01-01T00:00:00Z", // a year's first second, in a week that began last year
        "2027-02-01T00:00:01Z", // a Monday that is the 1st: day, week and month begin together
        "2028-02-29T08:00:00Z", // a leap day
    ]
    .map(|text| DateTime::parse_from_rfc3339(text).unwrap().to_utc());
    for (n, now) in instants.into_iter().chain([test_start()]).enumerate() {
        clock.set(now);
        statement_sums_the_periods_of(&app, &sql, now, n).await;
    }
    sql.close().await;
}

/// One key's statement with the clock at `now`: each sum takes exactly the rollups of its
/// period, and only spending recorded for the current period counts against the limit.
async fn statement_sums_the_periods_of(app: &TestApp, sql: &Sql, now: DateTime<Utc>, n: usize) {
    let (key, hash) = create(
        app,
        json!({"name": format!("metered-{n}"), "limit": 10, "limit_reset": "daily"}),
    )
    .await;
    let starts = PeriodStarts::at(now);
    let last_month = starts.month.checked_sub_days(Days::new(1)).unwrap();
    // A model of its own per row, so rows never share a rollup key even when two periods begin
    // on the same day; distinct digits per row, so every sum below says which rows it took.
    let rows = [
        (starts.day, "a/today", 1_000_000),
        (starts.day, "b/today", 100_000),
        (starts.week, "c/this-week", 20_000),
        (starts.month, "d/this-month", 3_000),
        (last_month, "e/last-month", 400),
    ];
    for (day, model, cost) in rows {
        sql.rollup(day, &hash, model, cost).await;
    }
    // Another key's spending is never counted.
    sql.rollup(starts.day, &app.key_hash, &format!("f/other-{n}"), 7)
        .await;
    let today = period_start(Some(LimitReset::Daily), now);
    sql.credits(&hash, 1_123_400, today, 2_500_000).await;

    let since = |first: chrono::NaiveDate| -> i64 {
        rows.iter()
            .filter(|(day, _, _)| *day >= first)
            .map(|(_, _, cost)| cost)
            .sum()
    };
    let usd = |micros: i64| Value::from(micros as f64 / 1e6);
    let statement = json_of(
        as_bearer(app, &key, Method::GET, "/v1/key", None).await,
        200,
    )
    .await;
    let data = &statement["data"];
    assert_eq!(data["hash"], hash.as_str());
    assert_eq!(data["name"], format!("metered-{n}"));
    assert!(key.starts_with(data["label"].as_str().unwrap().trim_end_matches('…')));
    assert_eq!(data["limit"], 10);
    assert_eq!(data["limit_reset"], "daily");
    assert_eq!(data["limit_remaining"], 7.5, "at {now}");
    assert_eq!(data["usage"], 1.1234);
    assert_eq!(
        data["usage_daily"],
        usd(since(starts.day)),
        "at {now}: {data}"
    );
    assert_eq!(
        data["usage_weekly"],
        usd(since(starts.week)),
        "at {now}: {data}"
    );
    assert_eq!(
        data["usage_monthly"],
        usd(since(starts.month)),
        "at {now}: {data}"
    );
    assert_eq!(data["expires_at"], Value::Null);
    // The admin sees the same statement.
    let shown = json_of(
        admin(app, Method::GET, &format!("/v1/keys/{hash}"), None).await,
        200,
    )
    .await;
    assert_eq!(shown, statement);

    // Spending recorded for an earlier day does not count against today's limit.
    let yesterday = today - 86_400;
    sql.credits(&hash, 1_123_400, yesterday, 2_500_000).await;
    let statement = json_of(
        as_bearer(app, &key, Method::GET, "/api/v1/key", None).await,
        200,
    )
    .await;
    assert_eq!(statement["data"]["limit_remaining"], 10, "at {now}");
    // Overspent (holds can take a period past its limit): nothing is left, never less.
    sql.credits(&hash, 1_123_400, today, 12_000_000).await;
    let statement = json_of(
        as_bearer(app, &key, Method::GET, "/v1/key", None).await,
        200,
    )
    .await;
    assert_eq!(statement["data"]["limit_remaining"], 0, "at {now}");
}

async fn credits_are_totalled_for_the_calling_key_or_for_every_key_with_the_admin_token(
    backend: Backend,
) {
    let app = spawn(backend).await;
    let (first, first_hash) = create(&app, json!({"name": "a", "limit": 10})).await;
    let (_, second_hash) = create(&app, json!({"name": "b", "limit": "2.5"})).await;
    let sql = Sql::open(&app.database_url).await;
    sql.credits(&first_hash, 1_250_000, 0, 1_250_000).await;
    sql.credits(&second_hash, 500_000, 0, 500_000).await;
    sql.credits(&app.key_hash, 3, 0, 3).await;
    sql.close().await;

    let mine = json_of(
        as_bearer(&app, &first, Method::GET, "/v1/credits", None).await,
        200,
    )
    .await;
    assert_eq!(
        mine,
        json!({"data": {"total_credits": 10, "total_usage": 1.25}})
    );
    let unlimited = json_of(app.get("/api/v1/credits").await, 200).await;
    assert_eq!(
        unlimited,
        json!({"data": {"total_credits": 0, "total_usage": 0.000003}})
    );
    let all = json_of(admin(&app, Method::GET, "/v1/credits", None).await, 200).await;
    assert_eq!(
        all,
        json!({"data": {"total_credits": 12.5, "total_usage": 1.750003}})
    );
    let anonymous = app
        .client
        .get(format!("{}/v1/credits", app.base))
        .send()
        .await
        .unwrap();
    json_of(anonymous, 401).await;
}

async fn a_key_disabled_on_one_replica_is_refused_by_another_within_a_second(backend: Backend) {
    let first = spawn(backend).await;
    let second = spawn_app_on(&first.database_url, admin_config()).await;
    let (key, hash) = create(&first, json!({"name": "shared"})).await;
    // The second replica caches the key as valid.
    assert_eq!(chat(&second, &key).await, 200);

    let patch = Some(json!({"disabled": true}));
    let disabled_at = Instant::now();
    json_of(
        admin(&first, Method::PATCH, &format!("/v1/keys/{hash}"), patch).await,
        200,
    )
    .await;
    assert_eq!(chat(&first, &key).await, 401, "at once on the first");
    let deadline = disabled_at + Duration::from_secs(5);
    loop {
        let response = as_bearer(&second, &key, Method::GET, "/v1/key", None).await;
        if response.status() == 401 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the second replica never refused"
        );
        // A polling interval, not a wait for the cache: the loop ends as soon as it refuses.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = disabled_at.elapsed();
    assert_eq!(chat(&second, &key).await, 401);
    assert!(
        took < Duration::from_millis(1_500),
        "refused after {took:?}"
    );
    second.stop().await;
    first.stop().await;
}

/// Plain SQL on an app's database: seeds rollups and credits, reads the ledger.
enum Sql {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

macro_rules! on_sql {
    ($sql:expr, $pool:ident => $body:expr) => {
        match $sql {
            Sql::Sqlite($pool) => $body,
            Sql::Postgres($pool) => $body,
        }
    };
}

impl Sql {
    async fn open(url: &str) -> Sql {
        if url.starts_with("sqlite:") {
            Sql::Sqlite(SqlitePool::connect(url).await.unwrap())
        } else {
            Sql::Postgres(PgPool::connect(url).await.unwrap())
        }
    }

    async fn scalar(&self, sql: &str, hash: &str) -> i64 {
        on_sql!(self, pool => sqlx::query_scalar(sql).bind(hash).fetch_one(pool).await.unwrap())
    }

    async fn grants(&self, hash: &str) -> i64 {
        let sql = "SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM ledger \
                   WHERE key_hash = $1 AND kind = 'grant'";
        self.scalar(sql, hash).await
    }

    async fn grant_rows(&self, hash: &str) -> i64 {
        let sql = "SELECT COUNT(*) FROM ledger WHERE key_hash = $1 AND kind = 'grant'";
        self.scalar(sql, hash).await
    }

    async fn ledger_sum(&self, hash: &str) -> i64 {
        let sql = "SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM ledger WHERE key_hash = $1";
        self.scalar(sql, hash).await
    }

    async fn balance(&self, hash: &str) -> i64 {
        let sql = "SELECT balance FROM key_credits WHERE key_hash = $1";
        self.scalar(sql, hash).await
    }

    async fn credit_rows(&self, hash: &str) -> i64 {
        let sql = "SELECT COUNT(*) FROM key_credits WHERE key_hash = $1";
        self.scalar(sql, hash).await
    }

    async fn rollup(&self, day: chrono::NaiveDate, hash: &str, model: &str, cost: i64) {
        let sql = "INSERT INTO usage_rollups (day, key_hash, model, provider, app, requests, \
                   prompt_tokens, completion_tokens, cached_tokens, cache_write_tokens, \
                   reasoning_tokens, cost) VALUES ($1, $2, $3, 'mock', '', 1, 10, 5, 0, 0, 0, $4)";
        on_sql!(self, pool => sqlx::query(sql)
            .bind(day)
            .bind(hash)
            .bind(model)
            .bind(cost)
            .execute(pool)
            .await
            .map(drop)
            .unwrap());
    }

    async fn credits(&self, hash: &str, usage: i64, period_start: i64, period_spent: i64) {
        let sql = "UPDATE key_credits SET usage = $2, period_start = $3, period_spent = $4 \
                   WHERE key_hash = $1";
        let updated = on_sql!(self, pool => sqlx::query(sql)
            .bind(hash)
            .bind(usage)
            .bind(period_start)
            .bind(period_spent)
            .execute(pool)
            .await
            .unwrap()
            .rows_affected());
        assert_eq!(updated, 1, "every key has a key_credits row");
    }

    async fn close(self) {
        on_sql!(self, pool => pool.close().await);
    }
}
