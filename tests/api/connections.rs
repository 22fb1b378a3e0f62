//! The listener's own limits, probed with raw sockets as a careless or hostile client would:
//! connections past `max_connections`, heads that never finish, idle keep-alive connections,
//! bodies that trickle in, and requests past `max_inflight`.

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::db::Backend;
use crate::helpers::{Extra, TestApp, spawn_app_with, upstream_tables};
use crate::upstream::{Behaviour, MockUpstream};

/// Long enough for a served request on a loaded CI machine, short enough to keep the test quick.
const PATIENCE: Duration = Duration::from_secs(2);

async fn spawn(server: &str) -> TestApp {
    spawn_app_with(
        Backend::Sqlite,
        Extra {
            server,
            ..Extra::default()
        },
    )
    .await
}

async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(app.base.trim_start_matches("http://"))
        .await
        .unwrap()
}

const LIVE: &[u8] = b"GET /health/live HTTP/1.1\r\nhost: x\r\n\r\n";

/// Reads one response whose body has a `content-length`; returns its head and body.
async fn read_response(stream: &mut TcpStream) -> (String, String) {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buffer.windows(4).position(|window| window == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buffer[..end]).to_lowercase();
            let length: usize = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length: "))
                .map_or(0, |value| value.trim().parse().unwrap());
            if buffer.len() >= end + 4 + length {
                let body = String::from_utf8_lossy(&buffer[end + 4..end + 4 + length]).into();
                return (head, body);
            }
        }
        let read = stream.read(&mut chunk).await.unwrap();
        assert!(read > 0, "the connection closed mid-response");
        buffer.extend_from_slice(&chunk[..read]);
    }
}

/// How long until the server closes `stream` (a read of 0 or an error), or `None` if it is
/// still open after `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut chunk = [0u8; 1024];
    let closed = tokio::time::timeout(within, async {
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    closed.is_ok().then(|| started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_connections_a_new_connection_waits_until_one_closes() {
    let app = spawn("max_connections = 2").await;
    let live = format!("{}/health/live", app.base);
    // Two open connections take both slots; once the acceptor has taken them, a third waits.
    let first = connect(&app).await;
    let mut second = connect(&app).await;
    second.write_all(LIVE).await.unwrap();
    read_response(&mut second).await;
    let waiting = reqwest::Client::new()
        .get(&live)
        .timeout(PATIENCE)
        .send()
        .await;
    assert!(waiting.is_err(), "served past the cap: {waiting:?}");

    drop(first);
    let served = reqwest::Client::new()
        .get(&live)
        .timeout(PATIENCE * 5)
        .send()
        .await;
    assert_eq!(
        served.unwrap().status(),
        200,
        "a slot came back when a connection closed"
    );
    drop(second);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_never_finishes_its_head_is_closed_after_header_read_timeout() {
    let app = spawn("header_read_timeout = \"400ms\"\nkeepalive_timeout = \"30s\"").await;
    // Silent from the start.
    let mut silent = connect(&app).await;
    let took = closed_within(&mut silent, PATIENCE * 5).await;
    assert!(took.is_some(), "a silent connection stayed open");

    // A slowloris: a header line every 100 ms, never the blank line that ends the head.
    let mut slow = connect(&app).await;
    slow.write_all(b"GET /health/live HTTP/1.1\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let closed = loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if slow.write_all(b"x-slow: 1\r\n").await.is_err() {
            break true;
        }
        if started.elapsed() > PATIENCE * 5 {
            break false;
        }
    };
    let closed = closed || closed_within(&mut slow, PATIENCE).await.is_some();
    assert!(closed, "a slowloris stayed open");

    // The same on a keep-alive connection's second request.
    let mut again = connect(&app).await;
    again.write_all(LIVE).await.unwrap();
    assert!(
        read_response(&mut again)
            .await
            .0
            .starts_with("http/1.1 200")
    );
    again
        .write_all(b"GET /health/live HTTP/1.1\r\n")
        .await
        .unwrap();
    assert!(closed_within(&mut again, PATIENCE * 5).await.is_some());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_outlives_the_head_timeout_until_keepalive_timeout() {
    let app = spawn("header_read_timeout = \"300ms\"\nkeepalive_timeout = \"1500ms\"").await;
    let mut stream = connect(&app).await;
    stream.write_all(LIVE).await.unwrap();
    read_response(&mut stream).await;
    // Idle for longer than the head timeout: still good for the next request.
    tokio::time::sleep(Duration::from_millis(900)).await;
    stream.write_all(LIVE).await.unwrap();
    assert!(
        read_response(&mut stream)
            .await
            .0
            .starts_with("http/1.1 200")
    );
    let idle = Instant::now();
    assert!(
        closed_within(&mut stream, PATIENCE * 5).await.is_some(),
        "an idle connection stayed open"
    );
    let lived = idle.elapsed();
    assert!(
        lived >= Duration::from_millis(1_000),
        "closed after {lived:?}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_trickles_in_is_a_408_in_the_error_shape() {
    let app = spawn("body_read_timeout = \"300ms\"").await;
    let mut stream = connect(&app).await;
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\n\
         content-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"model\":",
        app.key
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let (head, body) = tokio::time::timeout(PATIENCE * 5, read_response(&mut stream))
        .await
        .expect("the gateway answered");
    assert!(head.starts_with("http/1.1 408"), "{head}");
    let error: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(error["error"]["code"], 408);
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("body_read_timeout")
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_inflight_requests_are_503_with_retry_after_and_streams_count_while_they_run() {
    let upstream = MockUpstream::start(Behaviour::Stream {
        deltas: vec!["one", "two"],
        gates: vec![2],
    })
    .await;
    let app = spawn_app_with(
        Backend::Sqlite,
        Extra {
            server: "max_inflight = 1",
            tables: upstream_tables(&upstream, "acme", "acme/chat"),
            ..Extra::default()
        },
    )
    .await;
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let body = json!({"model": "acme/chat", "stream": true,
        "messages": [{"role": "user", "content": "hi"}]});
    // Each on a connection of its own; each stream holds its slot until it ends, which the
    // upstream's gate delays until every request has been answered or refused.
    let requests = (0..threads * 3).map(|_| {
        let body = body.clone();
        let app = &app;
        async move {
            reqwest::Client::new()
                .post(format!("{}/v1/chat/completions", app.base))
                .bearer_auth(&app.key)
                .json(&body)
                .send()
                .await
                .unwrap()
        }
    });
    let responses = join_all(requests).await;
    let refused: Vec<_> = responses.iter().filter(|r| r.status() == 503).collect();
    let admitted = responses.iter().filter(|r| r.status() == 200).count();
    assert_eq!(admitted + refused.len(), threads * 3);
    assert!(admitted >= 1 && admitted <= threads, "{admitted} admitted");
    for response in &refused {
        assert_eq!(response.headers()["retry-after"], "1");
    }
    upstream.release();
    for response in responses {
        let status = response.status();
        let text = response.text().await.unwrap();
        if status == 503 {
            let error: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(error["error"]["code"], 503);
            assert!(
                error["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("max_inflight")
            );
        } else {
            assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
        }
    }
    // The slots came back.
    let after = app
        .post_chat(&json!({"model": "switchyard/echo",
        "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    assert_eq!(after.status(), 200);
    app.stop().await;
}

/// The median of `count` sequential chat requests' latencies.
async fn median_chat_latency(app: &TestApp, count: usize) -> Duration {
    let body = json!({"model": "switchyard/echo", "messages": [{"role": "user", "content": "hi"}]});
    let mut latencies = Vec::with_capacity(count);
    for _ in 0..count {
        let started = Instant::now();
        assert_eq!(app.post_chat(&body).await.status(), 200);
        latencies.push(started.elapsed());
    }
    latencies.sort();
    latencies[count / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_keep_their_latency_beside_2000_idle_and_500_slowloris_connections() {
    let app = spawn("").await;
    median_chat_latency(&app, 20).await;
    let unloaded = median_chat_latency(&app, 100).await;

    let mut idle = Vec::with_capacity(2_000);
    for _ in 0..2_000 {
        idle.push(connect(&app).await);
    }
    let mut slow = Vec::with_capacity(500);
    for _ in 0..500 {
        let mut stream = connect(&app).await;
        stream
            .write_all(b"POST /v1/chat/completions HTTP/1.1\r\nx-slow: ")
            .await
            .unwrap();
        slow.push(stream);
    }
    let loaded = median_chat_latency(&app, 100).await;
    assert!(
        loaded <= unloaded + Duration::from_millis(5),
        "median {loaded:?} beside 2,500 idle and slow connections, {unloaded:?} without"
    );
    drop((idle, slow));
    app.stop().await;
}
