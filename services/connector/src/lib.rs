//! giao-connector
