//! Line protocol over `/api/v2/write` and `/write`: partial writes, error positions,
//! precision and `no_sync`.

use serde_json::json;

use super::server::Server;

const GPU_ROWS: &str = "SELECT host, util, time FROM gpu ORDER BY host";

#[tokio::test]
async fn type_conflict_names_the_line_and_keeps_the_good_ones() {
    let s = Server::start().await;
    let body = "gpu,host=a util=1.5 1000000000\n\
                gpu,host=b util=2i 2000000000\n\
                gpu,host=c util=3.5 3000000000\n";
    let r = s.post("/api/v2/write?bucket=b&org=o", body).await;
    assert_eq!(r.status, 400, "{}", r.body);
    let line2 = body.find("gpu,host=b").unwrap();
    assert_eq!(
        r.json(),
        json!({
            "code": "invalid",
            "message": "partial write: 1 line(s) rejected, 2 row(s) accepted",
            "accepted_lines": 2,
            "rejected": [{
                "line": 2,
                "column": 1,
                "byte_offset": line2,
                "error": "line 2: type conflict in table `gpu`, column `util`: \
                          it is a float field but this write has an integer field",
            }],
        })
    );
    let stored = "\
+------+------+---------------------+
| host | util | time                |
+------+------+---------------------+
| a    | 1.5  | 1970-01-01T00:00:01 |
| c    | 3.5  | 1970-01-01T00:00:03 |
+------+------+---------------------+";
    assert_eq!(s.query(GPU_ROWS).await, stored);

    // The type sticks across requests: a later all-integer write is refused as a whole.
    let r = s
        .post("/api/v2/write", "gpu,host=d util=4i 4000000000\n")
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    let j = r.json();
    assert_eq!(j["accepted_lines"], 0);
    assert_eq!(j["rejected"][0]["line"], 1);
    assert_eq!(j["rejected"][0]["byte_offset"], 0);
    assert_eq!(s.query(GPU_ROWS).await, stored);
}

#[tokio::test]
async fn malformed_line_names_line_column_and_byte() {
    let s = Server::start().await;
    let body = "gpu,host=a util=1 1000000000\n\
                # a comment line\n\
                gpu,host=b util 2000000000\n\
                gpu,host=c util=3 3000000000\n";
    let r = s.post("/api/v2/write", body).await;
    assert_eq!(r.status, 400, "{}", r.body);
    let line3 = body.find("gpu,host=b").unwrap();
    let at = line3 + "gpu,host=b util".len();
    let j = r.json();
    assert_eq!(j["accepted_lines"], 2);
    assert_eq!(
        j["rejected"],
        json!([{
            "line": 3,
            "column": 16,
            "byte_offset": at,
            "error": format!(
                "line 3, column 16 (byte {at}): expected '=' after field key \"util\""
            ),
        }])
    );
    assert_eq!(
        s.query(GPU_ROWS).await,
        "\
+------+------+---------------------+
| host | util | time                |
+------+------+---------------------+
| a    | 1.0  | 1970-01-01T00:00:01 |
| c    | 3.0  | 1970-01-01T00:00:03 |
+------+------+---------------------+"
    );
}

#[tokio::test]
async fn several_bad_lines_are_all_reported_in_order() {
    let s = Server::start().await;
    // A syntax error (line 1), a good line, a type conflict with line 2 (line 3), and an
    // unterminated string (line 4): parse errors and schema errors are merged by line.
    let body = "gpu,host=a util=\n\
                gpu,host=b util=1 1000000000\n\
                gpu,host=c util=\"x\" 2000000000\n\
                gpu,host=d name=\"open\n";
    let r = s.post("/api/v2/write", body).await;
    assert_eq!(r.status, 400, "{}", r.body);
    let j = r.json();
    let lines: Vec<_> = j["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["line"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, vec![1, 3, 4]);
    assert_eq!(j["accepted_lines"], 1);
    assert_eq!(
        j["rejected"][1]["byte_offset"],
        body.find("gpu,host=c").unwrap()
    );
    assert!(
        j["rejected"][2]["error"]
            .as_str()
            .unwrap()
            .contains("unterminated string"),
        "{}",
        r.body
    );
    assert_eq!(
        s.query("SELECT count(*) AS n FROM gpu")
            .await
            .lines()
            .nth(3),
        Some("| 1 |")
    );
}

#[tokio::test]
async fn precision_scales_timestamps_and_bad_precision_is_rejected() {
    let s = Server::start().await;
    let r = s
        .post(
            "/api/v2/write?precision=s",
            "gpu,host=a util=1 1700000000\n",
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    let r = s
        .post(
            "/api/v2/write?precision=ms",
            "gpu,host=b util=2 1700000000500\n",
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(
        s.query("SELECT host, CAST(time AS BIGINT) AS ns FROM gpu ORDER BY host")
            .await,
        "\
+------+---------------------+
| host | ns                  |
+------+---------------------+
| a    | 1700000000000000000 |
| b    | 1700000000500000000 |
+------+---------------------+"
    );

    let r = s
        .post("/api/v2/write?precision=fortnight", "gpu,host=c util=3 1\n")
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(
        r.message(),
        "unknown timestamp precision `fortnight` (expected ns, us, ms or s; v1 also takes n, u, m, h)"
    );
    assert_eq!(
        s.query("SELECT count(*) AS n FROM gpu")
            .await
            .lines()
            .nth(3),
        Some("| 2 |")
    );
}

#[tokio::test]
async fn timestamp_overflow_under_coarse_precision_is_a_line_error() {
    let s = Server::start().await;
    let body = "gpu,host=a util=1 10000000000000\ngpu,host=b util=2 1\n";
    let r = s.post("/api/v2/write?precision=s", body).await;
    assert_eq!(r.status, 400, "{}", r.body);
    let j = r.json();
    assert_eq!(j["accepted_lines"], 1);
    assert_eq!(j["rejected"][0]["line"], 1);
    assert!(
        j["rejected"][0]["error"]
            .as_str()
            .unwrap()
            .contains("does not fit in 64-bit nanoseconds"),
        "{}",
        r.body
    );
}

#[tokio::test]
async fn v1_route_and_no_sync() {
    let s = Server::start().await;
    let r = s
        .post(
            "/write?db=telemetry&precision=ms",
            "node,host=a load=0.5 1000\n",
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    assert!(r.body.is_empty());
    let syncs = s.db.metrics().wal_syncs.get();
    assert!(syncs > 0, "a default write waits for the fsync");
    let r = s
        .post(
            "/api/v2/write?no_sync=true",
            "node,host=b load=1.5 2000000000\n",
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    let r = s
        .post("/write?no_sync=true", "node,host=c load=2.5 3000000000\n")
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(
        s.db.metrics().wal_syncs.get(),
        syncs,
        "no_sync writes skip the fsync"
    );
    assert_eq!(
        s.query("SELECT host, load, time FROM node ORDER BY host")
            .await,
        "\
+------+------+---------------------+
| host | load | time                |
+------+------+---------------------+
| a    | 0.5  | 1970-01-01T00:00:01 |
| b    | 1.5  | 1970-01-01T00:00:02 |
| c    | 2.5  | 1970-01-01T00:00:03 |
+------+------+---------------------+"
    );
}
