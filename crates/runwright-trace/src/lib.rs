//! runwright-trace
