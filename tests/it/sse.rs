//! A small Server-Sent Events client for the tests: reads a `text/event-stream` response event
//! by event, as a browser's `EventSource` would (comments skipped).

use std::time::Duration;

/// One event: its `event:` name, `id:` and `data:` (lines joined by `\n`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SseEvent {
    pub event: String,
    pub id: Option<String>,
    pub data: String,
}

impl SseEvent {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.data).unwrap_or_else(|e| panic!("{e}: {}", self.data))
    }

    /// The `provider` of a quote or failure.
    pub fn provider(&self) -> String {
        self.json()["provider"].as_str().unwrap_or_default().to_owned()
    }
}

pub struct SseStream {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    response: reqwest::Response,
    buffer: Vec<u8>,
    ended: bool,
}

/// A bound on any one read: generous, so a loaded machine does not fail a test; a stream that
/// stops sending fails with what it had.
const READ_BOUND: Duration = Duration::from_secs(40);

impl SseStream {
    pub async fn open(http: &reqwest::Client, url: &str, headers: &[(&str, &str)]) -> Self {
        let mut request = http.get(url).header("accept", "text/event-stream");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        let (status, headers) = (response.status().as_u16(), response.headers().clone());
        Self { status, headers, response, buffer: Vec::new(), ended: false }
    }

    /// The next event, or `None` once the server has ended the stream.
    pub async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(end) = self.buffer.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = self.buffer.drain(..end + 2).collect();
                if let Some(event) = parse(&String::from_utf8(block).unwrap()) {
                    return Some(event);
                }
                continue;
            }
            if self.ended {
                return None;
            }
            match tokio::time::timeout(READ_BOUND, self.response.chunk()).await {
                Ok(Ok(Some(chunk))) => self.buffer.extend_from_slice(&chunk),
                Ok(Ok(None)) => self.ended = true,
                Ok(Err(e)) => panic!("reading the event stream: {e}"),
                Err(_) => {
                    panic!("no event within {READ_BOUND:?}; buffered: {:?}", String::from_utf8_lossy(&self.buffer))
                }
            }
        }
    }

    /// Every event up to the end of the stream.
    pub async fn rest(&mut self) -> Vec<SseEvent> {
        let mut events = Vec::new();
        while let Some(event) = self.next().await {
            events.push(event);
        }
        events
    }
}

/// One block of lines; `None` for a comment-only block (a keep-alive).
fn parse(block: &str) -> Option<SseEvent> {
    let (mut event, mut id, mut data) = (None, None, Vec::new());
    for line in block.lines() {
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "" => {}
            "event" => event = Some(value.to_owned()),
            "id" => id = Some(value.to_owned()),
            "data" => data.push(value.to_owned()),
            "retry" => {}
            other => panic!("unknown field {other:?} in {block:?}"),
        }
    }
    if event.is_none() && data.is_empty() {
        return None;
    }
    Some(SseEvent { event: event.unwrap_or_else(|| "message".into()), id, data: data.join("\n") })
}
