//! The gRPC surface. Every RPC answers Unimplemented until its issue builds it; the
//! generated default methods say so with the RPC's name.

use giao_proto::reporting::reporting_service_server::ReportingService;

#[derive(Debug, Clone, Default)]
pub struct Api;

#[tonic::async_trait]
impl ReportingService for Api {}
