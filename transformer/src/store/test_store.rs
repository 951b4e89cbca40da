//! A test double for object stores: an in-memory store with one misbehaviour (a lost response, a
//! broken read, a recorded abort), so that a test states only what differs from a working store.

use std::fmt;

use async_trait::async_trait;
use futures::stream::BoxStream;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions,
    PutOptions, PutPayload, PutResult, Result,
};

/// What a [`Misbehaving`] store does differently. Each call it leaves alone goes to the in-memory
/// store as it is.
#[async_trait]
pub trait Misbehaviour: fmt::Debug + Send + Sync + 'static {
    async fn put_opts(&self, inner: &InMemory, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        inner: &InMemory,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, inner: &InMemory, location: &Path, options: GetOptions) -> Result<GetResult> {
        inner.get_opts(location, options).await
    }
}

/// An in-memory store with a misbehaviour.
#[derive(Debug, Default)]
pub struct Misbehaving<M> {
    /// The store underneath, for setting up and inspecting objects directly.
    pub inner: InMemory,
    /// What it does differently, and what that recorded.
    pub misbehaviour: M,
}

impl<M> Misbehaving<M> {
    pub fn new(misbehaviour: M) -> Self {
        Self { inner: InMemory::new(), misbehaviour }
    }
}

impl<M: fmt::Debug> fmt::Display for Misbehaving<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Misbehaving({:?})", self.misbehaviour)
    }
}

#[async_trait]
impl<M: Misbehaviour> ObjectStore for Misbehaving<M> {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        self.misbehaviour.put_opts(&self.inner, location, payload, opts).await
    }

    async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> Result<Box<dyn MultipartUpload>> {
        self.misbehaviour.put_multipart_opts(&self.inner, location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.misbehaviour.get_opts(&self.inner, location, options).await
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}
