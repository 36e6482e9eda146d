//! Asking the server what it is (`ROLE`), and saying in Redis' own words,
//! with a hint an operator can act on, why a step of connecting failed.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use tokio::time::timeout;

use super::subscriber::Lost;

/// Whether the server behind `conn` is a master (`ROLE`), so publishes reach
/// every subscriber of the deployment; `Err` says why it did not answer.
pub(super) async fn is_master(
    conn: &mut MultiplexedConnection,
    limit: Duration,
) -> Result<bool, String> {
    let role: Result<Result<redis::Value, _>, _> =
        timeout(limit, redis::cmd("ROLE").query_async(conn)).await;
    match role {
        Ok(Ok(redis::Value::Array(items))) => Ok(matches!(
            items.first(),
            Some(redis::Value::BulkString(b)) if b == b"master"
        )),
        Ok(Ok(other)) => Err(format!("unexpected answer to ROLE: {other:?}")),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer to ROLE within {limit:?}")),
    }
}

/// One step of connecting, bounded by `limit`; a failure is logged with
/// Redis' own words (WRONGPASS, NOAUTH, connection refused…), so an operator
/// sees why the bus stays down, not only that it does.
pub(super) async fn step<T>(
    limit: Duration,
    what: &'static str,
    attempt: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, Lost> {
    let error = match timeout(limit, attempt).await {
        Ok(Ok(value)) => return Ok(value),
        Ok(Err(e)) => e.to_string(),
        Err(_) => format!("no answer within {limit:?}"),
    };
    tracing::warn!(error = %error, hint = hint(&error), "redis: cannot {what}");
    Err(Lost::Connect)
}

/// What to do about a Redis error an operator can fix.
pub(super) fn hint(error: &str) -> &'static str {
    if error.contains("WRONGPASS")
        || error.contains("NOAUTH")
        || error.contains("authentication failed")
        || error.contains("AuthenticationFailed")
    {
        "check the password in --redis-url (redis://:PASSWORD@HOST:PORT/) or the sentinels' master"
    } else if error.contains("DB index") {
        "the /DB of --redis-url is beyond the databases the server has"
    } else if error.contains("onnection refused") {
        "is Redis running at that address?"
    } else {
        ""
    }
}
