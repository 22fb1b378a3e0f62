//! Keeps credentials out of what upstreams say: a [`Scrubber`] masks every configured provider
//! secret and anything shaped like a credential (`Bearer …`, `sk-…`, an `api-key` value) in
//! upstream text, and [`Scrubbing`] applies it where an adapter turns that text into an error, so
//! the client's answer, the generation row and the logs all get the masked text. Runs on error
//! paths only; it never changes a successful answer.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use http::StatusCode;

use super::{
    Framing, Provider, ProviderError, SseEvent, StreamDecoder, Target, UpstreamError,
    UpstreamRequest,
};
use crate::config::ProviderConfig;
use crate::openai::{ChatChunk, ChatRequest, ChatResponse};

/// What a secret is replaced by.
const MASK: &str = "***";

/// Configured values shorter than this are not masked: no provider issues keys that short, and
/// local servers take placeholders such as `ollama` or `none`, which would otherwise be masked
/// wherever the word appears.
const MIN_SECRET_LEN: usize = 8;

/// A secret's first characters at the very end of a text are masked from this many on: upstream
/// detail is cut to a bounded length, and a cut through a secret leaves a prefix that no longer
/// matches the whole value. Fewer reveal next to nothing of a key, and are often a plain word
/// (`azure` of `azure-…`).
const MIN_TRAILING_PART: usize = 6;

/// A token after `Bearer`, or after the `sk-` prefix, needs this many characters to count as a
/// credential: shorter ones are ordinary words (`Bearer scheme`, `risk-sk-free`), and every key
/// issued in those shapes is far longer.
const MIN_TOKEN_LEN: usize = 8;

/// Masks secrets in upstream text. Built once per registry from every configured credential.
pub(super) struct Scrubber {
    /// Longest first, so a secret that contains another one is masked whole.
    secrets: Vec<Box<str>>,
}

impl fmt::Debug for Scrubber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scrubber")
            .field("secrets", &self.secrets.len())
            .finish()
    }
}

impl Scrubber {
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a str>) -> Self {
        let mut secrets: Vec<Box<str>> = secrets
            .into_iter()
            .filter(|secret| secret.len() >= MIN_SECRET_LEN)
            .map(Box::from)
            .collect();
        secrets.sort_unstable_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        secrets.dedup();
        Self { secrets }
    }

    /// Every credential a provider's config holds: the values the gateway sends upstream, and so
    /// the ones an upstream can echo back.
    pub fn of_providers(configs: &[ProviderConfig]) -> Self {
        Self::new(configs.iter().flat_map(|config| {
            [
                &config.api_key,
                &config.access_key_id,
                &config.secret_access_key,
                &config.session_token,
            ]
            .into_iter()
            .filter_map(Option::as_deref)
        }))
    }

    /// `text` with every configured secret and every credential-shaped token masked; borrowed
    /// when there was nothing to mask.
    pub fn scrub<'t>(&self, text: &'t str) -> Cow<'t, str> {
        let mut text = Cow::Borrowed(text);
        for secret in &self.secrets {
            if text.contains(&**secret) {
                text = Cow::Owned(text.replace(&**secret, MASK));
            }
            if let Some(cut) = trailing_part(&text, secret) {
                let mut owned = text.into_owned();
                owned.truncate(cut);
                owned.push_str(MASK);
                text = Cow::Owned(owned);
            }
        }
        match mask_shapes(&text) {
            Some(masked) => Cow::Owned(masked),
            None => text,
        }
    }

    fn upstream_error(&self, mut error: UpstreamError) -> UpstreamError {
        if let Cow::Owned(message) = self.scrub(&error.message) {
            error.message = message;
        }
        error
    }

    /// Only an unreadable answer carries upstream text (serde quotes the values it rejects); the
    /// other variants describe the gateway's own request.
    fn provider_error(&self, error: ProviderError) -> ProviderError {
        match error {
            ProviderError::InvalidResponse(text) => match self.scrub(&text) {
                Cow::Owned(masked) => ProviderError::InvalidResponse(masked),
                Cow::Borrowed(_) => ProviderError::InvalidResponse(text),
            },
            other => other,
        }
    }
}

/// Where `text` ends in the first [`MIN_TRAILING_PART`] or more characters of `secret` (but not
/// all of it, which is masked already): the byte offset that part starts at.
fn trailing_part(text: &str, secret: &str) -> Option<usize> {
    (MIN_TRAILING_PART..secret.len())
        .rev()
        .filter(|&len| secret.is_char_boundary(len))
        .find(|&len| text.ends_with(&secret[..len]))
        .map(|len| text.len() - len)
}

/// The credential shapes, matched case-insensitively at the start of a word.
#[derive(Clone, Copy)]
enum Shape {
    /// `Bearer <token>`: the token is masked, the scheme kept.
    Bearer,
    /// `sk-<key>`, the prefix of OpenAI's, Anthropic's and this gateway's keys: masked whole.
    SkKey,
    /// `api-key: <value>`, `x-api-key=<value>`, `"api_key": "<value>"` (Azure's, Anthropic's and
    /// Gemini's headers, and query parameters): the value is masked, the name kept.
    ApiKey,
}

impl Shape {
    const PREFIXES: [(&'static [u8], Shape); 4] = [
        (b"bearer", Shape::Bearer),
        (b"sk-", Shape::SkKey),
        (b"api-key", Shape::ApiKey),
        (b"api_key", Shape::ApiKey),
    ];

    /// The span `(start, end)` to mask when `bytes[at..]` begins with this shape's `prefix`.
    fn secret_span(self, bytes: &[u8], at: usize, prefix: usize) -> Option<(usize, usize)> {
        let after = at + prefix;
        match self {
            Shape::Bearer => {
                let start = after + run(bytes, after, |b| b == b' ' || b == b'\t');
                let len = run(bytes, start, is_token_byte);
                (start > after && len >= MIN_TOKEN_LEN).then_some((start, start + len))
            }
            Shape::SkKey => {
                let len = run(bytes, after, |b| {
                    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
                });
                (len >= MIN_TOKEN_LEN).then_some((at, after + len))
            }
            Shape::ApiKey => {
                let quote = |b: u8| b == b'"' || b == b'\'';
                let space = |b: u8| b == b' ' || b == b'\t';
                let mut i = after + run(bytes, after, quote);
                i += run(bytes, i, space);
                if !matches!(bytes.get(i), Some(b':' | b'=')) {
                    return None;
                }
                i += 1;
                i += run(bytes, i, space);
                i += run(bytes, i, quote);
                let len = run(bytes, i, is_value_byte);
                (len > 0).then_some((i, i + len))
            }
        }
    }
}

/// RFC 6750's `b64token` characters: what can follow `Bearer `.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/' | b'=')
}

/// A header or parameter value, up to whatever ends it in JSON, a header list or a query.
fn is_value_byte(b: u8) -> bool {
    b.is_ascii_graphic() && !matches!(b, b'"' | b'\'' | b',' | b';' | b'&' | b'}' | b']')
}

/// How many bytes from `from` on satisfy `accept`.
fn run(bytes: &[u8], from: usize, accept: impl Fn(u8) -> bool) -> usize {
    bytes
        .get(from..)
        .map_or(0, |rest| rest.iter().take_while(|&&b| accept(b)).count())
}

/// `text` with every credential shape masked, or `None` when it has none. Every byte a shape
/// matches is ASCII, so every offset used for slicing is a character boundary.
fn mask_shapes(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out: Option<String> = None;
    let mut copied = 0;
    let mut at = 0;
    while at < bytes.len() {
        let word_start = at == 0 || !bytes[at - 1].is_ascii_alphanumeric();
        let span = word_start
            .then(|| {
                Shape::PREFIXES.iter().find_map(|&(prefix, shape)| {
                    let starts = bytes
                        .get(at..at + prefix.len())
                        .is_some_and(|head| head.eq_ignore_ascii_case(prefix));
                    starts
                        .then(|| shape.secret_span(bytes, at, prefix.len()))
                        .flatten()
                })
            })
            .flatten();
        match span {
            Some((start, end)) => {
                let out = out.get_or_insert_with(|| String::with_capacity(text.len()));
                out.push_str(&text[copied..start]);
                out.push_str(MASK);
                copied = end;
                at = end;
            }
            None => at += 1,
        }
    }
    out.map(|mut out| {
        out.push_str(&text[copied..]);
        out
    })
}

/// An adapter whose errors pass through the [`Scrubber`]: the one place upstream text becomes
/// an error (the HTTP error body, an unreadable answer, an error inside a stream). Every method
/// of [`Provider`] and [`StreamDecoder`] is forwarded, including those with defaults.
pub(super) struct Scrubbing {
    adapter: Box<dyn Provider>,
    scrubber: Arc<Scrubber>,
}

impl Scrubbing {
    pub(super) fn new(adapter: Box<dyn Provider>, scrubber: Arc<Scrubber>) -> Self {
        Self { adapter, scrubber }
    }
}

impl Provider for Scrubbing {
    fn framing(&self) -> Framing {
        self.adapter.framing()
    }

    fn build_request(
        &self,
        request: &ChatRequest,
        target: Target<'_>,
    ) -> Result<UpstreamRequest, ProviderError> {
        self.adapter.build_request(request, target)
    }

    fn parse_response(&self, body: &[u8]) -> Result<ChatResponse, ProviderError> {
        self.adapter
            .parse_response(body)
            .map_err(|error| self.scrubber.provider_error(error))
    }

    /// One more box per stream, so an error in the middle of a stream is scrubbed too: the
    /// stream is read outside the provider module, by a decoder it only holds as `dyn`.
    fn stream_decoder(&self) -> Box<dyn StreamDecoder> {
        Box::new(ScrubbingDecoder {
            decoder: self.adapter.stream_decoder(),
            scrubber: self.scrubber.clone(),
        })
    }

    fn parse_error(&self, status: StatusCode, body: &[u8]) -> UpstreamError {
        self.scrubber
            .upstream_error(self.adapter.parse_error(status, body))
    }
}

struct ScrubbingDecoder {
    decoder: Box<dyn StreamDecoder>,
    scrubber: Arc<Scrubber>,
}

impl StreamDecoder for ScrubbingDecoder {
    fn decode(&mut self, event: &SseEvent) -> Result<Option<ChatChunk>, UpstreamError> {
        self.decoder
            .decode(event)
            .map_err(|error| self.scrubber.upstream_error(error))
    }

    fn finished(&self) -> bool {
        self.decoder.finished()
    }

    fn take_pending(&mut self) -> Option<ChatChunk> {
        self.decoder.take_pending()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrubber() -> Scrubber {
        Scrubber::new([
            "azure-0123456789abcdef",
            "AKIDEXAMPLE1234",
            "short",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        ])
    }

    #[test]
    fn configured_secrets_are_masked_wherever_they_appear() {
        let text = "bad key azure-0123456789abcdef for AKIDEXAMPLE1234/20240101/us-east-1";
        assert_eq!(
            scrubber().scrub(text),
            "bad key *** for ***/20240101/us-east-1"
        );
    }

    #[test]
    fn values_too_short_to_be_keys_and_short_ends_of_secrets_are_left_alone() {
        for text in ["a short answer", "not available on azure"] {
            assert!(matches!(scrubber().scrub(text), Cow::Borrowed(_)), "{text}");
        }
    }

    #[test]
    fn a_secret_cut_off_at_the_end_is_masked() {
        let cut = "upstream rejected the request: api key wJalrXUtnFEMI/K7";
        assert_eq!(
            scrubber().scrub(cut),
            "upstream rejected the request: api key ***"
        );
    }

    #[test]
    fn credential_shapes_are_masked_without_being_configured() {
        let none = Scrubber::new([]);
        let cases = [
            (
                "Invalid header Authorization: Bearer abc.DEF-123_~+/= was sent",
                "Invalid header Authorization: Bearer *** was sent",
            ),
            ("bearer\tkey-0123456789", "bearer\t***"),
            (
                "Incorrect API key provided: sk-proj-Abc123XYZ789. See docs",
                "Incorrect API key provided: ***. See docs",
            ),
            (
                r#"{"x-api-key": "ant-secret", "api-key":"az", "x-goog-api-key" = goog}"#,
                r#"{"x-api-key": "***", "api-key":"***", "x-goog-api-key" = ***}"#,
            ),
            (
                "GET /v1?api_key=q1w2e3&alt=sse",
                "GET /v1?api_key=***&alt=sse",
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(none.scrub(text), expected, "{text}");
        }
    }

    #[test]
    fn ordinary_words_that_resemble_a_shape_are_kept() {
        let none = Scrubber::new([]);
        for text in [
            "task-oriented risk-averse sk-short",
            "the bearer of bad news: none",
            "api-key is required",
            "the Bearer scheme",
            "forbearer abcdefghijkl",
        ] {
            assert!(
                matches!(none.scrub(text), Cow::Borrowed(_)),
                "{text} -> {}",
                none.scrub(text)
            );
        }
    }

    #[test]
    fn scrubbing_twice_changes_nothing_more() {
        let text = "Bearer sk-abcdefghijkl and azure-0123456789abcdef";
        let once = scrubber().scrub(text).into_owned();
        assert_eq!(once, "Bearer *** and ***");
        assert_eq!(scrubber().scrub(&once), once);
    }

    #[test]
    fn the_scrubbers_debug_output_counts_its_secrets_without_showing_them() {
        let printed = format!("{:?}", scrubber());
        assert_eq!(printed, "Scrubber { secrets: 3 }");
    }
}
