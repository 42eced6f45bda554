//! runwright-coordinator
