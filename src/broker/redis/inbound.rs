//! What arrives on the bus: decoding, skipping this node's own messages,
//! noticing a twin with this node's id, and local delivery.

use redis::Msg;

use super::RedisBroker;
use super::wire::{self, DecodeError, Kind, Target};
use crate::connections::broker::LocalNode;
use crate::model::{Message, Payload, Stream};
use crate::telemetry;

/// The `reason` label of a bus message that could not be read.
const MALFORMED: &str = "bus_malformed";

/// Delivers one bus message to `local`. Returns whether it was the awaited
/// probe (sequence number `probe`).
pub(super) fn handle<L: LocalNode>(
    broker: &RedisBroker,
    local: &L,
    msg: &Msg,
    probe: Option<u64>,
) -> bool {
    let message = match wire::decode(msg.get_payload_bytes()) {
        Ok(message) => message,
        Err(DecodeError::UnknownVersion(_)) => {
            telemetry::bus_dropped(telemetry::BUS_UNKNOWN_VERSION);
            return false;
        }
        Err(DecodeError::Malformed) => {
            telemetry::bus_dropped(MALFORMED);
            return false;
        }
    };
    let same_id = message.origin == broker.id();
    let own = same_id && message.nonce == broker.inner.nonce;
    if same_id && !own && broker.twin_heard() {
        telemetry::duplicate_node_id();
        tracing::error!(
            node = broker.id(),
            "another node uses this node id: not ready, and cross-node pushes answer fail \
             until it is gone; give every node its own --node-id"
        );
    }
    match (
        broker.inner.channels.target(msg.get_channel_name()),
        message.kind,
    ) {
        (Target::Node, Kind::Probe) => {
            own && probe.is_some_and(|seq| message.payload == seq.to_string().as_bytes())
        }
        // This node delivered it locally already (or never will: a push
        // it took for a uid it did not hold when publishing).
        _ if own && message.skip_origin => false,
        (Target::Uid(uid), Kind::Push) => {
            match Payload::try_from(message.payload) {
                Ok(payload) => local.deliver_local(
                    &uid,
                    &Message {
                        payload,
                        stream: Stream::Uid(message.position),
                    },
                ),
                Err(_) => telemetry::bus_dropped(MALFORMED),
            }
            false
        }
        // Only pushes are routed through this node's own subscription.
        _ if own => false,
        (Target::Uid(uid), Kind::Disconnect) => {
            local.disconnect_local(&uid);
            false
        }
        (Target::Broadcast, Kind::Push) => {
            if let Ok(payload) = Payload::try_from(message.payload) {
                local.broadcast_local(&payload);
            }
            false
        }
        _ => false,
    }
}
