//! What bounds an answer: a client that stops reading a stream, the provider's request timeout
//! while nobody reads, and the size caps on an upstream's answer and on one stream event.

use std::time::Duration;

use serde_json::{Value, json};
use switchyard::providers::upstream::{MAX_BODY, MAX_EVENT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;

use crate::db::Backend;
use crate::helpers::{TestApp, parse_sse, spawn_app_with_tables, upstream_tables};
use crate::on_both_backends;
use crate::upstream::{Behaviour, MockUpstream};

on_both_backends!(
    a_client_that_stops_reading_has_its_upstream_closed_after_the_idle_timeout_and_is_cancelled,
    a_client_that_stops_reading_is_cut_at_the_request_timeout_when_that_comes_first,
);

/// What an oversized upstream sends: far past both caps.
const HUGE: usize = 300 << 20;

/// Slack over a cap for what the sockets and buffers between the upstream and the gateway hold
/// when the gateway stops reading.
const IN_TRANSIT: u64 = 32 << 20;

/// `acme/chat` at `upstream`, with these two timeouts of the provider's.
async fn app_with(
    backend: Backend,
    upstream: &MockUpstream,
    idle_timeout: &str,
    request_timeout: &str,
) -> TestApp {
    // The helper's tables with their timeouts replaced (2 s idle, 5 s for the request).
    let tables = upstream_tables(upstream, "acme", "acme/chat")
        .replace(
            r#"idle_timeout = "2s""#,
            &format!("idle_timeout = {idle_timeout:?}"),
        )
        .replace(
            r#"request_timeout = "5s""#,
            &format!("request_timeout = {request_timeout:?}"),
        );
    spawn_app_with_tables(backend, tables).await
}

fn chat_request(stream: bool) -> Value {
    json!({"model": "acme/chat", "stream": stream, "messages": [{"role": "user", "content": "say hello"}]})
}

/// Sends a streaming request from a socket with a small receive buffer and reads the response
/// head, then reads no more. Returns the open socket and the generation id.
async fn stop_reading_after_the_head(app: &TestApp) -> (TcpStream, String) {
    let address = app.base.trim_start_matches("http://").parse().unwrap();
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(address).await.unwrap();
    let body = chat_request(true).to_string();
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: {address}\r\nauthorization: Bearer {key}\r\n\
         content-type: application/json\r\ncontent-length: {length}\r\n\r\n{body}",
        key = app.key,
        length = body.len(),
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut buffer = [0; 512];
    tokio::time::timeout(Duration::from_secs(10), async {
        while !head.windows(4).any(|window| window == b"\r\n\r\n") {
            let read = stream.read(&mut buffer).await.unwrap();
            assert!(read > 0, "the gateway closed the connection");
            head.extend_from_slice(&buffer[..read]);
        }
    })
    .await
    .expect("the response head arrives");
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let id = head
        .lines()
        .find_map(|line| line.strip_prefix("x-generation-id: "))
        .expect("a generation id")
        .trim()
        .to_owned();
    (stream, id)
}

/// The generation's row, once it has been written.
async fn settled_row(app: &TestApp, id: &str) -> switchyard::store::GenerationRow {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            app.flush().await;
            if let Some(row) = app.state.store.generation(id, &app.key_hash).await.unwrap() {
                break row;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the generation is recorded")
}

async fn a_client_that_stops_reading_has_its_upstream_closed_after_the_idle_timeout_and_is_cancelled(
    backend: Backend,
) {
    let upstream = MockUpstream::start(Behaviour::Flood).await;
    let app = app_with(backend, &upstream, "1s", "60s").await;
    let (_unread, id) = stop_reading_after_the_head(&app).await;
    let stopped_reading = Instant::now();

    upstream.stream_dropped().await;
    let held = stopped_reading.elapsed();
    assert!(
        held >= Duration::from_secs(1),
        "the client had the idle timeout to read on; cut after {held:?}"
    );
    assert!(held < Duration::from_secs(6), "closed only after {held:?}");

    let row = settled_row(&app, &id).await;
    assert!(row.cancelled, "{row:?}");
    assert_eq!(row.status, 499);
    assert!(
        row.completion_tokens >= 1,
        "the deltas it was sent are billed"
    );
}

async fn a_client_that_stops_reading_is_cut_at_the_request_timeout_when_that_comes_first(
    backend: Backend,
) {
    let upstream = MockUpstream::start(Behaviour::Flood).await;
    let app = app_with(backend, &upstream, "60s", "2s").await;
    let (_unread, id) = stop_reading_after_the_head(&app).await;

    upstream.stream_dropped().await;
    assert!(settled_row(&app, &id).await.cancelled);
}

/// Peak resident memory of this process (`VmHWM`), in MiB.
fn peak_rss_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|line| line.starts_with("VmHWM:"))
        .unwrap();
    let kib: u64 = line
        .trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    kib >> 10
}

/// The database plays no part in what these check, and each moves hundreds of MiB: SQLite only.
async fn oversized_app(declared: bool, status: u16) -> (MockUpstream, TestApp) {
    let upstream = MockUpstream::start(Behaviour::Oversized {
        bytes: HUGE,
        declared,
        status,
    })
    .await;
    let app = app_with(Backend::Sqlite, &upstream, "2s", "60s").await;
    (upstream, app)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_over_the_body_cap_is_a_502_and_is_read_no_further() {
    let (upstream, app) = oversized_app(false, 200).await;
    let before = peak_rss_mib();
    let response = app.post_chat(&chat_request(false)).await;
    assert_eq!(response.status(), 502);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], 502);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("larger than 64 MiB"),
        "{body}"
    );
    let sent = upstream.bytes_sent();
    let peak = peak_rss_mib();
    println!("sent {} MiB; peak RSS {before} → {peak} MiB", sent >> 20);
    assert!(sent < MAX_BODY as u64 + IN_TRANSIT, "read {sent} bytes");
    assert!(
        peak < before + 2 * (MAX_BODY as u64 >> 20),
        "peak RSS {before} → {peak} MiB"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_declaring_a_length_over_the_body_cap_is_refused_unread() {
    let (upstream, app) = oversized_app(true, 200).await;
    let response = app.post_chat(&chat_request(false)).await;
    assert_eq!(response.status(), 502);
    let sent = upstream.bytes_sent();
    assert!(sent < IN_TRANSIT, "read {sent} bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_body_is_read_no_further_than_a_mebibyte() {
    let (upstream, app) = oversized_app(false, 500).await;
    let response = app.post_chat(&chat_request(false)).await;
    assert_eq!(response.status(), 502);
    let sent = upstream.bytes_sent();
    assert!(sent < (1 << 20) + IN_TRANSIT, "read {sent} bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_event_over_the_cap_ends_the_stream_with_an_error_chunk() {
    let (upstream, app) = oversized_app(false, 200).await;
    let before = peak_rss_mib();
    let response = app.post_chat(&chat_request(true)).await;
    assert_eq!(response.status(), 200, "the role chunk committed the head");
    let id = response.headers()["x-generation-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let events = parse_sse(&response.text().await.unwrap());
    let sent = upstream.bytes_sent();
    let peak = peak_rss_mib();
    println!("sent {} MiB; peak RSS {before} → {peak} MiB", sent >> 20);

    assert_eq!(events[0]["choices"][0]["delta"]["role"], "assistant");
    let error = &events[1];
    assert_eq!(error["error"]["code"], 502, "{error}");
    assert_eq!(error["choices"][0]["finish_reason"], "error");
    assert!(events[2]["usage"].is_object());
    assert_eq!(events[3], "[DONE]");
    assert_eq!(events.len(), 4);
    assert!(sent < MAX_EVENT as u64 + IN_TRANSIT, "read {sent} bytes");
    assert!(
        peak < before + 4 * (MAX_EVENT as u64 >> 20),
        "peak RSS {before} → {peak} MiB"
    );
    assert_eq!(app.generation_row(&id).await.status, 502);
}
