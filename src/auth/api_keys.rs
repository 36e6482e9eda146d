//! The REST API's bearer keys.

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use subtle::ConstantTimeEq;

use super::AuthConfigError;
use crate::config::AuthConfig;

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
            flag: "--api-key-file",
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
