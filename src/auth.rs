//! Who a client is, and who may push.
//!
//! - [`TokenVerifier`]: secure mode. A WebSocket client presents a JWT; its
//!   `sub` is the uid. Signature, `exp` (always required), and `aud`/`iss`
//!   when configured are checked by the `jsonwebtoken` crate; only the
//!   configured algorithm is accepted, so `alg: none` and algorithm
//!   confusion are refused.
//! - [`ApiKeys`]: bearer keys for the REST API, compared in constant time.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use crate::config::Config;
use crate::model::Uid;

/// Why configuration of authentication failed at start.
#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    /// The public key file cannot be read.
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
}

/// Why a client's token was refused (the connection closes with 1008).
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Past `exp` (plus leeway).
    #[error("token expired")]
    Expired,
    /// Any other failure: bad signature, wrong algorithm, audience, issuer,
    /// malformed token, invalid `sub`.
    #[error("invalid token")]
    Invalid,
}

/// A verified client identity.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The uid (the token's `sub`).
    pub uid: Uid,
    /// When the token stops being valid (its `exp` plus leeway).
    pub expires_at: SystemTime,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
}

/// Verifies client tokens (secure mode).
#[derive(Clone)]
pub struct TokenVerifier {
    key: DecodingKey,
    validation: Validation,
    leeway: Duration,
}

impl TokenVerifier {
    /// Builds the verifier `config` asks for; `None` means legacy mode.
    pub fn from_config(config: &Config) -> Result<Option<TokenVerifier>, AuthConfigError> {
        let (key, alg) = if let Some(secret) = &config.jwt_secret {
            (
                DecodingKey::from_secret(secret.0.as_bytes()),
                Algorithm::HS256,
            )
        } else if let Some(path) = &config.jwt_public_key {
            load_public_key(path)?
        } else {
            return Ok(None);
        };
        let mut validation = Validation::new(alg);
        validation.leeway = config.jwt_leeway.as_secs();
        // A configured audience or issuer must be present, not merely
        // correct when present.
        let mut required = vec!["exp", "sub"];
        if config.jwt_audience.is_some() {
            required.push("aud");
        }
        if config.jwt_issuer.is_some() {
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        validation.validate_nbf = true;
        match &config.jwt_audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        if let Some(iss) = &config.jwt_issuer {
            validation.set_issuer(&[iss]);
        }
        Ok(Some(TokenVerifier {
            key,
            validation,
            leeway: config.jwt_leeway,
        }))
    }

    /// Checks `token` and returns who it names.
    pub fn verify(&self, token: &str) -> Result<Identity, TokenError> {
        let data =
            decode::<Claims>(token.trim(), &self.key, &self.validation).map_err(|e| {
                match e.kind() {
                    jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                    _ => TokenError::Invalid,
                }
            })?;
        let uid = Uid::new(&data.claims.sub).map_err(|_| TokenError::Invalid)?;
        let expires_at = UNIX_EPOCH + Duration::from_secs(data.claims.exp) + self.leeway;
        Ok(Identity { uid, expires_at })
    }
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

/// The REST API's bearer keys. Several may be valid at once, so keys can be
/// rotated without downtime.
#[derive(Clone, Default)]
pub struct ApiKeys(Vec<Vec<u8>>);

impl ApiKeys {
    /// Keys from `--api-key` / `PUSHGATE_API_KEYS` and `--api-key-file`.
    pub fn from_config(config: &Config) -> std::io::Result<ApiKeys> {
        let mut keys: Vec<Vec<u8>> = config
            .api_keys
            .iter()
            .map(|k| k.0.as_bytes().to_vec())
            .collect();
        if let Some(path) = &config.api_key_file {
            let text = std::fs::read_to_string(path)?;
            keys.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(|l| l.as_bytes().to_vec()),
            );
        }
        Ok(ApiKeys(keys))
    }

    /// Whether any key is configured.
    pub fn is_enabled(&self) -> bool {
        !self.0.is_empty()
    }

    /// Whether `presented` is one of the keys. Every key is compared, each in
    /// constant time, so the answer's timing says nothing about which bytes
    /// matched.
    pub fn accepts(&self, presented: &[u8]) -> bool {
        let mut ok = subtle::Choice::from(0);
        for key in &self.0 {
            ok |= key.as_slice().ct_eq(presented);
        }
        ok.into()
    }
}

/// Whether `expires_at` has passed.
pub fn is_expired(expires_at: SystemTime) -> bool {
    SystemTime::now() >= expires_at
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    fn verifier(args: &[&str]) -> TokenVerifier {
        let mut argv = vec!["pushgate", "--jwt-secret", "s3cret"];
        argv.extend_from_slice(args);
        TokenVerifier::from_config(&Config::parse_from(argv))
            .unwrap()
            .unwrap()
    }

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn token(claims: serde_json::Value, secret: &str) -> String {
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
            .verify(&token(json!({"sub": "u1", "exp": now() + 60}), "s3cret"))
            .unwrap();
        assert_eq!(id.uid.as_str(), "u1");
    }

    #[test]
    fn bad_tokens_are_refused() {
        let v = verifier(&["--jwt-audience", "app", "--jwt-leeway", "0"]);
        let good = json!({"sub": "u", "exp": now() + 60, "aud": "app"});
        assert!(v.verify(&token(good.clone(), "s3cret")).is_ok());
        assert!(matches!(
            v.verify(&token(
                json!({"sub": "u", "exp": now() - 10, "aud": "app"}),
                "s3cret"
            )),
            Err(TokenError::Expired)
        ));
        assert!(v.verify(&token(good, "other")).is_err(), "wrong key");
        assert!(
            v.verify(&token(
                json!({"sub": "u", "exp": now() + 60, "aud": "x"}),
                "s3cret"
            ))
            .is_err()
        );
        assert!(
            v.verify(&token(json!({"sub": "u", "aud": "app"}), "s3cret"))
                .is_err(),
            "no exp"
        );
        assert!(
            v.verify(&token(json!({"exp": now() + 60, "aud": "app"}), "s3cret"))
                .is_err()
        );
        // alg: none, unsigned.
        let none = format!(
            "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.",
            b64(&json!({"sub": "u", "exp": now() + 60, "aud": "app"}).to_string())
        );
        assert!(v.verify(&none).is_err());
        assert!(v.verify("garbage").is_err());
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
        let keys = ApiKeys::from_config(&c).unwrap();
        assert!(keys.accepts(b"old") && keys.accepts(b"new"));
        assert!(!keys.accepts(b"ol") && !keys.accepts(b"") && !keys.accepts(b"newer"));
    }
}
