//! Prometheus text import and remote_write.

use rigwatch_ingest::remote_write::{Label, Sample, TimeSeries, WriteRequest, encode};

use super::server::Server;

#[tokio::test]
async fn prometheus_text_lands_in_a_table_per_metric() {
    let s = Server::start().await;
    let body = "\
# HELP gpu_temp_celsius GPU temperature.
# TYPE gpu_temp_celsius gauge
gpu_temp_celsius{gpu_uuid=\"GPU-1\",model=\"H100 \\\"SXM\\\"\"} 61.5 1700000000000
gpu_temp_celsius{gpu_uuid=\"GPU-2\",model=\"\"} 58 1700000000000
up{job=\"agent\"} 1
";
    let r = s
        .post("/api/v1/import/prometheus?timestamp=1700000001000", body)
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(
        s.query(
            "SELECT gpu_uuid, model, value, CAST(time AS BIGINT) AS ns \
             FROM gpu_temp_celsius ORDER BY gpu_uuid"
        )
        .await,
        "\
+----------+------------+-------+---------------------+
| gpu_uuid | model      | value | ns                  |
+----------+------------+-------+---------------------+
| GPU-1    | H100 \"SXM\" | 61.5  | 1700000000000000000 |
| GPU-2    |            | 58.0  | 1700000000000000000 |
+----------+------------+-------+---------------------+"
    );
    assert_eq!(
        s.query("SELECT job, value, CAST(time AS BIGINT) AS ns FROM up")
            .await,
        "\
+-------+-------+---------------------+
| job   | value | ns                  |
+-------+-------+---------------------+
| agent | 1.0   | 1700000001000000000 |
+-------+-------+---------------------+"
    );
}

#[tokio::test]
async fn prometheus_text_bad_sample_is_reported_and_the_rest_kept() {
    let s = Server::start().await;
    let body = "up{job=\"a\"} 1 1000\nup{job=\"b\" 1 1000\nup{job=\"c\"} 3 1000\n";
    let r = s.post("/api/v1/import/prometheus", body).await;
    assert_eq!(r.status, 400, "{}", r.body);
    let j = r.json();
    assert_eq!(j["accepted_lines"], 2);
    let e = &j["rejected"][0];
    assert_eq!(e["line"], 2);
    // Blanks may stand between tokens, so the offending character is the `1` after them.
    let line2 = body.find("up{job=\"b\"").unwrap();
    let at = line2 + "up{job=\"b\" ".len();
    assert_eq!(e["byte_offset"], at, "{}", r.body);
    assert_eq!(e["column"], at - line2 + 1, "{}", r.body);
    assert!(
        e["error"].as_str().unwrap().contains("expected ',' or '}'"),
        "{}",
        r.body
    );
    assert_eq!(
        s.query("SELECT job, value FROM up ORDER BY job").await,
        "\
+-----+-------+
| job | value |
+-----+-------+
| a   | 1.0   |
| c   | 3.0   |
+-----+-------+"
    );
}

fn series(labels: &[(&str, &str)], samples: &[(f64, i64)]) -> TimeSeries {
    TimeSeries {
        labels: labels
            .iter()
            .map(|(n, v)| Label {
                name: n.to_string(),
                value: v.to_string(),
            })
            .collect(),
        samples: samples
            .iter()
            .map(|&(value, timestamp)| Sample { value, timestamp })
            .collect(),
    }
}

#[tokio::test]
async fn remote_write_is_stored() {
    let s = Server::start().await;
    let req = WriteRequest {
        timeseries: vec![
            series(
                &[("__name__", "gpu_power_watts"), ("gpu_uuid", "GPU-1")],
                &[(300.5, 1_000), (310.0, 2_000)],
            ),
            series(
                &[("__name__", "gpu_power_watts"), ("gpu_uuid", "GPU-2")],
                &[(150.25, 1_000)],
            ),
        ],
    };
    let r = s.post("/api/v1/write", encode(&req)).await;
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(
        s.query("SELECT gpu_uuid, value, time FROM gpu_power_watts ORDER BY gpu_uuid, time")
            .await,
        "\
+----------+--------+---------------------+
| gpu_uuid | value  | time                |
+----------+--------+---------------------+
| GPU-1    | 300.5  | 1970-01-01T00:00:01 |
| GPU-1    | 310.0  | 1970-01-01T00:00:02 |
| GPU-2    | 150.25 | 1970-01-01T00:00:01 |
+----------+--------+---------------------+"
    );
}

#[tokio::test]
async fn remote_write_series_without_name_is_reported_and_others_kept() {
    let s = Server::start().await;
    let req = WriteRequest {
        timeseries: vec![
            series(&[("job", "x")], &[(1.0, 1_000)]),
            series(&[("__name__", "up"), ("job", "y")], &[(1.0, 1_000)]),
        ],
    };
    let r = s.post("/api/v1/write", encode(&req)).await;
    assert_eq!(r.status, 400, "{}", r.body);
    let j = r.json();
    assert_eq!(j["accepted_lines"], 1);
    assert_eq!(j["rejected"][0]["line"], 1);
    assert_eq!(
        j["rejected"][0]["error"],
        "line 1: missing metric name (no __name__ label)"
    );
    assert!(s.query("SELECT job FROM up").await.contains("| y   |"));
}

#[tokio::test]
async fn remote_write_garbage_is_400() {
    let s = Server::start().await;
    // Not snappy at all: the varint length header runs off the end.
    let r = s.post("/api/v1/write", vec![0xffu8; 12]).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.message().starts_with("invalid snappy block"),
        "{}",
        r.body
    );

    // A body over the limit is refused before it is decoded.
    let r = s
        .post("/api/v1/write", vec![0u8; super::server::LIMIT + 1])
        .await;
    assert_eq!(r.status, 413, "{}", r.body);

    // Valid snappy around bytes that are not a WriteRequest.
    let junk = snap::raw::Encoder::new().compress_vec(&[0xff; 16]).unwrap();
    let r = s.post("/api/v1/write", junk).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.message().starts_with("invalid protobuf message"),
        "{}",
        r.body
    );

    // A snappy header that claims more than the limit is refused before inflating.
    let big = encode(&WriteRequest {
        timeseries: vec![series(&[("__name__", &"x".repeat(200_000))], &[(1.0, 1)])],
    });
    assert!(big.len() < super::server::LIMIT);
    let r = s.post("/api/v1/write", big).await;
    assert_eq!(r.status, 413, "{}", r.body);
    assert!(s.db.schemas().names().is_empty());
}

#[tokio::test]
async fn remote_write_type_conflict_is_one_error_per_series() {
    let s = Server::start().await;
    let r = s.post("/api/v2/write", "up,job=x value=1i 1000000\n").await;
    assert_eq!(r.status, 204, "{}", r.body);
    let req = WriteRequest {
        timeseries: vec![
            series(
                &[("__name__", "up"), ("job", "y")],
                &[(1.0, 1_000), (2.0, 2_000), (3.0, 3_000)],
            ),
            series(&[("__name__", "other"), ("job", "y")], &[(1.0, 1_000)]),
        ],
    };
    let r = s.post("/api/v1/write", encode(&req)).await;
    assert_eq!(r.status, 400, "{}", r.body);
    let j = r.json();
    assert_eq!(j["accepted_lines"], 1);
    // As for every other remote_write error: `line` is the series index, and there is no
    // position in a text body (column 0), one entry per series.
    assert_eq!(
        j["rejected"],
        serde_json::json!([{
            "line": 1,
            "column": 0,
            "byte_offset": 0,
            "error": "line 1: type conflict in table `up`, column `value`: \
                      it is an integer field but this write has a float field",
        }]),
        "{}",
        r.body
    );
    assert_eq!(
        j["message"],
        "partial write: 1 line(s) rejected, 1 row(s) accepted"
    );
}
