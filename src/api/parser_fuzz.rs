//! Fuzzing the request parsers on stable Rust (cargo-fuzz needs a nightly toolchain, which
//! cannot be installed here): random bytes, mutated valid requests and generated JSON go through
//! the body decoder of every JSON endpoint. None may panic, every refusal is a 400 or 413, and
//! no input may make the parse allocate more than [`ALLOCATION_PER_BYTE`] times its size (plus
//! a little), counted by a test-only allocator.
//!
//! A short run is part of the test suite; `scripts/fuzz [SECONDS]` runs for as long as asked.

use std::time::{Duration, Instant};

use http::StatusCode;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Value, json};

use super::json::decode;
use super::keys::{KeyPatch, NewKeyRequest};
use crate::openai::ChatRequest;

/// What one parsed byte may cost at most: a JSON value of two bytes (`0,`) becomes a node of
/// about a hundred while unknown fields are kept as trees.
const ALLOCATION_PER_BYTE: usize = 128;
const ALLOCATION_SLACK: usize = 1 << 20;

/// The process's heap, counted. Its peak is the whole process's: nextest runs each test in a
/// process of its own, so there it is this test's alone; under `cargo test`, where other tests
/// run beside it in threads, the bound is not checked.
#[global_allocator]
static HEAP: peak_alloc::PeakAlloc = peak_alloc::PeakAlloc;

/// The most the heap grew above where it stood while `work` ran.
fn peak_growth(work: impl FnOnce()) -> usize {
    let start = HEAP.current_usage();
    HEAP.reset_peak_usage();
    work();
    HEAP.peak_usage().saturating_sub(start)
}

/// Parses `body` as every endpoint would, and checks what may be checked of the outcome.
fn parse_every_way(body: &[u8]) {
    let growth = peak_growth(|| {
        refused_or_used(decode::<ChatRequest>(body).map(|request| {
            // What the gateway reads of every request it admits.
            let _ = request.estimated_prompt_tokens();
            let _ = request.prompt_token_bound();
            let _ = request.model_candidates();
            let _ = request.sampling_parameters();
            let _ = request.choices();
            let _ = serde_json::to_vec(&request);
        }));
        refused_or_used(decode::<NewKeyRequest>(body).map(drop));
        refused_or_used(decode::<KeyPatch>(body).map(drop));
    });
    let bound = body.len() * ALLOCATION_PER_BYTE + ALLOCATION_SLACK;
    let alone = std::env::var_os("NEXTEST").is_some();
    assert!(
        !alone || growth <= bound,
        "parsing {} bytes allocated {growth} bytes, over {bound}",
        body.len()
    );
}

fn refused_or_used(outcome: Result<(), crate::error::ApiError>) {
    if let Err(error) = outcome {
        let status = error.status();
        assert!(
            status == StatusCode::BAD_REQUEST || status == StatusCode::PAYLOAD_TOO_LARGE,
            "{status}: {}",
            error.message()
        );
    }
}

/// Valid bodies of every endpoint, as seeds for mutation.
fn corpus() -> Vec<Vec<u8>> {
    let image = json!({"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}});
    [
        json!({"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "hi"}]}),
        json!({"model": "a/b", "models": ["c/d", "e/f"], "n": 3, "max_tokens": 9, "stream": true,
            "stream_options": {"include_usage": true}, "temperature": 0.2, "seed": 7,
            "provider": {"order": ["x"], "allow_fallbacks": false, "sort": "price"},
            "messages": [{"role": "system", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "what is this"}, image]}]}),
        json!({"model": "a/b", "tools": [{"type": "function", "function": {"name": "f",
            "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}],
            "tool_choice": "auto", "response_format": {"type": "json_object"},
            "reasoning": {"effort": "high"},
            "messages": [{"role": "assistant", "content": null, "tool_calls": [{"id": "c1",
                "type": "function", "function": {"name": "f", "arguments": "{\"q\":1}"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "42"}]}),
        json!({"name": "team", "limit": "12.5", "limit_reset": "monthly",
            "expires_at": "2027-01-01T00:00:00Z"}),
        json!({"disabled": true, "limit": null, "limit_reset": null, "name": "x"}),
    ]
    .iter()
    .map(|body| serde_json::to_vec(body).unwrap_or_default())
    .collect()
}

fn mutated() -> impl Strategy<Value = Vec<u8>> {
    let seeds = corpus();
    (
        0..seeds.len(),
        prop::collection::vec((any::<usize>(), 0u8..4, any::<u8>()), 1..12),
    )
        .prop_map(move |(seed, edits)| {
            let mut body = seeds[seed].clone();
            for (at, kind, byte) in edits {
                let at = at % (body.len() + 1);
                match kind {
                    0 => body.insert(at, byte),
                    1 if at < body.len() => {
                        body.remove(at);
                    }
                    2 if at < body.len() => body[at] = byte,
                    // A structural byte where it may open or close something.
                    _ => {
                        const STRUCTURAL: &[u8] = b"[]{}\",:0-";
                        body.insert(at, STRUCTURAL[usize::from(byte) % STRUCTURAL.len()]);
                    }
                }
            }
            body
        })
}

fn generated() -> impl Strategy<Value = Vec<u8>> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|x| serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number)),
        ".{0,40}".prop_map(Value::from),
    ];
    let known = prop::sample::select(vec![
        "model",
        "models",
        "messages",
        "role",
        "content",
        "type",
        "text",
        "image_url",
        "url",
        "n",
        "max_tokens",
        "stream",
        "tools",
        "provider",
        "order",
        "name",
        "limit",
        "x",
    ]);
    let value = leaf.prop_recursive(4, 64, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::vec((known.clone(), inner), 0..8).prop_map(|fields| {
                Value::Object(fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
            }),
        ]
    });
    value.prop_map(|value| serde_json::to_vec(&value).unwrap_or_default())
}

fn inputs() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..512),
        mutated(),
        generated(),
    ]
}

/// Feeds inputs until `runs` have been tried or `budget` has passed; returns how many were.
fn fuzz(runs: u64, budget: Duration) -> u64 {
    let mut runner = TestRunner::new(Config {
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = inputs();
    let deadline = Instant::now() + budget;
    let mut tried = 0;
    while tried < runs && Instant::now() < deadline {
        let input = strategy
            .new_tree(&mut runner)
            .map(|tree| tree.current())
            .unwrap_or_default();
        let outcome = std::panic::catch_unwind(|| parse_every_way(&input));
        assert!(
            outcome.is_ok(),
            "the input that failed: {:?}",
            String::from_utf8_lossy(&input)
        );
        tried += 1;
    }
    tried
}

#[test]
fn request_parsers_survive_a_short_fuzz() {
    assert!(fuzz(3_000, Duration::from_secs(60)) > 0);
}

/// `scripts/fuzz [SECONDS]`: `FUZZ_SECONDS` long.
#[test]
#[ignore = "a long fuzzing run; scripts/fuzz starts it"]
fn request_parsers_survive_a_long_fuzz() {
    let seconds = std::env::var("FUZZ_SECONDS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(300);
    let tried = fuzz(u64::MAX, Duration::from_secs(seconds));
    println!("request parsers: {tried} inputs in {seconds} s, no failure");
}
