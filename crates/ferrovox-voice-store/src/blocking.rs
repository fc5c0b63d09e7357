use std::future::Future;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::meta::{Added, NewVoice, StoredVoice, VoiceMeta};
use crate::store::{Scan, StagedVoice, StoreOptions, SweepReport, VoiceStore};
use crate::CacheStats;

/// [`VoiceStore`] for callers without an async runtime (the CLI): it owns a current-thread
/// tokio runtime and blocks on each call. Calling it from a thread that already runs a runtime
/// returns [`Error::InsideAsyncRuntime`] instead of deadlocking; use [`VoiceStore`] there.
#[derive(Debug)]
pub struct BlockingVoiceStore {
    runtime: OwnedRuntime,
    store: VoiceStore,
}

/// A runtime that shuts down without blocking when dropped, as dropping a runtime the normal
/// way panics on a thread that runs another one.
#[derive(Debug)]
struct OwnedRuntime(Option<tokio::runtime::Runtime>);

impl Drop for OwnedRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

impl BlockingVoiceStore {
    /// [`VoiceStore::open`], blocking.
    pub fn open(location: Option<&str>) -> Result<Self> {
        Self::open_with(location, StoreOptions::default())
    }

    /// [`VoiceStore::open_with`], blocking.
    pub fn open_with(location: Option<&str>, options: StoreOptions) -> Result<Self> {
        let runtime = new_runtime()?;
        // Built in the runtime's context so that anything the backend's client sets up at
        // construction belongs to the runtime that will drive it. Entering a context does not
        // block, so this works from async code too.
        let store = {
            let _context = runtime.0.as_ref().map(|rt| rt.enter());
            VoiceStore::open_with(location, options)?
        };
        Ok(BlockingVoiceStore { runtime, store })
    }

    /// Wraps an already opened store.
    pub fn new(store: VoiceStore) -> Result<Self> {
        Ok(BlockingVoiceStore {
            runtime: new_runtime()?,
            store,
        })
    }

    /// The async store underneath (shares its cache).
    pub fn store(&self) -> &VoiceStore {
        &self.store
    }

    pub fn add(&self, voice: NewVoice) -> Result<(VoiceMeta, Added)> {
        enter(&self.runtime, self.store.add(voice))
    }

    pub fn stage(&self, voice: NewVoice) -> Result<StagedVoice> {
        enter(&self.runtime, self.store.stage(voice))
    }

    pub fn commit(&self, staged: StagedVoice) -> Result<(VoiceMeta, Added)> {
        enter(&self.runtime, self.store.commit(staged))
    }

    pub fn get(&self, id: &str) -> Result<StoredVoice> {
        enter(&self.runtime, self.store.get(id))
    }

    pub fn meta(&self, id: &str) -> Result<VoiceMeta> {
        enter(&self.runtime, self.store.meta(id))
    }

    pub fn list(&self) -> Result<Vec<VoiceMeta>> {
        enter(&self.runtime, self.store.list())
    }

    pub fn scan(&self) -> Result<Scan> {
        enter(&self.runtime, self.store.scan())
    }

    pub fn delete(&self, id: &str) -> Result<bool> {
        enter(&self.runtime, self.store.delete(id))
    }

    pub fn rename(&self, id: &str, name: &str) -> Result<VoiceMeta> {
        enter(&self.runtime, self.store.rename(id, name))
    }

    pub fn find_by_name(&self, name: &str) -> Result<VoiceMeta> {
        enter(&self.runtime, self.store.find_by_name(name))
    }

    pub fn resolve(&self, id_or_name: &str) -> Result<VoiceMeta> {
        enter(&self.runtime, self.store.resolve(id_or_name))
    }

    pub fn sweep_orphans(&self, older_than: Duration) -> Result<SweepReport> {
        enter(&self.runtime, self.store.sweep_orphans(older_than))
    }

    pub fn is_cached(&self, id: &str) -> bool {
        self.store.is_cached(id)
    }

    pub fn cache_stats(&self) -> CacheStats {
        self.store.cache_stats()
    }
}

fn new_runtime() -> Result<OwnedRuntime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map(|runtime| OwnedRuntime(Some(runtime)))
        .map_err(|source| Error::Io {
            context: "starting the voice store's runtime".into(),
            source,
        })
}

fn enter<T>(runtime: &OwnedRuntime, future: impl Future<Output = Result<T>>) -> Result<T> {
    // `block_on` panics when the thread already drives a runtime.
    if tokio::runtime::Handle::try_current().is_ok() {
        return Err(Error::InsideAsyncRuntime);
    }
    match &runtime.0 {
        Some(runtime) => runtime.block_on(future),
        // Only `Drop` empties it.
        None => Err(Error::InsideAsyncRuntime),
    }
}
