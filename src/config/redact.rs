//! How secrets in the config print: masked keys and URLs without their passwords. Formatting
//! only; the values themselves are never changed.

use std::fmt;

/// An optional secret that prints as `Some("***")` or `None`.
pub(super) struct Masked<'a>(pub(super) Option<&'a str>);

impl fmt::Debug for Masked<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(_) => f.write_str("Some(\"***\")"),
            None => f.write_str("None"),
        }
    }
}

/// A URL that prints without the password in its user info and without its query (where
/// drivers also accept passwords), e.g. `postgres://app:***@db/switchyard`.
#[derive(Clone, Copy)]
pub(super) struct RedactedUrl<'a>(pub(super) &'a str);

impl RedactedUrl<'_> {
    fn redacted(self) -> String {
        let url = self.0;
        let (url, had_query) = match url.split_once('?') {
            Some((base, _)) => (base, true),
            None => (url, false),
        };
        let mut out = match url.split_once("://") {
            Some((scheme, rest)) => {
                let authority_end = rest.find(['/', '#']).unwrap_or(rest.len());
                let (authority, path) = rest.split_at(authority_end);
                match authority.rsplit_once('@') {
                    Some((user_info, host)) => {
                        let user = user_info
                            .split_once(':')
                            .map_or(user_info, |(user, _)| user);
                        let masked = if user_info.contains(':') { ":***" } else { "" };
                        format!("{scheme}://{user}{masked}@{host}{path}")
                    }
                    None => format!("{scheme}://{rest}"),
                }
            }
            None => url.to_owned(),
        };
        if had_query {
            out.push_str("?***");
        }
        out
    }
}

impl fmt::Debug for RedactedUrl<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, ProviderConfig, ProviderKind};

    #[test]
    fn urls_lose_their_passwords_and_queries() {
        let cases = [
            (
                "postgres://app:hunter2@db:5432/switchyard",
                "postgres://app:***@db:5432/switchyard",
            ),
            ("redis://:hunter2@cache:6379", "redis://:***@cache:6379"),
            ("sqlite://switchyard.db", "sqlite://switchyard.db"),
            (
                "postgres://db/app?password=hunter2",
                "postgres://db/app?***",
            ),
            ("postgres://app@db/app", "postgres://app@db/app"),
        ];
        for (url, expected) in cases {
            assert_eq!(RedactedUrl(url).redacted(), expected);
        }
    }

    #[test]
    fn secrets_are_redacted_in_debug_output() {
        let text = r#"
            [server]
            admin_token = "admin-secret"
            [database]
            url = "postgres://app:db-secret@db/switchyard"
            [redis]
            url = "redis://:redis-secret@cache:6379"
            [[providers]]
            id = "openai"
            kind = "openai"
            api_key = "sk-provider-secret"
        "#;
        let config: Config = toml::from_str(text).unwrap();
        let printed = format!("{config:?} {config:#?}");
        for secret in [
            "admin-secret",
            "db-secret",
            "redis-secret",
            "sk-provider-secret",
        ] {
            assert!(!printed.contains(secret), "{secret} leaked: {printed}");
        }
        assert!(printed.contains("openai"), "non-secret fields still print");

        let mut provider = ProviderConfig::new("p", ProviderKind::Mock);
        assert!(format!("{provider:?}").contains("api_key: None"));
        provider.api_key = Some("k".to_owned());
        assert!(format!("{provider:?}").contains("api_key: Some(\"***\")"));
    }
}
