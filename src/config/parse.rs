//! The parsers of option values that clap does not know: durations with a
//! ceiling, booleans in every usual spelling, and origins in their one
//! normal form.

use std::time::Duration;

use super::MAX_DURATION;

/// An origin in the one form it is compared in (RFC 6454 §4 and §6.2):
/// `scheme://host[:port]`, lower-case, without a trailing `/`, and without
/// the scheme's default port (`https://app.example:443` is
/// `https://app.example`). `None` for anything that is not an origin (no
/// scheme, a path, a query, user info, `*`, `null`).
pub fn normalize_origin(text: &str) -> Option<String> {
    let text = text.trim();
    let text = text.strip_suffix('/').unwrap_or(text).to_ascii_lowercase();
    let (scheme, rest) = text.split_once("://")?;
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !scheme_ok || rest.is_empty() || rest.contains(['/', '?', '#', '@', '*', ' ']) {
        return None;
    }
    let default_port = match scheme {
        "http" | "ws" => Some(":80"),
        "https" | "wss" => Some(":443"),
        _ => None,
    };
    let host = match default_port {
        Some(port) => rest.strip_suffix(port).unwrap_or(rest),
        None => rest,
    };
    if host.is_empty() || host.starts_with(':') {
        return None;
    }
    Some(format!("{scheme}://{host}"))
}

/// `--allowed-origins`' parser: each value must be an origin
/// ([`normalize_origin`]), kept in its normal form; `*` and values without a
/// scheme are refused at start rather than silently never matching.
pub fn parse_origin(text: &str) -> Result<String, String> {
    if text.trim() == "*" {
        return Err("'*' is not an origin: leave --allowed-origins unset to allow any".into());
    }
    normalize_origin(text).ok_or_else(|| {
        format!(
            "{text:?} is not an origin: expected scheme://host[:port], e.g. https://app.example"
        )
    })
}

/// The parser of every boolean option: `--flag` alone means true, and a value
/// (`--flag=false`, or the environment twin) may be spelled `1/0`,
/// `true/false`, `yes/no`, `on/off`, `y/n`, `t/f`, in any case — as
/// systemd, Compose and Kubernetes manifests write them. An empty variable
/// (`PUSHGATE_ACCESS_LOG=`, how a unit file or manifest often unsets one)
/// means false. Anything else is refused, naming the accepted spellings.
pub fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "" | "0" | "false" | "no" | "off" | "n" | "f" => Ok(false),
        "1" | "true" | "yes" | "on" | "y" | "t" => Ok(true),
        other => Err(format!(
            "{other:?} is not a boolean: use 1/0, true/false, yes/no or on/off (any case)"
        )),
    }
}

/// The longest `--history-ttl`: a single node keeps message times as
/// wrapping 32-bit milliseconds (4 bytes a message instead of 8), exact for
/// ages under 49.7 days; 30 days stays well inside that.
pub const MAX_HISTORY_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// `--history-ttl`: a [`parse_duration`] above zero and at most
/// [`MAX_HISTORY_TTL`], refused at start rather than expiring nothing.
pub fn parse_history_ttl(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    // Whole milliseconds: the stores count in them, so 999µs would be 0.
    if d < Duration::from_millis(1) || d > MAX_HISTORY_TTL {
        return Err(format!(
            "--history-ttl {s:?} is outside 1ms to 30d (history in memory keeps 32-bit millisecond times)"
        ));
    }
    Ok(d)
}

/// Parses `10s`, `500ms`, `2m` (humantime syntax); a bare number means seconds.
///
/// Errors: not a duration, or longer than [`MAX_DURATION`].
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let d = match s.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => {
            humantime::parse_duration(s).map_err(|e| format!("invalid duration {s:?}: {e}"))?
        }
    };
    if d > MAX_DURATION {
        return Err(format!(
            "duration {s:?} is longer than the longest allowed, 1000 years (365250d)"
        ));
    }
    Ok(d)
}
