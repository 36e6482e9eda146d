//! The helper subcommands of the real binary: `healthcheck` (the image's
//! HEALTHCHECK: no shell, no curl), `completions` and `man`, both generated
//! from the same clap definition as `--help`.

mod common;

use std::process::{Command, Output};

use common::*;

fn pushgate(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pushgate"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run pushgate")
}

#[tokio::test]
async fn healthcheck_exits_0_for_a_ready_gateway_and_1_once_it_is_gone() {
    let mut gw = Gateway::start(&[]);
    let public = gw.http.to_string();
    // As the image runs it: the address comes from PUSHGATE_LISTEN.
    let out = pushgate(&["healthcheck"], &[("PUSHGATE_LISTEN", &public)]);
    assert!(out.status.success(), "{out:?}");
    let url = format!("http://{public}/readyz");
    let out = pushgate(&["healthcheck", "--url", &url], &[]);
    assert!(out.status.success(), "{out:?}");
    // An unspecified listen address is probed on loopback.
    let any = format!("0.0.0.0:{}", gw.http.port());
    assert!(
        pushgate(&["--listen", &any, "healthcheck"], &[])
            .status
            .success()
    );

    gw.signal("KILL");
    gw.wait_exit(PATIENCE);
    let out = pushgate(&["healthcheck", "--url", &url, "--timeout", "2s"], &[]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(said.lines().count(), 1, "one line saying why: {said:?}");
}

#[tokio::test]
async fn healthcheck_exits_1_when_readyz_is_not_200() {
    let redis = Redis::start();
    let gw = Gateway::start(&["--redis-url", &redis.url(), "--require-redis"]);
    gw.wait_redis_up().await;
    let url = format!("http://{}/readyz", gw.http);
    assert!(
        pushgate(&["healthcheck", "--url", &url], &[])
            .status
            .success()
    );
    drop(redis);
    wait_until("healthcheck fails while Redis is down", || async {
        let out = pushgate(&["healthcheck", "--url", &url], &[]);
        (out.status.code() == Some(1)).then_some(()).ok_or(out)
    })
    .await;
    let out = pushgate(&["healthcheck", "--url", &url], &[]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("503"),
        "{out:?}"
    );
}

#[test]
fn completions_and_the_man_page_come_from_the_flag_definitions() {
    for shell in ["bash", "zsh", "fish"] {
        let out = pushgate(&["completions", shell], &[]);
        assert!(out.status.success(), "{shell}: {out:?}");
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(
            script.contains("pushgate") && script.contains("api-listen"),
            "{shell}: {script}"
        );
    }
    let out = pushgate(&["man"], &[]);
    assert!(out.status.success(), "{out:?}");
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(page.contains(".TH pushgate 1"), "{page}");
    // Every flag, with its default (roff escapes each hyphen).
    assert!(
        page.contains(r"\-\-api\-listen") && page.contains("127.0.0.1:1235"),
        "{page}"
    );
    // With its environment twin, and the helper commands on this page
    // rather than on pages nobody installs.
    assert!(page.contains("PUSHGATE_API_LISTEN"), "{page}");
    assert!(page.contains("pushgate healthcheck"), "{page}");
    assert!(!page.contains("pushgate\\-healthcheck(1)"), "{page}");
}
