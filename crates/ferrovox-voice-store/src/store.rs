use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures_util::stream::{self, StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use crate::cache::{ByteLru, CacheStats, CachedPayload, ObjectVersion};
use crate::error::{Error, Result};
use crate::location::{self, Location, S3Settings};
use crate::meta::{
    self, is_payload_file, is_valid_id, payload_file, validate_id, Added, NewVoice, StoredVoice,
    VoiceMeta, META_FILE,
};

/// Default capacity of the in-memory cache of loaded voices.
pub const DEFAULT_CACHE_BYTES: u64 = 256 * 1024 * 1024;

/// How many metadata objects [`VoiceStore::scan`] reads at once.
const SCAN_CONCURRENCY: usize = 16;

/// Options for [`VoiceStore::open_with`].
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Capacity of the in-memory cache of loaded voices, in payload bytes; 0 disables it.
    pub cache_bytes: u64,
    /// S3 connection settings for an `s3://` location; `None` reads them from the environment.
    pub s3: Option<S3Settings>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            cache_bytes: DEFAULT_CACHE_BYTES,
            s3: None,
        }
    }
}

/// An entry found by [`VoiceStore::scan`] that cannot be served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorruptEntry {
    pub id: String,
    pub reason: String,
}

/// Everything [`VoiceStore::scan`] found: the servable voices (sorted by creation time) and the
/// committed entries that are broken.
#[derive(Debug, Clone, Default)]
pub struct Scan {
    pub voices: Vec<VoiceMeta>,
    pub corrupt: Vec<CorruptEntry>,
}

/// What [`VoiceStore::sweep_orphans`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// The removed objects (and, for a directory store, staging files), as URLs.
    pub removed: Vec<String>,
    /// Their total length.
    pub bytes: u64,
}

/// A voice whose payload has been written but whose metadata has not: invisible until
/// [`VoiceStore::commit`]; if never committed, an orphan that
/// [`VoiceStore::sweep_orphans`] removes.
#[derive(Debug, Clone)]
pub struct StagedVoice {
    meta: VoiceMeta,
}

impl StagedVoice {
    /// The metadata the commit will write.
    pub fn meta(&self) -> &VoiceMeta {
        &self.meta
    }
}

/// The store of cloned voices. Cheap to clone (the clones share the backend and the cache) and
/// safe to share between threads and tasks.
#[derive(Debug, Clone)]
pub struct VoiceStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    backend: Arc<dyn ObjectStore>,
    prefix: Path,
    base_url: String,
    local_root: Option<PathBuf>,
    cache: Mutex<ByteLru>,
}

/// The objects found under one id's directory by a listing.
#[derive(Debug, Default)]
struct Listed {
    meta: Option<ObjectMeta>,
    payloads: BTreeMap<String, ObjectMeta>,
}

impl VoiceStore {
    /// Opens the store at `location` (see the crate docs for the forms it takes), or at
    /// [`default_dir`](crate::default_dir) when `None`. The default options: a 256 MiB cache and
    /// S3 settings from the environment.
    pub fn open(location: Option<&str>) -> Result<Self> {
        Self::open_with(location, StoreOptions::default())
    }

    /// [`open`](Self::open) with explicit options.
    pub fn open_with(location: Option<&str>, options: StoreOptions) -> Result<Self> {
        let parsed = match location {
            Some(text) => location::parse_location(text)?,
            None => Location::Local(location::default_dir()?),
        };
        let backend = match parsed {
            Location::Local(dir) => location::open_local(&dir)?,
            Location::S3 { bucket, prefix } => {
                location::open_s3(&bucket, &prefix, options.s3.as_ref())?
            }
        };
        Ok(Self::from_parts(backend, options.cache_bytes))
    }

    /// A store on an object store the caller built, under `prefix` (`""` for its root).
    /// `base_url` only serves to describe objects in errors, e.g. `"s3://bucket"`.
    pub fn from_object_store(
        backend: Arc<dyn ObjectStore>,
        prefix: &str,
        base_url: &str,
        cache_bytes: u64,
    ) -> Result<Self> {
        let prefix =
            Path::parse(prefix).map_err(|e| Error::Config(format!("prefix {prefix:?}: {e}")))?;
        Ok(Self::from_parts(
            location::Backend {
                store: backend,
                prefix,
                base_url: base_url.trim_end_matches('/').to_string(),
                local_root: None,
            },
            cache_bytes,
        ))
    }

    fn from_parts(backend: location::Backend, cache_bytes: u64) -> Self {
        VoiceStore {
            inner: Arc::new(Inner {
                backend: backend.store,
                prefix: backend.prefix,
                base_url: backend.base_url,
                local_root: backend.local_root,
                cache: Mutex::new(ByteLru::new(cache_bytes)),
            }),
        }
    }

    /// Where the store is, as a URL: `file:///dir` or `s3://bucket/prefix`.
    pub fn url(&self) -> String {
        if self.inner.prefix.is_root() {
            self.inner.base_url.clone()
        } else {
            format!("{}/{}", self.inner.base_url, self.inner.prefix)
        }
    }

    /// Adds a voice. If a voice with the same key (clip hash, family, model version, encoder
    /// parameters) is already stored, nothing is written and the stored metadata comes back with
    /// [`Added::Existing`]: its first name stays (use [`rename`](Self::rename) to change it) and
    /// `voice.conditionals` are dropped. An existing entry that is corrupt is reported as
    /// [`Error::Corrupt`] rather than silently replaced; delete it to add the voice again.
    pub async fn add(&self, voice: NewVoice) -> Result<(VoiceMeta, Added)> {
        let meta = VoiceMeta::for_new(&voice, Utc::now())?;
        if let Some(existing) = self.committed(&meta.id).await? {
            return Ok((existing, Added::Existing));
        }
        let payload = self.payload_path(&meta.id, &meta.payload_sha256);
        let staged = self.put_payload(meta, voice.conditionals).await?;
        let id = staged.meta.id.clone();
        match self.commit(staged).await {
            Ok(done) => Ok(done),
            Err(e) => {
                self.drop_uncommitted(&id, &payload).await;
                Err(e)
            }
        }
    }

    /// After a failed commit: removes the payload just written, unless a committed entry
    /// (another writer's, of the same clip) names it. A full disk gets its room back, and
    /// nothing of the failed add stays behind. Best effort: what remains is an orphan that
    /// [`sweep_orphans`](Self::sweep_orphans) removes.
    async fn drop_uncommitted(&self, id: &str, payload: &Path) {
        let named = matches!(
            self.committed(id).await,
            Ok(Some(meta)) if self.payload_path(id, &meta.payload_sha256) == *payload
        );
        if named {
            return;
        }
        if let Err(e) = self.delete_object(payload).await {
            tracing::warn!(
                location = %self.describe(payload),
                error = %e,
                "could not remove the payload of a failed add; sweep_orphans will"
            );
        }
    }

    /// First half of [`add`](Self::add): writes the payload object and nothing else, without
    /// looking for an existing entry. The voice stays invisible until [`commit`](Self::commit).
    pub async fn stage(&self, voice: NewVoice) -> Result<StagedVoice> {
        let meta = VoiceMeta::for_new(&voice, Utc::now())?;
        self.put_payload(meta, voice.conditionals).await
    }

    async fn put_payload(&self, meta: VoiceMeta, conditionals: Vec<u8>) -> Result<StagedVoice> {
        let path = self.payload_path(&meta.id, &meta.payload_sha256);
        // The payload's name is its hash, so an overwrite can only put the same bytes back.
        self.inner
            .backend
            .put(&path, PutPayload::from(conditionals))
            .await
            .map_err(|e| self.backend_error(&path, e))?;
        Ok(StagedVoice { meta })
    }

    /// Second half of [`add`](Self::add): writes the metadata, which makes the voice visible.
    /// The write is create-if-absent; if another writer committed the same id first, its entry
    /// is returned as [`Added::Existing`] and this writer's payload, if it differs, is removed.
    /// (Should that entry be deleted in the instant between the two, the result is
    /// [`Error::NotFound`]; nothing is committed then.)
    pub async fn commit(&self, staged: StagedVoice) -> Result<(VoiceMeta, Added)> {
        let meta = staged.meta;
        let id = meta.id.clone();
        let path = self.meta_path(&id);
        let json = Bytes::from(meta.to_json()?);
        let create = PutOptions::from(PutMode::Create);
        match self
            .inner
            .backend
            .put_opts(&path, PutPayload::from(json.clone()), create)
            .await
        {
            Ok(_) => Ok((meta, Added::New)),
            Err(object_store::Error::AlreadyExists { .. }) => self.adopt_existing(&meta).await,
            // A backend without create-if-absent (S3 with AWS_CONDITIONAL_PUT=disabled, or a
            // server that refuses If-None-Match): check, then write. Two writers can both pass
            // the check; the later metadata then wins, and both name payloads that exist.
            Err(object_store::Error::NotImplemented { .. }) => {
                if self.committed(&id).await?.is_some() {
                    return self.adopt_existing(&meta).await;
                }
                self.inner
                    .backend
                    .put(&path, PutPayload::from(json))
                    .await
                    .map_err(|e| self.backend_error(&path, e))?;
                Ok((meta, Added::New))
            }
            Err(e) => Err(self.backend_error(&path, e)),
        }
    }

    /// Another writer committed `mine.id` first: return its entry, and drop this writer's
    /// payload if it is not the one that entry names.
    async fn adopt_existing(&self, mine: &VoiceMeta) -> Result<(VoiceMeta, Added)> {
        let existing = self
            .committed(&mine.id)
            .await?
            .ok_or_else(|| Error::NotFound(mine.id.clone()))?;
        if existing.payload_sha256 != mine.payload_sha256 {
            let path = self.payload_path(&mine.id, &mine.payload_sha256);
            match self.inner.backend.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => tracing::warn!(
                    location = %self.describe(&path),
                    error = %e,
                    "could not remove a payload that lost the commit race; sweep_orphans will"
                ),
            }
        }
        Ok((existing, Added::Existing))
    }

    /// The voice `id` with its conditionals. The payload's length and sha256 are checked
    /// against the metadata on every read from the backend; a mismatch is [`Error::Corrupt`].
    ///
    /// From the cache, the metadata is still read and the payload object's version (size, ETag,
    /// modification time) compared with the one the cached bytes were read from: a voice
    /// deleted, renamed or re-added elsewhere, or a payload replaced in place, is never served
    /// stale. That costs two small requests instead of the payload's transfer and hashing.
    pub async fn get(&self, id: &str) -> Result<StoredVoice> {
        let id = validate_id(id)?;
        let cached = self.cache().get(id);
        let meta = match cached {
            Some(cached) => {
                let payload = self.payload_path(id, &cached.sha256);
                let (meta, head) = futures_util::future::join(
                    self.read_meta(id),
                    self.inner.backend.head(&payload),
                )
                .await;
                let meta = match meta {
                    Ok(meta) => meta,
                    Err(e) => {
                        self.cache().remove(id);
                        return Err(e);
                    }
                };
                let unchanged = meta.payload_sha256 == cached.sha256
                    && head.is_ok_and(|h| ObjectVersion::of(&h) == cached.version);
                if unchanged {
                    self.cache().record_hit();
                    return Ok(StoredVoice {
                        meta,
                        conditionals: cached.bytes,
                    });
                }
                self.cache().remove(id);
                meta
            }
            None => self.read_meta(id).await?,
        };
        self.load(meta).await
    }

    /// The metadata of voice `id`, once the payload object has been seen with the recorded
    /// length (its checksum is verified by [`get`](Self::get), which reads it).
    pub async fn meta(&self, id: &str) -> Result<VoiceMeta> {
        let id = validate_id(id)?;
        self.committed(id)
            .await?
            .ok_or_else(|| Error::NotFound(id.to_string()))
    }

    /// The servable voices, oldest first (ties by id). Broken entries are left out and logged;
    /// [`scan`](Self::scan) reports them.
    pub async fn list(&self) -> Result<Vec<VoiceMeta>> {
        let scan = self.scan().await?;
        for entry in &scan.corrupt {
            tracing::warn!(id = %entry.id, reason = %entry.reason, "corrupt voice entry not listed");
        }
        Ok(scan.voices)
    }

    /// Lists the store and reads every entry's metadata: servable voices (metadata parses,
    /// payload present with the recorded length), and corrupt entries with what is wrong.
    /// Payload checksums are not verified here, as that would read every payload.
    pub async fn scan(&self) -> Result<Scan> {
        let listing = self.list_entries().await?;
        let checked: Vec<Result<VoiceMeta>> = stream::iter(
            listing
                .into_iter()
                .filter(|(_, listed)| listed.meta.is_some()),
        )
        .map(|(id, listed)| async move {
            let meta = self.read_meta(&id).await?;
            match listed.payloads.get(&meta.payload_file()) {
                Some(object) => check_payload_size(&meta, object.size).map(|()| meta),
                None => Err(missing_payload(&meta)),
            }
        })
        .buffer_unordered(SCAN_CONCURRENCY)
        .collect()
        .await;
        let mut scan = Scan::default();
        for result in checked {
            match result {
                Ok(meta) => scan.voices.push(meta),
                // Deleted between the listing and the read.
                Err(Error::NotFound(_)) => {}
                Err(Error::Corrupt { id, reason }) => {
                    scan.corrupt.push(CorruptEntry { id, reason })
                }
                Err(e) => return Err(e),
            }
        }
        scan.voices
            .sort_by(|a, b| a.created.cmp(&b.created).then_with(|| a.id.cmp(&b.id)));
        scan.corrupt.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(scan)
    }

    /// Deletes voice `id` and every object stored under it; `true` if a committed entry (sound
    /// or corrupt) was there. The metadata goes first, so the voice disappears at once even if
    /// removing the payload fails (it is then an orphan for [`sweep_orphans`](Self::sweep_orphans)).
    ///
    /// Deleting a voice while another writer adds the same voice can leave that writer's
    /// metadata without its payload; [`get`](Self::get) then reports it as corrupt.
    pub async fn delete(&self, id: &str) -> Result<bool> {
        let id = validate_id(id)?;
        self.cache().remove(id);
        let meta_path = self.meta_path(id);
        let existed = match self.inner.backend.head(&meta_path).await {
            Ok(_) => true,
            Err(object_store::Error::NotFound { .. }) => false,
            Err(e) => return Err(self.backend_error(&meta_path, e)),
        };
        if existed {
            self.delete_object(&meta_path).await?;
        }
        let dir = self.voice_dir(id);
        let objects: Vec<ObjectMeta> = self
            .inner
            .backend
            .list(Some(&dir))
            .try_collect()
            .await
            .map_err(|e| self.backend_error(&dir, e))?;
        for object in objects {
            self.delete_object(&object.location).await?;
        }
        self.cache().remove(id);
        Ok(existed)
    }

    /// Gives voice `id` a new display name. The metadata object is rewritten in place; of two
    /// concurrent renames the later one wins.
    pub async fn rename(&self, id: &str, name: &str) -> Result<VoiceMeta> {
        let id = validate_id(id)?;
        meta::check_name(name)?;
        let mut meta = self
            .committed(id)
            .await?
            .ok_or_else(|| Error::NotFound(id.to_string()))?;
        meta.name = name.to_string();
        let path = self.meta_path(id);
        self.inner
            .backend
            .put(&path, PutPayload::from(meta.to_json()?))
            .await
            .map_err(|e| self.backend_error(&path, e))?;
        Ok(meta)
    }

    /// The one servable voice named exactly `name` (case-sensitive). Names are not keys: none
    /// is [`Error::NameNotFound`], several are [`Error::AmbiguousName`] listing their ids, and
    /// the caller picks one by id.
    pub async fn find_by_name(&self, name: &str) -> Result<VoiceMeta> {
        let mut matches: Vec<VoiceMeta> = self
            .list()
            .await?
            .into_iter()
            .filter(|m| m.name == name)
            .collect();
        match matches.len() {
            0 => Err(Error::NameNotFound(name.to_string())),
            1 => Ok(matches.remove(0)),
            _ => Err(Error::AmbiguousName {
                name: name.to_string(),
                ids: matches.into_iter().map(|m| m.id).collect(),
            }),
        }
    }

    /// What a user typed: an id of a stored voice, else a name resolved by
    /// [`find_by_name`](Self::find_by_name).
    pub async fn resolve(&self, id_or_name: &str) -> Result<VoiceMeta> {
        if is_valid_id(id_or_name) {
            match self.meta(id_or_name).await {
                Err(Error::NotFound(_)) => {}
                other => return other,
            }
        }
        self.find_by_name(id_or_name).await
    }

    /// Removes payloads that no committed metadata names and that are older than `older_than`:
    /// the leftovers of writers killed between the payload and the metadata, and of writers
    /// that lost a commit race. For a directory store it also removes object_store's staging
    /// files (`name#N`) left by writes killed halfway. Entries whose metadata does not parse
    /// are left alone for a person to look at. `older_than` should exceed the longest upload,
    /// so that a payload being committed right now is not taken for an orphan.
    pub async fn sweep_orphans(&self, older_than: Duration) -> Result<SweepReport> {
        let cutoff = chrono::Duration::from_std(older_than)
            .ok()
            .and_then(|age| Utc::now().checked_sub_signed(age))
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        let listing = self.list_entries().await?;
        let mut report = SweepReport::default();
        for (id, listed) in &listing {
            let referenced = match &listed.meta {
                None => None,
                Some(_) => match self.read_meta(id).await {
                    Ok(meta) => Some(meta.payload_file()),
                    Err(Error::NotFound(_)) => None,
                    Err(Error::Corrupt { .. }) => continue,
                    Err(e) => return Err(e),
                },
            };
            for (name, object) in &listed.payloads {
                if referenced.as_deref() == Some(name.as_str()) || object.last_modified > cutoff {
                    continue;
                }
                // Committed since the listing: the metadata now names this payload.
                if referenced.is_none() {
                    if let Ok(meta) = self.read_meta(id).await {
                        if meta.payload_file() == *name {
                            continue;
                        }
                    }
                }
                self.delete_object(&object.location).await?;
                report.removed.push(self.describe(&object.location));
                report.bytes += object.size;
            }
        }
        if let Some(root) = &self.inner.local_root {
            sweep_staging_files(root, older_than, &mut report)?;
        }
        Ok(report)
    }

    /// Whether voice `id`'s payload is in the in-memory cache.
    pub fn is_cached(&self, id: &str) -> bool {
        self.cache().contains(id)
    }

    /// The cache's sizes and counters.
    pub fn cache_stats(&self) -> CacheStats {
        self.cache().stats()
    }

    fn cache(&self) -> MutexGuard<'_, ByteLru> {
        // The cache holds no invariant a panicking holder could break halfway that matters more
        // than serving: recover the guard rather than propagate the poison.
        self.inner
            .cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn voice_dir(&self, id: &str) -> Path {
        self.inner.prefix.clone().join(id)
    }

    fn meta_path(&self, id: &str) -> Path {
        self.voice_dir(id).join(META_FILE)
    }

    fn payload_path(&self, id: &str, sha256: &str) -> Path {
        self.voice_dir(id).join(payload_file(sha256).as_str())
    }

    fn describe(&self, path: &Path) -> String {
        if path.is_root() {
            self.inner.base_url.clone()
        } else {
            format!("{}/{}", self.inner.base_url, path)
        }
    }

    fn backend_error(&self, path: &Path, source: object_store::Error) -> Error {
        Error::Backend {
            location: self.describe(path),
            source,
        }
    }

    async fn delete_object(&self, path: &Path) -> Result<()> {
        match self.inner.backend.delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.backend_error(path, e)),
        }
    }

    /// The parsed metadata object of `id` (`id` already validated).
    async fn read_meta(&self, id: &str) -> Result<VoiceMeta> {
        let path = self.meta_path(id);
        let not_found = |e: object_store::Error| match e {
            object_store::Error::NotFound { .. } => Error::NotFound(id.to_string()),
            e => self.backend_error(&path, e),
        };
        let bytes = self
            .inner
            .backend
            .get(&path)
            .await
            .map_err(not_found)?
            .bytes()
            .await
            .map_err(not_found)?;
        VoiceMeta::parse(id, &bytes)
    }

    /// The committed entry `id`, if any, after checking that its payload exists with the
    /// recorded length.
    async fn committed(&self, id: &str) -> Result<Option<VoiceMeta>> {
        let meta = match self.read_meta(id).await {
            Ok(meta) => meta,
            Err(Error::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let path = self.payload_path(id, &meta.payload_sha256);
        match self.inner.backend.head(&path).await {
            Ok(object) => check_payload_size(&meta, object.size)?,
            Err(object_store::Error::NotFound { .. }) => return Err(missing_payload(&meta)),
            Err(e) => return Err(self.backend_error(&path, e)),
        }
        Ok(Some(meta))
    }

    /// Reads and verifies the payload `meta` names, and caches it.
    async fn load(&self, meta: VoiceMeta) -> Result<StoredVoice> {
        let id = meta.id.as_str();
        let path = self.payload_path(id, &meta.payload_sha256);
        let missing = |e: object_store::Error| match e {
            object_store::Error::NotFound { .. } => missing_payload(&meta),
            e => self.backend_error(&path, e),
        };
        let result = self.inner.backend.get(&path).await.map_err(missing)?;
        let version = ObjectVersion::of(&result.meta);
        let bytes: Bytes = result.bytes().await.map_err(missing)?;
        check_payload_size(&meta, bytes.len() as u64)?;
        let actual = meta::sha256_hex(&bytes);
        if actual != meta.payload_sha256 {
            return Err(Error::corrupt(
                id,
                format!(
                    "payload sha256 is {actual}, metadata records {}",
                    meta.payload_sha256
                ),
            ));
        }
        let mut cache = self.cache();
        cache.record_miss();
        cache.insert(
            id,
            CachedPayload {
                sha256: meta.payload_sha256.clone(),
                version,
                bytes: bytes.clone(),
            },
        );
        drop(cache);
        Ok(StoredVoice {
            meta,
            conditionals: bytes,
        })
    }

    /// Every object under the prefix that belongs to the layout, grouped by id. Objects with
    /// other names, or under directories that are not ids, are not the store's and are ignored.
    async fn list_entries(&self) -> Result<BTreeMap<String, Listed>> {
        let prefix = &self.inner.prefix;
        let objects: Vec<ObjectMeta> = self
            .inner
            .backend
            .list((!prefix.is_root()).then_some(prefix))
            .try_collect()
            .await
            .map_err(|e| self.backend_error(prefix, e))?;
        let mut entries: BTreeMap<String, Listed> = BTreeMap::new();
        for object in objects {
            let Some(parts) = object.location.prefix_match(prefix) else {
                continue;
            };
            let parts: Vec<String> = parts.map(|p| p.as_ref().to_string()).collect();
            let [id, name] = parts.as_slice() else {
                continue;
            };
            if !is_valid_id(id) {
                continue;
            }
            if name == META_FILE {
                entries.entry(id.clone()).or_default().meta = Some(object);
            } else if is_payload_file(name) {
                entries
                    .entry(id.clone())
                    .or_default()
                    .payloads
                    .insert(name.clone(), object);
            }
        }
        Ok(entries)
    }
}

fn check_payload_size(meta: &VoiceMeta, size: u64) -> Result<()> {
    if size == meta.payload_bytes {
        Ok(())
    } else {
        Err(Error::corrupt(
            &meta.id,
            format!(
                "payload is {size} bytes, metadata records {}",
                meta.payload_bytes
            ),
        ))
    }
}

fn missing_payload(meta: &VoiceMeta) -> Error {
    Error::corrupt(
        &meta.id,
        format!(
            "metadata is present but its payload {} is missing",
            meta.payload_file()
        ),
    )
}

/// Removes object_store's staging files (`<name>#<digits>`, invisible to its listing) older
/// than `older_than` from the id directories of a directory store.
fn sweep_staging_files(
    root: &std::path::Path,
    older_than: Duration,
    report: &mut SweepReport,
) -> Result<()> {
    let io = |context: String| move |source| Error::Io { context, source };
    let now = std::time::SystemTime::now();
    let dirs = match std::fs::read_dir(root) {
        Ok(dirs) => dirs,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(format!("listing {}", root.display()))(e)),
    };
    for dir in dirs {
        let dir = dir.map_err(io(format!("listing {}", root.display())))?;
        let is_id_dir = dir.file_name().to_str().is_some_and(is_valid_id)
            && dir.file_type().is_ok_and(|t| t.is_dir());
        if !is_id_dir {
            continue;
        }
        let files = match std::fs::read_dir(dir.path()) {
            Ok(files) => files,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io(format!("listing {}", dir.path().display()))(e)),
        };
        for file in files {
            let Ok(file) = file else { continue };
            let name = file.file_name();
            let Some(name) = name.to_str() else { continue };
            let is_staging = name
                .rsplit_once('#')
                .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
            let Ok(stat) = file.metadata() else { continue };
            let age = stat
                .modified()
                .ok()
                .and_then(|m| now.duration_since(m).ok())
                .unwrap_or_default();
            if !is_staging || !stat.is_file() || age < older_than {
                continue;
            }
            match std::fs::remove_file(file.path()) {
                Ok(()) => {
                    report
                        .removed
                        .push(format!("file://{}", file.path().display()));
                    report.bytes += stat.len();
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(format!("removing {}", file.path().display()))(e)),
            }
        }
    }
    Ok(())
}
