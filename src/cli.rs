//! The `switchyard` command line: parses arguments and runs one command. Each command is a few
//! lines over the library; nothing here is reused by the server.

use std::path::PathBuf;

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};

use crate::accounts::{
    KeyChange, KeyStatement, Keys, LimitReset, parse_expiry, parse_limit, parse_limit_reset,
};
use crate::app::App;
use crate::clock::WallClock;
use crate::config::{self, LoadedConfig};
use crate::openai::MicroUsd;
use crate::routing::Catalog;
use crate::store::{KeyPage, Store};
use crate::{shutdown, telemetry};

#[derive(Debug, Parser)]
#[command(
    name = "switchyard",
    version,
    about = "A self-hosted, OpenAI-compatible LLM gateway"
)]
pub struct Cli {
    /// Config file; else $SWITCHYARD_CONFIG, else ./switchyard.toml, else the embedded default.
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway (applies pending migrations first).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Validate the config and the catalog.
    Check,
    /// Manage API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Print the resolved catalog: models, endpoints, prices.
    Models,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key and print it (it is shown only once).
    Create {
        #[arg(long)]
        name: String,
        /// Spending limit in USD, e.g. 25 or 0.50.
        #[arg(long, value_parser = usd)]
        limit: Option<MicroUsd>,
        #[arg(long, value_enum)]
        limit_reset: Option<LimitReset>,
        /// When the key stops working, RFC 3339, e.g. 2027-12-31T23:59:59Z.
        #[arg(long, value_parser = expiry)]
        expires_at: Option<DateTime<Utc>>,
    },
    /// One line per key: hash, name, prefix, disabled, limit.
    List,
    /// Disable a key by its hash.
    Disable { hash: String },
    /// Enable a disabled key again.
    Enable { hash: String },
    /// Change a key's name, limit or limit reset; `none` clears a limit or a reset.
    Update {
        hash: String,
        #[arg(long)]
        name: Option<String>,
        /// USD, or `none` for unlimited.
        #[arg(long, value_parser = usd_or_none)]
        limit: Option<OrNone<MicroUsd>>,
        /// daily, weekly, monthly, or `none` for a limit that never resets.
        #[arg(long, value_parser = reset_or_none)]
        limit_reset: Option<OrNone<LimitReset>>,
    },
    /// Delete a key; its usage history stays.
    Delete { hash: String },
}

/// A setting's new value, or `none` to clear it. A wrapper because clap reads `Option<Option<T>>`
/// as a flag whose value may be left out.
#[derive(Debug, Clone)]
pub struct OrNone<T>(Option<T>);

fn usd(text: &str) -> Result<MicroUsd, String> {
    parse_limit(text).map_err(|error| error.to_string())
}

fn expiry(text: &str) -> Result<DateTime<Utc>, String> {
    parse_expiry(text).map_err(|error| error.to_string())
}

fn usd_or_none(text: &str) -> Result<OrNone<MicroUsd>, String> {
    if text == "none" {
        return Ok(OrNone(None));
    }
    usd(text).map(|limit| OrNone(Some(limit)))
}

fn reset_or_none(text: &str) -> Result<OrNone<LimitReset>, String> {
    if text == "none" {
        return Ok(OrNone(None));
    }
    parse_limit_reset(text)
        .map(|reset| OrNone(Some(reset)))
        .map_err(|error| error.to_string())
}

impl Cli {
    pub async fn run(self) -> anyhow::Result<()> {
        let loaded = config::load(self.config.as_deref())?;
        match self.command {
            Command::Serve => serve(loaded).await,
            Command::Migrate => {
                open_store(&loaded).await?;
                println!("migrations applied");
                Ok(())
            }
            Command::Check => check(&loaded),
            Command::Keys(command) => keys(&loaded, command).await,
            Command::Models => models(&loaded),
        }
    }
}

async fn serve(loaded: LoadedConfig) -> anyhow::Result<()> {
    telemetry::init(loaded.config.server.log_format);
    if let Some(warning) = plaintext_remote_database(&loaded.config.database.url) {
        tracing::warn!("{warning}");
    }
    let app = App::build_with_clock(loaded, wall_clock()?).await?;
    app.run_until_stopped(shutdown::signal()).await
}

/// Set to an RFC 3339 instant, stops the gateway's calendar clock there: end-to-end tests use
/// it so that limits, periods and expiry do not depend on the day they run. Never in production.
const PIN_CLOCK_VAR: &str = "SWITCHYARD_PIN_CLOCK";

fn wall_clock() -> anyhow::Result<WallClock> {
    let Ok(text) = std::env::var(PIN_CLOCK_VAR) else {
        return Ok(WallClock::system());
    };
    let at = chrono::DateTime::parse_from_rfc3339(&text)
        .with_context(|| format!("{PIN_CLOCK_VAR}={text:?} is not an RFC 3339 instant"))?
        .to_utc();
    tracing::warn!(%at, "{PIN_CLOCK_VAR} is set: the clock stands still, as in a test");
    Ok(WallClock::pinned(at))
}

async fn open_store(loaded: &LoadedConfig) -> anyhow::Result<Store> {
    let url = &loaded.config.database.url;
    let store = Store::connect(url)
        .await
        .context("cannot open the database")?;
    store.migrate().await.context("cannot apply migrations")?;
    Ok(store)
}

fn check(loaded: &LoadedConfig) -> anyhow::Result<()> {
    let catalog = Catalog::build(&loaded.config)?;
    if let Some(warning) = plaintext_remote_database(&loaded.config.database.url) {
        eprintln!("warning: {warning}");
    }
    print!("{}", loaded.summary());
    println!(
        "{}: ok ({} models)",
        loaded.origin(),
        catalog.models().count()
    );
    Ok(())
}

/// A warning when the database is a Postgres server on another host reached without a
/// `sslmode` that insists on TLS: its traffic (keys' hashes, prompts when logged) could be read
/// or the connection downgraded on the way.
fn plaintext_remote_database(url: &str) -> Option<String> {
    use sqlx::postgres::{PgConnectOptions, PgSslMode};
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return None;
    }
    let options: PgConnectOptions = url.parse().ok()?;
    let host = options.get_host();
    let local = host.starts_with('/') || matches!(host, "localhost" | "127.0.0.1" | "::1");
    let insists = matches!(
        options.get_ssl_mode(),
        PgSslMode::Require | PgSslMode::VerifyCa | PgSslMode::VerifyFull
    );
    (!local && !insists).then(|| {
        format!(
            "database.url reaches Postgres on {host} without sslmode=require or verify-full: \
             the connection may be plaintext; add ?sslmode=verify-full"
        )
    })
}

fn models(loaded: &LoadedConfig) -> anyhow::Result<()> {
    let catalog = Catalog::build(&loaded.config)?;
    println!(
        "{:<40} {:<14} {:<36} {:>10} {:>10}",
        "MODEL", "PROVIDER", "UPSTREAM", "PROMPT/M", "COMPL/M"
    );
    for model in catalog.models() {
        for endpoint in &model.endpoints {
            println!(
                "{:<40} {:<14} {:<36} {:>10} {:>10}",
                model.id,
                endpoint.provider,
                endpoint.upstream_model,
                endpoint.pricing.prompt.to_string(),
                endpoint.pricing.completion.to_string()
            );
        }
    }
    Ok(())
}

async fn keys(loaded: &LoadedConfig, command: KeysCommand) -> anyhow::Result<()> {
    let keys = Keys::new(open_store(loaded).await?, WallClock::system());
    match command {
        KeysCommand::Create {
            name,
            limit,
            limit_reset,
            expires_at,
        } => {
            let created = keys.create(&name, limit, limit_reset, expires_at).await?;
            println!("{}", created.key);
            eprintln!(
                "hash {} — store the key now; it is not shown again",
                created.row.hash
            );
        }
        KeysCommand::List => {
            let every_key = KeyPage {
                include_disabled: true,
                offset: 0,
                limit: None,
            };
            for statement in keys.statements(every_key).await? {
                print_key(&statement);
            }
        }
        KeysCommand::Disable { hash } => set_disabled(&keys, &hash, true).await?,
        KeysCommand::Enable { hash } => set_disabled(&keys, &hash, false).await?,
        KeysCommand::Update {
            hash,
            name,
            limit,
            limit_reset,
        } => {
            let change = KeyChange {
                name,
                disabled: None,
                limit: limit.map(|OrNone(limit)| limit),
                limit_reset: limit_reset.map(|OrNone(reset)| reset),
            };
            print_key(&keys.update(&hash, change).await?);
        }
        KeysCommand::Delete { hash } => {
            keys.delete(&hash).await?;
            println!("deleted {hash}");
        }
    }
    Ok(())
}

async fn set_disabled(keys: &Keys, hash: &str, disabled: bool) -> anyhow::Result<()> {
    let change = KeyChange {
        disabled: Some(disabled),
        ..KeyChange::default()
    };
    let statement = keys.update(hash, change).await?;
    let state = if statement.disabled {
        "disabled"
    } else {
        "enabled"
    };
    println!("{state} {hash}");
    Ok(())
}

/// The `keys list` line: hash, name, display prefix, enabled or disabled, limit; tab-separated.
/// A name as one safe field of a line: control characters, which names made before they were
/// refused may hold, are shown escaped rather than written to the terminal.
fn printable(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

fn print_key(key: &KeyStatement) {
    let limit = key
        .limit
        .map_or("unlimited".to_owned(), MicroUsd::to_usd_string);
    println!(
        "{}\t{}\t{}\t{}\t{}",
        key.hash,
        printable(&key.name),
        key.label,
        if key.disabled { "disabled" } else { "enabled" },
        limit
    );
}
