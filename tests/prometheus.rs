//! A real Prometheus (Debian's package, unpacked under `target/` by
//! `scripts/prometheus-tools.sh`) scrapes a running gateway, and its query
//! API returns what a known number of pushes must show: the push and
//! delivery counters, a delivery rate, and the connection gauge.
//!
//! Needs the unpacked package, which `scripts/install-test-deps.sh` provides.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use common::*;

/// A Prometheus server this test started on a free port; killed on drop.
struct Prometheus {
    child: Child,
    port: u16,
    _dir: TempDir,
}

/// A directory removed on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn prometheus_binary() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/deploy-tools/prometheus/usr/bin/prometheus");
    assert!(
        path.exists(),
        "{} is missing: run scripts/prometheus-tools.sh (scripts/install-test-deps.sh does)",
        path.display()
    );
    path
}

impl Prometheus {
    /// Starts Prometheus scraping `target` (`host:port`) every second.
    fn scraping(target: &str) -> Prometheus {
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("pushgate-prometheus-{}-{port}", std::process::id()));
        std::fs::create_dir_all(dir.join("data")).expect("temp dir");
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n\
                 scrape_configs:\n  - job_name: pushgate\n    static_configs:\n      \
                 - targets: [\"{target}\"]\n"
            ),
        )
        .expect("write prometheus.yml");
        let child = Command::new(prometheus_binary())
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus");
        Prometheus {
            child,
            port,
            _dir: TempDir(dir),
        }
    }

    /// The value of an instant query's single result, if there is one.
    async fn query(&self, expr: &str) -> Option<f64> {
        let url = reqwest::Url::parse_with_params(
            &format!("http://127.0.0.1:{}/api/v1/query", self.port),
            &[("query", expr)],
        )
        .ok()?;
        let answer: serde_json::Value = reqwest::Client::new()
            .get(url)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let result = answer["data"]["result"].as_array()?;
        let [one] = result.as_slice() else {
            return None;
        };
        one["value"][1].as_str()?.parse().ok()
    }

    /// Waits until `expr` evaluates to a value `want` accepts.
    async fn wait_for(&self, expr: &str, want: impl Fn(f64) -> bool) {
        wait_until(&format!("Prometheus answers {expr}"), || async {
            match self.query(expr).await {
                Some(v) if want(v) => Ok(()),
                other => Err(other),
            }
        })
        .await
    }
}

#[tokio::test]
async fn a_real_prometheus_scrapes_the_push_and_delivery_counts_and_the_connection_gauge() {
    let gw = Gateway::start(&[]);
    let prometheus = Prometheus::scraping(&gw.api.to_string());
    let _clients = [
        ws_bind(&gw, "p1").await,
        ws_bind(&gw, "p1").await,
        ws_bind(&gw, "p2").await,
    ];
    prometheus
        .wait_for("up{job=\"pushgate\"}", |v| v == 1.0)
        .await;
    // Ten pushes to p1 (two connections each) and one to an offline uid.
    for i in 0..10 {
        let (status, _) = post_json(
            &gw,
            "/push",
            &serde_json::json!({"uid": "p1", "data": {"n": i}}),
        )
        .await;
        assert_eq!(status, 200);
    }
    post_json(
        &gw,
        "/push",
        &serde_json::json!({"uid": "nobody", "data": 1}),
    )
    .await;
    prometheus
        .wait_for("pushgate_ws_connections", |v| v == 3.0)
        .await;
    prometheus
        .wait_for("sum(pushgate_deliveries_total)", |v| v == 20.0)
        .await;
    prometheus
        .wait_for(
            "pushgate_pushes_total{source=\"http\",result=\"ok\"}",
            |v| v == 10.0,
        )
        .await;
    prometheus
        .wait_for(
            "pushgate_pushes_total{source=\"http\",result=\"fail\"}",
            |v| v == 1.0,
        )
        .await;
    prometheus
        .wait_for("sum(rate(pushgate_deliveries_total[1m]))", |v| v > 0.0)
        .await;
}
