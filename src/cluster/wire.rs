//! Channel names and message framing on the Redis bus.
//!
//! Every key and channel starts with `--redis-prefix`, so several
//! deployments can share one Redis. A message is
//! `[kind][origin length][origin node id][payload]`: the origin lets a node
//! skip its own publications (it already delivered locally), the kind tells
//! a push from a kick.

use bytes::Bytes;

use crate::model::Uid;

/// What a bus message asks of the nodes holding its uid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Deliver the payload.
    Push,
    /// Close every connection of the uid.
    Kick,
    /// A node's probe of its own subscription.
    Probe,
}

impl Kind {
    fn byte(self) -> u8 {
        match self {
            Kind::Push => b'M',
            Kind::Kick => b'K',
            Kind::Probe => b'P',
        }
    }
}

/// Channel names for one deployment.
#[derive(Debug, Clone)]
pub struct Channels {
    prefix: String,
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
    /// Names under `prefix`.
    pub fn new(prefix: &str) -> Channels {
        Channels {
            prefix: prefix.to_owned(),
        }
    }

    /// The channel nodes holding `uid` subscribe to.
    pub fn uid(&self, uid: &Uid) -> String {
        format!("{}u:{}", self.prefix, uid)
    }

    /// The channel every node subscribes to.
    pub fn broadcast(&self) -> String {
        format!("{}broadcast", self.prefix)
    }

    /// A node's probe channel.
    pub fn node(&self, node_id: &str) -> String {
        format!("{}node:{}", self.prefix, node_id)
    }

    /// The hash where nodes publish their counts for `/stats`.
    pub fn stats_key(&self) -> String {
        format!("{}stats", self.prefix)
    }

    /// Reads a channel name.
    pub fn target(&self, channel: &str) -> Target {
        let Some(rest) = channel.strip_prefix(&self.prefix) else {
            return Target::Unknown;
        };
        if rest == "broadcast" {
            Target::Broadcast
        } else if let Some(uid) = rest.strip_prefix("u:") {
            Uid::new(uid).map_or(Target::Unknown, Target::Uid)
        } else if rest.starts_with("node:") {
            Target::Node
        } else {
            Target::Unknown
        }
    }
}

/// Frames a message.
pub fn encode(kind: Kind, origin: &str, payload: &[u8]) -> Vec<u8> {
    let origin = &origin.as_bytes()[..origin.len().min(255)];
    let mut out = Vec::with_capacity(2 + origin.len() + payload.len());
    out.push(kind.byte());
    out.push(origin.len() as u8);
    out.extend_from_slice(origin);
    out.extend_from_slice(payload);
    out
}

/// A decoded message.
#[derive(Debug, PartialEq, Eq)]
pub struct Message {
    /// What it asks.
    pub kind: Kind,
    /// The node that published it.
    pub origin: String,
    /// The payload.
    pub payload: Bytes,
}

/// Reads a message; `None` for anything malformed (ignored and counted).
pub fn decode(raw: &[u8]) -> Option<Message> {
    let (&kind, rest) = raw.split_first()?;
    let kind = match kind {
        b'M' => Kind::Push,
        b'K' => Kind::Kick,
        b'P' => Kind::Probe,
        _ => return None,
    };
    let (&len, rest) = rest.split_first()?;
    let len = usize::from(len);
    if rest.len() < len {
        return None;
    }
    let origin = std::str::from_utf8(&rest[..len]).ok()?.to_owned();
    Some(Message {
        kind,
        origin,
        payload: Bytes::copy_from_slice(&rest[len..]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let raw = encode(Kind::Push, "node-a", "{\"uid\":1}".as_bytes());
        let m = decode(&raw).unwrap();
        assert_eq!(
            (m.kind, m.origin.as_str(), &m.payload[..]),
            (Kind::Push, "node-a", &b"{\"uid\":1}"[..])
        );
        assert!(decode(b"").is_none());
        assert!(decode(b"M\x09ab").is_none());
        assert!(decode(b"Z\x00").is_none());
    }

    #[test]
    fn channel_names_are_read_back() {
        let c = Channels::new("pg:");
        let uid = Uid::new("a:b").unwrap();
        assert_eq!(c.target(&c.uid(&uid)), Target::Uid(uid));
        assert_eq!(c.target(&c.broadcast()), Target::Broadcast);
        assert_eq!(c.target(&c.node("n1")), Target::Node);
        assert_eq!(c.target("other:u:x"), Target::Unknown);
    }
}
