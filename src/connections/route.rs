//! Routing: pushes, broadcasts and disconnects, delivered here at once and
//! published through the broker to the other nodes, with their accounting.

use std::time::Instant;

use super::broker::{Broker, BrokerError, LocalNode, PresenceChange, Published, Route};
use super::{ConnectionMap, PushOutcome, RouteError};
use crate::model::{Message, Payload, Source, Stream, Uid};
use crate::telemetry;

impl ConnectionMap {
    /// Pushes `payload` to every connection bound to `uid`, on this node and
    /// (cluster mode) on every other node holding it; each connection gets it
    /// at most once. Never waits on a client.
    pub async fn push(
        &self,
        source: Source,
        uid: &Uid,
        payload: &Payload,
    ) -> Result<PushOutcome, RouteError> {
        // A batch of one: the routing, accounting and bus rules live in
        // `push_batch` alone.
        self.push_batch(source, &[(uid.clone(), payload.clone())])
            .await
            .into_iter()
            .next()
            .unwrap_or(Ok(PushOutcome::default()))
    }

    /// Pushes several messages in order, as one unit of work: local
    /// deliveries in order, then (cluster mode) one pipelined round trip to
    /// Redis for all of them, whose PUBLISHes Redis applies in order. The
    /// outcomes come back in the same order. This is how pipelined text-port
    /// lines avoid paying one Redis round trip each.
    ///
    /// Cluster mode keeps every uid's pushes in the broker's publish order
    /// (see [`Route`]): a push for a uid this node is subscribed to reaches
    /// its connections here when it comes back from the broker, like
    /// another node's push would; with history on, a push delivered here
    /// directly waits for its position first. While the broker is down,
    /// pushes are delivered here at once (README's promise: a node still
    /// serves the uids it holds), without a position, and the order
    /// guarantee is suspended for them.
    pub async fn push_batch(
        &self,
        source: Source,
        pushes: &[(Uid, Payload)],
    ) -> Vec<Result<PushOutcome, RouteError>> {
        let start = Instant::now();
        let broker = &self.shared.broker;
        // Empty (no allocation) on a single node: everything is delivered
        // here at once, history kept in the table under the same lock.
        let routes: Vec<Route> = match broker.node_id() {
            Some(_) => pushes.iter().map(|(uid, _)| broker.route(uid)).collect(),
            None => Vec::new(),
        };
        let mut gone = Vec::new();
        let outcomes = self.deliver_now(pushes, &routes, &mut gone);
        self.presence_changed(&gone);
        // Shared counters are added to once per batch: each add is an atomic
        // on a cache line every pushing task writes.
        self.count_deliveries(sum(&outcomes));
        let metrics = &self.shared.metrics;
        metrics
            .batch_enqueue_seconds
            .record(start.elapsed().as_secs_f64());
        metrics.batch_size.record(pushes.len() as f64);
        let published = broker.publish_pushes(pushes, &routes).await;
        let mut results = Vec::with_capacity(pushes.len());
        let mut late = Late::default();
        let (mut ok, mut failed) = (0, 0);
        for (i, outcome) in outcomes.into_iter().enumerate() {
            let answer = published
                .as_ref()
                .map(|list| list.get(i).copied().unwrap_or_default())
                .map_err(|e| *e);
            let result = self.settle(
                &pushes[i],
                routes.get(i).copied(),
                outcome,
                answer,
                &mut late,
            );
            match &result {
                Ok(outcome) if outcome.is_ok() => ok += 1,
                Ok(_) => {
                    failed += 1;
                    telemetry::push_failed("offline");
                }
                Err(RouteError::ClusterUnavailable(_, e)) => {
                    failed += 1;
                    telemetry::push_failed(e.reason());
                }
            }
            results.push(result);
        }
        self.presence_changed(&late.gone);
        self.count_deliveries(late.outcome);
        self.shared.metrics.push_results(source, ok, failed);
        results
    }

    /// One push's outcome once the broker answered (or failed): what Redis
    /// counted, and the deliveries here that waited for it (`route`: `None`
    /// on a single node).
    fn settle(
        &self,
        (uid, payload): &(Uid, Payload),
        route: Option<Route>,
        mut outcome: PushOutcome,
        published: Result<Published, BrokerError>,
        late: &mut Late,
    ) -> Result<PushOutcome, RouteError> {
        let deferred = route.is_some_and(|r| self.deferred(r));
        match published {
            Ok(p) => {
                outcome.remote_nodes = p.others;
                outcome.stored = outcome.stored.or(p.stored);
                if route == Some(Route::Bus) {
                    // Queued when it comes back on this node's own
                    // subscription, which Redis counted.
                    if p.here {
                        outcome.delivered = self.connections_of(uid);
                    }
                } else if deferred {
                    let message = Message {
                        payload: payload.clone(),
                        stream: Stream::Uid(p.stored),
                    };
                    outcome = self.deliver_late(&outcome, uid, &message, late);
                }
                Ok(outcome)
            }
            Err(e) => {
                if deferred {
                    let message = Message::push(payload.clone());
                    outcome = self.deliver_late(&outcome, uid, &message, late);
                }
                if outcome.delivered == 0 {
                    // Not delivered here, and whether another node holds
                    // the uid is unknown.
                    Err(RouteError::ClusterUnavailable(outcome, e))
                } else {
                    // Delivered here; other nodes may have missed it, which
                    // at-most-once delivery across the bus allows.
                    Ok(outcome)
                }
            }
        }
    }

    /// Delivers here, before publishing, the pushes that need nothing from
    /// the broker: all of them on a single node (empty `routes`); in cluster
    /// mode those routed [`Route::Here`] while history is off.
    fn deliver_now(
        &self,
        pushes: &[(Uid, Payload)],
        routes: &[Route],
        gone: &mut Vec<PresenceChange>,
    ) -> Vec<PushOutcome> {
        if routes.is_empty() {
            return self.push_local_many(pushes, gone);
        }
        pushes
            .iter()
            .zip(routes)
            .map(|((uid, payload), route)| {
                if self.deferred(*route) {
                    PushOutcome::default()
                } else {
                    self.push_local(uid, &Message::push(payload.clone()), gone)
                }
            })
            .collect()
    }

    /// Whether a cluster-mode push is not delivered here before publishing:
    /// it comes back through the bus, or (history on) it waits for its
    /// position.
    fn deferred(&self, route: Route) -> bool {
        route == Route::Bus || self.shared.history.is_some()
    }

    /// Delivers a deferred push here after the broker answered (or failed);
    /// adds what it did to `late` for the counters.
    fn deliver_late(
        &self,
        outcome: &PushOutcome,
        uid: &Uid,
        message: &Message,
        late: &mut Late,
    ) -> PushOutcome {
        let here = self.push_local(uid, message, &mut late.gone);
        late.outcome.delivered += here.delivered;
        late.outcome.dropped += here.dropped;
        PushOutcome {
            delivered: here.delivered,
            dropped: here.dropped,
            ..*outcome
        }
    }

    /// Sends `payload` (encoded once, shared) to every bound connection, on
    /// every node in cluster mode.
    pub async fn broadcast(
        &self,
        source: Source,
        payload: &Payload,
    ) -> Result<PushOutcome, RouteError> {
        let start = Instant::now();
        let mut gone = Vec::new();
        let mut outcome = self.broadcast_local_outcome(payload, &mut gone);
        self.presence_changed(&gone);
        telemetry::broadcast_taken(source);
        self.account_broadcast(outcome, start);
        match self.shared.broker.publish_broadcast(payload).await {
            Ok(nodes) => outcome.remote_nodes = nodes,
            Err(e) => return Err(RouteError::ClusterUnavailable(outcome, e)),
        }
        Ok(outcome)
    }

    /// Closes every connection of `uid` (close code 4001), here and on every
    /// other node. They are offline at once. The outcome's `delivered` is
    /// the connections closed on this node, `remote_nodes` the other nodes
    /// the request reached (each closes its own).
    pub async fn disconnect(&self, uid: &Uid) -> Result<PushOutcome, RouteError> {
        let outcome = PushOutcome {
            delivered: LocalNode::disconnect_local(self, uid),
            ..PushOutcome::default()
        };
        match self.shared.broker.publish_disconnect(uid).await {
            Ok(remote_nodes) => Ok(PushOutcome {
                remote_nodes,
                ..outcome
            }),
            Err(e) => Err(RouteError::ClusterUnavailable(outcome, e)),
        }
    }

    /// Counts a push that was refused before routing (bad input): it answers
    /// `fail` like an offline uid.
    pub fn refused(&self, source: Source) {
        self.shared.metrics.push_result(source, false);
        telemetry::push_failed("invalid");
    }

    /// Counts what the local part of a broadcast did and how long it took.
    fn account_broadcast(&self, outcome: PushOutcome, start: Instant) {
        self.count_deliveries(outcome);
        self.shared
            .metrics
            .broadcast_enqueue_seconds
            .record(start.elapsed().as_secs_f64());
    }

    pub(super) fn count_deliveries(&self, outcome: PushOutcome) {
        let m = &self.shared.metrics;
        if outcome.delivered > 0 {
            m.deliveries.increment(outcome.delivered as u64);
        }
        if outcome.dropped > 0 {
            m.dropped_slow.increment(outcome.dropped as u64);
        }
    }
}

/// What deliveries after the broker's answer did here: counted, and
/// presence changes handed over, once per batch.
#[derive(Default)]
struct Late {
    outcome: PushOutcome,
    gone: Vec<PresenceChange>,
}

/// What several pushes did here, for the shared counters.
fn sum(outcomes: &[PushOutcome]) -> PushOutcome {
    outcomes
        .iter()
        .fold(PushOutcome::default(), |sum, o| PushOutcome {
            delivered: sum.delivered + o.delivered,
            dropped: sum.dropped + o.dropped,
            ..PushOutcome::default()
        })
}

#[cfg(test)]
mod tests {
    use super::super::broker::Single;
    use super::super::{BindError, CloseReason, Connection, Delivery, QueueLimits};
    use super::*;
    use crate::broker::AnyBroker;

    fn map() -> ConnectionMap {
        ConnectionMap::new(
            QueueLimits {
                max_len: 4,
                max_bytes: 1024,
            },
            2,
            AnyBroker::Single(Single),
            None,
        )
    }

    fn uid(s: &str) -> Uid {
        Uid::new(s).unwrap()
    }

    #[tokio::test]
    async fn every_connection_of_a_uid_receives_once() {
        let map = map();
        let mut a = map.open();
        let mut b = map.open();
        a.bind(uid("u")).unwrap();
        b.bind(uid("u")).unwrap();
        let out = map
            .push(Source::Text, &uid("u"), &Payload::from("hi"))
            .await
            .unwrap();
        assert_eq!(
            out,
            PushOutcome {
                delivered: 2,
                dropped: 0,
                remote_nodes: 0,
                stored: None,
            }
        );
        for c in [&mut a, &mut b] {
            assert!(matches!(c.next().await, Delivery::Message(m) if m.payload == "hi"));
            let mut more = 0;
            c.take_queued(8, |_| more += 1);
            assert_eq!(more, 0);
        }
    }

    #[tokio::test]
    async fn closing_an_old_connection_keeps_the_new_one() {
        let map = map();
        let mut old = map.open();
        old.bind(uid("u")).unwrap();
        let mut new = map.open();
        new.bind(uid("u")).unwrap();
        drop(old);
        assert_eq!(map.connections_of(&uid("u")), 1);
        assert!(
            map.push(Source::Http, &uid("u"), &Payload::from("x"))
                .await
                .unwrap()
                .is_ok()
        );
        drop(new);
        assert_eq!(map.bound_uids(), 0);
        assert_eq!(map.connections(), 0);
        assert!(
            !map.push(Source::Http, &uid("u"), &Payload::from("x"))
                .await
                .unwrap()
                .is_ok()
        );
    }

    #[tokio::test]
    async fn the_oldest_connection_gives_way_past_the_per_uid_cap() {
        let map = map();
        let mut conns: Vec<Connection> = (0..3).map(|_| map.open()).collect();
        for c in &mut conns {
            c.bind(uid("u")).unwrap();
        }
        assert_eq!(map.connections_of(&uid("u")), 2);
        assert_eq!(map.bound_connections(), 2);
        assert!(matches!(
            conns[0].next().await,
            Delivery::Close(CloseReason::Replaced)
        ));
        assert_eq!(map.disconnect(&uid("u")).await.unwrap().delivered, 2);
        assert!(matches!(
            conns[2].next().await,
            Delivery::Close(CloseReason::Disconnected)
        ));
        assert_eq!(map.bound_uids(), 0);
        drop(conns);
        assert_eq!(map.bound_connections(), 0);
    }

    #[tokio::test]
    async fn binding_twice_is_refused() {
        let map = map();
        let mut c = map.open();
        c.bind(uid("a")).unwrap();
        assert_eq!(c.bind(uid("b")), Err(BindError::AlreadyBound));
        assert_eq!(c.uid(), Some(&uid("a")));
    }

    #[tokio::test]
    async fn broadcast_skips_unbound_connections() {
        let map = map();
        let _unbound = map.open();
        let mut a = map.open();
        a.bind(uid("a")).unwrap();
        let out = map
            .broadcast(Source::Http, &Payload::from("all"))
            .await
            .unwrap();
        assert_eq!(out.delivered, 1);
    }
}
