//! Abuse of the front door: token guessing, sign-in floods, token minting and live streams.
//!
//! Each limit answers the abuser and nobody else: guessing from one address is answered 429
//! without checking credentials; one token signing in again and again ends only its own
//! sessions; minting and streams are capped per supplier and per token; and a stream ends
//! when its session is signed out or its token revoked.

use std::time::Duration;

use reqwest::StatusCode;
use rigwatch_storage::auth::{AuthStore, Role};

use super::harness::{Server, temp_dir};

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// A client for a stream that stays open: no overall timeout.
fn stream_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

/// Signs in with `token`: the cookie header value and the CSRF token.
async fn sign_in(c: &reqwest::Client, base: &str, token: &str) -> (String, String) {
    let r = c
        .post(format!("{base}/portal/login"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let cookie = r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let body: serde_json::Value = r.json().await.unwrap();
    (cookie, body["csrf"].as_str().unwrap().to_string())
}

/// Reads `resp` (an event stream) until it ends; what it sent. Fails after `limit`.
async fn read_to_end(mut resp: reqwest::Response, limit: Duration) -> String {
    let mut out = String::new();
    let read = async {
        while let Some(chunk) = resp.chunk().await.unwrap() {
            out.push_str(&String::from_utf8_lossy(&chunk));
        }
    };
    if tokio::time::timeout(limit, read).await.is_err() {
        panic!("the stream did not end within {limit:?}");
    }
    out
}

/// The first chunk of an event stream.
async fn first_event(resp: &mut reqwest::Response) -> String {
    let chunk = tokio::time::timeout(Duration::from_secs(60), resp.chunk())
        .await
        .expect("no event within 60 s")
        .unwrap()
        .expect("the stream ended at once");
    String::from_utf8_lossy(&chunk).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_guessing_is_throttled_per_address() {
    let dir = temp_dir();
    let data = dir.path().join("data");
    let server = Server::start(&data, &[], &[]).await;
    let auth = AuthStore::open(&data).unwrap();
    auth.add_supplier("acme").unwrap();
    let good = auth.issue(Role::Supplier, Some("acme"), None, "t").unwrap();
    let c = client();
    let me = |token: String| {
        c.get(format!("{}/portal/api/me", server.base))
            .bearer_auth(token)
            .send()
    };
    // A client retrying one stale token is one failure, however often it retries.
    for _ in 0..30 {
        assert_eq!(me("rw_stale".into()).await.unwrap().status(), 401);
    }
    // Guessing: 19 more distinct wrong tokens are checked and refused...
    for i in 0..19 {
        assert_eq!(me(format!("rw_guess_{i}")).await.unwrap().status(), 401);
    }
    // ...then the address is throttled: no credential is checked, not even a good one.
    for token in ["rw_guess_next".to_string(), good.token.clone()] {
        let r = me(token).await.unwrap();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        let retry: u64 = r.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=60).contains(&retry), "Retry-After: {retry}");
        let body = r.text().await.unwrap();
        assert!(body.contains("too many failed sign-ins"), "{body}");
    }
    // Liveness stays public.
    assert_eq!(
        c.get(format!("{}/health", server.base))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert!(server.log().contains("throttling a client"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_ins_mints_and_streams_are_capped_per_principal() {
    let dir = temp_dir();
    let data = dir.path().join("data");
    let server = Server::start(&data, &[], &[]).await;
    let base = server.base.clone();
    let auth = AuthStore::open(&data).unwrap();
    auth.add_supplier("supplier-a").unwrap();
    auth.add_supplier("supplier-b").unwrap();
    let a = auth
        .issue(Role::Supplier, Some("supplier-a"), None, "t")
        .unwrap();
    let b = auth
        .issue(Role::Supplier, Some("supplier-b"), None, "t")
        .unwrap();
    let c = client();
    let me = |cookie: String| {
        c.get(format!("{base}/portal/api/me"))
            .header("cookie", cookie)
            .send()
    };

    // Sessions: A signing in 40 times ends only A's own oldest sessions, never B's.
    let (b_cookie, b_csrf) = sign_in(&c, &base, &b.token).await;
    let mut a_cookies = Vec::new();
    for _ in 0..40 {
        a_cookies.push(sign_in(&c, &base, &a.token).await.0);
    }
    assert_eq!(me(b_cookie.clone()).await.unwrap().status(), 200);
    assert_eq!(me(a_cookies[0].clone()).await.unwrap().status(), 401);
    assert_eq!(
        me(a_cookies.last().unwrap().clone())
            .await
            .unwrap()
            .status(),
        200
    );

    // Minting: 10 agent tokens per supplier per hour, then 429 naming the limit.
    for _ in 0..10 {
        let r = c
            .post(format!("{base}/portal/api/agent-token"))
            .bearer_auth(&a.token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
    }
    let r = c
        .post(format!("{base}/portal/api/agent-token"))
        .bearer_auth(&a.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((3_000..=3_600).contains(&retry), "Retry-After: {retry}");
    let body = r.text().await.unwrap();
    assert!(body.contains("at most 10 agent tokens"), "{body}");
    // Another supplier is not affected.
    let r = c
        .post(format!("{base}/portal/api/agent-token"))
        .bearer_auth(&b.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    // Streams: 8 per token, then 429; another token still gets one.
    let sc = stream_client();
    let open = |token: &str| {
        sc.get(format!("{base}/portal/events"))
            .bearer_auth(token)
            .send()
    };
    let mut a_streams = Vec::new();
    for _ in 0..8 {
        let r = open(&a.token).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        a_streams.push(r);
    }
    let r = open(&a.token).await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers().contains_key("retry-after"));
    assert!(r.text().await.unwrap().contains("at most 8 live streams"));

    // Signing out ends a stream opened with the session.
    let mut b_stream = sc
        .get(format!("{base}/portal/events"))
        .header("cookie", &b_cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(b_stream.status(), StatusCode::OK);
    assert!(first_event(&mut b_stream).await.contains("event: gpus"));
    let r = c
        .post(format!("{base}/portal/logout"))
        .header("cookie", &b_cookie)
        .header("x-rigwatch-csrf", &b_csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let rest = read_to_end(b_stream, Duration::from_secs(30)).await;
    assert!(rest.contains("event: end"), "{rest}");

    // Revoking a token ends the streams opened with it.
    let mut a_stream = a_streams.pop().unwrap();
    first_event(&mut a_stream).await;
    auth.revoke(&a.id).unwrap();
    let rest = read_to_end(a_stream, Duration::from_secs(30)).await;
    assert!(rest.contains("event: end"), "{rest}");
}

/// Each front-door limit is a flag: a server started with small ones applies them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_front_door_limits_follow_their_flags() {
    let dir = temp_dir();
    let data = dir.path().join("data");
    let server = Server::start(
        &data,
        &[
            "--auth-failures-per-minute",
            "3",
            "--agent-token-mints-per-hour",
            "2",
            "--max-streams-per-token",
            "1",
            "--max-sessions-per-token",
            "1",
        ],
        &[],
    )
    .await;
    let base = server.base.clone();
    let auth = AuthStore::open(&data).unwrap();
    auth.add_supplier("acme").unwrap();
    let a = auth.issue(Role::Supplier, Some("acme"), None, "t").unwrap();
    let c = client();
    // One session per token: signing in again ends the first.
    let (first_cookie, _) = sign_in(&c, &base, &a.token).await;
    let (second_cookie, _) = sign_in(&c, &base, &a.token).await;
    for (cookie, status) in [(first_cookie, 401), (second_cookie, 200)] {
        let r = c
            .get(format!("{base}/portal/api/me"))
            .header("cookie", cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status);
    }
    for _ in 0..2 {
        let r = c
            .post(format!("{base}/portal/api/agent-token"))
            .bearer_auth(&a.token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    let r = c
        .post(format!("{base}/portal/api/agent-token"))
        .bearer_auth(&a.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let body = r.text().await.unwrap();
    assert!(body.contains("at most 2 agent tokens"), "{body}");
    assert!(body.contains("--agent-token-mints-per-hour"), "{body}");

    let sc = stream_client();
    let open = || {
        sc.get(format!("{base}/portal/events"))
            .bearer_auth(&a.token)
            .send()
    };
    let first = open().await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let r = open().await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(r.text().await.unwrap().contains("at most 1 live streams"));
    drop(first);

    // Three failed checks (the ended session above was one), then the address waits.
    for i in 0..2 {
        let r = c
            .get(format!("{base}/portal/api/me"))
            .bearer_auth(format!("rw_guess_{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    }
    let r = c
        .get(format!("{base}/portal/api/me"))
        .bearer_auth(&a.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
}
