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
//! `reload.rs`): the current keys sit behind an [`ArcSwap`](arc_swap::ArcSwap), so the check on
//! every request and every bind reads them without a lock.

mod api_keys;
mod claims;
mod key_file;
mod refusal_log;
mod token;

pub use api_keys::ApiKeys;
pub use claims::{Identity, TokenError};
pub use token::TokenVerifier;

/// The shortest HS256 secret accepted, in bytes: RFC 7518 §3.2 requires a
/// key at least as long as the hash output (256 bits).
pub const MIN_SECRET_BYTES: usize = 32;

/// Why configuration of authentication failed at start (or a reload was
/// refused; the old keys then stay).
#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    /// A key file cannot be read.
    #[error("{flag} {path}: cannot read it: {source}")]
    Read {
        /// The flag that named it.
        flag: &'static str,
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The public key is neither an RSA nor an EC PEM key.
    #[error("{0} holds no RSA or EC public key in PEM form")]
    BadKey(String),
    /// The file given as the public key holds a private key.
    #[error(
        "{0} holds a PRIVATE key: give the public key (openssl pkey -in KEY -pubout), \
         and keep the private key with whoever signs the tokens"
    )]
    PrivateKey(String),
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
