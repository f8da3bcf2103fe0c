//! Generated protobuf messages and gRPC clients/servers for every giao API.
//!
//! The `.proto` sources live in the workspace's `proto/` folder (package `giao.<area>.v1`).
//! Clients sit behind the `client` feature and servers behind `server`, so a crate that only
//! calls an API does not compile server code.
//!
//! Layout: one module per proto package (`giao::messagestore::v1`, …), re-exported at the crate
//! root as short aliases (`messagestore`, `events`, …), plus [`FILE_DESCRIPTOR_SET`] for gRPC
//! reflection.

#![allow(clippy::all, missing_docs, unused_qualifications)]

include!(concat!(env!("OUT_DIR"), "/_includes.rs"));

/// The encoded `FileDescriptorSet` of every giao proto, served by gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/giao_descriptor.bin"));

pub use giao::assignment::v1 as assignment;
pub use giao::auth::v1 as auth;
pub use giao::common::v1 as common;
pub use giao::connector::v1 as connector;
pub use giao::events::v1 as events;
pub use giao::messagestore::v1 as messagestore;
pub use giao::reporting::v1 as reporting;

/// Fully-qualified gRPC service names, for health reporting and reflection filters.
pub mod service_names {
    pub const CONNECTOR: &str = "giao.connector.v1.ConnectorService";
    pub const MESSAGE_STORE: &str = "giao.messagestore.v1.MessageStoreService";
    pub const ASSIGNMENT: &str = "giao.assignment.v1.AssignmentService";
    pub const REPORTING: &str = "giao.reporting.v1.ReportingService";
    pub const AUTH: &str = "giao.auth.v1.AuthService";
}
