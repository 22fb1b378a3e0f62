//! Streaming: no buffering, keep-alives before the first token, the usage chunk and `[DONE]`,
//! failures before and after the first byte, and clients that hang up.

use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::db::Backend;
use crate::helpers::{
    Extra, TestApp, parse_sse, spawn_app, spawn_app_with, sse_events, upstream_tables,
};
use crate::on_both_backends;
use crate::upstream::{Behaviour, MockUpstream};

on_both_backends!(
    a_stream_ends_with_a_usage_chunk_and_done,
    each_upstream_event_is_forwarded_as_soon_as_it_arrives,
    keep_alive_comments_flow_while_the_first_token_is_awaited,
    an_upstream_that_dies_mid_stream_ends_with_an_error_chunk_and_done,
    an_in_stream_upstream_error_becomes_an_error_chunk,
    a_failure_before_the_first_byte_is_a_real_http_error,
    a_client_that_hangs_up_cancels_the_upstream_and_is_billed_for_what_it_got,
    shutdown_finishes_in_flight_streams_and_writes_their_rows,
);

fn stream_request(model: &str) -> Value {
    json!({"model": model, "stream": true, "messages": [{"role": "user", "content": "say hello"}]})
}

async fn app_with(backend: Backend, upstream: &MockUpstream, server: &'static str) -> TestApp {
    let tables = upstream_tables(upstream, "acme", "acme/chat");
    spawn_app_with(
        backend,
        Extra {
            server,
            tables,
            ..Extra::default()
        },
    )
    .await
}

/// Reads the body until `needle` has arrived, returning everything read so far.
async fn read_until(
    body: &mut (impl futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin),
    seen: &mut String,
    needle: &str,
) {
    let wait = async {
        while !seen.contains(needle) {
            let chunk = body.next().await.expect("the stream ended early").unwrap();
            seen.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), wait)
        .await
        .unwrap_or_else(|_| panic!("{needle:?} never arrived; got {seen:?}"));
}

async fn a_stream_ends_with_a_usage_chunk_and_done(backend: Backend) {
    let app = spawn_app(backend).await;
    let response = app.post_chat(&stream_request("switchyard/echo")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert_eq!(response.headers()["x-accel-buffering"], "no");
    let id = response.headers()["x-generation-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let text = response.text().await.unwrap();
    assert!(
        text.contains(r#""cost":0.000006,"#),
        "cost is exact decimal text: {text}"
    );
    let events = parse_sse(&text);

    assert_eq!(events.last().unwrap(), "[DONE]");
    let usage = &events[events.len() - 2];
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["completion_tokens"], 2);
    let content: String = events[..events.len() - 2]
        .iter()
        .filter_map(|chunk| chunk["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, "say hello");
    assert_eq!(events[0]["choices"][0]["delta"]["role"], "assistant");
    for chunk in &events[..events.len() - 1] {
        assert_eq!(chunk["id"], id.as_str());
        assert_eq!(chunk["model"], "switchyard/echo");
        assert_eq!(chunk["object"], "chat.completion.chunk");
    }
    let row = app.generation_row(&id).await;
    assert!(row.streamed && !row.cancelled);
    assert_eq!((row.completion_tokens, row.cost, row.status), (2, 6, 200));
}

async fn each_upstream_event_is_forwarded_as_soon_as_it_arrives(backend: Backend) {
    let upstream = MockUpstream::start(Behaviour::Stream {
        deltas: vec!["Hel", "lo"],
        gates: vec![2],
    })
    .await;
    let app = app_with(backend, &upstream, "").await;
    let response = app.post_chat(&stream_request("acme/chat")).await;
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    let mut seen = String::new();
    // The upstream holds "lo" back until released: "Hel" can only arrive if nothing buffers.
    read_until(&mut body, &mut seen, "\"Hel\"").await;
    assert!(!seen.contains("\"lo\""));
    upstream.release();
    read_until(&mut body, &mut seen, "[DONE]").await;
    assert!(seen.contains("\"lo\""));
    assert_eq!(
        upstream.received()[0].body["stream_options"]["include_usage"],
        true
    );
}

async fn keep_alive_comments_flow_while_the_first_token_is_awaited(backend: Backend) {
    let upstream = MockUpstream::start(Behaviour::Stream {
        deltas: vec!["late"],
        gates: vec![0],
    })
    .await;
    let app = app_with(backend, &upstream, r#"sse_keepalive = "50ms""#).await;
    let response = app.post_chat(&stream_request("acme/chat")).await;
    assert_eq!(
        response.status(),
        200,
        "the head is committed once the keep-alive interval passes"
    );
    let mut body = response.bytes_stream();
    let mut seen = String::new();
    read_until(&mut body, &mut seen, ": keep-alive\n\n").await;
    upstream.release();
    read_until(&mut body, &mut seen, "[DONE]").await;
    assert!(seen.contains("\"late\""));
}

async fn an_upstream_that_dies_mid_stream_ends_with_an_error_chunk_and_done(backend: Backend) {
    let upstream = MockUpstream::start(Behaviour::DieMidStream {
        deltas: vec!["par", "tial"],
    })
    .await;
    let app = app_with(backend, &upstream, "").await;
    let response = app.post_chat(&stream_request("acme/chat")).await;
    assert_eq!(response.status(), 200);
    let id = response.headers()["x-generation-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let events = sse_events(response).await;
    assert_eq!(events.last().unwrap(), "[DONE]");
    let error = events
        .iter()
        .find(|event| event.get("error").is_some())
        .expect("an error chunk");
    assert_eq!(error["choices"][0]["finish_reason"], "error");
    assert_eq!(error["error"]["code"], 502);
    let row = app.generation_row(&id).await;
    assert_eq!(row.status, 502);
    assert_eq!(row.completion_tokens, 2, "the two deltas sent are billed");
}

async fn an_in_stream_upstream_error_becomes_an_error_chunk(backend: Backend) {
    let upstream = MockUpstream::start(Behaviour::ErrorMidStream { deltas: vec!["a"] }).await;
    let app = app_with(backend, &upstream, "").await;
    let events = sse_events(app.post_chat(&stream_request("acme/chat")).await).await;
    assert_eq!(events.last().unwrap(), "[DONE]");
    let error = events
        .iter()
        .find(|event| event.get("error").is_some())
        .expect("an error chunk");
    assert_eq!(error["choices"][0]["finish_reason"], "error");
    assert!(
        !error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("processing your request")
    );
}

async fn a_failure_before_the_first_byte_is_a_real_http_error(backend: Backend) {
    let upstream = MockUpstream::start(Behaviour::Fail {
        status: 500,
        message: "internal details of upstream",
        retry_after: None,
    })
    .await;
    let app = app_with(backend, &upstream, "").await;
    let response = app.post_chat(&stream_request("acme/chat")).await;
    assert_eq!(response.status(), 502);
    assert!(response.headers().contains_key("x-generation-id"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], 502);
    assert!(!body.to_string().contains("internal details"));
}

async fn a_client_that_hangs_up_cancels_the_upstream_and_is_billed_for_what_it_got(
    backend: Backend,
) {
    let upstream = MockUpstream::start(Behaviour::Endless).await;
    let app = app_with(backend, &upstream, "").await;
    let response = app.post_chat(&stream_request("acme/chat")).await;
    let id = response.headers()["x-generation-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let mut body = response.bytes_stream();
    let mut seen = String::new();
    read_until(&mut body, &mut seen, "\"first\"").await;
    drop(body);
    upstream.release();
    upstream.stream_dropped().await;

    // The row is settled when the gateway drops the stream, which the upstream just saw.
    let row = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            app.flush().await;
            if let Some(row) = app
                .state
                .store
                .generation(&id, &app.key_hash)
                .await
                .unwrap()
            {
                break row;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the cancelled generation is recorded");
    assert!(row.cancelled);
    assert!(
        row.completion_tokens >= 1,
        "the deltas that reached the client are billed"
    );
    assert!(row.cost > 0);
}

async fn shutdown_finishes_in_flight_streams_and_writes_their_rows(backend: Backend) {
    let upstream = MockUpstream::start(Behaviour::Stream {
        deltas: vec!["a", "b"],
        gates: vec![2],
    })
    .await;
    let app = app_with(backend, &upstream, "").await;
    let response = app.post_chat(&stream_request("acme/chat")).await;
    let id = response.headers()["x-generation-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let mut body = response.bytes_stream();
    let mut seen = String::new();
    read_until(&mut body, &mut seen, "\"a\"").await;

    let store = app.state.store.clone();
    let key_hash = app.key_hash.clone();
    let stopping = tokio::spawn(app.stop());
    upstream.release();
    read_until(&mut body, &mut seen, "[DONE]").await;
    drop(body);
    stopping.await.unwrap();
    let row = store
        .generation(&id, &key_hash)
        .await
        .unwrap()
        .expect("written before exit");
    assert_eq!(row.completion_tokens, 2);
}
