//! One error body on rigwatch's own APIs: every refusal, from the access layer to SQL, the DSL,
//! PromQL, the allocator, the portal and the agent's routes, answers
//! `{"status": "error", "errorType": KIND, "error": MESSAGE}` and nothing else beside the
//! documented details. The InfluxDB-compatible write routes keep InfluxDB's `{"code",
//! "message"}` (checked here too, so the exception stays the only one).

use reqwest::{Method, StatusCode};
use rigwatch_storage::auth::{AuthStore, Role};
use serde_json::Value;

use super::harness::{ADMIN_TOKEN, Server, temp_dir};

/// Fields a route may add beside the three (see `rigwatch_common::http_error`).
const DETAILS: &[&str] = &["request_id", "position", "suggestion", "retry_after_s"];

struct Case {
    what: &'static str,
    method: Method,
    path: &'static str,
    token: Option<String>,
    body: Option<&'static str>,
    status: StatusCode,
    kind: &'static str,
}

fn case(
    what: &'static str,
    method: Method,
    path: &'static str,
    token: Option<&str>,
    body: Option<&'static str>,
    status: StatusCode,
    kind: &'static str,
) -> Case {
    Case {
        what,
        method,
        path,
        token: token.map(str::to_string),
        body,
        status,
        kind,
    }
}

async fn send(server: &Server, c: &Case) -> (StatusCode, Value) {
    let client = reqwest::Client::new();
    let mut req = client.request(c.method.clone(), format!("{}{}", server.base, c.path));
    if let Some(t) = &c.token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = c.body {
        req = req
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_has_the_one_error_body() {
    let dir = temp_dir();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let auth = AuthStore::open(&data).unwrap();
    auth.add_supplier("acme").unwrap();
    let agent = auth
        .issue(Role::Agent, Some("acme"), None, "t")
        .unwrap()
        .token;
    let supplier = auth
        .issue(Role::Supplier, Some("acme"), None, "t")
        .unwrap()
        .token;
    drop(auth);
    let server = Server::start(&data, &[], &[]).await;
    let admin = Some(ADMIN_TOKEN);
    use StatusCode as S;
    let cases = [
        case(
            "no token",
            Method::GET,
            "/api/v1/sql?q=SELECT%201",
            None,
            None,
            S::UNAUTHORIZED,
            "unauthorized",
        ),
        case(
            "a wrong token",
            Method::GET,
            "/api/v1/sql?q=SELECT%201",
            Some("not-a-token"),
            None,
            S::UNAUTHORIZED,
            "unauthorized",
        ),
        case(
            "a supplier on an operator route",
            Method::GET,
            "/api/v1/rules",
            Some(&supplier),
            None,
            S::FORBIDDEN,
            "forbidden",
        ),
        case(
            "no such route",
            Method::GET,
            "/api/v1/nothing",
            admin,
            None,
            S::NOT_FOUND,
            "not_found",
        ),
        case(
            "a method the route does not take",
            Method::DELETE,
            "/api/v1/sql",
            admin,
            None,
            S::METHOD_NOT_ALLOWED,
            "bad_data",
        ),
        case(
            "bad SQL",
            Method::GET,
            "/api/v1/sql?q=SELEC%201",
            admin,
            None,
            S::BAD_REQUEST,
            "bad_data",
        ),
        case(
            "a DSL typo",
            Method::GET,
            "/api/v1/dsl?q=gpus%5B5m%5D%20%7C%20statz%20avg(utilization)",
            admin,
            None,
            S::BAD_REQUEST,
            "bad_data",
        ),
        case(
            "bad PromQL",
            Method::GET,
            "/api/v1/query?query=rate(",
            admin,
            None,
            S::BAD_REQUEST,
            "bad_data",
        ),
        case(
            "a job that can never be placed",
            Method::POST,
            "/api/v1/jobs",
            admin,
            Some(r#"{"gpus": 9}"#),
            S::UNPROCESSABLE_ENTITY,
            "execution",
        ),
        case(
            "a job that is not JSON",
            Method::POST,
            "/api/v1/jobs",
            admin,
            Some("{"),
            S::BAD_REQUEST,
            "bad_data",
        ),
        case(
            "no such job",
            Method::GET,
            "/api/v1/jobs/987654",
            admin,
            None,
            S::NOT_FOUND,
            "not_found",
        ),
        case(
            "no such dashboard",
            Method::GET,
            "/portal/api/dashboards/nothing",
            Some(&supplier),
            None,
            S::NOT_FOUND,
            "not_found",
        ),
        case(
            "no such portal asset",
            Method::GET,
            "/portal/assets/nothing.js",
            None,
            None,
            S::NOT_FOUND,
            "not_found",
        ),
        case(
            "an agent writing before it registered",
            Method::POST,
            "/api/v1/agent/write?worker=w1",
            Some(&agent),
            Some("gpu,gpu_uuid=GPU-1 utilization=1 1"),
            S::FORBIDDEN,
            "unregistered",
        ),
        case(
            "an agent registering garbage",
            Method::POST,
            "/api/v1/agent/register",
            Some(&agent),
            Some("{"),
            S::BAD_REQUEST,
            "bad_data",
        ),
        case(
            "a payout that is not JSON",
            Method::POST,
            "/api/v1/payouts",
            admin,
            Some("["),
            S::BAD_REQUEST,
            "bad_data",
        ),
    ];
    for c in &cases {
        let (status, body) = send(&server, c).await;
        assert_eq!(status, c.status, "{}: {body}", c.what);
        let Some(obj) = body.as_object() else {
            panic!("{}: the body is not a JSON object: {body}", c.what);
        };
        assert_eq!(
            obj.get("status"),
            Some(&Value::from("error")),
            "{}: {body}",
            c.what
        );
        assert_eq!(
            obj.get("errorType"),
            Some(&Value::from(c.kind)),
            "{}: {body}",
            c.what
        );
        let message = obj.get("error").and_then(Value::as_str).unwrap_or_default();
        assert!(!message.is_empty(), "{}: no message: {body}", c.what);
        for k in obj.keys() {
            assert!(
                ["status", "errorType", "error"].contains(&k.as_str())
                    || DETAILS.contains(&k.as_str()),
                "{}: undocumented field `{k}`: {body}",
                c.what
            );
        }
    }

    // The one exception: InfluxDB's clients read `code` and `message` from its write API.
    let c = case(
        "line protocol that does not parse",
        Method::POST,
        "/api/v2/write",
        admin,
        Some("gpu,gpu_uuid=x utilization="),
        S::BAD_REQUEST,
        "",
    );
    let (status, body) = send(&server, &c).await;
    assert_eq!(status, c.status, "{body}");
    assert!(
        body["code"].is_string() && body["message"].is_string(),
        "{body}"
    );
}
