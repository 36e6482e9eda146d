//! Every metric name, and every value each label takes. Names live here and
//! nowhere else, so `/metrics`, the README and the alert rules agree.

/// Open WebSocket connections (bound or not).
pub const WS_CONNECTIONS: &str = "pushgate_ws_connections";
/// Distinct uids with at least one bound connection.
pub const BOUND_UIDS: &str = "pushgate_bound_uids";
/// Pushes by `source` (text, http) and `result` (ok, fail).
pub const PUSHES: &str = "pushgate_pushes_total";
/// Broadcasts by `source`.
pub const BROADCASTS: &str = "pushgate_broadcasts_total";
/// Messages accepted into a connection's queue.
pub const DELIVERIES: &str = "pushgate_deliveries_total";
/// Messages not delivered, by `reason`.
pub const DROPPED: &str = "pushgate_dropped_messages_total";
/// Time to route and enqueue one batch of pushes for every recipient: the
/// lines of one text-port read, or one REST request (`/push` with its uids,
/// `/push/batch`). One sample per batch, whatever its size.
pub const PUSH_BATCH_ENQUEUE_SECONDS: &str = "pushgate_push_batch_enqueue_seconds";
/// Pushes per batch (the batches [`PUSH_BATCH_ENQUEUE_SECONDS`] times).
pub const PUSH_BATCH_SIZE: &str = "pushgate_push_batch_size";
/// Time to enqueue one broadcast for every bound connection on this node.
pub const BROADCAST_ENQUEUE_SECONDS: &str = "pushgate_broadcast_enqueue_seconds";
/// HTTP requests by `route` (the template, never a uid) and `status_class`
/// (`2xx`…`5xx`), on both listeners.
pub const HTTP_REQUESTS: &str = "pushgate_http_requests_total";
/// Time from a request's arrival to its answer's head, by `route`.
pub const HTTP_REQUEST_SECONDS: &str = "pushgate_http_request_duration_seconds";
/// WebSocket connections the gateway admits at most (`--max-connections`,
/// or the cap derived from the open-file limit): alert on
/// [`WS_CONNECTIONS`] / this.
pub const MAX_CONNECTIONS: &str = "pushgate_max_connections";
/// 1, labelled with the build's `version`.
pub const BUILD_INFO: &str = "pushgate_build_info";
/// Open connections on the text port.
pub const TEXT_CONNECTIONS: &str = "pushgate_text_connections";
/// WebSocket connections closed by the gateway, by `reason`.
pub const DISCONNECTS: &str = "pushgate_disconnects_total";
/// Text-port connections closed by the gateway, by `reason`.
pub const TEXT_DISCONNECTS: &str = "pushgate_text_disconnects_total";
/// Text-port answers dropped because the client did not read them.
pub const TEXT_ANSWERS_DROPPED: &str = "pushgate_text_answers_dropped_total";
/// WebSocket upgrades refused, by `reason`.
pub const REJECTED_UPGRADES: &str = "pushgate_rejected_upgrades_total";

/// Pushes that answered `fail`, by `reason` (offline, invalid,
/// redis_unavailable, duplicate_node_id).
pub const PUSH_FAILURES: &str = "pushgate_push_failures_total";
/// 1 while the Redis bus is connected and subscribed (cluster mode).
pub const REDIS_UP: &str = "pushgate_redis_up";
/// Redis bus reconnections, by `reason`.
pub const REDIS_RECONNECTS: &str = "pushgate_redis_reconnects_total";
/// Time one PUBLISH took.
pub const REDIS_PUBLISH_SECONDS: &str = "pushgate_redis_publish_seconds";
/// Uid channels this node subscribes to.
pub const REDIS_SUBSCRIPTIONS: &str = "pushgate_redis_subscriptions";
/// Node id conflicts: times another process with this node's id was first
/// heard from after a quiet period.
pub const DUPLICATE_NODE_ID: &str = "pushgate_duplicate_node_id_total";
/// The [`DROPPED`] `reason` of a bus message of a format version this node
/// does not speak (a node of another release on the same channels).
pub const BUS_UNKNOWN_VERSION: &str = "bus_unknown_version";

/// Every value the label of each labelled counter takes: each series is
/// exported at zero from the start ([`register_label_values`](super::register_label_values)), so its
/// first event shows in `rate()` and `increase()` instead of vanishing into
/// a series that appears already at 1. Each module's label enum has a test
/// that its labels are listed here.
pub const LABEL_VALUES: &[(&str, &str, &[&str])] = &[
    (
        PUSH_FAILURES,
        "reason",
        &[
            "offline",
            "invalid",
            "redis_unavailable",
            "duplicate_node_id",
        ],
    ),
    (BROADCASTS, "source", &["text", "http"]),
    (DROPPED, "reason", &["slow_consumer"]),
    (
        DISCONNECTS,
        "reason",
        &[
            "shutdown",
            "bind_timeout",
            "invalid_uid",
            "binary_uid",
            "message_too_big",
            "invalid_utf8",
            "protocol_error",
            "pong_timeout",
            "slow_consumer",
            "kicked",
            "too_many_for_uid",
            "invalid_token",
            "token_expired",
            "write_failed",
        ],
    ),
    (
        TEXT_DISCONNECTS,
        "reason",
        &[
            "not_allowed",
            "line_too_long",
            "idle_timeout",
            "shutdown",
            "io_error",
        ],
    ),
    (
        REJECTED_UPGRADES,
        "reason",
        &[
            "shutting_down",
            "origin",
            "connection_cap",
            "per_ip_cap",
            "per_ip_rate",
        ],
    ),
];

/// [`LABEL_VALUES`] of the cluster bus, exported in cluster mode only.
pub const CLUSTER_LABEL_VALUES: &[(&str, &str, &[&str])] = &[
    (
        REDIS_RECONNECTS,
        "reason",
        &[
            "connect_failed",
            "connection_lost",
            "command_failed",
            "probe_failed",
            "not_master",
        ],
    ),
    (DROPPED, "reason", &["bus_malformed", BUS_UNKNOWN_VERSION]),
];
