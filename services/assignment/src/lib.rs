//! giao-assignment
