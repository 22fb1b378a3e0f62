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
/// drivers also accept passwords), e.g. `postgres://app:***@db/switchyard?***`.
#[derive(Clone, Copy)]
pub(super) struct RedactedUrl<'a>(pub(super) &'a str);

impl RedactedUrl<'_> {
    /// The user info runs to the last `@`, whatever the password holds: a password is the one
    /// part people write with `/`, `#`, `?`, `@` or `:` unescaped. When the password part holds a
    /// `?`, that `@` may be one inside a query instead, so what follows it is masked too.
    fn redacted(self) -> String {
        let Some((scheme, rest)) = self.0.split_once("://") else {
            return without_query(self.0);
        };
        let password = rest
            .rsplit_once('@')
            .and_then(|(user_info, host)| Some((user_info.split_once(':')?, host)));
        match password {
            Some(((user, password), _)) if password.contains('?') => {
                format!("{scheme}://{user}:***@***")
            }
            Some(((user, _), host)) => format!("{scheme}://{user}:***@{}", without_query(host)),
            None => format!("{scheme}://{}", without_query(rest)),
        }
    }
}

fn without_query(url: &str) -> String {
    match url.split_once('?') {
        Some((base, _)) => format!("{base}?***"),
        None => url.to_owned(),
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
            (
                "sqlite://switchyard.db?mode=rwc",
                "sqlite://switchyard.db?***",
            ),
        ];
        for (url, expected) in cases {
            assert_eq!(RedactedUrl(url).redacted(), expected);
        }
    }

    #[test]
    fn a_password_is_masked_whatever_it_holds() {
        let passwords = [
            "Zq/Wk",
            "Zq#Wk",
            "Zq@Wk",
            "Zq:Wk",
            "Zq/Wk#Jv@Xy:Pm",
            "Zq?Wk",
            "Zq@Wk?Jv@",
        ];
        for password in passwords {
            let url = format!("postgres://app:{password}@db:5432/switchyard?sslmode=require");
            let redacted = RedactedUrl(&url).redacted();
            for part in password.split(['/', '#', '@', ':', '?']) {
                assert!(
                    !redacted.contains(part) || part.is_empty(),
                    "{url} -> {redacted}"
                );
            }
            let expected = if password.contains('?') {
                "postgres://app:***@***"
            } else {
                "postgres://app:***@db:5432/switchyard?***"
            };
            assert_eq!(redacted, expected, "{url}");
        }
    }

    #[test]
    fn an_at_sign_in_a_query_keeps_the_query_masked() {
        let cases = [
            ("postgres://db/app?password=p@ss", "postgres://db/app?***"),
            (
                "postgres://db:5432/app?password=p@ss",
                "postgres://db:***@***",
            ),
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
