//! Credits through the gateway and the store: holds refuse what a key's limit cannot cover before
//! anything is sent, settlement charges exactly the cost, and the books (ledger, `key_credits`,
//! `generations`) agree afterwards, also under concurrency and across period boundaries.

use chrono::{Duration as Days, TimeZone, Utc};
use futures_util::future::join_all;
use serde_json::{Value, json};
use switchyard::accounts::period::period_start;
use switchyard::accounts::{Keys, LimitReset};
use switchyard::clock::WallClock;
use switchyard::openai::MicroUsd;
use switchyard::store::{GenerationRow, NewHold, Store};

use crate::dashboard::Dashboard;
use crate::db::{Backend, drop_database, fresh_database_url};
use crate::gateway_process::GatewayProcess;
use crate::helpers::{
    ECHO_TABLES, Extra, TestApp, spawn_app, spawn_app_with, spawn_app_with_tables, upstream_tables,
};
use crate::upstream::{Behaviour, MockUpstream};

crate::on_both_backends!(
    chat_returns_402_when_the_limit_cannot_cover_max_tokens,
    every_choice_of_n_is_held_so_n_cannot_take_a_key_past_its_limit,
    a_limited_key_s_answer_is_capped_when_nothing_else_bounds_it,
    a_settled_request_is_charged_its_cost_and_refunded_the_rest_of_its_hold,
    concurrent_requests_never_push_a_key_past_its_limit,
    a_cancelled_stream_on_a_limited_key_is_charged_for_what_it_produced,
    a_limit_starts_afresh_at_each_period_boundary,
    an_expired_hold_is_refunded_once_and_its_late_generation_charged_once,
    keys_without_a_limit_are_charged_without_holding,
    two_gateway_processes_sharing_a_database_never_overspend_a_key,
    holds_of_a_killed_gateway_are_refunded_after_it_restarts,
    prompts_and_answers_are_kept_only_when_prompt_logging_is_on,
);

/// A key of `app` with this limit in micro-USD, as a bearer token.
async fn limited_key(app: &TestApp, micros: i64, reset: Option<LimitReset>) -> (String, String) {
    let created = app
        .state
        .keys
        .create("limited", Some(MicroUsd(micros)), reset, None)
        .await
        .unwrap();
    (created.key, created.row.hash)
}

/// Three words in, echoed back: 3 prompt and 3 completion tokens on the mock, so 3 × $1/M +
/// 3 × $2/M = 9 micro-USD. The prompt's token bound is its 17 bytes plus 8 for the message's
/// role markers, so with `max_tokens: 100` the hold is 25 × 1 + 100 × 2 = 225 micro-USD.
fn echo(max_tokens: u32) -> Value {
    json!({
        "model": "switchyard/echo",
        "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": "hello there again"}],
    })
}

/// The state of one key's books, read as a dashboard would.
#[derive(Debug, PartialEq, Eq)]
struct Books {
    balance: i64,
    usage: i64,
    held: i64,
    holds: i64,
    ledger: i64,
    grants: i64,
    generations_cost: i64,
}

/// One snapshot of the books: the gateways go on writing while a test reads.
async fn books(url: &str, key_hash: &str) -> Books {
    let of_key = |column: &str, table: &str| {
        format!("SELECT {column} FROM {table} WHERE key_hash = '{key_hash}'")
    };
    let queries = [
        of_key("balance", "key_credits"),
        of_key("usage", "key_credits"),
        of_key("held", "key_credits"),
        of_key("COUNT(*)", "credit_holds"),
        of_key("SUM(amount)", "ledger"),
        format!("SELECT SUM(amount) FROM ledger WHERE key_hash = '{key_hash}' AND kind = 'grant'"),
        of_key("SUM(cost)", "generations"),
    ];
    let dashboard = Dashboard::open(url).await;
    let queries: Vec<&str> = queries.iter().map(String::as_str).collect();
    let numbers = dashboard.numbers(&queries).await;
    dashboard.close().await;
    Books {
        balance: numbers[0],
        usage: numbers[1],
        held: numbers[2],
        holds: numbers[3],
        ledger: numbers[4],
        grants: numbers[5],
        generations_cost: numbers[6],
    }
}

/// Settled books: nothing held, the ledger sums to the balance, usage is what the generations
/// cost, and the balance is the grants minus that.
fn assert_reconciled(books: &Books) {
    assert_eq!((books.held, books.holds), (0, 0), "{books:?}");
    assert_eq!(books.ledger, books.balance, "{books:?}");
    assert_eq!(books.usage, books.generations_cost, "{books:?}");
    assert_eq!(books.balance, books.grants - books.usage, "{books:?}");
}

async fn chat_returns_402_when_the_limit_cannot_cover_max_tokens(backend: Backend) {
    let upstream = MockUpstream::start(Behaviour::Reply { text: "hi" }).await;
    let app = spawn_app_with_tables(backend, upstream_tables(&upstream, "acme", "acme/chat")).await;
    let (key, hash) = limited_key(&app, 100, None).await;
    // 1000 output tokens at $15/M alone is 15,000 micro-USD, far above the 100 left.
    let body = json!({
        "model": "acme/chat",
        "max_tokens": 1000,
        "messages": [{"role": "user", "content": "hello"}],
    });
    let response = app.post_chat_as(&key, &body).await;
    assert_eq!(response.status(), 402);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], 402);
    assert_eq!(error["error"]["type"], "insufficient_credits");
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.contains("$0.0001"), "{message}");
    assert!(message.contains("max_tokens"), "{message}");
    assert!(upstream.received().is_empty(), "nothing is sent upstream");

    // A request whose worst case fits is served.
    let small = json!({
        "model": "acme/chat",
        "max_tokens": 2,
        "messages": [{"role": "user", "content": "hello"}],
    });
    assert_eq!(app.post_chat_as(&key, &small).await.status(), 200);
    app.flush().await;
    let books = books(&app.database_url, &hash).await;
    assert_reconciled(&books);
    app.stop().await;
}

async fn every_choice_of_n_is_held_so_n_cannot_take_a_key_past_its_limit(backend: Backend) {
    let upstream = MockUpstream::start(Behaviour::Reply { text: "hi" }).await;
    let app = spawn_app_with_tables(backend, upstream_tables(&upstream, "acme", "acme/chat")).await;
    // 100 output tokens at $15/M is 1,500 micro-USD a choice: 6 fit in 10,000, 7 do not.
    let (key, hash) = limited_key(&app, 10_000, None).await;
    let body = |n: Value| {
        json!({
            "model": "acme/chat",
            "max_tokens": 100,
            "n": n,
            "messages": [{"role": "user", "content": "hi"}],
        })
    };
    let refused = app.post_chat_as(&key, &body(json!(7))).await;
    assert_eq!(refused.status(), 402);
    let refused = app.post_chat_as(&key, &body(json!(128))).await;
    assert_eq!(refused.status(), 402);
    assert!(upstream.received().is_empty(), "nothing is sent upstream");
    for n in [json!(0), json!(129), json!(-1), json!("2")] {
        let response = app.post_chat_as(&key, &body(n.clone())).await;
        assert_eq!(response.status(), 400, "n = {n}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["code"], 400);
    }
    let served = app.post_chat_as(&key, &body(json!(6))).await;
    assert_eq!(served.status(), 200);
    assert_eq!(upstream.received()[0].body["n"], 6, "n is passed on");
    app.flush().await;
    assert_reconciled(&books(&app.database_url, &hash).await);
    app.stop().await;
}

async fn a_limited_key_s_answer_is_capped_when_nothing_else_bounds_it(backend: Backend) {
    let upstream = MockUpstream::start(Behaviour::Reply { text: "hi" }).await;
    // No context length and no max_output: only max_tokens could bound the answer.
    let tables = format!(
        r#"
[[providers]]
id = "open"
kind = "openai-compatible"
base_url = "{}"
api_key = "sk-upstream-secret-open"

[[models]]
id = "open/chat"
  [[models.endpoints]]
  provider = "open"
  upstream = "open-chat"
  prompt = "3"
  completion = "15"
"#,
        upstream.base_url
    );
    let app = spawn_app_with_tables(backend, tables).await;
    let (limited, _) = limited_key(&app, 1_000_000, None).await;
    let body = json!({"model": "open/chat", "messages": [{"role": "user", "content": "hi"}]});
    assert_eq!(app.post_chat_as(&limited, &body).await.status(), 200);
    assert_eq!(app.post_chat(&body).await.status(), 200);
    let sent = upstream.received();
    assert_eq!(
        sent[0].body["max_tokens"], 4096,
        "the hold covers 4,096 tokens, so the answer is held to them"
    );
    assert!(
        sent[1].body.get("max_tokens").is_none(),
        "an unlimited key is not capped"
    );
    let asked = json!({"model": "open/chat", "max_tokens": 7,
        "messages": [{"role": "user", "content": "hi"}]});
    assert_eq!(app.post_chat_as(&limited, &asked).await.status(), 200);
    assert_eq!(upstream.received()[2].body["max_tokens"], 7);
    app.stop().await;
}

async fn a_settled_request_is_charged_its_cost_and_refunded_the_rest_of_its_hold(backend: Backend) {
    let app = spawn_app(backend).await;
    let (key, hash) = limited_key(&app, 1_000_000, None).await;
    let response = app.post_chat_as(&key, &echo(100)).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["usage"]["cost"], json!(0.000009));
    app.flush().await;

    let dashboard = Dashboard::open(&app.database_url).await;
    let movements = dashboard
        .number(&format!(
            "SELECT COUNT(*) FROM ledger WHERE key_hash = '{hash}' AND kind <> 'grant'"
        ))
        .await;
    let charge = dashboard
        .number(&format!(
            "SELECT SUM(amount) FROM ledger WHERE key_hash = '{hash}' AND kind = 'charge'"
        ))
        .await;
    let refund = dashboard
        .number(&format!(
            "SELECT SUM(amount) FROM ledger WHERE key_hash = '{hash}' AND kind = 'refund'"
        ))
        .await;
    dashboard.close().await;
    assert_eq!(
        movements, 2,
        "the hold's charge and the refund of its unused part"
    );
    assert_eq!((charge, refund), (-225, 216));

    let books = books(&app.database_url, &hash).await;
    assert_eq!(books.usage, 9);
    assert_eq!(books.balance, 1_000_000 - 9);
    assert_reconciled(&books);
    app.stop().await;
}

async fn concurrent_requests_never_push_a_key_past_its_limit(backend: Backend) {
    let app = spawn_app(backend).await;
    // Room for four 225 micro-USD holds at a time; 200 requests of 9 micro-USD would spend 1,800.
    let limit = 1_000;
    let (key, hash) = limited_key(&app, limit, None).await;
    let body = echo(100);
    let statuses = join_all((0..200).map(|_| app.post_chat_as(&key, &body)))
        .await
        .into_iter()
        .map(|response| response.status().as_u16())
        .collect::<Vec<_>>();
    let served = statuses.iter().filter(|&&status| status == 200).count() as i64;
    assert!(
        statuses
            .iter()
            .all(|&status| status == 200 || status == 402),
        "{statuses:?}"
    );
    assert!(served >= 4, "at least the first holds fit: {statuses:?}");
    app.flush().await;

    let books = books(&app.database_url, &hash).await;
    assert_reconciled(&books);
    assert_eq!(
        books.usage,
        served * 9,
        "each served request is charged once"
    );
    assert!(books.usage <= limit, "{books:?}");
    let refused = Dashboard::open(&app.database_url).await;
    let recorded_402 = refused
        .number(&format!(
            "SELECT COUNT(*) FROM generations WHERE key_hash = '{hash}' AND status = 402"
        ))
        .await;
    refused.close().await;
    assert_eq!(recorded_402, 200 - served, "every refusal is recorded");
    app.stop().await;
}

async fn a_cancelled_stream_on_a_limited_key_is_charged_for_what_it_produced(backend: Backend) {
    let upstream = MockUpstream::start(Behaviour::Endless).await;
    let app = spawn_app_with_tables(backend, upstream_tables(&upstream, "acme", "acme/chat")).await;
    let (key, hash) = limited_key(&app, 10_000_000, None).await;
    let body = json!({
        "model": "acme/chat",
        "stream": true,
        "max_tokens": 1000,
        "messages": [{"role": "user", "content": "count forever"}],
    });
    let mut response = app.post_chat_as(&key, &body).await;
    assert_eq!(response.status(), 200);
    // Read until the first content delta has arrived: tokens the caller got are billed.
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("first") {
        seen.extend_from_slice(&response.chunk().await.unwrap().unwrap());
    }
    upstream.release();
    drop(response);
    upstream.stream_dropped().await;

    // The writer settles the cancelled generation once the gateway notices the hang-up.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let books = loop {
        app.flush().await;
        let books = books(&app.database_url, &hash).await;
        if books.holds == 0 || std::time::Instant::now() > deadline {
            break books;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_reconciled(&books);
    assert!(books.usage > 0, "the tokens produced are billed: {books:?}");
    app.stop().await;
}

/// Holds taken straight through the store at chosen instants (the clock is an argument): a
/// limit resets at 00:00 UTC, weeks start on Monday and months on the 1st, so what was spent in
/// the last second of a period does not count in the first second of the next.
async fn a_limit_starts_afresh_at_each_period_boundary(backend: Backend) {
    let app = spawn_app(backend).await;
    // 2026-11-29 is a Sunday; 2026-11-30 the last day of a month.
    let boundaries = [
        (
            LimitReset::Daily,
            Utc.with_ymd_and_hms(2026, 11, 23, 23, 59, 59),
        ),
        (
            LimitReset::Weekly,
            Utc.with_ymd_and_hms(2026, 11, 29, 23, 59, 59),
        ),
        (
            LimitReset::Monthly,
            Utc.with_ymd_and_hms(2026, 11, 30, 23, 59, 59),
        ),
    ];
    for (reset, last_second) in boundaries {
        let last_second = last_second.unwrap();
        let (_, hash) = limited_key(&app, 1_000, Some(reset)).await;
        let store: &Store = &app.state.store;
        let ids: Vec<String> = (0..4)
            .map(|n| format!("gen-{}-{n}", reset.as_str()))
            .collect();
        let hold = |n: usize, at| NewHold {
            generation_id: &ids[n],
            key_hash: &hash,
            amount: 600,
            limit: 1_000,
            period_start: period_start(Some(reset), at),
            holder: "test",
            expires_at: app.clock.now() + Days::minutes(5),
        };
        assert!(store.take_hold(&hold(0, last_second)).await.unwrap());
        assert!(
            !store.take_hold(&hold(1, last_second)).await.unwrap(),
            "{reset:?}: 1,200 of a 1,000 limit in one period"
        );
        let next_period = last_second + Days::seconds(1);
        assert!(
            store.take_hold(&hold(2, next_period)).await.unwrap(),
            "{reset:?}: a new period, a new limit"
        );
        assert!(!store.take_hold(&hold(3, next_period)).await.unwrap());
        let dashboard = Dashboard::open(&app.database_url).await;
        let spent = dashboard
            .number(&format!(
                "SELECT period_spent FROM key_credits WHERE key_hash = '{hash}'"
            ))
            .await;
        dashboard.close().await;
        assert_eq!(spent, 600, "{reset:?}: only this period's hold counts");
    }
    app.stop().await;
}

async fn an_expired_hold_is_refunded_once_and_its_late_generation_charged_once(backend: Backend) {
    // A store without a gateway, whose upkeep would race the test to the expired hold.
    let url = fresh_database_url(backend).await;
    let store = Store::connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    let (_, hash) = create_key(&url, 5_000).await;
    let hold = NewHold {
        generation_id: "gen-lost",
        key_hash: &hash,
        amount: 700,
        limit: 5_000,
        period_start: 0,
        holder: "a-gateway-that-died",
        expires_at: Utc::now() - Days::seconds(1),
    };
    assert!(store.take_hold(&hold).await.unwrap());
    assert_eq!(books(&url, &hash).await.held, 700);

    assert_eq!(store.release_expired_holds(Utc::now()).await.unwrap(), 1);
    assert_eq!(
        store.release_expired_holds(Utc::now()).await.unwrap(),
        0,
        "a hold is released once"
    );
    let released = books(&url, &hash).await;
    assert_eq!((released.held, released.balance), (0, 5_000));

    // The generation turns up after all (its gateway was only cut off): charged once, in full.
    let row = GenerationRow {
        id: "gen-lost".to_owned(),
        key_hash: hash.clone(),
        model: "switchyard/echo".to_owned(),
        provider: Some("mock".to_owned()),
        upstream_model: Some("echo".to_owned()),
        app_referer: None,
        app_title: None,
        created_at: Utc::now(),
        latency_ms: 5,
        ttft_ms: Some(1),
        prompt_tokens: 10,
        completion_tokens: 10,
        cached_tokens: 0,
        cache_write_tokens: 0,
        reasoning_tokens: 0,
        cost: 30,
        status: 200,
        finish_reason: Some("stop".to_owned()),
        streamed: false,
        cancelled: false,
        attempts: "[]".to_owned(),
        error: None,
        content: None,
        held: true,
    };
    store
        .settle_generations(vec![row.clone()].into())
        .await
        .unwrap();
    store.settle_generations(vec![row].into()).await.unwrap();
    let books = books(&url, &hash).await;
    assert_eq!(books.usage, 30);
    assert_reconciled(&books);
    assert_eq!(generations_charged_wrongly(&url).await, 0);
    drop(store);
    drop_database(&url).await;
}

async fn keys_without_a_limit_are_charged_without_holding(backend: Backend) {
    let app = spawn_app(backend).await;
    let response = app.post_chat(&echo(100)).await;
    assert_eq!(response.status(), 200);
    app.flush().await;
    let books = books(&app.database_url, &app.key_hash).await;
    assert_eq!(books.usage, 9);
    assert_eq!(
        books.balance, -9,
        "no grants: the balance is minus the spend"
    );
    assert_reconciled(&books);
    let dashboard = Dashboard::open(&app.database_url).await;
    let kinds = dashboard
        .number(&format!(
            "SELECT COUNT(*) FROM ledger WHERE key_hash = '{}'",
            app.key_hash
        ))
        .await;
    dashboard.close().await;
    assert_eq!(kinds, 1, "one charge, no hold");
    app.stop().await;
}

/// Every generation's ledger movements add up to minus its cost, and a hold with no generation
/// (its gateway died) to nothing: the count of those that do not.
async fn generations_charged_wrongly(url: &str) -> i64 {
    let dashboard = Dashboard::open(url).await;
    let wrong = dashboard
        .number(
            "SELECT COUNT(*) FROM (SELECT generation_id, SUM(amount) AS moved FROM ledger \
             WHERE generation_id IS NOT NULL GROUP BY generation_id) m \
             LEFT JOIN generations g ON g.id = m.generation_id \
             WHERE m.moved <> -COALESCE(g.cost, 0)",
        )
        .await;
    dashboard.close().await;
    wrong
}

async fn create_key(url: &str, micros: i64) -> (String, String) {
    let store = Store::connect(url).await.unwrap();
    let created = Keys::new(store, WallClock::system())
        .create("shared", Some(MicroUsd(micros)), None, None)
        .await
        .unwrap();
    (created.key, created.row.hash)
}

async fn post(client: &reqwest::Client, base: &str, key: &str, body: &Value) -> u16 {
    client
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn two_gateway_processes_sharing_a_database_never_overspend_a_key(backend: Backend) {
    let url = fresh_database_url(backend).await;
    let first = GatewayProcess::start(&url, ECHO_TABLES).await;
    let second = GatewayProcess::start(&url, ECHO_TABLES).await;
    let limit = 1_000;
    let (key, hash) = create_key(&url, limit).await;
    let client = reqwest::Client::new();
    let body = echo(100);
    let statuses = join_all((0..200).map(|i| {
        let base = if i % 2 == 0 {
            &first.base
        } else {
            &second.base
        };
        post(&client, base, &key, &body)
    }))
    .await;
    assert!(
        statuses
            .iter()
            .all(|&status| status == 200 || status == 402),
        "{statuses:?}"
    );
    let served = statuses.iter().filter(|&&status| status == 200).count() as i64;
    assert!(served >= 4, "{statuses:?}");
    first.stop().await;
    second.stop().await;

    let books = books(&url, &hash).await;
    assert_reconciled(&books);
    assert_eq!(books.usage, served * 9);
    assert!(books.usage <= limit, "{books:?}");
    assert_eq!(generations_charged_wrongly(&url).await, 0);
    drop_database(&url).await;
}

async fn holds_of_a_killed_gateway_are_refunded_after_it_restarts(backend: Backend) {
    let upstream = MockUpstream::start(Behaviour::Hang).await;
    let url = fresh_database_url(backend).await;
    let tables = format!(
        "[credits]\nhold_lease = \"1s\"\n{}",
        upstream_tables(&upstream, "acme", "acme/chat")
    );
    let gateway = GatewayProcess::start(&url, &tables).await;
    let (key, hash) = create_key(&url, 10_000_000).await;
    let body = json!({
        "model": "acme/chat",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "never answered"}],
    });
    let client = reqwest::Client::new();
    let in_flight: Vec<_> = (0..5)
        .map(|_| {
            let (client, base, key, body) = (
                client.clone(),
                gateway.base.clone(),
                key.clone(),
                body.clone(),
            );
            tokio::spawn(async move { post(&client, &base, &key, &body).await })
        })
        .collect();
    let held = wait_for(&url, &hash, |books| books.holds == 5).await;
    assert!(held.held > 0 && held.balance < 10_000_000, "{held:?}");
    gateway.kill_hard();
    for request in in_flight {
        // Each request's connection died with the gateway, which fails (panics) its task.
        assert!(request.await.is_err());
    }
    let still_held = books(&url, &hash).await;
    assert_eq!(
        still_held.holds, 5,
        "a killed gateway releases nothing itself"
    );

    let restarted = GatewayProcess::start(&url, &tables).await;
    let released = wait_for(&url, &hash, |books| books.holds == 0).await;
    assert_reconciled(&released);
    assert_eq!(
        released.balance, 10_000_000,
        "every hold was refunded whole"
    );
    assert_eq!(generations_charged_wrongly(&url).await, 0);

    // The restarted gateway serves and charges as usual.
    upstream.set(Behaviour::Reply { text: "back again" });
    assert_eq!(post(&client, &restarted.base, &key, &body).await, 200);
    restarted.stop().await;
    let settled = books(&url, &hash).await;
    assert_reconciled(&settled);
    assert!(settled.usage > 0);
    assert_eq!(generations_charged_wrongly(&url).await, 0);
    drop_database(&url).await;
}

/// Polls the books until `done` holds, for at most ten seconds (leases and sweeps are timed).
async fn wait_for(url: &str, key_hash: &str, done: impl Fn(&Books) -> bool) -> Books {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let books = books(url, key_hash).await;
        if done(&books) {
            return books;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "gave up waiting: {books:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

async fn prompts_and_answers_are_kept_only_when_prompt_logging_is_on(backend: Backend) {
    let logging = spawn_app_with(
        backend,
        Extra {
            database: "log_prompts = true",
            ..Extra::default()
        },
    )
    .await;
    let quiet = spawn_app(backend).await;
    for app in [&logging, &quiet] {
        assert_eq!(app.post_chat(&echo(100)).await.status(), 200);
        let stream = json!({
            "model": "switchyard/echo",
            "stream": true,
            "messages": [{"role": "user", "content": "stream these words"}],
        });
        let response = app.post_chat(&stream).await;
        assert_eq!(response.status(), 200);
        response.text().await.unwrap();
        app.flush().await;
    }

    let dashboard = Dashboard::open(&logging.database_url).await;
    let kept = dashboard
        .number("SELECT COUNT(*) FROM generation_contents")
        .await;
    let answers = dashboard
        .number(
            "SELECT COUNT(*) FROM generation_contents WHERE completion IN \
             ('hello there again', 'stream these words') \
             AND prompt LIKE '[{\"role\":\"user\"%'",
        )
        .await;
    dashboard.close().await;
    assert_eq!((kept, answers), (2, 2), "both answers, streamed or not");

    let dashboard = Dashboard::open(&quiet.database_url).await;
    let kept = dashboard
        .number("SELECT COUNT(*) FROM generation_contents")
        .await;
    dashboard.close().await;
    assert_eq!(kept, 0, "nothing is kept by default");
    logging.stop().await;
    quiet.stop().await;
}
