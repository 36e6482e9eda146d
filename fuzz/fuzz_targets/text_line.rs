//! The text port's input path: arbitrary bytes, cut into arbitrary chunks,
//! through `LineCodec` and every decoded line through `parse_text_line`.
//!
//! The first input byte picks the line limit, the second the chunk size; the
//! rest is the stream. Checks what the decoder promises: no line longer than
//! the limit, no trailing `\r` left, no buffer growing past it, and a parsed
//! line is its own payload.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use pushgate::model::{MAX_UID_BYTES, parse_text_line};
use pushgate::text::LineCodec;
use tokio_util::codec::Decoder;

fn check(line: Bytes, max: usize) {
    assert!(
        line.len() <= max,
        "line of {} bytes, limit {max}",
        line.len()
    );
    // Workerman's Text::decode rtrim()s every CR before the line end.
    assert_ne!(line.last(), Some(&b'\r'), "a trailing CR was left");
    if let Ok((uid, payload)) = parse_text_line(line.clone()) {
        assert!(!uid.as_str().is_empty() && uid.as_str().len() <= MAX_UID_BYTES);
        assert_eq!(payload.as_str().as_bytes(), &line[..]);
    }
}

fuzz_target!(|data: &[u8]| {
    let [limit, chunk, stream @ ..] = data else {
        return;
    };
    let max = *limit as usize * 4 + 1;
    let chunk = (*chunk as usize).max(1);
    let mut codec = LineCodec::new(max);
    let mut buf = BytesMut::new();
    for piece in stream.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(line)) => check(line, max),
                Ok(None) => break,
                Err(_) => return,
            }
        }
        assert!(
            buf.len() <= max + 1,
            "{} bytes buffered, limit {max}",
            buf.len()
        );
    }
    while let Ok(Some(line)) = codec.decode_eof(&mut buf) {
        check(line, max);
    }
});
