//! Property tests of the parsers every untrusted byte goes through: the text
//! port's line splitter, its line parser, and the REST push body.
//!
//! Each property compares the code with a model written from the documented
//! behaviour, over generated inputs (proptest shrinks any failure to a
//! minimal case). Case counts are kept moderate so the file runs in seconds.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use pushgate::model::{MAX_UID_BYTES, PushRequest, parse_text_line, payload_from_data};
use pushgate::text::LineCodec;
use serde_json::Value;
use tokio_util::codec::Decoder;

// ---------------------------------------------------------------- LineCodec

/// What the decoder must produce for `input` with limit `max`: the complete
/// lines (split on `\n`, every trailing `\r` removed, as Workerman's
/// `rtrim($buffer, "\r\n")`) up to the first one too long, and whether it
/// errors. It errors iff a complete line is longer than `max` once stripped or
/// than `max + 1` bytes before (`max` bytes plus `\r\n` is the most a line
/// may take), or the unterminated tail is longer than `max + 1` bytes (it can
/// no longer become a valid line). A shorter tail at EOF is not a line and is
/// dropped silently.
fn model(max: usize, input: &[u8]) -> (Vec<Vec<u8>>, bool) {
    let mut parts: Vec<&[u8]> = input.split(|&b| b == b'\n').collect();
    let tail = parts.pop().expect("split yields at least one part");
    let mut out = Vec::new();
    for part in parts {
        let kept = part.iter().rposition(|&b| b != b'\r').map_or(0, |i| i + 1);
        let line = &part[..kept];
        if line.len() > max || part.len() > max + 1 {
            return (out, true);
        }
        out.push(line.to_vec());
    }
    (out, tail.len() > max + 1)
}

/// Feeds `chunks` one after another as a socket would deliver them, decoding
/// everything decodable after each, then signals EOF. Stops at the first error.
fn decode_chunks(max: usize, chunks: &[&[u8]]) -> (Vec<Vec<u8>>, bool) {
    let mut codec = LineCodec::new(max);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let push = |line: Bytes, out: &mut Vec<Vec<u8>>| {
        assert!(
            line.len() <= max,
            "a line of {} bytes passed a limit of {max}",
            line.len()
        );
        out.push(line.to_vec());
    };
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(line)) => push(line, &mut out),
                Ok(None) => break,
                Err(_) => return (out, true),
            }
        }
        // A line that cannot end within the limit must not grow the buffer.
        assert!(
            buf.len() <= max + 1,
            "buffer of {} bytes held with limit {max}",
            buf.len()
        );
    }
    loop {
        match codec.decode_eof(&mut buf) {
            Ok(Some(line)) => push(line, &mut out),
            Ok(None) => return (out, false),
            Err(_) => return (out, true),
        }
    }
}

/// Bytes rich in line ends, carriage returns and runs of ordinary bytes, so
/// lines of every length around the limit occur.
fn stream_bytes() -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![
        4 => Just(b'a'),
        2 => Just(b'\n'),
        2 => Just(b'\r'),
        1 => any::<u8>(),
    ];
    prop::collection::vec(byte, 0..200)
}

/// `input` with arbitrary cut points.
fn split_input() -> impl Strategy<Value = (Vec<u8>, Vec<usize>)> {
    stream_bytes().prop_flat_map(|input| {
        let n = input.len();
        (Just(input), prop::collection::vec(0..=n, 0..12))
    })
}

fn chunks_at<'a>(input: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut cuts = cuts.to_vec();
    cuts.sort_unstable();
    cuts.dedup();
    let mut chunks = Vec::new();
    let mut start = 0;
    for cut in cuts.into_iter().chain([input.len()]) {
        chunks.push(&input[start..cut]);
        start = cut;
    }
    chunks
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn line_codec_matches_the_model_however_the_bytes_are_split(
        max in 0usize..24,
        (input, cuts) in split_input(),
    ) {
        let expected = model(max, &input);
        let chunked = decode_chunks(max, &chunks_at(&input, &cuts));
        prop_assert_eq!(&chunked, &expected, "chunked at {:?}", cuts);
        let whole = decode_chunks(max, &[&input]);
        prop_assert_eq!(&whole, &expected);
        let singles: Vec<&[u8]> = input.chunks(1).collect();
        let byte_by_byte = decode_chunks(max, &singles);
        prop_assert_eq!(&byte_by_byte, &whole, "byte by byte differs from all at once");
    }

    #[test]
    fn line_codec_never_panics_on_arbitrary_bytes(
        max in 0usize..300,
        input in prop::collection::vec(any::<u8>(), 0..600),
        cuts in prop::collection::vec(0usize..600, 0..8),
    ) {
        let cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(input.len())).collect();
        let got = decode_chunks(max, &chunks_at(&input, &cuts));
        prop_assert_eq!(got, model(max, &input));
    }
}

// ------------------------------------------------------------ JSON helpers

/// Any JSON value, nested a few levels.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        any::<String>().prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(any::<String>(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A string as JSON text, either as serde_json writes it or with every
/// character as a `\u` escape (surrogate pairs beyond the BMP).
fn json_string(s: &str, all_escaped: bool) -> String {
    if !all_escaped {
        return serde_json::to_string(s).unwrap();
    }
    let mut out = String::from("\"");
    for unit in s.encode_utf16() {
        out.push_str(&format!("\\u{unit:04x}"));
    }
    out.push('"');
    out
}

/// Whitespace JSON allows between tokens.
fn ws() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["", "", " ", "\t", "  ", " \r\n "]).prop_map(String::from)
}

/// A valid uid as (JSON text, the uid's expected text).
fn uid_json() -> impl Strategy<Value = (String, String)> {
    let string_uid = (
        any::<String>().prop_filter("1 to 256 bytes", |s| {
            !s.is_empty() && s.len() <= MAX_UID_BYTES
        }),
        any::<bool>(),
    )
        .prop_map(|(s, esc)| (json_string(&s, esc), s));
    prop_oneof![
        3 => string_uid,
        1 => any::<i64>().prop_map(|n| (n.to_string(), n.to_string())),
        1 => any::<u64>().prop_map(|n| (n.to_string(), n.to_string())),
    ]
}

// ----------------------------------------------------------- text-port lines

/// A uid a text line may carry: as [`uid_json`], but an integer within 64
/// signed bits (PHP made a larger one a float and wrapped it to another key;
/// pushgate refuses it, as README's "Differences from push.php" says).
fn line_uid_json() -> impl Strategy<Value = (String, String)> {
    uid_json().prop_filter("an integer PHP keeps exactly", |(text, _)| {
        text.parse::<u64>()
            .map_or(true, |n| i64::try_from(n).is_ok())
    })
}

/// A JSON object with the uid at `pos` among `fields`, with `sep` whitespace
/// around every token.
fn object_text(uid: &str, pos: usize, fields: &[(String, Value)], sep: &[String]) -> String {
    let mut members: Vec<String> = fields
        .iter()
        .map(|(k, v)| format!("{}:{}", serde_json::to_string(k).unwrap(), v))
        .collect();
    members.insert(
        pos.min(members.len()),
        format!("\"uid\"{s}:{s}{uid}", s = sep[0]),
    );
    let s = |i: usize| &sep[i % sep.len()];
    let mut text = format!("{}{{{}", s(1), s(2));
    for (i, m) in members.iter().enumerate() {
        if i > 0 {
            text.push_str(&format!("{},{}", s(i + 3), s(i + 4)));
        }
        text.push_str(m);
    }
    text.push_str(&format!("{}}}{}", s(5), s(6)));
    text
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn a_text_line_yields_its_uid_and_is_its_own_payload(
        (uid_text, uid) in line_uid_json(),
        fields in prop::collection::btree_map(
            any::<String>().prop_filter("not uid", |k| k != "uid"),
            json_value(),
            0..5,
        ),
        pos in 0usize..6,
        sep in prop::collection::vec(ws(), 7),
    ) {
        let fields: Vec<(String, Value)> = fields.into_iter().collect();
        let line = object_text(&uid_text, pos, &fields, &sep);
        let (got, payload) = parse_text_line(Bytes::from(line.clone()))
            .unwrap_or_else(|e| panic!("{line:?} refused: {e}"));
        prop_assert_eq!(got.as_str(), uid.as_str());
        prop_assert_eq!(payload.as_str().as_bytes(), line.as_bytes());
    }

    #[test]
    fn a_text_line_with_an_empty_or_too_long_uid_is_refused(
        uid in prop_oneof![
            Just(String::new()),
            "[a-zé]{257,400}".prop_filter("over 256 bytes", |s| s.len() > MAX_UID_BYTES),
        ],
        esc in any::<bool>(),
    ) {
        let line = format!("{{\"uid\":{}}}", json_string(&uid, esc));
        prop_assert!(parse_text_line(Bytes::from(line)).is_err());
    }

    #[test]
    fn parse_text_line_never_panics_on_arbitrary_bytes(
        bytes in prop::collection::vec(any::<u8>(), 0..300),
    ) {
        if let Ok((uid, payload)) = parse_text_line(Bytes::from(bytes.clone())) {
            prop_assert!(!uid.as_str().is_empty() && uid.as_str().len() <= MAX_UID_BYTES);
            prop_assert_eq!(payload.as_str().as_bytes(), &bytes[..]);
        }
    }

    #[test]
    fn parse_text_line_never_panics_on_near_json(
        text in r#"[{}\[\]":,0-9a-z\\ ]{0,80}"#,
        prefix in prop::sample::select(vec!["", "{\"uid\":", "{\"uid\":\"", "{\"uid\":1"]),
    ) {
        let line = format!("{prefix}{text}");
        if let Ok((_, payload)) = parse_text_line(Bytes::from(line.clone())) {
            prop_assert_eq!(payload.as_str(), line.as_str());
        }
    }
}

// ------------------------------------------------------------- REST bodies

/// A JSON number spelled in any way the grammar allows.
fn number_text() -> impl Strategy<Value = String> {
    r"-?(0|[1-9][0-9]{0,24})(\.[0-9]{1,12})?([eE][+-]?[0-9]{1,4})?"
}

/// A non-string `data` as the exact JSON text a caller could send.
fn raw_non_string() -> impl Strategy<Value = String> {
    prop_oneof![
        number_text(),
        Just("true".to_owned()),
        Just("false".to_owned()),
        Just("null".to_owned()),
        (json_value(), any::<bool>())
            .prop_filter("not a string", |(v, _)| !v.is_string())
            .prop_map(|(v, pretty)| if pretty {
                serde_json::to_string_pretty(&v).unwrap()
            } else {
                v.to_string()
            }),
        // Containers with numbers in spellings serde_json would rewrite.
        prop::collection::vec(number_text(), 0..4).prop_map(|ns| format!("[ {} ]", ns.join(" ,"))),
        (any::<String>(), number_text())
            .prop_map(|(k, n)| format!("{{ {} : {n} }}", serde_json::to_string(&k).unwrap())),
    ]
}

/// A REST `uid`: one uid or a list, as JSON text.
fn uid_list_json() -> impl Strategy<Value = String> {
    prop_oneof![
        uid_json().prop_map(|(t, _)| t),
        // An empty list is a 400 (`answers::an_empty_target_list_is_a_400_and_delivers_nothing`).
        prop::collection::vec(uid_json().prop_map(|(t, _)| t), 1..4)
            .prop_map(|us| format!("[{}]", us.join(","))),
    ]
}

fn push_body(uid: &str, data: &str, data_first: bool, s: &str) -> String {
    if data_first {
        format!("{s}{{{s}\"data\"{s}:{s}{data}{s},{s}\"uid\"{s}:{s}{uid}{s}}}{s}")
    } else {
        format!("{s}{{{s}\"uid\"{s}:{s}{uid}{s},{s}\"data\"{s}:{s}{data}{s}}}{s}")
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn string_data_is_sent_as_its_decoded_text(
        uid in uid_list_json(),
        text in any::<String>(),
        esc in any::<bool>(),
        data_first in any::<bool>(),
        s in ws(),
    ) {
        let body = push_body(&uid, &json_string(&text, esc), data_first, &s);
        let req: PushRequest = serde_json::from_slice(body.as_bytes())
            .unwrap_or_else(|e| panic!("{body:?} refused: {e}"));
        let payload = payload_from_data(&req.data).unwrap();
        prop_assert_eq!(payload.as_str(), text.as_str());
    }

    #[test]
    fn other_data_is_sent_as_the_callers_exact_text(
        uid in uid_list_json(),
        data in raw_non_string(),
        data_first in any::<bool>(),
        s in ws(),
    ) {
        let body = push_body(&uid, &data, data_first, &s);
        let req: PushRequest = serde_json::from_slice(body.as_bytes())
            .unwrap_or_else(|e| panic!("{body:?} refused: {e}"));
        let payload = payload_from_data(&req.data).unwrap();
        prop_assert_eq!(payload.as_str(), data.as_str());
    }

    #[test]
    fn push_parsing_never_panics_on_arbitrary_bytes(
        bytes in prop::collection::vec(any::<u8>(), 0..300),
        prefix in prop::sample::select(vec!["", "{\"uid\":\"a\",\"data\":", "{\"data\":\""]),
    ) {
        let mut body = prefix.as_bytes().to_vec();
        body.extend_from_slice(&bytes);
        if let Ok(req) = serde_json::from_slice::<PushRequest>(&body) {
            let _ = payload_from_data(&req.data);
        }
    }
}
