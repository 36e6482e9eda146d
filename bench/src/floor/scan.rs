//! The floor relay's JSON: byte scans, not a parser. They find where a value
//! starts and ends (strings with their escapes, nested objects and arrays),
//! which is all the relay needs to pick the `uid` and `data` out of a body
//! and forward `data`'s bytes unchanged. They do not validate JSON: a body
//! pushgate would refuse may be relayed. A JSON string is decoded (with
//! `serde_json`) only when it holds a backslash.

use std::borrow::Cow;

/// Whitespace between JSON tokens.
fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// `s` without leading and trailing JSON whitespace.
pub fn trim(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|&b| !is_ws(b)).unwrap_or(s.len());
    let end = s.iter().rposition(|&b| !is_ws(b)).map_or(start, |i| i + 1);
    &s[start..end]
}

/// The first index at or after `i` that is not whitespace.
fn skip_ws(s: &[u8], mut i: usize) -> usize {
    while i < s.len() && is_ws(s[i]) {
        i += 1;
    }
    i
}

/// Length of the JSON string at the start of `s` (quotes included).
fn string_len(s: &[u8]) -> Option<usize> {
    if s.first() != Some(&b'"') {
        return None;
    }
    let mut i = 1;
    while i < s.len() {
        match s[i] {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

/// Length of the JSON value at the start of `s`.
fn value_len(s: &[u8]) -> Option<usize> {
    match *s.first()? {
        b'"' => string_len(s),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut i = 0;
            while i < s.len() {
                match s[i] {
                    b'"' => {
                        i += string_len(&s[i..])?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth = depth.checked_sub(1)?;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            None
        }
        _ => {
            let n = s
                .iter()
                .position(|&b| matches!(b, b',' | b'}' | b']') || is_ws(b))
                .unwrap_or(s.len());
            (n > 0).then_some(n)
        }
    }
}

/// Calls `each(key, value)` for every member of the object `v` (key: the
/// raw text between its quotes) or every element of the array `v` (key:
/// empty), in order. `None` when `v` is neither or is cut short.
pub fn walk<'a>(v: &'a [u8], mut each: impl FnMut(&'a [u8], &'a [u8])) -> Option<()> {
    let (object, close) = match v.first()? {
        b'{' => (true, b'}'),
        b'[' => (false, b']'),
        _ => return None,
    };
    let mut i = skip_ws(v, 1);
    if v.get(i) == Some(&close) {
        return Some(());
    }
    loop {
        let mut key: &[u8] = &[];
        if object {
            let end = i + string_len(v.get(i..)?)?;
            key = &v[i + 1..end - 1];
            i = skip_ws(v, end);
            if v.get(i) != Some(&b':') {
                return None;
            }
            i = skip_ws(v, i + 1);
        }
        let end = i + value_len(v.get(i..)?)?;
        each(key, &v[i..end]);
        i = skip_ws(v, end);
        match *v.get(i)? {
            b',' => i = skip_ws(v, i + 1),
            c if c == close => return Some(()),
            _ => return None,
        }
    }
}

/// The text of a JSON string token (quotes included): its content, decoded
/// only when it holds an escape.
pub fn string_text(raw: &[u8]) -> Option<Cow<'_, [u8]>> {
    let inner = raw.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
    if !inner.contains(&b'\\') {
        return Some(Cow::Borrowed(inner));
    }
    let s: String = serde_json::from_slice(raw).ok()?;
    Some(Cow::Owned(s.into_bytes()))
}

/// What pushgate delivers for a REST `data` value (`payload_from_data`): a
/// JSON string's text, any other value's own JSON text unchanged.
pub fn payload(raw: &[u8]) -> Option<Cow<'_, [u8]>> {
    if raw.first() == Some(&b'"') {
        string_text(raw)
    } else {
        (!raw.is_empty()).then_some(Cow::Borrowed(raw))
    }
}

/// The uid a JSON uid value names: a string's text, or an integer's digits
/// (as pushgate matches a number uid with its decimal text).
pub fn uid(raw: &[u8]) -> Option<Cow<'_, [u8]>> {
    match raw.first()? {
        b'"' => string_text(raw).filter(|u| !u.is_empty()),
        b'-' | b'0'..=b'9' => {
            let digits = raw.strip_prefix(b"-").unwrap_or(raw);
            (!digits.is_empty() && digits.iter().all(u8::is_ascii_digit))
                .then_some(Cow::Borrowed(raw))
        }
        _ => None,
    }
}

/// The uid of a text-port line, found by a byte scan for its `"uid":` key
/// (the first occurrence, wherever it is: the scan does not parse the line).
pub fn line_uid(line: &[u8]) -> Option<Cow<'_, [u8]>> {
    const KEY: &[u8] = b"\"uid\":";
    let at = line.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let rest = &line[skip_ws(line, at)..];
    uid(&rest[..value_len(rest)?])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(v: &[u8]) -> Option<Vec<(String, String)>> {
        let mut out = Vec::new();
        walk(v, |k, v| {
            out.push((
                String::from_utf8_lossy(k).into_owned(),
                String::from_utf8_lossy(v).into_owned(),
            ))
        })?;
        Some(out)
    }

    #[test]
    fn walks_objects_and_arrays() {
        let m = members(br#"{ "uid" : "u1", "data":{"s":1,"t":[2,"]}"]} }"#).unwrap();
        assert_eq!(
            m,
            vec![
                ("uid".into(), r#""u1""#.into()),
                ("data".into(), r#"{"s":1,"t":[2,"]}"]}"#.into())
            ]
        );
        let m = members(br#"[1, "a\"b", {"x":[]}, null]"#).unwrap();
        let values: Vec<&str> = m.iter().map(|(_, v)| v.as_str()).collect();
        assert_eq!(values, vec!["1", r#""a\"b""#, r#"{"x":[]}"#, "null"]);
        assert_eq!(members(b"{}").unwrap(), vec![]);
        assert_eq!(members(b"[ ]").unwrap(), vec![]);
        for bad in [
            &b""[..],
            b"{",
            b"{\"a\":1",
            b"{\"a\" 1}",
            b"[1 2]",
            b"{\"a\":\"x}",
            b"1",
        ] {
            assert!(members(bad).is_none(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn payloads_and_uids() {
        assert_eq!(
            &*payload(br#"{"z":1,"a":1.50}"#).unwrap(),
            br#"{"z":1,"a":1.50}"#
        );
        assert_eq!(&*payload(br#""hi""#).unwrap(), b"hi");
        assert_eq!(&*payload(br#""hi \"you\"""#).unwrap(), br#"hi "you""#);
        assert_eq!(&*uid(br#""u1""#).unwrap(), b"u1");
        assert_eq!(&*uid(b"42").unwrap(), b"42");
        assert!(uid(br#""""#).is_none());
        assert!(uid(b"4x").is_none());
        assert!(uid(b"null").is_none());
        assert_eq!(
            &*line_uid(br#"{"uid":"t1-7","s":3,"t":9}"#).unwrap(),
            b"t1-7"
        );
        assert_eq!(&*line_uid(br#"{"s":3,"uid": 42}"#).unwrap(), b"42");
        assert!(line_uid(br#"{"s":3}"#).is_none());
        assert!(line_uid(br#"{"uid":"open"#).is_none());
        assert_eq!(trim(b" \r\n{}\n"), b"{}");
        assert_eq!(trim(b"  "), b"");
    }
}
