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
    match principal.role {
        Role::Admin | Role::Auditor | Role::Service => {}
        Role::Supervisor => {
            filter.visible_owner = Some(principal.user_id.clone());
            filter.visible_teams = Some(principal.team_ids.clone());
        }
        Role::Agent => filter.visible_owner = Some(principal.user_id.clone()),
    }
}
