//! giao-reporting
