//! The claims read from a verified token, and why a token is refused.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use serde::Deserialize;
use serde_json::Value;

use crate::model::Uid;

/// The first NumericDate refused, in seconds since the epoch (2^63): beyond
/// it a time no longer fits the signed 64-bit seconds every clock uses.
const NUMERIC_DATE_LIMIT: u64 = 1 << 63;

/// Why a client's token was refused. The connection closes with 1008; the
/// client is told only "token expired" or "invalid token" (see
/// [`TokenError::close_reason`]), while the log names the precise reason
/// (this type's `Display`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Past `exp` plus `--jwt-leeway`.
    #[error("expired (exp is past)")]
    Expired,
    /// Before `nbf` minus `--jwt-leeway`.
    #[error("not yet valid (nbf is in the future)")]
    NotYetValid,
    /// The signature does not match the configured key.
    #[error("bad signature")]
    BadSignature,
    /// The header names another algorithm than the configured key's
    /// (including `alg: none` and HS256-with-the-public-key confusion).
    #[error("wrong algorithm")]
    WrongAlgorithm,
    /// `aud` is not `--jwt-audience`.
    #[error("wrong aud")]
    WrongAudience,
    /// `iss` is not `--jwt-issuer`.
    #[error("wrong iss")]
    WrongIssuer,
    /// A required claim is absent (or, for `aud`/`iss`, not a string).
    #[error("missing claim {0}")]
    MissingClaim(&'static str),
    /// A time claim (`exp`, `nbf`, `iat`) is not a NumericDate this gateway
    /// can represent: not a number, negative, not finite, or at least 2^63
    /// seconds (RFC 7519 §2).
    #[error("bad time claim {0} (not a non-negative number below 2^63)")]
    BadTimeClaim(&'static str),
    /// `sub` is not a string, or not a valid uid (1 to 256 bytes).
    #[error("invalid sub")]
    InvalidSub,
    /// Not a JWT at all: wrong shape, bad base64 or JSON.
    #[error("malformed token")]
    Malformed,
}

impl TokenError {
    /// The close frame's reason: the client learns whether to fetch a fresh
    /// token, not which check failed.
    pub fn close_reason(&self) -> &'static str {
        match self {
            TokenError::Expired => "token expired",
            _ => "invalid token",
        }
    }

    /// The `reason` label of the disconnect metric (unchanged since before
    /// the precise reasons existed, so dashboards keep working).
    pub fn metric_label(&self) -> &'static str {
        match self {
            TokenError::Expired => "token_expired",
            _ => "invalid_token",
        }
    }

    pub(super) fn from_jwt(e: &jsonwebtoken::errors::Error) -> TokenError {
        match e.kind() {
            ErrorKind::InvalidSignature => TokenError::BadSignature,
            ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                TokenError::WrongAlgorithm
            }
            ErrorKind::InvalidAudience => TokenError::WrongAudience,
            ErrorKind::InvalidIssuer => TokenError::WrongIssuer,
            ErrorKind::MissingRequiredClaim(claim) => match claim.as_str() {
                "aud" => TokenError::MissingClaim("aud"),
                "iss" => TokenError::MissingClaim("iss"),
                "sub" => TokenError::MissingClaim("sub"),
                _ => TokenError::MissingClaim("exp"),
            },
            // The time checks are this module's, but keep a precise answer
            // should the crate ever report one.
            ErrorKind::ExpiredSignature => TokenError::Expired,
            ErrorKind::ImmatureSignature => TokenError::NotYetValid,
            ErrorKind::InvalidSubject => TokenError::InvalidSub,
            _ => TokenError::Malformed,
        }
    }
}

/// A verified client identity.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The uid (the token's `sub`).
    pub uid: Uid,
    /// When the token stops being valid (its `exp` plus leeway).
    pub expires_at: SystemTime,
}

/// The claims read here. Each is a raw JSON value so that a wrong type is
/// refused with a precise reason rather than as an unreadable token.
#[derive(Deserialize)]
pub(super) struct Claims {
    pub(super) sub: Option<Value>,
    pub(super) exp: Option<Value>,
    pub(super) nbf: Option<Value>,
    pub(super) iat: Option<Value>,
}

/// Reads a NumericDate (RFC 7519 §2: seconds since the epoch, fractions
/// allowed). `None` for anything else: a string, a negative or non-finite
/// number, or 2^63 seconds and beyond (it would overflow every clock).
fn numeric_date(value: &Value) -> Option<SystemTime> {
    let since_epoch = match value.as_u64() {
        Some(secs) if secs < NUMERIC_DATE_LIMIT => Duration::from_secs(secs),
        Some(_) => return None,
        None => {
            let secs = value.as_f64()?;
            // `NUMERIC_DATE_LIMIT as f64` is exactly 2^63.
            if !(secs.is_finite() && secs >= 0.0 && secs < NUMERIC_DATE_LIMIT as f64) {
                return None;
            }
            Duration::try_from_secs_f64(secs).ok()?
        }
    };
    UNIX_EPOCH.checked_add(since_epoch)
}

/// The time claim `name`, if present; a present one must be a NumericDate.
pub(super) fn time_claim(
    value: Option<&Value>,
    name: &'static str,
) -> Result<Option<SystemTime>, TokenError> {
    value
        .map(|v| numeric_date(v).ok_or(TokenError::BadTimeClaim(name)))
        .transpose()
}
