//! Typed configuration: the TOML contract, `${VAR}` substitution, validation and the embedded
//! default. It only describes; building clients, pools or catalogs from it happens elsewhere.

mod bundled;
mod document;
mod env;
mod load;
mod redact;
mod units;
mod validate;

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

pub use load::{ConfigError, ConfigProblem, ConfigSource, from_text, load};
pub use units::{ByteSize, HumanDuration};
pub(crate) use validate::AZURE_API_VERSION;

use redact::{Masked, RedactedUrl};

/// The whole configuration after substitution, validation and merging with the bundled catalog.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub database: DatabaseConfig,
    #[serde(default)]
    pub health: HealthConfig,
    #[serde(default)]
    pub credits: CreditsConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Optional; when set, rate limits are counted here instead of in the database.
    pub redis: Option<RedisConfig>,
    #[serde(default)]
    pub providers: Vec<ProviderConfig>,
    #[serde(default)]
    pub models: Vec<ModelConfig>,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    #[serde(default = "ServerConfig::default_listen")]
    pub listen: String,
    /// Guards the key-provisioning API; `None` disables that API entirely.
    #[serde(default)]
    pub admin_token: Option<String>,
    #[serde(default = "ServerConfig::default_max_body")]
    pub max_body: ByteSize,
    /// How long a stream may wait for its first upstream event before the gateway commits `200`
    /// and starts sending `: keep-alive` comments (so idle proxies do not cut it).
    #[serde(default = "ServerConfig::default_sse_keepalive")]
    pub sse_keepalive: HumanDuration,
    /// `pretty` for people, `json` for log pipelines.
    #[serde(default)]
    pub log_format: LogFormat,
    /// Open client connections at most; past it, new ones wait in the kernel's accept backlog.
    #[serde(default = "ServerConfig::default_max_connections")]
    pub max_connections: usize,
    /// A connection that has not sent a whole request head this long after it opened, or after
    /// the first byte of its next request, is closed.
    #[serde(default = "ServerConfig::default_header_read_timeout")]
    pub header_read_timeout: HumanDuration,
    /// How long a request body may take to arrive once its head has; past it, 408.
    #[serde(default = "ServerConfig::default_body_read_timeout")]
    pub body_read_timeout: HumanDuration,
    /// A keep-alive connection idle this long between requests is closed.
    #[serde(default = "ServerConfig::default_keepalive_timeout")]
    pub keepalive_timeout: HumanDuration,
    /// Requests being answered at once; past it, 503 with `Retry-After`.
    #[serde(default = "ServerConfig::default_max_inflight")]
    pub max_inflight: usize,
    /// Whether `/models` and a model's `/endpoints` are served without a key.
    #[serde(default = "ServerConfig::default_public_catalog")]
    pub public_catalog: bool,
    /// Origins a browser page may call the API from (`"*"` for any); empty turns CORS off.
    #[serde(default)]
    pub cors_origins: Vec<String>,
    /// PEM files of a certificate chain and its key: with both, the listener speaks HTTPS.
    #[serde(default)]
    pub tls_cert: Option<String>,
    #[serde(default)]
    pub tls_key: Option<String>,
}

impl ServerConfig {
    fn default_listen() -> String {
        "127.0.0.1:8080".to_owned()
    }
    fn default_max_body() -> ByteSize {
        ByteSize(32 * 1024 * 1024)
    }
    fn default_sse_keepalive() -> HumanDuration {
        HumanDuration(Duration::from_secs(5))
    }
    fn default_max_connections() -> usize {
        10_000
    }
    fn default_header_read_timeout() -> HumanDuration {
        HumanDuration(Duration::from_secs(10))
    }
    /// 32 MiB (the default `max_body`) needs about 4.5 Mbit/s to make it.
    fn default_body_read_timeout() -> HumanDuration {
        HumanDuration(Duration::from_secs(60))
    }
    fn default_keepalive_timeout() -> HumanDuration {
        HumanDuration(Duration::from_secs(75))
    }
    fn default_max_inflight() -> usize {
        4_096
    }
    fn default_public_catalog() -> bool {
        true
    }
}

impl fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerConfig")
            .field("listen", &self.listen)
            .field("admin_token", &Masked(self.admin_token.as_deref()))
            .field("max_body", &self.max_body)
            .field("sse_keepalive", &self.sse_keepalive)
            .field("log_format", &self.log_format)
            .field("max_connections", &self.max_connections)
            .field("header_read_timeout", &self.header_read_timeout)
            .field("body_read_timeout", &self.body_read_timeout)
            .field("keepalive_timeout", &self.keepalive_timeout)
            .field("max_inflight", &self.max_inflight)
            .field("public_catalog", &self.public_catalog)
            .field("cors_origins", &self.cors_origins)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .finish()
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: Self::default_listen(),
            admin_token: None,
            max_body: Self::default_max_body(),
            sse_keepalive: Self::default_sse_keepalive(),
            log_format: LogFormat::default(),
            max_connections: Self::default_max_connections(),
            header_read_timeout: Self::default_header_read_timeout(),
            body_read_timeout: Self::default_body_read_timeout(),
            keepalive_timeout: Self::default_keepalive_timeout(),
            max_inflight: Self::default_max_inflight(),
            public_catalog: Self::default_public_catalog(),
            cors_origins: Vec::new(),
            tls_cert: None,
            tls_key: None,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Pretty,
    Json,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// May hold a password; `Debug` masks it.
    #[serde(default = "DatabaseConfig::default_url")]
    pub url: String,
    /// Generation rows are written in batches of at most this many.
    #[serde(default = "DatabaseConfig::default_batch_size")]
    pub batch_size: usize,
    /// A partial batch is written after waiting this long.
    #[serde(default = "DatabaseConfig::default_flush_interval")]
    pub flush_interval: HumanDuration,
    /// Keep each request's messages and the answer's text in `generation_contents`. Off by
    /// default: prompts are the callers' data, and most operators must not keep them.
    #[serde(default)]
    pub log_prompts: bool,
}

impl DatabaseConfig {
    fn default_url() -> String {
        "sqlite://switchyard.db".to_owned()
    }
    fn default_batch_size() -> usize {
        256
    }
    fn default_flush_interval() -> HumanDuration {
        HumanDuration(Duration::from_millis(200))
    }
}

impl fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("url", &RedactedUrl(&self.url))
            .field("batch_size", &self.batch_size)
            .field("flush_interval", &self.flush_interval)
            .field("log_prompts", &self.log_prompts)
            .finish()
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: Self::default_url(),
            batch_size: Self::default_batch_size(),
            flush_interval: Self::default_flush_interval(),
            log_prompts: false,
        }
    }
}

/// The per-endpoint circuit breaker: when an endpoint is taken out of rotation and for how long.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// Consecutive counted failures (5xx, 429, timeouts, broken connections) that open the
    /// breaker.
    #[serde(default = "HealthConfig::default_failure_threshold")]
    pub failure_threshold: u32,
    /// How long an open breaker keeps the endpoint out before one probe request may test it; an
    /// upstream `Retry-After` that asks for longer wins.
    #[serde(default = "HealthConfig::default_cool_down")]
    pub cool_down: HumanDuration,
    /// Each trip without a success in between doubles the cool-down, up to this; it also caps
    /// an upstream's `Retry-After`, so no single answer takes an endpoint out for long.
    #[serde(default = "HealthConfig::default_max_cool_down")]
    pub max_cool_down: HumanDuration,
}

impl HealthConfig {
    fn default_failure_threshold() -> u32 {
        3
    }
    fn default_cool_down() -> HumanDuration {
        HumanDuration(Duration::from_secs(5))
    }
    fn default_max_cool_down() -> HumanDuration {
        HumanDuration(Duration::from_secs(300))
    }
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            failure_threshold: Self::default_failure_threshold(),
            cool_down: Self::default_cool_down(),
            max_cool_down: Self::default_max_cool_down(),
        }
    }
}

/// Credit holds: how long the holds of a gateway that died (kill -9, a lost machine) keep
/// credit from its keys before any gateway sharing the database refunds them.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreditsConfig {
    /// A living gateway renews its holds three times per lease.
    #[serde(default = "CreditsConfig::default_hold_lease")]
    pub hold_lease: HumanDuration,
}

impl CreditsConfig {
    fn default_hold_lease() -> HumanDuration {
        HumanDuration(Duration::from_secs(30))
    }
}

impl Default for CreditsConfig {
    fn default() -> Self {
        Self {
            hold_lease: Self::default_hold_lease(),
        }
    }
}

/// Per-key request rate limits. Counted in fixed UTC windows (the minute; the day from 00:00
/// UTC) in the shared database or Redis, so every replica enforces the same count.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// For keys without a `requests_per_minute` of their own; `None` is unlimited.
    #[serde(default)]
    pub requests_per_minute: Option<u32>,
    /// For keys without a `requests_per_day` of their own; `None` is unlimited.
    #[serde(default)]
    pub requests_per_day: Option<u32>,
    /// Requests for `:free` models, per key, on top of the key's own limits: free endpoints are
    /// someone else's gift, and the contract promises they are not drained by one caller.
    #[serde(default = "LimitsConfig::default_free_requests_per_minute")]
    pub free_requests_per_minute: u32,
    #[serde(default = "LimitsConfig::default_free_requests_per_day")]
    pub free_requests_per_day: u32,
}

impl LimitsConfig {
    fn default_free_requests_per_minute() -> u32 {
        20
    }
    fn default_free_requests_per_day() -> u32 {
        50
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            requests_per_minute: None,
            requests_per_day: None,
            free_requests_per_minute: Self::default_free_requests_per_minute(),
            free_requests_per_day: Self::default_free_requests_per_day(),
        }
    }
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// May hold a password; `Debug` masks it.
    pub url: String,
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &RedactedUrl(&self.url))
            .finish()
    }
}

/// The wire formats this build can speak. A kind is listed here only once its adapter exists.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ProviderKind {
    Openai,
    OpenaiCompatible,
    Anthropic,
    Gemini,
    Azure,
    Bedrock,
    Mock,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DataCollection {
    #[default]
    Allow,
    Deny,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// The slug used in routing preferences (`provider.order`, `only`, `ignore`) and responses.
    pub id: String,
    pub kind: ProviderKind,
    /// `openai-compatible` only: a known provider of that family (`mistral`, `groq`, `ollama`,
    /// ...; see `providers::presets`). Loading fills `base_url` and `api_key` from it when they
    /// are unset, and the adapter never sends the fields the provider refuses.
    pub preset: Option<String>,
    /// Required for `openai-compatible` without a preset; the `openai` kind defaults it to
    /// OpenAI's public API (filled in by loading, so it is always `Some` there); `anthropic` and
    /// `gemini`, left `None`, use the provider's public API (filled in by their adapters).
    pub base_url: Option<String>,
    /// Never printed: `Debug` masks it. `None` when unset or empty (as `${VAR:-}` yields).
    pub api_key: Option<String>,
    /// `azure` only: the `api-version` query parameter; loading fills in the current GA version.
    pub api_version: Option<String>,
    /// `bedrock` only: the AWS region signed into every request and named in the default
    /// `base_url`. Loading falls back to `AWS_REGION`, then `AWS_DEFAULT_REGION`.
    pub region: Option<String>,
    /// `bedrock` only, with `secret_access_key` (and `session_token` for temporary credentials).
    /// When both keys are unset, loading takes all three from `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN`. `Debug` masks all three.
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
    #[serde(default)]
    pub data_collection: DataCollection,
    #[serde(default = "ProviderConfig::default_connect_timeout")]
    pub connect_timeout: HumanDuration,
    #[serde(default = "ProviderConfig::default_first_token_timeout")]
    pub first_token_timeout: HumanDuration,
    #[serde(default = "ProviderConfig::default_idle_timeout")]
    pub idle_timeout: HumanDuration,
    #[serde(default = "ProviderConfig::default_request_timeout")]
    pub request_timeout: HumanDuration,
}

impl fmt::Debug for ProviderConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderConfig")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("preset", &self.preset)
            .field("base_url", &self.base_url.as_deref().map(RedactedUrl))
            .field("api_key", &Masked(self.api_key.as_deref()))
            .field("api_version", &self.api_version)
            .field("region", &self.region)
            .field("access_key_id", &Masked(self.access_key_id.as_deref()))
            .field(
                "secret_access_key",
                &Masked(self.secret_access_key.as_deref()),
            )
            .field("session_token", &Masked(self.session_token.as_deref()))
            .field("data_collection", &self.data_collection)
            .field("connect_timeout", &self.connect_timeout)
            .field("first_token_timeout", &self.first_token_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

impl ProviderConfig {
    /// A provider with every optional key at its default, as if written with only `id` and
    /// `kind`.
    pub fn new(id: impl Into<String>, kind: ProviderKind) -> ProviderConfig {
        ProviderConfig {
            id: id.into(),
            kind,
            preset: None,
            base_url: None,
            api_key: None,
            api_version: None,
            region: None,
            access_key_id: None,
            secret_access_key: None,
            session_token: None,
            data_collection: DataCollection::default(),
            connect_timeout: Self::default_connect_timeout(),
            first_token_timeout: Self::default_first_token_timeout(),
            idle_timeout: Self::default_idle_timeout(),
            request_timeout: Self::default_request_timeout(),
        }
    }

    fn default_connect_timeout() -> HumanDuration {
        HumanDuration(Duration::from_secs(5))
    }
    fn default_first_token_timeout() -> HumanDuration {
        HumanDuration(Duration::from_secs(60))
    }
    fn default_idle_timeout() -> HumanDuration {
        HumanDuration(Duration::from_secs(60))
    }
    fn default_request_timeout() -> HumanDuration {
        HumanDuration(Duration::from_secs(600))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// What callers send as `model`, e.g. `openai/gpt-4o`.
    pub id: String,
    /// Human-readable name for `GET /v1/models`; defaults to the id.
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    pub context_length: Option<u32>,
    #[serde(default)]
    pub endpoints: Vec<EndpointConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    pub provider: String,
    /// The provider's own model name.
    pub upstream: String,
    /// USD per million input tokens, as an exact decimal string.
    pub prompt: String,
    /// USD per million output tokens, as an exact decimal string.
    pub completion: String,
    pub cache_read: Option<String>,
    pub cache_write: Option<String>,
    pub max_output: Option<u32>,
    #[serde(default)]
    pub supports: Vec<String>,
}

/// Where the configuration came from, kept so `check` and logs can name the file.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    pub config: Config,
    pub source: ConfigSource,
}

impl LoadedConfig {
    pub fn path(&self) -> Option<&PathBuf> {
        match &self.source {
            ConfigSource::File(path) => Some(path),
            ConfigSource::EmbeddedDefault => None,
        }
    }

    /// The file's path as given, or `embedded default`.
    pub fn origin(&self) -> String {
        self.path().map_or_else(
            || "embedded default".to_owned(),
            |path| path.display().to_string(),
        )
    }

    /// What `switchyard check` reports: where the config came from, each provider (without
    /// secrets) with the number of models it serves, and warnings worth acting on.
    pub fn summary(&self) -> String {
        use fmt::Write as _;
        let config = &self.config;
        let mut out = String::new();
        let _ = writeln!(out, "config: {}", self.origin());
        let _ = writeln!(out, "listen: {}", config.server.listen);
        let _ = writeln!(out, "database: {:?}", RedactedUrl(&config.database.url));
        let admin = if config.server.admin_token.is_some() {
            "enabled"
        } else {
            "disabled (no admin_token)"
        };
        let _ = writeln!(out, "key API: {admin}");
        let _ = writeln!(out, "providers: {}", config.providers.len());
        let mut warnings = Vec::new();
        for provider in &config.providers {
            let serving = config
                .models
                .iter()
                .filter(|model| model.endpoints.iter().any(|e| e.provider == provider.id))
                .count();
            let key = match (provider.kind, &provider.api_key) {
                (ProviderKind::Mock, _) => "no key needed",
                (ProviderKind::Bedrock, _) => "AWS credentials set",
                (_, Some(_)) => "key set",
                (_, None) => "no key",
            };
            let url = provider
                .base_url
                .as_deref()
                .map_or_else(String::new, |url| format!(" {:?}", RedactedUrl(url)));
            let _ = writeln!(
                out,
                "  {} ({}{url}, {key}): {serving} models",
                provider.id,
                provider.kind.name()
            );
            if serving == 0 {
                warnings.push(format!("provider {:?} serves no model", provider.id));
            }
            let keyless_preset = provider
                .preset
                .as_deref()
                .and_then(crate::providers::presets::preset_named)
                .is_some_and(|preset| preset.api_key_env.is_none());
            let needs_api_key = !keyless_preset
                && !matches!(provider.kind, ProviderKind::Mock | ProviderKind::Bedrock);
            if needs_api_key && provider.api_key.is_none() {
                warnings.push(format!("provider {:?} has no api_key", provider.id));
            }
        }
        let endpoints: usize = config
            .models
            .iter()
            .map(|model| model.endpoints.len())
            .sum();
        let _ = writeln!(
            out,
            "models: {} ({endpoints} endpoints)",
            config.models.len()
        );
        for warning in warnings {
            let _ = writeln!(out, "warning: {warning}");
        }
        out
    }
}

impl ProviderKind {
    /// As written in the config file.
    pub fn name(self) -> &'static str {
        match self {
            ProviderKind::Openai => "openai",
            ProviderKind::OpenaiCompatible => "openai-compatible",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Gemini => "gemini",
            ProviderKind::Azure => "azure",
            ProviderKind::Bedrock => "bedrock",
            ProviderKind::Mock => "mock",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_lists_providers_and_warnings_without_secrets() {
        let text = r#"
            [database]
            url = "postgres://app:db-secret@db/switchyard"
            [[providers]]
            id = "openai"
            kind = "openai"
            api_key = "sk-provider-secret"
            [[providers]]
            id = "local"
            kind = "openai-compatible"
            base_url = "http://127.0.0.1:11434/v1"
            [[providers]]
            id = "ollama"
            kind = "openai-compatible"
            preset = "ollama"
        "#;
        let config = from_text(text, "switchyard.toml", &|_| None).unwrap();
        let loaded = LoadedConfig {
            config,
            source: ConfigSource::File("switchyard.toml".into()),
        };
        let summary = loaded.summary();
        assert!(
            summary.starts_with("config: switchyard.toml\n"),
            "{summary}"
        );
        assert!(summary.contains("  openai (openai \"https://api.openai.com/v1\", key set): "));
        assert!(
            summary.contains("warning: provider \"local\" serves no model"),
            "{summary}"
        );
        assert!(
            summary.contains("warning: provider \"local\" has no api_key"),
            "{summary}"
        );
        assert!(
            !summary.contains("\"ollama\" has no api_key"),
            "a local preset needs no key: {summary}"
        );
        assert!(
            summary.contains("  ollama (openai-compatible \"http://localhost:11434/v1\", no key)"),
            "{summary}"
        );
        assert!(!summary.contains("secret"), "{summary}");
    }
}
