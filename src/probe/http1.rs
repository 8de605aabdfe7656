//! HTTP/1.1 request encoding and response parsing (httparse for the head; our own body framing).
