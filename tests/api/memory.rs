//! What one request can make the gateway allocate: bodies that would balloon when parsed are
//! refused before they are, and big ones are parsed off the serving thread. Measured as the
//! process's peak resident memory (`VmHWM`), in a gateway process of its own.

use futures_util::future::join_all;
use switchyard::accounts::Keys;
use switchyard::clock::WallClock;
use switchyard::store::Store;

use crate::db::{Backend, fresh_database_url};
use crate::gateway_process::GatewayProcess;
use crate::helpers::ECHO_TABLES;

const MIB: usize = 1024 * 1024;

/// `{"model": …, "messages": […], "junk": [0,0,…]}`: 2 bytes a value, about 30 MiB.
fn zeros_body() -> Vec<u8> {
    let mut body =
        br#"{"model":"switchyard/echo","messages":[{"role":"user","content":"hi"}],"junk":["#
            .to_vec();
    body.extend(b"0,".repeat(15 * MIB));
    body.extend(b"0]}");
    body
}

/// One 30 MiB string in an unknown field: one value, passed through.
fn string_body() -> Vec<u8> {
    let mut body =
        br#"{"model":"switchyard/echo","messages":[{"role":"user","content":"hi"}],"note":""#
            .to_vec();
    body.extend(b"x".repeat(30 * MIB));
    body.extend(br#""}"#);
    body
}

async fn post(client: &reqwest::Client, base: &str, key: &str, body: Vec<u8>) -> u16 {
    client
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(key)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_mib_bodies_stay_within_a_small_multiple_of_their_size() {
    let url = fresh_database_url(Backend::Sqlite).await;
    let store = Store::connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    let key = Keys::new(store, WallClock::system())
        .create("memory", None, None, None)
        .await
        .unwrap()
        .key;
    let gateway = GatewayProcess::start(&url, ECHO_TABLES).await;
    let client = reqwest::Client::new();

    assert_eq!(post(&client, &gateway.base, &key, zeros_body()).await, 413);
    let one = gateway.peak_rss_mib();
    assert!(one < 300, "one 30 MiB body of zeros peaked at {one} MiB");

    let four = (0..4).map(|_| post(&client, &gateway.base, &key, zeros_body()));
    assert_eq!(join_all(four).await, [413; 4]);
    let four = gateway.peak_rss_mib();
    assert!(four < 600, "four at once peaked at {four} MiB");

    assert_eq!(post(&client, &gateway.base, &key, string_body()).await, 200);
    let passed = gateway.peak_rss_mib();
    assert!(
        passed < 300,
        "a 30 MiB string passed through peaked at {passed} MiB"
    );
    eprintln!(
        "peak RSS: {one} MiB after one body of zeros, {four} after four, {passed} after a string"
    );
    gateway.stop().await;
}
