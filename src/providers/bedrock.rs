//! AWS Bedrock's Converse API (`/model/{id}/converse` and `/converse-stream`): OpenAI messages
//! become Converse content blocks, requests are signed with SigV4 (service `bedrock`), answers and
//! event-stream events become OpenAI responses and chunks.

use std::time::SystemTime;

use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{
    Framing, Provider, ProviderError, SseEvent, StreamDecoder, Target, UpstreamError,
    UpstreamErrorKind, UpstreamRequest,
};
use crate::openai::{
    ChatChunk, ChatRequest, ChatResponse, Choice, ChunkChoice, Content, Delta, Message,
    PromptTokensDetails, ResponseMessage, Role, Usage,
};

/// The SigV4 signing name of the Bedrock runtime endpoints.
const SIGNING_SERVICE: &str = "bedrock";

/// Long-term or temporary AWS credentials, as configured.
pub(super) struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

pub(super) struct Bedrock {
    base_url: String,
    region: String,
    /// Reference-counted inside, so each request's signing identity is a cheap clone.
    credentials: aws_credential_types::Credentials,
}

impl Bedrock {
    pub(super) fn new(
        base_url: &str,
        region: String,
        credentials: Credentials,
    ) -> Result<Self, ProviderError> {
        let base_url = base_url.trim_end_matches('/').to_owned();
        super::endpoint_uri(base_url.clone())?;
        let credentials = aws_credential_types::Credentials::new(
            credentials.access_key_id,
            credentials.secret_access_key,
            credentials.session_token,
            None,
            "switchyard config",
        );
        Ok(Self {
            base_url,
            region,
            credentials,
        })
    }

    /// The SigV4 headers for one request, signed at the current time.
    fn signed_headers(
        &self,
        url: &str,
        unsigned: &[(HeaderName, HeaderValue)],
        body: &[u8],
    ) -> Result<Vec<(HeaderName, HeaderValue)>, ProviderError> {
        let signing_error = |error: &dyn std::fmt::Display| {
            ProviderError::Unsupported(format!("cannot sign: {error}"))
        };
        let identity = self.credentials.clone().into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name(SIGNING_SERVICE)
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|error| signing_error(&error))?
            .into();
        let headers = unsigned
            .iter()
            .filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?)));
        let signable = SignableRequest::new("POST", url, headers, SignableBody::Bytes(body))
            .map_err(|error| signing_error(&error))?;
        let (instructions, _signature) = sign(signable, &params)
            .map_err(|error| signing_error(&error))?
            .into_parts();
        instructions
            .headers()
            .map(|(name, value)| {
                let name = HeaderName::try_from(name).map_err(|error| signing_error(&error))?;
                let mut value =
                    HeaderValue::try_from(value).map_err(|error| signing_error(&error))?;
                value.set_sensitive(
                    name == http::header::AUTHORIZATION || name == "x-amz-security-token",
                );
                Ok((name, value))
            })
            .collect()
    }
}

impl Provider for Bedrock {
    fn framing(&self) -> Framing {
        Framing::AwsEventStream
    }

    fn build_request(
        &self,
        request: &ChatRequest,
        target: Target<'_>,
    ) -> Result<UpstreamRequest, ProviderError> {
        let body = Bytes::from(serde_json::to_vec(&converse_body(request)?)?);
        let (operation, accept) = if request.stream {
            ("converse-stream", "application/vnd.amazon.eventstream")
        } else {
            ("converse", "application/json")
        };
        let url = format!(
            "{}/model/{}/{operation}",
            self.base_url,
            encode_path_segment(target.upstream_model)
        );
        let mut headers = vec![
            (
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (http::header::ACCEPT, HeaderValue::from_static(accept)),
        ];
        let signed = self.signed_headers(&url, &headers, &body)?;
        headers.extend(signed);
        let uri = http::Uri::try_from(url)
            .map_err(|error| ProviderError::Unsupported(format!("invalid model URL: {error}")))?;
        Ok(UpstreamRequest::Http { uri, headers, body })
    }

    fn parse_response(&self, body: &[u8]) -> Result<ChatResponse, ProviderError> {
        let response: ConverseResponse = serde_json::from_slice(body)
            .map_err(|error| ProviderError::InvalidResponse(error.to_string()))?;
        Ok(response.into_chat_response())
    }

    fn stream_decoder(&self) -> Box<dyn StreamDecoder> {
        Box::new(ConverseStreamDecoder::default())
    }

    /// Bedrock names the error in an `x-amzn-errortype` header, but each error type has its
    /// own status, so the status alone classifies it.
    fn parse_error(&self, status: StatusCode, body: &[u8]) -> UpstreamError {
        decode_error(status, body)
    }
}

/// Model ids and ARNs go in one path segment (`anthropic.claude-3-haiku-20240307-v1:0`,
/// `arn:aws:bedrock:...:inference-profile/...`), so everything but unreserved characters is
/// percent-encoded, as the AWS SDKs do.
fn encode_path_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len() + 8);
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn invalid(message: impl Into<String>) -> ProviderError {
    ProviderError::InvalidRequest(message.into())
}

// ---- request -------------------------------------------------------------------------------

/// The Converse request body for a chat request.
fn converse_body(request: &ChatRequest) -> Result<Value, ProviderError> {
    let mut system = Vec::new();
    let mut turns = Turns::default();
    for message in &request.messages {
        match message.role {
            Role::System | Role::Developer => {
                if let Some(content) = &message.content {
                    system.push(json!({ "text": content.text() }));
                }
            }
            Role::User => turns.push("user", user_blocks(message)?),
            Role::Assistant => turns.push("assistant", assistant_blocks(message)?),
            Role::Tool => turns.push("user", vec![tool_result(message)?]),
            Role::Function => {
                return Err(invalid(
                    "the legacy `function` role is not supported; send `tool` messages",
                ));
            }
        }
    }
    let mut body = Map::new();
    body.insert("messages".into(), turns.into_json());
    if !system.is_empty() {
        body.insert("system".into(), Value::Array(system));
    }
    if let Some(config) = inference_config(request)? {
        body.insert("inferenceConfig".into(), config);
    }
    if let Some(config) = tool_config(request, turns_use_tools(request))? {
        body.insert("toolConfig".into(), config);
    }
    if let Some(format) = &request.response_format
        && format.get("type").and_then(Value::as_str) != Some("text")
    {
        return Err(invalid(
            "response_format is not supported by Bedrock's Converse API",
        ));
    }
    Ok(Value::Object(body))
}

/// Converse wants strictly alternating roles, so consecutive messages of one role (several tool
/// results, or tool results followed by the user's next words) are merged into one turn.
#[derive(Default)]
struct Turns(Vec<(&'static str, Vec<Value>)>);

impl Turns {
    fn push(&mut self, role: &'static str, blocks: Vec<Value>) {
        if blocks.is_empty() {
            return;
        }
        match self.0.last_mut() {
            Some((last, content)) if *last == role => content.extend(blocks),
            _ => self.0.push((role, blocks)),
        }
    }

    fn into_json(self) -> Value {
        self.0
            .into_iter()
            .map(|(role, content)| json!({ "role": role, "content": content }))
            .collect()
    }
}

fn user_blocks(message: &Message) -> Result<Vec<Value>, ProviderError> {
    match &message.content {
        None => Ok(Vec::new()),
        Some(Content::Text(text)) => Ok(vec![json!({ "text": text })]),
        Some(Content::Parts(parts)) => parts
            .iter()
            .map(|part| match part.get("type").and_then(Value::as_str) {
                Some("text") => Ok(json!({
                    "text": part.get("text").and_then(Value::as_str).unwrap_or_default()
                })),
                Some("image_url") => image_block(part),
                other => Err(invalid(format!(
                    "content parts of type {} are not supported by Bedrock",
                    other.unwrap_or("(none)")
                ))),
            })
            .collect(),
    }
}

/// Converse takes images only as inline bytes, so `data:` URLs are unpacked and any other URL is
/// refused (fetching it would make the gateway an open proxy; dropping it would answer a
/// different question).
fn image_block(part: &Map<String, Value>) -> Result<Value, ProviderError> {
    let image_url = part.get("image_url");
    let url = image_url
        .and_then(|image| image.get("url"))
        .or(image_url)
        .and_then(Value::as_str)
        .unwrap_or_default();
    let Some(data_url) = url.strip_prefix("data:") else {
        return Err(invalid(
            "Bedrock accepts images only inline, as base64 `data:` URLs; image URLs cannot be \
             fetched",
        ));
    };
    let Some((media_type, data)) = data_url.split_once(";base64,") else {
        return Err(invalid("image data URLs must be base64-encoded"));
    };
    let format = match media_type {
        "image/png" => "png",
        "image/jpeg" | "image/jpg" => "jpeg",
        "image/gif" => "gif",
        "image/webp" => "webp",
        other => {
            return Err(invalid(format!(
                "image type {other:?} is not supported by Bedrock (png, jpeg, gif, webp)"
            )));
        }
    };
    // JSON carries Converse's blobs base64-encoded, which the data URL already is.
    Ok(json!({ "image": { "format": format, "source": { "bytes": data } } }))
}

fn assistant_blocks(message: &Message) -> Result<Vec<Value>, ProviderError> {
    let mut blocks = Vec::new();
    let text = message
        .content
        .as_ref()
        .map(Content::text)
        .unwrap_or_default();
    // Converse rejects blank text blocks, which tool-calling turns often carry.
    if !text.trim().is_empty() {
        blocks.push(json!({ "text": text }));
    }
    for call in message.tool_calls.iter().flatten() {
        let id = call.get("id").and_then(Value::as_str);
        let function = call.get("function");
        let name = function
            .and_then(|function| function.get("name"))
            .and_then(Value::as_str);
        let (Some(id), Some(name)) = (id, name) else {
            return Err(invalid(
                "assistant tool calls need an id and a function name",
            ));
        };
        let arguments = function
            .and_then(|function| function.get("arguments"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        let input: Value = if arguments.trim().is_empty() {
            json!({})
        } else {
            serde_json::from_str(arguments)
                .map_err(|_| invalid(format!("the arguments of tool call {id:?} are not JSON")))?
        };
        blocks.push(json!({ "toolUse": { "toolUseId": id, "name": name, "input": input } }));
    }
    Ok(blocks)
}

/// A tool message as a `toolResult` block: a JSON object result stays structured (`json`),
/// anything else is text.
fn tool_result(message: &Message) -> Result<Value, ProviderError> {
    let Some(id) = &message.tool_call_id else {
        return Err(invalid("tool messages need a tool_call_id"));
    };
    let text = message
        .content
        .as_ref()
        .map(Content::text)
        .unwrap_or_default();
    let content = match serde_json::from_str::<Value>(&text) {
        Ok(object @ Value::Object(_)) => json!({ "json": object }),
        _ => json!({ "text": text }),
    };
    Ok(json!({ "toolResult": { "toolUseId": id, "content": [content] } }))
}

fn inference_config(request: &ChatRequest) -> Result<Option<Value>, ProviderError> {
    let mut config = Map::new();
    if let Some(max_tokens) = request.max_output_tokens() {
        config.insert("maxTokens".into(), max_tokens.into());
    }
    if let Some(temperature) = request.temperature {
        config.insert("temperature".into(), temperature.into());
    }
    if let Some(top_p) = request.top_p {
        config.insert("topP".into(), top_p.into());
    }
    match request.extra.get("stop") {
        None | Some(Value::Null) => {}
        Some(Value::String(stop)) => {
            config.insert("stopSequences".into(), json!([stop]));
        }
        Some(stop @ Value::Array(items)) if items.iter().all(Value::is_string) => {
            config.insert("stopSequences".into(), stop.clone());
        }
        Some(_) => return Err(invalid("stop must be a string or a list of strings")),
    }
    Ok((!config.is_empty()).then_some(Value::Object(config)))
}

/// Whether the conversation already holds tool calls or results, which Converse only accepts
/// alongside a `toolConfig`.
fn turns_use_tools(request: &ChatRequest) -> bool {
    request.messages.iter().any(|message| {
        message.role == Role::Tool
            || message
                .tool_calls
                .as_ref()
                .is_some_and(|calls| !calls.is_empty())
    })
}

fn tool_config(
    request: &ChatRequest,
    history_uses_tools: bool,
) -> Result<Option<Value>, ProviderError> {
    let Some(tools) = request.tools.as_deref().filter(|tools| !tools.is_empty()) else {
        return Ok(None);
    };
    // Converse has no "none": without tool history the tools are left out; with it they must be
    // sent, and the model may still call one.
    let choice = match request.tool_choice.as_ref() {
        None => None,
        Some(Value::String(choice)) => match choice.as_str() {
            "auto" => Some(json!({ "auto": {} })),
            "required" => Some(json!({ "any": {} })),
            "none" if history_uses_tools => None,
            "none" => return Ok(None),
            other => return Err(invalid(format!("unknown tool_choice {other:?}"))),
        },
        Some(choice) => {
            let name = choice
                .pointer("/function/name")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid("tool_choice must name a function"))?;
            Some(json!({ "tool": { "name": name } }))
        }
    };
    let specs = tools
        .iter()
        .map(|tool| {
            let function = tool
                .get("function")
                .filter(|_| tool.get("type").and_then(Value::as_str) == Some("function"))
                .ok_or_else(|| invalid("only function tools are supported by Bedrock"))?;
            let name = function
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid("every tool needs a function name"))?;
            let schema = function
                .get("parameters")
                .cloned()
                .unwrap_or_else(|| json!({ "type": "object", "properties": {} }));
            let mut spec = json!({ "name": name, "inputSchema": { "json": schema } });
            if let Some(description) = function.get("description").and_then(Value::as_str) {
                spec["description"] = description.into();
            }
            Ok(json!({ "toolSpec": spec }))
        })
        .collect::<Result<Vec<_>, ProviderError>>()?;
    let mut config = json!({ "tools": specs });
    if let Some(choice) = choice {
        config["toolChoice"] = choice;
    }
    Ok(Some(config))
}

// ---- response ------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConverseResponse {
    output: ConverseOutput,
    stop_reason: String,
    #[serde(default)]
    usage: Option<TokenUsage>,
}

#[derive(Deserialize)]
struct ConverseOutput {
    message: OutputMessage,
}

#[derive(Deserialize)]
struct OutputMessage {
    #[serde(default)]
    content: Vec<OutputBlock>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OutputBlock {
    text: Option<String>,
    tool_use: Option<ToolUse>,
    reasoning_content: Option<ReasoningBlock>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ToolUse {
    tool_use_id: String,
    name: String,
    #[serde(default)]
    input: Value,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReasoningBlock {
    reasoning_text: Option<ReasoningText>,
}

#[derive(Deserialize)]
struct ReasoningText {
    #[serde(default)]
    text: String,
}

/// Bedrock counts cache reads and writes apart from `inputTokens`; OpenAI's `prompt_tokens`
/// includes them, with the cached share in the details.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct TokenUsage {
    input_tokens: u64,
    output_tokens: u64,
    cache_read_input_tokens: u64,
    cache_write_input_tokens: u64,
}

impl From<TokenUsage> for Usage {
    fn from(usage: TokenUsage) -> Self {
        let prompt_tokens =
            usage.input_tokens + usage.cache_read_input_tokens + usage.cache_write_input_tokens;
        Usage {
            prompt_tokens,
            completion_tokens: usage.output_tokens,
            total_tokens: prompt_tokens + usage.output_tokens,
            prompt_tokens_details: Some(PromptTokensDetails {
                cached_tokens: usage.cache_read_input_tokens,
                cache_write_tokens: usage.cache_write_input_tokens,
                extra: Map::new(),
            }),
            ..Usage::default()
        }
    }
}

fn finish_reason(stop_reason: &str) -> &'static str {
    match stop_reason {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "guardrail_intervened" | "content_filtered" => "content_filter",
        _ => "stop",
    }
}

fn tool_call(index: usize, id: &str, name: &str, arguments: &str) -> Value {
    json!({
        "index": index,
        "id": id,
        "type": "function",
        "function": { "name": name, "arguments": arguments },
    })
}

impl ConverseResponse {
    fn into_chat_response(self) -> ChatResponse {
        let mut text = String::new();
        let mut reasoning = String::new();
        let mut tool_calls = Vec::new();
        for block in self.output.message.content {
            if let Some(part) = block.text {
                text.push_str(&part);
            }
            if let Some(part) = block
                .reasoning_content
                .and_then(|block| block.reasoning_text)
            {
                reasoning.push_str(&part.text);
            }
            if let Some(tool) = block.tool_use {
                let arguments = tool.input.to_string();
                tool_calls.push(tool_call(
                    tool_calls.len(),
                    &tool.tool_use_id,
                    &tool.name,
                    &arguments,
                ));
            }
        }
        let message = ResponseMessage {
            role: "assistant".to_owned(),
            content: (!text.is_empty() || tool_calls.is_empty()).then_some(text),
            reasoning: (!reasoning.is_empty()).then_some(reasoning),
            tool_calls: (!tool_calls.is_empty()).then_some(tool_calls),
            extra: Map::new(),
        };
        ChatResponse {
            id: String::new(),
            object: "chat.completion".to_owned(),
            created: 0,
            model: String::new(),
            provider: None,
            choices: vec![Choice {
                index: 0,
                message,
                finish_reason: Some(finish_reason(&self.stop_reason).to_owned()),
                extra: Map::new(),
            }]
            .into(),
            usage: self.usage.map(Usage::from),
            extra: Map::new(),
        }
    }
}

/// Bedrock's error body, `{"message": "..."}` (some services capitalise it).
#[derive(Deserialize)]
struct ErrorBody {
    #[serde(alias = "Message")]
    message: Option<String>,
}

fn decode_error(status: StatusCode, body: &[u8]) -> UpstreamError {
    let message = serde_json::from_slice::<ErrorBody>(body)
        .ok()
        .and_then(|body| body.message);
    let error = UpstreamError::from_status(status, message.as_deref());
    let too_long = message
        .as_deref()
        .is_some_and(|message| message.contains("too long"));
    if error.kind == UpstreamErrorKind::BadRequest && too_long {
        return error.with_kind(UpstreamErrorKind::ContextLength);
    }
    error
}

// ---- stream --------------------------------------------------------------------------------

/// ConverseStream's events as OpenAI chunks: the role first, each tool call's id and name before
/// its argument fragments, the finish reason at `messageStop` and usage at `metadata`.
#[derive(Default)]
struct ConverseStreamDecoder {
    role_sent: bool,
    /// The content-block index of each tool call, in order: OpenAI numbers tool calls from 0,
    /// Bedrock numbers every content block.
    tool_blocks: Vec<u64>,
    finished: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BlockStart {
    #[serde(default)]
    content_block_index: u64,
    start: BlockStartBody,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BlockStartBody {
    tool_use: Option<ToolUseStart>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ToolUseStart {
    tool_use_id: String,
    name: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BlockDelta {
    #[serde(default)]
    content_block_index: u64,
    delta: BlockDeltaBody,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BlockDeltaBody {
    text: Option<String>,
    tool_use: Option<ToolUseDelta>,
    reasoning_content: Option<ReasoningDelta>,
}

#[derive(Deserialize)]
struct ToolUseDelta {
    #[serde(default)]
    input: String,
}

#[derive(Deserialize)]
struct ReasoningDelta {
    text: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MessageStop {
    stop_reason: String,
}

#[derive(Deserialize)]
struct StreamMetadata {
    usage: Option<TokenUsage>,
}

fn payload<'a, T: Deserialize<'a>>(event: &'a SseEvent) -> Result<T, UpstreamError> {
    serde_json::from_str(&event.data).map_err(|error| {
        UpstreamError::new(
            UpstreamErrorKind::Protocol,
            format!("unreadable stream event: {error}"),
        )
    })
}

impl ConverseStreamDecoder {
    fn chunk(&mut self, mut delta: Delta, finish_reason: Option<&str>) -> ChatChunk {
        if !self.role_sent {
            self.role_sent = true;
            delta.role = Some("assistant".to_owned());
        }
        let mut chunk = ChatChunk::empty("", 0, "", None);
        chunk.choices.push(ChunkChoice {
            index: 0,
            delta,
            finish_reason: finish_reason.map(str::to_owned),
            extra: Map::new(),
        });
        chunk
    }

    /// The OpenAI index of the tool call in content block `block`.
    fn tool_index(&mut self, block: u64) -> usize {
        self.tool_blocks
            .iter()
            .position(|known| *known == block)
            .unwrap_or_else(|| {
                self.tool_blocks.push(block);
                self.tool_blocks.len() - 1
            })
    }
}

impl StreamDecoder for ConverseStreamDecoder {
    fn decode(&mut self, event: &SseEvent) -> Result<Option<ChatChunk>, UpstreamError> {
        let name = event.event.as_deref().unwrap_or_default();
        let delta = match name {
            "messageStart" => Delta {
                content: Some(String::new()),
                ..Delta::default()
            },
            "contentBlockStart" => {
                let start: BlockStart = payload(event)?;
                let Some(tool) = start.start.tool_use else {
                    return Ok(None);
                };
                let index = self.tool_index(start.content_block_index);
                Delta {
                    tool_calls: Some(vec![tool_call(index, &tool.tool_use_id, &tool.name, "")]),
                    ..Delta::default()
                }
            }
            "contentBlockDelta" => {
                let block: BlockDelta = payload(event)?;
                let body = block.delta;
                if let Some(text) = body.text {
                    Delta {
                        content: Some(text),
                        ..Delta::default()
                    }
                } else if let Some(tool) = body.tool_use {
                    let index = self.tool_index(block.content_block_index);
                    Delta {
                        tool_calls: Some(vec![json!({
                            "index": index,
                            "function": { "arguments": tool.input },
                        })]),
                        ..Delta::default()
                    }
                } else if let Some(text) = body.reasoning_content.and_then(|delta| delta.text) {
                    Delta {
                        reasoning: Some(text),
                        ..Delta::default()
                    }
                } else {
                    return Ok(None);
                }
            }
            "messageStop" => {
                let stop: MessageStop = payload(event)?;
                return Ok(Some(
                    self.chunk(Delta::default(), Some(finish_reason(&stop.stop_reason))),
                ));
            }
            "metadata" => {
                let metadata: StreamMetadata = payload(event)?;
                self.finished = true;
                let mut chunk = ChatChunk::empty("", 0, "", None);
                chunk.usage = metadata.usage.map(Usage::from);
                return Ok(Some(chunk));
            }
            exception if exception.ends_with("Exception") => {
                return Err(stream_exception(exception, &event.data));
            }
            // `contentBlockStop` and event types added after this adapter carry nothing to send.
            _ => return Ok(None),
        };
        Ok(Some(self.chunk(delta, None)))
    }

    fn finished(&self) -> bool {
        self.finished
    }
}

/// An exception inside the stream, classified by the status Bedrock documents for it.
fn stream_exception(name: &str, data: &str) -> UpstreamError {
    let status = match name {
        "validationException" => StatusCode::BAD_REQUEST,
        "accessDeniedException" => StatusCode::FORBIDDEN,
        "resourceNotFoundException" => StatusCode::NOT_FOUND,
        "modelTimeoutException" => StatusCode::REQUEST_TIMEOUT,
        "throttlingException" | "serviceQuotaExceededException" => StatusCode::TOO_MANY_REQUESTS,
        "modelStreamErrorException" => StatusCode::FAILED_DEPENDENCY,
        "serviceUnavailableException" => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    decode_error(status, data.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::Capabilities;
    use crate::providers::eventstream::EventStreamParser;
    use crate::providers::eventstream::tests::frame;

    fn fixture(name: &str) -> String {
        let path = format!(
            "{}/tests/fixtures/bedrock/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read_to_string(&path).unwrap_or_else(|_| panic!("missing fixture {path}"))
    }

    fn target(model: &'static str) -> Target<'static> {
        static CAPABILITIES: std::sync::LazyLock<Capabilities> =
            std::sync::LazyLock::new(Capabilities::default);
        Target {
            upstream_model: model,
            max_output: None,
            capabilities: &CAPABILITIES,
        }
    }

    fn bedrock(session_token: Option<&str>) -> Bedrock {
        Bedrock::new(
            "https://bedrock-runtime.us-east-1.amazonaws.com",
            "us-east-1".to_owned(),
            Credentials {
                access_key_id: "AKIDEXAMPLE".to_owned(),
                secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".to_owned(),
                session_token: session_token.map(str::to_owned),
            },
        )
        .unwrap()
    }

    fn request(body: Value) -> ChatRequest {
        serde_json::from_value(body).unwrap()
    }

    fn body_of(request: &ChatRequest) -> Value {
        converse_body(request).unwrap()
    }

    /// Replays a fixture of `{"event"|"exception": name, "payload": {...}}` lines through the
    /// event-stream framing and the decoder.
    fn replay(fixture_name: &str) -> Vec<Result<Option<ChatChunk>, UpstreamError>> {
        let mut bytes = Vec::new();
        for line in fixture(fixture_name)
            .lines()
            .filter(|line| !line.trim().is_empty())
        {
            let line: Value = serde_json::from_str(line).unwrap();
            let (kind, name) = match (line.get("event"), line.get("exception")) {
                (Some(name), _) => ("event", name),
                (None, Some(name)) => ("exception", name),
                (None, None) => panic!("a fixture line without event or exception"),
            };
            bytes.extend(frame(
                kind,
                name.as_str().unwrap(),
                &line["payload"].to_string(),
            ));
        }
        let mut parser = EventStreamParser::default();
        parser.push(&bytes);
        let mut decoder = ConverseStreamDecoder::default();
        let mut out = Vec::new();
        while let Some(event) = parser.next_event() {
            out.push(decoder.decode(&event.unwrap()));
        }
        out
    }

    #[test]
    fn system_messages_become_the_system_field_and_text_turns_alternate() {
        let body = body_of(&request(json!({
            "model": "m",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello"},
                {"role": "user", "content": [{"type": "text", "text": "Again"}]},
            ],
            "max_tokens": 100, "temperature": 0.2, "top_p": 0.9, "stop": ["END"], "seed": 4
        })));
        assert_eq!(body["system"], json!([{"text": "Be brief."}]));
        assert_eq!(
            body["messages"],
            json!([
                {"role": "user", "content": [{"text": "Hi"}]},
                {"role": "assistant", "content": [{"text": "Hello"}]},
                {"role": "user", "content": [{"text": "Again"}]},
            ])
        );
        assert_eq!(
            body["inferenceConfig"],
            json!({"maxTokens": 100, "temperature": 0.2, "topP": 0.9, "stopSequences": ["END"]})
        );
        assert!(body.get("seed").is_none() && body.get("model").is_none());
    }

    #[test]
    fn data_url_images_become_inline_image_blocks() {
        let body = body_of(&request(json!({"messages": [{"role": "user", "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ"}},
        ]}]})));
        assert_eq!(
            body["messages"][0]["content"][1],
            json!({"image": {"format": "jpeg", "source": {"bytes": "/9j/4AAQ"}}})
        );
    }

    #[test]
    fn image_urls_are_refused_as_invalid_requests_rather_than_dropped() {
        let error = converse_body(&request(json!({"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
        ]}]})))
        .unwrap_err();
        assert!(matches!(error, ProviderError::InvalidRequest(_)));
        assert_eq!(
            UpstreamError::from(error).kind,
            UpstreamErrorKind::BadRequest
        );
    }

    #[test]
    fn tool_calls_and_results_map_to_tool_use_blocks_in_merged_turns() {
        let body = body_of(&request(json!({
            "messages": [
                {"role": "user", "content": "Weather in Paris and Rome?"},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "t1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}},
                    {"id": "t2", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Rome\"}"}},
                ]},
                {"role": "tool", "tool_call_id": "t1", "content": "{\"celsius\":21}"},
                {"role": "tool", "tool_call_id": "t2", "content": "sunny"},
            ],
            "tools": [{"type": "function", "function": {"name": "weather", "description": "Current weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
            "tool_choice": {"type": "function", "function": {"name": "weather"}},
        })));
        let messages = body["messages"].as_array().unwrap();
        assert_eq!(messages.len(), 3);
        assert_eq!(
            messages[1]["content"][0],
            json!({"toolUse": {"toolUseId": "t1", "name": "weather", "input": {"city": "Paris"}}})
        );
        assert_eq!(messages[2]["role"], "user");
        assert_eq!(
            messages[2]["content"],
            json!([
                {"toolResult": {"toolUseId": "t1", "content": [{"json": {"celsius": 21}}]}},
                {"toolResult": {"toolUseId": "t2", "content": [{"text": "sunny"}]}},
            ])
        );
        assert_eq!(
            body["toolConfig"],
            json!({
                "tools": [{"toolSpec": {"name": "weather", "description": "Current weather",
                    "inputSchema": {"json": {"type": "object", "properties": {"city": {"type": "string"}}}}}}],
                "toolChoice": {"tool": {"name": "weather"}},
            })
        );
    }

    #[test]
    fn tool_choice_maps_to_auto_any_or_nothing() {
        let with_choice = |choice: Value| {
            body_of(&request(json!({
                "messages": [{"role": "user", "content": "hi"}],
                "tools": [{"type": "function", "function": {"name": "f"}}],
                "tool_choice": choice,
            })))
        };
        assert_eq!(
            with_choice(json!("auto"))["toolConfig"]["toolChoice"],
            json!({"auto": {}})
        );
        assert_eq!(
            with_choice(json!("required"))["toolConfig"]["toolChoice"],
            json!({"any": {}})
        );
        assert!(with_choice(json!("none")).get("toolConfig").is_none());
        assert_eq!(
            with_choice(json!("auto"))["toolConfig"]["tools"][0]["toolSpec"]["inputSchema"]["json"]
                ["type"],
            "object"
        );
    }

    #[test]
    fn requests_are_signed_for_bedrock_with_the_model_id_encoded() {
        let built = bedrock(Some("session-token"))
            .build_request(
                &request(json!({"stream": true, "messages": [{"role": "user", "content": "hi"}]})),
                target("anthropic.claude-3-haiku-20240307-v1:0"),
            )
            .unwrap();
        let UpstreamRequest::Http { uri, headers, .. } = built else {
            panic!("expected an HTTP request");
        };
        assert_eq!(
            uri.to_string(),
            "https://bedrock-runtime.us-east-1.amazonaws.com/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse-stream"
        );
        let header = |name: &str| {
            headers
                .iter()
                .find(|(header, _)| header == name)
                .map(|(_, value)| value.clone())
                .unwrap_or_else(|| panic!("no {name} header"))
        };
        let authorization = header("authorization");
        let authorization = authorization.to_str().unwrap();
        assert!(
            authorization.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/"),
            "{authorization}"
        );
        assert!(authorization.contains("/us-east-1/bedrock/aws4_request"));
        assert!(authorization.contains("SignedHeaders=") && authorization.contains("Signature="));
        assert!(header("authorization").is_sensitive());
        assert_eq!(header("x-amz-date").len(), "20240101T000000Z".len());
        assert_eq!(header("x-amz-security-token"), "session-token");
        assert_eq!(header("accept"), "application/vnd.amazon.eventstream");
    }

    #[test]
    fn non_streaming_requests_use_converse() {
        let built = bedrock(None)
            .build_request(
                &request(json!({"messages": [{"role": "user", "content": "hi"}]})),
                target("arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.x"),
            )
            .unwrap();
        let UpstreamRequest::Http { uri, headers, .. } = built else {
            panic!("expected an HTTP request");
        };
        assert_eq!(
            uri.path(),
            "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile%2Fus.x/converse"
        );
        assert!(
            !headers
                .iter()
                .any(|(name, _)| name == "x-amz-security-token")
        );
    }

    #[test]
    fn a_text_response_becomes_a_chat_completion_with_cache_usage() {
        let response = bedrock(None)
            .parse_response(fixture("converse_text.json").as_bytes())
            .unwrap();
        assert_eq!(response.finish_reason(), Some("stop"));
        let message = &response.choices.parsed()[0].message;
        assert_eq!(
            message.content.as_deref(),
            Some("Paris is the capital of France.")
        );
        let usage = response.usage.unwrap();
        assert_eq!(
            (usage.prompt_tokens, usage.completion_tokens),
            (25 + 100 + 20, 9)
        );
        assert_eq!(
            (usage.cached_tokens(), usage.cache_write_tokens()),
            (100, 20)
        );
    }

    #[test]
    fn a_tool_use_response_becomes_tool_calls() {
        let response = bedrock(None)
            .parse_response(fixture("converse_tool_use.json").as_bytes())
            .unwrap();
        assert_eq!(response.finish_reason(), Some("tool_calls"));
        let calls = response.choices.parsed()[0]
            .message
            .tool_calls
            .as_ref()
            .unwrap();
        assert_eq!(calls[0]["id"], "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q");
        assert_eq!(calls[0]["function"]["name"], "top_song");
        let arguments: Value =
            serde_json::from_str(calls[0]["function"]["arguments"].as_str().unwrap()).unwrap();
        assert_eq!(arguments, json!({"sign": "WZPZ"}));
    }

    #[test]
    fn stop_reasons_map_to_openai_finish_reasons() {
        for (stop, finish) in [
            ("end_turn", "stop"),
            ("stop_sequence", "stop"),
            ("max_tokens", "length"),
            ("tool_use", "tool_calls"),
            ("guardrail_intervened", "content_filter"),
            ("content_filtered", "content_filter"),
        ] {
            assert_eq!(finish_reason(stop), finish);
        }
    }

    #[test]
    fn a_text_stream_sends_the_role_first_then_text_finish_and_usage() {
        let chunks: Vec<ChatChunk> = replay("converse_stream_text.jsonl")
            .into_iter()
            .filter_map(Result::unwrap)
            .collect();
        assert_eq!(
            chunks[0].choices[0].delta.role.as_deref(),
            Some("assistant")
        );
        let text: String = chunks
            .iter()
            .filter_map(|chunk| chunk.choices.first()?.delta.content.clone())
            .collect();
        assert_eq!(text, "Hello world");
        let finish = chunks
            .iter()
            .find_map(|chunk| chunk.choices.first()?.finish_reason.clone());
        assert_eq!(finish.as_deref(), Some("stop"));
        let usage = chunks.last().unwrap().usage.clone().unwrap();
        assert_eq!((usage.prompt_tokens, usage.completion_tokens), (12, 3));
    }

    #[test]
    fn a_streamed_tool_call_sends_id_and_name_before_its_argument_fragments() {
        let chunks: Vec<ChatChunk> = replay("converse_stream_tool_use.jsonl")
            .into_iter()
            .filter_map(Result::unwrap)
            .collect();
        let calls: Vec<&Value> = chunks
            .iter()
            .filter_map(|chunk| chunk.choices.first()?.delta.tool_calls.as_ref())
            .flatten()
            .collect();
        assert_eq!(calls[0]["index"], 0);
        assert_eq!(calls[0]["id"], "tooluse_abc123");
        assert_eq!(calls[0]["function"]["name"], "top_song");
        let arguments: String = calls
            .iter()
            .filter_map(|call| call["function"]["arguments"].as_str())
            .collect();
        assert_eq!(arguments, r#"{"sign":"WZPZ"}"#);
        assert!(
            calls[1..]
                .iter()
                .all(|call| call["index"] == 0 && call.get("id").is_none())
        );
        let finish = chunks
            .iter()
            .find_map(|chunk| chunk.choices.first()?.finish_reason.clone());
        assert_eq!(finish.as_deref(), Some("tool_calls"));
    }

    #[test]
    fn stream_exceptions_are_classified_errors() {
        let results = replay("converse_stream_throttled.jsonl");
        let error = results.last().unwrap().as_ref().unwrap_err();
        assert_eq!(error.kind, UpstreamErrorKind::RateLimited);
        for (name, kind) in [
            ("validationException", UpstreamErrorKind::BadRequest),
            ("modelStreamErrorException", UpstreamErrorKind::Server),
            ("serviceUnavailableException", UpstreamErrorKind::Server),
            ("internalServerException", UpstreamErrorKind::Server),
        ] {
            assert_eq!(
                stream_exception(name, r#"{"message":"x"}"#).kind,
                kind,
                "{name}"
            );
        }
        assert_eq!(
            stream_exception("serviceUnavailableException", "{}").status,
            Some(503)
        );
    }

    #[test]
    fn http_errors_keep_bedrocks_message_for_bad_requests() {
        let error = decode_error(
            StatusCode::BAD_REQUEST,
            fixture("validation_error.json").as_bytes(),
        );
        assert_eq!(error.kind, UpstreamErrorKind::BadRequest);
        assert!(error.message.contains("temperature"), "{}", error.message);
        let too_long = decode_error(
            StatusCode::BAD_REQUEST,
            br#"{"message":"Input is too long for requested model."}"#,
        );
        assert_eq!(too_long.kind, UpstreamErrorKind::ContextLength);
        let throttled = decode_error(
            StatusCode::TOO_MANY_REQUESTS,
            br#"{"message":"Too many requests, please wait before trying again."}"#,
        );
        assert_eq!(throttled.kind, UpstreamErrorKind::RateLimited);
    }
}
