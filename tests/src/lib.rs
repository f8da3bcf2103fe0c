//! giao-tests
