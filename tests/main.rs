//! Integration tests: they drive the built `zdeploy` binary.
