//! AWS event-stream framing of upstream bodies (the binary `application/vnd.amazon.eventstream`
//! format of Bedrock's streaming APIs): bytes in, complete checksummed messages out, each handed
//! on as an [`SseEvent`] so adapters keep one [`super::StreamDecoder`] interface. Knows nothing of
//! any service's payloads.
//!
//! An `event` message becomes an event named by its `:event-type` header; an `exception` message
//! (a modelled service error such as `throttlingException`) becomes an event named by its
//! `:exception-type`, for the adapter to classify; an `error` message (a failure of the stream
//! itself) ends the stream with an error here.

use aws_smithy_eventstream::frame::{DecodedFrame, MessageFrameDecoder};
use aws_smithy_types::event_stream::Message;
use bytes::BytesMut;

use super::{SseEvent, UpstreamError, UpstreamErrorKind};

#[derive(Debug, Default)]
pub struct EventStreamParser {
    buffer: BytesMut,
    decoder: MessageFrameDecoder,
    /// Once a frame is corrupt the rest of the body cannot be re-synchronised.
    failed: bool,
}

impl EventStreamParser {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The next complete message in what has been pushed so far; `Err` for a corrupt frame
    /// (length or CRC mismatch) or an `error` message.
    pub fn next_event(&mut self) -> Option<Result<SseEvent, UpstreamError>> {
        if self.failed {
            return None;
        }
        match self.decoder.decode_frame(&mut self.buffer) {
            Ok(DecodedFrame::Incomplete) => None,
            Ok(DecodedFrame::Complete(message)) => Some(event(&message)),
            Err(error) => {
                self.failed = true;
                Some(Err(UpstreamError::new(
                    UpstreamErrorKind::Protocol,
                    format!("corrupt event-stream frame: {error}"),
                )))
            }
        }
    }

    /// Bytes held for the message not yet complete (less its 12-byte prelude, which the decoder
    /// keeps once read).
    pub fn pending_len(&self) -> usize {
        self.buffer.len()
    }

    /// At the end of the body, a partial frame means the stream was cut.
    pub fn finish(&mut self) -> Option<Result<SseEvent, UpstreamError>> {
        if self.failed || self.buffer.is_empty() {
            return None;
        }
        self.failed = true;
        Some(Err(UpstreamError::new(
            UpstreamErrorKind::Protocol,
            "the event stream ended inside a frame",
        )))
    }
}

fn event(message: &Message) -> Result<SseEvent, UpstreamError> {
    let header = |name: &str| {
        message
            .headers()
            .iter()
            .find(|header| header.name().as_str() == name)
            .and_then(|header| header.value().as_string().ok())
            .map(|value| value.as_str().to_owned())
    };
    let name = match header(":message-type").as_deref() {
        Some("exception") => header(":exception-type"),
        Some("error") => {
            let code = header(":error-code").unwrap_or_default();
            return Err(UpstreamError::new(
                UpstreamErrorKind::Server,
                format!("the upstream ended the stream with error {code:?}"),
            ));
        }
        _ => header(":event-type"),
    };
    Ok(SseEvent {
        event: name,
        data: String::from_utf8_lossy(message.payload()).into_owned(),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use aws_smithy_eventstream::frame::write_message_to;
    use aws_smithy_types::event_stream::{Header, HeaderValue};

    use super::*;

    /// One frame as Bedrock sends it.
    pub(crate) fn frame(message_type: &str, name: &str, payload: &str) -> Vec<u8> {
        let name_header = if message_type == "exception" {
            ":exception-type"
        } else {
            ":event-type"
        };
        let message = Message::new(payload.as_bytes().to_vec())
            .add_header(Header::new(
                ":message-type",
                HeaderValue::String(message_type.to_owned().into()),
            ))
            .add_header(Header::new(
                name_header,
                HeaderValue::String(name.to_owned().into()),
            ))
            .add_header(Header::new(
                ":content-type",
                HeaderValue::String("application/json".into()),
            ));
        let mut bytes = Vec::new();
        write_message_to(&message, &mut bytes).unwrap();
        bytes
    }

    fn parse(bytes: &[u8], piece: usize) -> Vec<Result<SseEvent, UpstreamError>> {
        let mut parser = EventStreamParser::default();
        let mut out = Vec::new();
        for chunk in bytes.chunks(piece) {
            parser.push(chunk);
            while let Some(event) = parser.next_event() {
                out.push(event);
            }
        }
        out.extend(parser.finish());
        out
    }

    #[test]
    fn frames_split_across_reads_are_reassembled() {
        let mut bytes = frame("event", "messageStart", r#"{"role":"assistant"}"#);
        bytes.extend(frame(
            "event",
            "messageStop",
            r#"{"stopReason":"end_turn"}"#,
        ));
        for piece in [1, 7, bytes.len()] {
            let events: Vec<SseEvent> = parse(&bytes, piece)
                .into_iter()
                .map(Result::unwrap)
                .collect();
            assert_eq!(events.len(), 2);
            assert_eq!(events[0].event.as_deref(), Some("messageStart"));
            assert_eq!(events[0].data, r#"{"role":"assistant"}"#);
            assert_eq!(events[1].event.as_deref(), Some("messageStop"));
        }
    }

    #[test]
    fn exceptions_are_named_by_their_exception_type() {
        let bytes = frame("exception", "throttlingException", r#"{"message":"slow"}"#);
        let events = parse(&bytes, 5);
        let event = events[0].as_ref().unwrap();
        assert_eq!(event.event.as_deref(), Some("throttlingException"));
    }

    #[test]
    fn a_checksum_mismatch_is_a_protocol_error() {
        let mut bytes = frame("event", "messageStart", r#"{"role":"assistant"}"#);
        let payload_byte = bytes.len() - 8;
        bytes[payload_byte] ^= 0x20;
        let events = parse(&bytes, 16);
        assert_eq!(events.len(), 1);
        let error = events[0].as_ref().unwrap_err();
        assert_eq!(error.kind, UpstreamErrorKind::Protocol);
    }

    #[test]
    fn a_truncated_frame_is_an_error_at_the_end() {
        let bytes = frame("event", "messageStart", r#"{"role":"assistant"}"#);
        let events = parse(&bytes[..bytes.len() - 3], 4);
        assert_eq!(events.len(), 1);
        assert!(events[0].is_err());
    }

    #[test]
    fn error_messages_end_the_stream() {
        let message = Message::new(Vec::new())
            .add_header(Header::new(
                ":message-type",
                HeaderValue::String("error".into()),
            ))
            .add_header(Header::new(
                ":error-code",
                HeaderValue::String("InternalFailure".into()),
            ));
        let mut bytes = Vec::new();
        write_message_to(&message, &mut bytes).unwrap();
        let error = parse(&bytes, 64).remove(0).unwrap_err();
        assert_eq!(error.kind, UpstreamErrorKind::Server);
    }
}
