//! Anthropic's Messages API (`kind = "anthropic"`): canonical chat requests become `/v1/messages`
//! bodies; Anthropic's messages, event streams and error bodies become canonical responses, chunks
//! and classified errors. Does no I/O and knows nothing of routing or accounts.

use std::borrow::Cow;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::{
    Provider, ProviderError, SseEvent, StreamDecoder, Target, UpstreamError, UpstreamErrorKind,
    UpstreamRequest,
};
use crate::openai::{
    ChatChunk, ChatRequest, ChatResponse, Choice, ChunkChoice, Content, Delta, Message,
    PromptTokensDetails, ResponseMessage, Role, Usage,
};

/// Where `kind = "anthropic"` sends requests when the config names no `base_url`.
pub(super) const DEFAULT_BASE_URL: &str = "https://api.anthropic.com";

/// The API version whose wire format this adapter speaks.
const API_VERSION: &str = "2023-06-01";

/// Anthropic requires `max_tokens`; this is sent when neither the caller nor the catalog gives one.
const DEFAULT_MAX_TOKENS: u32 = 4096;

/// The smallest `top_p` Anthropic accepts together with extended thinking.
const MIN_TOP_P_WITH_THINKING: f64 = 0.95;
/// Anthropic's smallest thinking budget.
const MIN_THINKING_BUDGET: u64 = 1024;

/// OpenRouter caps the budget it derives from `reasoning.effort` here
/// (https://openrouter.ai/docs/use-cases/reasoning-tokens); an explicit `reasoning.max_tokens`
/// is not capped.
const MAX_EFFORT_THINKING_BUDGET: u64 = 32_000;

pub(super) struct Anthropic {
    /// Parsed once: cloning a `Uri` is a reference count, parsing one is not.
    messages_uri: http::Uri,
    api_key: Option<HeaderValue>,
}

impl Anthropic {
    pub(super) fn new(base_url: &str, api_key: Option<&str>) -> Result<Self, ProviderError> {
        let api_key = api_key.map(super::secret_header).transpose()?;
        let messages_url = format!("{}/v1/messages", base_url.trim_end_matches('/'));
        let messages_uri = super::endpoint_uri(messages_url)?;
        Ok(Self {
            messages_uri,
            api_key,
        })
    }
}

/// The caller's request cannot be expressed in this API: a 400, not a reason to fail over.
fn invalid_request(reason: impl Into<String>) -> ProviderError {
    ProviderError::InvalidRequest(reason.into())
}

// ---------------------------------------------------------------------------------------------
// Request: borrowed from the canonical request wherever the shapes allow.

#[derive(Serialize)]
struct MessagesBody<'a> {
    model: &'a str,
    max_tokens: u32,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    system: Vec<Block<'a>>,
    messages: Vec<Turn<'a>>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_k: Option<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    stop_sequences: Vec<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<ToolDefinition<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<ToolChoice<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    thinking: Option<Thinking>,
    #[serde(skip_serializing_if = "Option::is_none")]
    output_config: Option<OutputConfig<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<Metadata<'a>>,
}

/// One turn of the conversation; Anthropic requires user and assistant turns to alternate.
#[derive(Serialize)]
struct Turn<'a> {
    role: TurnRole,
    content: Vec<Block<'a>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum TurnRole {
    User,
    Assistant,
}

#[derive(Serialize)]
struct Block<'a> {
    #[serde(flatten)]
    kind: BlockKind<'a>,
    /// Anthropic's prompt-caching breakpoint, passed through as the caller wrote it.
    #[serde(skip_serializing_if = "Option::is_none")]
    cache_control: Option<&'a Value>,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum BlockKind<'a> {
    Text {
        text: &'a str,
    },
    Image {
        source: ImageSource<'a>,
    },
    ToolUse {
        id: &'a str,
        name: &'a str,
        input: Value,
    },
    ToolResult {
        tool_use_id: &'a str,
        content: Vec<Block<'a>>,
    },
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ImageSource<'a> {
    Base64 { media_type: &'a str, data: &'a str },
    Url { url: &'a str },
}

#[derive(Serialize)]
struct ToolDefinition<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    input_schema: Cow<'a, Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cache_control: Option<&'a Value>,
}

#[derive(Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ToolChoice<'a> {
    Auto,
    None,
    Any,
    Tool { name: &'a str },
}

#[derive(Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Thinking {
    Enabled { budget_tokens: u64 },
}

/// Structured output through the generally available `output_config.format`
/// (https://platform.claude.com/docs/en/build-with-claude/structured-outputs): constrained
/// decoding, so the answer arrives as ordinary text, unlike the older tool-forcing workaround.
#[derive(Serialize)]
struct OutputConfig<'a> {
    format: OutputFormat<'a>,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum OutputFormat<'a> {
    JsonSchema { schema: &'a Value },
}

#[derive(Serialize)]
struct Metadata<'a> {
    user_id: &'a str,
}

fn encode_body(request: &ChatRequest, target: Target<'_>) -> Result<Bytes, ProviderError> {
    let mut system = Vec::new();
    let mut turns: Vec<Turn<'_>> = Vec::with_capacity(request.messages.len());
    for message in &request.messages {
        let (role, blocks) = match message.role {
            Role::System | Role::Developer => {
                system.extend(message_blocks(message, content_blocks(message)?));
                continue;
            }
            Role::User => (TurnRole::User, content_blocks(message)?),
            Role::Assistant => (TurnRole::Assistant, assistant_blocks(message)?),
            Role::Tool => (TurnRole::User, vec![tool_result(message)?]),
            Role::Function => {
                return Err(invalid_request(
                    "the deprecated `function` role; send `tool` messages instead",
                ));
            }
        };
        push_turn(&mut turns, role, message_blocks(message, blocks));
    }
    let max_tokens = request
        .max_output_tokens()
        .or(target.max_output)
        .unwrap_or(DEFAULT_MAX_TOKENS);
    let tools = request
        .tools
        .iter()
        .flatten()
        .map(tool_definition)
        .collect::<Result<_, _>>()?;
    let thinking = thinking(request.reasoning.as_ref(), max_tokens);
    // Extended thinking refuses `temperature` and `top_k` and takes `top_p` only from 0.95 up
    // (https://docs.anthropic.com/en/docs/build-with-claude/extended-thinking): like any sampling
    // parameter an endpoint cannot honour, they are dropped rather than failing the request.
    let sampling = thinking.is_none();
    let body = MessagesBody {
        model: target.upstream_model,
        max_tokens,
        system,
        messages: turns,
        stream: request.stream,
        temperature: request.temperature.filter(|_| sampling),
        top_p: request
            .top_p
            .filter(|top_p| sampling || *top_p >= MIN_TOP_P_WITH_THINKING),
        top_k: request
            .extra
            .get("top_k")
            .and_then(Value::as_u64)
            .filter(|_| sampling),
        stop_sequences: stop_sequences(request.extra.get("stop"))?,
        tools,
        tool_choice: request.tool_choice.as_ref().map(tool_choice).transpose()?,
        thinking,
        output_config: output_config(request.response_format.as_ref())?,
        metadata: request.user.as_deref().map(|user_id| Metadata { user_id }),
    };
    Ok(Bytes::from(serde_json::to_vec(&body)?))
}

/// Consecutive messages of one role become one turn, as Anthropic requires alternation; that is
/// also how several `tool` results end up in the single user turn that answers their calls.
fn push_turn<'a>(turns: &mut Vec<Turn<'a>>, role: TurnRole, blocks: Vec<Block<'a>>) {
    if blocks.is_empty() {
        return;
    }
    match turns.last_mut() {
        Some(last) if last.role == role => last.content.extend(blocks),
        _ => turns.push(Turn {
            role,
            content: blocks,
        }),
    }
}

/// A `cache_control` on the whole message marks the end of its content, which is where Anthropic
/// puts a breakpoint.
fn message_blocks<'a>(message: &'a Message, mut blocks: Vec<Block<'a>>) -> Vec<Block<'a>> {
    if let (Some(cache_control), Some(last)) =
        (message.extra.get("cache_control"), blocks.last_mut())
    {
        last.cache_control.get_or_insert(cache_control);
    }
    blocks
}

fn content_blocks(message: &Message) -> Result<Vec<Block<'_>>, ProviderError> {
    let blocks = match &message.content {
        None => Vec::new(),
        Some(Content::Text(text)) => vec![Block {
            kind: BlockKind::Text { text },
            cache_control: None,
        }],
        Some(Content::Parts(parts)) => parts.iter().map(part_block).collect::<Result<_, _>>()?,
    };
    // Anthropic rejects empty text blocks, and they carry nothing.
    Ok(blocks
        .into_iter()
        .filter(|block| !matches!(block.kind, BlockKind::Text { text } if text.is_empty()))
        .collect())
}

fn part_block(part: &Map<String, Value>) -> Result<Block<'_>, ProviderError> {
    let kind = match part.get("type").and_then(Value::as_str) {
        Some("text") => BlockKind::Text {
            text: part.get("text").and_then(Value::as_str).unwrap_or_default(),
        },
        Some("image_url") => {
            let image = part.get("image_url");
            let url = image
                .and_then(|image| image.get("url"))
                .or(image)
                .and_then(Value::as_str)
                .ok_or_else(|| invalid_request("an image_url part without a url"))?;
            BlockKind::Image {
                source: image_source(url)?,
            }
        }
        other => return Err(invalid_request(format!("content parts of type {other:?}"))),
    };
    Ok(Block {
        kind,
        cache_control: part.get("cache_control"),
    })
}

fn image_source(url: &str) -> Result<ImageSource<'_>, ProviderError> {
    if let Some(data_url) = url.strip_prefix("data:") {
        let (media_type, data) = data_url
            .split_once(";base64,")
            .ok_or_else(|| invalid_request("image data URLs that are not base64"))?;
        return Ok(ImageSource::Base64 { media_type, data });
    }
    if url.starts_with("https://") || url.starts_with("http://") {
        return Ok(ImageSource::Url { url });
    }
    Err(invalid_request(
        "image URLs other than http(s) and base64 data URLs",
    ))
}

fn assistant_blocks(message: &Message) -> Result<Vec<Block<'_>>, ProviderError> {
    let mut blocks = content_blocks(message)?;
    for call in message.tool_calls.iter().flatten() {
        let function = call.get("function");
        let field = |name: &str| {
            function
                .and_then(|function| function.get(name))
                .and_then(Value::as_str)
        };
        let id = call
            .get("id")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid_request("a tool call without an id"))?;
        let name = field("name").ok_or_else(|| invalid_request("a tool call without a name"))?;
        let arguments = field("arguments").unwrap_or_default();
        let input = if arguments.trim().is_empty() {
            Value::Object(Map::new())
        } else {
            serde_json::from_str(arguments).map_err(|_| {
                invalid_request(format!(
                    "tool call {id:?}: its arguments are not a JSON object"
                ))
            })?
        };
        blocks.push(Block {
            kind: BlockKind::ToolUse { id, name, input },
            cache_control: None,
        });
    }
    Ok(blocks)
}

fn tool_result(message: &Message) -> Result<Block<'_>, ProviderError> {
    let tool_use_id = message
        .tool_call_id
        .as_deref()
        .ok_or_else(|| invalid_request("a tool message without tool_call_id"))?;
    Ok(Block {
        kind: BlockKind::ToolResult {
            tool_use_id,
            content: content_blocks(message)?,
        },
        cache_control: None,
    })
}

fn tool_definition(tool: &Value) -> Result<ToolDefinition<'_>, ProviderError> {
    let function = tool
        .get("function")
        .filter(|_| tool.get("type").and_then(Value::as_str) == Some("function"))
        .ok_or_else(|| invalid_request("tools other than functions"))?;
    let name = function
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid_request("a function tool without a name"))?;
    let input_schema = function.get("parameters").map_or_else(
        || Cow::Owned(json!({"type": "object", "properties": {}})),
        Cow::Borrowed,
    );
    Ok(ToolDefinition {
        name,
        description: function.get("description").and_then(Value::as_str),
        input_schema,
        cache_control: tool.get("cache_control"),
    })
}

fn tool_choice(choice: &Value) -> Result<ToolChoice<'_>, ProviderError> {
    match choice {
        Value::String(mode) => match mode.as_str() {
            "auto" => Ok(ToolChoice::Auto),
            "none" => Ok(ToolChoice::None),
            "required" => Ok(ToolChoice::Any),
            other => Err(invalid_request(format!("tool_choice {other:?}"))),
        },
        named => named
            .pointer("/function/name")
            .and_then(Value::as_str)
            .map(|name| ToolChoice::Tool { name })
            .ok_or_else(|| invalid_request("a tool_choice object without function.name")),
    }
}

fn stop_sequences(stop: Option<&Value>) -> Result<Vec<&str>, ProviderError> {
    let invalid = || invalid_request("`stop` that is neither a string nor a list of strings");
    match stop {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(sequence)) => Ok(vec![sequence.as_str()]),
        Some(Value::Array(sequences)) => sequences
            .iter()
            .map(|sequence| sequence.as_str().ok_or_else(invalid))
            .collect(),
        Some(_) => Err(invalid()),
    }
}

/// OpenRouter's `reasoning`: an explicit `max_tokens` is the budget; an `effort` takes OpenRouter's
/// share of the output cap (https://openrouter.ai/docs/use-cases/reasoning-tokens).
fn thinking(reasoning: Option<&Value>, max_tokens: u32) -> Option<Thinking> {
    let reasoning = reasoning?;
    if reasoning.get("enabled").and_then(Value::as_bool) == Some(false) {
        return None;
    }
    let budget_tokens = match reasoning.get("max_tokens").and_then(Value::as_u64) {
        Some(budget) => budget.max(MIN_THINKING_BUDGET),
        None => {
            let effort = reasoning.get("effort").and_then(Value::as_str);
            let enabled = reasoning.get("enabled").and_then(Value::as_bool) == Some(true);
            let percent = match effort {
                Some("none") => return None,
                None if !enabled => return None,
                Some("minimal") => 10,
                Some("low") => 20,
                Some("high") => 80,
                Some("xhigh") => 95,
                _ => 50,
            };
            (u64::from(max_tokens) * percent / 100)
                .clamp(MIN_THINKING_BUDGET, MAX_EFFORT_THINKING_BUDGET)
        }
    };
    Some(Thinking::Enabled { budget_tokens })
}

fn output_config(
    response_format: Option<&Value>,
) -> Result<Option<OutputConfig<'_>>, ProviderError> {
    let Some(format) = response_format else {
        return Ok(None);
    };
    match format.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_schema") => {
            let schema = format
                .pointer("/json_schema/schema")
                .ok_or_else(|| invalid_request("a json_schema response_format without a schema"))?;
            Ok(Some(OutputConfig {
                format: OutputFormat::JsonSchema { schema },
            }))
        }
        other => Err(invalid_request(format!(
            "response_format {other:?}: Anthropic constrains output only to a json_schema"
        ))),
    }
}

// ---------------------------------------------------------------------------------------------
// Response and stream.

#[derive(Deserialize)]
struct MessageBody {
    #[serde(default)]
    id: String,
    #[serde(default)]
    model: String,
    #[serde(default)]
    content: Vec<ContentBlock>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    usage: Option<MessageUsage>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ContentBlock {
    Text {
        #[serde(default)]
        text: String,
    },
    Thinking {
        #[serde(default)]
        thinking: String,
    },
    ToolUse {
        id: String,
        name: String,
        #[serde(default)]
        input: Value,
    },
    /// `redacted_thinking` and server-tool blocks: nothing a chat completion can carry.
    #[serde(other)]
    Other,
}

/// Anthropic's token counts. `input_tokens` excludes the cached and cache-written tokens, which
/// OpenAI's `prompt_tokens` includes. Optional throughout: `message_delta` repeats only some.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
struct MessageUsage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
}

impl MessageUsage {
    /// Stream counts are cumulative: what a later event states replaces what an earlier one did.
    fn update(&mut self, later: MessageUsage) {
        self.input_tokens = later.input_tokens.or(self.input_tokens);
        self.output_tokens = later.output_tokens.or(self.output_tokens);
        self.cache_creation_input_tokens = later
            .cache_creation_input_tokens
            .or(self.cache_creation_input_tokens);
        self.cache_read_input_tokens = later
            .cache_read_input_tokens
            .or(self.cache_read_input_tokens);
    }

    fn to_usage(self) -> Usage {
        let cached = self.cache_read_input_tokens.unwrap_or(0);
        let cache_write = self.cache_creation_input_tokens.unwrap_or(0);
        let prompt_tokens = self.input_tokens.unwrap_or(0) + cached + cache_write;
        let completion_tokens = self.output_tokens.unwrap_or(0);
        Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
            prompt_tokens_details: Some(PromptTokensDetails {
                cached_tokens: cached,
                cache_write_tokens: cache_write,
                extra: Map::new(),
            }),
            ..Usage::default()
        }
    }
}

fn finish_reason(stop_reason: &str) -> String {
    match stop_reason {
        "end_turn" | "stop_sequence" | "pause_turn" => "stop",
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        other => other,
    }
    .to_owned()
}

/// The OpenAI tool call for a `tool_use` block, arguments as JSON text.
fn tool_call(id: String, name: String, input: &Value) -> Value {
    let arguments = match input {
        Value::Null => "{}".to_owned(),
        input => input.to_string(),
    };
    json!({"id": id, "type": "function", "function": {"name": name, "arguments": arguments}})
}

fn decode_response(body: &[u8]) -> Result<ChatResponse, ProviderError> {
    let message: MessageBody = serde_json::from_slice(body)
        .map_err(|error| ProviderError::InvalidResponse(error.to_string()))?;
    let mut text: Option<String> = None;
    let mut reasoning: Option<String> = None;
    let mut tool_calls = Vec::new();
    for block in message.content {
        match block {
            ContentBlock::Text { text: part } => text.get_or_insert_default().push_str(&part),
            ContentBlock::Thinking { thinking } => {
                reasoning.get_or_insert_default().push_str(&thinking);
            }
            ContentBlock::ToolUse { id, name, input } => {
                tool_calls.push(tool_call(id, name, &input));
            }
            ContentBlock::Other => {}
        }
    }
    Ok(ChatResponse {
        id: message.id,
        object: "chat.completion".to_owned(),
        created: 0,
        model: message.model,
        provider: None,
        choices: vec![Choice {
            index: 0,
            message: ResponseMessage {
                role: "assistant".to_owned(),
                content: text,
                reasoning,
                tool_calls: (!tool_calls.is_empty()).then_some(tool_calls),
                extra: Map::new(),
            },
            finish_reason: message.stop_reason.as_deref().map(finish_reason),
            extra: Map::new(),
        }]
        .into(),
        usage: message.usage.map(MessageUsage::to_usage),
        extra: Map::new(),
    })
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum StreamEvent {
    MessageStart {
        message: MessageBody,
    },
    ContentBlockStart {
        index: u32,
        content_block: ContentBlock,
    },
    ContentBlockDelta {
        index: u32,
        delta: BlockDelta,
    },
    MessageDelta {
        delta: MessageDelta,
        #[serde(default)]
        usage: Option<MessageUsage>,
    },
    MessageStop,
    Error {
        error: ErrorDetail,
    },
    /// `ping`, `content_block_stop` and event types added later carry nothing for the caller.
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum BlockDelta {
    TextDelta {
        text: String,
    },
    InputJsonDelta {
        partial_json: String,
    },
    ThinkingDelta {
        thinking: String,
    },
    /// `signature_delta` (only needed to send thinking back to Anthropic) and later delta types.
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct MessageDelta {
    #[serde(default)]
    stop_reason: Option<String>,
}

/// Rebuilds OpenAI chunks from Anthropic's block-structured events.
#[derive(Default)]
struct EventDecoder {
    message_id: String,
    model: String,
    role_sent: bool,
    /// `None` until the upstream states any count, so the gateway can tell "unreported" from zero.
    usage: Option<MessageUsage>,
    /// The Anthropic block index of each tool call so far; a call's OpenAI `index` is its position.
    tool_blocks: Vec<u32>,
    finished: bool,
}

impl EventDecoder {
    /// `message_start` produces no chunk, so an error right after it can still fail over; the
    /// role rides on the first chunk instead, with the input usage `message_start` reported, so a
    /// stream cut short later is billed for its exact prompt.
    fn chunk(&mut self, mut delta: Delta, finish_reason: Option<String>) -> ChatChunk {
        let mut chunk = ChatChunk::empty(&self.message_id, 0, &self.model, None);
        if !self.role_sent {
            self.role_sent = true;
            delta.role = Some("assistant".to_owned());
            chunk.usage = self.usage.map(MessageUsage::to_usage);
        }
        chunk.choices.push(ChunkChoice {
            index: 0,
            delta,
            finish_reason,
            extra: Map::new(),
        });
        chunk
    }

    fn update_usage(&mut self, usage: Option<MessageUsage>) {
        if let Some(later) = usage {
            self.usage.get_or_insert_default().update(later);
        }
    }

    fn block_start(&mut self, index: u32, block: ContentBlock) -> Option<Delta> {
        match block {
            ContentBlock::Text { text } => (!text.is_empty()).then(|| Delta {
                content: Some(text),
                ..Delta::default()
            }),
            ContentBlock::Thinking { thinking } => (!thinking.is_empty()).then(|| Delta {
                reasoning: Some(thinking),
                ..Delta::default()
            }),
            ContentBlock::ToolUse { id, name, .. } => {
                let call_index = self.tool_blocks.len();
                self.tool_blocks.push(index);
                // The input arrives as `input_json_delta` fragments; `input` here is always `{}`.
                Some(Delta {
                    tool_calls: Some(vec![json!({
                        "index": call_index,
                        "id": id,
                        "type": "function",
                        "function": {"name": name, "arguments": ""},
                    })]),
                    ..Delta::default()
                })
            }
            ContentBlock::Other => None,
        }
    }

    fn block_delta(&self, index: u32, delta: BlockDelta) -> Result<Option<Delta>, UpstreamError> {
        Ok(match delta {
            BlockDelta::TextDelta { text } => Some(Delta {
                content: Some(text),
                ..Delta::default()
            }),
            BlockDelta::ThinkingDelta { thinking } => Some(Delta {
                reasoning: Some(thinking),
                ..Delta::default()
            }),
            BlockDelta::InputJsonDelta { partial_json } if partial_json.is_empty() => None,
            BlockDelta::InputJsonDelta { partial_json } => {
                let call_index = self
                    .tool_blocks
                    .iter()
                    .position(|block| *block == index)
                    .ok_or_else(|| {
                        UpstreamError::new(
                            UpstreamErrorKind::Protocol,
                            "the upstream sent tool input for a block that is not a tool call",
                        )
                    })?;
                Some(Delta {
                    tool_calls: Some(vec![json!({
                        "index": call_index,
                        "function": {"arguments": partial_json},
                    })]),
                    ..Delta::default()
                })
            }
            BlockDelta::Other => None,
        })
    }
}

impl StreamDecoder for EventDecoder {
    fn decode(&mut self, event: &SseEvent) -> Result<Option<ChatChunk>, UpstreamError> {
        if event.data.is_empty() {
            return Ok(None);
        }
        let parsed: StreamEvent = serde_json::from_str(&event.data).map_err(|error| {
            UpstreamError::new(
                UpstreamErrorKind::Protocol,
                format!("unreadable stream event: {error}"),
            )
        })?;
        match parsed {
            StreamEvent::MessageStart { message } => {
                self.message_id = message.id;
                self.model = message.model;
                self.update_usage(message.usage);
                Ok(None)
            }
            StreamEvent::ContentBlockStart {
                index,
                content_block,
            } => Ok(self
                .block_start(index, content_block)
                .map(|delta| self.chunk(delta, None))),
            StreamEvent::ContentBlockDelta { index, delta } => Ok(self
                .block_delta(index, delta)?
                .map(|delta| self.chunk(delta, None))),
            StreamEvent::MessageDelta { delta, usage } => {
                self.update_usage(usage);
                let reason = delta.stop_reason.as_deref().map(finish_reason);
                let mut chunk = self.chunk(Delta::default(), reason);
                chunk.usage = self.usage.map(MessageUsage::to_usage);
                Ok(Some(chunk))
            }
            StreamEvent::MessageStop => {
                self.finished = true;
                Ok(None)
            }
            StreamEvent::Error { error } => Err(classify(None, Some(&error))),
            StreamEvent::Other => Ok(None),
        }
    }

    fn finished(&self) -> bool {
        self.finished
    }
}

// ---------------------------------------------------------------------------------------------
// Errors.

/// Anthropic's error body: `{"type": "error", "error": {"type", "message"}}`.
#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

/// The HTTP status Anthropic documents for each error type
/// (https://platform.claude.com/docs/en/api/errors), so an error inside a stream, which has no
/// status of its own, is classified like the same error before it.
fn status_of_error_type(kind: &str) -> Option<StatusCode> {
    let status = match kind {
        "invalid_request_error" => 400,
        "authentication_error" => 401,
        "permission_error" => 403,
        "not_found_error" => 404,
        "request_too_large" => 413,
        "rate_limit_error" => 429,
        "api_error" => 500,
        "overloaded_error" => 529,
        _ => return None,
    };
    StatusCode::from_u16(status).ok()
}

/// The shared status mapping, fed the error type's status; 529 falls in with the other 5xx as an
/// overloaded provider another endpoint may stand in for.
fn classify(http_status: Option<StatusCode>, detail: Option<&ErrorDetail>) -> UpstreamError {
    let status = detail
        .and_then(|detail| detail.kind.as_deref())
        .and_then(status_of_error_type)
        .or(http_status)
        .unwrap_or(StatusCode::BAD_GATEWAY);
    let message = detail.and_then(|detail| detail.message.as_deref());
    let mut error = UpstreamError::from_status(status, message);
    if let Some(http_status) = http_status {
        error.status = Some(http_status.as_u16());
    }
    if error.kind == UpstreamErrorKind::BadRequest
        && message.is_some_and(|message| message.starts_with("prompt is too long"))
    {
        return error.with_kind(UpstreamErrorKind::ContextLength);
    }
    error
}

fn decode_error(status: StatusCode, body: &[u8]) -> UpstreamError {
    let detail = serde_json::from_slice::<ErrorBody>(body)
        .ok()
        .map(|body| body.error);
    classify(Some(status), detail.as_ref())
}

impl Provider for Anthropic {
    fn build_request(
        &self,
        request: &ChatRequest,
        target: Target<'_>,
    ) -> Result<UpstreamRequest, ProviderError> {
        let credential = self
            .api_key
            .as_ref()
            .map(|key| (HeaderName::from_static("x-api-key"), key));
        let mut headers = super::json_headers(credential);
        headers.push((
            HeaderName::from_static("anthropic-version"),
            HeaderValue::from_static(API_VERSION),
        ));
        Ok(UpstreamRequest::Http {
            uri: self.messages_uri.clone(),
            headers,
            body: encode_body(request, target)?,
        })
    }

    fn parse_response(&self, body: &[u8]) -> Result<ChatResponse, ProviderError> {
        decode_response(body)
    }

    fn stream_decoder(&self) -> Box<dyn StreamDecoder> {
        Box::new(EventDecoder::default())
    }

    fn parse_error(&self, status: StatusCode, body: &[u8]) -> UpstreamError {
        decode_error(status, body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::Capabilities;
    use crate::providers::sse::SseParser;

    static CAPABILITIES: std::sync::LazyLock<Capabilities> =
        std::sync::LazyLock::new(Capabilities::default);

    fn target(max_output: Option<u32>) -> Target<'static> {
        Target {
            upstream_model: "claude-sonnet-4-5-20250929",
            max_output,
            capabilities: &CAPABILITIES,
        }
    }

    fn body_for_target(request: Value, max_output: Option<u32>) -> Value {
        let request: ChatRequest = serde_json::from_value(request).unwrap();
        serde_json::from_slice(&encode_body(&request, target(max_output)).unwrap()).unwrap()
    }

    fn body(request: Value) -> Value {
        body_for_target(request, Some(64_000))
    }

    fn rejection(request: Value) -> String {
        let request: ChatRequest = serde_json::from_value(request).unwrap();
        encode_body(&request, target(None)).unwrap_err().to_string()
    }

    fn fixture(name: &str) -> String {
        let path = format!(
            "{}/tests/fixtures/anthropic/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{path}: {error}"))
    }

    /// Every chunk a fixture stream decodes to, and whether the decoder saw the end.
    fn decode_stream(name: &str) -> (Vec<ChatChunk>, Result<(), UpstreamError>, bool) {
        let mut parser = SseParser::default();
        parser.push(fixture(name).as_bytes());
        let mut decoder = EventDecoder::default();
        let mut chunks = Vec::new();
        while let Some(event) = parser.next_event() {
            match decoder.decode(&event) {
                Ok(chunk) => chunks.extend(chunk),
                Err(error) => return (chunks, Err(error), decoder.finished()),
            }
        }
        (chunks, Ok(()), decoder.finished())
    }

    fn chunk_json(chunks: &[ChatChunk]) -> Vec<Value> {
        chunks
            .iter()
            .map(|chunk| serde_json::to_value(chunk).unwrap())
            .collect()
    }

    #[test]
    fn the_request_goes_to_v1_messages_with_the_key_version_and_content_type() {
        let adapter = Anthropic::new("https://api.anthropic.com/", Some("sk-ant-secret")).unwrap();
        let request: ChatRequest = serde_json::from_value(
            json!({"model": "anthropic/claude-sonnet-4.5", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .unwrap();
        let UpstreamRequest::Http { uri, headers, .. } =
            adapter.build_request(&request, target(None)).unwrap()
        else {
            panic!("an HTTP request");
        };
        assert_eq!(uri, "https://api.anthropic.com/v1/messages");
        let header = |name: &str| {
            headers
                .iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.clone())
                .unwrap()
        };
        assert_eq!(header("x-api-key"), "sk-ant-secret");
        assert!(header("x-api-key").is_sensitive());
        assert_eq!(header("anthropic-version"), "2023-06-01");
        assert_eq!(header("content-type"), "application/json");
        assert!(!headers.iter().any(|(key, _)| key == "authorization"));
    }

    #[test]
    fn system_and_developer_messages_become_the_top_level_system() {
        let body = body(json!({"messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
            {"role": "user", "content": "hi"},
        ]}));
        assert_eq!(
            body["system"],
            json!([{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Answer in French."}])
        );
        assert_eq!(
            body["messages"],
            json!([{"role": "user", "content": [{"type": "text", "text": "hi"}]}])
        );
        assert_eq!(body["model"], "claude-sonnet-4-5-20250929");
        assert!(body.get("stream").is_none());
    }

    #[test]
    fn image_urls_and_base64_data_urls_become_image_blocks() {
        let body = body(json!({"messages": [{"role": "user", "content": [
            {"type": "text", "text": "Compare these."},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg", "detail": "high"}},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        ]}]}));
        assert_eq!(
            body["messages"][0]["content"],
            json!([
                {"type": "text", "text": "Compare these."},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
            ])
        );
    }

    #[test]
    fn images_that_are_neither_web_nor_base64_urls_are_refused() {
        let refused = rejection(json!({"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "file:///etc/passwd"}},
        ]}]}));
        assert!(refused.contains("image URLs"), "{refused}");
        let refused = rejection(json!({"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png,rawbytes"}},
        ]}]}));
        assert!(refused.contains("not base64"), "{refused}");
    }

    #[test]
    fn tools_become_input_schemas_and_every_tool_choice_is_mapped() {
        let parameters = json!({"type": "object", "properties": {"location": {"type": "string"}}});
        let request = |tool_choice: Value| {
            json!({
                "messages": [{"role": "user", "content": "weather?"}],
                "tools": [
                    {"type": "function", "function": {"name": "get_weather", "description": "Current weather", "parameters": parameters}},
                    {"type": "function", "function": {"name": "now"}},
                ],
                "tool_choice": tool_choice,
            })
        };
        let body = body(request(json!("auto")));
        assert_eq!(
            body["tools"],
            json!([
                {"name": "get_weather", "description": "Current weather", "input_schema": parameters},
                {"name": "now", "input_schema": {"type": "object", "properties": {}}},
            ])
        );
        assert_eq!(body["tool_choice"], json!({"type": "auto"}));
        let choices = [
            (json!("none"), json!({"type": "none"})),
            (json!("required"), json!({"type": "any"})),
            (
                json!({"type": "function", "function": {"name": "get_weather"}}),
                json!({"type": "tool", "name": "get_weather"}),
            ),
        ];
        for (openai, anthropic) in choices {
            assert_eq!(
                super::tests::body(request(openai))["tool_choice"],
                anthropic
            );
        }
        assert!(rejection(request(json!("sometimes"))).contains("tool_choice"));
    }

    #[test]
    fn tool_calls_become_tool_use_and_consecutive_results_share_one_user_turn() {
        let body = body(json!({"messages": [
            {"role": "user", "content": "Weather in Paris and Rome?"},
            {"role": "assistant", "content": "Checking both.", "tool_calls": [
                {"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "toolu_2", "type": "function", "function": {"name": "get_weather", "arguments": ""}},
            ]},
            {"role": "tool", "tool_call_id": "toolu_1", "content": "18C"},
            {"role": "tool", "tool_call_id": "toolu_2", "content": [{"type": "text", "text": "21C"}]},
            {"role": "user", "content": "Which is warmer?"},
        ]}));
        assert_eq!(
            body["messages"],
            json!([
                {"role": "user", "content": [{"type": "text", "text": "Weather in Paris and Rome?"}]},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "Checking both."},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
                    {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {}},
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "18C"}]},
                    {"type": "tool_result", "tool_use_id": "toolu_2", "content": [{"type": "text", "text": "21C"}]},
                    {"type": "text", "text": "Which is warmer?"},
                ]},
            ])
        );
    }

    #[test]
    fn consecutive_turns_of_one_role_are_merged_and_empty_text_is_dropped() {
        let body = body(json!({"messages": [
            {"role": "user", "content": "one"},
            {"role": "user", "content": "two"},
            {"role": "assistant", "content": ""},
            {"role": "assistant", "content": "three"},
        ]}));
        assert_eq!(
            body["messages"],
            json!([
                {"role": "user", "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]},
                {"role": "assistant", "content": [{"type": "text", "text": "three"}]},
            ])
        );
    }

    #[test]
    fn unreadable_tool_calls_and_results_are_refused() {
        let refused = rejection(json!({"messages": [
            {"role": "assistant", "tool_calls": [{"id": "t", "type": "function", "function": {"name": "f", "arguments": "{oops"}}]},
        ]}));
        assert!(refused.contains("not a JSON object"), "{refused}");
        let refused = rejection(json!({"messages": [{"role": "tool", "content": "18C"}]}));
        assert!(refused.contains("tool_call_id"), "{refused}");
    }

    #[test]
    fn cache_control_on_parts_messages_and_tools_is_passed_through() {
        let ephemeral = json!({"type": "ephemeral"});
        let body = body(json!({
            "messages": [
                {"role": "system", "content": "A long manual.", "cache_control": ephemeral},
                {"role": "user", "content": [
                    {"type": "text", "text": "A long document.", "cache_control": ephemeral},
                    {"type": "text", "text": "Summarise it."},
                ]},
            ],
            "tools": [{"type": "function", "function": {"name": "f"}, "cache_control": ephemeral}],
        }));
        assert_eq!(body["system"][0]["cache_control"], ephemeral);
        assert_eq!(
            body["messages"][0]["content"][0]["cache_control"],
            ephemeral
        );
        assert!(
            body["messages"][0]["content"][1]
                .get("cache_control")
                .is_none()
        );
        assert_eq!(body["tools"][0]["cache_control"], ephemeral);
    }

    #[test]
    fn sampling_stop_user_and_stream_are_translated() {
        let body = body(json!({
            "messages": [{"role": "user", "content": "hi"}],
            "temperature": 0.2, "top_p": 0.9, "top_k": 40, "stop": "END", "user": "user-42",
            "stream": true, "seed": 7, "stream_options": {"include_usage": true},
        }));
        assert_eq!(body["temperature"], 0.2);
        assert_eq!(body["top_p"], 0.9);
        assert_eq!(body["top_k"], 40);
        assert_eq!(body["stop_sequences"], json!(["END"]));
        assert_eq!(body["metadata"], json!({"user_id": "user-42"}));
        assert_eq!(body["stream"], true);
        assert!(body.get("seed").is_none() && body.get("stream_options").is_none());

        let listed = super::tests::body(
            json!({"messages": [{"role": "user", "content": "hi"}], "stop": ["a", "b"]}),
        );
        assert_eq!(listed["stop_sequences"], json!(["a", "b"]));
        assert!(
            rejection(json!({"messages": [{"role": "user", "content": "hi"}], "stop": 3}))
                .contains("stop")
        );
    }

    #[test]
    fn max_tokens_is_the_callers_else_the_endpoints_cap_else_a_default() {
        let ask = |extra: Value| {
            let mut request = json!({"messages": [{"role": "user", "content": "hi"}]});
            request
                .as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            request
        };
        assert_eq!(
            body_for_target(ask(json!({"max_tokens": 100})), Some(64_000))["max_tokens"],
            100
        );
        assert_eq!(
            body_for_target(ask(json!({"max_completion_tokens": 200})), Some(64_000))["max_tokens"],
            200
        );
        assert_eq!(
            body_for_target(ask(json!({})), Some(64_000))["max_tokens"],
            64_000
        );
        assert_eq!(
            body_for_target(ask(json!({})), None)["max_tokens"],
            DEFAULT_MAX_TOKENS
        );
    }

    #[test]
    fn a_json_schema_response_format_becomes_output_config_format() {
        let schema = json!({"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"], "additionalProperties": false});
        let body = body(json!({
            "messages": [{"role": "user", "content": "Extract the name."}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "person", "strict": true, "schema": schema}},
        }));
        assert_eq!(
            body["output_config"],
            json!({"format": {"type": "json_schema", "schema": schema}})
        );
        let text = super::tests::body(json!({
            "messages": [{"role": "user", "content": "hi"}],
            "response_format": {"type": "text"},
        }));
        assert!(text.get("output_config").is_none());
        let refused = rejection(json!({
            "messages": [{"role": "user", "content": "hi"}],
            "response_format": {"type": "json_object"},
        }));
        assert!(refused.contains("json_schema"), "{refused}");
    }

    #[test]
    fn reasoning_becomes_a_thinking_budget() {
        let thinking = |reasoning: Value, max_tokens: u32| thinking(Some(&reasoning), max_tokens);
        let enabled = |budget_tokens| Some(Thinking::Enabled { budget_tokens });
        assert_eq!(thinking(json!({"max_tokens": 2000}), 8000), enabled(2000));
        assert_eq!(thinking(json!({"max_tokens": 10}), 8000), enabled(1024));
        assert_eq!(thinking(json!({"effort": "high"}), 10_000), enabled(8000));
        assert_eq!(thinking(json!({"effort": "medium"}), 10_000), enabled(5000));
        assert_eq!(thinking(json!({"effort": "low"}), 10_000), enabled(2000));
        assert_eq!(thinking(json!({"effort": "low"}), 2000), enabled(1024));
        assert_eq!(thinking(json!({"effort": "high"}), 64_000), enabled(32_000));
        assert_eq!(thinking(json!({"enabled": true}), 10_000), enabled(5000));
        assert_eq!(thinking(json!({"effort": "none"}), 10_000), None);
        assert_eq!(
            thinking(json!({"enabled": false, "effort": "high"}), 10_000),
            None
        );
        assert_eq!(thinking(json!({"exclude": true}), 10_000), None);

        let body = body(json!({
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 16000,
            "reasoning": {"effort": "medium"},
        }));
        assert_eq!(
            body["thinking"],
            json!({"type": "enabled", "budget_tokens": 8000})
        );
    }

    #[test]
    fn sampling_parameters_thinking_refuses_are_dropped_with_it() {
        let with_thinking = body(json!({
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 16000,
            "reasoning": {"effort": "low"},
            "temperature": 0.2, "top_k": 40, "top_p": 0.97,
        }));
        assert!(with_thinking.get("temperature").is_none());
        assert!(with_thinking.get("top_k").is_none());
        assert_eq!(with_thinking["top_p"], 0.97);
        let low_top_p = body(json!({
            "messages": [{"role": "user", "content": "hi"}],
            "reasoning": {"max_tokens": 2000},
            "top_p": 0.5,
        }));
        assert!(low_top_p.get("top_p").is_none());
    }

    #[test]
    fn a_text_response_maps_content_finish_reason_and_usage() {
        let response = decode_response(fixture("response_text.json").as_bytes()).unwrap();
        let json = serde_json::to_value(&response).unwrap();
        assert_eq!(json["id"], "msg_013Zva2CMHLNnXjNJJKqJ2EF");
        assert_eq!(json["object"], "chat.completion");
        assert_eq!(
            json["choices"][0],
            json!({"index": 0, "message": {"role": "assistant", "content": "Hi! My name is Claude."}, "finish_reason": "stop"})
        );
        let usage = response.usage.unwrap();
        assert_eq!(
            (
                usage.prompt_tokens,
                usage.completion_tokens,
                usage.total_tokens
            ),
            (2095, 503, 2598)
        );
        assert_eq!((usage.cached_tokens(), usage.cache_write_tokens()), (0, 0));
    }

    #[test]
    fn a_tool_use_response_becomes_tool_calls_with_the_anthropic_id() {
        let response = decode_response(fixture("response_tool_use.json").as_bytes()).unwrap();
        let choice = &response.choices.parsed()[0];
        assert_eq!(choice.finish_reason.as_deref(), Some("tool_calls"));
        assert_eq!(
            choice.message.content.as_deref(),
            Some("I'll check the current weather in San Francisco for you.")
        );
        let calls = choice.message.tool_calls.as_ref().unwrap();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0]["id"], "toolu_01A09q90qw90lq917835lq9");
        assert_eq!(calls[0]["type"], "function");
        assert_eq!(calls[0]["function"]["name"], "get_weather");
        let arguments: Value =
            serde_json::from_str(calls[0]["function"]["arguments"].as_str().unwrap()).unwrap();
        assert_eq!(
            arguments,
            json!({"location": "San Francisco, CA", "unit": "celsius"})
        );
    }

    #[test]
    fn thinking_blocks_become_reasoning() {
        let response = decode_response(fixture("response_thinking.json").as_bytes()).unwrap();
        let message = &response.choices.parsed()[0].message;
        assert_eq!(
            message.reasoning.as_deref(),
            Some("Let me analyze this step by step...")
        );
        assert_eq!(message.content.as_deref(), Some("Based on my analysis..."));
    }

    #[test]
    fn cache_reads_and_writes_count_as_prompt_tokens_and_are_detailed() {
        let response = decode_response(fixture("response_cached.json").as_bytes()).unwrap();
        let usage = response.usage.unwrap();
        assert_eq!(usage.prompt_tokens, 50 + 100_000 + 2000);
        assert_eq!(usage.completion_tokens, 400);
        assert_eq!(usage.cached_tokens(), 100_000);
        assert_eq!(usage.cache_write_tokens(), 2000);
    }

    #[test]
    fn every_stop_reason_has_an_openai_finish_reason() {
        let pairs = [
            ("end_turn", "stop"),
            ("stop_sequence", "stop"),
            ("max_tokens", "length"),
            ("tool_use", "tool_calls"),
            ("refusal", "content_filter"),
        ];
        for (anthropic, openai) in pairs {
            assert_eq!(finish_reason(anthropic), openai);
        }
    }

    #[test]
    fn a_text_stream_carries_the_role_first_then_text_then_the_finish_with_usage() {
        let (chunks, ended, finished) = decode_stream("stream_text.sse");
        ended.unwrap();
        assert!(finished);
        let chunks = chunk_json(&chunks);
        assert_eq!(chunks.len(), 3, "{chunks:#?}");
        assert_eq!(chunks[0]["id"], "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY");
        assert_eq!(
            chunks[0]["choices"][0]["delta"],
            json!({"role": "assistant", "content": "Hello"})
        );
        assert_eq!(chunks[1]["choices"][0]["delta"], json!({"content": "!"}));
        assert_eq!(chunks[2]["choices"][0]["finish_reason"], "stop");
        assert_eq!(chunks[2]["usage"]["prompt_tokens"], 25);
        assert_eq!(chunks[2]["usage"]["completion_tokens"], 15);
    }

    #[test]
    fn a_streamed_tool_call_has_its_ordinal_index_id_name_then_argument_fragments() {
        let (chunks, ended, finished) = decode_stream("stream_tool_use.sse");
        ended.unwrap();
        assert!(finished);
        let chunks = chunk_json(&chunks);
        let calls: Vec<&Value> = chunks
            .iter()
            .filter_map(|chunk| chunk["choices"][0]["delta"]["tool_calls"].get(0))
            .collect();
        assert_eq!(
            calls[0],
            &json!({"index": 0, "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "type": "function", "function": {"name": "get_weather", "arguments": ""}})
        );
        for call in &calls[1..] {
            assert_eq!(
                call["index"], 0,
                "the first tool call, though Anthropic's block 1"
            );
            assert!(call.get("id").is_none() && call["function"].get("name").is_none());
        }
        let arguments: String = calls
            .iter()
            .filter_map(|call| call["function"]["arguments"].as_str())
            .collect();
        assert_eq!(
            serde_json::from_str::<Value>(&arguments).unwrap(),
            json!({"location": "San Francisco, CA", "unit": "fahrenheit"})
        );
        let text: String = chunks
            .iter()
            .filter_map(|chunk| chunk["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(text, "Okay, let's check the weather for San Francisco, CA:");
        let last = chunks.last().unwrap();
        assert_eq!(last["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(last["usage"]["completion_tokens"], 89);
        assert_eq!(last["usage"]["prompt_tokens"], 472);
    }

    #[test]
    fn streamed_thinking_becomes_reasoning_deltas_and_signatures_are_dropped() {
        let (chunks, ended, _) = decode_stream("stream_thinking.sse");
        ended.unwrap();
        let reasoning: String = chunks
            .iter()
            .filter_map(|chunk| chunk.choices[0].delta.reasoning.as_deref())
            .collect();
        assert!(reasoning.starts_with("I need to find the GCD"));
        assert!(reasoning.ends_with("So GCD(1071, 462) = 21"));
        assert!(!serde_json::to_string(&chunks).unwrap().contains("EqQBCg"));
        assert_eq!(
            chunks[0].choices[0].delta.role.as_deref(),
            Some("assistant")
        );
        let content: String = chunks
            .iter()
            .filter_map(|chunk| chunk.choices[0].delta.content.as_deref())
            .collect();
        assert_eq!(
            content,
            "The greatest common divisor of 1071 and 462 is **21**."
        );
    }

    #[test]
    fn a_second_tool_call_gets_the_next_index() {
        let mut decoder = EventDecoder::default();
        let mut decode = |data: Value| {
            decoder
                .decode(&SseEvent {
                    event: None,
                    data: data.to_string(),
                })
                .unwrap()
        };
        for (block, id) in [(0, "toolu_a"), (2, "toolu_b")] {
            decode(
                json!({"type": "content_block_start", "index": block, "content_block": {"type": "tool_use", "id": id, "name": "f", "input": {}}}),
            );
        }
        let chunk = decode(json!({"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "{}"}}))
            .unwrap();
        assert_eq!(
            chunk.choices[0].delta.tool_calls.as_ref().unwrap()[0]["index"],
            1
        );
    }

    #[test]
    fn an_error_event_mid_stream_is_a_classified_error() {
        let (chunks, ended, finished) = decode_stream("stream_error.sse");
        assert_eq!(chunks.len(), 1);
        assert!(!finished);
        let error = ended.unwrap_err();
        assert_eq!(error.kind, UpstreamErrorKind::Server);
        assert_eq!(error.status, Some(529));
        assert!(error.is_retryable());
    }

    #[test]
    fn a_message_delta_without_usage_leaves_usage_to_the_gateway() {
        let mut decoder = EventDecoder::default();
        let chunk = decoder
            .decode(&SseEvent {
                event: Some("message_delta".into()),
                data: r#"{"type":"message_delta","delta":{"stop_reason":"max_tokens"}}"#.into(),
            })
            .unwrap()
            .unwrap();
        assert!(chunk.usage.is_none());
        assert_eq!(chunk.choices[0].finish_reason.as_deref(), Some("length"));
    }

    #[test]
    fn error_bodies_map_to_the_shared_kinds() {
        let cases = [
            (400, "invalid_request_error", UpstreamErrorKind::BadRequest),
            (401, "authentication_error", UpstreamErrorKind::Unauthorized),
            (403, "permission_error", UpstreamErrorKind::Unauthorized),
            (404, "not_found_error", UpstreamErrorKind::NotFound),
            (413, "request_too_large", UpstreamErrorKind::PayloadTooLarge),
            (429, "rate_limit_error", UpstreamErrorKind::RateLimited),
            (500, "api_error", UpstreamErrorKind::Server),
            (529, "overloaded_error", UpstreamErrorKind::Server),
        ];
        for (status, kind, expected) in cases {
            let body = json!({"type": "error", "error": {"type": kind, "message": "detail"}});
            let error = decode_error(
                StatusCode::from_u16(status).unwrap(),
                body.to_string().as_bytes(),
            );
            assert_eq!(
                (error.kind, error.status),
                (expected, Some(status)),
                "{kind}"
            );
        }
    }

    #[test]
    fn overload_is_retryable_and_keeps_no_upstream_detail() {
        let error = decode_error(
            StatusCode::from_u16(529).unwrap(),
            fixture("error_overloaded.json").as_bytes(),
        );
        assert!(error.is_retryable());
        assert!(!error.message.contains("Overloaded"));
        let unreadable = decode_error(StatusCode::SERVICE_UNAVAILABLE, b"<html>busy</html>");
        assert_eq!(unreadable.kind, UpstreamErrorKind::Server);
    }

    #[test]
    fn bad_requests_keep_anthropics_explanation_and_long_prompts_are_recognised() {
        let body = br#"{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: Field required"}}"#;
        let error = decode_error(StatusCode::BAD_REQUEST, body);
        assert!(error.message.contains("max_tokens: Field required"));
        let body = br#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 208310 tokens > 200000 maximum"}}"#;
        assert_eq!(
            decode_error(StatusCode::BAD_REQUEST, body).kind,
            UpstreamErrorKind::ContextLength
        );
    }
}
