//! giao
