//! An object store that counts what goes through it: requests by kind and bytes each way,
//! exported as `rigwatch_storage_object_store_requests_total{op}` and
//! `rigwatch_storage_object_store_{sent,received}_bytes_total`. With S3 every request costs
//! money and latency; this is where to see how many a million values take.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

/// The kind of an object store request.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Op {
    pub op: &'static str,
}

/// Requests and bytes through the object store.
#[derive(Debug, Clone, Default)]
pub struct ObjectStoreMetrics {
    pub requests: Family<Op, Counter>,
    pub sent_bytes: Counter,
    pub received_bytes: Counter,
}

impl ObjectStoreMetrics {
    fn count(&self, op: &'static str) {
        self.requests.get_or_create(&Op { op }).inc();
    }
}

/// `inner`, counted into `metrics`.
#[derive(Debug)]
pub struct CountedStore {
    inner: Arc<dyn ObjectStore>,
    metrics: ObjectStoreMetrics,
}

impl CountedStore {
    pub fn new(inner: Arc<dyn ObjectStore>, metrics: ObjectStoreMetrics) -> Self {
        Self { inner, metrics }
    }
}

impl fmt::Display for CountedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Counted({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for CountedStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        self.metrics.count("put");
        self.metrics
            .sent_bytes
            .inc_by(payload.content_length() as u64);
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.metrics.count("put_multipart");
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.metrics
            .count(if options.head { "head" } else { "get" });
        let r = self.inner.get_opts(location, options).await?;
        self.metrics
            .received_bytes
            .inc_by(r.range.end.saturating_sub(r.range.start));
        Ok(r)
    }

    /// Forwarded, so that the inner store's own way of reading many ranges is kept (the
    /// local store's one call instead of a hand-off per range). Counted as the requests a
    /// remote store makes: one per run of ranges less than
    /// [`object_store::OBJECT_STORE_COALESCE_DEFAULT`] apart.
    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[std::ops::Range<u64>],
    ) -> Result<Vec<bytes::Bytes>> {
        self.metrics
            .requests
            .get_or_create(&Op { op: "get" })
            .inc_by(coalesced_requests(ranges));
        let r = self.inner.get_ranges(location, ranges).await?;
        self.metrics
            .received_bytes
            .inc_by(r.iter().map(|b| b.len() as u64).sum());
        Ok(r)
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        let m = self.metrics.clone();
        self.inner
            .delete_stream(locations.inspect(move |_| m.count("delete")).boxed())
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.metrics.count("list");
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.metrics.count("list");
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.metrics.count("copy");
        self.inner.copy_opts(from, to, options).await
    }
}

/// How many requests a store that merges ranges less than
/// [`object_store::OBJECT_STORE_COALESCE_DEFAULT`] apart makes for `ranges`.
fn coalesced_requests(ranges: &[std::ops::Range<u64>]) -> u64 {
    let mut sorted: Vec<_> = ranges.iter().map(|r| (r.start, r.end)).collect();
    sorted.sort_unstable();
    let mut requests = 0;
    let mut end: Option<u64> = None;
    for (s, e) in sorted {
        match end {
            Some(x) if s <= x.saturating_add(object_store::OBJECT_STORE_COALESCE_DEFAULT) => {
                end = Some(x.max(e));
            }
            _ => {
                requests += 1;
                end = Some(e);
            }
        }
    }
    requests
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::ObjectStoreExt;

    #[test]
    fn ranges_close_together_count_as_one_request() {
        let mib = object_store::OBJECT_STORE_COALESCE_DEFAULT;
        assert_eq!(coalesced_requests(&[]), 0);
        assert_eq!(coalesced_requests(&[0..10, 20..30, 5..8]), 1);
        assert_eq!(coalesced_requests(&[0..10, 10 + mib..20 + mib]), 1);
        assert_eq!(coalesced_requests(&[0..10, 11 + mib..20 + mib]), 2);
        assert_eq!(coalesced_requests(&[3 * mib..3 * mib + 1, 0..1]), 2);
    }

    #[tokio::test]
    async fn get_ranges_is_forwarded_and_counted() {
        let inner = Arc::new(object_store::memory::InMemory::new());
        let path = Path::from("f");
        inner
            .put(&path, PutPayload::from_static(b"0123456789"))
            .await
            .unwrap();
        let metrics = ObjectStoreMetrics::default();
        let store = CountedStore::new(inner, metrics.clone());
        let got = store.get_ranges(&path, &[1..3, 7..10]).await.unwrap();
        assert_eq!(got, vec![&b"12"[..], &b"789"[..]]);
        assert_eq!(metrics.requests.get_or_create(&Op { op: "get" }).get(), 1);
        assert_eq!(metrics.received_bytes.get(), 5);
    }
}
