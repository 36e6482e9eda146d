//! Secure mode and key handling against the real binary: time claims as
//! peers write them, refusals that never panic, settings that would weaken
//! security refused at start, refused tokens logged (and rate-limited), and
//! key files reloaded on SIGHUP.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use common::*;
use futures_util::SinkExt;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Connects with `token` on the query string and returns the close frame.
async fn refused(gw: &Gateway, token: &str) -> (u16, String) {
    close_of(&mut ws_connect(&gw.ws_url(&format!("/ws?token={token}"))).await).await
}

/// How many log lines contain `needle`.
fn count_logged(gw: &Gateway, needle: &str) -> usize {
    gw.logs
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains(needle))
        .count()
}

/// Waits until `n` log lines contain `needle`.
async fn wait_logged_times(gw: &Gateway, needle: &str, n: usize) {
    wait_until(&format!("{n} lines with {needle:?}"), || async {
        match count_logged(gw, needle) {
            seen if seen >= n => Ok(()),
            seen => Err(seen),
        }
    })
    .await;
}

/// A client that binds and receives a push: the gateway still serves.
async fn still_serves(gw: &Gateway, uid: &str) {
    let token = jwt(json!({"sub": uid, "exp": now() + 600.0}));
    let mut ws = ws_connect(&gw.ws_url(&format!("/ws?token={token}"))).await;
    gw.wait_bound(uid, 1).await;
    let mut text = TextClient::connect(gw).await;
    let line = format!(r#"{{"uid":"{uid}","still":"serving"}}"#);
    assert_eq!(text.send(&line).await, "ok");
    assert_eq!(next_text(&mut ws).await, line);
}

/// Runs the binary with `args` and returns its standard error, asserting it
/// refused to start (exited unsuccessfully) rather than serving.
fn refuses_to_start(args: &[&str]) -> String {
    let (status, stderr) = common::refuses_to_start(
        Command::new(env!("CARGO_BIN_EXE_pushgate"))
            .args(["--listen", "127.0.0.1:0", "--text-listen", "127.0.0.1:0"])
            .args(args),
    );
    assert!(!status.success(), "{args:?} exited 0: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

fn temp_file(name: &str, text: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("pushgate-{name}-{}", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test]
async fn a_token_whose_time_claims_carry_fractions_binds() {
    let gw = Gateway::start(&["--jwt-secret", SECRET, "--jwt-leeway", "0s"]);
    // As PHP JWT libraries write them: microseconds on exp, nbf and iat.
    let t = now();
    let claims =
        |sub: &str| json!({"sub": sub, "exp": t + 600.242307, "nbf": t - 0.5, "iat": t - 0.5});
    let mut q = ws_connect(&gw.ws_url(&format!("/ws?token={}", jwt(claims("frac-q"))))).await;
    let mut f = ws_connect(&gw.ws_url("/ws")).await;
    f.send(Message::text(jwt(claims("frac-f")))).await.unwrap();
    gw.wait_bound("frac-q", 1).await;
    gw.wait_bound("frac-f", 1).await;
    let mut text = TextClient::connect(&gw).await;
    assert_eq!(text.send(r#"{"uid":"frac-q"}"#).await, "ok");
    assert_eq!(next_text(&mut q).await, r#"{"uid":"frac-q"}"#);
    assert_eq!(text.send(r#"{"uid":"frac-f"}"#).await, "ok");
    assert_eq!(next_text(&mut f).await, r#"{"uid":"frac-f"}"#);
    // A fractional exp in the past is expired, not rounded into validity.
    let past = jwt(json!({"sub": "late", "exp": t - 1.5}));
    assert_eq!(refused(&gw, &past).await, (1008, "token expired".into()));
}

#[tokio::test]
async fn a_time_claim_past_2_63_seconds_closes_with_1008_and_never_panics() {
    let gw = Gateway::start(&["--jwt-secret", SECRET]);
    let huge = [
        json!(9_223_372_036_854_775_808u64),
        json!(9_223_372_036_854_775_807u64),
        json!(u64::MAX),
        json!(1e300),
        json!(-1),
        json!("2000000000"),
    ];
    for exp in &huge {
        let token = jwt(json!({"sub": "huge", "exp": exp}));
        assert_eq!(
            refused(&gw, &token).await,
            (1008, "invalid token".into()),
            "exp {exp}"
        );
        let mut ws = ws_connect(&gw.ws_url("/ws")).await;
        ws.send(Message::text(token)).await.unwrap();
        assert_eq!(
            close_of(&mut ws).await,
            (1008, "invalid token".into()),
            "exp {exp} as a frame"
        );
    }
    let t = now();
    for claim in ["nbf", "iat"] {
        let token = jwt(json!({"sub": "huge", "exp": t + 600.0, claim: u64::MAX}));
        assert_eq!(
            refused(&gw, &token).await,
            (1008, "invalid token".into()),
            "{claim}"
        );
    }
    still_serves(&gw, "after-huge").await;
    gw.wait_logged("bad time claim exp");
    assert!(!gw.logged("panicked"), "{:?}", gw.logs.lock().unwrap());
}

#[tokio::test]
async fn settings_that_weaken_security_refuse_to_start() {
    let err = refuses_to_start(&["--jwt-secret", "short-secret"]);
    assert!(err.contains("at least 32 bytes (RFC 7518 §3.2)"), "{err}");
    let empty = temp_file("empty-keys", "# keys go here\n\n   \n");
    let err = refuses_to_start(&["--api-key-file", empty.to_str().unwrap()]);
    assert!(err.contains("holds no keys"), "{err}");
    let _ = std::fs::remove_file(empty);
    let short = temp_file("short-secret", "too-short\n");
    let err = refuses_to_start(&["--jwt-secret-file", short.to_str().unwrap()]);
    assert!(err.contains("at least 32 bytes (RFC 7518 §3.2)"), "{err}");
    let _ = std::fs::remove_file(short);
}

#[tokio::test]
async fn durations_past_a_thousand_years_are_refused_and_100000d_still_works() {
    for flag in [
        "--bind-timeout",
        "--ping-interval",
        "--pong-timeout",
        "--write-timeout",
        "--shutdown-timeout",
        "--jwt-leeway",
        "--text-idle-timeout",
    ] {
        let err = refuses_to_start(&[flag, "10000000000000000s"]);
        assert!(
            err.contains("longer than the longest allowed"),
            "{flag}: {err}"
        );
    }
    // README's "restore the seed's behaviour" values: effectively never.
    let mut gw = Gateway::start(&[
        "--bind-timeout",
        "100000d",
        "--ping-interval",
        "100000d",
        "--pong-timeout",
        "100000d",
        "--shutdown-timeout",
        "100000d",
        "--jwt-secret",
        SECRET,
        "--jwt-leeway",
        "100000d",
    ]);
    let mut idle = ws_connect(&gw.ws_url("/ws")).await;
    still_serves(&gw, "patient").await;
    gw.signal("TERM");
    assert_eq!(close_of(&mut idle).await.0, 1001);
    assert!(gw.wait_exit(PATIENCE).success());
    assert!(!gw.logged("panicked"));
}

#[tokio::test]
async fn size_limits_as_large_as_usize_max_never_panic() {
    let max = usize::MAX.to_string();
    let gw = Gateway::start(&[
        "--max-line-bytes",
        &max,
        "--max-message-bytes",
        &max,
        "--max-body-bytes",
        &max,
        "--queue-len",
        &max,
        "--queue-bytes",
        &max,
    ]);
    let mut ws = ws_bind(&gw, "roomy").await;
    let mut text = TextClient::connect(&gw).await;
    assert_eq!(text.send(r#"{"uid":"roomy","via":"text"}"#).await, "ok");
    assert_eq!(next_text(&mut ws).await, r#"{"uid":"roomy","via":"text"}"#);
    let (status, _) = post_json(&gw, "/push", &json!({"uid": "roomy", "data": "rest"})).await;
    assert_eq!(status, 200);
    assert_eq!(next_text(&mut ws).await, "rest");
    assert!(!gw.logged("panicked"));
}

#[tokio::test]
async fn each_refused_token_is_logged_with_its_precise_reason() {
    let gw = Gateway::start(&[
        "--jwt-secret",
        SECRET,
        "--jwt-audience",
        "app",
        "--jwt-leeway",
        "0s",
    ]);
    let t = now();
    let other_key = encode(
        &Header::default(),
        &json!({"sub": "eve", "exp": t + 600.0, "aud": "app"}),
        &EncodingKey::from_secret(b"another-secret-that-is-32-bytes-long"),
    )
    .unwrap();
    let cases = [
        (
            jwt(json!({"sub": "eve", "exp": t - 30.0, "aud": "app"})),
            "expired (exp is past)",
            "token expired",
        ),
        (other_key, "bad signature", "invalid token"),
        (
            jwt(json!({"sub": "eve", "exp": t + 600.0, "aud": "web"})),
            "wrong aud",
            "invalid token",
        ),
        (
            jwt(json!({"exp": t + 600.0, "aud": "app"})),
            "missing claim sub",
            "invalid token",
        ),
        (
            jwt(json!({"sub": "eve", "aud": "app"})),
            "missing claim exp",
            "invalid token",
        ),
        (
            jwt(json!({"sub": "eve", "exp": t + 600.0, "nbf": t + 300.0, "aud": "app"})),
            "not yet valid (nbf is in the future)",
            "invalid token",
        ),
        ("not.a.jwt".to_owned(), "malformed token", "invalid token"),
    ];
    for (token, logged, told) in &cases {
        // The first frame (the peer is the socket's address) ...
        let mut ws = ws_connect(&gw.ws_url("/ws")).await;
        ws.send(Message::text(token.as_str())).await.unwrap();
        // ... the client learns only whether a fresh token would help.
        assert_eq!(
            close_of(&mut ws).await,
            (1008, (*told).to_owned()),
            "{logged}"
        );
        gw.wait_logged(&format!(r#""reason":"{logged}""#));
    }
    // The query string (the peer is the client's address).
    let token = jwt(json!({"sub": "eve", "exp": t + 600.0, "aud": "web", "iss": "q"}));
    assert_eq!(refused(&gw, &token).await.0, 1008);
    wait_logged_times(&gw, r#""reason":"wrong aud""#, 2).await;
    assert!(gw.logged(r#""peer":"127.0.0.1""#));
}

#[tokio::test]
async fn a_flood_of_bad_tokens_yields_a_bounded_number_of_log_lines() {
    let gw = Gateway::start(&["--jwt-secret", SECRET]);
    let start = Instant::now();
    for _ in 0..1000 {
        assert_eq!(refused(&gw, "garbage").await.0, 1008);
    }
    // The first second's ten lines at least; at most ten a second (a
    // window opens at the first refusal a second after the last one).
    wait_logged_times(&gw, "token refused", 10).await;
    let elapsed = start.elapsed().as_secs() as usize;
    let lines = count_logged(&gw, "token refused");
    assert!(lines <= 10 * (elapsed + 2), "{lines} lines in {elapsed} s");
    // The lines left out are counted in the next one logged.
    wait_until("the left-out refusals counted", || async {
        if gw.logged("earlier refusals not logged") {
            return Ok(());
        }
        refused(&gw, "garbage").await;
        Err(count_logged(&gw, "token refused"))
    })
    .await;
}

#[tokio::test]
async fn the_bind_timeout_asks_for_the_token_in_secure_mode_and_the_uid_in_legacy_mode() {
    let secure = Gateway::start(&["--jwt-secret", SECRET, "--bind-timeout", "200ms"]);
    let mut ws = ws_connect(&secure.ws_url("/ws")).await;
    assert_eq!(
        close_of(&mut ws).await,
        (1008, "bind timeout: send the token first".into())
    );
    let legacy = Gateway::start(&["--bind-timeout", "200ms"]);
    let mut ws = ws_connect(&legacy.ws_url("/ws")).await;
    assert_eq!(
        close_of(&mut ws).await,
        (1008, "bind timeout: send the uid first".into())
    );
}

async fn push_status(gw: &Gateway, key: &str, uid: &str, data: &str) -> u16 {
    reqwest::Client::new()
        .post(gw.url("/push"))
        .bearer_auth(key)
        .json(&json!({"uid": uid, "data": data}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn sighup_reloads_the_api_key_file_and_keeps_every_connection() {
    let file = temp_file("reload-keys", "first-key\nsecond-key\n");
    let gw = Gateway::start(&[
        "--api-key",
        "flag-key",
        "--api-key-file",
        file.to_str().unwrap(),
    ]);
    gw.wait_logged("SIGHUP reloads the key files");
    let mut ws = ws_connect(&gw.ws_url("/ws")).await;
    ws.send(Message::text("held")).await.unwrap();
    wait_until("held bound", || async {
        let v: Value = reqwest::Client::new()
            .get(gw.url("/users/held"))
            .bearer_auth("flag-key")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if v["online"] == true { Ok(()) } else { Err(v) }
    })
    .await;
    assert_eq!(push_status(&gw, "first-key", "held", "before").await, 200);
    assert_eq!(next_text(&mut ws).await, "before");
    assert_eq!(push_status(&gw, "third-key", "held", "x").await, 401);

    // Rotate: second stays, first goes, third comes.
    std::fs::write(&file, "# rotated\nsecond-key\nthird-key\n").unwrap();
    gw.signal("HUP");
    wait_logged_times(&gw, "SIGHUP: reloaded the API key file", 1).await;
    assert!(gw.logged(r#""keys":2"#));
    assert_eq!(push_status(&gw, "first-key", "held", "x").await, 401);
    for key in ["second-key", "third-key", "flag-key"] {
        assert_eq!(push_status(&gw, key, "held", key).await, 200, "{key}");
        assert_eq!(
            next_text(&mut ws).await,
            key,
            "the open connection still receives"
        );
    }

    // A broken file keeps the old keys, and says why.
    std::fs::write(&file, "# emptied by mistake\n").unwrap();
    gw.signal("HUP");
    wait_logged_times(&gw, "API key file not reloaded; the old keys stay", 1).await;
    std::fs::remove_file(&file).unwrap();
    gw.signal("HUP");
    wait_logged_times(&gw, "API key file not reloaded; the old keys stay", 2).await;
    assert_eq!(push_status(&gw, "third-key", "held", "kept").await, 200);
    assert_eq!(next_text(&mut ws).await, "kept");
    assert!(!gw.logged("third-key"), "key material in the log");
}

#[tokio::test]
async fn sighup_reloads_a_rotated_jwt_public_key() {
    let keys = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/keys");
    let read = |name: &str| std::fs::read(format!("{keys}/{name}")).unwrap();
    let ec = EncodingKey::from_ec_pem(&read("ec-private.pem")).unwrap();
    let rsa = EncodingKey::from_rsa_pem(&read("rsa-private.pem")).unwrap();
    let token = |alg: Algorithm, key: &EncodingKey, sub: &str| {
        encode(
            &Header::new(alg),
            &json!({"sub": sub, "exp": now() + 600.0}),
            key,
        )
        .unwrap()
    };
    let public = temp_file("reload-pub", "");
    std::fs::write(&public, read("ec-public.pem")).unwrap();
    let gw = Gateway::start(&["--jwt-public-key", public.to_str().unwrap()]);
    gw.wait_logged("SIGHUP reloads the key files");
    let ec_token = token(Algorithm::ES256, &ec, "ec-user");
    let mut held = ws_connect(&gw.ws_url(&format!("/ws?token={ec_token}"))).await;
    gw.wait_bound("ec-user", 1).await;
    let rsa_token = token(Algorithm::RS256, &rsa, "rsa-user");
    assert_eq!(refused(&gw, &rsa_token).await.0, 1008);

    // Rotate to the RSA key.
    std::fs::write(&public, read("rsa-public.pem")).unwrap();
    gw.signal("HUP");
    wait_logged_times(&gw, "SIGHUP: reloaded the JWT key file", 1).await;
    assert!(gw.logged(r#""alg":"RS256""#));
    let mut rsa_ws = ws_connect(&gw.ws_url(&format!("/ws?token={rsa_token}"))).await;
    gw.wait_bound("rsa-user", 1).await;
    assert_eq!(
        refused(&gw, &token(Algorithm::ES256, &ec, "ec-2")).await.0,
        1008
    );
    // The connection bound with the old key stays, and receives.
    let mut text = TextClient::connect(&gw).await;
    assert_eq!(text.send(r#"{"uid":"ec-user"}"#).await, "ok");
    assert_eq!(next_text(&mut held).await, r#"{"uid":"ec-user"}"#);
    assert_eq!(text.send(r#"{"uid":"rsa-user"}"#).await, "ok");
    assert_eq!(next_text(&mut rsa_ws).await, r#"{"uid":"rsa-user"}"#);

    // A file that is no PEM key keeps the RSA key.
    std::fs::write(&public, "not a key\n").unwrap();
    gw.signal("HUP");
    wait_logged_times(&gw, "JWT key file not reloaded; the old key stays", 1).await;
    let again = token(Algorithm::RS256, &rsa, "rsa-again");
    let _ws = ws_connect(&gw.ws_url(&format!("/ws?token={again}"))).await;
    gw.wait_bound("rsa-again", 1).await;

    // A private key copied over the public one (it would verify nothing)
    // keeps the RSA public key too, and says why.
    std::fs::write(&public, read("rsa-private.pem")).unwrap();
    gw.signal("HUP");
    wait_logged_times(&gw, "JWT key file not reloaded; the old key stays", 2).await;
    assert!(gw.logged("PRIVATE key"));
    let still = token(Algorithm::RS256, &rsa, "rsa-still");
    let _ws = ws_connect(&gw.ws_url(&format!("/ws?token={still}"))).await;
    gw.wait_bound("rsa-still", 1).await;
    let _ = std::fs::remove_file(public);
}

#[test]
fn a_private_key_given_as_the_public_key_refuses_to_start() {
    for key in ["rsa-private.pem", "ec-private.pem"] {
        let path = format!("{}/tests/keys/{key}", env!("CARGO_MANIFEST_DIR"));
        let log = refuses_to_start(&["--api-listen", "127.0.0.1:0", "--jwt-public-key", &path]);
        assert!(
            log.contains("PRIVATE key") && log.contains("-pubout"),
            "{log}"
        );
    }
}

#[tokio::test]
async fn sighup_without_key_files_keeps_the_process_and_its_connections() {
    let gw = Gateway::start(&[]);
    gw.wait_logged("SIGHUP reloads the key files");
    let mut ws = ws_bind(&gw, "stays").await;
    gw.signal("HUP");
    gw.wait_logged("nothing to reload");
    let mut text = TextClient::connect(&gw).await;
    assert_eq!(text.send(r#"{"uid":"stays"}"#).await, "ok");
    assert_eq!(next_text(&mut ws).await, r#"{"uid":"stays"}"#);
}

#[tokio::test]
async fn corrupt_node_counts_in_redis_saturate_instead_of_panicking() {
    let redis = Redis::start();
    let gw = Gateway::start(&["--redis-url", &redis.url()]);
    gw.wait_redis_up().await;
    // Two reports, as a node writes them (its key, and its id in the set of
    // nodes), with counts no real node can hold.
    let at = (now() * 1000.0) as u64;
    for node in ["corrupt-a", "corrupt-b"] {
        let reply = redis.command(&format!(
            "SET pushgate:v1:stats:{node} \"{max} {max} {max}\" EX 60",
            max = u64::MAX
        ));
        assert!(reply.starts_with("+OK"), "{reply}");
        let reply = redis.command(&format!("ZADD pushgate:v1:nodes {at} {node}"));
        assert!(reply.starts_with(':'), "{reply}");
    }
    let stats: Value = reqwest::get(gw.url("/stats"))
        .await
        .expect("an answer, not a dropped connection")
        .json()
        .await
        .unwrap();
    assert_eq!(stats["connections"], json!(u64::MAX), "{stats}");
    assert_eq!(stats["bound_uids"], json!(u64::MAX), "{stats}");
    assert!(!gw.logged("panicked"));
}

#[tokio::test]
async fn sighup_reloads_a_rotated_jwt_secret_file() {
    const NEXT: &str = "the-next-secret-that-is-32-bytes-long";
    let with = |secret: &str, sub: &str| {
        encode(
            &Header::default(),
            &json!({"sub": sub, "exp": now() + 600.0}),
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    };
    // As a mounted Secret or `echo` writes it: with a trailing newline.
    let file = temp_file("reload-secret", &format!("{SECRET}\n"));
    let gw = Gateway::start(&["--jwt-secret-file", file.to_str().unwrap()]);
    gw.wait_logged("SIGHUP reloads the key files");
    assert!(!gw.logged("LEGACY MODE"));
    let mut held = ws_connect(&gw.ws_url(&format!("/ws?token={}", with(SECRET, "old")))).await;
    gw.wait_bound("old", 1).await;
    assert_eq!(refused(&gw, &with(NEXT, "new")).await.0, 1008);

    std::fs::write(&file, format!("{NEXT}\n")).unwrap();
    gw.signal("HUP");
    wait_logged_times(&gw, "SIGHUP: reloaded the JWT key file", 1).await;
    assert!(gw.logged(r#""alg":"HS256""#));
    let _new = ws_connect(&gw.ws_url(&format!("/ws?token={}", with(NEXT, "new")))).await;
    gw.wait_bound("new", 1).await;
    assert_eq!(refused(&gw, &with(SECRET, "old-again")).await.0, 1008);
    let mut text = TextClient::connect(&gw).await;
    assert_eq!(text.send(r#"{"uid":"old"}"#).await, "ok");
    assert_eq!(next_text(&mut held).await, r#"{"uid":"old"}"#);

    // A secret cut short by a bad edit keeps the current one.
    std::fs::write(&file, "oops\n").unwrap();
    gw.signal("HUP");
    wait_logged_times(&gw, "JWT key file not reloaded; the old key stays", 1).await;
    let _again = ws_connect(&gw.ws_url(&format!("/ws?token={}", with(NEXT, "again")))).await;
    gw.wait_bound("again", 1).await;
    assert!(!gw.logged(NEXT), "key material in the log");
    let _ = std::fs::remove_file(file);
}
