//! Object reads that continue where they stopped. A CSV object of several gigabytes takes minutes
//! to read, and a connection that resets or stalls in the middle must not fail the partition: the
//! rest of the object is requested again, from the first byte not yet received, pinned to the
//! object's ETag so that a replaced object fails the read instead of mixing two versions.
//!
//! object_store resumes a broken body itself, but only within the retry budget counted from the
//! start of the request, which a long read has spent before it breaks. [`ResumingStore`] resumes
//! as long as the read makes progress; a request that fails before returning a new byte has had
//! object_store's own retries and fails the read.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetRange, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result,
};

/// An object store whose streamed reads resume after a broken connection; every other operation
/// goes to the inner store unchanged.
#[derive(Debug)]
pub struct ResumingStore {
    inner: Arc<dyn ObjectStore>,
}

impl ResumingStore {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn ObjectStore>) -> Self {
        Self { inner }
    }
}

impl fmt::Display for ResumingStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Resuming({})", self.inner)
    }
}

/// Where a streamed read stands: what it asked for, what arrived, and the stream it reads now.
struct Read {
    store: Arc<dyn ObjectStore>,
    location: Path,
    options: GetOptions,
    etag: Option<String>,
    /// The bytes still to come.
    remaining: Range<u64>,
    body: BoxStream<'static, Result<Bytes>>,
    /// Whether `body` has returned a byte; a body that fails before any is not resumed again.
    progressed: bool,
}

impl Read {
    /// The next chunk, resuming the read when the body breaks after making progress.
    async fn next(mut self) -> Result<Option<(Bytes, Self)>> {
        loop {
            match self.body.next().await {
                Some(Ok(bytes)) => {
                    self.remaining.start += bytes.len() as u64;
                    self.progressed |= !bytes.is_empty();
                    return Ok(Some((bytes, self)));
                }
                None => return Ok(None),
                Some(Err(error)) if self.progressed && self.etag.is_some() && !self.remaining.is_empty() => {
                    tracing::warn!(
                        location = %self.location, resume_at = self.remaining.start, %error,
                        "reading an object failed after progress; requesting the rest"
                    );
                    let options = GetOptions {
                        range: Some(GetRange::Bounded(self.remaining.clone())),
                        if_match: self.etag.clone(),
                        ..self.options.clone()
                    };
                    self.body = self.store.get_opts(&self.location, options).await?.into_stream();
                    self.progressed = false;
                }
                Some(Err(error)) => return Err(error),
            }
        }
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl ObjectStore for ResumingStore {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let result = self.inner.get_opts(location, options.clone()).await?;
        let GetResultPayload::Stream(body) = result.payload else { return Ok(result) };
        let read = Read {
            store: Arc::clone(&self.inner),
            location: location.clone(),
            options,
            etag: result.meta.e_tag.clone(),
            remaining: result.range.clone(),
            body,
            progressed: false,
        };
        let body = futures::stream::try_unfold(read, Read::next).boxed();
        Ok(GetResult { payload: GetResultPayload::Stream(body), ..result })
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(&self, prefix: Option<&Path>, offset: &Path) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.inner.rename_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use object_store::ObjectStoreExt;
    use object_store::memory::InMemory;

    use super::*;
    use crate::store::test_store::{Misbehaving, Misbehaviour};

    /// Reads break after `break_after` bytes, `breaks` times, as a reset connection would; the
    /// ranges asked for are recorded.
    #[derive(Debug)]
    struct Breaks {
        break_after: usize,
        breaks: Mutex<usize>,
        asked: Mutex<Vec<Option<GetRange>>>,
    }

    #[async_trait]
    impl Misbehaviour for Breaks {
        async fn get_opts(&self, inner: &InMemory, location: &Path, options: GetOptions) -> Result<GetResult> {
            self.asked.lock().unwrap().push(options.range.clone());
            let result = inner.get_opts(location, options).await?;
            let (meta, range, attributes) = (result.meta.clone(), result.range.clone(), result.attributes.clone());
            let bytes = result.bytes().await?;
            let mut breaks = self.breaks.lock().unwrap();
            let payload: BoxStream<'static, Result<Bytes>> = if *breaks > 0 && bytes.len() > self.break_after {
                *breaks -= 1;
                let reset = object_store::Error::Generic { store: "Breaking", source: "connection reset".into() };
                futures::stream::iter([Ok(bytes.slice(..self.break_after)), Err(reset)]).boxed()
            } else {
                futures::stream::once(async move { Ok(bytes) }).boxed()
            };
            Ok(GetResult { payload: GetResultPayload::Stream(payload), meta, range, attributes })
        }
    }

    async fn breaking(body: &'static [u8], break_after: usize, breaks: usize) -> (Arc<Misbehaving<Breaks>>, Path) {
        let store = Misbehaving::new(Breaks { break_after, breaks: Mutex::new(breaks), asked: Mutex::default() });
        let path = Path::from("day=24/big.csv");
        store.inner.put(&path, PutPayload::from_static(body)).await.unwrap();
        (Arc::new(store), path)
    }

    #[tokio::test]
    async fn a_read_broken_twice_resumes_from_the_bytes_it_lacks() {
        let (store, path) = breaking(b"id,name,value,timestamp\n1,a,b,2\n", 10, 2).await;
        let resuming = ResumingStore::new(Arc::clone(&store) as _);
        let bytes = resuming.get(&path).await.unwrap().bytes().await.unwrap();
        assert_eq!(&bytes[..], b"id,name,value,timestamp\n1,a,b,2\n");
        let asked = store.misbehaviour.asked.lock().unwrap().clone();
        assert_eq!(asked, [None, Some(GetRange::Bounded(10..32)), Some(GetRange::Bounded(20..32))]);
    }

    #[tokio::test]
    async fn a_read_that_breaks_without_progress_fails() {
        let (store, path) = breaking(b"id,name,value,timestamp\n", 0, 1).await;
        let resuming = ResumingStore::new(Arc::clone(&store) as _);
        let error = resuming.get(&path).await.unwrap().bytes().await.unwrap_err();
        assert!(error.to_string().contains("connection reset"), "{error}");
        assert_eq!(store.misbehaviour.asked.lock().unwrap().len(), 1, "nothing arrived, so nothing was resumed");
    }
}
