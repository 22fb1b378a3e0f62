//! Google's Gemini API (`generateContent`, `streamGenerateContent?alt=sse`): chat messages become
//! `contents` and `systemInstruction`, tools become function declarations, and candidates, usage,
//! stream events and errors come back in the canonical shape. Does no I/O.
//!
//! Wire format: <https://ai.google.dev/api/generate-content>, function calling:
//! <https://ai.google.dev/gemini-api/docs/function-calling>, thinking:
//! <https://ai.google.dev/gemini-api/docs/thinking>, errors:
//! <https://ai.google.dev/gemini-api/docs/troubleshooting>.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use rand::Rng;
use rand::distr::Alphanumeric;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::{
    Provider, ProviderError, SseEvent, StreamDecoder, Target, UpstreamError, UpstreamErrorKind,
    UpstreamRequest,
};
use crate::openai::{
    ChatChunk, ChatRequest, ChatResponse, Choice, ChunkChoice, CompletionTokensDetails, Content,
    Delta, Message, PromptTokensDetails, ResponseMessage, Role, Usage,
};

/// Where the `gemini` kind sends requests when the config names no `base_url`.
pub(super) const DEFAULT_BASE_URL: &str = "https://generativelanguage.googleapis.com/v1beta";

const API_KEY_HEADER: HeaderName = HeaderName::from_static("x-goog-api-key");

pub(super) struct Gemini {
    /// `{base_url}/models/`, to which each request appends its model and method.
    models_url: String,
    /// Sent as `x-goog-api-key` rather than `?key=`, so the key never appears in a URL (and so
    /// never in a log line or an error that names one).
    api_key: Option<HeaderValue>,
}

impl Gemini {
    pub(super) fn new(base_url: &str, api_key: Option<&str>) -> Result<Self, ProviderError> {
        let api_key = api_key.map(super::secret_header).transpose()?;
        let gemini = Self {
            models_url: format!("{}/models/", base_url.trim_end_matches('/')),
            api_key,
        };
        gemini.uri("model", false)?;
        Ok(gemini)
    }

    fn uri(&self, model: &str, stream: bool) -> Result<http::Uri, ProviderError> {
        let method = if stream {
            ":streamGenerateContent?alt=sse"
        } else {
            ":generateContent"
        };
        super::endpoint_uri(format!("{}{model}{method}", self.models_url))
    }
}

impl Provider for Gemini {
    fn build_request(
        &self,
        request: &ChatRequest,
        target: Target<'_>,
    ) -> Result<UpstreamRequest, ProviderError> {
        let credential = self.api_key.as_ref().map(|key| (API_KEY_HEADER, key));
        Ok(UpstreamRequest::Http {
            uri: self.uri(target.upstream_model, request.stream)?,
            headers: super::json_headers(credential),
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
        let detail = serde_json::from_slice::<ErrorBody>(body)
            .ok()
            .map(|body| body.error);
        upstream_error(status, detail.as_ref())
    }
}

// ---------------------------------------------------------------------------------------------
// Request

/// The `generateContent` body, borrowing from the canonical request wherever it can.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RequestBody<'a> {
    contents: Vec<Turn<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    system_instruction: Option<SystemInstruction<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<Tool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_config: Option<ToolConfig<'a>>,
    generation_config: GenerationConfig<'a>,
}

#[derive(Serialize)]
struct Turn<'a> {
    role: &'static str,
    parts: Vec<Part<'a>>,
}

#[derive(Serialize)]
struct SystemInstruction<'a> {
    parts: Vec<Part<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Part<'a> {
    #[serde(flatten)]
    data: PartData<'a>,
    /// Gemini's opaque reasoning state attached to a function call; models that think require it
    /// back on the next turn.
    #[serde(skip_serializing_if = "Option::is_none")]
    thought_signature: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
enum PartData<'a> {
    Text(&'a str),
    #[serde(rename_all = "camelCase")]
    InlineData {
        mime_type: &'a str,
        data: &'a str,
    },
    #[serde(rename_all = "camelCase")]
    FileData {
        #[serde(skip_serializing_if = "Option::is_none")]
        mime_type: Option<&'static str>,
        file_uri: &'a str,
    },
    FunctionCall {
        name: &'a str,
        args: Value,
    },
    FunctionResponse {
        name: &'a str,
        response: Value,
    },
}

impl<'a> From<PartData<'a>> for Part<'a> {
    fn from(data: PartData<'a>) -> Self {
        Part {
            data,
            thought_signature: None,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Tool<'a> {
    function_declarations: Vec<FunctionDeclaration<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct FunctionDeclaration<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    /// `parametersJsonSchema` takes JSON Schema as OpenAI tools carry it; `parameters` would take
    /// only Google's OpenAPI subset and reject keys such as `additionalProperties`.
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters_json_schema: Option<&'a Value>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ToolConfig<'a> {
    function_calling_config: FunctionCallingConfig<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct FunctionCallingConfig<'a> {
    mode: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    allowed_function_names: Option<[&'a str; 1]>,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
struct GenerationConfig<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_k: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_output_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop_sequences: Option<StopSequences<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    presence_penalty: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    frequency_penalty: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_mime_type: Option<&'static str>,
    /// JSON Schema as OpenAI's `json_schema.schema` carries it (`responseSchema` would take only
    /// Google's OpenAPI subset).
    #[serde(skip_serializing_if = "Option::is_none")]
    response_json_schema: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    thinking_config: Option<ThinkingConfig>,
}

/// OpenAI's `stop` is a string or a list; Gemini takes a list only.
#[derive(Serialize)]
#[serde(untagged)]
enum StopSequences<'a> {
    One([&'a str; 1]),
    Many(&'a Value),
}

impl<'a> StopSequences<'a> {
    fn from_openai(stop: &'a Value) -> Option<Self> {
        match stop {
            Value::String(stop) => Some(StopSequences::One([stop])),
            Value::Array(_) => Some(StopSequences::Many(stop)),
            _ => None,
        }
    }
}

#[derive(Serialize, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
struct ThinkingConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    thinking_budget: Option<u64>,
    include_thoughts: bool,
}

/// The caller's request cannot be expressed in this API: a 400, not a reason to fail over.
fn invalid_request(what: impl Into<String>) -> ProviderError {
    ProviderError::InvalidRequest(what.into())
}

fn encode_body(request: &ChatRequest, target: Target<'_>) -> Result<Bytes, ProviderError> {
    let (contents, system_instruction) = encode_messages(&request.messages)?;
    // Gemini rejects a tool without declarations, so an empty `tools` list sends none.
    let tools = request
        .tools
        .as_deref()
        .filter(|tools| !tools.is_empty())
        .map(encode_tools)
        .transpose()?;
    let body = RequestBody {
        contents,
        system_instruction,
        tools: tools.into_iter().collect(),
        tool_config: request
            .tool_choice
            .as_ref()
            .map(encode_tool_choice)
            .transpose()?,
        generation_config: GenerationConfig {
            temperature: request.temperature,
            top_p: request.top_p,
            top_k: request.extra.get("top_k"),
            max_output_tokens: request.max_output_tokens(),
            stop_sequences: request
                .extra
                .get("stop")
                .and_then(StopSequences::from_openai),
            presence_penalty: request.extra.get("presence_penalty"),
            frequency_penalty: request.extra.get("frequency_penalty"),
            seed: request.extra.get("seed"),
            // Models that cannot think reject a thinking config.
            thinking_config: request
                .reasoning
                .as_ref()
                .filter(|_| target.capabilities.reasoning)
                .and_then(thinking_config),
            ..encode_response_format(request.response_format.as_ref())?
        },
    };
    Ok(Bytes::from(serde_json::to_vec(&body)?))
}

/// The conversation as Gemini turns (consecutive turns of one role merged, as Gemini expects
/// roles to alternate) and the system and developer messages as the system instruction.
fn encode_messages(
    messages: &[Message],
) -> Result<(Vec<Turn<'_>>, Option<SystemInstruction<'_>>), ProviderError> {
    let mut system = Vec::new();
    let mut turns: Vec<Turn<'_>> = Vec::with_capacity(messages.len());
    // Tool results name their call by id; Gemini wants the function's name instead.
    let mut call_names: HashMap<&str, &str> = HashMap::new();
    for message in messages {
        let (role, parts) = match message.role {
            Role::System | Role::Developer => {
                system.extend(encode_content(message.content.as_ref())?);
                continue;
            }
            Role::User => ("user", encode_content(message.content.as_ref())?),
            Role::Assistant => ("model", encode_assistant(message, &mut call_names)?),
            Role::Tool | Role::Function => {
                ("user", vec![encode_tool_result(message, &call_names)?])
            }
        };
        if parts.is_empty() {
            continue;
        }
        match turns.last_mut() {
            Some(last) if last.role == role => last.parts.extend(parts),
            _ => turns.push(Turn { role, parts }),
        }
    }
    let system = (!system.is_empty()).then_some(SystemInstruction { parts: system });
    Ok((turns, system))
}

fn encode_content(content: Option<&Content>) -> Result<Vec<Part<'_>>, ProviderError> {
    match content {
        None => Ok(Vec::new()),
        Some(Content::Text(text)) if text.is_empty() => Ok(Vec::new()),
        Some(Content::Text(text)) => Ok(vec![PartData::Text(text).into()]),
        Some(Content::Parts(parts)) => parts.iter().map(encode_part).collect(),
    }
}

fn encode_part(part: &Map<String, Value>) -> Result<Part<'_>, ProviderError> {
    let kind = part.get("type").and_then(Value::as_str);
    let data = match kind {
        Some("text") => PartData::Text(part.get("text").and_then(Value::as_str).unwrap_or("")),
        Some("image_url") => {
            // `image_url` is `{"url": ...}`, or the URL itself in some clients.
            let image = part.get("image_url");
            let url = image
                .and_then(|image| image.get("url"))
                .or(image)
                .and_then(Value::as_str)
                .ok_or_else(|| invalid_request("an image_url part without a url"))?;
            encode_image(url)?
        }
        other => {
            return Err(invalid_request(format!(
                "content parts of type {:?}",
                other.unwrap_or("(none)")
            )));
        }
    };
    Ok(data.into())
}

/// A `data:` URL becomes inline bytes; an http(s) URL is passed as file data, which Gemini
/// fetches itself (<https://ai.google.dev/gemini-api/docs/file-input-methods>).
fn encode_image(url: &str) -> Result<PartData<'_>, ProviderError> {
    if let Some(rest) = url.strip_prefix("data:") {
        let (mime_type, data) = rest
            .split_once(";base64,")
            .ok_or_else(|| invalid_request("image data URLs that are not base64"))?;
        return Ok(PartData::InlineData { mime_type, data });
    }
    if url.starts_with("https://") || url.starts_with("http://") {
        return Ok(PartData::FileData {
            mime_type: image_mime_type(url),
            file_uri: url,
        });
    }
    Err(invalid_request(
        "image URLs that are neither data: nor http(s)",
    ))
}

/// The MIME type of an image URL's file extension, when it has a well-known one.
fn image_mime_type(url: &str) -> Option<&'static str> {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let extension = path.rsplit_once('.')?.1.to_ascii_lowercase();
    Some(match extension.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        "gif" => "image/gif",
        "heic" => "image/heic",
        "heif" => "image/heif",
        _ => return None,
    })
}

fn encode_assistant<'a>(
    message: &'a Message,
    call_names: &mut HashMap<&'a str, &'a str>,
) -> Result<Vec<Part<'a>>, ProviderError> {
    let mut parts = encode_content(message.content.as_ref())?;
    for call in message.tool_calls.iter().flatten() {
        let function = call
            .get("function")
            .ok_or_else(|| invalid_request("tool calls that are not function calls"))?;
        let name = function
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid_request("a tool call without a function name"))?;
        if let Some(id) = call.get("id").and_then(Value::as_str) {
            call_names.insert(id, name);
        }
        let arguments = function
            .get("arguments")
            .and_then(Value::as_str)
            .unwrap_or("{}");
        let args = match serde_json::from_str::<Value>(arguments) {
            Ok(args @ Value::Object(_)) => args,
            _ if arguments.trim().is_empty() => json!({}),
            _ => {
                return Err(invalid_request(
                    "tool call arguments that are not a JSON object",
                ));
            }
        };
        parts.push(Part {
            data: PartData::FunctionCall { name, args },
            thought_signature: call
                .pointer("/extra_content/google/thought_signature")
                .and_then(Value::as_str),
        });
    }
    Ok(parts)
}

fn encode_tool_result<'a>(
    message: &'a Message,
    call_names: &HashMap<&'a str, &'a str>,
) -> Result<Part<'a>, ProviderError> {
    let name = message
        .tool_call_id
        .as_deref()
        .and_then(|id| call_names.get(id).copied())
        .or(message.name.as_deref())
        .ok_or_else(|| {
            invalid_request("a tool message whose tool_call_id matches no earlier call")
        })?;
    let text = message
        .content
        .as_ref()
        .map(Content::text)
        .unwrap_or_default();
    // Gemini wants an object: a JSON object result is passed as is, anything else is wrapped
    // under `output`, the key Google's documentation uses for a function's result.
    let response = match serde_json::from_str::<Value>(&text) {
        Ok(object @ Value::Object(_)) => object,
        Ok(value) => json!({ "output": value }),
        Err(_) => json!({ "output": text }),
    };
    Ok(PartData::FunctionResponse { name, response }.into())
}

fn encode_tools(tools: &[Value]) -> Result<Tool<'_>, ProviderError> {
    let function_declarations = tools
        .iter()
        .map(|tool| {
            let function = tool
                .get("function")
                .filter(|_| tool.get("type").and_then(Value::as_str) == Some("function"))
                .ok_or_else(|| invalid_request("tools that are not functions"))?;
            Ok(FunctionDeclaration {
                name: function
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid_request("a function tool without a name"))?,
                description: function.get("description").and_then(Value::as_str),
                parameters_json_schema: function.get("parameters"),
            })
        })
        .collect::<Result<_, ProviderError>>()?;
    Ok(Tool {
        function_declarations,
    })
}

fn encode_tool_choice(choice: &Value) -> Result<ToolConfig<'_>, ProviderError> {
    let (mode, allowed_function_names) = match choice {
        Value::String(mode) => match mode.as_str() {
            "auto" => ("AUTO", None),
            "none" => ("NONE", None),
            "required" => ("ANY", None),
            other => return Err(invalid_request(format!("tool_choice {other:?}"))),
        },
        Value::Object(_) => {
            let name = choice
                .pointer("/function/name")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid_request("a tool_choice object without function.name"))?;
            ("ANY", Some([name]))
        }
        _ => {
            return Err(invalid_request(
                "a tool_choice that is neither a string nor an object",
            ));
        }
    };
    Ok(ToolConfig {
        function_calling_config: FunctionCallingConfig {
            mode,
            allowed_function_names,
        },
    })
}

fn encode_response_format(format: Option<&Value>) -> Result<GenerationConfig<'_>, ProviderError> {
    let Some(format) = format else {
        return Ok(GenerationConfig::default());
    };
    let json = |schema| GenerationConfig {
        response_mime_type: Some("application/json"),
        response_json_schema: schema,
        ..GenerationConfig::default()
    };
    match format.get("type").and_then(Value::as_str) {
        Some("text") => Ok(GenerationConfig::default()),
        Some("json_object") => Ok(json(None)),
        Some("json_schema") => Ok(json(format.pointer("/json_schema/schema"))),
        other => Err(invalid_request(format!(
            "response_format type {:?}",
            other.unwrap_or("(none)")
        ))),
    }
}

/// OpenRouter's `reasoning` as Gemini's thinking budget. Efforts use the budgets of Google's own
/// OpenAI compatibility layer (<https://ai.google.dev/gemini-api/docs/openai#thinking>).
fn thinking_config(reasoning: &Value) -> Option<ThinkingConfig> {
    let disabled = reasoning.get("enabled").and_then(Value::as_bool) == Some(false);
    let budget = if disabled {
        Some(0)
    } else if let Some(max_tokens) = reasoning.get("max_tokens").and_then(Value::as_u64) {
        Some(max_tokens)
    } else {
        match reasoning.get("effort").and_then(Value::as_str) {
            Some("none") => Some(0),
            Some("minimal" | "low") => Some(1_024),
            Some("medium") => Some(8_192),
            Some("high") => Some(24_576),
            _ => None,
        }
    };
    let excluded = reasoning.get("exclude").and_then(Value::as_bool) == Some(true);
    Some(ThinkingConfig {
        thinking_budget: budget,
        include_thoughts: !excluded && budget != Some(0),
    })
}

// ---------------------------------------------------------------------------------------------
// Response

/// A `GenerateContentResponse`: the whole answer, or one stream event.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GenerateContentResponse {
    #[serde(default)]
    candidates: Vec<Candidate>,
    #[serde(default)]
    prompt_feedback: Option<PromptFeedback>,
    #[serde(default)]
    usage_metadata: Option<UsageMetadata>,
    #[serde(default)]
    model_version: Option<String>,
    #[serde(default)]
    response_id: Option<String>,
    /// Only in a stream, where Google reports a failure as an event.
    #[serde(default)]
    error: Option<ErrorDetail>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Candidate {
    #[serde(default)]
    content: Option<CandidateContent>,
    #[serde(default)]
    finish_reason: Option<String>,
    #[serde(default)]
    index: u32,
}

#[derive(Deserialize)]
struct CandidateContent {
    #[serde(default)]
    parts: Vec<ResponsePart>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ResponsePart {
    #[serde(default)]
    text: Option<String>,
    /// Marks `text` as a thought summary rather than the answer.
    #[serde(default)]
    thought: bool,
    #[serde(default)]
    function_call: Option<FunctionCall>,
    #[serde(default)]
    thought_signature: Option<String>,
}

#[derive(Deserialize)]
struct FunctionCall {
    name: String,
    #[serde(default)]
    args: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PromptFeedback {
    #[serde(default)]
    block_reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UsageMetadata {
    /// Includes the cached tokens, as OpenAI's `prompt_tokens` does.
    #[serde(default)]
    prompt_token_count: u64,
    #[serde(default)]
    candidates_token_count: u64,
    #[serde(default)]
    cached_content_token_count: u64,
    #[serde(default)]
    thoughts_token_count: u64,
    /// Results of Google-run tools fed back to the model: billed as input.
    #[serde(default)]
    tool_use_prompt_token_count: u64,
}

impl UsageMetadata {
    /// Thoughts are billed at the output price (<https://ai.google.dev/gemini-api/docs/pricing>:
    /// "output price, including thinking tokens"), so they are part of `completion_tokens`.
    fn usage(&self) -> Usage {
        Usage {
            prompt_tokens: self.prompt_token_count + self.tool_use_prompt_token_count,
            completion_tokens: self.candidates_token_count + self.thoughts_token_count,
            total_tokens: self.prompt_token_count
                + self.tool_use_prompt_token_count
                + self.candidates_token_count
                + self.thoughts_token_count,
            prompt_tokens_details: Some(PromptTokensDetails {
                cached_tokens: self.cached_content_token_count,
                ..PromptTokensDetails::default()
            }),
            completion_tokens_details: Some(CompletionTokensDetails {
                reasoning_tokens: self.thoughts_token_count,
                ..CompletionTokensDetails::default()
            }),
            ..Usage::default()
        }
    }
}

/// OpenRouter's normalised finish reasons. A candidate that called a function ends with
/// `tool_calls` whatever Gemini says (it says `STOP`).
fn finish_reason(gemini: &str, called_a_function: bool) -> &'static str {
    match gemini {
        "MAX_TOKENS" => "length",
        "SAFETY"
        | "RECITATION"
        | "BLOCKLIST"
        | "PROHIBITED_CONTENT"
        | "SPII"
        | "IMAGE_SAFETY"
        | "IMAGE_PROHIBITED_CONTENT"
        | "IMAGE_RECITATION" => "content_filter",
        // The model tried to call a function and produced no usable call or answer.
        "MALFORMED_FUNCTION_CALL" | "UNEXPECTED_TOOL_CALL" | "TOO_MANY_TOOL_CALLS" => "error",
        _ if called_a_function => "tool_calls",
        _ => "stop",
    }
}

/// An OpenAI tool call for a Gemini function call; the thought signature rides along where
/// Google's own OpenAI compatibility layer puts it, so it comes back on the next turn.
fn tool_call(call: FunctionCall, signature: Option<String>, index: Option<u32>) -> Value {
    let arguments = call.args.unwrap_or_else(|| json!({})).to_string();
    let mut tool_call = json!({
        "id": new_tool_call_id(),
        "type": "function",
        "function": {"name": call.name, "arguments": arguments},
    });
    if let Some(index) = index {
        tool_call["index"] = json!(index);
    }
    if let Some(signature) = signature {
        tool_call["extra_content"] = json!({"google": {"thought_signature": signature}});
    }
    tool_call
}

/// Gemini function calls carry no id OpenAI clients could use, so each gets a fresh one.
fn new_tool_call_id() -> String {
    let random: String = rand::rng()
        .sample_iter(Alphanumeric)
        .take(24)
        .map(char::from)
        .collect();
    format!("call_{random}")
}

/// The text, thoughts and function calls of one candidate's parts.
#[derive(Default)]
struct CandidateOutput {
    content: Option<String>,
    reasoning: Option<String>,
    tool_calls: Vec<(FunctionCall, Option<String>)>,
}

impl CandidateOutput {
    fn collect(content: Option<CandidateContent>) -> Self {
        let mut output = CandidateOutput::default();
        for part in content.into_iter().flat_map(|content| content.parts) {
            if let Some(call) = part.function_call {
                output.tool_calls.push((call, part.thought_signature));
                continue;
            }
            let Some(text) = part.text.filter(|text| !text.is_empty()) else {
                continue;
            };
            let into = if part.thought {
                &mut output.reasoning
            } else {
                &mut output.content
            };
            into.get_or_insert_with(String::new).push_str(&text);
        }
        output
    }
}

fn decode_response(body: &[u8]) -> Result<ChatResponse, ProviderError> {
    let response: GenerateContentResponse = serde_json::from_slice(body)
        .map_err(|error| ProviderError::InvalidResponse(error.to_string()))?;
    let blocked = response
        .prompt_feedback
        .as_ref()
        .and_then(|feedback| feedback.block_reason.as_ref())
        .is_some();
    let choices = if response.candidates.is_empty() && blocked {
        vec![Choice {
            index: 0,
            message: assistant_message(Some(String::new()), None, None),
            finish_reason: Some("content_filter".to_owned()),
            extra: Map::new(),
        }]
    } else if response.candidates.is_empty() {
        return Err(ProviderError::InvalidResponse(
            "a response with neither candidates nor a block reason".into(),
        ));
    } else {
        response
            .candidates
            .into_iter()
            .map(decode_candidate)
            .collect()
    };
    Ok(ChatResponse {
        id: response.response_id.unwrap_or_default(),
        object: "chat.completion".to_owned(),
        created: 0,
        model: response.model_version.unwrap_or_default(),
        provider: None,
        choices: choices.into(),
        usage: response.usage_metadata.as_ref().map(UsageMetadata::usage),
        extra: Map::new(),
    })
}

fn decode_candidate(candidate: Candidate) -> Choice {
    let output = CandidateOutput::collect(candidate.content);
    let called_a_function = !output.tool_calls.is_empty();
    let tool_calls = called_a_function.then(|| {
        output
            .tool_calls
            .into_iter()
            .map(|(call, signature)| tool_call(call, signature, None))
            .collect()
    });
    // OpenAI's content is null beside tool calls when there is no text.
    let content = output
        .content
        .or_else(|| (!called_a_function).then(String::new));
    Choice {
        index: candidate.index,
        message: assistant_message(content, output.reasoning, tool_calls),
        finish_reason: Some(
            finish_reason(
                candidate.finish_reason.as_deref().unwrap_or("STOP"),
                called_a_function,
            )
            .to_owned(),
        ),
        extra: Map::new(),
    }
}

fn assistant_message(
    content: Option<String>,
    reasoning: Option<String>,
    tool_calls: Option<Vec<Value>>,
) -> ResponseMessage {
    ResponseMessage {
        role: "assistant".to_owned(),
        content,
        reasoning,
        tool_calls,
        extra: Map::new(),
    }
}

// ---------------------------------------------------------------------------------------------
// Stream

/// Each SSE event is a whole `GenerateContentResponse` holding the next piece of the answer.
/// Gemini ends a stream by closing it, so the end is the event that carried a finish reason.
#[derive(Default)]
struct EventDecoder {
    sent_role: bool,
    /// Function calls so far: the next one's OpenAI `index`.
    tool_calls: u32,
    finished: bool,
    /// The finish reason (and usage) of an event that also carried tool calls, sent as a chunk of
    /// its own as OpenAI does.
    pending: Option<ChatChunk>,
}

/// Gemini sends a function call whole, with the finish reason in the same event. OpenAI ends a
/// stream of tool calls with a chunk of its own holding only the finish reason, and the SDKs'
/// stream helpers close a call (`arguments.done`) when that later chunk arrives, so the finish
/// reasons (and the usage) move to a second chunk.
fn split_finish(chunk: &mut ChatChunk) -> Option<ChatChunk> {
    let carries_calls = chunk
        .choices
        .iter()
        .any(|choice| choice.delta.tool_calls.is_some() && choice.finish_reason.is_some());
    if !carries_calls {
        return None;
    }
    let choices = chunk
        .choices
        .iter_mut()
        .filter_map(|choice| {
            let finish_reason = choice.finish_reason.take()?;
            Some(ChunkChoice {
                index: choice.index,
                delta: Delta::default(),
                finish_reason: Some(finish_reason),
                extra: Map::new(),
            })
        })
        .collect();
    Some(ChatChunk {
        choices,
        usage: chunk.usage.take(),
        ..ChatChunk::empty(&chunk.id, chunk.created, &chunk.model, None)
    })
}

impl StreamDecoder for EventDecoder {
    fn decode(&mut self, event: &SseEvent) -> Result<Option<ChatChunk>, UpstreamError> {
        if event.data.is_empty() {
            return Ok(None);
        }
        let response: GenerateContentResponse =
            serde_json::from_str(&event.data).map_err(|error| {
                UpstreamError::new(
                    UpstreamErrorKind::Protocol,
                    format!("unreadable stream event: {error}"),
                )
            })?;
        if let Some(error) = &response.error {
            return Err(upstream_error(stream_error_status(error), Some(error)));
        }
        let blocked = response
            .prompt_feedback
            .as_ref()
            .and_then(|feedback| feedback.block_reason.as_ref())
            .is_some();
        let mut choices: Vec<ChunkChoice> = response
            .candidates
            .into_iter()
            .map(|candidate| self.decode_candidate(candidate))
            .collect();
        if choices.is_empty() && blocked {
            self.finished = true;
            choices.push(ChunkChoice {
                index: 0,
                delta: Delta {
                    content: Some(String::new()),
                    ..Delta::default()
                },
                finish_reason: Some("content_filter".to_owned()),
                extra: Map::new(),
            });
        }
        let usage = response.usage_metadata.as_ref().map(UsageMetadata::usage);
        if choices.is_empty() && usage.is_none() {
            return Ok(None);
        }
        if let Some(first) = choices.first_mut().filter(|_| !self.sent_role) {
            first.delta.role = Some("assistant".to_owned());
            self.sent_role = true;
        }
        let mut chunk = ChatChunk {
            id: response.response_id.unwrap_or_default(),
            object: "chat.completion.chunk".to_owned(),
            created: 0,
            model: response.model_version.unwrap_or_default(),
            provider: None,
            choices,
            usage,
            error: None,
            extra: Map::new(),
        };
        self.pending = split_finish(&mut chunk);
        Ok(Some(chunk))
    }

    fn finished(&self) -> bool {
        self.finished
    }

    fn take_pending(&mut self) -> Option<ChatChunk> {
        self.pending.take()
    }
}

impl EventDecoder {
    fn decode_candidate(&mut self, candidate: Candidate) -> ChunkChoice {
        let output = CandidateOutput::collect(candidate.content);
        let tool_calls = (!output.tool_calls.is_empty()).then(|| {
            output
                .tool_calls
                .into_iter()
                .map(|(call, signature)| {
                    let index = self.tool_calls;
                    self.tool_calls += 1;
                    tool_call(call, signature, Some(index))
                })
                .collect()
        });
        let finish_reason = candidate.finish_reason.map(|reason| {
            self.finished = true;
            finish_reason(&reason, self.tool_calls > 0).to_owned()
        });
        ChunkChoice {
            index: candidate.index,
            delta: Delta {
                role: None,
                content: output.content,
                reasoning: output.reasoning,
                tool_calls,
                extra: Map::new(),
            },
            finish_reason,
            extra: Map::new(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Errors

/// Google's error body: `{"error": {"code", "message", "status", "details"}}`.
#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    #[serde(default)]
    code: Option<u16>,
    #[serde(default)]
    message: Option<String>,
    /// The canonical gRPC status name (`RESOURCE_EXHAUSTED`, ...).
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    details: Vec<Value>,
}

fn upstream_error(status: StatusCode, detail: Option<&ErrorDetail>) -> UpstreamError {
    let message = detail.and_then(|detail| detail.message.as_deref());
    let error = UpstreamError::from_status(status, message);
    let retry_after = detail.and_then(retry_delay);
    let error = error.with_retry_after(retry_after);
    // Google reports an oversized prompt as a plain INVALID_ARGUMENT.
    let too_long = status == StatusCode::BAD_REQUEST
        && message.is_some_and(|message| message.contains("exceeds the maximum number of tokens"));
    if too_long {
        return error.with_kind(UpstreamErrorKind::ContextLength);
    }
    error
}

/// An error event inside a stream has no HTTP status of its own: its `code`, else the HTTP
/// status Google documents for its gRPC status name.
fn stream_error_status(detail: &ErrorDetail) -> StatusCode {
    let from_code = detail.code.and_then(|code| StatusCode::from_u16(code).ok());
    let from_name = || {
        let code = match detail.status.as_deref()? {
            "INVALID_ARGUMENT" | "FAILED_PRECONDITION" => StatusCode::BAD_REQUEST,
            "PERMISSION_DENIED" => StatusCode::FORBIDDEN,
            "NOT_FOUND" => StatusCode::NOT_FOUND,
            "RESOURCE_EXHAUSTED" => StatusCode::TOO_MANY_REQUESTS,
            "INTERNAL" => StatusCode::INTERNAL_SERVER_ERROR,
            "UNAVAILABLE" => StatusCode::SERVICE_UNAVAILABLE,
            "DEADLINE_EXCEEDED" => StatusCode::GATEWAY_TIMEOUT,
            _ => return None,
        };
        Some(code)
    };
    from_code
        .or_else(from_name)
        .unwrap_or(StatusCode::BAD_GATEWAY)
}

/// The wait a `google.rpc.RetryInfo` detail asks for (`"retryDelay": "37s"`).
fn retry_delay(detail: &ErrorDetail) -> Option<Duration> {
    detail.details.iter().find_map(|entry| {
        let delay = entry.get("retryDelay")?.as_str()?.strip_suffix('s')?;
        let seconds: f64 = delay.parse().ok()?;
        (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds.ceil()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::Capabilities;
    use crate::providers::sse::SseParser;

    macro_rules! fixture {
        ($name:literal) => {
            include_str!(concat!("../../tests/fixtures/gemini/", $name))
        };
    }

    fn target(capabilities: &Capabilities) -> Target<'_> {
        Target {
            upstream_model: "gemini-2.5-flash",
            max_output: None,
            capabilities,
        }
    }

    fn body_for(request: Value) -> Value {
        let capabilities = Capabilities::from_names(&["reasoning".to_owned()]);
        let request: ChatRequest = serde_json::from_value(request).unwrap();
        serde_json::from_slice(&encode_body(&request, target(&capabilities)).unwrap()).unwrap()
    }

    fn refused(request: Value) -> String {
        let capabilities = Capabilities::default();
        let request: ChatRequest = serde_json::from_value(request).unwrap();
        encode_body(&request, target(&capabilities))
            .unwrap_err()
            .to_string()
    }

    fn events(sse: &str) -> Vec<SseEvent> {
        let mut parser = SseParser::default();
        parser.push(sse.as_bytes());
        std::iter::from_fn(|| parser.next_event()).collect()
    }

    fn decode_stream(sse: &str) -> (EventDecoder, Vec<Result<Option<ChatChunk>, UpstreamError>>) {
        let mut decoder = EventDecoder::default();
        let mut chunks = Vec::new();
        for event in events(sse) {
            chunks.push(decoder.decode(&event));
            chunks.extend(decoder.take_pending().map(|chunk| Ok(Some(chunk))));
        }
        (decoder, chunks)
    }

    #[test]
    fn requests_go_to_the_model_method_with_the_key_in_a_header_never_the_url() {
        let gemini = Gemini::new("https://example.test/v1beta/", Some("AIza-secret")).unwrap();
        let capabilities = Capabilities::default();
        for (stream, path) in [
            (false, "/v1beta/models/gemini-2.5-flash:generateContent"),
            (
                true,
                "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
            ),
        ] {
            let request: ChatRequest = serde_json::from_value(json!({
                "model": "google/gemini-2.5-flash", "stream": stream,
                "messages": [{"role": "user", "content": "hi"}],
            }))
            .unwrap();
            let UpstreamRequest::Http { uri, headers, .. } = gemini
                .build_request(&request, target(&capabilities))
                .unwrap()
            else {
                panic!("an HTTP request");
            };
            assert_eq!(uri.path_and_query().unwrap().as_str(), path);
            assert!(!uri.to_string().contains("AIza"));
            let key = headers
                .iter()
                .find(|(name, _)| name == "x-goog-api-key")
                .unwrap();
            assert_eq!(key.1, "AIza-secret");
            assert!(key.1.is_sensitive());
        }
    }

    #[test]
    fn system_and_developer_messages_become_the_system_instruction_and_turns_alternate() {
        let body = body_for(json!({"messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Use metric units."}]},
            {"role": "user", "content": "Hello"},
            {"role": "user", "content": "Are you there?"},
            {"role": "assistant", "content": "Yes."},
            {"role": "user", "content": "Good."},
        ]}));
        assert_eq!(
            body["systemInstruction"],
            json!({"parts": [{"text": "Be brief."}, {"text": "Use metric units."}]})
        );
        assert_eq!(
            body["contents"],
            json!([
                {"role": "user", "parts": [{"text": "Hello"}, {"text": "Are you there?"}]},
                {"role": "model", "parts": [{"text": "Yes."}]},
                {"role": "user", "parts": [{"text": "Good."}]},
            ])
        );
    }

    #[test]
    fn images_become_inline_data_or_file_data() {
        let body = body_for(json!({"messages": [{"role": "user", "content": [
            {"type": "text", "text": "Compare"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
            {"type": "image_url", "image_url": {"url": "https://example.test/cat.JPG?size=large"}},
            {"type": "image_url", "image_url": {"url": "https://example.test/picture"}},
        ]}]}));
        assert_eq!(
            body["contents"][0]["parts"],
            json!([
                {"text": "Compare"},
                {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
                {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://example.test/cat.JPG?size=large"}},
                {"fileData": {"fileUri": "https://example.test/picture"}},
            ])
        );
        let error = refused(json!({"messages": [{"role": "user", "content": [
            {"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}]}]}));
        assert!(error.contains("input_audio"), "{error}");
    }

    #[test]
    fn tool_calls_and_results_become_function_calls_and_named_function_responses() {
        let body = body_for(json!({"messages": [
            {"role": "user", "content": "Weather in Paris and London?"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"location\":\"Paris\"}"},
                 "extra_content": {"google": {"thought_signature": "sig-1"}}},
                {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": ""}},
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "{\"temperature\":21}"},
            {"role": "tool", "tool_call_id": "call_2", "content": "noon"},
        ]}));
        assert_eq!(
            body["contents"][1],
            json!({"role": "model", "parts": [
                {"functionCall": {"name": "get_weather", "args": {"location": "Paris"}}, "thoughtSignature": "sig-1"},
                {"functionCall": {"name": "get_time", "args": {}}},
            ]})
        );
        assert_eq!(
            body["contents"][2],
            json!({"role": "user", "parts": [
                {"functionResponse": {"name": "get_weather", "response": {"temperature": 21}}},
                {"functionResponse": {"name": "get_time", "response": {"output": "noon"}}},
            ]})
        );
        let error = refused(json!({"messages": [
            {"role": "tool", "tool_call_id": "call_unknown", "content": "x"}]}));
        assert!(error.contains("tool_call_id"), "{error}");
    }

    #[test]
    fn tools_become_function_declarations_with_their_json_schema() {
        let parameters = json!({"type": "object", "properties": {"location": {"type": "string"}},
            "required": ["location"], "additionalProperties": false});
        let body = body_for(json!({
            "messages": [{"role": "user", "content": "hi"}],
            "tools": [{"type": "function", "function": {"name": "get_weather",
                "description": "Current weather", "parameters": parameters, "strict": true}}],
        }));
        assert_eq!(
            body["tools"],
            json!([{"functionDeclarations": [{"name": "get_weather",
                "description": "Current weather", "parametersJsonSchema": parameters}]}])
        );
        let body = body_for(json!({"messages": [], "tools": []}));
        assert!(body.get("tools").is_none());
        let error = refused(json!({"messages": [], "tools": [{"type": "web_search"}]}));
        assert!(error.contains("not functions"), "{error}");
    }

    #[test]
    fn tool_choice_becomes_the_function_calling_mode() {
        let config = |choice: Value| {
            body_for(json!({"messages": [], "tool_choice": choice}))["toolConfig"]
                ["functionCallingConfig"]
                .clone()
        };
        assert_eq!(config(json!("auto")), json!({"mode": "AUTO"}));
        assert_eq!(config(json!("none")), json!({"mode": "NONE"}));
        assert_eq!(config(json!("required")), json!({"mode": "ANY"}));
        assert_eq!(
            config(json!({"type": "function", "function": {"name": "get_weather"}})),
            json!({"mode": "ANY", "allowedFunctionNames": ["get_weather"]})
        );
        assert!(refused(json!({"messages": [], "tool_choice": "sometimes"})).contains("sometimes"));
    }

    #[test]
    fn sampling_parameters_and_stop_sequences_become_the_generation_config() {
        let body = body_for(json!({
            "messages": [{"role": "user", "content": "hi"}],
            "temperature": 0.2, "top_p": 0.9, "top_k": 40, "max_tokens": 100, "seed": 7,
            "presence_penalty": 0.5, "frequency_penalty": 0.25, "stop": "END",
        }));
        assert_eq!(
            body["generationConfig"],
            json!({"temperature": 0.2, "topP": 0.9, "topK": 40, "maxOutputTokens": 100,
                "stopSequences": ["END"], "presencePenalty": 0.5, "frequencyPenalty": 0.25, "seed": 7})
        );
        let body =
            body_for(json!({"messages": [], "stop": ["a", "b"], "max_completion_tokens": 5}));
        assert_eq!(body["generationConfig"]["stopSequences"], json!(["a", "b"]));
        assert_eq!(body["generationConfig"]["maxOutputTokens"], 5);
    }

    #[test]
    fn response_formats_become_a_json_mime_type_and_schema() {
        let schema = json!({"type": "object", "properties": {"answer": {"type": "integer"}}});
        let body = body_for(
            json!({"messages": [], "response_format": {"type": "json_schema",
            "json_schema": {"name": "answer", "strict": true, "schema": schema}}}),
        );
        assert_eq!(
            body["generationConfig"],
            json!({"responseMimeType": "application/json", "responseJsonSchema": schema})
        );
        let body = body_for(json!({"messages": [], "response_format": {"type": "json_object"}}));
        assert_eq!(
            body["generationConfig"],
            json!({"responseMimeType": "application/json"})
        );
        let body = body_for(json!({"messages": [], "response_format": {"type": "text"}}));
        assert_eq!(body["generationConfig"], json!({}));
    }

    #[test]
    fn reasoning_becomes_a_thinking_budget_with_thoughts_included() {
        let thinking = |reasoning: Value| thinking_config(&reasoning).unwrap();
        let config = |budget, include_thoughts| ThinkingConfig {
            thinking_budget: budget,
            include_thoughts,
        };
        assert_eq!(
            thinking(json!({"effort": "low"})),
            config(Some(1_024), true)
        );
        assert_eq!(
            thinking(json!({"effort": "medium"})),
            config(Some(8_192), true)
        );
        assert_eq!(
            thinking(json!({"effort": "high"})),
            config(Some(24_576), true)
        );
        assert_eq!(
            thinking(json!({"max_tokens": 2_000})),
            config(Some(2_000), true)
        );
        assert_eq!(
            thinking(json!({"effort": "high", "exclude": true})),
            config(Some(24_576), false)
        );
        assert_eq!(thinking(json!({"enabled": false})), config(Some(0), false));
        assert_eq!(thinking(json!({"enabled": true})), config(None, true));

        let body = body_for(json!({"messages": [], "reasoning": {"effort": "low"}}));
        assert_eq!(
            body["generationConfig"]["thinkingConfig"],
            json!({"thinkingBudget": 1024, "includeThoughts": true})
        );
        let capabilities = Capabilities::default();
        let request: ChatRequest =
            serde_json::from_value(json!({"messages": [], "reasoning": {"effort": "low"}}))
                .unwrap();
        let body: Value =
            serde_json::from_slice(&encode_body(&request, target(&capabilities)).unwrap()).unwrap();
        assert!(
            body["generationConfig"].get("thinkingConfig").is_none(),
            "models that cannot think get no thinking config"
        );
    }

    #[test]
    fn a_text_response_becomes_a_message_with_usage() {
        let response = decode_response(fixture!("text_response.json").as_bytes()).unwrap();
        let choice = &response.choices.parsed()[0];
        assert_eq!(
            choice.message.content.as_deref(),
            Some("AI learns patterns from data to make predictions.")
        );
        assert_eq!(choice.finish_reason.as_deref(), Some("stop"));
        assert_eq!(response.model, "gemini-2.5-flash");
        let usage = response.usage.unwrap();
        assert_eq!((usage.prompt_tokens, usage.completion_tokens), (8, 10));
        assert_eq!(usage.total_tokens, 18);
    }

    #[test]
    fn thoughts_become_reasoning_and_are_billed_as_completion_tokens() {
        let response = decode_response(fixture!("thinking_response.json").as_bytes()).unwrap();
        let message = &response.choices.parsed()[0].message;
        assert_eq!(
            message.content.as_deref(),
            Some("There are 4 primes below 10.")
        );
        assert!(
            message
                .reasoning
                .as_deref()
                .unwrap()
                .contains("Counting the primes")
        );
        let usage = response.usage.unwrap();
        assert_eq!(usage.prompt_tokens, 2_000);
        assert_eq!(
            usage.completion_tokens, 308,
            "8 answer + 300 thought tokens"
        );
        assert_eq!(usage.total_tokens, 2_308);
        assert_eq!(usage.cached_tokens(), 1_500);
        assert_eq!(usage.reasoning_tokens(), 300);
    }

    #[test]
    fn function_calls_become_tool_calls_with_ids_json_arguments_and_signatures() {
        let response = decode_response(fixture!("function_call_response.json").as_bytes()).unwrap();
        let choice = &response.choices.parsed()[0];
        assert_eq!(choice.finish_reason.as_deref(), Some("tool_calls"));
        assert_eq!(choice.message.content, None);
        let calls = choice.message.tool_calls.as_ref().unwrap();
        assert_eq!(calls.len(), 2);
        let ids: Vec<&str> = calls
            .iter()
            .map(|call| call["id"].as_str().unwrap())
            .collect();
        assert!(
            ids.iter()
                .all(|id| id.starts_with("call_") && id.len() == 29)
        );
        assert_ne!(ids[0], ids[1]);
        assert_eq!(calls[0]["type"], "function");
        assert_eq!(calls[0]["function"]["name"], "get_weather");
        let arguments: Value =
            serde_json::from_str(calls[0]["function"]["arguments"].as_str().unwrap()).unwrap();
        assert_eq!(arguments, json!({"location": "Paris"}));
        assert_eq!(
            calls[0]["extra_content"]["google"]["thought_signature"],
            "CiQBVKhc7sig1"
        );
        assert!(calls[1].get("extra_content").is_none());
    }

    #[test]
    fn finish_reasons_map_to_openrouters() {
        let cases = [
            ("STOP", false, "stop"),
            ("STOP", true, "tool_calls"),
            ("MAX_TOKENS", false, "length"),
            ("SAFETY", false, "content_filter"),
            ("RECITATION", false, "content_filter"),
            ("BLOCKLIST", false, "content_filter"),
            ("PROHIBITED_CONTENT", false, "content_filter"),
            ("SPII", false, "content_filter"),
            ("IMAGE_SAFETY", false, "content_filter"),
            ("MALFORMED_FUNCTION_CALL", false, "error"),
            ("OTHER", false, "stop"),
        ];
        for (gemini, called, expected) in cases {
            assert_eq!(finish_reason(gemini, called), expected, "{gemini}");
        }
    }

    #[test]
    fn a_blocked_prompt_is_an_empty_content_filtered_answer() {
        let response = decode_response(fixture!("prompt_blocked.json").as_bytes()).unwrap();
        let choice = &response.choices.parsed()[0];
        assert_eq!(choice.finish_reason.as_deref(), Some("content_filter"));
        assert_eq!(choice.message.content.as_deref(), Some(""));
        assert_eq!(response.usage.unwrap().prompt_tokens, 12);
        assert!(decode_response(b"{}").is_err());
    }

    #[test]
    fn a_stream_sends_the_role_first_then_deltas_then_the_finish_reason_with_usage() {
        let (decoder, chunks) = decode_stream(fixture!("text_stream.sse"));
        let chunks: Vec<ChatChunk> = chunks.into_iter().map(|c| c.unwrap().unwrap()).collect();
        assert_eq!(chunks.len(), 3);
        assert_eq!(
            chunks[0].choices[0].delta.role.as_deref(),
            Some("assistant")
        );
        assert!(
            chunks[1..]
                .iter()
                .all(|c| c.choices[0].delta.role.is_none())
        );
        let text: String = chunks
            .iter()
            .filter_map(|chunk| chunk.choices[0].delta.content.as_deref())
            .collect();
        assert_eq!(text, "AI learns patterns from data to make predictions.");
        assert_eq!(chunks[1].choices[0].finish_reason, None);
        assert_eq!(chunks[2].choices[0].finish_reason.as_deref(), Some("stop"));
        assert_eq!(chunks[2].usage.as_ref().unwrap().completion_tokens, 10);
        assert!(decoder.finished());
    }

    #[test]
    fn a_streamed_function_call_arrives_whole_as_one_indexed_tool_call_delta() {
        let (decoder, chunks) = decode_stream(fixture!("function_call_stream.sse"));
        let chunks: Vec<ChatChunk> = chunks.into_iter().map(|c| c.unwrap().unwrap()).collect();
        assert_eq!(
            chunks[0].choices[0].delta.reasoning.as_deref(),
            Some("The user wants the weather in Paris.")
        );
        let last = &chunks[1].choices[0];
        let call = &last.delta.tool_calls.as_ref().unwrap()[0];
        assert_eq!(call["index"], 0);
        assert!(call["id"].as_str().unwrap().starts_with("call_"));
        assert_eq!(call["type"], "function");
        assert_eq!(call["function"]["name"], "get_weather");
        assert_eq!(
            call["function"]["arguments"],
            r#"{"location":"Paris","unit":"celsius"}"#
        );
        assert_eq!(
            last.finish_reason, None,
            "the finish comes in a chunk of its own"
        );
        let finish = &chunks[2];
        assert_eq!(finish.choices[0].delta.tool_calls, None);
        assert_eq!(
            finish.choices[0].finish_reason.as_deref(),
            Some("tool_calls")
        );
        let usage = finish.usage.as_ref().unwrap();
        assert_eq!(
            (usage.completion_tokens, usage.reasoning_tokens()),
            (58, 40)
        );
        assert!(decoder.finished());
    }

    #[test]
    fn a_stream_stopped_for_safety_ends_with_content_filter() {
        let (decoder, chunks) = decode_stream(fixture!("safety_stream.sse"));
        let last = chunks.last().unwrap().as_ref().unwrap().as_ref().unwrap();
        assert_eq!(
            last.choices[0].finish_reason.as_deref(),
            Some("content_filter")
        );
        assert!(decoder.finished());
    }

    #[test]
    fn a_blocked_prompt_in_a_stream_is_one_content_filtered_chunk() {
        let data = fixture!("prompt_blocked.json").replace('\n', "");
        let (decoder, chunks) = decode_stream(&format!("data: {data}\n\n"));
        let chunk = chunks[0].as_ref().unwrap().as_ref().unwrap();
        assert_eq!(chunk.choices[0].delta.role.as_deref(), Some("assistant"));
        assert_eq!(chunk.choices[0].delta.content.as_deref(), Some(""));
        assert_eq!(
            chunk.choices[0].finish_reason.as_deref(),
            Some("content_filter")
        );
        assert!(decoder.finished());
    }

    #[test]
    fn an_error_event_in_a_stream_is_a_classified_upstream_error() {
        let (decoder, chunks) = decode_stream(fixture!("error_stream.sse"));
        assert!(chunks[0].as_ref().unwrap().is_some());
        let error = chunks[1].as_ref().unwrap_err();
        assert_eq!(error.kind, UpstreamErrorKind::Server);
        assert_eq!(error.status, Some(503));
        assert!(
            !error.message.contains("overloaded"),
            "5xx details stay private"
        );
        assert!(!decoder.finished());

        let by_name =
            r#"data: {"error": {"message": "slow down", "status": "RESOURCE_EXHAUSTED"}}"#;
        let (_, chunks) = decode_stream(&format!("{by_name}\n\n"));
        assert_eq!(
            chunks[0].as_ref().unwrap_err().kind,
            UpstreamErrorKind::RateLimited
        );
    }

    #[test]
    fn error_bodies_map_to_kinds_and_keep_the_retry_delay() {
        let gemini = Gemini::new(DEFAULT_BASE_URL, None).unwrap();
        let error = gemini.parse_error(
            StatusCode::TOO_MANY_REQUESTS,
            fixture!("error_resource_exhausted.json").as_bytes(),
        );
        assert_eq!(error.kind, UpstreamErrorKind::RateLimited);
        assert_eq!(error.retry_after, Some(Duration::from_secs(37)));

        let body = |code: u16, status: &str, message: &str| {
            json!({"error": {"code": code, "message": message, "status": status}}).to_string()
        };
        let cases = [
            (400, "INVALID_ARGUMENT", UpstreamErrorKind::BadRequest),
            (403, "PERMISSION_DENIED", UpstreamErrorKind::Unauthorized),
            (404, "NOT_FOUND", UpstreamErrorKind::NotFound),
            (500, "INTERNAL", UpstreamErrorKind::Server),
            (503, "UNAVAILABLE", UpstreamErrorKind::Server),
            (504, "DEADLINE_EXCEEDED", UpstreamErrorKind::Timeout),
        ];
        for (code, status, kind) in cases {
            let status_code = StatusCode::from_u16(code).unwrap();
            let error = gemini.parse_error(status_code, body(code, status, "why").as_bytes());
            assert_eq!(error.kind, kind, "{status}");
            assert_eq!(error.status, Some(code));
        }
        let bad = gemini.parse_error(
            StatusCode::BAD_REQUEST,
            body(
                400,
                "INVALID_ARGUMENT",
                "* GenerateContentRequest.contents: must not be empty",
            )
            .as_bytes(),
        );
        assert!(bad.message.contains("contents: must not be empty"));
        let too_long = gemini.parse_error(
            StatusCode::BAD_REQUEST,
            body(
                400,
                "INVALID_ARGUMENT",
                "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).",
            )
            .as_bytes(),
        );
        assert_eq!(too_long.kind, UpstreamErrorKind::ContextLength);
        let unreadable = gemini.parse_error(StatusCode::BAD_GATEWAY, b"<html>bad gateway</html>");
        assert_eq!(unreadable.kind, UpstreamErrorKind::Server);
    }
}
