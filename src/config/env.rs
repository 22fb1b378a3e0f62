//! `${VAR}` substitution inside the config file's quoted strings; knows TOML string syntax, never
//! what a key means, and never lets a substituted value reach an error message.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

use super::redact::Masked;

/// The file after substitution, plus what is needed to point back into the original text and to
/// keep substituted values out of error messages.
pub(super) struct Substituted {
    pub(super) text: String,
    regions: Vec<Region>,
}

/// One replaced `${…}` (or a `$${` escape, which replaces two characters by one).
struct Region {
    original: Range<usize>,
    substituted: Range<usize>,
    /// The raw value when it came from the environment: the one thing errors must never show.
    secret: Option<String>,
}

/// Where substitution failed, as a byte offset into the original text.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct SubstitutionError {
    pub(super) offset: usize,
    pub(super) message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quote {
    Basic,
    MultiBasic,
    Literal,
    MultiLiteral,
}

impl Quote {
    fn delimiter(self) -> u8 {
        match self {
            Quote::Basic | Quote::MultiBasic => b'"',
            Quote::Literal | Quote::MultiLiteral => b'\'',
        }
    }

    fn is_multiline(self) -> bool {
        matches!(self, Quote::MultiBasic | Quote::MultiLiteral)
    }

    /// The value as it must be written inside this kind of string, or `None` when this kind of
    /// string cannot hold it (literal strings have no escapes).
    fn encode(self, value: &str) -> Option<Cow<'_, str>> {
        match self {
            Quote::Basic | Quote::MultiBasic => Some(escape_basic(value)),
            Quote::Literal => {
                let forbidden = |c: char| c == '\'' || (c.is_control() && c != '\t');
                (!value.contains(forbidden)).then_some(Cow::Borrowed(value))
            }
            Quote::MultiLiteral => {
                let forbidden = |c: char| c.is_control() && !matches!(c, '\t' | '\n' | '\r');
                (!value.contains("'''") && !value.contains(forbidden))
                    .then_some(Cow::Borrowed(value))
            }
        }
    }
}

fn escape_basic(value: &str) -> Cow<'_, str> {
    let needs_escape = |c: char| c == '"' || c == '\\' || c.is_control();
    if !value.contains(needs_escape) {
        return Cow::Borrowed(value);
    }
    let mut escaped = String::with_capacity(value.len() + 8);
    for c in value.chars() {
        match c {
            '"' => escaped.push_str("\\\""),
            '\\' => escaped.push_str("\\\\"),
            '\n' => escaped.push_str("\\n"),
            '\r' => escaped.push_str("\\r"),
            '\t' => escaped.push_str("\\t"),
            c if c.is_control() => escaped.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => escaped.push(c),
        }
    }
    Cow::Owned(escaped)
}

/// Replaces every `${NAME}` and `${NAME:-default}` inside quoted strings (comments and bare
/// values are left alone, so a `${` in a comment is harmless). `$${` writes a literal `${`.
/// `${NAME:-default}` uses the default when `NAME` is unset or empty, as a shell does.
pub(super) fn substitute(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Substituted, SubstitutionError> {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut regions = Vec::new();
    // Everything before `copied` is already in `out`; every index compared below is an ASCII
    // byte, so slicing at them never splits a UTF-8 character.
    let mut copied = 0;
    let mut i = 0;
    let mut quote: Option<Quote> = None;
    let starts_with = |at: usize, pattern: &[u8]| bytes[at..].starts_with(pattern);

    while i < bytes.len() {
        let byte = bytes[i];
        let Some(kind) = quote else {
            match byte {
                b'#' => i = memchr::memchr(b'\n', &bytes[i..]).map_or(bytes.len(), |n| i + n),
                b'"' if starts_with(i, b"\"\"\"") => (quote, i) = (Some(Quote::MultiBasic), i + 3),
                b'"' => (quote, i) = (Some(Quote::Basic), i + 1),
                b'\'' if starts_with(i, b"'''") => (quote, i) = (Some(Quote::MultiLiteral), i + 3),
                b'\'' => (quote, i) = (Some(Quote::Literal), i + 1),
                _ => i += 1,
            }
            continue;
        };
        match byte {
            b'\\' if matches!(kind, Quote::Basic | Quote::MultiBasic) => i += 2,
            b'\n' if !kind.is_multiline() => {
                // An unterminated string: stop treating the rest as its content and let the
                // TOML parser report it where it is.
                quote = None;
                i += 1;
            }
            delimiter if delimiter == kind.delimiter() => {
                if !kind.is_multiline() {
                    quote = None;
                    i += 1;
                } else if starts_with(i, &[delimiter; 3]) {
                    // Up to two more quotes belong to the content (`"""a""""`).
                    let run = bytes[i..].iter().take_while(|&&b| b == delimiter).count();
                    quote = None;
                    i += run.min(5);
                } else {
                    i += 1;
                }
            }
            b'$' if starts_with(i, b"$${") => {
                out.push_str(&text[copied..i]);
                regions.push(Region {
                    original: i..i + 1,
                    substituted: out.len()..out.len(),
                    secret: None,
                });
                copied = i + 1;
                i += 3;
            }
            b'$' if starts_with(i, b"${") => {
                let reference = Reference::parse(text, i)?;
                let (value, secret) = reference.resolve(text, kind, lookup)?;
                out.push_str(&text[copied..i]);
                let start = out.len();
                out.push_str(&value);
                regions.push(Region {
                    original: i..reference.end,
                    substituted: start..out.len(),
                    secret,
                });
                copied = reference.end;
                i = reference.end;
            }
            _ => i += 1,
        }
    }
    out.push_str(&text[copied..]);
    Ok(Substituted { text: out, regions })
}

/// One `${NAME}` or `${NAME:-default}` in the original text.
struct Reference<'a> {
    start: usize,
    /// Just past the closing `}`.
    end: usize,
    name: &'a str,
    /// Raw source text, already written in the syntax of the string it sits in.
    default: Option<&'a str>,
}

impl<'a> Reference<'a> {
    fn parse(text: &'a str, start: usize) -> Result<Reference<'a>, SubstitutionError> {
        let error = |message: String| SubstitutionError {
            offset: start,
            message,
        };
        let rest = &text[start + 2..];
        let line_end = rest.find('\n').unwrap_or(rest.len());
        let close = rest[..line_end].find('}').ok_or_else(|| {
            error(
                "unterminated `${`: write ${NAME} or ${NAME:-default} (or $${ for a literal ${)"
                    .into(),
            )
        })?;
        let inner = &rest[..close];
        let (name, default) = match inner.split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (inner, None),
        };
        let mut chars = name.chars();
        let valid = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(error(format!(
                "invalid variable name {name:?} in `${{{inner}}}`: use letters, digits and `_`"
            )));
        }
        Ok(Reference {
            start,
            end: start + 2 + close + 1,
            name,
            default,
        })
    }

    fn resolve(
        &self,
        text: &'a str,
        quote: Quote,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(Cow<'a, str>, Option<String>), SubstitutionError> {
        let error = |message: String| SubstitutionError {
            offset: self.start,
            message,
        };
        let value = lookup(self.name).filter(|value| self.default.is_none() || !value.is_empty());
        match (value, self.default) {
            (Some(value), _) => {
                let encoded = quote.encode(&value).map(Cow::into_owned).ok_or_else(|| {
                    error(format!(
                        "the value of environment variable {} cannot be written inside this \
                         single-quoted string; use a double-quoted string",
                        self.name
                    ))
                })?;
                Ok((Cow::Owned(encoded), Some(value)))
            }
            (None, Some(default)) => Ok((Cow::Borrowed(default), None)),
            (None, None) => {
                let key = key_of_line(text, self.start)
                    .map_or_else(String::new, |key| format!("{key}: "));
                Err(error(format!(
                    "{key}environment variable {name} is not set (write ${{{name}:-default}} to \
                     make it optional)",
                    name = self.name
                )))
            }
        }
    }
}

/// The key assigned on the line holding `offset`, for messages about a value on it.
fn key_of_line(text: &str, offset: usize) -> Option<&str> {
    let line_start = text[..offset].rfind('\n').map_or(0, |n| n + 1);
    let before = &text[line_start..offset];
    let (key, _) = before.split_once('=')?;
    let key = key.trim();
    (!key.is_empty() && !key.starts_with('#')).then_some(key)
}

/// The text with every substituted value masked, as errors show it.
impl fmt::Debug for Substituted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let everything = 0..self.text.len();
        f.debug_struct("Substituted")
            .field("text", &self.scrub(Some(&everything), &self.text))
            .field("regions", &self.regions)
            .finish()
    }
}

impl fmt::Debug for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Region")
            .field("original", &self.original)
            .field("substituted", &self.substituted)
            .field("secret", &Masked(self.secret.as_deref()))
            .finish()
    }
}

impl Substituted {
    /// Maps a byte offset in the substituted text back to the original file; an offset inside
    /// a substituted value maps to the `$` of its `${`.
    pub(super) fn original_offset(&self, offset: usize) -> usize {
        // (end in the substituted text, end in the original) of the last region before `offset`.
        let mut anchor = (0, 0);
        for region in &self.regions {
            if offset < region.substituted.start {
                break;
            }
            if offset < region.substituted.end {
                return region.original.start;
            }
            anchor = (region.substituted.end, region.original.end);
        }
        offset - anchor.0 + anchor.1
    }

    /// The message with every environment value that could appear in it replaced by `***`:
    /// values substituted inside `span` (the part the message is about), and any long value
    /// anywhere, since long values are the ones that are secrets.
    pub(super) fn scrub(&self, span: Option<&Range<usize>>, message: &str) -> String {
        const ALWAYS_SCRUBBED_FROM: usize = 6;
        let mut message = message.to_owned();
        for region in &self.regions {
            let Some(secret) = region.secret.as_deref().filter(|secret| !secret.is_empty()) else {
                continue;
            };
            let touches_span = span.is_some_and(|span| {
                span.start <= region.substituted.end && region.substituted.start <= span.end
            });
            if !touches_span && secret.len() < ALWAYS_SCRUBBED_FROM {
                continue;
            }
            let debug = format!("{secret:?}");
            let debug = &debug[1..debug.len() - 1];
            let escaped = &self.text[region.substituted.clone()];
            for form in [secret, debug, escaped] {
                if !form.is_empty() {
                    message = message.replace(form, "***");
                }
            }
        }
        message
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| (*value).to_owned())
        }
    }

    fn run(text: &str, pairs: &'static [(&'static str, &'static str)]) -> String {
        substitute(text, &env(pairs)).unwrap().text
    }

    #[test]
    fn variables_are_replaced_inside_strings() {
        let text = "a = \"${A}\"\nb = 'x-${B}-y'\n";
        assert_eq!(
            run(text, &[("A", "one"), ("B", "two")]),
            "a = \"one\"\nb = 'x-two-y'\n"
        );
    }

    #[test]
    fn comments_and_bare_values_are_left_alone() {
        let text = "# uses ${A}\nport = ${A}\n";
        assert_eq!(run(text, &[("A", "1")]), text);
    }

    #[test]
    fn a_default_applies_when_the_variable_is_unset_or_empty() {
        let text = "a = \"${A:-fallback}\"\nb = \"${B:-}\"\n";
        assert_eq!(run(text, &[("A", "")]), "a = \"fallback\"\nb = \"\"\n");
        assert_eq!(run(text, &[("A", "set")]), "a = \"set\"\nb = \"\"\n");
    }

    #[test]
    fn a_double_dollar_writes_a_literal_reference() {
        assert_eq!(run("a = \"$${A}\"", &[("A", "x")]), "a = \"${A}\"");
    }

    #[test]
    fn values_are_escaped_for_double_quoted_strings() {
        let text = "a = \"${A}\"";
        assert_eq!(
            run(text, &[("A", "say \"hi\"\\\n")]),
            "a = \"say \\\"hi\\\"\\\\\\n\""
        );
        let parsed: toml::Table = toml::from_str(&run(text, &[("A", "q\"\\")])).unwrap();
        assert_eq!(parsed["a"].as_str(), Some("q\"\\"));
    }

    #[test]
    fn a_value_that_cannot_fit_a_literal_string_is_an_error_without_the_value() {
        let error = substitute("a = '${A}'", &env(&[("A", "it's-secret")])).unwrap_err();
        assert!(error.message.contains("double-quoted"), "{}", error.message);
        assert!(!error.message.contains("secret"));
    }

    #[test]
    fn a_missing_env_var_is_an_error_naming_it_and_its_key() {
        let text = "[server]\nadmin_token = \"${SWITCHYARD_ADMIN_TOKEN}\"\n";
        let error = substitute(text, &env(&[])).unwrap_err();
        assert_eq!(error.offset, text.find('$').unwrap());
        assert!(
            error.message.contains("SWITCHYARD_ADMIN_TOKEN"),
            "{}",
            error.message
        );
        assert!(
            error.message.starts_with("admin_token: "),
            "{}",
            error.message
        );
    }

    #[test]
    fn a_malformed_reference_is_an_error() {
        assert!(substitute("a = \"${A\"", &env(&[])).is_err());
        assert!(substitute("a = \"${1A}\"", &env(&[])).is_err());
        assert!(substitute("a = \"${}\"", &env(&[])).is_err());
    }

    #[test]
    fn escaped_quotes_and_multiline_strings_keep_the_scanner_in_step() {
        let text = "a = \"\\\"${A}\"\nb = \"\"\"\n${A}\"\"\"\"\nc = \"${A}\"";
        assert_eq!(
            run(text, &[("A", "v")]),
            "a = \"\\\"v\"\nb = \"\"\"\nv\"\"\"\"\nc = \"v\""
        );
    }

    #[test]
    fn offsets_map_back_to_the_original_text() {
        let text = "a = \"${A}\"\nb = 1x\n";
        let substituted = substitute(text, &env(&[("A", "a-much-longer-value")])).unwrap();
        let in_substituted = substituted.text.find("1x").unwrap();
        assert_eq!(
            substituted.original_offset(in_substituted),
            text.find("1x").unwrap()
        );
        let inside_value = substituted.text.find("longer").unwrap();
        assert_eq!(
            substituted.original_offset(inside_value),
            text.find('$').unwrap()
        );
    }

    #[test]
    fn debug_output_shows_no_substituted_value() {
        let text = "key = \"${KEY}\"\nport = \"${PORT}\"\nname = \"kept\"";
        let substituted =
            substitute(text, &env(&[("KEY", "sk-live-123456"), ("PORT", "8080")])).unwrap();
        let printed = format!(
            "{substituted:?} {substituted:#?} {:?}",
            substituted.regions[0]
        );
        assert!(!printed.contains("sk-live-123456"), "{printed}");
        assert!(!printed.contains("8080"), "{printed}");
        assert!(printed.contains("name = \\\"kept\\\""), "{printed}");
        assert!(printed.contains("secret: Some(\"***\")"), "{printed}");
    }

    #[test]
    fn scrubbing_removes_substituted_values_from_messages() {
        let text = "key = \"${KEY}\"\nport = \"${PORT}\"";
        let substituted =
            substitute(text, &env(&[("KEY", "sk-live-123456"), ("PORT", "80")])).unwrap();
        let message = "invalid type: string \"sk-live-123456\", expected u32";
        assert_eq!(
            substituted.scrub(None, message),
            "invalid type: string \"***\", expected u32"
        );
        let port = substituted.text.find("80").unwrap();
        let short = "bad port 80";
        assert_eq!(
            substituted.scrub(Some(&(port..port + 2)), short),
            "bad port ***"
        );
        assert_eq!(
            substituted.scrub(None, short),
            short,
            "short values elsewhere are kept"
        );
    }
}
