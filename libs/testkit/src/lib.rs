//! giao-testkit
