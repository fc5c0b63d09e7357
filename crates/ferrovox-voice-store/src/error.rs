/// The store's errors. Every operation returns one of these; none of them panics.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No committed voice has this id (an id whose payload was written but whose metadata never
    /// was is also "not found": the metadata is the commit point).
    #[error("voice {0} not found")]
    NotFound(String),

    /// The id given by a caller is not 32 lowercase hex characters. The offending text is kept
    /// (cut to 80 characters) for the message; it is never used to build an object path.
    #[error("invalid voice id {0:?}: a voice id is 32 lowercase hex characters")]
    InvalidId(String),

    /// The entry exists but cannot be served: its metadata does not parse or does not describe
    /// it, its payload is missing, or the payload's length or sha256 differs from the metadata.
    #[error("voice {id} is corrupt: {reason}")]
    Corrupt { id: String, reason: String },

    /// The backend failed; `location` is the object (or prefix) the request was about, as a
    /// `file://` or `s3://` URL.
    #[error("voice store backend error at {location}: {source}")]
    Backend {
        location: String,
        source: object_store::Error,
    },

    /// The store location or its environment is unusable: an unsupported scheme, a malformed
    /// `s3://` URL, missing AWS credentials, no home directory for the default location.
    #[error("voice store configuration: {0}")]
    Config(String),

    /// A [`NewVoice`](crate::NewVoice) (or a new name) that cannot be stored as given.
    #[error("invalid voice: {0}")]
    InvalidVoice(String),

    /// [`VoiceStore::find_by_name`](crate::VoiceStore::find_by_name) found no voice of that name.
    #[error("no voice is named {0:?}")]
    NameNotFound(String),

    /// Names are not keys: several voices carry this one, so it names none of them.
    #[error("{} voices are named {name:?} ({}); refer to one by id", ids.len(), ids.join(", "))]
    AmbiguousName { name: String, ids: Vec<String> },

    /// Local I/O outside the object store (creating the store directory, the blocking wrapper's
    /// runtime, sweeping a directory's staging files).
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },

    /// A [`BlockingVoiceStore`](crate::BlockingVoiceStore) method was called on a thread that is
    /// already running an async runtime, where blocking on one would deadlock or panic.
    #[error("BlockingVoiceStore called from inside an async runtime; use VoiceStore there")]
    InsideAsyncRuntime,
}

/// The store's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The I/O failure underneath, if the store met one: the device full or over quota, a file
    /// past the size the system allows, a read-only or forbidden directory. Callers tell a
    /// full disk from a refused one by its [`kind`](std::io::Error::kind).
    pub fn io_cause(&self) -> Option<&std::io::Error> {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(e) = cause {
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                return Some(io);
            }
            cause = e.source();
        }
        None
    }

    /// Whether the store failed for want of room: the device full or over quota, or a file
    /// past the size the system allows.
    pub fn is_out_of_space(&self) -> bool {
        use std::io::ErrorKind as K;
        self.io_cause().is_some_and(|io| {
            matches!(
                io.kind(),
                K::StorageFull | K::QuotaExceeded | K::FileTooLarge
            )
        })
    }

    pub(crate) fn corrupt(id: &str, reason: impl Into<String>) -> Self {
        Error::Corrupt {
            id: id.to_string(),
            reason: reason.into(),
        }
    }

    pub(crate) fn invalid_id(text: &str) -> Self {
        Error::InvalidId(text.chars().take(80).collect())
    }
}
