//! Whole-body failures: size limits (plain and inflated), gzip, UTF-8, backpressure.

use super::server::{LIMIT, Server, gzip, header};

/// Valid line protocol of at least `bytes` bytes.
fn lines(bytes: usize) -> String {
    let mut body = String::with_capacity(bytes + 64);
    let mut i = 0u64;
    while body.len() < bytes {
        body.push_str(&format!("gpu,host=h{} util={i} {}\n", i % 7, i * 1_000_000));
        i += 1;
    }
    body
}

fn assert_too_large(r: &super::server::Reply) {
    assert_eq!(r.status, 413, "{}", r.body);
    let j = r.json();
    assert_eq!(j["code"], "too large");
    assert_eq!(
        j["message"],
        format!("request body is larger than the limit of {LIMIT} bytes")
    );
}

#[tokio::test]
async fn oversize_body_is_413_and_stores_nothing() {
    let s = Server::start().await;
    let body = lines(LIMIT + 1);
    assert!(body.len() > LIMIT);
    let r = s.post("/api/v2/write", body).await;
    assert_too_large(&r);
    assert!(!s.has_table("gpu"));

    // Just under the limit is fine.
    let mut body = lines(LIMIT - 100);
    body.truncate(body[..LIMIT - 100].rfind('\n').unwrap() + 1);
    let r = s.post("/api/v2/write", body).await;
    assert_eq!(r.status, 204, "{}", r.body);
}

#[tokio::test]
async fn gzip_that_inflates_past_the_limit_is_413() {
    let s = Server::start().await;
    let plain = lines(4 * LIMIT);
    let compressed = gzip(plain.as_bytes());
    assert!(compressed.len() < LIMIT, "the compressed body itself fits");
    let r = s.post_gzip("/api/v2/write", compressed).await;
    assert_too_large(&r);
    assert!(!s.has_table("gpu"));

    // The same for the Prometheus import.
    let prom = "up{job=\"x\"} 1 1000\n".repeat(LIMIT / 10);
    let r = s
        .post_gzip("/api/v1/import/prometheus", gzip(prom.as_bytes()))
        .await;
    assert_too_large(&r);
    assert!(!s.has_table("up"));
}

#[tokio::test]
async fn valid_gzip_is_stored() {
    let s = Server::start().await;
    let body = "gpu,host=a util=1 1000000000\ngpu,host=b util=2 2000000000\n";
    let r = s.post_gzip("/api/v2/write", gzip(body.as_bytes())).await;
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(
        s.query("SELECT host, util FROM gpu ORDER BY host").await,
        "\
+------+------+
| host | util |
+------+------+
| a    | 1.0  |
| b    | 2.0  |
+------+------+"
    );

    // Positions in errors refer to the inflated body.
    let body = "gpu,host=c util=3 3000000000\ngpu,host=d util=oops 4000000000\n";
    let r = s.post_gzip("/api/v2/write", gzip(body.as_bytes())).await;
    assert_eq!(r.status, 400, "{}", r.body);
    let j = r.json();
    assert_eq!(j["rejected"][0]["line"], 2);
    assert_eq!(
        j["rejected"][0]["byte_offset"],
        body.find("oops").unwrap(),
        "{}",
        r.body
    );
    assert_eq!(j["accepted_lines"], 1);
}

#[tokio::test]
async fn bad_gzip_is_400_naming_gzip() {
    let s = Server::start().await;
    let r = s
        .post_gzip("/api/v2/write", b"gpu,host=a util=1 1\n".to_vec())
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(
        r.message(),
        "invalid gzip stream near compressed byte 0: \
         not a gzip stream (it must start with the bytes 1f 8b)"
    );

    // A real gzip header followed by garbage, and a truncated stream.
    let mut corrupt = gzip(&b"gpu,host=a util=1 1\n".repeat(50));
    for b in &mut corrupt[10..20] {
        *b = 0xff;
    }
    let good = gzip(&b"gpu,host=a util=1 1\n".repeat(50));
    let truncated = good[..good.len() - 8].to_vec();
    for body in [corrupt, truncated] {
        let r = s.post_gzip("/api/v2/write", body).await;
        assert_eq!(r.status, 400, "{}", r.body);
        assert!(
            r.message()
                .starts_with("invalid gzip stream near compressed byte"),
            "{}",
            r.body
        );
    }
    assert!(!s.has_table("gpu"));
}

#[tokio::test]
async fn non_utf8_body_is_400_naming_the_byte() {
    let s = Server::start().await;
    let mut body = b"gpu,host=a util=1 1000000000\ngpu,host=".to_vec();
    let at = body.len();
    body.extend_from_slice(b"\xff util=2 2000000000\n");
    let r = s.post("/api/v2/write", body.clone()).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(
        r.message(),
        format!("request body is not valid UTF-8 at byte {at}")
    );
    // The body cannot be split into lines reliably, so none of it is stored.
    assert!(!s.has_table("gpu"));

    // Inside gzip, the offset is in the inflated body.
    let r = s.post_gzip("/api/v2/write", gzip(&body)).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(
        r.message(),
        format!("request body is not valid UTF-8 at byte {at}")
    );
}

#[tokio::test]
async fn over_memory_budget_is_503_with_retry_after() {
    let s = Server::start_with(|c| c.memory_budget = 1).await;
    // The buffer is empty, so the first write is accepted...
    let r = s
        .post("/api/v2/write", "gpu,host=a util=1 1000000000\n")
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    // ...and leaves it over budget until a persist.
    let r = s
        .post("/api/v2/write", "gpu,host=b util=2 2000000000\n")
        .await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(header(&r, "retry-after"), Some("1"));
    let j = r.json();
    assert_eq!(j["code"], "unavailable");
    assert!(
        j["message"]
            .as_str()
            .unwrap()
            .starts_with("write buffer is over its memory budget"),
        "{}",
        r.body
    );
    let r = s.post("/api/v1/import/prometheus", "up 1 1000\n").await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(header(&r, "retry-after"), Some("1"));

    // A persist drains the buffer and the retry succeeds.
    s.db.persist().await.expect("persist");
    let r = s
        .post("/api/v2/write", "gpu,host=b util=2 2000000000\n")
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(
        s.query("SELECT host, util FROM gpu ORDER BY host").await,
        "\
+------+------+
| host | util |
+------+------+
| a    | 1.0  |
| b    | 2.0  |
+------+------+"
    );
}

#[tokio::test]
async fn unsupported_content_encoding_is_415() {
    let s = Server::start().await;
    for encoding in ["br", "deflate", "zstd"] {
        let r = s
            .post_with(
                "/api/v2/write",
                &[("content-encoding", encoding)],
                "gpu,host=a util=1 1000000000\n",
            )
            .await;
        assert_eq!(r.status, 415, "{encoding}: {}", r.body);
    }
    assert!(!s.has_table("gpu"));
}

#[tokio::test]
async fn a_request_touching_too_many_time_partitions_stores_nothing() {
    let s = Server::start().await;
    let hour = 3_600_000_000_000i64;
    // Within the limit: three hourly partitions, several rows each, out of order.
    let mut ok = String::new();
    for (i, p) in [0, 1, 0, 2, 1, 2].iter().enumerate() {
        ok.push_str(&format!("m v={i} {}\n", p * hour + i as i64));
    }
    let r = s.post("/api/v2/write", ok).await;
    assert_eq!(r.status, 204, "{}", r.body);
    // One more partition, on line 3: refused whole.
    let body = format!(
        "m v=10 {}\nm v=11 {}\nm v=12 {}\nm v=13 {}\n",
        hour,
        5 * hour,
        100 * 168 * hour,
        6 * hour
    );
    let r = s.post("/api/v2/write", body).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.message().contains("line 4:"), "{}", r.message());
    assert!(
        r.message().contains("--max-write-partitions"),
        "{}",
        r.message()
    );
    assert!(
        r.message().contains("nothing was stored"),
        "{}",
        r.message()
    );
    let rows = s.query("SELECT count(*) AS n FROM m").await;
    assert!(rows.contains("| 6 |"), "{rows}");
}
