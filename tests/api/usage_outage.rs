//! Usage rows outlive a database that stops taking writes for a while: nothing answered 200 is
//! lost.

use std::time::Duration;

use serde_json::json;

use crate::dashboard::Dashboard;
use crate::db::Backend;
use crate::helpers::spawn_app;

/// Longer than the writer's old give-up point (five tries, about 20 s with SQLite's busy wait).
const LOCKED_FOR: Duration = Duration::from_secs(45);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_write_lock_of_45_seconds_loses_no_usage_row() {
    let app = spawn_app(Backend::Sqlite).await;
    let path = app.database_url.trim_start_matches("sqlite://").to_owned();
    let (locked, is_locked) = std::sync::mpsc::channel();
    let locker = std::thread::spawn(move || {
        let connection = rusqlite::Connection::open(path).unwrap();
        connection.execute_batch("BEGIN EXCLUSIVE").unwrap();
        locked.send(()).unwrap();
        std::thread::sleep(LOCKED_FOR);
        connection.execute_batch("COMMIT").unwrap();
    });
    is_locked.recv().unwrap();
    let body = json!({"model": "switchyard/echo", "messages": [{"role": "user", "content": "hi"}]});
    for _ in 0..40 {
        assert_eq!(app.post_chat(&body).await.status(), 200);
    }
    tokio::task::spawn_blocking(move || locker.join().unwrap())
        .await
        .unwrap();
    app.flush().await;
    let dashboard = Dashboard::open(&app.database_url).await;
    let written = dashboard
        .number(&format!(
            "SELECT COUNT(*) FROM generations WHERE key_hash = '{}'",
            app.key_hash
        ))
        .await;
    dashboard.close().await;
    assert_eq!(written, 40, "every answered request is recorded");
    app.stop().await;
}
