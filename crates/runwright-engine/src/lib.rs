//! runwright-engine
