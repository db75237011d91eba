//! Incremental parser of a `text/event-stream` body (server-sent events).
//!
//! Bytes arrive in chunks that may end anywhere, even inside a line or a UTF-8 character;
//! [`SseParser::push`] keeps the unfinished line and returns every message completed by the
//! chunk. It follows the WHATWG "event stream interpretation" rules that labd's stream uses:
//! `event:`, `id:` and `data:` fields (one optional space after the colon), several `data:`
//! lines joined by `\n`, comment lines starting with ':', and a blank line dispatching the
//! message. Lines end with LF, CRLF or CR; `retry:` and unknown fields are ignored.

/// One dispatched message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseMessage {
    /// The `event:` field, or `message` when there was none.
    pub event: String,
    /// The last `id:` seen on the stream so far (ids persist across messages).
    pub id: Option<String>,
    /// The `data:` lines joined by `\n`.
    pub data: String,
}

/// Parser state between chunks.
#[derive(Debug, Default)]
pub struct SseParser {
    /// Bytes of the line being received.
    line: Vec<u8>,
    /// The previous chunk ended with CR: a LF starting the next one belongs to it.
    after_cr: bool,
    event: Option<String>,
    last_id: Option<String>,
    data: Vec<String>,
}

impl SseParser {
    /// A parser at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feed one chunk; returns the messages it completes, in order.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<SseMessage> {
        let mut out = Vec::new();
        let mut bytes = chunk;
        if self.after_cr && !bytes.is_empty() {
            self.after_cr = false;
            if let Some(rest) = bytes.strip_prefix(b"\n") {
                bytes = rest;
            }
        }
        while let Some(end) = bytes.iter().position(|b| *b == b'\n' || *b == b'\r') {
            self.line.extend_from_slice(&bytes[..end]);
            let line = std::mem::take(&mut self.line);
            if let Some(msg) = self.line_done(&String::from_utf8_lossy(&line)) {
                out.push(msg);
            }
            let crlf = bytes[end] == b'\r';
            bytes = &bytes[end + 1..];
            if crlf {
                match bytes.first() {
                    Some(b'\n') => bytes = &bytes[1..],
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
        }
        self.line.extend_from_slice(bytes);
        out
    }

    fn line_done(&mut self, line: &str) -> Option<SseMessage> {
        if line.is_empty() {
            return self.dispatch();
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => self.event = Some(value.to_owned()),
            "data" => self.data.push(value.to_owned()),
            "id" if !value.contains('\0') => self.last_id = Some(value.to_owned()),
            _ => {}
        }
        None
    }

    fn dispatch(&mut self) -> Option<SseMessage> {
        let event = self.event.take();
        if self.data.is_empty() {
            return None;
        }
        let data = std::mem::take(&mut self.data).join("\n");
        Some(SseMessage {
            event: event
                .filter(|e| !e.is_empty())
                .unwrap_or_else(|| "message".to_owned()),
            id: self.last_id.clone(),
            data,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &str = ": keep-alive\n\nevent: job.started\nid: 7\ndata: {\"seq\":7}\n\n\
                          event: lagged\ndata: 3 events missed\ndata: reconnect\n\n";

    fn expected() -> Vec<SseMessage> {
        vec![
            SseMessage {
                event: "job.started".into(),
                id: Some("7".into()),
                data: "{\"seq\":7}".into(),
            },
            SseMessage {
                event: "lagged".into(),
                id: Some("7".into()),
                data: "3 events missed\nreconnect".into(),
            },
        ]
    }

    fn parse_in_chunks(bytes: &[u8], size: usize) -> Vec<SseMessage> {
        let mut p = SseParser::new();
        bytes.chunks(size).flat_map(|c| p.push(c)).collect()
    }

    #[test]
    fn whole_stream_at_once() {
        assert_eq!(parse_in_chunks(STREAM.as_bytes(), STREAM.len()), expected());
    }

    #[test]
    fn every_chunk_boundary() {
        for size in 1..STREAM.len() {
            assert_eq!(
                parse_in_chunks(STREAM.as_bytes(), size),
                expected(),
                "size {size}"
            );
        }
    }

    #[test]
    fn crlf_and_cr_line_endings_split_anywhere() {
        for ending in ["\r\n", "\r"] {
            let stream = STREAM.replace('\n', ending);
            for size in 1..stream.len() {
                assert_eq!(
                    parse_in_chunks(stream.as_bytes(), size),
                    expected(),
                    "{ending:?} {size}"
                );
            }
        }
    }

    #[test]
    fn empty_chunks_change_nothing() {
        let stream = STREAM.replace('\n', "\r\n");
        let mut p = SseParser::new();
        let mut msgs = Vec::new();
        for c in stream.as_bytes().chunks(3) {
            msgs.extend(p.push(c));
            msgs.extend(p.push(b""));
        }
        assert_eq!(msgs, expected());
    }

    #[test]
    fn utf8_split_inside_a_character() {
        let stream = "data: \u{e9}t\u{e9}\n\n".as_bytes();
        for size in 1..stream.len() {
            let msgs = parse_in_chunks(stream, size);
            assert_eq!(msgs.len(), 1);
            assert_eq!(msgs[0].data, "\u{e9}t\u{e9}");
        }
    }

    #[test]
    fn fields_without_space_or_value() {
        let msgs = parse_in_chunks(b"event:x\ndata\ndata:a\n\n", 3);
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].event, "x");
        assert_eq!(msgs[0].data, "\na");
        assert_eq!(msgs[0].id, None);
    }

    #[test]
    fn no_data_no_message_and_event_type_resets() {
        let msgs = parse_in_chunks(b"event: a\n\ndata: b\n\n: only a comment\n\n", 5);
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].event, "message");
        assert_eq!(msgs[0].data, "b");
    }

    #[test]
    fn unfinished_message_is_not_dispatched() {
        let msgs = parse_in_chunks(b"data: a\n\ndata: b\n", 4);
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].data, "a");
    }
}
