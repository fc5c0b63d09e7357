//! A panic inside a model call, turned into that call's error so the thread that ran it (a
//! batcher or decoder serving other requests) lives on.

use crate::EngineError;

/// `f`'s result, or the panic's message.
pub(crate) fn caught<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|panic| {
        panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("no message")
            .to_string()
    })
}

/// `f`'s result, a panic inside it being `model`'s [`EngineError::Panicked`].
pub(crate) fn guarded<T>(
    model: &str,
    f: impl FnOnce() -> Result<T, EngineError>,
) -> Result<T, EngineError> {
    caught(f).unwrap_or_else(|what| {
        Err(EngineError::Panicked {
            model: model.to_string(),
            what,
        })
    })
}
