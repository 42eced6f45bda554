#![no_main]
//! See runwright_fuzzcheck::job_payload for the input format and the properties checked.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| runwright_fuzzcheck::job_payload(data));
