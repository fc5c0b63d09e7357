use std::fmt;
use std::path::{Path as FsPath, PathBuf};

use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::ObjectStore;

use crate::error::{Error, Result};

/// The environment variable a caller (the server, the CLI) reads for the store location and
/// passes to [`VoiceStore::open`](crate::VoiceStore::open). The crate itself never reads it, so
/// that a library user's environment cannot redirect where voices go behind its back.
pub const LOCATION_ENV: &str = "FERROVOX_VOICE_STORE";

/// The default store directory: `$XDG_CACHE_HOME/ferrovox/voices/cloned`, or
/// `$HOME/.cache/ferrovox/voices/cloned` when `XDG_CACHE_HOME` is unset, empty or relative (the
/// XDG spec says to ignore a relative one).
pub fn default_dir() -> Result<PathBuf> {
    let from_env = |name: &str| {
        std::env::var_os(name)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    let cache = match from_env("XDG_CACHE_HOME") {
        Some(dir) => dir,
        None => from_env("HOME")
            .map(|home| home.join(".cache"))
            .ok_or_else(|| {
                Error::Config(
                    "no default voice store directory: neither XDG_CACHE_HOME nor HOME is an \
                 absolute path; pass a location"
                        .into(),
                )
            })?,
    };
    Ok(cache.join("ferrovox").join("voices").join("cloned"))
}

/// S3 connection settings. [`StoreOptions::s3`](crate::StoreOptions::s3) left at `None` means
/// "from the environment" ([`S3Settings::from_env`] plus the rest of object_store's `AWS_*`
/// variables); `Some` uses exactly these and ignores the environment.
#[derive(Clone, Default)]
pub struct S3Settings {
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
    pub region: Option<String>,
    /// An S3-compatible endpoint (MinIO, R2, moto…) instead of AWS's; path-style requests.
    pub endpoint: Option<String>,
    /// Allow plain HTTP. Implied by an `http://` endpoint.
    pub allow_http: bool,
}

impl fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = |v: &Option<String>| v.as_ref().map(|_| "<redacted>");
        f.debug_struct("S3Settings")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &redacted(&self.secret_access_key))
            .field("session_token", &redacted(&self.session_token))
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("allow_http", &self.allow_http)
            .finish()
    }
}

impl S3Settings {
    /// Reads `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, the region from
    /// `AWS_REGION` or else `AWS_DEFAULT_REGION`, the endpoint from `AWS_ENDPOINT_URL_S3`, else
    /// `AWS_ENDPOINT_URL`, else `AWS_ENDPOINT`, and `AWS_ALLOW_HTTP` (`true` or `1`). Empty
    /// values count as unset.
    pub fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let first = |names: &[&str]| names.iter().find_map(|n| var(n));
        S3Settings {
            access_key_id: var("AWS_ACCESS_KEY_ID"),
            secret_access_key: var("AWS_SECRET_ACCESS_KEY"),
            session_token: var("AWS_SESSION_TOKEN"),
            region: first(&["AWS_REGION", "AWS_DEFAULT_REGION"]),
            endpoint: first(&["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_ENDPOINT"]),
            allow_http: var("AWS_ALLOW_HTTP")
                .is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1"),
        }
    }
}

/// A parsed store location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Location {
    Local(PathBuf),
    S3 { bucket: String, prefix: String },
}

/// Parses a location string: `s3://bucket[/prefix]`, `file:///abs/dir`, or a directory path
/// (`~/` expands to `$HOME`). Other schemes are refused rather than taken for directory names.
pub(crate) fn parse_location(text: &str) -> Result<Location> {
    let text = text.trim();
    if text.is_empty() {
        return Err(Error::Config("the voice store location is empty".into()));
    }
    if let Some(rest) = text.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let bucket_ok = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        if !bucket_ok {
            return Err(Error::Config(format!(
                "{text:?}: the bucket must be 3 to 63 lowercase letters, digits, '-' or '.'"
            )));
        }
        let segments: Vec<&str> = prefix.split('/').filter(|s| !s.is_empty()).collect();
        if segments.iter().any(|s| *s == "." || *s == "..") {
            return Err(Error::Config(format!(
                "{text:?}: the prefix may not contain '.' or '..' segments"
            )));
        }
        let prefix = segments.join("/");
        Path::parse(&prefix).map_err(|e| Error::Config(format!("{text:?}: bad prefix: {e}")))?;
        return Ok(Location::S3 {
            bucket: bucket.to_string(),
            prefix,
        });
    }
    if text.starts_with("file:") {
        let url = url::Url::parse(text)
            .map_err(|e| Error::Config(format!("{text:?} is not a valid file URL: {e}")))?;
        let path = url.to_file_path().map_err(|()| {
            Error::Config(format!(
                "{text:?} is not a local absolute path (expected file:///dir)"
            ))
        })?;
        return Ok(Location::Local(path));
    }
    if let Some((scheme, _)) = text.split_once("://") {
        return Err(Error::Config(format!(
            "{text:?}: unsupported scheme {scheme:?}; use a directory, file:///dir or s3://bucket/prefix"
        )));
    }
    let path = match text.strip_prefix('~') {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => {
            let home = std::env::var_os("HOME").ok_or_else(|| {
                Error::Config(format!("{text:?} starts with '~' but HOME is not set"))
            })?;
            PathBuf::from(home).join(rest.trim_start_matches('/'))
        }
        _ => PathBuf::from(text),
    };
    Ok(Location::Local(path))
}

/// An opened backend: the object store, the prefix every object of the store lives under, the
/// URL objects are described by in errors (`base/<object path>`), and for a directory its path.
pub(crate) struct Backend {
    pub store: std::sync::Arc<dyn ObjectStore>,
    pub prefix: Path,
    pub base_url: String,
    pub local_root: Option<PathBuf>,
}

pub(crate) fn open_local(dir: &FsPath) -> Result<Backend> {
    let dir = std::path::absolute(dir).map_err(|source| Error::Io {
        context: format!("resolving voice store directory {}", dir.display()),
        source,
    })?;
    std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
        context: format!("creating voice store directory {}", dir.display()),
        source,
    })?;
    let root = std::fs::canonicalize(&dir).map_err(|source| Error::Io {
        context: format!("resolving voice store directory {}", dir.display()),
        source,
    })?;
    // fsync makes the payload durable before the metadata that commits it is written, so a
    // power cut cannot leave a committed entry whose payload was still in the page cache;
    // automatic cleanup removes an entry's directory with its last object.
    let store = LocalFileSystem::new_with_prefix(&root)
        .map_err(|e| Error::Config(format!("voice store directory {}: {e}", root.display())))?
        .with_fsync(true)
        .with_automatic_cleanup(true);
    Ok(Backend {
        store: std::sync::Arc::new(store),
        prefix: Path::default(),
        base_url: format!("file://{}", root.display()),
        local_root: Some(root),
    })
}

pub(crate) fn open_s3(
    bucket: &str,
    prefix: &str,
    settings: Option<&S3Settings>,
) -> Result<Backend> {
    let from_env = settings.is_none();
    let (mut builder, settings) = match settings {
        // The rest of object_store's AWS_* variables (web identity, container credentials,
        // AWS_CONDITIONAL_PUT, …) apply too when the settings come from the environment.
        None => (AmazonS3Builder::from_env(), S3Settings::from_env()),
        Some(s) => (AmazonS3Builder::new(), s.clone()),
    };
    let env_has = |name: &str| std::env::var_os(name).is_some_and(|v| !v.is_empty());
    let other_credentials = [
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    ]
    .iter()
    .any(|n| env_has(n))
        || std::env::var("AWS_SKIP_SIGNATURE").is_ok_and(|v| v.eq_ignore_ascii_case("true"));
    match (&settings.access_key_id, &settings.secret_access_key) {
        (Some(key), Some(secret)) => {
            builder = builder
                .with_access_key_id(key)
                .with_secret_access_key(secret);
            if let Some(token) = &settings.session_token {
                builder = builder.with_token(token);
            }
        }
        (Some(_), None) | (None, Some(_)) => {
            return Err(Error::Config(
                "S3 needs both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, only one is set".into(),
            ))
        }
        // Without keys object_store would fall back to the EC2 instance metadata service, which
        // off EC2 means minutes of retries before an error: refuse up front instead, unless the
        // environment names another credential source.
        (None, None) if from_env && other_credentials => {}
        (None, None) => {
            return Err(Error::Config(
                "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or a web \
                 identity / container credential source)"
                    .into(),
            ))
        }
    }
    builder = builder.with_bucket_name(bucket);
    if let Some(region) = &settings.region {
        builder = builder.with_region(region);
    }
    let mut allow_http = settings.allow_http;
    if let Some(endpoint) = &settings.endpoint {
        allow_http |= endpoint.starts_with("http://");
        builder = builder.with_endpoint(endpoint);
    }
    builder = builder.with_allow_http(allow_http);
    let store = builder
        .build()
        .map_err(|e| Error::Config(format!("S3 location s3://{bucket}/{prefix}: {e}")))?;
    let prefix_path =
        Path::parse(prefix).map_err(|e| Error::Config(format!("S3 prefix {prefix:?}: {e}")))?;
    Ok(Backend {
        store: std::sync::Arc::new(store),
        prefix: prefix_path,
        base_url: format!("s3://{bucket}"),
        local_root: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_locations() {
        assert_eq!(
            parse_location("s3://voices/prod/cloned/").unwrap(),
            Location::S3 {
                bucket: "voices".into(),
                prefix: "prod/cloned".into()
            }
        );
        assert_eq!(
            parse_location("s3://voices").unwrap(),
            Location::S3 {
                bucket: "voices".into(),
                prefix: String::new()
            }
        );
        assert_eq!(
            parse_location("file:///var/lib/voices").unwrap(),
            Location::Local("/var/lib/voices".into())
        );
        assert_eq!(
            parse_location("/var/lib/voices").unwrap(),
            Location::Local("/var/lib/voices".into())
        );
        assert_eq!(
            parse_location("rel/dir").unwrap(),
            Location::Local("rel/dir".into())
        );
        for bad in [
            "",
            "  ",
            "s3://",
            "s3://UPPER/x",
            "s3://b/../x",
            "gs://bucket/x",
            "http://host/x",
            "file://host/dir",
        ] {
            assert!(
                matches!(parse_location(bad), Err(Error::Config(_))),
                "{bad:?} should be refused"
            );
        }
    }

    #[test]
    fn refuses_s3_without_credentials() {
        let settings = S3Settings {
            endpoint: Some("http://127.0.0.1:9".into()),
            ..S3Settings::default()
        };
        assert!(matches!(
            open_s3("bucket", "", Some(&settings)),
            Err(Error::Config(_))
        ));
        let half = S3Settings {
            access_key_id: Some("key".into()),
            ..settings
        };
        assert!(matches!(
            open_s3("bucket", "", Some(&half)),
            Err(Error::Config(_))
        ));
    }
}
