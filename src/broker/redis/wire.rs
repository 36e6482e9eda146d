//! Channel names and message framing on the Redis bus, format version 2.
//!
//! # Channel names
//!
//! Every channel is `{prefix}v2:` followed by a tag: `u:{uid}` (the nodes
//! holding a uid), `b` (broadcast, every node), `n:{node id}` (a node's
//! probe channel). Every key is `{prefix}v1:` followed by a tag: `stats:{node
//! id}` and `nodes` (the `/stats` reports), and a uid's history `h:{<uid>}:m`
//! (its meta hash: epoch and offset) and `h:{<uid>}:s` (its stream). The two
//! versions move apart: the channel version is the message format's
//! ([`VERSION`]), the key version ([`KEYS_VERSION`]) changes only when a
//! key's layout does (nodes of bus formats 1 and 2 still count each other in
//! `/stats`, whose reports did not change). Within one
//! deployment the tag decides the kind and the rest of the name, whatever it
//! holds, is the uid or node id, so no two names collide whatever a uid
//! contains (the two history suffixes have one length and differ in their
//! last byte, so no uid's meta name is another uid's stream name).
//!
//! The braces of the history keys are a Redis Cluster hash tag: both keys of
//! one uid hash to one slot, which a script touching both requires. The tag
//! is the text between the first `{` and the next `}`; the prefix holds no
//! brace, and both names are identical up to the uid's end, so whatever the
//! uid contains (braces included) its two keys share their tag.
//!
//! Across deployments sharing one Redis the prefix must keep them apart: a
//! prefix is 1 to [`MAX_PREFIX_BYTES`] letters, digits, `.`, `_` or `-`
//! followed by exactly one `:` ([`check_prefix`]). No valid prefix can then
//! start another (the first `:` ends it), so `pg:` and `pg:u:b:` — whose
//! channels used to overlap (`pg:u:b:u:victim` was both `pg:`'s channel of
//! uid `b:u:victim` and `pg:u:b:`'s channel of `victim`) — cannot both exist.
//!
//! # Messages
//!
//! `[version][kind][origin length][origin node id][nonce: 8 bytes, big
//! endian][flags][position line, if flagged][payload]`. The version
//! ([`VERSION`], also in every channel name) lets a node ignore, and count,
//! messages of a format it does not know. The origin and the per-process
//! nonce let a node tell its own publications and notice another process
//! using its node id.
//!
//! Flags: [`SKIP_ORIGIN`] — the origin delivered this message locally
//! already and skips its own copy; without it the origin delivers the copy
//! its own subscription brings back, which is what keeps every push to a
//! uid in Redis's publish order on every node (see the module docs of
//! `super`). [`POSITIONED`] — a line `<offset> <epoch>\n` (decimal offset,
//! 16 hex digits of epoch) follows: the push's place in the uid's history,
//! written by the script that stored it (Lua appends text more simply than
//! it packs 64-bit integers).
//!
//! Version 1 had neither flags nor position, and every node skipped all of
//! its own messages. Version 2 changed the channel names too, so nodes of
//! the two formats share no channel: during a rolling upgrade across the
//! change, a push between an old and a new node answers `fail` (Redis counts
//! no receiver) instead of a false `ok` for a message the other would drop.

use bytes::Bytes;

use crate::model::{Epoch, Position, Uid};

/// The bus format this build speaks: the first byte of every message and the
/// `v2:` after the prefix in every channel name, so nodes of another format
/// never even see these messages.
pub const VERSION: u8 = 2;

/// The layout of the keys (`/stats` reports, history): the `v1:` after the
/// prefix in every key name.
pub const KEYS_VERSION: u8 = 1;

/// Flag: the origin delivered the message locally and skips its own copy.
pub const SKIP_ORIGIN: u8 = 1;

/// Flag: a position line (`<offset> <epoch>\n`) precedes the payload.
pub const POSITIONED: u8 = 2;

/// Longest node id, in bytes (it travels in one length byte).
pub const MAX_NODE_ID_BYTES: usize = 128;

/// Longest `--redis-prefix`, in bytes.
pub const MAX_PREFIX_BYTES: usize = 64;

/// Why a node id or prefix was refused at start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// An empty node id (often an unset variable: `--node-id "$POD_NAME"`).
    #[error("--node-id is empty (is the variable it comes from set?)")]
    EmptyNodeId,
    /// A node id longer than [`MAX_NODE_ID_BYTES`].
    #[error("--node-id is {0} bytes long; at most {MAX_NODE_ID_BYTES} are allowed")]
    NodeIdTooLong(usize),
    /// A node id with a character outside `[A-Za-z0-9._:-]`.
    #[error("--node-id {0:?} may contain only letters, digits, '.', '_', ':' and '-'")]
    NodeIdCharacters(String),
    /// A prefix that another deployment's prefix could start or be started by.
    #[error(
        "--redis-prefix {0:?} must be 1 to {MAX_PREFIX_BYTES} letters, digits, '.', '_' or '-' \
         followed by one ':' and no other ':' (e.g. \"pushgate:\"), so that no deployment's \
         prefix starts another's"
    )]
    Prefix(String),
}

/// Checks a node id: 1 to [`MAX_NODE_ID_BYTES`] bytes of `[A-Za-z0-9._:-]`.
pub fn check_node_id(id: &str) -> Result<(), NameError> {
    if id.is_empty() {
        return Err(NameError::EmptyNodeId);
    }
    if id.len() > MAX_NODE_ID_BYTES {
        return Err(NameError::NodeIdTooLong(id.len()));
    }
    if !id.bytes().all(|b| name_byte(b) || b == b':') {
        return Err(NameError::NodeIdCharacters(id.to_owned()));
    }
    Ok(())
}

/// Checks a prefix: `[A-Za-z0-9._-]{1,63}:` — the only `:` is the last byte,
/// which makes the set of valid prefixes prefix-free (see the module docs).
pub fn check_prefix(prefix: &str) -> Result<(), NameError> {
    let ok = prefix.len() <= MAX_PREFIX_BYTES
        && prefix
            .strip_suffix(':')
            .is_some_and(|name| !name.is_empty() && name.bytes().all(name_byte));
    if ok {
        Ok(())
    } else {
        Err(NameError::Prefix(prefix.to_owned()))
    }
}

fn name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')
}

/// What a bus message asks of the nodes holding its uid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Deliver the payload.
    Push,
    /// Close every connection of the uid. Its wire byte stays `K` (from
    /// when this was called a kick), so nodes of every version agree.
    Disconnect,
    /// A node's probe of its own subscription.
    Probe,
}

impl Kind {
    fn byte(self) -> u8 {
        match self {
            Kind::Push => b'M',
            Kind::Disconnect => b'K',
            Kind::Probe => b'P',
        }
    }
}

/// Channel and key names for one deployment (see the module docs).
#[derive(Debug, Clone)]
pub struct Channels {
    /// `{prefix}v2:`: channels.
    base: String,
    /// `{prefix}v1:`: keys.
    keys: String,
}

/// One of a uid's two history keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryKey {
    /// The meta hash ([`Channels::history_meta`]).
    Meta,
    /// The stream ([`Channels::history_stream`]).
    Stream,
}

/// What a received channel name stands for.
#[derive(Debug, PartialEq, Eq)]
pub enum Target {
    /// A uid's channel.
    Uid(Uid),
    /// The broadcast channel.
    Broadcast,
    /// A node's own probe channel.
    Node,
    /// Not ours.
    Unknown,
}

impl Channels {
    /// Names under `prefix` (checked at start by [`check_prefix`]).
    pub fn new(prefix: &str) -> Channels {
        Channels {
            base: format!("{prefix}v{VERSION}:"),
            keys: format!("{prefix}v{KEYS_VERSION}:"),
        }
    }

    /// The channel nodes holding `uid` subscribe to.
    pub fn uid(&self, uid: &Uid) -> String {
        let mut out = String::new();
        self.uid_into(uid, &mut out);
        out
    }

    /// [`Channels::uid`] written over `out`, so a batch reuses one buffer.
    pub fn uid_into(&self, uid: &Uid, out: &mut String) {
        out.clear();
        out.push_str(&self.base);
        out.push_str("u:");
        out.push_str(uid.as_str());
    }

    /// The channel every node subscribes to.
    pub fn broadcast(&self) -> String {
        format!("{}b", self.base)
    }

    /// A node's probe channel.
    pub fn node(&self, node_id: &str) -> String {
        format!("{}n:{}", self.base, node_id)
    }

    /// The key holding `node_id`'s counts for `/stats`; it expires unless the
    /// node renews it.
    pub fn stats_key(&self, node_id: &str) -> String {
        format!("{}stats:{}", self.keys, node_id)
    }

    /// The sorted set of node ids that reported counts (score: report time in
    /// Unix milliseconds), so `/stats` reads the reports without a SCAN.
    pub fn nodes_key(&self) -> String {
        format!("{}nodes", self.keys)
    }

    /// The hash of `uid`'s history: `e` its epoch (16 hex digits), `o` the
    /// offset of its newest message.
    pub fn history_meta(&self, uid: &Uid) -> String {
        let mut out = String::new();
        self.history_key_into(uid, HistoryKey::Meta, &mut out);
        out
    }

    /// The stream of `uid`'s history: entry id `<offset>-0`, fields `p`
    /// (the payload) and `t` (Unix milliseconds when stored).
    pub fn history_stream(&self, uid: &Uid) -> String {
        let mut out = String::new();
        self.history_key_into(uid, HistoryKey::Stream, &mut out);
        out
    }

    /// [`Channels::history_meta`] or [`Channels::history_stream`] written
    /// over `out`, so a batch reuses one buffer.
    pub fn history_key_into(&self, uid: &Uid, key: HistoryKey, out: &mut String) {
        out.clear();
        out.push_str(&self.keys);
        out.push_str("h:{");
        out.push_str(uid.as_str());
        out.push_str(match key {
            HistoryKey::Meta => "}:m",
            HistoryKey::Stream => "}:s",
        });
    }

    /// Reads a channel name.
    pub fn target(&self, channel: &str) -> Target {
        let Some(rest) = channel.strip_prefix(&self.base) else {
            return Target::Unknown;
        };
        if rest == "b" {
            Target::Broadcast
        } else if let Some(uid) = rest.strip_prefix("u:") {
            Uid::new(uid).map_or(Target::Unknown, Target::Uid)
        } else if rest.starts_with("n:") {
            Target::Node
        } else {
            Target::Unknown
        }
    }
}

/// Frames a message. `origin` is a node id checked by [`check_node_id`], so
/// it fits its length byte; `flags` are [`SKIP_ORIGIN`] (and
/// [`POSITIONED`] only from [`header`], whose script writes the line).
pub fn encode(kind: Kind, origin: &str, nonce: u64, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = header(kind, origin, nonce, flags, payload.len());
    out.extend_from_slice(payload);
    out
}

/// A message up to and including its flags byte, with room for `more`
/// bytes after it.
pub fn header(kind: Kind, origin: &str, nonce: u64, flags: u8, more: usize) -> Vec<u8> {
    let origin = &origin.as_bytes()[..origin.len().min(MAX_NODE_ID_BYTES)];
    let mut out = Vec::with_capacity(12 + origin.len() + more);
    out.push(VERSION);
    out.push(kind.byte());
    out.push(origin.len() as u8);
    out.extend_from_slice(origin);
    out.extend_from_slice(&nonce.to_be_bytes());
    out.push(flags);
    out
}

/// A decoded message.
#[derive(Debug, PartialEq, Eq)]
pub struct Message {
    /// What it asks.
    pub kind: Kind,
    /// The node that published it.
    pub origin: String,
    /// The publishing process's random nonce: two processes with one node id
    /// tell their messages apart by it.
    pub nonce: u64,
    /// The origin delivered it locally and skips its own copy.
    pub skip_origin: bool,
    /// Its place in the uid's history, when stored.
    pub position: Option<Position>,
    /// The payload.
    pub payload: Bytes,
}

/// Why a message was not read (each is ignored and counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Another version of the bus format (a node of another release).
    #[error("unknown bus format version {0}")]
    UnknownVersion(u8),
    /// Cut short, an unknown kind, or an origin that is not UTF-8.
    #[error("malformed bus message")]
    Malformed,
}

/// Reads a message.
pub fn decode(raw: &[u8]) -> Result<Message, DecodeError> {
    let (&version, rest) = raw.split_first().ok_or(DecodeError::Malformed)?;
    if version != VERSION {
        return Err(DecodeError::UnknownVersion(version));
    }
    let (&kind, rest) = rest.split_first().ok_or(DecodeError::Malformed)?;
    let kind = match kind {
        b'M' => Kind::Push,
        b'K' => Kind::Disconnect,
        b'P' => Kind::Probe,
        _ => return Err(DecodeError::Malformed),
    };
    let (&len, rest) = rest.split_first().ok_or(DecodeError::Malformed)?;
    let len = usize::from(len);
    if rest.len() < len + 8 {
        return Err(DecodeError::Malformed);
    }
    let origin = std::str::from_utf8(&rest[..len])
        .map_err(|_| DecodeError::Malformed)?
        .to_owned();
    let mut nonce = [0u8; 8];
    nonce.copy_from_slice(&rest[len..len + 8]);
    let (&flags, mut rest) = rest[len + 8..]
        .split_first()
        .ok_or(DecodeError::Malformed)?;
    let mut position = None;
    if flags & POSITIONED != 0 {
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or(DecodeError::Malformed)?;
        position = Some(read_position(&rest[..end]).ok_or(DecodeError::Malformed)?);
        rest = &rest[end + 1..];
    }
    Ok(Message {
        kind,
        origin,
        nonce: u64::from_be_bytes(nonce),
        skip_origin: flags & SKIP_ORIGIN != 0,
        position,
        payload: Bytes::copy_from_slice(rest),
    })
}

/// Reads `<offset> <epoch>` as the store script writes it.
fn read_position(line: &[u8]) -> Option<Position> {
    let line = std::str::from_utf8(line).ok()?;
    let (offset, epoch) = line.split_once(' ')?;
    Some(Position {
        offset: offset.parse().ok()?,
        epoch: epoch.parse::<Epoch>().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let raw = encode(
            Kind::Push,
            "node-a",
            7,
            SKIP_ORIGIN,
            "{\"uid\":1}".as_bytes(),
        );
        let m = decode(&raw).unwrap();
        assert_eq!(
            (m.kind, m.origin.as_str(), m.nonce, &m.payload[..]),
            (Kind::Push, "node-a", 7, &b"{\"uid\":1}"[..])
        );
        assert!(m.skip_origin);
        assert_eq!(m.position, None);
        assert_eq!(decode(b""), Err(DecodeError::Malformed));
        assert_eq!(decode(b"\x02M\x09ab"), Err(DecodeError::Malformed));
        assert_eq!(decode(b"\x02M\x00abc"), Err(DecodeError::Malformed));
        assert_eq!(decode(b"\x02Z\x00"), Err(DecodeError::Malformed));
        // No flags byte.
        assert_eq!(decode(b"\x02M\x00abcdefgh"), Err(DecodeError::Malformed));
    }

    #[test]
    fn a_stored_push_carries_the_position_line_the_script_writes() {
        let mut raw = header(Kind::Push, "n", 1, POSITIONED, 0);
        raw.extend_from_slice(b"42 00000000000000ab\n{\"a\":\"x\ny\"}");
        let m = decode(&raw).unwrap();
        assert!(!m.skip_origin);
        assert_eq!(
            m.position,
            Some(Position {
                offset: 42,
                epoch: Epoch(0xab)
            })
        );
        assert_eq!(&m.payload[..], b"{\"a\":\"x\ny\"}");
        for bad in [&b"42\n"[..], b"x 00ab\n", b"1 zz\n", b"1 00ab"] {
            let mut raw = header(Kind::Push, "n", 1, POSITIONED, 0);
            raw.extend_from_slice(bad);
            assert_eq!(decode(&raw), Err(DecodeError::Malformed), "{bad:?}");
        }
    }

    #[test]
    fn the_kind_bytes_are_those_every_deployed_node_speaks() {
        // Renaming a kind must never change its byte: nodes of older builds
        // on the same bus would misread it.
        for (kind, byte) in [
            (Kind::Push, b'M'),
            (Kind::Disconnect, b'K'),
            (Kind::Probe, b'P'),
        ] {
            let raw = encode(kind, "n", 0, 0, b"");
            assert_eq!(raw[1], byte, "{kind:?}");
            assert_eq!(decode(&raw).map(|m| m.kind), Ok(kind));
        }
    }

    #[test]
    fn messages_of_another_format_version_are_told_apart() {
        let mut raw = encode(Kind::Push, "n", 1, 0, b"x");
        raw[0] = 1;
        assert_eq!(decode(&raw), Err(DecodeError::UnknownVersion(1)));
        // The format before versions began with the kind byte.
        assert_eq!(decode(b"M\x01nx"), Err(DecodeError::UnknownVersion(b'M')));
    }

    #[test]
    fn channel_names_are_read_back() {
        let c = Channels::new("pg:");
        let uid = Uid::new("a:b").unwrap();
        assert_eq!(c.uid(&uid), "pg:v2:u:a:b");
        assert_eq!(c.history_meta(&uid), "pg:v1:h:{a:b}:m");
        assert_eq!(c.history_stream(&uid), "pg:v1:h:{a:b}:s");
        assert_eq!(c.stats_key("n1"), "pg:v1:stats:n1");
        assert_eq!(c.target(&c.uid(&uid)), Target::Uid(uid));
        assert_eq!(c.target(&c.broadcast()), Target::Broadcast);
        assert_eq!(c.target(&c.node("n1")), Target::Node);
        assert_eq!(c.target("other:v2:u:x"), Target::Unknown);
        assert_eq!(c.target("pg:v1:u:x"), Target::Unknown, "format 1's names");
        assert_eq!(c.target("pg:u:x"), Target::Unknown, "the unversioned names");
    }

    #[test]
    fn a_prefix_that_could_start_another_is_refused() {
        for ok in ["pg:", "pushgate:", "a.b-c_d:", "X:"] {
            assert_eq!(check_prefix(ok), Ok(()), "{ok}");
        }
        let long = format!("{}:", "p".repeat(MAX_PREFIX_BYTES));
        for bad in [
            "",
            ":",
            "pg",
            "pg:u:b:",
            "a:b:",
            "p g:",
            "pg::",
            "é:",
            long.as_str(),
        ] {
            assert!(check_prefix(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn no_channel_of_one_valid_prefix_is_a_channel_of_another() {
        let prefixes = ["pg:", "pg.u:", "pgu:", "p:", "pg-b:"];
        let uids = ["victim", "b:u:victim", "v1:u:x", ":", "b", "n:x"];
        for p in prefixes {
            let mine = Channels::new(p);
            let mut names: Vec<String> = uids
                .iter()
                .map(|u| mine.uid(&Uid::new(u).unwrap()))
                .collect();
            names.extend([mine.broadcast(), mine.node("n1")]);
            for q in prefixes.iter().filter(|q| **q != p) {
                let theirs = Channels::new(q);
                for name in &names {
                    assert_eq!(theirs.target(name), Target::Unknown, "{name} read by {q}");
                }
            }
        }
    }

    #[test]
    fn node_ids_are_checked_for_length_and_characters() {
        assert_eq!(check_node_id("pod-7.a_b:1"), Ok(()));
        assert_eq!(check_node_id(""), Err(NameError::EmptyNodeId));
        let long = "n".repeat(MAX_NODE_ID_BYTES + 1);
        assert_eq!(
            check_node_id(&long),
            Err(NameError::NodeIdTooLong(MAX_NODE_ID_BYTES + 1))
        );
        assert!(check_node_id(&"n".repeat(MAX_NODE_ID_BYTES)).is_ok());
        for bad in ["a b", "a*", "a\n", "é", "a/b"] {
            assert!(check_node_id(bad).is_err(), "{bad:?}");
        }
    }
}
