//! Integration tests of runwright-api: the payload corpus (one test binary).

mod corpus;
