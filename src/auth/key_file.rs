//! Where the JWT key comes from: a secret, or a file re-read on SIGHUP.

use std::path::{Path, PathBuf};

use jsonwebtoken::{Algorithm, DecodingKey};

use super::{AuthConfigError, MIN_SECRET_BYTES};

/// A file holding the JWT key, re-read on SIGHUP.
pub(super) enum KeyFile {
    /// `--jwt-public-key`: an RSA or EC public key, PEM.
    PublicKey(PathBuf),
    /// `--jwt-secret-file`: the HS256 secret.
    Secret(PathBuf),
}

impl KeyFile {
    pub(super) fn load(&self) -> Result<(DecodingKey, Algorithm), AuthConfigError> {
        match self {
            KeyFile::PublicKey(path) => load_public_key(path),
            KeyFile::Secret(path) => {
                let bytes = std::fs::read(path).map_err(|source| AuthConfigError::Read {
                    flag: "--jwt-secret-file",
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
pub(super) fn secret_key(secret: &[u8], source: &str) -> Result<DecodingKey, AuthConfigError> {
    if secret.len() < MIN_SECRET_BYTES {
        return Err(AuthConfigError::ShortSecret {
            from: source.to_owned(),
            len: secret.len(),
        });
    }
    Ok(DecodingKey::from_secret(secret))
}

pub(super) fn load_public_key(path: &Path) -> Result<(DecodingKey, Algorithm), AuthConfigError> {
    let pem = std::fs::read(path).map_err(|source| AuthConfigError::Read {
        flag: "--jwt-public-key",
        path: path.display().to_string(),
        source,
    })?;
    // jsonwebtoken reads a private key's PEM as a "public" one, and then
    // every signature fails to verify: a common mistake that would lock
    // every client out, so it is refused by its PEM label.
    if pem.split(|&b| b == b'\n').any(|line| {
        line.starts_with(b"-----BEGIN") && line.windows(11).any(|w| w == b"PRIVATE KEY")
    }) {
        return Err(AuthConfigError::PrivateKey(path.display().to_string()));
    }
    if let Ok(key) = DecodingKey::from_rsa_pem(&pem) {
        return Ok((key, Algorithm::RS256));
    }
    if let Ok(key) = DecodingKey::from_ec_pem(&pem) {
        return Ok((key, Algorithm::ES256));
    }
    Err(AuthConfigError::BadKey(path.display().to_string()))
}
