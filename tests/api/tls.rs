//! TLS on both sides: the listener speaks HTTPS with `server.tls_cert`/`tls_key`, and the
//! database connection honours `sslmode`.

use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::db::{Backend, fresh_database_url};
use crate::helpers::{Extra, spawn_app_with};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_speaks_https_with_a_configured_certificate() {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.key_pair.serialize_pem()).unwrap();
    let server = format!(
        "tls_cert = {:?}\ntls_key = {:?}\nheader_read_timeout = \"500ms\"",
        cert.display().to_string(),
        key.display().to_string()
    );
    let app = spawn_app_with(
        Backend::Sqlite,
        Extra {
            server: &server,
            ..Extra::default()
        },
    )
    .await;
    let port = app.base.rsplit(':').next().unwrap();
    let trusting = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(certified.cert.pem().as_bytes()).unwrap(),
        )
        .build()
        .unwrap();
    let live = trusting
        .get(format!("https://localhost:{port}/health/live"))
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), 200);
    let models = trusting
        .get(format!("https://localhost:{port}/v1/models"))
        .send()
        .await
        .unwrap();
    assert_eq!(models.status(), 200);

    // Plain HTTP to the TLS port gets no answer, and a handshake that never comes is cut off
    // like a head that never comes.
    let plain = reqwest::Client::new()
        .get(format!("http://localhost:{port}/health/live"))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());
    let mut silent = TcpStream::connect(format!("127.0.0.1:{port}"))
        .await
        .unwrap();
    let mut byte = [0u8; 1];
    let closed = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut byte)).await;
    assert!(matches!(closed, Ok(Ok(0) | Err(_))), "{closed:?}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_is_reached_over_tls_when_sslmode_requires_it() {
    let url = fresh_database_url(Backend::Postgres).await;
    let separator = if url.contains('?') { '&' } else { '?' };
    let required = format!("{url}{separator}sslmode=require");
    let store = switchyard::store::Store::connect(&required).await.unwrap();
    store.ping().await.unwrap();
    // The local server's certificate is self-signed: verifying it must fail, not fall back.
    let verified = format!("{url}{separator}sslmode=verify-full");
    assert!(switchyard::store::Store::connect(&verified).await.is_err());
}
