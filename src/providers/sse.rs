//! Server-sent-event framing of upstream bodies: bytes in, complete events out. Incremental, so
//! an event is available the moment its blank line arrives.

use bytes::{Buf, BytesMut};

/// One SSE event. Comment lines (`: ping`) produce no event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, when the upstream names its events (Anthropic does, OpenAI does not).
    pub event: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

#[derive(Debug, Default)]
pub struct SseParser {
    buffer: BytesMut,
    /// How much of `buffer` is known to hold no line end, so a long line arriving in many reads
    /// is searched once, not once per read.
    scanned: usize,
    current: SseEvent,
    has_fields: bool,
}

impl SseParser {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The next complete event in what has been pushed so far.
    pub fn next_event(&mut self) -> Option<SseEvent> {
        while let Some(end) = memchr::memchr(b'\n', &self.buffer[self.scanned..]) {
            let line = self.buffer.split_to(self.scanned + end + 1);
            self.scanned = 0;
            let line = trim_line_end(&line);
            if line.is_empty() {
                if self.has_fields {
                    self.has_fields = false;
                    return Some(std::mem::take(&mut self.current));
                }
                continue;
            }
            self.field(line);
        }
        self.scanned = self.buffer.len();
        None
    }

    /// Bytes held for the event not yet complete: its fields so far and its unfinished line.
    pub fn pending_len(&self) -> usize {
        self.buffer.len()
            + self.current.data.len()
            + self.current.event.as_ref().map_or(0, String::len)
    }

    /// At the end of the body an event without its final blank line still counts.
    pub fn finish(&mut self) -> Option<SseEvent> {
        if !self.buffer.is_empty() {
            let rest = self.buffer.split_to(self.buffer.len());
            self.field(trim_line_end(&rest));
        }
        self.buffer.advance(self.buffer.len());
        self.scanned = 0;
        std::mem::take(&mut self.has_fields).then(|| std::mem::take(&mut self.current))
    }

    fn field(&mut self, line: &[u8]) {
        if line.first() == Some(&b':') {
            return;
        }
        let (name, value) = match memchr::memchr(b':', line) {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        let value = String::from_utf8_lossy(value);
        match name {
            b"data" => {
                if self.has_fields && !self.current.data.is_empty() {
                    self.current.data.push('\n');
                }
                self.current.data.push_str(&value);
                self.has_fields = true;
            }
            b"event" => {
                self.current.event = Some(value.into_owned());
                self.has_fields = true;
            }
            _ => {}
        }
    }
}

fn trim_line_end(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(chunks: &[&str]) -> Vec<SseEvent> {
        let mut parser = SseParser::default();
        let mut out = Vec::new();
        for chunk in chunks {
            parser.push(chunk.as_bytes());
            while let Some(event) = parser.next_event() {
                out.push(event);
            }
        }
        out.extend(parser.finish());
        out
    }

    #[test]
    fn events_split_across_reads_are_reassembled() {
        let got = events(&["data: {\"a\"", ":1}\n", "\ndata: [DONE]\n\n"]);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].data, "{\"a\":1}");
        assert_eq!(got[1].data, "[DONE]");
    }

    #[test]
    fn named_events_crlf_and_comments_are_understood() {
        let got = events(&[": keep-alive\r\n\r\nevent: ping\r\ndata: {}\r\n\r\n"]);
        assert_eq!(
            got,
            vec![SseEvent {
                event: Some("ping".into()),
                data: "{}".into()
            }]
        );
    }

    #[test]
    fn multi_line_data_is_joined_with_newlines() {
        let got = events(&["data: a\ndata: b\n\n"]);
        assert_eq!(got[0].data, "a\nb");
    }

    #[test]
    fn a_final_event_without_blank_line_is_kept() {
        let got = events(&["data: last"]);
        assert_eq!(got[0].data, "last");
    }
}
