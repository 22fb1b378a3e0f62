//! The listener's own limits, probed with raw sockets as a careless or hostile client would.

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::db::Backend;
use crate::helpers::{Extra, spawn_app_with};

/// Long enough for a served request on a loaded CI machine, short enough to keep the test quick.
const PATIENCE: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_connections_a_new_connection_waits_until_one_closes() {
    let app = spawn_app_with(
        Backend::Sqlite,
        Extra {
            server: "max_connections = 2",
            ..Extra::default()
        },
    )
    .await;
    let address = app.base.trim_start_matches("http://").to_owned();
    let live = format!("{}/health/live", app.base);
    // Two idle connections take both slots; once the acceptor has taken them, a third waits.
    let first = TcpStream::connect(&address).await.unwrap();
    let mut second = TcpStream::connect(&address).await.unwrap();
    second
        .write_all(b"GET /health/live HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
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
