//! Webhook delivery: a message the receiver rejects for good is dropped, the rest delivered
//! in order.

use std::time::Duration;

use parking_lot::Mutex;

use super::*;

#[tokio::test]
async fn a_rejected_message_is_dropped_and_the_rest_delivered() {
    use axum::routing::post;
    let got: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        post(move |body: String| {
            let seen = seen.clone();
            async move {
                if body.contains("poison") {
                    return axum::http::StatusCode::BAD_REQUEST;
                }
                seen.lock().push(body);
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let dir = tempfile::tempdir().unwrap();
    let queue = Arc::new(outbox::Queue::open(dir.path(), 10).unwrap());
    for body in ["poison", "good-1", "good-2"] {
        queue.push(body.as_bytes()).unwrap();
    }
    let metrics = Metrics::default();
    let sender = tokio::spawn(outbox::deliver(url, queue.clone(), metrics.clone()));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while got.lock().len() < 2 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(*got.lock(), ["good-1", "good-2"]);
    assert_eq!(metrics.dropped.get(), 1);
    assert_eq!(metrics.sent.get(), 2);
    sender.abort();
    server.abort();
}
