//! A real Prometheus (Debian package `prometheus`, installed by .ci/run) scrapes itself and
//! remote-writes to rigwatch; the samples must land as tables named after the metrics.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::harness::{Server, temp_dir};

/// Kills Prometheus when the test ends, however it ends.
pub struct Prometheus(pub Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_prometheus_remote_writes_into_rigwatch() {
    if Command::new("prometheus")
        .arg("--version")
        .output()
        .is_err()
    {
        // CI installs it (.ci/run); a developer machine may not have it.
        assert!(
            std::env::var_os("CI").is_none(),
            "prometheus is not installed, but CI must run this test (see .ci/run)"
        );
        eprintln!(
            "skipping: the `prometheus` binary is not installed (apt-get install prometheus)"
        );
        return;
    }
    let tmp = temp_dir();
    let server = Server::start(&tmp.path().join("data"), &[], &[]).await;
    let port = free_port();
    let config = tmp.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: self\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\nremote_write:\n  - url: {}/api/v1/write\n    authorization:\n      credentials: {}\n    queue_config:\n      batch_send_deadline: 1s\n",
            server.base,
            super::harness::ADMIN_TOKEN
        ),
    )
    .unwrap();
    let log = std::fs::File::create(tmp.path().join("prometheus.log")).unwrap();
    let _prom = Prometheus(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                tmp.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus"),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let rows = loop {
        if let Ok(v) = server
            .try_sql("SELECT job, instance, value FROM up WHERE job = 'self'")
            .await
            && let Some(rows) = v.as_array()
            && rows.len() >= 2
        {
            break rows.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no `up` samples from Prometheus after 60 s; prometheus log:\n{}\nrigwatch log:\n{}",
            std::fs::read_to_string(tmp.path().join("prometheus.log")).unwrap_or_default(),
            server.log_tail(20)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let instance = format!("127.0.0.1:{port}");
    for row in &rows {
        assert_eq!(row["instance"], instance.as_str(), "{row}");
        assert_eq!(row["value"], 1.0, "{row}");
    }
    // Counters arrive too, under their own names, with their labels as tags.
    let v = server
        .sql("SELECT count(*) AS n FROM prometheus_http_requests_total WHERE job = 'self'")
        .await;
    assert!(v[0]["n"].as_u64().unwrap_or(0) > 0, "{v}");
    assert!(
        !server.log().contains("panicked"),
        "rigwatch panicked:\n{}",
        server.log_tail(30)
    );
}
