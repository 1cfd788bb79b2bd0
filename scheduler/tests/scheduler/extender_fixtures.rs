//! The extender answers requests shaped exactly like kube-scheduler's (Go field names,
//! a full v1.Pod and v1.NodeList, or NodeNames when nodeCacheCapable).

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use rigwatch_scheduler::allocator::{Allocator, AllocatorConfig};
use rigwatch_scheduler::extender::{ExtenderState, extender_router};
use rigwatch_scheduler::{GpuSpec, Health, LiveView, NodeSpec, TaskDistribution, policy_by_name};
use serde_json::{Value, json};
use tower::ServiceExt;

fn state() -> Arc<ExtenderState> {
    let mut v = LiveView::new();
    for (node, model, n) in [
        ("gpu-node-a", "H100", 8),
        ("gpu-node-b", "A100", 4),
        ("gpu-node-c", "T4", 2),
    ] {
        v.add_node(NodeSpec {
            name: node.into(),
            supplier: "acme".into(),
            cpu_milli: 0,
            memory_mib: 0,
        });
        for i in 0..n {
            v.add_gpu(
                GpuSpec {
                    uuid: format!("{node}-{i}"),
                    node: node.into(),
                    model: model.into(),
                    memory_total_mib: 0,
                },
                0,
            )
            .unwrap();
        }
    }
    // node-c's GPUs are both down.
    v.set_health("gpu-node-c-0", Health::Unhealthy).unwrap();
    v.set_health("gpu-node-c-1", Health::Offline).unwrap();
    let a = Allocator::new(
        v,
        policy_by_name("rigwatch", 7).unwrap(),
        TaskDistribution::generic(),
        AllocatorConfig::default(),
    );
    ExtenderState::new(a, || 1_700_000_000_000)
}

/// A v1.Pod as kube-scheduler serialises it (trimmed of status noise, nothing renamed).
fn pod(uid: &str, gpus: &str, annotations: Value) -> Value {
    json!({
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {
            "name": "trainer-0",
            "namespace": "ml",
            "uid": uid,
            "resourceVersion": "48213",
            "creationTimestamp": "2026-11-25T01:00:00Z",
            "labels": { "app": "trainer" },
            "annotations": annotations
        },
        "spec": {
            "containers": [
                {
                    "name": "main",
                    "image": "nvcr.io/nvidia/pytorch:24.05-py3",
                    "resources": {
                        "limits": { "cpu": "8", "memory": "64Gi", "nvidia.com/gpu": gpus },
                        "requests": { "cpu": "8", "memory": "64Gi", "nvidia.com/gpu": gpus }
                    },
                    "terminationMessagePath": "/dev/termination-log",
                    "imagePullPolicy": "IfNotPresent"
                },
                { "name": "sidecar", "image": "busybox", "resources": {} }
            ],
            "schedulerName": "default-scheduler",
            "priority": 0,
            "restartPolicy": "Always"
        },
        "status": { "phase": "Pending", "qosClass": "Guaranteed" }
    })
}

fn node_list(names: &[&str]) -> Value {
    json!({
        "kind": "NodeList",
        "apiVersion": "v1",
        "metadata": { "resourceVersion": "48200" },
        "items": names.iter().map(|n| json!({
            "metadata": { "name": n, "labels": { "kubernetes.io/hostname": n } },
            "status": { "allocatable": { "nvidia.com/gpu": "8" } }
        })).collect::<Vec<_>>()
    })
}

async fn post(st: &Arc<ExtenderState>, path: &str, body: Value) -> (StatusCode, Value) {
    let req = Request::post(path)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let resp = extender_router(st.clone()).oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, serde_json::from_slice(&bytes).unwrap())
}

#[tokio::test]
async fn filter_with_node_list_drops_nodes_that_cannot_fit() {
    let st = state();
    let args = json!({ "Pod": pod("uid-1", "4", json!({})), "Nodes": node_list(&["gpu-node-a", "gpu-node-b", "gpu-node-c", "cpu-node"]) });
    let (status, r) = post(&st, "/filter", args).await;
    assert_eq!(status, StatusCode::OK);
    let kept: Vec<&str> = r["Nodes"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(kept, ["gpu-node-a", "gpu-node-b"]);
    assert_eq!(r["Nodes"]["kind"], "NodeList");
    assert!(
        r["FailedNodes"]["gpu-node-c"]
            .as_str()
            .unwrap()
            .contains("no healthy GPU")
    );
    assert!(
        r["FailedNodes"]["cpu-node"]
            .as_str()
            .unwrap()
            .contains("not managed")
    );
    assert_eq!(r["Error"], "");
    assert!(r["NodeNames"].is_null());
}

#[tokio::test]
async fn filter_with_node_names_and_lowercase_keys() {
    let st = state();
    // Go's encoding/json matches keys case-insensitively: "pod"/"nodenames" work too.
    let args = json!({ "pod": pod("uid-2", "1", json!({ "rigwatch.io/gpu-models": "A100" })), "nodenames": ["gpu-node-a", "gpu-node-b"] });
    let (status, r) = post(&st, "/filter", args).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(r["NodeNames"], json!(["gpu-node-b"]));
    assert!(r["FailedNodes"]["gpu-node-a"].is_string());
}

#[tokio::test]
async fn prioritize_then_bind_creates_leases_and_refuses_over_allocation() {
    let st = state();
    let p = pod("uid-3", "0", json!({ "rigwatch.io/gpu-milli": "500" }));
    let (status, r) = post(
        &st,
        "/prioritize",
        json!({ "Pod": p, "NodeNames": ["gpu-node-a", "gpu-node-b", "gpu-node-c"] }),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let list = r.as_array().unwrap();
    assert_eq!(list.len(), 3);
    for h in list {
        let s = h["Score"].as_i64().unwrap();
        assert!((0..=10).contains(&s), "{h}");
    }
    assert_eq!(list[2], json!({ "Host": "gpu-node-c", "Score": 0 }));
    assert!(list.iter().any(|h| h["Score"] == 10));

    let bind = json!({ "PodName": "trainer-0", "PodNamespace": "ml", "PodUID": "uid-3", "Node": "gpu-node-b" });
    let (status, r) = post(&st, "/bind", bind.clone()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(r, json!({ "Error": "" }));
    st.allocator.with_allocator(&mut |a| {
        let leases: Vec<_> = a.open_leases().collect();
        assert_eq!(leases.len(), 1);
        assert_eq!(leases[0].node, "gpu-node-b");
        assert_eq!(leases[0].share_milli, 500);
    });
    // Binding again to the same node is idempotent; to another node is an error.
    assert_eq!(post(&st, "/bind", bind).await.1, json!({ "Error": "" }));
    let other = json!({ "PodName": "trainer-0", "PodNamespace": "ml", "PodUID": "uid-3", "Node": "gpu-node-a" });
    assert!(
        post(&st, "/bind", other).await.1["Error"]
            .as_str()
            .unwrap()
            .contains("already bound")
    );

    // An 8-GPU pod fits node-a only; once bound, a second one fits nowhere.
    for uid in ["uid-4", "uid-5"] {
        post(
            &st,
            "/filter",
            json!({ "Pod": pod(uid, "8", json!({})), "NodeNames": ["gpu-node-a"] }),
        )
        .await;
    }
    let b4 =
        json!({ "PodName": "p4", "PodNamespace": "ml", "PodUID": "uid-4", "Node": "gpu-node-a" });
    assert_eq!(post(&st, "/bind", b4).await.1, json!({ "Error": "" }));
    let b5 =
        json!({ "PodName": "p5", "PodNamespace": "ml", "PodUID": "uid-5", "Node": "gpu-node-a" });
    assert!(
        post(&st, "/bind", b5).await.1["Error"]
            .as_str()
            .unwrap()
            .contains("fits")
    );
    let (_, r) = post(
        &st,
        "/filter",
        json!({ "Pod": pod("uid-6", "1", json!({})), "NodeNames": ["gpu-node-a"] }),
    )
    .await;
    assert_eq!(r["NodeNames"], json!([]));
}

#[tokio::test]
async fn bad_requests_say_what_was_wrong() {
    let st = state();
    let (status, r) = post(&st, "/bind", json!({ "PodName": "x" })).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(r["Error"].as_str().unwrap().contains("Node"));
    let (_, r) = post(
        &st,
        "/bind",
        json!({ "PodUID": "never-seen", "Node": "gpu-node-a" }),
    )
    .await;
    assert!(r["Error"].as_str().unwrap().contains("not seen"));
    let (status, _) = post(&st, "/filter", json!({ "NodeNames": [] })).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (_, r) = post(
        &st,
        "/filter",
        json!({ "Pod": pod("u", "12", json!({})), "NodeNames": ["gpu-node-a"] }),
    )
    .await;
    assert!(r["Error"].as_str().unwrap().contains("at most 8"));
    let req = Request::post("/filter")
        .body(Body::from("{not json"))
        .unwrap();
    let resp = extender_router(st).oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
}
