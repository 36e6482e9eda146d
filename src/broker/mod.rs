//! The brokers that carry pushes between nodes, behind the seam the routing
//! side defines ([`crate::connections::broker`]).
//!
//! [`AnyBroker`] is the one type the [`ConnectionMap`](crate::ConnectionMap)
//! holds: an enum over the implementations, so dispatch is static and the
//! single node costs nothing. This module (and only this module) names the
//! `redis` crate.
//!
//! Where a new broker goes: a module here implementing
//! [`Broker`], one variant of
//! [`AnyBroker`] delegating to it, and one arm in [`from_config`].

pub mod redis;

pub use redis::wire::{NameError, check_node_id, check_prefix};

use crate::config::Config;
use crate::connections::broker::{
    Broker, BrokerError, ClusterStats, LocalNode, PresenceChange, Published, Readiness, Route,
    Single,
};
use crate::model::{Payload, Position, Uid};
use crate::shutdown::Shutdown;
use crate::store::{HistoryPage, HistoryQuery};

/// Every broker this build knows; the map holds one.
pub enum AnyBroker {
    /// No other node (no `--redis-url` nor `--redis-sentinel`).
    Single(Single),
    /// Redis pub/sub (cluster mode).
    Redis(redis::RedisBroker),
}

/// Why the broker settings cannot be used. Keeps the client library's
/// message without exposing its error type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokerConfigError {
    /// The Redis URL or sentinel list is not valid.
    #[error("invalid Redis configuration: {0}")]
    Redis(String),
}

/// Builds the broker `config` asks for: Redis when a URL or sentinels are
/// given, otherwise the single node. Connecting is [`Broker::run`]'s job.
pub fn from_config(config: &Config) -> Result<AnyBroker, BrokerConfigError> {
    let target = match (
        &config.broker.redis_url,
        config.broker.redis_sentinels.is_empty(),
    ) {
        (Some(url), _) => redis::RedisTarget::Url(url.0.clone()),
        (None, false) => redis::RedisTarget::Sentinel {
            sentinels: config.broker.redis_sentinels.clone(),
            master: config.broker.redis_sentinel_master.clone(),
        },
        (None, true) => return Ok(AnyBroker::Single(Single)),
    };
    let broker = redis::RedisBroker::new(redis::ClusterConfig {
        target,
        prefix: config.broker.redis_prefix.clone(),
        node_id: config.node_id(),
        probe_interval: config.broker.redis_probe_interval,
        timeout: config.broker.redis_timeout,
        history: config.history.limits(),
    })?;
    Ok(AnyBroker::Redis(broker))
}

/// Delegates every call to the variant; a new broker adds one line per
/// method.
macro_rules! delegate {
    ($self:ident, $b:ident => $call:expr) => {
        match $self {
            AnyBroker::Single($b) => $call,
            AnyBroker::Redis($b) => $call,
        }
    };
}

impl Broker for AnyBroker {
    fn route(&self, uid: &Uid) -> Route {
        delegate!(self, b => b.route(uid))
    }

    async fn publish_pushes(
        &self,
        pushes: &[(Uid, Payload)],
        routes: &[Route],
    ) -> Result<Vec<Published>, BrokerError> {
        delegate!(self, b => b.publish_pushes(pushes, routes).await)
    }

    async fn publish_broadcast(&self, payload: &Payload) -> Result<usize, BrokerError> {
        delegate!(self, b => b.publish_broadcast(payload).await)
    }

    async fn publish_disconnect(&self, uid: &Uid) -> Result<usize, BrokerError> {
        delegate!(self, b => b.publish_disconnect(uid).await)
    }

    fn presence_changed(&self, changes: &[PresenceChange]) {
        delegate!(self, b => b.presence_changed(changes))
    }

    async fn nodes_holding(&self, uid: &Uid, held_here: bool) -> Result<usize, BrokerError> {
        delegate!(self, b => b.nodes_holding(uid, held_here).await)
    }

    async fn stats(&self, local: ClusterStats) -> Result<ClusterStats, BrokerError> {
        delegate!(self, b => b.stats(local).await)
    }

    fn readiness(&self) -> Readiness {
        delegate!(self, b => b.readiness())
    }

    async fn await_subscribed(&self, uid: &Uid) -> Result<(), BrokerError> {
        delegate!(self, b => b.await_subscribed(uid).await)
    }

    async fn read_history(
        &self,
        uid: &Uid,
        query: &HistoryQuery,
    ) -> Result<HistoryPage, BrokerError> {
        delegate!(self, b => b.read_history(uid, query).await)
    }

    async fn delete_history(&self, uid: &Uid) -> Result<Position, BrokerError> {
        delegate!(self, b => b.delete_history(uid).await)
    }

    fn node_id(&self) -> Option<&str> {
        delegate!(self, b => b.node_id())
    }

    async fn run<L: LocalNode>(&self, local: L, shutdown: Shutdown) {
        delegate!(self, b => b.run(local, shutdown).await)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn config(args: &[&str]) -> Config {
        Config::parse_from(std::iter::once("pushgate").chain(args.iter().copied()))
    }

    #[test]
    fn without_redis_flags_the_node_is_single() {
        let broker = from_config(&config(&[])).unwrap();
        assert!(matches!(broker, AnyBroker::Single(_)));
        assert_eq!(broker.readiness(), Readiness::SingleNode);
    }

    #[test]
    fn a_redis_url_makes_a_redis_broker_down_until_it_connects() {
        let args = ["--redis-url", "redis://127.0.0.1:1/", "--node-id", "n1"];
        let broker = from_config(&config(&args)).unwrap();
        assert!(matches!(broker, AnyBroker::Redis(_)));
        assert_eq!(broker.node_id(), Some("n1"));
        assert_eq!(broker.readiness(), Readiness::Down);
    }

    #[test]
    fn an_unusable_redis_url_is_a_typed_error_that_keeps_the_message() {
        let Err(e) = from_config(&config(&["--redis-url", "nonsense://x"])) else {
            panic!("an unusable URL was accepted");
        };
        let BrokerConfigError::Redis(message) = &e;
        assert!(!message.is_empty());
        assert!(
            e.to_string().starts_with("invalid Redis configuration: "),
            "{e}"
        );
    }
}
