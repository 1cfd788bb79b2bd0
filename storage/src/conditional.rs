//! Whether an object store honours create-only writes (`If-None-Match: *` on S3).
//!
//! Several nodes rely on them: a WAL segment, a catalog version or a data file is written
//! only if no other writer created it first. A store that ignores the condition would let two
//! nodes both "win", silently. [`probe_create_only`] races two create-only writes of one new
//! key and requires exactly one to succeed and the other to be refused, with the winner's
//! bytes left in place.

use std::sync::Arc;

use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutPayload, path::Path};

use crate::error::{Error, Result};

/// Races two create-only writes of a fresh key under `probe/`; fails unless exactly one wins.
pub async fn probe_create_only(store: &Arc<dyn ObjectStore>, node: &str) -> Result<()> {
    let key = Path::from_iter([
        "probe",
        "create-only",
        &format!("{node}-{:016x}", rand::random::<u64>()),
    ]);
    let put = |body: &'static [u8]| {
        let (store, key) = (store.clone(), key.clone());
        async move {
            store
                .put_opts(&key, PutPayload::from_static(body), PutMode::Create.into())
                .await
        }
    };
    let (a, b) = tokio::join!(put(b"first"), put(b"second"));
    // An error other than "already exists" (unreachable store, bad credentials) says nothing
    // about conditional writes: report it as it is.
    for r in [&a, &b] {
        if let Err(e) = r
            && !refused(r)
        {
            let _ = store.delete(&key).await;
            return Err(Error::Catalog(format!(
                "cannot write the probe object {key} to the object store: {e}"
            )));
        }
    }
    let winner: Option<&[u8]> = match (a.is_ok(), b.is_ok()) {
        (true, false) => Some(b"first"),
        (false, true) => Some(b"second"),
        _ => None,
    };
    let stored = match store.get(&key).await {
        Ok(r) => Some(r.bytes().await?),
        Err(_) => None,
    };
    let _ = store.delete(&key).await;
    if winner.is_some() && stored.as_deref() == winner {
        return Ok(());
    }
    Err(Error::Catalog(format!(
        "the object store does not honour create-only writes: two writers both tried to create \
         {key} with If-None-Match: * and the store answered \"{}\" and \"{}\". Several nodes \
         cannot share it safely; use a store with conditional writes (AWS S3, SeaweedFS, MinIO, \
         Ceph RGW)",
        outcome(&a),
        outcome(&b)
    )))
}

fn refused<T>(r: &object_store::Result<T>) -> bool {
    matches!(
        r,
        Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. })
    )
}

fn outcome(r: &object_store::Result<object_store::PutResult>) -> &'static str {
    match r {
        Ok(_) => "created",
        Err(_) => "already exists",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;

    #[tokio::test]
    async fn a_store_that_honours_create_only_passes() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        probe_create_only(&store, "n1").await.unwrap();
        // The probe leaves nothing behind.
        use futures::TryStreamExt;
        let left: Vec<_> = store.list(None).try_collect().await.unwrap();
        assert!(left.is_empty(), "{left:?}");
    }
}
