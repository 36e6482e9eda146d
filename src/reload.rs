//! SIGHUP: re-read the keys that live in files, without a restart.
//!
//! `--api-key-file` and `--jwt-public-key` or `--jwt-secret-file` are re-read; keys given by flag or
//! environment (`--api-key`, `--jwt-secret`) cannot change and stay. Every
//! connection stays open: a bound client keeps its uid, and only tokens
//! presented from now on are checked against the new key. A file that
//! cannot be used (unreadable, no keys, not a PEM key) keeps the old keys
//! and says why in the log. What was reloaded is logged as counts and
//! algorithms, never key material.

use tokio::task::JoinHandle;

use crate::App;

/// Starts listening for SIGHUP. The handler is installed before this
/// returns, so from then on SIGHUP never terminates the process (its
/// default action); the returned task reloads the keys at each one.
pub fn spawn(app: App) -> Option<JoinHandle<()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangup = match signal(SignalKind::hangup()) {
        Ok(hangup) => hangup,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGHUP: key files will not be reloaded");
            return None;
        }
    };
    tracing::info!(
        api_key_file = app.config.auth.api_key_file.is_some(),
        jwt_key_file =
            app.config.auth.jwt_public_key.is_some() || app.config.auth.jwt_secret_file.is_some(),
        "SIGHUP reloads the key files"
    );
    Some(tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            reload(&app);
        }
    }))
}

/// Re-reads each key file; a failure keeps that file's old keys.
fn reload(app: &App) {
    let mut files = 0;
    match app.api_keys.reload() {
        Ok(Some(keys)) => {
            files += 1;
            tracing::info!(keys, "SIGHUP: reloaded the API key file");
        }
        Ok(None) => {}
        Err(e) => {
            files += 1;
            tracing::error!(error = %e, "SIGHUP: API key file not reloaded; the old keys stay");
        }
    }
    if let Some(verifier) = &app.verifier {
        match verifier.reload() {
            Ok(Some(alg)) => {
                files += 1;
                tracing::info!(alg, "SIGHUP: reloaded the JWT key file");
            }
            Ok(None) => {}
            Err(e) => {
                files += 1;
                tracing::error!(error = %e, "SIGHUP: JWT key file not reloaded; the old key stays");
            }
        }
    }
    if files == 0 {
        tracing::info!("SIGHUP: no key file configured, nothing to reload");
    }
}
