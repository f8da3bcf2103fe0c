//! Every RPC of every service and what it requires. The shared authenticator enforces this
//! table before a handler runs and refuses any RPC missing from it, so a new RPC is closed
//! until someone declares it here; handlers then narrow further by visibility. The table is
//! documented in docs/api.md and checked, RPC × role × tenant, by tests/tests/authz_matrix.rs.

use crate::Permission;

/// What calling an RPC takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No credentials (logging in, fetching the public signing keys).
    Public,
    /// A verified caller holding this permission.
    Requires(Permission),
}

const fn needs(permission: Permission) -> Access {
    Access::Requires(permission)
}

use Permission as P;

/// `(full method path, access)` for every RPC giao serves.
pub const RPCS: &[(&str, Access)] = &[
    // auth
    ("/giao.auth.v1.AuthService/Login", Access::Public),
    ("/giao.auth.v1.AuthService/Refresh", Access::Public),
    ("/giao.auth.v1.AuthService/Logout", Access::Public),
    ("/giao.auth.v1.AuthService/GetJwks", Access::Public),
    (
        "/giao.auth.v1.AuthService/AuthenticateApiKey",
        Access::Public,
    ),
    (
        "/giao.auth.v1.AuthService/CreateUser",
        needs(P::USERS_MANAGE),
    ),
    ("/giao.auth.v1.AuthService/GetUser", needs(P::USERS_MANAGE)),
    (
        "/giao.auth.v1.AuthService/ListUsers",
        needs(P::USERS_MANAGE),
    ),
    (
        "/giao.auth.v1.AuthService/SetUserRole",
        needs(P::USERS_MANAGE),
    ),
    (
        "/giao.auth.v1.AuthService/SetUserStatus",
        needs(P::USERS_MANAGE),
    ),
    (
        "/giao.auth.v1.AuthService/SetUserTeams",
        needs(P::USERS_MANAGE),
    ),
    (
        "/giao.auth.v1.AuthService/CreateApiKey",
        needs(P::USERS_MANAGE),
    ),
    (
        "/giao.auth.v1.AuthService/ListApiKeys",
        needs(P::USERS_MANAGE),
    ),
    (
        "/giao.auth.v1.AuthService/RevokeApiKey",
        needs(P::USERS_MANAGE),
    ),
    (
        "/giao.auth.v1.AuthService/RotateSigningKey",
        needs(P::USERS_MANAGE),
    ),
    ("/giao.auth.v1.AuthService/ListAudit", needs(P::AUDIT_READ)),
    (
        "/giao.auth.v1.AuthService/VerifyAuditChain",
        needs(P::AUDIT_READ),
    ),
    // message-store
    (
        "/giao.messagestore.v1.MessageStoreService/AppendInbound",
        needs(P::MESSAGES_INGEST),
    ),
    (
        "/giao.messagestore.v1.MessageStoreService/AppendInboundBatch",
        needs(P::MESSAGES_INGEST),
    ),
    (
        "/giao.messagestore.v1.MessageStoreService/UpdateDelivery",
        needs(P::MESSAGES_INGEST),
    ),
    (
        "/giao.messagestore.v1.MessageStoreService/RecordOutbound",
        needs(P::MESSAGES_WRITE),
    ),
    (
        "/giao.messagestore.v1.MessageStoreService/UploadAttachment",
        needs(P::MESSAGES_WRITE),
    ),
    (
        "/giao.messagestore.v1.MessageStoreService/SetConversationStatus",
        needs(P::MESSAGES_WRITE),
    ),
    (
        "/giao.messagestore.v1.MessageStoreService/GetHistory",
        needs(P::MESSAGES_READ),
    ),
    (
        "/giao.messagestore.v1.MessageStoreService/GetConversation",
        needs(P::MESSAGES_READ),
    ),
    (
        "/giao.messagestore.v1.MessageStoreService/ListConversations",
        needs(P::MESSAGES_READ),
    ),
    (
        "/giao.messagestore.v1.MessageStoreService/Search",
        needs(P::MESSAGES_READ),
    ),
    (
        "/giao.messagestore.v1.MessageStoreService/GetAttachment",
        needs(P::MESSAGES_READ),
    ),
    (
        "/giao.messagestore.v1.MessageStoreService/SetConversationOwner",
        needs(P::ASSIGNMENT_MANAGE),
    ),
    (
        "/giao.messagestore.v1.MessageStoreService/GetContact",
        needs(P::CONTACTS_READ),
    ),
    (
        "/giao.messagestore.v1.MessageStoreService/ListContacts",
        needs(P::CONTACTS_READ),
    ),
    (
        "/giao.messagestore.v1.MessageStoreService/ListTags",
        needs(P::CONTACTS_READ),
    ),
    (
        "/giao.messagestore.v1.MessageStoreService/ListNotes",
        needs(P::CONTACTS_READ),
    ),
    (
        "/giao.messagestore.v1.MessageStoreService/GetCarePipeline",
        needs(P::CONTACTS_READ),
    ),
    (
        "/giao.messagestore.v1.MessageStoreService/UpdateContact",
        needs(P::CONTACTS_WRITE),
    ),
    (
        "/giao.messagestore.v1.MessageStoreService/MergeContacts",
        needs(P::CONTACTS_WRITE),
    ),
    (
        "/giao.messagestore.v1.MessageStoreService/AddTags",
        needs(P::CONTACTS_WRITE),
    ),
    (
        "/giao.messagestore.v1.MessageStoreService/RemoveTags",
        needs(P::CONTACTS_WRITE),
    ),
    (
        "/giao.messagestore.v1.MessageStoreService/AddNote",
        needs(P::CONTACTS_WRITE),
    ),
    (
        "/giao.messagestore.v1.MessageStoreService/EditNote",
        needs(P::CONTACTS_WRITE),
    ),
    (
        "/giao.messagestore.v1.MessageStoreService/SetCarePipeline",
        needs(P::USERS_MANAGE),
    ),
    (
        "/giao.messagestore.v1.MessageStoreService/ExportHistory",
        needs(P::EXPORT),
    ),
    // connector
    (
        "/giao.connector.v1.ConnectorService/CreateAccount",
        needs(P::ACCOUNTS_MANAGE),
    ),
    (
        "/giao.connector.v1.ConnectorService/UpdateAccount",
        needs(P::ACCOUNTS_MANAGE),
    ),
    (
        "/giao.connector.v1.ConnectorService/DisableAccount",
        needs(P::ACCOUNTS_MANAGE),
    ),
    (
        "/giao.connector.v1.ConnectorService/BeginOaConnect",
        needs(P::ACCOUNTS_MANAGE),
    ),
    (
        "/giao.connector.v1.ConnectorService/CompleteOaConnect",
        needs(P::ACCOUNTS_MANAGE),
    ),
    (
        "/giao.connector.v1.ConnectorService/StartQrLogin",
        needs(P::ACCOUNTS_MANAGE),
    ),
    (
        "/giao.connector.v1.ConnectorService/WatchQrLogin",
        needs(P::ACCOUNTS_MANAGE),
    ),
    (
        "/giao.connector.v1.ConnectorService/GetAccount",
        needs(P::ACCOUNTS_READ),
    ),
    (
        "/giao.connector.v1.ConnectorService/ListAccounts",
        needs(P::ACCOUNTS_READ),
    ),
    (
        "/giao.connector.v1.ConnectorService/AccountStatus",
        needs(P::ACCOUNTS_READ),
    ),
    (
        "/giao.connector.v1.ConnectorService/ListSessions",
        needs(P::ACCOUNTS_READ),
    ),
    (
        "/giao.connector.v1.ConnectorService/SendMessage",
        needs(P::MESSAGES_WRITE),
    ),
    (
        "/giao.connector.v1.ConnectorService/SimulateInbound",
        needs(P::SIMULATOR_DRIVE),
    ),
    // assignment
    (
        "/giao.assignment.v1.AssignmentService/Assign",
        needs(P::ASSIGNMENT_MANAGE),
    ),
    (
        "/giao.assignment.v1.AssignmentService/Transfer",
        needs(P::ASSIGNMENT_MANAGE),
    ),
    (
        "/giao.assignment.v1.AssignmentService/BulkReassign",
        needs(P::ASSIGNMENT_MANAGE),
    ),
    (
        "/giao.assignment.v1.AssignmentService/OffboardStaff",
        needs(P::ASSIGNMENT_MANAGE),
    ),
    (
        "/giao.assignment.v1.AssignmentService/SetShift",
        needs(P::ASSIGNMENT_MANAGE),
    ),
    (
        "/giao.assignment.v1.AssignmentService/GetOwnershipHistory",
        needs(P::ASSIGNMENT_READ),
    ),
    (
        "/giao.assignment.v1.AssignmentService/ListShifts",
        needs(P::ASSIGNMENT_READ),
    ),
    (
        "/giao.assignment.v1.AssignmentService/ListUnattended",
        needs(P::ASSIGNMENT_READ),
    ),
    (
        "/giao.assignment.v1.AssignmentService/ListReminders",
        needs(P::ASSIGNMENT_READ),
    ),
    // An agent's own reminders and availability: everyone who works conversations.
    (
        "/giao.assignment.v1.AssignmentService/CreateReminder",
        needs(P::MESSAGES_WRITE),
    ),
    (
        "/giao.assignment.v1.AssignmentService/SetAvailability",
        needs(P::MESSAGES_WRITE),
    ),
    (
        "/giao.assignment.v1.AssignmentService/SetRoutingPolicy",
        needs(P::ASSIGNMENT_MANAGE),
    ),
    (
        "/giao.assignment.v1.AssignmentService/SetCapacity",
        needs(P::ASSIGNMENT_MANAGE),
    ),
    (
        "/giao.assignment.v1.AssignmentService/SyncRoster",
        needs(P::ASSIGNMENT_MANAGE),
    ),
    (
        "/giao.assignment.v1.AssignmentService/SetSlaPolicy",
        needs(P::ASSIGNMENT_MANAGE),
    ),
    (
        "/giao.assignment.v1.AssignmentService/SetFollowUpRule",
        needs(P::ASSIGNMENT_MANAGE),
    ),
    (
        "/giao.assignment.v1.AssignmentService/ListRoutingPolicies",
        needs(P::ASSIGNMENT_READ),
    ),
    // reporting
    (
        "/giao.reporting.v1.ReportingService/AgentScorecard",
        needs(P::REPORTS_READ),
    ),
    (
        "/giao.reporting.v1.ReportingService/TeamDashboard",
        needs(P::REPORTS_READ),
    ),
    (
        "/giao.reporting.v1.ReportingService/AccountActivity",
        needs(P::REPORTS_READ),
    ),
    (
        "/giao.reporting.v1.ReportingService/LeadSourceFunnel",
        needs(P::REPORTS_READ),
    ),
    (
        "/giao.reporting.v1.ReportingService/SlaCompliance",
        needs(P::REPORTS_READ),
    ),
    (
        "/giao.reporting.v1.ReportingService/DrillDown",
        needs(P::REPORTS_READ),
    ),
    (
        "/giao.reporting.v1.ReportingService/ExportReport",
        needs(P::REPORTS_READ),
    ),
    (
        "/giao.reporting.v1.ReportingService/GetReportSettings",
        needs(P::REPORTS_READ),
    ),
    // A tenant setting, like message-store's care pipeline: admins only.
    (
        "/giao.reporting.v1.ReportingService/SetReportSettings",
        needs(P::USERS_MANAGE),
    ),
];

/// What `rpc_path` (`/package.Service/Method`) requires; `None` for an undeclared RPC.
pub fn access(rpc_path: &str) -> Option<Access> {
    RPCS.iter()
        .find(|(path, _)| *path == rpc_path)
        .map(|&(_, access)| access)
}

/// Whether `principal` may call `rpc_path`: PermissionDenied naming the permission, or for
/// an RPC nobody declared.
pub fn authorize(rpc_path: &str, principal: &crate::Principal) -> Result<(), tonic::Status> {
    match access(rpc_path) {
        Some(Access::Public) => Ok(()),
        Some(Access::Requires(permission)) => principal.require(permission),
        None => Err(tonic::Status::permission_denied(format!(
            "{rpc_path} declares no permission"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Principal, Role};

    #[test]
    fn each_rpc_is_declared_once() {
        let mut paths: Vec<&str> = RPCS.iter().map(|(path, _)| *path).collect();
        paths.sort();
        let before = paths.len();
        paths.dedup();
        assert_eq!(before, paths.len(), "an RPC is declared twice");
    }

    /// docs/api.md lists every RPC on the row of what it needs.
    #[test]
    fn the_api_guide_matches_the_table() {
        let guide = include_str!("../../../docs/api.md");
        for (path, access) in RPCS {
            let (service, method) = path
                .trim_start_matches("/giao.")
                .split_once(".v1.")
                .and_then(|(service, rest)| Some((service, rest.split_once('/')?.1)))
                .expect("path shape");
            let needs = match access {
                Access::Public => "public",
                Access::Requires(permission) => permission.0,
            };
            let listed = guide.lines().any(|line| {
                let cells: Vec<&str> = line.split('|').map(str::trim).collect();
                cells.len() == 5
                    && cells[1] == service
                    && cells[3] == needs
                    && cells[2].split(", ").any(|name| name == method)
            });
            assert!(
                listed,
                "docs/api.md does not list {path} as needing {needs}"
            );
        }
    }

    #[test]
    fn undeclared_rpcs_are_closed() {
        let admin = Principal::user("t", "u", Role::Admin);
        let denied = authorize("/giao.x.v1.X/Anything", &admin).expect_err("closed");
        assert_eq!(denied.code(), tonic::Code::PermissionDenied);
        assert!(authorize("/giao.auth.v1.AuthService/ListAudit", &admin).is_ok());
        let agent = Principal::user("t", "u", Role::Agent);
        assert!(authorize("/giao.auth.v1.AuthService/ListAudit", &agent).is_err());
    }
}
