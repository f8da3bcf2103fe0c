//! giao-auth
