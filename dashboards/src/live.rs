//! Latest values per GPU, through the scoped SQL path, and the `/portal/events` stream.
//!
//! The stream wakes on every write the store accepts ([`rigwatch_storage::Db::subscribe`])
//! and at least every [`TICK`], asks for the rows newer than what it last sent (with an
//! overlap for late rows), and sends one `gpus` event with each GPU's latest values. The
//! query runs with the caller's supplier scope, so a supplier's stream never carries
//! another supplier's GPU.

use std::convert::Infallible;
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use rigwatch_query::QueryService;
use rigwatch_query::format::{Format, encode};
use serde_json::Value;
use tokio::sync::broadcast::error::RecvError;

use crate::error::{Error, Result};

/// Longest wait between two snapshots when nothing is written.
pub const TICK: Duration = Duration::from_secs(5);
/// Shortest gap between two queries of one stream (writes arrive in bursts).
pub const MIN_GAP: Duration = Duration::from_millis(150);
/// How far back the first snapshot looks for a GPU's latest row.
pub const FIRST_WINDOW_NS: i64 = 24 * 3600 * 1_000_000_000;
/// Rows up to this much older than the newest row sent are read again (late writers).
pub const OVERLAP_NS: i64 = 60 * 1_000_000_000;

/// Metric fields sent for each GPU when the `gpu` table has them.
pub const LIVE_FIELDS: &[&str] = &[
    "utilization",
    "temperature",
    "power_watts",
    "memory_used_mib",
    "memory_total_mib",
    "sm_clock_mhz",
    "memory_clock_mhz",
];
/// Tags sent for each GPU when present.
pub const LIVE_TAGS: &[&str] = &["supplier", "worker", "model", "region", "gpu_index"];

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// The SQL for each GPU's latest row since `since_ns`, over the columns `gpu` really has.
pub fn latest_sql(columns: &[String], since_ns: i64) -> Option<String> {
    if !columns.iter().any(|c| c == "gpu_uuid") {
        return None;
    }
    let has = |c: &str| columns.iter().any(|x| x == c);
    let mut select = vec!["gpu_uuid".to_string()];
    let mut group = vec!["gpu_uuid".to_string()];
    for t in LIVE_TAGS.iter().filter(|t| has(t)) {
        select.push(format!("\"{t}\""));
        group.push(format!("\"{t}\""));
    }
    for f in LIVE_FIELDS.iter().filter(|f| has(f)) {
        // A row may carry only some fields: each field's latest non-null value.
        select.push(format!(
            "last_value(\"{f}\" ORDER BY time) FILTER (WHERE \"{f}\" IS NOT NULL) AS \"{f}\""
        ));
    }
    select.push("CAST(max(time) AS BIGINT) AS time_ns".into());
    Some(format!(
        "SELECT {} FROM gpu WHERE time > to_timestamp_nanos({since_ns}) GROUP BY {} ORDER BY gpu_uuid",
        select.join(", "),
        group.join(", ")
    ))
}

/// Each GPU's latest values since `since_ns` as JSON objects, seen with `scope`.
pub async fn latest(
    query: &QueryService,
    scope: Option<&str>,
    since_ns: i64,
) -> Result<Vec<Value>> {
    let ctx = query.scoped_context(scope)?;
    // A supplier with no rows yet (or a store with no `gpu` table) has nothing to show.
    let Ok(table) = ctx.table_provider("gpu").await else {
        return Ok(Vec::new());
    };
    let columns: Vec<String> = table
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let Some(sql) = latest_sql(&columns, since_ns) else {
        return Ok(Vec::new());
    };
    let (schema, batches) = query.sql_scoped(&sql, scope).await?;
    let bytes = encode(Format::Json, &schema, &batches)?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Array(rows)) => Ok(rows),
        Ok(_) => Ok(Vec::new()),
        Err(e) => Err(Error::Internal(format!("latest values: bad JSON: {e}"))),
    }
}

struct StreamState {
    query: QueryService,
    scope: Option<String>,
    rx: Option<tokio::sync::broadcast::Receiver<std::sync::Arc<rigwatch_storage::WriteBatch>>>,
    cursor: Option<i64>,
    last: Option<tokio::time::Instant>,
    once: bool,
    done: bool,
}

async fn next_event(st: &mut StreamState) -> Event {
    if st.cursor.is_some() {
        // Wait for a write or the tick, then keep a minimum gap between queries.
        let wait = async {
            match st.rx.as_mut() {
                Some(rx) => loop {
                    match rx.recv().await {
                        Ok(_) | Err(RecvError::Lagged(_)) => break,
                        Err(RecvError::Closed) => std::future::pending::<()>().await,
                    }
                },
                None => std::future::pending::<()>().await,
            }
        };
        let _ = tokio::time::timeout(TICK, wait).await;
        if let Some(last) = st.last {
            tokio::time::sleep_until(last + MIN_GAP).await;
        }
    }
    st.last = Some(tokio::time::Instant::now());
    let since = match st.cursor {
        None => now_ns() - FIRST_WINDOW_NS,
        Some(c) => c - OVERLAP_NS,
    };
    match latest(&st.query, st.scope.as_deref(), since).await {
        Ok(rows) => {
            let newest = rows.iter().filter_map(|r| r["time_ns"].as_i64()).max();
            st.cursor = Some(match (st.cursor, newest) {
                (Some(c), Some(n)) => c.max(n),
                (None, Some(n)) => n,
                (c, None) => c.unwrap_or_else(now_ns),
            });
            let body = serde_json::json!({ "server_time_ns": now_ns(), "gpus": rows });
            Event::default().event("gpus").data(body.to_string())
        }
        Err(e) => Event::default()
            .event("error")
            .data(serde_json::json!({ "error": e.to_string() }).to_string()),
    }
}

/// The SSE stream of one signed-in caller. With `once`, one snapshot and the end.
pub fn stream(
    query: QueryService,
    scope: Option<String>,
    once: bool,
) -> Sse<impl Stream<Item = std::result::Result<Event, Infallible>>> {
    let rx = Some(query.db().subscribe());
    let st = StreamState {
        query,
        scope,
        rx,
        cursor: None,
        last: None,
        once,
        done: false,
    };
    let s = futures::stream::unfold(st, |mut st| async move {
        if st.done {
            return None;
        }
        let ev = next_event(&mut st).await;
        st.done = st.once;
        Some((Ok(ev), st))
    });
    Sse::new(s).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latest_sql_uses_only_existing_columns() {
        let cols: Vec<String> = ["supplier", "gpu_uuid", "model", "utilization", "time"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let sql = latest_sql(&cols, 5).unwrap();
        assert!(
            sql.contains("last_value(\"utilization\" ORDER BY time)"),
            "{sql}"
        );
        assert!(!sql.contains("power_watts"), "{sql}");
        assert!(
            sql.contains("GROUP BY gpu_uuid, \"supplier\", \"model\""),
            "{sql}"
        );
        assert!(sql.contains("to_timestamp_nanos(5)"), "{sql}");
        assert!(latest_sql(&["x".to_string()], 0).is_none());
    }
}
