//! Integration tests of the archive engine: round trips, Info-ZIP interoperability, hostile archives,
//! determinism and file selection. One test binary; each test works in its own temporary directory.

mod hostile;
mod interop;
mod props;
mod roundtrip;
mod selection;
mod util;
