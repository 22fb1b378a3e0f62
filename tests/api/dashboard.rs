//! The database as a dashboard sees it: plain SQL over the public tables and views, outside
//! the gateway's `Store`.

use chrono::NaiveDate;
use sqlx::{PgPool, SqlitePool};

pub enum Dashboard {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

macro_rules! on_dashboard {
    ($dashboard:expr, $pool:ident => $body:expr) => {
        match $dashboard {
            Dashboard::Sqlite($pool) => $body,
            Dashboard::Postgres($pool) => $body,
        }
    };
}

#[derive(Debug, PartialEq, sqlx::FromRow)]
pub struct UsageDay {
    pub day: NaiveDate,
    pub key_hash: String,
    pub model: String,
    pub provider: Option<String>,
    pub requests: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cached_tokens: i64,
    pub reasoning_tokens: i64,
    pub cost: i64,
}

impl Dashboard {
    pub async fn open(url: &str) -> Dashboard {
        if url.starts_with("sqlite:") {
            Dashboard::Sqlite(SqlitePool::connect(url).await.unwrap())
        } else {
            Dashboard::Postgres(PgPool::connect(url).await.unwrap())
        }
    }

    pub async fn count_generations(&self) -> i64 {
        let sql = "SELECT COUNT(*) FROM generations";
        on_dashboard!(self, pool => sqlx::query_scalar(sql).fetch_one(pool).await.unwrap())
    }

    pub async fn usage_daily(&self) -> Vec<UsageDay> {
        let sql = "SELECT day, key_hash, model, provider, requests, prompt_tokens, \
                   completion_tokens, cached_tokens, reasoning_tokens, cost FROM usage_daily \
                   ORDER BY day, key_hash, model, provider";
        on_dashboard!(self, pool => sqlx::query_as(sql).fetch_all(pool).await.unwrap())
    }

    /// A query that answers one integer, e.g. `SELECT SUM(cost) FROM generations`; `NULL` is 0.
    pub async fn number(&self, sql: &str) -> i64 {
        self.numbers(&[sql]).await[0]
    }

    /// Several such queries in one statement, so all answers come from one snapshot.
    pub async fn numbers(&self, queries: &[&str]) -> Vec<i64> {
        let columns: Vec<String> = queries
            .iter()
            .map(|sql| format!("CAST(COALESCE(({sql}), 0) AS BIGINT)"))
            .collect();
        let sql = format!("SELECT {}", columns.join(", "));
        on_dashboard!(self, pool => {
            let row = sqlx::query(&sql).fetch_one(pool).await.unwrap();
            (0..queries.len())
                .map(|index| sqlx::Row::try_get::<i64, _>(&row, index).unwrap())
                .collect()
        })
    }

    pub async fn execute(&self, sql: &str) {
        on_dashboard!(self, pool => drop(sqlx::query(sql).execute(pool).await.unwrap()));
    }

    pub async fn close(self) {
        on_dashboard!(self, pool => pool.close().await);
    }
}
