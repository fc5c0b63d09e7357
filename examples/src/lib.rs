//! Examples of embedding ferrovox; see the `[[example]]` targets of this package.
