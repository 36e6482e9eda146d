//! Token verification (secure mode): the key, its algorithm, and reloading
//! the key file.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode};
use serde_json::Value;

use super::claims::{Claims, time_claim};
use super::key_file::{KeyFile, secret_key};
use super::refusal_log::RefusalLog;
use super::{AuthConfigError, Identity, TokenError};
use crate::config::AuthConfig;
use crate::model::Uid;

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
    /// [`MIN_SECRET_BYTES`](super::MIN_SECRET_BYTES).
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
    /// `RefusalLog::PER_SECOND` lines a second, so a flood of bad tokens
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::time::UNIX_EPOCH;

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
}
