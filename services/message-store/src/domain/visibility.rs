//! Who sees which conversation: agents their own, supervisors their teams', admins and
//! auditors the whole tenant, internal services what their scope allows. Anything not visible
//! answers NotFound, never PermissionDenied, so ids do not leak.

use giao_authz::{Principal, Role};

use super::{ConversationFilter, ConversationRecord};

pub fn can_see(principal: &Principal, conversation: &ConversationRecord) -> bool {
    if principal.tenant_id != conversation.tenant_id {
        return false;
    }
    match principal.role {
        Role::Admin | Role::Auditor | Role::Service => true,
        Role::Supervisor => {
            conversation.owner_user_id.as_deref() == Some(principal.user_id.as_str())
                || conversation
                    .team_id
                    .as_ref()
                    .is_some_and(|team| principal.team_ids.contains(team))
        }
        Role::Agent => conversation.owner_user_id.as_deref() == Some(principal.user_id.as_str()),
    }
}

/// Narrows a list filter to what the principal may see.
pub fn restrict(principal: &Principal, filter: &mut ConversationFilter) {
    let (owner, teams) = scope(principal);
    filter.visible_owner = owner;
    filter.visible_teams = teams;
}

/// The (owner, teams) restriction of a principal for store queries; `(None, None)` is the
/// whole tenant.
pub fn scope(principal: &Principal) -> (Option<String>, Option<Vec<String>>) {
    match principal.role {
        Role::Admin | Role::Auditor | Role::Service => (None, None),
        Role::Supervisor => (
            Some(principal.user_id.clone()),
            Some(principal.team_ids.clone()),
        ),
        Role::Agent => (Some(principal.user_id.clone()), None),
    }
}
