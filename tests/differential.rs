//! Differential test of the text port against the seed: push lines go through
//! push.php's own routing steps, run by the real `php` (`tests/php/route.php`:
//! Workerman's `Text::input` and `rtrim($buffer, "\r\n")`, then
//! `json_decode($buffer, true)['uid']` as a PHP array key), and through
//! pushgate, which must answer the same `ok`/`fail`, reach the same browser and
//! deliver the same bytes. The only exceptions are the classes README's
//! "Differences from push.php" table lists on purpose, named one for one by
//! [`deliberate_difference`]; for those pushgate must answer `fail`.
//!
//! The property run goes through `LineCodec` and `parse_text_line` in process
//! (one php process per generated batch); the issue's examples and a fixed
//! sample of generated lines go through the real gateway, its text port and
//! WebSocket clients bound with the same frames.
//!
//! Needs `php`, which `scripts/install-test-deps.sh` installs when missing.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;

use bytes::BytesMut;
use common::*;
use futures_util::SinkExt;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use pushgate::model::{Uid, parse_text_line};
use pushgate::text::LineCodec;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::codec::Decoder;

// ------------------------------------------------------------------ the seed

/// How the seed handled one line.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seed {
    /// `isset` found a browser: the frame it bound with, the bytes it was sent.
    Ok {
        kind: String,
        frame: Vec<u8>,
        sent: Vec<u8>,
    },
    /// `fail`.
    Fail { kind: String },
    /// `onMessage` threw; Workerman logged it and exited the worker process,
    /// dropping every browser.
    Threw { class: String },
}

impl Seed {
    /// PHP's type of `$uid` (`string`, `integer`, `double-exact`, ...).
    fn kind(&self) -> Option<&str> {
        match self {
            Seed::Ok { kind, .. } | Seed::Fail { kind } => Some(kind),
            Seed::Threw { .. } => None,
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex from route.php"))
        .collect()
}

/// Runs push.php's routing in one `php` process: browsers bound with
/// `frames`, then each of `streams` written to the text port. Returns the
/// seed's outcome for every line of every stream.
fn seed(frames: &[Vec<u8>], streams: &[Vec<u8>]) -> Vec<Vec<Seed>> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/php/route.php");
    let mut child = Command::new("php")
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn php (is php-cli installed? run scripts/install-test-deps.sh)");
    let mut input = String::new();
    for frame in frames {
        input.push_str(&format!("B {}\n", hex(frame)));
    }
    for stream in streams {
        input.push_str(&format!("S {}\n", hex(stream)));
    }
    let mut stdin = child.stdin.take().expect("piped stdin");
    // Written from a thread while the answers are read, so neither pipe can
    // fill up and stall the other side.
    std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let (done, finished) = mpsc::channel();
    std::thread::spawn(move || done.send(child.wait_with_output()));
    let output = finished
        .recv_timeout(PATIENCE)
        .unwrap_or_else(|_| panic!("php route.php did not finish within {PATIENCE:?}"))
        .expect("wait for php");
    let stdout = String::from_utf8(output.stdout).expect("ascii answers");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "php route.php: {}; stderr {stderr}",
        output.status
    );

    let mut out = vec![Vec::new()];
    for answer in stdout.lines() {
        let words: Vec<&str> = answer.split(' ').collect();
        let line = match words[..] {
            ["end"] => {
                out.push(Vec::new());
                continue;
            }
            ["ok", kind, frame, sent] => Seed::Ok {
                kind: kind.to_owned(),
                frame: unhex(frame),
                sent: unhex(sent),
            },
            ["fail", kind] => Seed::Fail {
                kind: kind.to_owned(),
            },
            ["throw", class] => Seed::Threw {
                class: class.to_owned(),
            },
            _ => panic!("route.php answered {answer:?}; stderr {stderr}"),
        };
        out.last_mut().expect("a stream").push(line);
    }
    assert_eq!(out.pop(), Some(vec![]), "route.php ends every stream");
    assert_eq!(out.len(), streams.len(), "one answer list per stream");
    out
}

// ------------------------------------------------- deliberate differences

/// A class of line pushgate answers differently from push.php on purpose.
/// Each is a row of README's "Differences from push.php"; pushgate answers
/// `fail` to all of them and delivers nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Difference {
    /// The seed reached a browser bound with a frame pushgate refuses to bind
    /// (row "A uid is 1 to 256 bytes"): empty — the key PHP made of a missing
    /// or `null` uid, invalid JSON and lines that are not UTF-8 — or longer
    /// than 256 bytes.
    UnbindableUid,
    /// `uid` is `true` or `false` (row "A boolean uid").
    BooleanUid,
    /// `uid` is a float PHP turned into another integer: a fraction, an
    /// integer beyond 64 bits, or a float of magnitude 2^53 or more (row "A
    /// number uid that is not an exact integer").
    InexactNumberUid,
    /// The seed's worker threw and exited: `uid` an array or object, or the
    /// line a JSON string (row "A uid that is an array or object").
    SeedThrew,
}

/// Which deliberate difference, if any, the seed's handling of a line falls in.
fn deliberate_difference(seed: &Seed) -> Option<Difference> {
    match (seed, seed.kind()) {
        (Seed::Threw { .. }, _) => Some(Difference::SeedThrew),
        (_, Some("boolean")) => Some(Difference::BooleanUid),
        (_, Some("double-inexact")) => Some(Difference::InexactNumberUid),
        (Seed::Ok { frame, .. }, _) if !bindable(frame) => Some(Difference::UnbindableUid),
        _ => None,
    }
}

/// Whether pushgate binds a browser that sent `frame` first.
fn bindable(frame: &[u8]) -> bool {
    std::str::from_utf8(frame).is_ok_and(|s| Uid::new(s).is_ok())
}

// ---------------------------------------------------------------- pushgate

/// How pushgate handled one line: the frame of the browser it reached and
/// the bytes it sent, or `fail`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Fate {
    Ok { frame: Vec<u8>, sent: Vec<u8> },
    Fail,
}

/// What pushgate must do with a line the seed handled as `seed`.
fn expected(seed: &Seed) -> Fate {
    match seed {
        _ if deliberate_difference(seed).is_some() => Fate::Fail,
        Seed::Ok { frame, sent, .. } => Fate::Ok {
            frame: frame.clone(),
            sent: sent.clone(),
        },
        Seed::Fail { .. } | Seed::Threw { .. } => Fate::Fail,
    }
}

/// pushgate's text port in process: `LineCodec` cuts `stream`, and every
/// line is routed by `parse_text_line` to the browser whose bind frame is
/// the uid's text.
fn pushgate(frames: &[Vec<u8>], stream: &[u8]) -> Vec<Fate> {
    let mut codec = LineCodec::new(1 << 20);
    let mut buf = BytesMut::from(stream);
    let mut out = Vec::new();
    while let Some(line) = codec.decode_eof(&mut buf).expect("no line over 1 MiB") {
        out.push(match parse_text_line(line) {
            Ok((uid, payload)) => frames
                .iter()
                .find(|f| bindable(f) && f.as_slice() == uid.as_str().as_bytes())
                .map_or(Fate::Fail, |frame| Fate::Ok {
                    frame: frame.clone(),
                    sent: payload.as_str().as_bytes().to_vec(),
                }),
            Err(_) => Fate::Fail,
        });
    }
    out
}

/// Asserts that pushgate handles every line of `stream` as `expected` says of
/// the seed's outcome for it, with browsers bound by `frames`.
fn assert_same_as_seed(frames: &[Vec<u8>], stream: &[u8], seed: &[Seed]) {
    let ours = pushgate(frames, stream);
    let lines: Vec<&[u8]> = stream.split_inclusive(|&b| b == b'\n').collect();
    assert_eq!(ours.len(), seed.len(), "line count of {stream:?}");
    for (i, (ours, seed)) in ours.iter().zip(seed).enumerate() {
        assert_eq!(
            ours,
            &expected(seed),
            "line {:?}: the seed did {seed:?} ({:?})",
            String::from_utf8_lossy(lines[i]),
            deliberate_difference(seed),
        );
    }
}

// -------------------------------------------------------------- generators

/// Frames browsers bind with: plain, numeric as PHP keys them or not, non-ASCII,
/// and the two pushgate refuses (empty, over 256 bytes).
fn frame_pool() -> Vec<Vec<u8>> {
    let mut pool: Vec<Vec<u8>> = [
        "a",
        "b",
        "uid1",
        "0",
        "1",
        "5",
        "42",
        "100",
        "042",
        " 42",
        "-0",
        "-7",
        "1.5",
        "true",
        "9223372036854775807",
        "-9223372036854775808",
        "é",
        "😀",
        "\0",
        "",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    pool.push(vec![b'x'; 257]);
    pool
}

/// A string as JSON text, as serde_json writes it or with every character
/// as a `\u` escape.
fn json_string(s: &str, all_escaped: bool) -> String {
    if !all_escaped {
        return serde_json::to_string(s).expect("a string encodes");
    }
    let units: String = s.encode_utf16().map(|u| format!("\\u{u:04x}")).collect();
    format!("\"{units}\"")
}

/// A `uid` value as JSON text: strings (from the frame pool and arbitrary),
/// integers and floats around every boundary PHP has, literals, containers.
fn uid_value() -> impl Strategy<Value = String> {
    let pool: Vec<String> = frame_pool()
        .into_iter()
        .map(|f| String::from_utf8(f).expect("utf-8 pool"))
        .collect();
    prop_oneof![
        4 => (prop::sample::select(pool), any::<bool>()).prop_map(|(s, esc)| json_string(&s, esc)),
        1 => (".{0,6}", any::<bool>()).prop_map(|(s, esc)| json_string(&s, esc)),
        3 => prop::sample::select(vec![
            "0", "-0", "1", "5", "42", "-7", "100", "9223372036854775807",
            "9223372036854775808", "-9223372036854775808", "-9223372036854775809",
            "18446744073709551615", "18446744073709551616",
        ]).prop_map(String::from),
        1 => any::<i64>().prop_map(|n| n.to_string()),
        3 => prop::sample::select(vec![
            "1.0", "1.5", "1e2", "1E2", "1e+2", "10000e-2", "-0.0", "-0e0", "0.5e1",
            "42.0", "42.9", "-7.5", "1e400", "-1e400", "5.0000000000000001",
            "9007199254740991.0", "9007199254740992.0", "9007199254740993.0",
            "9.2233720368547758e18", "-9.2233720368547758e18", "1e19", "0.0000001e7",
        ]).prop_map(String::from),
        1 => r"-?(0|[1-9][0-9]{0,20})(\.[0-9]{1,6})?([eE][+-]?[0-9]{1,3})?",
        2 => prop::sample::select(vec![
            "true", "false", "null", "[]", "[\"a\"]", "{}", "{\"uid\":\"a\"}",
        ]).prop_map(String::from),
    ]
}

/// A value of another member: ordinary JSON, surrogate escapes (paired,
/// lone, reversed) and arrays nested around PHP's depth limit.
fn other_value() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec![
            "\"88%\"", "1", "-2.5e3", "true", "null", "[1,{\"a\":[]}]", "{\"uid\":\"b\"}",
            "\"a\\/b\\n\"", "\"\\u00e9\"", "12345678901234567890123",
        ]).prop_map(String::from),
        2 => prop::sample::select(vec![
            "\"\\ud83d\\ude00\"", "\"\\ud800\"", "\"\\udc00\"", "\"x\\ud83d\"",
            "\"\\ude00\\ud83d\"", "\"\\ud83d\\u0041\"", "\"\\uD83D\\uDE00\"", "\"\\ud83d\\\\\"",
        ]).prop_map(String::from),
        1 => (508usize..=512).prop_map(|n| format!("{}{}", "[".repeat(n), "]".repeat(n))),
    ]
}

/// Whitespace JSON allows, and a `\r` (trailing ones are line end for the
/// seed).
fn blank() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["", "", " ", "\t", " \r", "\r", "\r\n"]).prop_map(String::from)
}

/// A JSON object: several `uid` members (duplicates), `uid` spelled with an
/// escape, other members, blanks between tokens.
fn object() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        6 => Just("\"uid\"".to_owned()),
        1 => Just("\"\\u0075id\"".to_owned()),
        1 => Just("\"Uid\"".to_owned()),
        3 => (".{0,4}", any::<bool>()).prop_map(|(k, esc)| json_string(&k, esc)),
    ];
    let member = key.prop_flat_map(|k| {
        let value = if k.contains("id") {
            uid_value().boxed()
        } else {
            other_value().boxed()
        };
        (Just(k), value, blank())
    });
    (prop::collection::vec(member, 0..4), blank()).prop_map(|(members, s)| {
        let body: Vec<String> = members
            .into_iter()
            .map(|(k, v, b)| format!("{b}{k}{b}:{b}{v}{b}"))
            .collect();
        format!("{{{s}{}{s}}}", body.join(","))
    })
}

/// One line as a backend could write it, line end included.
fn push_line() -> impl Strategy<Value = Vec<u8>> {
    let broken = (object(), 0usize..6, any::<u8>()).prop_map(|(o, how, byte)| {
        let mut b = o.into_bytes();
        match how {
            0 => b.extend_from_slice(b" x"),
            1 => {
                b.pop();
            }
            2 => {
                b.pop();
                b.extend_from_slice(b",}");
            }
            3 => b.insert(b.len() / 2, byte),
            4 => b.insert(0, b'\''),
            _ => b.splice(0..0, *b"\xef\xbb\xbf").for_each(drop),
        }
        b
    });
    let body = prop_oneof![
        8 => object().prop_map(String::into_bytes),
        1 => prop::sample::select(vec![
            "\"a\"", "\"uid\"", "\"\"", "\"42\"", "[1]", "[{\"uid\":\"a\"}]", "5", "true",
            "null", "[]", "",
        ]).prop_map(|s| s.as_bytes().to_vec()),
        2 => broken,
        1 => prop::collection::vec(any::<u8>(), 0..16),
    ];
    let end = prop::sample::select(vec!["\n", "\r\n", "\r\r\n", "\r\r\r\n", "\n\r\n"]);
    (blank(), body, blank(), end).prop_map(|(before, body, after, end)| {
        let mut line = before.into_bytes();
        line.extend(body);
        line.extend_from_slice(after.as_bytes());
        line.extend_from_slice(end.as_bytes());
        line
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn generated_lines_are_answered_and_delivered_as_the_seed_does(
        frames in prop::sample::subsequence(frame_pool(), 8..=21),
        lines in prop::collection::vec(push_line(), 1..64),
    ) {
        let stream = lines.concat();
        let seed = seed(&frames, std::slice::from_ref(&stream));
        assert_same_as_seed(&frames, &stream, &seed[0]);
    }
}

// ------------------------------------------------------------ named lines

/// A line of every kind the issue and its notes name, so each is compared
/// with the seed whatever the generator draws; the first three are the
/// issue's examples.
fn named_lines() -> Vec<&'static str> {
    vec![
        // The issue's three examples.
        "{\"uid\":\"a\",\"uid\":\"b\"}\n",
        "{\"uid\":-0}\n",
        "{\"uid\":\"b\"}\r\r\n",
        // Duplicates whose earlier value is unusable.
        "{\"uid\":[1],\"uid\":\"a\"}\n",
        "{\"uid\":\"a\",\"uid\":null}\n",
        "{\"\\u0075id\":\"a\"}\n",
        // Integers, as PHP keys them.
        "{\"uid\":0}\n",
        "{\"uid\":42}\n",
        "{\"uid\":\"42\"}\n",
        "{\"uid\":\"042\"}\n",
        "{\"uid\":\" 42\"}\n",
        "{\"uid\":\"-0\"}\n",
        "{\"uid\":9223372036854775807}\n",
        "{\"uid\":-9223372036854775808}\n",
        "{\"uid\":9223372036854775808}\n",
        "{\"uid\":-9223372036854775809}\n",
        // Floats.
        "{\"uid\":1.0}\n",
        "{\"uid\":1e2}\n",
        "{\"uid\":-0.0}\n",
        "{\"uid\":1.5}\n",
        "{\"uid\":42.9}\n",
        "{\"uid\":1e400}\n",
        "{\"uid\":9007199254740993.0}\n",
        // Literals and containers.
        "{\"uid\":true}\n",
        "{\"uid\":false}\n",
        "{\"uid\":null}\n",
        "{\"uid\":[\"a\"]}\n",
        "{\"uid\":{}}\n",
        // Strings: escapes, non-ASCII, NUL, too long.
        "{\"uid\":\"\\u00e9\"}\n",
        "{\"uid\":\"\\ud83d\\ude00\"}\n",
        "{\"uid\":\"\\u0000\"}\n",
        "{\"uid\":\"\"}\n",
        // JSON that is not an object, and not JSON.
        "\"a\"\n",
        "[1]\n",
        "5\n",
        "\n",
        "\r\r\n",
        "x\n",
        "{\"uid\":\"a\"} x\n",
        "{\"uid\":\"a\",}\n",
        // What PHP's json_decode refuses and serde_json skips unchecked.
        "{\"uid\":\"a\",\"x\":\"\\ud800\"}\n",
        "{\"uid\":\"a\",\"x\":\"\\ud83d\\u0041\"}\n",
        // Blanks and line ends.
        " \t{\"uid\":\"a\"}\t \r\n",
        "{\"uid\":\"a\"}\r \r\n",
        "{\"uid\":\r\"a\"}\n",
    ]
}

/// Bytes that are not text, and nesting around PHP's limit.
fn named_byte_lines() -> Vec<Vec<u8>> {
    let deep = |n: usize| {
        format!(
            "{{\"uid\":\"a\",\"x\":{}{}}}\n",
            "[".repeat(n - 1),
            "]".repeat(n - 1)
        )
        .into_bytes()
    };
    vec![
        b"{\"uid\":\"\xff\"}\n".to_vec(),
        b"{\"uid\":\"a\",\"x\":\"\xed\xa0\x80\"}\n".to_vec(),
        deep(511),
        deep(512),
    ]
}

#[test]
fn every_kind_of_line_the_issue_names_is_answered_as_the_seed_does() {
    let frames = frame_pool();
    let mut lines: Vec<Vec<u8>> = named_lines()
        .into_iter()
        .map(|l| l.as_bytes().to_vec())
        .collect();
    lines.extend(named_byte_lines());
    let seeds = seed(&frames, &lines);
    let mut seen: BTreeMap<Difference, usize> = BTreeMap::new();
    for (line, seed) in lines.iter().zip(&seeds) {
        assert_eq!(seed.len(), 1, "{line:?} is one packet");
        assert_same_as_seed(&frames, line, seed);
        if let Some(d) = deliberate_difference(&seed[0]) {
            *seen.entry(d).or_default() += 1;
        }
    }
    // Every deliberate difference is exercised here, so none is a dead rule.
    assert_eq!(
        seen.keys().copied().collect::<Vec<_>>(),
        vec![
            Difference::UnbindableUid,
            Difference::BooleanUid,
            Difference::InexactNumberUid,
            Difference::SeedThrew
        ],
        "{seen:?}"
    );
}

// -------------------------------------------------- through the real gateway

/// Binds one WebSocket client per bindable frame of `frames` and waits until
/// the gateway has bound them all.
async fn bind_all(gw: &Gateway, frames: &[Vec<u8>]) -> Vec<(Vec<u8>, Ws)> {
    let mut clients = Vec::new();
    for frame in frames.iter().filter(|f| bindable(f)) {
        let mut ws = ws_connect(&gw.ws_url("/ws")).await;
        let text = String::from_utf8(frame.clone()).expect("bindable frames are text");
        ws.send(Message::text(text))
            .await
            .expect("send the bind frame");
        clients.push((frame.clone(), ws));
    }
    let n = clients.len() as u64;
    wait_until("every client bound", || async {
        let stats = gw.stats().await;
        (stats["bound_connections"].as_u64() == Some(n))
            .then_some(())
            .ok_or(stats)
    })
    .await;
    clients
}

/// Writes `lines` to the real gateway's text port in one go, checks every
/// answer and every browser's messages against the seed, then that nothing
/// else arrived (a marker pushed to each browser is its next message).
async fn assert_gateway_same_as_seed(lines: &[Vec<u8>]) {
    let gw = Gateway::start(&[]);
    let frames = frame_pool();
    let mut clients = bind_all(&gw, &frames).await;
    let stream = lines.concat();
    let seeds = {
        let frames = frames.clone();
        let stream = stream.clone();
        tokio::task::spawn_blocking(move || seed(&frames, &[stream]))
            .await
            .expect("php thread")
            .remove(0)
    };
    let fates: Vec<Fate> = seeds.iter().map(expected).collect();

    let mut text = TextClient::connect(&gw).await;
    text.write(&stream).await;
    let packets: Vec<&[u8]> = stream.split_inclusive(|&b| b == b'\n').collect();
    for (i, fate) in fates.iter().enumerate() {
        let want = if matches!(fate, Fate::Ok { .. }) {
            "ok"
        } else {
            "fail"
        };
        assert_eq!(
            text.answer().await,
            want,
            "line {:?}: the seed did {:?}",
            String::from_utf8_lossy(packets[i]),
            seeds[i]
        );
    }
    for (frame, ws) in &mut clients {
        for fate in &fates {
            if let Fate::Ok { frame: to, sent } = fate
                && to == frame
            {
                assert_eq!(next_text(ws).await.as_bytes(), &sent[..], "to {frame:?}");
            }
        }
        let uid = String::from_utf8(frame.clone()).expect("text");
        let marker = serde_json::json!({ "uid": uid, "marker": true }).to_string();
        assert_eq!(text.send(&marker).await, "ok");
        assert_eq!(
            next_text(ws).await,
            marker,
            "{uid:?} got something else first"
        );
    }
}

#[tokio::test]
async fn the_issues_three_lines_reach_the_browser_the_seed_reached_through_the_gateway() {
    let gw = Gateway::start(&[]);
    let mut b = ws_bind(&gw, "b").await;
    let mut zero = ws_bind(&gw, "0").await;
    let mut a = ws_bind(&gw, "a").await;
    let mut text = TextClient::connect(&gw).await;

    // Duplicate keys: the last wins, the line is delivered unchanged.
    assert_eq!(text.send(r#"{"uid":"a","uid":"b"}"#).await, "ok");
    assert_eq!(next_text(&mut b).await, r#"{"uid":"a","uid":"b"}"#);
    // -0 is PHP's integer 0.
    assert_eq!(text.send(r#"{"uid":-0}"#).await, "ok");
    assert_eq!(next_text(&mut zero).await, r#"{"uid":-0}"#);
    // Every trailing CR goes before routing and delivery.
    text.write(b"{\"uid\":\"b\"}\r\r\n").await;
    assert_eq!(text.answer().await, "ok");
    assert_eq!(next_text(&mut b).await, r#"{"uid":"b"}"#);

    assert_nothing_else(&gw, &mut a, "a").await;
    assert_nothing_else(&gw, &mut b, "b").await;
    assert_nothing_else(&gw, &mut zero, "0").await;

    // That is what the seed did.
    let lines: Vec<Vec<u8>> = named_lines()[..3]
        .iter()
        .map(|l| l.as_bytes().to_vec())
        .collect();
    let frames = vec![b"b".to_vec(), b"0".to_vec(), b"a".to_vec()];
    let seeds = tokio::task::spawn_blocking(move || seed(&frames, &lines))
        .await
        .expect("php thread");
    let reached: Vec<(&[u8], &[u8])> = seeds
        .iter()
        .map(|s| match &s[..] {
            [Seed::Ok { frame, sent, .. }] => (&frame[..], &sent[..]),
            other => panic!("the seed did {other:?}"),
        })
        .collect();
    assert_eq!(
        reached,
        [
            (&b"b"[..], &br#"{"uid":"a","uid":"b"}"#[..]),
            (b"0", br#"{"uid":-0}"#),
            (b"b", br#"{"uid":"b"}"#),
        ]
    );
}

#[tokio::test]
async fn named_and_generated_lines_are_answered_and_delivered_as_the_seed_does_through_the_gateway()
{
    let mut lines: Vec<Vec<u8>> = named_lines()
        .into_iter()
        .map(|l| l.as_bytes().to_vec())
        .collect();
    lines.extend(named_byte_lines());
    // A fixed sample of generated lines (the deterministic runner's seed).
    let mut runner = TestRunner::deterministic();
    let sample = prop::collection::vec(push_line(), 96)
        .new_tree(&mut runner)
        .expect("a sample")
        .current();
    lines.extend(sample);
    assert_gateway_same_as_seed(&lines).await;
}
