//! The `switchyard` command line: parses arguments and runs one command. Each command is a few
//! lines over the library; nothing here is reused by the server.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::accounts::{Keys, LimitReset};
use crate::app::App;
use crate::config::{self, LoadedConfig};
use crate::openai::MicroUsd;
use crate::routing::Catalog;
use crate::store::Store;
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
        #[arg(long)]
        limit: Option<String>,
        #[arg(long, value_enum)]
        limit_reset: Option<LimitReset>,
    },
    /// One line per key: hash, name, prefix, disabled, limit.
    List,
    /// Disable a key by its hash.
    Disable { hash: String },
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
    let app = App::build(loaded).await?;
    app.run_until_stopped(shutdown::signal()).await
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
    print!("{}", loaded.summary());
    println!(
        "{}: ok ({} models)",
        loaded.origin(),
        catalog.models().count()
    );
    Ok(())
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
    let store = open_store(loaded).await?;
    match command {
        KeysCommand::Create {
            name,
            limit,
            limit_reset,
        } => {
            let limit = limit
                .map(|usd| MicroUsd::parse_usd(&usd))
                .map(|parsed| {
                    parsed.context("--limit must be a decimal amount of USD, e.g. 25 or 0.50")
                })
                .transpose()?;
            let created = Keys::new(store)
                .create(&name, limit, limit_reset, None)
                .await?;
            println!("{}", created.key);
            eprintln!(
                "hash {} — store the key now; it is not shown again",
                created.row.hash
            );
        }
        KeysCommand::List => {
            for key in store.list_keys().await? {
                let limit = key
                    .limit_micros
                    .map_or("unlimited".to_owned(), |m| MicroUsd(m).to_usd_string());
                println!(
                    "{}\t{}\t{}\t{}\t{}",
                    key.hash,
                    key.name,
                    key.prefix,
                    if key.disabled { "disabled" } else { "enabled" },
                    limit
                );
            }
        }
        KeysCommand::Disable { hash } => {
            if !store.set_key_disabled(&hash, true).await? {
                anyhow::bail!("no key with hash {hash}");
            }
            println!("disabled {hash}");
        }
    }
    Ok(())
}
