//! The shared state every front end holds: configuration, the routing
//! table, shutdown phases, the metrics handle and the access checks, built
//! once (every key file and URL checked) before anything is bound.

use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;

use crate::config::Config;
use crate::connections::{ConnectionMap, QueueLimits};
use crate::shutdown::Shutdown;
use crate::{auth, broker, limits, telemetry};

/// State shared by every front end, behind one `Arc`: every connection task
/// and every HTTP request holds a copy, so a copy must be one pointer.
pub type App = Arc<AppState>;

/// What [`App`] points to.
pub struct AppState {
    /// The configuration the server was started with.
    pub config: Arc<Config>,
    /// The routing table.
    pub map: ConnectionMap,
    /// Shutdown phases and task trackers.
    pub shutdown: Shutdown,
    /// Renders `/metrics`.
    pub prometheus: PrometheusHandle,
    /// Client token verification; `None` in legacy mode.
    pub verifier: Option<auth::TokenVerifier>,
    /// REST API keys (empty: REST only on a loopback API listener).
    pub api_keys: auth::ApiKeys,
    /// WebSocket admission limits.
    pub admission: limits::Admission,
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The JWT key or the API key file could not be loaded, or would
    /// weaken security (a short secret, a key file without keys).
    #[error(transparent)]
    Auth(#[from] auth::AuthConfigError),
    /// The broker settings are not usable (a Redis URL or sentinel list
    /// that does not parse).
    #[error(transparent)]
    Broker(#[from] broker::BrokerConfigError),
}

impl AppState {
    /// Builds the shared state for `config`.
    pub fn new(config: Config) -> Result<App, StartError> {
        let limits = QueueLimits {
            max_len: config.limits.queue_len,
            max_bytes: config.limits.queue_bytes,
        };
        // The recorder must exist before the map resolves its metric handles.
        let prometheus = telemetry::prometheus();
        let verifier = auth::TokenVerifier::from_config(&config.auth)?;
        let api_keys = auth::ApiKeys::from_config(&config.auth)?;
        let max_connections = match config.limits.max_connections {
            0 => limits::default_max_connections(),
            n => n,
        };
        let admission = limits::Admission::new(
            max_connections,
            config.limits.max_conns_per_ip,
            config.limits.max_connects_per_ip,
        );
        let broker = broker::from_config(&config)?;
        Ok(Arc::new(AppState {
            map: ConnectionMap::new(
                limits,
                config.limits.max_conns_per_uid,
                broker,
                config.history.limits(),
            ),
            shutdown: Shutdown::with_drain_rate(
                config.shutdown.drain_rate,
                config.shutdown.shutdown_timeout,
            ),
            config: Arc::new(config),
            prometheus,
            verifier,
            api_keys,
            admission,
        }))
    }
}
