//! Finding, reading, substituting, parsing and validating the config file, then merging it with
//! the bundled catalog; falls back to the embedded default. The only part of `config` that reads
//! files or the process environment, and every error it returns names the file, key and line.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use super::bundled::{self, CatalogFile};
use super::document::Document;
use super::env::{Substituted, substitute};
use super::validate::{self, Problem};
use super::{
    Config, CreditsConfig, DatabaseConfig, HealthConfig, LimitsConfig, LoadedConfig, ModelConfig,
    ServerConfig,
};

#[derive(Debug, Clone)]
pub enum ConfigSource {
    File(PathBuf),
    EmbeddedDefault,
}

/// One thing wrong with a config, located in its file where that is possible.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// The file as the user named it, or the embedded default or bundled catalog.
    pub origin: String,
    /// 1-based line and column in the file as written (before `${VAR}` substitution).
    pub position: Option<(usize, usize)>,
    /// Names the key; never holds a value substituted from the environment.
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some((line, column)) => write!(f, "{}:{line}:{column}: {}", self.origin, self.message),
            None => write!(f, "{}: {}", self.origin, self.message),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Every problem found, one per line (parse errors stop at the first).
    #[error("{}", listing(.problems))]
    Invalid { problems: Vec<ConfigProblem> },
}

fn listing(problems: &[ConfigProblem]) -> String {
    let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
    lines.join("\n")
}

const EMBEDDED_ORIGIN: &str = "embedded default";

/// `--config`, else `$SWITCHYARD_CONFIG`, else `./switchyard.toml`, else the embedded default.
pub fn load(explicit: Option<&Path>) -> Result<LoadedConfig, ConfigError> {
    load_with(explicit, &|name| std::env::var(name).ok())
}

/// [`load`] with the environment passed in, so tests never touch the process environment.
pub(super) fn load_with(
    explicit: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<LoadedConfig, ConfigError> {
    let from_env = env("SWITCHYARD_CONFIG")
        .filter(|path| !path.is_empty())
        .map(PathBuf::from);
    let path = explicit.map(Path::to_path_buf).or(from_env).or_else(|| {
        let local = PathBuf::from("switchyard.toml");
        local.is_file().then_some(local)
    });
    let Some(path) = path else {
        return Ok(LoadedConfig {
            config: embedded_default(env)?,
            source: ConfigSource::EmbeddedDefault,
        });
    };
    let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
        path: path.clone(),
        source,
    })?;
    let config = from_text(&text, &path.display().to_string(), env)?;
    Ok(LoadedConfig {
        config,
        source: ConfigSource::File(path),
    })
}

/// A config file's text, all the way to the validated [`Config`] merged with the bundled
/// catalog; `origin` names the file in errors and `env` resolves `${VAR}`. What [`load`] does
/// after reading the file, for callers (and tests) that hold the text already.
pub fn from_text(
    text: &str,
    origin: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let file = SourceFile::new(text, origin, env)?;
    let mut config: Config = file.parse()?;
    validate::aws_environment(&mut config.providers, env);
    validate::preset_environment(&mut config.providers, env);
    let mut problems = Vec::new();
    validate::settings(&mut config, &mut problems);
    validate::models(&config.models, Some(&config.providers), &mut problems);
    file.reject(problems)?;
    let user_models = std::mem::take(&mut config.models);
    config.models = bundled::merge(user_models, bundled_catalog()?, &config.providers);
    Ok(config)
}

/// No file: listen locally, SQLite beside the binary, the `mock` provider and every well-known
/// provider whose key is in the environment, with the bundled catalog.
pub(super) fn embedded_default(
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let mut config = Config {
        server: ServerConfig::default(),
        database: DatabaseConfig::default(),
        health: HealthConfig::default(),
        credits: CreditsConfig::default(),
        limits: LimitsConfig::default(),
        redis: None,
        providers: bundled::default_providers(env),
        models: Vec::new(),
    };
    let mut problems = Vec::new();
    validate::settings(&mut config, &mut problems);
    if !problems.is_empty() {
        let problems = problems
            .into_iter()
            .map(|problem| ConfigProblem {
                origin: EMBEDDED_ORIGIN.to_owned(),
                position: None,
                message: problem.message,
            })
            .collect();
        return Err(ConfigError::Invalid { problems });
    }
    config.models = bundled::merge(Vec::new(), bundled_catalog()?, &config.providers);
    Ok(config)
}

/// The catalog embedded in the binary, parsed and checked (its provider names are resolved by
/// the merge, not here).
pub(super) fn bundled_catalog() -> Result<Vec<ModelConfig>, ConfigError> {
    let file = SourceFile::new(bundled::CATALOG, bundled::CATALOG_ORIGIN, &|_| None)?;
    let catalog: CatalogFile = file.parse()?;
    let mut problems = Vec::new();
    validate::models(&catalog.models, None, &mut problems);
    file.reject(problems)?;
    Ok(catalog.models)
}

/// One file being loaded: its text as written and after substitution, so every error can be
/// placed in the former and scrubbed of values from the environment.
struct SourceFile<'a> {
    origin: &'a str,
    original: &'a str,
    substituted: Substituted,
}

impl<'a> SourceFile<'a> {
    fn new(
        original: &'a str,
        origin: &'a str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<SourceFile<'a>, ConfigError> {
        let substituted = substitute(original, env).map_err(|error| ConfigError::Invalid {
            problems: vec![ConfigProblem {
                origin: origin.to_owned(),
                position: Some(position(original, error.offset)),
                message: error.message,
            }],
        })?;
        Ok(SourceFile {
            origin,
            original,
            substituted,
        })
    }

    fn parse<T: DeserializeOwned>(&self) -> Result<T, ConfigError> {
        toml::from_str(&self.substituted.text).map_err(|error| {
            let span = error.span();
            // toml's own Display quotes the offending line, which may hold a substituted
            // secret; only its message is used.
            let mut message = self
                .substituted
                .scrub(span.as_ref(), error.message().trim());
            message = message.replace('\n', "; ");
            let offset = span.as_ref().map(|span| span.start);
            if let Some(path) =
                offset.and_then(|offset| Document::parse(&self.substituted.text).path_at(offset))
            {
                message = format!("{path}: {message}");
            }
            let original_offset = offset.map(|offset| self.substituted.original_offset(offset));
            let at_reference = |offset: usize| {
                self.original
                    .get(offset..)
                    .is_some_and(|rest| rest.starts_with("${"))
            };
            if original_offset.is_some_and(at_reference) {
                message.push_str(" (${VAR} is replaced only inside quoted strings)");
            }
            self.error(vec![(original_offset, message)])
        })
    }

    /// Turns semantic problems into one located error, or `Ok` when there are none.
    fn reject(&self, problems: Vec<Problem>) -> Result<(), ConfigError> {
        if problems.is_empty() {
            return Ok(());
        }
        let document = Document::parse(&self.substituted.text);
        let located = problems
            .into_iter()
            .map(|problem| {
                let span = document.span(&problem.path);
                let message = self.substituted.scrub(span.as_ref(), &problem.message);
                (
                    span.map(|span| self.substituted.original_offset(span.start)),
                    message,
                )
            })
            .collect();
        Err(self.error(located))
    }

    fn error(&self, problems: Vec<(Option<usize>, String)>) -> ConfigError {
        let problems = problems
            .into_iter()
            .map(|(offset, message)| ConfigProblem {
                origin: self.origin.to_owned(),
                position: offset.map(|offset| position(self.original, offset)),
                message,
            })
            .collect();
        ConfigError::Invalid { problems }
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn position(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line_start = before.rfind('\n').map_or(0, |n| n + 1);
    let line = before.matches('\n').count() + 1;
    (line, before[line_start..].chars().count() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ProviderKind;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn problems(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Vec<ConfigProblem> {
        match from_text(text, "switchyard.toml", env) {
            Err(ConfigError::Invalid { problems }) => problems,
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    fn line_of(text: &str, needle: &str) -> usize {
        text[..text.find(needle).unwrap()].matches('\n').count() + 1
    }

    const MOCK: &str = "[[providers]]\nid = \"mock\"\nkind = \"mock\"\n";

    #[test]
    fn an_unknown_key_is_reported_with_its_line() {
        let text = "# a comment\n[server]\nlisen = \"0.0.0.0:8080\"\n";
        let found = problems(text, &no_env);
        let error = ConfigError::Invalid {
            problems: found.clone(),
        }
        .to_string();
        assert_eq!(found[0].position, Some((3, 1)), "{error}");
        assert!(
            error.starts_with("switchyard.toml:3:1: server: unknown field `lisen`"),
            "{error}"
        );
        assert!(error.contains("expected one of `listen`"), "{error}");
    }

    #[test]
    fn a_wrong_type_names_the_key_and_line() {
        let text = format!("{MOCK}[[models]]\nid = \"a/b\"\ncontext_length = \"big\"\n");
        let error = problems(&text, &no_env)[0].to_string();
        let line = line_of(&text, "context_length");
        assert!(
            error.starts_with(&format!("switchyard.toml:{line}:")),
            "{error}"
        );
        assert!(
            error.contains("models[0].context_length: invalid type"),
            "{error}"
        );
    }

    #[test]
    fn a_bad_duration_names_the_key_and_line() {
        let text = format!("{MOCK}connect_timeout = \"5 parsecs\"\n");
        let error = problems(&text, &no_env)[0].to_string();
        assert!(
            error.starts_with("switchyard.toml:4:19: providers[0].connect_timeout:"),
            "{error}"
        );
        assert!(error.contains("invalid duration \"5 parsecs\""), "{error}");
    }

    #[test]
    fn a_semantic_error_is_located_at_its_key() {
        let text = "[[providers]]\nid = \"mock\"\nkind = \"mock\"\n\n[[providers]]\nid = \"groq\"\nkind = \"openai-compatible\"\n";
        let found = problems(text, &no_env);
        assert_eq!(found.len(), 1);
        let (line, _) = found[0].position.unwrap();
        assert!((5..=7).contains(&line), "line {line}");
        assert_eq!(
            found[0].message,
            r#"providers[1] (id "groq"): base_url is required for kind "openai-compatible" without a preset"#
        );
    }

    #[test]
    fn an_unknown_preset_is_located_on_its_line() {
        let text = format!(
            "{MOCK}[[providers]]\nid = \"local\"\nkind = \"openai-compatible\"\npreset = \"olama\"\n"
        );
        let found = problems(&text, &no_env);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(
            found[0].position.map(|(line, _)| line),
            Some(line_of(&text, "preset"))
        );
        assert!(
            found[0]
                .message
                .contains("unknown preset \"olama\" (valid: openai,"),
            "{}",
            found[0].message
        );
    }

    #[test]
    fn a_preset_key_comes_from_the_same_environment_as_substitution() {
        let text = format!(
            "{MOCK}[[providers]]\nid = \"mistral\"\nkind = \"openai-compatible\"\npreset = \"mistral\"\n"
        );
        let env = |name: &str| (name == "MISTRAL_API_KEY").then(|| "mk-test".to_owned());
        let config = from_text(&text, "switchyard.toml", &env).unwrap();
        let mistral = &config.providers[1];
        assert_eq!(mistral.api_key.as_deref(), Some("mk-test"));
        assert_eq!(
            mistral.base_url.as_deref(),
            Some("https://api.mistral.ai/v1")
        );
        assert!(
            config
                .models
                .iter()
                .any(|model| model.endpoints.iter().any(|e| e.provider == "mistral")),
            "the bundled Mistral models are served"
        );
    }

    #[test]
    fn a_bad_price_is_located_on_its_line() {
        let text = format!(
            "{MOCK}[[models]]\nid = \"a/b\"\n  [[models.endpoints]]\n  provider = \"mock\"\n  upstream = \"echo\"\n  prompt = \"1,5\"\n  completion = \"2\"\n"
        );
        let found = problems(&text, &no_env);
        assert_eq!(
            found[0].position.map(|(line, _)| line),
            Some(line_of(&text, "prompt"))
        );
        assert!(
            found[0].message.contains("prompt: invalid price \"1,5\""),
            "{}",
            found[0].message
        );
    }

    #[test]
    fn a_missing_env_var_is_an_error_naming_it() {
        let text = "[server]\nadmin_token = \"${SWITCHYARD_ADMIN_TOKEN}\"\n";
        let error = problems(text, &no_env)[0].to_string();
        assert!(
            error.starts_with("switchyard.toml:2:16: admin_token: "),
            "{error}"
        );
        assert!(
            error.contains("environment variable SWITCHYARD_ADMIN_TOKEN is not set"),
            "{error}"
        );
    }

    #[test]
    fn a_substituted_secret_never_appears_in_an_error() {
        let secret = "sk-very-secret-value";
        let env = move |name: &str| (name == "KEY").then(|| secret.to_owned());
        let typed = format!("{MOCK}[[models]]\nid = \"a/b\"\ncontext_length = \"${{KEY}}\"\n");
        let semantic = "[server]\nlisten = \"${KEY}\"\n";
        let listen_env = move |name: &str| (name == "KEY").then(|| "10.0.0.1:pw".to_owned());
        for (text, env) in [
            (typed.as_str(), &env as &dyn Fn(&str) -> Option<String>),
            (semantic, &listen_env),
        ] {
            let error = ConfigError::Invalid {
                problems: problems(text, env),
            }
            .to_string();
            assert!(
                !error.contains(secret) && !error.contains("10.0.0.1"),
                "{error}"
            );
            assert!(error.contains("***"), "{error}");
        }
    }

    #[test]
    fn substituted_values_reach_the_config() {
        let text = format!(
            "{MOCK}[server]\nadmin_token = \"${{TOKEN}}\"\nlisten = \"${{LISTEN:-0.0.0.0:9090}}\"\n"
        );
        let token = "t0ken-long-enough-to-guard-the-key-api";
        let env = |name: &str| (name == "TOKEN").then(|| token.to_owned());
        let config = from_text(&text, "switchyard.toml", &env).unwrap();
        assert_eq!(config.server.admin_token.as_deref(), Some(token));
        assert_eq!(config.server.listen, "0.0.0.0:9090");
    }

    #[test]
    fn a_reference_outside_quotes_gets_a_hint() {
        let error = problems("[server]\nlisten = ${LISTEN}\n", &no_env)[0].to_string();
        assert!(error.starts_with("switchyard.toml:2:10:"), "{error}");
        assert!(error.contains("only inside quoted strings"), "{error}");
    }

    #[test]
    fn a_user_model_naming_an_unknown_provider_is_an_error() {
        let text = format!(
            "{MOCK}[[models]]\nid = \"a/b\"\n[[models.endpoints]]\nprovider = \"groq\"\nupstream = \"x\"\nprompt = \"1\"\ncompletion = \"1\"\n"
        );
        let found = problems(&text, &no_env);
        assert!(
            found[0].message.contains("provider \"groq\""),
            "{}",
            found[0].message
        );
        assert_eq!(
            found[0].position.map(|(line, _)| line),
            Some(line_of(&text, "provider = \"groq\""))
        );
    }

    #[test]
    fn a_user_file_serves_only_what_it_configures_plus_the_matching_catalog() {
        let text = "[[providers]]\nid = \"openai\"\nkind = \"openai\"\napi_key = \"${OPENAI_API_KEY:-}\"\n";
        let config = from_text(text, "switchyard.toml", &no_env).unwrap();
        assert_eq!(
            config.providers[0].base_url.as_deref(),
            Some(validate::OPENAI_BASE_URL)
        );
        assert_eq!(config.providers[0].api_key, None, "an empty key means none");
        assert!(
            config
                .models
                .iter()
                .any(|model| model.id == "openai/gpt-4o")
        );
        assert!(
            config
                .models
                .iter()
                .all(|model| model.id.starts_with("openai/"))
        );
        assert!(
            config
                .models
                .iter()
                .all(|model| model.endpoints.iter().all(|e| e.provider == "openai"))
        );
    }

    #[test]
    fn the_embedded_default_serves_echo_and_the_providers_in_the_environment() {
        let config = embedded_default(&no_env).unwrap();
        assert_eq!(config.server.listen, "127.0.0.1:8080");
        assert_eq!(config.database.url, "sqlite://switchyard.db");
        let ids: Vec<&str> = config
            .models
            .iter()
            .map(|model| model.id.as_str())
            .collect();
        assert_eq!(ids, ["switchyard/echo"]);
        let echo = &config.models[0];
        assert_eq!(echo.context_length, Some(128_000));
        assert_eq!(
            (
                echo.endpoints[0].prompt.as_str(),
                echo.endpoints[0].completion.as_str()
            ),
            ("1", "2")
        );

        let env = |name: &str| match name {
            "ANTHROPIC_API_KEY" => Some("sk-ant-test".to_owned()),
            "XAI_API_KEY" => Some("xai-test".to_owned()),
            _ => None,
        };
        let config = embedded_default(&env).unwrap();
        let xai = config
            .providers
            .iter()
            .find(|provider| provider.id == "xai")
            .unwrap();
        assert_eq!(
            (xai.preset.as_deref(), xai.base_url.as_deref()),
            (Some("xai"), Some("https://api.x.ai/v1")),
            "the preset's base URL"
        );
        let anthropic = config
            .providers
            .iter()
            .find(|provider| provider.id == "anthropic")
            .unwrap();
        assert_eq!(
            (anthropic.kind, anthropic.base_url.as_deref()),
            (ProviderKind::Anthropic, None)
        );
        assert!(
            config
                .models
                .iter()
                .any(|model| model.id == "anthropic/claude-sonnet-4")
        );
        assert!(
            config
                .models
                .iter()
                .any(|model| model.id == "switchyard/echo")
        );
    }

    #[test]
    fn discovery_prefers_the_explicit_path_then_the_environment_variable() {
        let dir = tempfile::tempdir().unwrap();
        let explicit = dir.path().join("explicit.toml");
        let from_env = dir.path().join("env.toml");
        std::fs::write(
            &explicit,
            format!("{MOCK}[server]\nlisten = \"127.0.0.1:1\"\n"),
        )
        .unwrap();
        std::fs::write(
            &from_env,
            format!("{MOCK}[server]\nlisten = \"127.0.0.1:2\"\n"),
        )
        .unwrap();
        let env_path = from_env.display().to_string();
        let env = move |name: &str| (name == "SWITCHYARD_CONFIG").then(|| env_path.clone());

        let loaded = load_with(Some(&explicit), &env).unwrap();
        assert_eq!(loaded.config.server.listen, "127.0.0.1:1");
        let loaded = load_with(None, &env).unwrap();
        assert_eq!(loaded.config.server.listen, "127.0.0.1:2");
        assert_eq!(loaded.path(), Some(&from_env));
    }

    #[test]
    fn an_unreadable_file_names_its_path() {
        let error =
            load_with(Some(Path::new("/nonexistent/switchyard.toml")), &no_env).unwrap_err();
        assert!(
            error.to_string().contains("/nonexistent/switchyard.toml"),
            "{error}"
        );
    }

    #[test]
    fn the_example_config_is_valid_without_any_environment() {
        let text = include_str!("../../config/switchyard.example.toml");
        let config = from_text(text, "switchyard.example.toml", &no_env).unwrap();
        assert!(config.providers.len() >= 3);
        assert!(config.redis.is_some());
    }
}
