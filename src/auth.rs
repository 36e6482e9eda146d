//! Who a client is, and who may push.
//!
//! - [`TokenVerifier`]: secure mode. A WebSocket client presents a JWT; its
//!   `sub` is the uid. The signature, and `aud`/`iss` when configured, are
//!   checked by the `jsonwebtoken` crate; only the configured algorithm is
//!   accepted, so `alg: none` and algorithm confusion are refused. The time
//!   claims (`exp`, always required; `nbf`, `iat`) are read and checked here:
//!   RFC 7519 §2 allows a NumericDate to carry a fraction, which
//!   `jsonwebtoken`'s own checks refuse, and a value from a peer must never
//!   reach time arithmetic unchecked.
//! - [`ApiKeys`]: bearer keys for the REST API, compared in constant time.
//!
//! Both can be reloaded from their files at run time (SIGHUP, see
//! `reload.rs`): the current keys sit behind an [`ArcSwap`], so the check on
//! every request and every bind reads them without a lock.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode};
use serde::Deserialize;
use serde_json::Value;
use subtle::ConstantTimeEq;

use crate::config::AuthConfig;
use crate::model::Uid;

/// The shortest HS256 secret accepted, in bytes: RFC 7518 §3.2 requires a
/// key at least as long as the hash output (256 bits).
pub const MIN_SECRET_BYTES: usize = 32;

/// The first NumericDate refused, in seconds since the epoch (2^63): beyond
/// it a time no longer fits the signed 64-bit seconds every clock uses.
const NUMERIC_DATE_LIMIT: u64 = 1 << 63;

/// Why configuration of authentication failed at start (or a reload was
/// refused; the old keys then stay).
#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    /// A key file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The public key is neither an RSA nor an EC PEM key.
    #[error("{0} holds no RSA or EC public key in PEM form")]
    BadKey(String),
    /// The HS256 secret is too short.
    #[error(
        "the JWT secret ({from}) must be at least {MIN_SECRET_BYTES} bytes (RFC 7518 §3.2); \
         it has {len} (generate one with `openssl rand -hex 32`)"
    )]
    ShortSecret {
        /// `--jwt-secret` or the secret file's path.
        from: String,
        /// Its length in bytes.
        len: usize,
    },
    /// `--api-key-file` holds no key: the API would silently fall back to
    /// unkeyed (or, on a reload, lock every caller out).
    #[error("the API key file {0} holds no keys (only blank lines or # comments)")]
    NoKeys(String),
}

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

    fn from_jwt(e: &jsonwebtoken::errors::Error) -> TokenError {
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
struct Claims {
    sub: Option<Value>,
    exp: Option<Value>,
    nbf: Option<Value>,
    iat: Option<Value>,
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
fn time_claim(value: Option<&Value>, name: &'static str) -> Result<Option<SystemTime>, TokenError> {
    value
        .map(|v| numeric_date(v).ok_or(TokenError::BadTimeClaim(name)))
        .transpose()
}

/// A key and the validation that goes with its algorithm.
struct Key {
    key: DecodingKey,
    validation: Validation,
}

impl Key {
    /// The crate checks the signature, the algorithm and `aud`/`iss`; the
    /// time claims and `sub` are checked in `verify`.
    fn new(key: DecodingKey, alg: Algorithm, audience: Option<&str>, issuer: Option<&str>) -> Key {
        let mut validation = Validation::new(alg);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.leeway = 0;
        // A configured audience or issuer must be present, not merely
        // correct when present.
        let mut required = Vec::new();
        if audience.is_some() {
            required.push("aud");
        }
        if issuer.is_some() {
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        match audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        if let Some(iss) = issuer {
            validation.set_issuer(&[iss]);
        }
        Key { key, validation }
    }
}

/// Verifies client tokens (secure mode).
pub struct TokenVerifier {
    /// Swapped whole by [`TokenVerifier::reload`]; read on every bind.
    current: ArcSwap<Key>,
    /// The file re-read on reload: `--jwt-public-key` or
    /// `--jwt-secret-file`; `None` for a secret from a flag or the
    /// environment, which cannot change.
    file: Option<KeyFile>,
    audience: Option<String>,
    issuer: Option<String>,
    leeway: Duration,
    refusals: RefusalLog,
}

impl TokenVerifier {
    /// Builds the verifier `config` asks for; `None` means legacy mode.
    ///
    /// Errors: an unreadable or non-PEM `--jwt-public-key`; a
    /// `--jwt-secret` (or `--jwt-secret-file`) shorter than
    /// [`MIN_SECRET_BYTES`].
    pub fn from_config(config: &AuthConfig) -> Result<Option<TokenVerifier>, AuthConfigError> {
        let file = match (&config.jwt_public_key, &config.jwt_secret_file) {
            (Some(path), _) => Some(KeyFile::PublicKey(path.clone())),
            (None, Some(path)) => Some(KeyFile::Secret(path.clone())),
            (None, None) => None,
        };
        let (key, alg) = match (&config.jwt_secret, &file) {
            (Some(secret), _) => (
                secret_key(secret.0.as_bytes(), "--jwt-secret")?,
                Algorithm::HS256,
            ),
            (None, Some(file)) => file.load()?,
            (None, None) => return Ok(None),
        };
        Ok(Some(TokenVerifier {
            current: ArcSwap::from_pointee(Key::new(
                key,
                alg,
                config.jwt_audience.as_deref(),
                config.jwt_issuer.as_deref(),
            )),
            file,
            audience: config.jwt_audience.clone(),
            issuer: config.jwt_issuer.clone(),
            leeway: config.jwt_leeway,
            refusals: RefusalLog::new(),
        }))
    }

    /// Checks `token` and returns who it names.
    pub fn verify(&self, token: &str) -> Result<Identity, TokenError> {
        self.verify_at(token, SystemTime::now())
    }

    fn verify_at(&self, token: &str, now: SystemTime) -> Result<Identity, TokenError> {
        let current = self.current.load();
        let claims = decode::<Claims>(token.trim(), &current.key, &current.validation)
            .map_err(|e| TokenError::from_jwt(&e))?
            .claims;
        let exp = time_claim(claims.exp.as_ref(), "exp")?.ok_or(TokenError::MissingClaim("exp"))?;
        let nbf = time_claim(claims.nbf.as_ref(), "nbf")?;
        // `iat` decides nothing here, but a token that carries a broken one
        // was not made by a sound issuer.
        time_claim(claims.iat.as_ref(), "iat")?;
        // An `exp` so late that the leeway overflows the clock is no valid
        // token: refused, never saturated into one that lives forever.
        let expires_at = exp
            .checked_add(self.leeway)
            .ok_or(TokenError::BadTimeClaim("exp"))?;
        if now >= expires_at {
            return Err(TokenError::Expired);
        }
        if let Some(nbf) = nbf
            && nbf
                .duration_since(now)
                .is_ok_and(|early| early > self.leeway)
        {
            return Err(TokenError::NotYetValid);
        }
        let uid = match &claims.sub {
            Some(Value::String(sub)) => Uid::new(sub).map_err(|_| TokenError::InvalidSub)?,
            Some(Value::Null) | None => return Err(TokenError::MissingClaim("sub")),
            Some(_) => return Err(TokenError::InvalidSub),
        };
        Ok(Identity { uid, expires_at })
    }

    /// Logs that `peer`'s token was refused, and why — at most
    /// [`RefusalLog::PER_SECOND`] lines a second, so a flood of bad tokens
    /// cannot flood the log (the lines left out are counted in the next).
    pub fn log_refusal(&self, error: &TokenError, peer: Option<IpAddr>) {
        self.refusals.log(error, peer);
    }

    /// Re-reads `--jwt-public-key` or `--jwt-secret-file` and returns the
    /// new key's algorithm. `Ok(None)` when the key came from `--jwt-secret`
    /// (nothing to re-read); on an error the old key stays.
    pub fn reload(&self) -> Result<Option<&'static str>, AuthConfigError> {
        let Some(file) = &self.file else {
            return Ok(None);
        };
        let (key, alg) = file.load()?;
        self.current.store(Arc::new(Key::new(
            key,
            alg,
            self.audience.as_deref(),
            self.issuer.as_deref(),
        )));
        Ok(Some(match alg {
            Algorithm::HS256 => "HS256",
            Algorithm::RS256 => "RS256",
            _ => "ES256",
        }))
    }
}

/// A file holding the JWT key, re-read on SIGHUP.
enum KeyFile {
    /// `--jwt-public-key`: an RSA or EC public key, PEM.
    PublicKey(PathBuf),
    /// `--jwt-secret-file`: the HS256 secret.
    Secret(PathBuf),
}

impl KeyFile {
    fn load(&self) -> Result<(DecodingKey, Algorithm), AuthConfigError> {
        match self {
            KeyFile::PublicKey(path) => load_public_key(path),
            KeyFile::Secret(path) => {
                let bytes = std::fs::read(path).map_err(|source| AuthConfigError::Read {
                    path: path.display().to_string(),
                    source,
                })?;
                // Files usually end with a newline that is no part of the
                // secret (`echo`, `kubectl create secret --from-file`).
                let secret = bytes.trim_ascii();
                let key = secret_key(secret, &path.display().to_string())?;
                Ok((key, Algorithm::HS256))
            }
        }
    }
}

/// An HS256 key from `secret`, refused when shorter than
/// [`MIN_SECRET_BYTES`]; `source` names where it came from.
fn secret_key(secret: &[u8], source: &str) -> Result<DecodingKey, AuthConfigError> {
    if secret.len() < MIN_SECRET_BYTES {
        return Err(AuthConfigError::ShortSecret {
            from: source.to_owned(),
            len: secret.len(),
        });
    }
    Ok(DecodingKey::from_secret(secret))
}

fn load_public_key(path: &Path) -> Result<(DecodingKey, Algorithm), AuthConfigError> {
    let pem = std::fs::read(path).map_err(|source| AuthConfigError::Read {
        path: path.display().to_string(),
        source,
    })?;
    if let Ok(key) = DecodingKey::from_rsa_pem(&pem) {
        return Ok((key, Algorithm::RS256));
    }
    if let Ok(key) = DecodingKey::from_ec_pem(&pem) {
        return Ok((key, Algorithm::ES256));
    }
    Err(AuthConfigError::BadKey(path.display().to_string()))
}

/// Rate-limits the "token refused" log lines: a fixed one-second window
/// with at most [`RefusalLog::PER_SECOND`] lines; the first line of a later
/// window says how many were left out before it.
struct RefusalLog {
    window: Mutex<Window>,
}

struct Window {
    start: Instant,
    logged: u32,
    suppressed: u64,
}

impl RefusalLog {
    /// Refusal lines logged per second at most.
    const PER_SECOND: u32 = 10;

    fn new() -> RefusalLog {
        RefusalLog {
            window: Mutex::new(Window {
                start: Instant::now(),
                logged: 0,
                suppressed: 0,
            }),
        }
    }

    /// Whether this refusal may be logged now, and how many were left out
    /// since the last one that was.
    fn admit(&self, now: Instant) -> Option<u64> {
        // A poisoned lock only means another thread panicked mid-count; the
        // counts are still usable.
        let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
        if now.saturating_duration_since(w.start) >= Duration::from_secs(1) {
            w.start = now;
            w.logged = 0;
        }
        if w.logged >= Self::PER_SECOND {
            w.suppressed = w.suppressed.saturating_add(1);
            return None;
        }
        w.logged += 1;
        Some(std::mem::take(&mut w.suppressed))
    }

    fn log(&self, error: &TokenError, peer: Option<IpAddr>) {
        let Some(suppressed) = self.admit(Instant::now()) else {
            return;
        };
        let peer = PeerField(peer);
        if suppressed > 0 {
            tracing::warn!(
                reason = %error,
                %peer,
                suppressed,
                "token refused ({suppressed} earlier refusals not logged: rate limit)"
            );
        } else {
            tracing::warn!(reason = %error, %peer, "token refused");
        }
    }
}

/// A peer address for a log field; `-` when the socket no longer knows it.
struct PeerField(Option<IpAddr>);

impl fmt::Display for PeerField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(ip) => ip.fmt(f),
            None => f.write_str("-"),
        }
    }
}

/// The REST API's bearer keys. Several may be valid at once, so keys can be
/// rotated without downtime; the file's keys can be reloaded at run time.
#[derive(Default)]
pub struct ApiKeys {
    /// Keys from `--api-key` / `PUSHGATE_API_KEYS`: fixed for the process.
    fixed: Vec<Vec<u8>>,
    /// `--api-key-file`, re-read on reload.
    file: Option<PathBuf>,
    /// The fixed keys followed by the file's; read on every request.
    current: ArcSwap<Vec<Vec<u8>>>,
}

impl ApiKeys {
    /// Keys from `--api-key` / `PUSHGATE_API_KEYS` and `--api-key-file`.
    ///
    /// Errors: the file cannot be read, or holds no key.
    pub fn from_config(config: &AuthConfig) -> Result<ApiKeys, AuthConfigError> {
        let fixed: Vec<Vec<u8>> = config
            .api_keys
            .iter()
            .map(|k| k.0.as_bytes().to_vec())
            .collect();
        let keys = ApiKeys {
            fixed,
            file: config.api_key_file.clone(),
            current: ArcSwap::default(),
        };
        keys.reload()?;
        Ok(keys)
    }

    /// Re-reads `--api-key-file` and returns how many keys it holds (`None`
    /// when there is no file). On an error the old keys stay.
    pub fn reload(&self) -> Result<Option<usize>, AuthConfigError> {
        let mut keys = self.fixed.clone();
        let Some(path) = &self.file else {
            self.current.store(Arc::new(keys));
            return Ok(None);
        };
        let text = std::fs::read_to_string(path).map_err(|source| AuthConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let before = keys.len();
        keys.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(|l| l.as_bytes().to_vec()),
        );
        let from_file = keys.len() - before;
        if from_file == 0 {
            return Err(AuthConfigError::NoKeys(path.display().to_string()));
        }
        self.current.store(Arc::new(keys));
        Ok(Some(from_file))
    }

    /// Whether any key is configured.
    pub fn is_enabled(&self) -> bool {
        !self.current.load().is_empty()
    }

    /// Whether `presented` is one of the keys. Every key is compared, each in
    /// constant time, so the answer's timing says nothing about which bytes
    /// matched.
    pub fn accepts(&self, presented: &[u8]) -> bool {
        let mut ok = subtle::Choice::from(0);
        for key in self.current.load().iter() {
            ok |= key.as_slice().ct_eq(presented);
        }
        ok.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    use crate::config::Config;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    const SECRET: &str = "an-hs256-secret-of-32-bytes-or-more";

    fn verifier(args: &[&str]) -> TokenVerifier {
        let mut argv = vec!["pushgate", "--jwt-secret", SECRET];
        argv.extend_from_slice(args);
        TokenVerifier::from_config(&Config::parse_from(argv).auth)
            .unwrap()
            .unwrap()
    }

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn token(claims: Value, secret: &str) -> String {
        encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    #[test]
    fn a_valid_token_names_its_sub() {
        let v = verifier(&[]);
        let id = v
            .verify(&token(json!({"sub": "u1", "exp": now() + 60}), SECRET))
            .unwrap();
        assert_eq!(id.uid.as_str(), "u1");
    }

    #[test]
    fn bad_tokens_are_refused_with_their_precise_reason() {
        let v = verifier(&[
            "--jwt-audience",
            "app",
            "--jwt-issuer",
            "me",
            "--jwt-leeway",
            "0",
        ]);
        let good = json!({"sub": "u", "exp": now() + 60, "aud": "app", "iss": "me"});
        assert!(v.verify(&token(good.clone(), SECRET)).is_ok());
        let with = |field: &str, value: Value| {
            let mut claims = good.clone();
            claims[field] = value;
            v.verify(&token(claims, SECRET)).unwrap_err()
        };
        let without = |field: &str| {
            let mut claims = good.clone();
            claims.as_object_mut().unwrap().remove(field);
            v.verify(&token(claims, SECRET)).unwrap_err()
        };
        assert_eq!(with("exp", json!(now() - 10)), TokenError::Expired);
        assert_eq!(with("nbf", json!(now() + 60)), TokenError::NotYetValid);
        assert_eq!(with("aud", json!("x")), TokenError::WrongAudience);
        assert_eq!(with("iss", json!("x")), TokenError::WrongIssuer);
        assert_eq!(with("sub", json!(7)), TokenError::InvalidSub);
        assert_eq!(with("sub", json!("")), TokenError::InvalidSub);
        assert_eq!(without("exp"), TokenError::MissingClaim("exp"));
        assert_eq!(without("sub"), TokenError::MissingClaim("sub"));
        assert_eq!(without("aud"), TokenError::MissingClaim("aud"));
        assert_eq!(without("iss"), TokenError::MissingClaim("iss"));
        assert_eq!(
            v.verify(&token(good.clone(), "another-secret-of-32-bytes-or-more"))
                .unwrap_err(),
            TokenError::BadSignature
        );
        // alg: none, unsigned.
        let none = format!(
            "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.",
            b64(&good.to_string())
        );
        assert!(v.verify(&none).is_err());
        assert_eq!(v.verify("garbage").unwrap_err(), TokenError::Malformed);
        // The client is told only whether a fresh token would help.
        assert_eq!(TokenError::Expired.close_reason(), "token expired");
        assert_eq!(TokenError::WrongAudience.close_reason(), "invalid token");
    }

    #[test]
    fn time_claims_may_carry_fractions() {
        // As PHP JWT libraries write them: microseconds (RFC 7519 §2).
        let v = verifier(&["--jwt-leeway", "0"]);
        let exp = now() as f64 + 60.242307;
        let iat = now() as f64 - 0.5;
        let id = v
            .verify(&token(
                json!({"sub": "u", "exp": exp, "nbf": iat, "iat": iat}),
                SECRET,
            ))
            .unwrap();
        let expected = UNIX_EPOCH + Duration::from_secs_f64(exp);
        let off = id
            .expires_at
            .duration_since(expected)
            .unwrap_or_else(|e| e.duration());
        assert!(off < Duration::from_millis(1), "{off:?}");
        let past = now() as f64 - 1.5;
        assert_eq!(
            v.verify(&token(json!({"sub": "u", "exp": past}), SECRET))
                .unwrap_err(),
            TokenError::Expired
        );
    }

    #[test]
    fn time_claims_that_are_no_numeric_date_are_invalid_never_a_panic() {
        let v = verifier(&[]);
        let exp = json!(now() + 60);
        let two_63 = json!(9_223_372_036_854_775_808u64);
        for bad in [
            two_63.clone(),
            json!(u64::MAX),
            json!(1e300),
            json!(9.3e18),
            json!(-1),
            json!(-0.5),
            json!("1764451200"),
            json!(true),
        ] {
            for claim in ["exp", "nbf", "iat"] {
                let mut claims = json!({"sub": "u", "exp": exp.clone()});
                claims[claim] = bad.clone();
                let err = v.verify(&token(claims, SECRET)).unwrap_err();
                assert_eq!(err, TokenError::BadTimeClaim(claim), "{claim}: {bad}");
                assert_eq!(err.close_reason(), "invalid token");
            }
        }
        // jsonwebtoken's own claim reader refuses an array time claim
        // before this module sees it: still invalid, if less precisely.
        let err = v
            .verify(&token(json!({"sub": "u", "exp": [1]}), SECRET))
            .unwrap_err();
        assert_eq!(err, TokenError::Malformed);
        // Just under 2^63 with the leeway added overflows the clock: refused,
        // not saturated into a token that never expires.
        let last = json!(9_223_372_036_854_775_807u64);
        let err = v
            .verify(&token(json!({"sub": "u", "exp": last}), SECRET))
            .unwrap_err();
        assert_eq!(err, TokenError::BadTimeClaim("exp"));
    }

    #[test]
    fn a_short_jwt_secret_is_refused() {
        let c = Config::parse_from(["pushgate", "--jwt-secret", "s3cret"]);
        let err = TokenVerifier::from_config(&c.auth).err().unwrap();
        assert!(
            err.to_string()
                .contains("at least 32 bytes (RFC 7518 §3.2)"),
            "{err}"
        );
        let c = Config::parse_from(["pushgate", "--jwt-secret", &"x".repeat(32)]);
        assert!(TokenVerifier::from_config(&c.auth).unwrap().is_some());
    }

    #[test]
    fn refusal_lines_are_limited_per_second_and_count_what_they_left_out() {
        let log = RefusalLog::new();
        let start = Instant::now();
        let admitted = (0..1000).filter(|_| log.admit(start).is_some()).count();
        assert_eq!(admitted, RefusalLog::PER_SECOND as usize);
        let later = start + Duration::from_secs(1);
        assert_eq!(
            log.admit(later),
            Some(1000 - u64::from(RefusalLog::PER_SECOND))
        );
        assert_eq!(log.admit(later), Some(0));
    }

    fn b64(s: &str) -> String {
        const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let b = s.as_bytes();
        let mut out = String::new();
        for chunk in b.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, &c)| n | (c as u32) << (16 - 8 * i));
            for i in 0..=chunk.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            }
        }
        out
    }

    #[test]
    fn api_keys_accept_any_configured_key() {
        let c = Config::parse_from(["pushgate", "--api-key", "old", "--api-key", "new"]);
        let keys = ApiKeys::from_config(&c.auth).unwrap();
        assert!(keys.accepts(b"old") && keys.accepts(b"new"));
        assert!(!keys.accepts(b"ol") && !keys.accepts(b"") && !keys.accepts(b"newer"));
    }

    #[test]
    fn an_api_key_file_without_keys_is_refused() {
        let path = std::env::temp_dir().join(format!("pushgate-nokeys-{}", std::process::id()));
        std::fs::write(&path, "# none yet\n\n   \n").unwrap();
        let c = Config::parse_from(["pushgate", "--api-key-file", path.to_str().unwrap()]);
        let err = ApiKeys::from_config(&c.auth).err().unwrap();
        assert!(matches!(err, AuthConfigError::NoKeys(_)), "{err}");
        let _ = std::fs::remove_file(path);
    }
}
