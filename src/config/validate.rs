//! Semantic checks on a parsed config and the defaults that depend on other keys; reports
//! problems by key path and never panics, prints secrets or touches the network.

use std::collections::HashMap;
use std::net::SocketAddr;

use super::document::KeyPath;
use super::{
    Config, DatabaseConfig, HealthConfig, LimitsConfig, ModelConfig, ProviderConfig, ProviderKind,
    ServerConfig,
};
use crate::providers::presets::{self, Preset};
use crate::usage::Price;

/// Where the `openai` kind sends requests when the config names no `base_url`.
pub(super) const OPENAI_BASE_URL: &str = "https://api.openai.com/v1";

/// The `api-version` the `azure` kind sends when the config names none: the latest GA version of
/// the Azure OpenAI data-plane inference API for deployment URLs.
pub(crate) const AZURE_API_VERSION: &str = "2024-10-21";

/// The shortest `[server] admin_token` accepted: with 32 random characters, guessing it over the
/// network is hopeless however fast the attempts come.
const MIN_ADMIN_TOKEN_CHARS: usize = 32;

/// `"*"`, or `scheme://host[:port]` with nothing after it: what a browser sends as `Origin`.
fn is_cors_origin(origin: &str) -> bool {
    if origin == "*" {
        return true;
    }
    let Some((scheme, authority)) = origin.split_once("://") else {
        return false;
    };
    matches!(scheme, "http" | "https")
        && !authority.is_empty()
        && !authority.contains(['/', '?', '#', ' ', '*'])
        && http::HeaderValue::from_str(origin).is_ok()
}

/// One thing wrong with the config: the key it is about and a message that names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Problem {
    pub(super) path: KeyPath,
    pub(super) message: String,
}

impl Problem {
    fn new(path: KeyPath, message: impl Into<String>) -> Problem {
        Problem {
            path,
            message: message.into(),
        }
    }
}

/// Checks `server`, `database`, `redis` and `providers`, and fills the defaults that depend on
/// other keys (the `openai` base URL; an empty key or URL, as `${VAR:-}` yields, means none).
pub(super) fn settings(config: &mut Config, problems: &mut Vec<Problem>) {
    server(&mut config.server, problems);
    database(&config.database, problems);
    health(&config.health, problems);
    if config.credits.hold_lease.0.is_zero() {
        problems.push(Problem::new(
            KeyPath::root("credits").key("hold_lease"),
            "credits.hold_lease: must be above zero",
        ));
    }
    limits(&config.limits, problems);
    if let Some(redis) = &config.redis {
        let path = KeyPath::root("redis").key("url");
        // No `rediss://`: this build's Redis client has no TLS (it would fail only at startup).
        check_scheme(
            &redis.url,
            &path,
            &["redis", "unix", "redis+unix"],
            problems,
        );
    }
    providers(&mut config.providers, problems);
}

fn server(server: &mut ServerConfig, problems: &mut Vec<Problem>) {
    let path = KeyPath::root("server");
    if server.listen.parse::<SocketAddr>().is_err() {
        problems.push(Problem::new(
            path.key("listen"),
            format!(
                "server.listen: {:?} is not a socket address (expected an IP and a port, such \
                 as \"127.0.0.1:8080\" or \"0.0.0.0:8080\")",
                server.listen
            ),
        ));
    }
    clear_if_empty(&mut server.admin_token);
    let short_token = |token: &str| token.chars().count() < MIN_ADMIN_TOKEN_CHARS;
    if server.admin_token.as_deref().is_some_and(short_token) {
        problems.push(Problem::new(
            path.key("admin_token"),
            format!(
                "server.admin_token: must be at least {MIN_ADMIN_TOKEN_CHARS} characters, since \
                 it guards key provisioning (make one with `openssl rand -hex 32`)"
            ),
        ));
    }
    if server.max_body.0 == 0 {
        problems.push(Problem::new(
            path.key("max_body"),
            "server.max_body: must be above zero",
        ));
    }
    for (key, zero) in [
        ("max_connections", server.max_connections == 0),
        ("max_inflight", server.max_inflight == 0),
        (
            "header_read_timeout",
            server.header_read_timeout.0.is_zero(),
        ),
        ("body_read_timeout", server.body_read_timeout.0.is_zero()),
        ("keepalive_timeout", server.keepalive_timeout.0.is_zero()),
    ] {
        if zero {
            problems.push(Problem::new(
                path.key(key),
                format!("server.{key}: must be above zero"),
            ));
        }
    }
    clear_if_empty(&mut server.tls_cert);
    clear_if_empty(&mut server.tls_key);
    if server.tls_cert.is_some() != server.tls_key.is_some() {
        let missing = if server.tls_cert.is_some() {
            "tls_key"
        } else {
            "tls_cert"
        };
        problems.push(Problem::new(
            path.key(missing),
            "server.tls_cert and server.tls_key go together: set both for HTTPS, or neither",
        ));
    }
    for origin in &server.cors_origins {
        if !is_cors_origin(origin) {
            problems.push(Problem::new(
                path.key("cors_origins"),
                format!(
                    "server.cors_origins: {origin:?} is not an origin (\"*\" or a scheme and \
                     host such as \"https://app.example.com\", without a path)"
                ),
            ));
        }
    }
    if server.sse_keepalive.0.is_zero() {
        problems.push(Problem::new(
            path.key("sse_keepalive"),
            "server.sse_keepalive: must be above zero",
        ));
    }
}

fn database(database: &DatabaseConfig, problems: &mut Vec<Problem>) {
    let path = KeyPath::root("database");
    check_scheme(
        &database.url,
        &path.key("url"),
        &["sqlite", "postgres", "postgresql"],
        problems,
    );
    if database.batch_size == 0 {
        problems.push(Problem::new(
            path.key("batch_size"),
            "database.batch_size: must be at least 1",
        ));
    }
    if database.flush_interval.0.is_zero() {
        problems.push(Problem::new(
            path.key("flush_interval"),
            "database.flush_interval: must be above zero",
        ));
    }
}

fn health(health: &HealthConfig, problems: &mut Vec<Problem>) {
    let path = KeyPath::root("health");
    if health.failure_threshold == 0 {
        problems.push(Problem::new(
            path.key("failure_threshold"),
            "health.failure_threshold: must be at least 1",
        ));
    }
    if health.cool_down.0.is_zero() {
        problems.push(Problem::new(
            path.key("cool_down"),
            "health.cool_down: must be above zero",
        ));
    }
    if health.max_cool_down.0 < health.cool_down.0 {
        problems.push(Problem::new(
            path.key("max_cool_down"),
            "health.max_cool_down: must be at least health.cool_down",
        ));
    }
}

fn limits(limits: &LimitsConfig, problems: &mut Vec<Problem>) {
    let path = KeyPath::root("limits");
    let keys = [
        ("requests_per_minute", limits.requests_per_minute),
        ("requests_per_day", limits.requests_per_day),
        (
            "free_requests_per_minute",
            Some(limits.free_requests_per_minute),
        ),
        ("free_requests_per_day", Some(limits.free_requests_per_day)),
    ];
    for (key, value) in keys {
        if value == Some(0) {
            problems.push(Problem::new(
                path.key(key),
                format!("limits.{key}: must be at least 1"),
            ));
        }
    }
}

/// Names only the scheme in messages: the rest of a URL may hold a password.
fn check_scheme(url: &str, path: &KeyPath, schemes: &[&str], problems: &mut Vec<Problem>) {
    let expected = schemes.join(", ");
    let scheme = url
        .split_once(':')
        .map(|(scheme, _)| scheme)
        .filter(|s| !s.is_empty());
    match scheme {
        Some(scheme) if schemes.contains(&scheme) => {}
        Some(scheme)
            if scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)) =>
        {
            problems.push(Problem::new(
                path.clone(),
                format!("{path}: unsupported scheme {scheme:?} (expected one of: {expected})"),
            ));
        }
        _ => problems.push(Problem::new(
            path.clone(),
            format!("{path}: not a URL (expected one with a scheme among: {expected})"),
        )),
    }
}

fn providers(providers: &mut [ProviderConfig], problems: &mut Vec<Problem>) {
    let mut first_use: HashMap<String, usize> = HashMap::new();
    for (index, provider) in providers.iter_mut().enumerate() {
        let path = KeyPath::root("providers").index(index);
        let subject = format!("providers[{index}] (id {:?})", provider.id);
        let mut problem = |key: &'static str, message: String| {
            problems.push(Problem::new(path.key(key), format!("{subject}: {message}")));
        };

        let valid_id = !provider.id.is_empty()
            && provider
                .id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !valid_id {
            problem(
                "id",
                "id must be non-empty letters, digits, '-', '_' or '.'".to_owned(),
            );
        } else if let Some(first) = first_use.get(&provider.id) {
            problem("id", format!("id is already used by providers[{first}]"));
        } else {
            first_use.insert(provider.id.clone(), index);
        }

        for value in [
            &mut provider.preset,
            &mut provider.api_key,
            &mut provider.base_url,
            &mut provider.api_version,
            &mut provider.region,
            &mut provider.access_key_id,
            &mut provider.secret_access_key,
            &mut provider.session_token,
        ] {
            clear_if_empty(value);
        }
        kind_specific(provider, &mut problem);
        let preset = match (provider.kind, provider.preset.as_deref()) {
            (ProviderKind::OpenaiCompatible, Some(name)) => {
                let found = presets::preset_named(name);
                if found.is_none() {
                    problem(
                        "preset",
                        format!(
                            "unknown preset {name:?} (valid: {})",
                            presets::preset_names()
                        ),
                    );
                }
                found
            }
            _ => None,
        };
        if let (Some(preset), None) = (preset, &provider.base_url) {
            provider.base_url = Some(preset.base_url.to_owned());
        }
        match (&provider.kind, &provider.base_url) {
            (ProviderKind::Openai, None) => provider.base_url = Some(OPENAI_BASE_URL.to_owned()),
            // An unknown preset is reported already; a missing URL would only be its echo.
            (ProviderKind::OpenaiCompatible, None) if provider.preset.is_none() => {
                problem(
                    "base_url",
                    "base_url is required for kind \"openai-compatible\" without a preset".into(),
                );
            }
            (ProviderKind::Azure, None) => {
                problem(
                    "base_url",
                    "base_url is required for kind \"azure\" (the resource endpoint, such as \
                     \"https://NAME.openai.azure.com\")"
                        .into(),
                );
            }
            (_, Some(url)) if !(url.starts_with("https://") || url.starts_with("http://")) => {
                problem(
                    "base_url",
                    "base_url must start with https:// or http://".to_owned(),
                );
            }
            _ => {}
        }

        let timeouts = [
            ("connect_timeout", provider.connect_timeout),
            ("first_token_timeout", provider.first_token_timeout),
            ("idle_timeout", provider.idle_timeout),
            ("request_timeout", provider.request_timeout),
        ];
        for (key, timeout) in timeouts {
            if timeout.0.is_zero() {
                problem(key, format!("{key} must be above zero"));
            }
        }
    }
}

/// The keys only one kind reads: required ones must be there, the others must not be (a
/// `region` on an `openai` provider is a mistake worth hearing about), and defaults that depend
/// on them are filled in.
fn kind_specific(provider: &mut ProviderConfig, problem: &mut impl FnMut(&'static str, String)) {
    let kind = provider.kind;
    let foreign = |key: &'static str, owner: ProviderKind| {
        (kind != owner).then(|| {
            (
                key,
                format!("{key} applies only to kind {:?}", owner.name()),
            )
        })
    };
    let set = [
        (
            "preset",
            provider.preset.is_some(),
            ProviderKind::OpenaiCompatible,
        ),
        (
            "api_version",
            provider.api_version.is_some(),
            ProviderKind::Azure,
        ),
        ("region", provider.region.is_some(), ProviderKind::Bedrock),
        (
            "access_key_id",
            provider.access_key_id.is_some(),
            ProviderKind::Bedrock,
        ),
        (
            "secret_access_key",
            provider.secret_access_key.is_some(),
            ProviderKind::Bedrock,
        ),
        (
            "session_token",
            provider.session_token.is_some(),
            ProviderKind::Bedrock,
        ),
    ];
    for (key, message) in set
        .into_iter()
        .filter(|(_, is_set, _)| *is_set)
        .filter_map(|(key, _, owner)| foreign(key, owner))
    {
        problem(key, message);
    }
    match kind {
        ProviderKind::Azure => {
            provider
                .api_version
                .get_or_insert_with(|| AZURE_API_VERSION.to_owned());
        }
        ProviderKind::Bedrock => {
            match &provider.region {
                None => problem(
                    "region",
                    "region is required for kind \"bedrock\" (or set AWS_REGION)".to_owned(),
                ),
                Some(region)
                    if !region
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-') =>
                {
                    problem(
                        "region",
                        format!(
                            "region {region:?} is not an AWS region name, such as \"us-east-1\""
                        ),
                    );
                }
                Some(region) if provider.base_url.is_none() => {
                    provider.base_url =
                        Some(format!("https://bedrock-runtime.{region}.amazonaws.com"));
                }
                Some(_) => {}
            }
            for (key, value) in [
                ("access_key_id", &provider.access_key_id),
                ("secret_access_key", &provider.secret_access_key),
            ] {
                if value.is_none() {
                    problem(
                        key,
                        format!(
                            "{key} is required for kind \"bedrock\" (or set AWS_ACCESS_KEY_ID and \
                             AWS_SECRET_ACCESS_KEY)"
                        ),
                    );
                }
            }
        }
        ProviderKind::Openai
        | ProviderKind::OpenaiCompatible
        | ProviderKind::Anthropic
        | ProviderKind::Gemini
        | ProviderKind::Mock => {}
    }
}

/// Fills `bedrock` providers' unset region and credentials from the standard AWS environment
/// variables, as every AWS tool does. The credentials are taken as a set, and only when the file
/// names neither key, so a file's key is never paired with another account's secret.
pub(super) fn aws_environment(
    providers: &mut [ProviderConfig],
    env: &dyn Fn(&str) -> Option<String>,
) {
    let var = |name: &str| env(name).filter(|value| !value.trim().is_empty());
    let unset = |value: &Option<String>| value.as_deref().is_none_or(|v| v.trim().is_empty());
    for provider in providers
        .iter_mut()
        .filter(|provider| provider.kind == ProviderKind::Bedrock)
    {
        if unset(&provider.region) {
            provider.region = var("AWS_REGION").or_else(|| var("AWS_DEFAULT_REGION"));
        }
        if unset(&provider.access_key_id) && unset(&provider.secret_access_key) {
            provider.access_key_id = var("AWS_ACCESS_KEY_ID");
            provider.secret_access_key = var("AWS_SECRET_ACCESS_KEY");
            if unset(&provider.session_token) {
                provider.session_token = var("AWS_SESSION_TOKEN");
            }
        }
    }
}

/// Fills the unset `api_key` of `openai-compatible` providers with a preset from the preset's
/// variable, read through the same lookup as `${VAR}` (an empty variable counts as unset).
pub(super) fn preset_environment(
    providers: &mut [ProviderConfig],
    env: &dyn Fn(&str) -> Option<String>,
) {
    for provider in providers
        .iter_mut()
        .filter(|provider| provider.kind == ProviderKind::OpenaiCompatible)
    {
        let Some(variable) = provider
            .preset
            .as_deref()
            .and_then(presets::preset_named)
            .and_then(|preset: &Preset| preset.api_key_env)
        else {
            continue;
        };
        if provider
            .api_key
            .as_deref()
            .is_none_or(|key| key.trim().is_empty())
        {
            provider.api_key = env(variable).filter(|key| !key.trim().is_empty());
        }
    }
}

fn clear_if_empty(value: &mut Option<String>) {
    if value.as_deref().is_some_and(|text| text.trim().is_empty()) {
        *value = None;
    }
}

/// Checks a list of models. With `providers`, every endpoint must name one of them (the user's
/// own models); without, provider names are left to the merge (the bundled catalog).
pub(super) fn models(
    models: &[ModelConfig],
    providers: Option<&[ProviderConfig]>,
    problems: &mut Vec<Problem>,
) {
    let mut first_use: HashMap<&str, usize> = HashMap::new();
    for (index, model) in models.iter().enumerate() {
        let path = KeyPath::root("models").index(index);
        let subject = format!("models[{index}] (id {:?})", model.id);
        let mut problem = |path: KeyPath, message: String| {
            problems.push(Problem::new(path, format!("{subject}: {message}")));
        };

        if !is_model_id(&model.id) {
            problem(
                path.key("id"),
                "id must be `author/slug`, such as \"openai/gpt-4o\", without spaces or ':'"
                    .to_owned(),
            );
        } else if let Some(first) = first_use.get(model.id.as_str()) {
            problem(
                path.key("id"),
                format!("id is already used by models[{first}]"),
            );
        } else {
            first_use.insert(&model.id, index);
        }
        if model.context_length == Some(0) {
            problem(
                path.key("context_length"),
                "context_length must be above zero".to_owned(),
            );
        }
        if model.endpoints.is_empty() {
            problem(
                path.key("id"),
                "has no endpoints; add at least one [[models.endpoints]]".to_owned(),
            );
        }

        let mut seen_providers: HashMap<&str, usize> = HashMap::new();
        for (number, endpoint) in model.endpoints.iter().enumerate() {
            let path = path.key("endpoints").index(number);
            let subject = format!("endpoints[{number}] (provider {:?})", endpoint.provider);
            let mut endpoint_problem = |key: &'static str, message: String| {
                problem(path.key(key), format!("{subject}: {message}"));
            };

            if let Some(first) = seen_providers.get(endpoint.provider.as_str()) {
                endpoint_problem(
                    "provider",
                    format!("the provider already serves this model in endpoints[{first}]"),
                );
            } else {
                seen_providers.insert(&endpoint.provider, number);
            }
            if let Some(providers) = providers
                && !providers
                    .iter()
                    .any(|provider| provider.id == endpoint.provider)
            {
                let configured: Vec<&str> = providers
                    .iter()
                    .map(|provider| provider.id.as_str())
                    .collect();
                endpoint_problem(
                    "provider",
                    format!(
                        "provider is not configured (configured: {})",
                        if configured.is_empty() {
                            "none".into()
                        } else {
                            configured.join(", ")
                        }
                    ),
                );
            }
            if endpoint.upstream.trim().is_empty() {
                endpoint_problem(
                    "upstream",
                    "upstream must name the provider's model".to_owned(),
                );
            }
            let prices = [
                ("prompt", Some(&endpoint.prompt)),
                ("completion", Some(&endpoint.completion)),
                ("cache_read", endpoint.cache_read.as_ref()),
                ("cache_write", endpoint.cache_write.as_ref()),
            ];
            for (key, text) in prices {
                if let Some(Err(error)) = text.map(|text| Price::parse(text)) {
                    endpoint_problem(key, format!("{key}: {error}"));
                }
            }
            if endpoint.max_output == Some(0) {
                endpoint_problem("max_output", "max_output must be above zero".to_owned());
            }
            if endpoint.supports.iter().any(|name| name.trim().is_empty()) {
                endpoint_problem("supports", "supports lists an empty name".to_owned());
            }
        }
    }
}

/// `author/slug`: the form callers send and `GET /v1/models/{author}/{slug}/endpoints` parses;
/// no `:` because `:floor`, `:nitro` and `:free` are suffixes on it.
fn is_model_id(id: &str) -> bool {
    let Some((author, slug)) = id.split_once('/') else {
        return false;
    };
    let part_ok = |part: &str| !part.is_empty() && !part.contains(['/', ':']);
    part_ok(author) && part_ok(slug) && !id.contains(char::is_whitespace)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Config {
        toml::from_str(text).unwrap()
    }

    fn messages(text: &str) -> Vec<String> {
        let mut config = parse(text);
        let mut problems = Vec::new();
        settings(&mut config, &mut problems);
        models(&config.models, Some(&config.providers), &mut problems);
        problems
            .into_iter()
            .map(|problem| problem.message)
            .collect()
    }

    #[test]
    fn a_valid_config_has_no_problems() {
        let text = r#"
            [[providers]]
            id = "mock"
            kind = "mock"
            [[models]]
            id = "switchyard/echo"
            [[models.endpoints]]
            provider = "mock"
            upstream = "echo"
            prompt = "1"
            completion = "2"
        "#;
        assert_eq!(messages(text), Vec::<String>::new());
    }

    #[test]
    fn limits_default_to_unlimited_keys_and_20_and_50_free_requests_and_refuse_zero() {
        let limits = parse("").limits;
        assert_eq!(
            (limits.requests_per_minute, limits.requests_per_day),
            (None, None)
        );
        assert_eq!(
            (
                limits.free_requests_per_minute,
                limits.free_requests_per_day
            ),
            (20, 50)
        );
        let zero = r#"
            [limits]
            requests_per_minute = 0
            free_requests_per_day = 0
        "#;
        assert_eq!(
            messages(zero),
            [
                "limits.requests_per_minute: must be at least 1",
                "limits.free_requests_per_day: must be at least 1"
            ]
        );
        assert!(toml::from_str::<Config>("[limits]\nrequests_per_hour = 5").is_err());
    }

    #[test]
    fn openai_compatible_requires_a_base_url_and_openai_gets_a_default() {
        let text = r#"
            [[providers]]
            id = "openai"
            kind = "openai"
            [[providers]]
            id = "groq"
            kind = "openai-compatible"
        "#;
        assert_eq!(
            messages(text),
            [
                r#"providers[1] (id "groq"): base_url is required for kind "openai-compatible" without a preset"#
            ]
        );
        let mut config = parse(text);
        settings(&mut config, &mut Vec::new());
        assert_eq!(
            config.providers[0].base_url.as_deref(),
            Some(OPENAI_BASE_URL)
        );
    }

    #[test]
    fn azure_requires_a_base_url_and_gets_the_ga_api_version() {
        let text = r#"
            [[providers]]
            id = "azure"
            kind = "azure"
            [[providers]]
            id = "azure-eu"
            kind = "azure"
            base_url = "https://contoso.openai.azure.com"
        "#;
        let messages = messages(text);
        assert_eq!(messages.len(), 1, "{messages:?}");
        assert!(messages[0].starts_with(r#"providers[0] (id "azure"): base_url is required"#));
        let mut config = parse(text);
        settings(&mut config, &mut Vec::new());
        assert_eq!(
            config.providers[1].api_version.as_deref(),
            Some(AZURE_API_VERSION)
        );
    }

    #[test]
    fn bedrock_requires_a_region_and_credentials_and_gets_the_regional_url() {
        let missing = r#"
            [[providers]]
            id = "bedrock"
            kind = "bedrock"
        "#;
        let messages = messages(missing);
        assert_eq!(messages.len(), 3, "{messages:?}");
        assert!(messages[0].contains("region is required"));
        assert!(messages[1].contains("access_key_id is required"));
        assert!(messages[2].contains("secret_access_key is required"));

        let complete = r#"
            [[providers]]
            id = "bedrock"
            kind = "bedrock"
            region = "eu-west-3"
            access_key_id = "AKID"
            secret_access_key = "secret"
        "#;
        let mut config = parse(complete);
        let mut problems = Vec::new();
        settings(&mut config, &mut problems);
        assert!(problems.is_empty());
        assert_eq!(
            config.providers[0].base_url.as_deref(),
            Some("https://bedrock-runtime.eu-west-3.amazonaws.com")
        );
    }

    #[test]
    fn keys_of_another_kind_are_errors() {
        let text = r#"
            [[providers]]
            id = "openai"
            kind = "openai"
            region = "us-east-1"
            api_version = "2024-10-21"
        "#;
        assert_eq!(
            messages(text),
            [
                r#"providers[0] (id "openai"): api_version applies only to kind "azure""#,
                r#"providers[0] (id "openai"): region applies only to kind "bedrock""#,
            ]
        );
    }

    #[test]
    fn a_preset_fills_the_base_url_and_an_explicit_one_wins() {
        let text = r#"
            [[providers]]
            id = "mistral"
            kind = "openai-compatible"
            preset = "mistral"
            [[providers]]
            id = "local"
            kind = "openai-compatible"
            preset = "ollama"
            base_url = "http://gpu-box:11434/v1"
        "#;
        let mut config = parse(text);
        let mut problems = Vec::new();
        settings(&mut config, &mut problems);
        assert_eq!(problems, Vec::new());
        assert_eq!(
            config.providers[0].base_url.as_deref(),
            Some("https://api.mistral.ai/v1")
        );
        assert_eq!(
            config.providers[1].base_url.as_deref(),
            Some("http://gpu-box:11434/v1")
        );
    }

    #[test]
    fn an_unknown_preset_lists_the_valid_ones_and_other_kinds_take_none() {
        let text = r#"
            [[providers]]
            id = "mistral"
            kind = "openai-compatible"
            preset = "mistrall"
            [[providers]]
            id = "openai"
            kind = "openai"
            preset = "openai"
        "#;
        let messages = messages(text);
        assert_eq!(messages.len(), 2, "{messages:?}");
        assert!(
            messages[0].starts_with(
                r#"providers[0] (id "mistral"): unknown preset "mistrall" (valid: openai, mistral, groq,"#
            ),
            "{}",
            messages[0]
        );
        assert!(messages[0].ends_with("lmstudio)"), "{}", messages[0]);
        assert_eq!(
            messages[1],
            r#"providers[1] (id "openai"): preset applies only to kind "openai-compatible""#
        );
    }

    #[test]
    fn a_preset_takes_its_key_from_its_variable_unless_the_file_names_one() {
        let text = r#"
            [[providers]]
            id = "groq"
            kind = "openai-compatible"
            preset = "groq"
            [[providers]]
            id = "groq-team"
            kind = "openai-compatible"
            preset = "groq"
            api_key = "gsk-file"
            [[providers]]
            id = "local"
            kind = "openai-compatible"
            preset = "vllm"
        "#;
        let env = |name: &str| (name == "GROQ_API_KEY").then(|| "gsk-env".to_owned());
        let mut config = parse(text);
        preset_environment(&mut config.providers, &env);
        let keys: Vec<Option<&str>> = config
            .providers
            .iter()
            .map(|provider| provider.api_key.as_deref())
            .collect();
        assert_eq!(keys, [Some("gsk-env"), Some("gsk-file"), None]);
    }

    #[test]
    fn bedrock_falls_back_to_the_standard_aws_environment() {
        let text = r#"
            [[providers]]
            id = "bedrock"
            kind = "bedrock"
        "#;
        let env = |name: &str| match name {
            "AWS_REGION" => Some("us-west-2".to_owned()),
            "AWS_ACCESS_KEY_ID" => Some("AKIDENV".to_owned()),
            "AWS_SECRET_ACCESS_KEY" => Some("env-secret".to_owned()),
            "AWS_SESSION_TOKEN" => Some("env-token".to_owned()),
            _ => None,
        };
        let mut config = parse(text);
        aws_environment(&mut config.providers, &env);
        let mut problems = Vec::new();
        settings(&mut config, &mut problems);
        assert!(problems.is_empty());
        let provider = &config.providers[0];
        assert_eq!(provider.region.as_deref(), Some("us-west-2"));
        assert_eq!(provider.access_key_id.as_deref(), Some("AKIDENV"));
        assert_eq!(provider.session_token.as_deref(), Some("env-token"));
        let printed = format!("{provider:?}");
        assert!(!printed.contains("env-secret") && !printed.contains("env-token"));
    }

    #[test]
    fn a_files_access_key_is_never_paired_with_the_environments_secret() {
        let text = r#"
            [[providers]]
            id = "bedrock"
            kind = "bedrock"
            region = "us-east-1"
            access_key_id = "AKIDFILE"
        "#;
        let env = |name: &str| (name == "AWS_SECRET_ACCESS_KEY").then(|| "env-secret".to_owned());
        let mut config = parse(text);
        aws_environment(&mut config.providers, &env);
        assert_eq!(config.providers[0].secret_access_key, None);
    }

    #[test]
    fn provider_ids_must_be_unique_and_non_empty() {
        let text = r#"
            [[providers]]
            id = "a"
            kind = "mock"
            [[providers]]
            id = "a"
            kind = "mock"
            [[providers]]
            id = ""
            kind = "mock"
        "#;
        let found = messages(text);
        assert!(
            found[0].contains("already used by providers[0]"),
            "{found:?}"
        );
        assert!(found[1].contains("must be non-empty"), "{found:?}");
    }

    #[test]
    fn models_must_name_configured_providers_and_valid_prices() {
        let text = r#"
            [[providers]]
            id = "mock"
            kind = "mock"
            [[models]]
            id = "a/b"
            [[models.endpoints]]
            provider = "groq"
            upstream = "x"
            prompt = "1.5"
            completion = "-2"
            [[models]]
            id = "a/b"
            [[models.endpoints]]
            provider = "mock"
            upstream = "echo"
            prompt = "1"
            completion = "1"
        "#;
        let found = messages(text);
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(
            found[0].contains(r#"provider "groq"): provider is not configured (configured: mock)"#)
        );
        assert!(
            found[1].contains("completion: invalid price \"-2\""),
            "{found:?}"
        );
        assert!(
            found[2].contains("id is already used by models[0]"),
            "{found:?}"
        );
    }

    #[test]
    fn server_and_database_values_are_checked_without_printing_urls() {
        let text = r#"
            [server]
            listen = "localhost"
            [database]
            url = "mysql://root:hunter2@db/app"
        "#;
        let found = messages(text);
        assert!(found[0].starts_with("server.listen: \"localhost\" is not a socket address"));
        assert!(
            found[1].contains("unsupported scheme \"mysql\""),
            "{found:?}"
        );
        assert!(!found[1].contains("hunter2"));
    }

    #[test]
    fn an_admin_token_shorter_than_32_characters_is_refused_without_printing_it() {
        let config = |token: &str| format!("[server]\nadmin_token = \"{token}\"\n");
        let found = messages(&config("a"));
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].starts_with("server.admin_token: must be at least 32 characters"),
            "{found:?}"
        );
        assert!(!found[0].contains("\"a\""), "{found:?}");
        let almost = "x".repeat(31);
        assert_eq!(messages(&config(&almost)).len(), 1);
        assert!(messages(&config(&format!("{almost}é"))).is_empty());
        assert!(messages(&config("")).is_empty(), "empty means no token");
    }

    #[test]
    fn model_ids_are_author_slash_slug() {
        assert!(is_model_id("openai/gpt-4o"));
        for bad in ["gpt-4o", "a/b/c", "/b", "a/", "a/b:free", "a /b"] {
            assert!(!is_model_id(bad), "{bad}");
        }
    }
}
