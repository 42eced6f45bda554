//! runwright-shell
