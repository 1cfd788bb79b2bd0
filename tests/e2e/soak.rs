//! A bounded soak: simulated agents stream to the real server over loopback while every
//! abuse of the "no request takes the server down" list runs against it at once: deep
//! PromQL, absurd time ranges, SQL bombs, token guessing, sign-in floods, stream floods,
//! partition bombs, oversized and never-ending bodies, and a write flood from an operator.
//!
//! It checks that the server stays up, that every abuser gets a refusal (never a 5xx other
//! than the documented 503s, never a hang), that the agents' acknowledgement latency stays
//! under 1 s at the 99th percentile, and that every acknowledged sample is stored.
//!
//! Size: `RW_SOAK_SECS` (default 40, what CI runs) and `RW_SOAK_AGENTS` (default 12 agents
//! of 8 GPUs, one sample per GPU per second). For a longer run:
//! `RW_SOAK_SECS=300 RW_SOAK_AGENTS=40 cargo test --test e2e soak -- --nocapture`.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use reqwest::StatusCode;
use rigwatch_ingest::agent::lag::{LagHistogram, quantile};
use rigwatch_ingest::agent::sim::Simulator;
use rigwatch_ingest::agent::{AgentConfig, AgentHandle};
use rigwatch_storage::auth::{AuthStore, Role};

use super::harness::{ADMIN_TOKEN, Server, temp_dir};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A client whose requests come from `127.0.0.2`: the abusers' address, apart from the
/// agents on `127.0.0.1`.
fn abuser_client() -> reqwest::Client {
    client_from(Ipv4Addr::new(127, 0, 0, 2))
}

/// A client whose requests come from `addr` (any of 127.0.0.0/8 reaches the server).
fn client_from(addr: Ipv4Addr) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .local_address(IpAddr::V4(addr))
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// What each abuser got back: status → count, and anything it did not expect.
#[derive(Debug, Default)]
struct Outcomes {
    by_abuser: BTreeMap<&'static str, BTreeMap<u16, u64>>,
    unexpected: Vec<String>,
}

type Shared = Arc<Mutex<Outcomes>>;

fn record(out: &Shared, who: &'static str, status: StatusCode, allowed: &[u16], body: &str) {
    let mut o = out.lock();
    *o.by_abuser
        .entry(who)
        .or_default()
        .entry(status.as_u16())
        .or_default() += 1;
    if !allowed.contains(&status.as_u16()) {
        let body: String = body.chars().take(300).collect();
        o.unexpected.push(format!("{who}: {status}: {body}"));
    }
}

/// Sends `req` and records its answer as `who`'s, failing on a transport error.
async fn send(out: &Shared, who: &'static str, allowed: &[u16], req: reqwest::RequestBuilder) {
    let r = req.send().await.unwrap();
    let s = r.status();
    record(out, who, s, allowed, &r.text().await.unwrap());
}

/// Runs `f` again and again until `until`, pausing `pause` between rounds.
async fn repeat<F, Fut>(until: Instant, pause: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    while Instant::now() < until {
        f().await;
        tokio::time::sleep(pause).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn agents_stay_prompt_and_lose_nothing_while_every_abuse_runs() {
    let secs = env_or("RW_SOAK_SECS", 40);
    let n_agents = env_or("RW_SOAK_AGENTS", 12) as usize;
    let dir = temp_dir();
    let data = dir.path().join("data");
    let server = Server::start(
        &data,
        &[
            "--query-timeout",
            "3s",
            "--query-max-concurrent",
            "1",
            "--max-concurrent-writes",
            "8",
            "--max-queued-writes",
            "256",
            "--max-queued-writes-per-principal",
            "4",
            "--max-body",
            "4MiB",
        ],
        &[],
    )
    .await;
    let auth = AuthStore::open(&data).unwrap();
    let base = server.base.clone();

    // The honest fleet: a few suppliers, agents of 8 GPUs each, spread over the second.
    let spool = dir.path().join("spool");
    let mut agents = Vec::new();
    for i in 0..n_agents {
        let supplier = format!("honest-{}", i % 4);
        let token = match auth.add_supplier(&supplier) {
            Ok(t) => t.token,
            Err(_) => {
                auth.issue(Role::Agent, Some(&supplier), None, "soak")
                    .unwrap()
                    .token
            }
        };
        let worker = format!("{supplier}-w{i}");
        let mut config = AgentConfig::new(&base, &token, &worker, spool.join(&worker));
        config.backoff_max = Duration::from_secs(2);
        config.start_delay = Duration::from_millis(1000 * i as u64 / n_agents as u64);
        let sim = Simulator::new(8, 1_000 + i as u64, config.interval);
        agents.push(AgentHandle::spawn(config, sim).unwrap());
    }

    // The attacker: a supplier of its own, with a supplier token for the query surfaces.
    let mallory = auth.add_supplier("mallory").unwrap();
    let _ = mallory;
    let evil = auth
        .issue(Role::Supplier, Some("mallory"), None, "soak")
        .unwrap()
        .token;

    let until = Instant::now() + Duration::from_secs(secs);
    let out: Shared = Arc::default();
    let mut tasks = Vec::new();

    // 1. A 250,000-term PromQL chain (under the body limit): a located 400.
    tasks.push(tokio::spawn({
        let (c, base, evil, out) = (abuser_client(), base.clone(), evil.clone(), out.clone());
        async move {
            let chain = vec!["1"; 250_000].join("+");
            repeat(until, Duration::from_millis(500), || async {
                send(
                    &out,
                    "deep promql",
                    &[400],
                    c.post(format!("{base}/api/v1/query"))
                        .bearer_auth(&evil)
                        .form(&[("query", chain.as_str())]),
                )
                .await;
            })
            .await;
        }
    }));
    // 2. Time arithmetic at the edges of f64.
    tasks.push(tokio::spawn({
        let (c, base, evil, out) = (abuser_client(), base.clone(), evil.clone(), out.clone());
        async move {
            repeat(until, Duration::from_millis(200), || async {
                send(
                    &out,
                    "huge range",
                    &[400],
                    c.get(format!("{base}/api/v1/query_range"))
                        .bearer_auth(&evil)
                        .query(&[
                            ("query", "gpu_utilization"),
                            ("start", "-1e300"),
                            ("end", "1e300"),
                            ("step", "1"),
                        ]),
                )
                .await;
            })
            .await;
        }
    }));
    // 3. SQL bombs: a 5e9-row series (stopped by the deadline, or refused for concurrency),
    //    a recursive CTE, and an error whose text says "Parquet".
    tasks.push(tokio::spawn({
        let (c, base, evil, out) = (abuser_client(), base.clone(), evil.clone(), out.clone());
        async move {
            let bombs = [
                ("sql bomb", "SELECT count(*) FROM generate_series(1, 5000000000)", &[503u16, 429][..]),
                (
                    "recursive cte",
                    "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r",
                    &[400u16, 429][..],
                ),
                ("parquet text", "SELECT CAST('Parquet' AS INT)", &[400u16, 429][..]),
            ];
            let mut i = 0;
            repeat(until, Duration::from_millis(100), || {
                let (who, q, allowed) = bombs[i % bombs.len()];
                i += 1;
                let (c, base, evil, out) = (c.clone(), base.clone(), evil.clone(), out.clone());
                async move {
                    let req = c.post(format!("{base}/api/v1/sql")).bearer_auth(&evil);
                    send(&out, who, allowed, req.body(q)).await;
                }
            })
            .await;
        }
    }));
    // 4. Token guessing: 401, then 429. From an address of its own: once throttled, an
    //    address gets 429 for every request, good credentials included (the other abusers
    //    would then be refused before their abuse is even looked at).
    tasks.push(tokio::spawn({
        let (c, base, out) = (
            client_from(Ipv4Addr::new(127, 0, 0, 3)),
            base.clone(),
            out.clone(),
        );
        async move {
            let mut n = 0u64;
            repeat(until, Duration::from_millis(20), || {
                n += 1;
                let (c, base, out) = (c.clone(), base.clone(), out.clone());
                async move {
                    let req = c
                        .get(format!("{base}/api/v1/labels"))
                        .bearer_auth(format!("rw_guess_{n}_0000000000000000"));
                    send(&out, "token guessing", &[401, 429], req).await;
                }
            })
            .await;
        }
    }));
    // 5. Sign-in flood with one token: each ends only the token's own oldest session.
    tasks.push(tokio::spawn({
        let (c, base, evil, out) = (abuser_client(), base.clone(), evil.clone(), out.clone());
        async move {
            repeat(until, Duration::from_millis(20), || async {
                send(
                    &out,
                    "sign-in flood",
                    &[200],
                    c.post(format!("{base}/portal/login")).bearer_auth(&evil),
                )
                .await;
            })
            .await;
        }
    }));
    // 6. Live streams: more than one token may hold; the extra ones are refused, the held
    //    ones stay open through the soak.
    tasks.push(tokio::spawn({
        let (base, evil, out) = (base.clone(), evil.clone(), out.clone());
        async move {
            let c = reqwest::Client::builder()
                .no_proxy()
                .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)))
                .build()
                .unwrap();
            let mut held = Vec::new();
            for _ in 0..12 {
                let r = c
                    .get(format!("{base}/portal/events"))
                    .bearer_auth(&evil)
                    .send()
                    .await
                    .unwrap();
                let s = r.status();
                if s == StatusCode::OK {
                    record(&out, "stream flood", s, &[200], "");
                    held.push(r);
                } else {
                    record(&out, "stream flood", s, &[429], &r.text().await.unwrap());
                }
            }
            tokio::time::sleep_until(until.into()).await;
            drop(held);
        }
    }));
    // 7. Partition bombs: 5,000 weekly timestamps in one request (operator route).
    tasks.push(tokio::spawn({
        let (c, base, out) = (abuser_client(), base.clone(), out.clone());
        async move {
            let week = 7 * 86_400 * 1_000_000_000i64;
            let body: String = (0..5_000i64)
                .map(|i| format!("bomb,k=v x=1 {}\n", i * week))
                .collect();
            repeat(until, Duration::from_millis(500), || async {
                let req = c.post(format!("{base}/api/v2/write"));
                let req = req.bearer_auth(ADMIN_TOKEN).body(body.clone());
                send(&out, "partition bomb", &[400, 503], req).await;
            })
            .await;
        }
    }));
    // 8. Bodies past the limit (4 MiB here): 413.
    tasks.push(tokio::spawn({
        let (c, base, out) = (abuser_client(), base.clone(), out.clone());
        async move {
            let big = "big,k=v x=1 1\n".repeat(5 << 20 >> 4);
            repeat(until, Duration::from_secs(2), || async {
                let r = c
                    .post(format!("{base}/api/v2/write"))
                    .bearer_auth(ADMIN_TOKEN)
                    .body(big.clone())
                    .send()
                    .await;
                match r {
                    Ok(r) => {
                        let s = r.status();
                        record(
                            &out,
                            "oversize body",
                            s,
                            &[413, 503],
                            &r.text().await.unwrap(),
                        );
                    }
                    // The server may close the connection once it has refused the body.
                    Err(e) if e.is_request() || e.is_body() => {
                        record(
                            &out,
                            "oversize body",
                            StatusCode::PAYLOAD_TOO_LARGE,
                            &[413],
                            "",
                        );
                    }
                    Err(e) => panic!("oversize body: {e}"),
                }
            })
            .await;
        }
    }));
    // 9. A write flood from an operator: valid 470 KiB bodies, eight at a time (each task
    //    built its body once, so that the test's own CPU goes to sending, not formatting).
    //    Admission control gives the token its share (4 slots) and answers the rest 503.
    for task in 0..8i64 {
        tasks.push(tokio::spawn({
            let (c, base, out) = (abuser_client(), base.clone(), out.clone());
            async move {
                let t0 = 1_700_000_000_000_000_000i64 + task * 1_000_000;
                let body: axum::body::Bytes = (0..12_000i64)
                    .map(|i| format!("flood,k=v{} x={i} {}\n", i % 50, t0 + i))
                    .collect::<String>()
                    .into();
                repeat(until, Duration::from_millis(1), || {
                    let (c, base, out, body) = (c.clone(), base.clone(), out.clone(), body.clone());
                    async move {
                        let req = c.post(format!("{base}/api/v2/write"));
                        let req = req.bearer_auth(ADMIN_TOKEN).body(body);
                        send(&out, "write flood", &[204, 503], req).await;
                    }
                })
                .await;
            }
        }));
    }
    // 10. A body that never arrives (headers promise 1,000 bytes, none follow) holds its
    //     write slot only until the body timeout: 408. Its own admin token, so that the
    //     flood's share does not refuse it first.
    let slow_token = auth.issue(Role::Admin, None, None, "slow").unwrap().token;
    let slow = tokio::spawn({
        let (addr, out) = (server.addr, out.clone());
        async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let sock = tokio::net::TcpSocket::new_v4().unwrap();
            sock.bind("127.0.0.2:0".parse().unwrap()).unwrap();
            let mut conn = sock.connect(addr).await.unwrap();
            let head = format!(
                "POST /api/v2/write HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {slow_token}\r\nContent-Length: 1000\r\n\r\n"
            );
            conn.write_all(head.as_bytes()).await.unwrap();
            let mut answer = Vec::new();
            let mut buf = [0u8; 4096];
            while !String::from_utf8_lossy(&answer).contains("\r\n\r\n") {
                let n = conn.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                answer.extend_from_slice(&buf[..n]);
            }
            let text = String::from_utf8_lossy(&answer).into_owned();
            let code: u16 = text
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::IM_A_TEAPOT);
            record(&out, "never-ending body", status, &[408], &text);
        }
    });

    for t in tasks {
        t.await.expect("an abuser panicked");
    }
    // The slow body is answered 30 s after it was admitted: wait for it if the soak was
    // shorter than that.
    if secs >= 35 {
        tokio::time::timeout(Duration::from_secs(20), slow)
            .await
            .expect("the never-ending body was not answered within the body timeout")
            .expect("the slow-body task panicked");
    } else {
        slow.abort();
    }

    // The server is up and answers.
    let health = reqwest::get(format!("{base}/health")).await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);

    // Stop the agents: what was not acknowledged stays in their spools.
    let stats: Vec<_> = agents.iter().map(|a| a.stats.clone()).collect();
    for a in &agents {
        (a.stopper())();
    }
    for a in agents {
        a.wait().await.expect("an agent failed");
    }
    let mut hist = LagHistogram::counts();
    for s in &stats {
        s.lag.add_to(&mut hist);
    }
    let p50 = quantile(&hist, 0.5).expect("no batch was acknowledged");
    let p99 = quantile(&hist, 0.99).expect("no batch was acknowledged");
    let acked: u64 = stats.iter().map(|s| s.batches_acked.load(Relaxed)).sum();
    let acked_rows = acked * 8;
    let spooled: u64 = stats.iter().map(|s| s.spool.batches.load(Relaxed)).sum();
    let produced: u64 = stats.iter().map(|s| s.gpu_rows.load(Relaxed)).sum();
    let stored = server.count("gpu").await;

    let o = out.lock();
    println!("soak: {secs} s, {n_agents} agents ({} GPUs)", n_agents * 8);
    println!(
        "soak: agents: {produced} samples produced, {acked_rows} acknowledged, {stored} stored, {spooled} batches left spooled; acknowledgement lag p50 {:.1} ms, p99 {:.1} ms",
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3
    );
    for (who, statuses) in &o.by_abuser {
        println!("soak: {who}: {statuses:?}");
    }
    assert!(
        o.unexpected.is_empty(),
        "unexpected answers:\n{}",
        o.unexpected.join("\n")
    );
    for who in [
        "deep promql",
        "huge range",
        "sql bomb",
        "token guessing",
        "sign-in flood",
        "stream flood",
        "partition bomb",
        "oversize body",
        "write flood",
    ] {
        assert!(o.by_abuser.contains_key(who), "{who} never got an answer");
    }
    let guessing = &o.by_abuser["token guessing"];
    assert!(
        guessing.get(&429).copied().unwrap_or(0) > 0,
        "token guessing was never throttled: {guessing:?}"
    );
    let streams = &o.by_abuser["stream flood"];
    assert!(
        streams.get(&429).copied().unwrap_or(0) > 0,
        "streams were not capped: {streams:?}"
    );
    assert!(
        stored >= acked_rows,
        "{acked_rows} samples acknowledged, only {stored} stored"
    );
    assert!(
        p99 < Duration::from_secs(1),
        "agents' p99 acknowledgement lag {p99:?} (p50 {p50:?})\n{}",
        server.log_tail(40)
    );
    // The agents got through: most of what they produced was acknowledged.
    assert!(
        acked_rows * 10 >= produced * 9,
        "only {acked_rows} of {produced} samples acknowledged"
    );
}
