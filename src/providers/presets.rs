//! The OpenAI-compatible family: providers that speak OpenAI's chat API with their own base URL,
//! key variable and list of request fields they refuse. Knowledge only: `kind =
//! "openai-compatible"` with `preset = "<name>"` takes these defaults (config loading fills them
//! in) and the OpenAI adapter consults the refusals; nothing here does I/O.

/// What one OpenAI-compatible provider needs beyond OpenAI's wire format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preset {
    pub name: &'static str,
    pub base_url: &'static str,
    /// The environment variable its key is usually in; `None` for local servers without keys.
    pub api_key_env: Option<&'static str>,
    /// Top-level request fields it answers with an error; the adapter never sends them, and the
    /// sampling parameters among them count as unsupported on every endpoint of the provider.
    pub rejects: &'static [&'static str],
    /// Whether it refuses `max_completion_tokens` and wants the cap as `max_tokens`.
    pub wants_max_tokens: bool,
}

impl Preset {
    /// Whether the provider refuses this top-level request field.
    pub fn rejects(&self, field: &str) -> bool {
        self.rejects.contains(&field)
    }
}

const fn preset(name: &'static str, base_url: &'static str, env: Option<&'static str>) -> Preset {
    Preset {
        name,
        base_url,
        api_key_env: env,
        rejects: &[],
        wants_max_tokens: false,
    }
}

pub const OPENAI: Preset = preset(
    "openai",
    "https://api.openai.com/v1",
    Some("OPENAI_API_KEY"),
);

/// Mistral validates strictly and answers 422 `extra_forbidden` for OpenAI-only fields
/// (https://github.com/mistralai/platform-docs-public/issues/7); its chat API takes the output
/// cap as `max_tokens` (https://docs.mistral.ai/api/#tag/chat).
pub const MISTRAL: Preset = Preset {
    rejects: &[
        "max_completion_tokens",
        "logit_bias",
        "logprobs",
        "top_logprobs",
        "user",
        "metadata",
        "store",
        "service_tier",
    ],
    wants_max_tokens: true,
    ..preset(
        "mistral",
        "https://api.mistral.ai/v1",
        Some("MISTRAL_API_KEY"),
    )
};

/// https://console.groq.com/docs/openai: "logprobs, logit_bias, top_logprobs ... will result in
/// a 400 error".
pub const GROQ: Preset = Preset {
    rejects: &["logprobs", "logit_bias", "top_logprobs"],
    ..preset(
        "groq",
        "https://api.groq.com/openai/v1",
        Some("GROQ_API_KEY"),
    )
};

pub const TOGETHER: Preset = preset(
    "together",
    "https://api.together.xyz/v1",
    Some("TOGETHER_API_KEY"),
);

pub const FIREWORKS: Preset = preset(
    "fireworks",
    "https://api.fireworks.ai/inference/v1",
    Some("FIREWORKS_API_KEY"),
);

/// https://api-docs.deepseek.com/guides/reasoning_model: `logprobs` and `top_logprobs` are
/// errors on the reasoner.
pub const DEEPSEEK: Preset = Preset {
    rejects: &["logprobs", "top_logprobs"],
    ..preset(
        "deepseek",
        "https://api.deepseek.com/v1",
        Some("DEEPSEEK_API_KEY"),
    )
};

pub const XAI: Preset = preset("xai", "https://api.x.ai/v1", Some("XAI_API_KEY"));

pub const OPENROUTER: Preset = preset(
    "openrouter",
    "https://openrouter.ai/api/v1",
    Some("OPENROUTER_API_KEY"),
);

/// Perplexity's chat API documents no `logit_bias`, `logprobs`, `top_logprobs` or `n`
/// (https://docs.perplexity.ai/api-reference/chat-completions-post); not re-checked against a
/// live answer, so the list errs on the side of not sending them.
pub const PERPLEXITY: Preset = Preset {
    rejects: &["logit_bias", "logprobs", "top_logprobs", "n"],
    ..preset(
        "perplexity",
        "https://api.perplexity.ai",
        Some("PERPLEXITY_API_KEY"),
    )
};

/// Local servers: no key, their default ports.
pub const OLLAMA: Preset = preset("ollama", "http://localhost:11434/v1", None);
pub const VLLM: Preset = preset("vllm", "http://localhost:8000/v1", None);
pub const LMSTUDIO: Preset = preset("lmstudio", "http://localhost:1234/v1", None);

/// Every preset, in the order documentation lists them.
pub const PRESETS: &[Preset] = &[
    OPENAI, MISTRAL, GROQ, TOGETHER, FIREWORKS, DEEPSEEK, XAI, OPENROUTER, PERPLEXITY, OLLAMA,
    VLLM, LMSTUDIO,
];

/// The preset with this name.
pub fn preset_named(name: &str) -> Option<&'static Preset> {
    PRESETS.iter().find(|preset| preset.name == name)
}

/// The valid names, comma-separated, for error messages.
pub fn preset_names() -> String {
    let names: Vec<&str> = PRESETS.iter().map(|preset| preset.name).collect();
    names.join(", ")
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn presets_are_found_by_name_and_unknown_names_are_not() {
        assert_eq!(preset_named("groq"), Some(&GROQ));
        assert_eq!(
            preset_named("mistral").map(|preset| preset.base_url),
            Some("https://api.mistral.ai/v1")
        );
        assert_eq!(preset_named("Groq"), None);
        assert_eq!(preset_named("anthropic"), None);
    }

    #[test]
    fn every_preset_has_a_unique_name_and_an_http_base_url() {
        let mut names = HashSet::new();
        for preset in PRESETS {
            assert!(names.insert(preset.name), "{} twice", preset.name);
            assert!(
                preset.base_url.starts_with("https://") || preset.base_url.starts_with("http://"),
                "{}",
                preset.name
            );
            assert!(!preset.base_url.ends_with('/'), "{}", preset.name);
        }
        assert_eq!(names.len(), 12);
    }

    #[test]
    fn local_servers_need_no_key_and_hosted_ones_name_their_variable() {
        for local in [OLLAMA, VLLM, LMSTUDIO] {
            assert_eq!(local.api_key_env, None, "{}", local.name);
            assert!(local.base_url.starts_with("http://localhost:"));
        }
        assert_eq!(MISTRAL.api_key_env, Some("MISTRAL_API_KEY"));
        assert_eq!(PERPLEXITY.api_key_env, Some("PERPLEXITY_API_KEY"));
    }

    #[test]
    fn mistral_wants_max_tokens_and_refuses_openai_only_fields() {
        assert!(preset_named("mistral").is_some_and(|preset| preset.wants_max_tokens));
        assert!(MISTRAL.rejects("max_completion_tokens"));
        assert!(MISTRAL.rejects("logit_bias") && MISTRAL.rejects("user"));
        assert!(!MISTRAL.rejects("temperature"));
        assert!(!OPENAI.rejects("logprobs"));
        assert!(preset_names().starts_with("openai, mistral, groq"));
    }
}
