//! runwright-config
