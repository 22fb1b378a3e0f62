//! Fresh, empty databases for tests: a SQLite file or a new Postgres database per call, so tests
//! run in parallel without sharing state. Postgres being unreachable fails the test; it never skips.

use sqlx::{Connection, Executor, PgConnection};

/// The Postgres server tests create their databases on; `SWITCHYARD_TEST_POSTGRES_URL` overrides it.
const DEFAULT_POSTGRES_ADMIN_URL: &str = "postgres://root@127.0.0.1:5432/test";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The URL of a new, empty database (no migrations applied) that no other test uses.
pub async fn fresh_database_url(backend: Backend) -> String {
    match backend {
        Backend::Sqlite => {
            // Kept (not deleted on drop): the test opens it by URL after this returns.
            let (_, path) = tempfile::Builder::new()
                .prefix("switchyard-test-")
                .suffix(".db")
                .tempfile_in(env!("CARGO_TARGET_TMPDIR"))
                .expect("cannot create a temporary SQLite file")
                .keep()
                .expect("cannot keep the temporary SQLite file");
            format!("sqlite://{}", path.display())
        }
        Backend::Postgres => {
            let admin = postgres_admin_url();
            let name = format!("sy_test_{:016x}", rand::random::<u64>());
            admin_connection(&admin)
                .await
                .execute(format!("CREATE DATABASE {name}").as_str())
                .await
                .unwrap_or_else(|error| panic!("cannot create database {name}: {error}"));
            with_database(&admin, &name)
        }
    }
}

/// Deletes a database made by [`fresh_database_url`]. Close every pool on it first; Postgres
/// connections still open are terminated.
pub async fn drop_database(url: &str) {
    if let Some(path) = url.strip_prefix("sqlite://") {
        for suffix in ["", "-wal", "-shm"] {
            // Missing WAL or SHM files are normal.
            let _ = std::fs::remove_file(format!("{path}{suffix}"));
        }
        return;
    }
    let name = database_name(url);
    assert!(
        name.starts_with("sy_test_"),
        "refusing to drop {name:?}: not a test database"
    );
    admin_connection(&postgres_admin_url())
        .await
        .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
        .await
        .unwrap_or_else(|error| panic!("cannot drop database {name}: {error}"));
}

fn postgres_admin_url() -> String {
    std::env::var("SWITCHYARD_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| DEFAULT_POSTGRES_ADMIN_URL.into())
}

async fn admin_connection(admin: &str) -> PgConnection {
    PgConnection::connect(admin).await.unwrap_or_else(|error| {
        panic!(
            "Postgres at {admin} is unreachable ({error}); the store tests need it \
             (set SWITCHYARD_TEST_POSTGRES_URL to use another server)"
        )
    })
}

/// `admin` with its database (the last path segment) replaced by `name`, query string kept.
fn with_database(admin: &str, name: &str) -> String {
    let (base, query) = admin
        .split_once('?')
        .map_or((admin, None), |(b, q)| (b, Some(q)));
    let (server, _) = base
        .rsplit_once('/')
        .expect("a Postgres URL names a database");
    match query {
        Some(query) => format!("{server}/{name}?{query}"),
        None => format!("{server}/{name}"),
    }
}

fn database_name(url: &str) -> &str {
    let base = url.split('?').next().unwrap_or(url);
    base.rsplit('/').next().unwrap_or(base)
}
