//! Friend and group notices: the control frames (601) Zalo pushes when the account's friends
//! or groups change, with `act_type` "fr" or "group", an `act`, and the details as JSON text in
//! `data`, shaped as the reference client (zca-js) reads them. Pushed to live sockets only:
//! gap fills replay messages, not notices.

use serde_json::{Value, json};

use super::{Sender, Simulator, now_ms};
use crate::frame::Header;

/// A group as its notices describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimGroup {
    pub id: String,
    pub name: String,
    /// The owner (`creatorId`).
    pub creator: String,
}

impl SimGroup {
    pub fn new(id: &str, name: &str, creator: &str) -> Self {
        Self {
            id: id.into(),
            name: name.into(),
            creator: creator.into(),
        }
    }
}

impl Simulator {
    // ---- friends ----

    /// Any friend notice: `act` with `data` (sent as JSON text, or as is when a string: a
    /// bare uid). None: unknown account.
    pub fn inject_friend_notice(&self, account: &str, act: &str, data: Value) -> Option<()> {
        self.push_controls(account, vec![control("fr", act, data)])
    }

    /// `from` asks to be the account's friend. Zalo announces a request twice, as "req" and
    /// "req_v2" (which is the one clients act on); both go out in one frame (inferred).
    pub fn inject_friend_request(&self, account: &str, from: &Sender, message: &str) -> Option<()> {
        let data = json!({"toUid": account, "fromUid": from.uid, "src": 85, "message": message});
        self.push_controls(
            account,
            vec![
                control("fr", "req", data.clone()),
                control("fr", "req_v2", data),
            ],
        )
    }

    /// `uid` became the account's friend (a request accepted on either side).
    pub fn inject_friend_added(&self, account: &str, uid: &str) -> Option<()> {
        self.inject_friend_notice(account, "add", json!(uid))
    }

    /// `uid` is no longer the account's friend.
    pub fn inject_friend_removed(&self, account: &str, uid: &str) -> Option<()> {
        self.inject_friend_notice(account, "remove", json!(uid))
    }

    /// The account blocked (or unblocked) `uid`'s messages from another device.
    pub fn inject_blocked(&self, account: &str, uid: &str, blocked: bool) -> Option<()> {
        let act = if blocked { "block" } else { "unblock" };
        self.inject_friend_notice(account, act, json!(uid))
    }

    // ---- groups ----

    /// Any group notice with the common fields: `act` in `group`, done by `actor`, about
    /// `members`; `extra` fields (groupSetting, info…) are merged in.
    pub fn inject_group_notice(
        &self,
        account: &str,
        act: &str,
        group: &SimGroup,
        actor: &str,
        members: &[Sender],
        extra: Value,
    ) -> Option<()> {
        let mut data = group_data(group, actor, members);
        if let (Some(data), Value::Object(extra)) = (data.as_object_mut(), extra) {
            data.extend(extra);
        }
        self.push_controls(account, vec![control("group", act, data)])
    }

    /// `by` adds the account (and `others`) to `group`: how a new group reaches the account.
    pub fn inject_added_to_group(
        &self,
        account: &str,
        group: &SimGroup,
        by: &str,
        others: &[Sender],
    ) -> Option<()> {
        let name = self.with_account(account, |state| state.profile.display_name.clone())?;
        let mut members = vec![Sender::new(account, &name)];
        members.extend_from_slice(others);
        self.inject_group_notice(account, "join", group, by, &members, json!({"isAdd": 1}))
    }

    /// `members` joined `group` (added by `by`, or `by` is the member who followed a link).
    pub fn inject_group_join(
        &self,
        account: &str,
        group: &SimGroup,
        by: &str,
        members: &[Sender],
    ) -> Option<()> {
        self.inject_group_notice(account, "join", group, by, members, json!({"isAdd": 1}))
    }

    /// `member` left `group`.
    pub fn inject_group_leave(
        &self,
        account: &str,
        group: &SimGroup,
        member: &Sender,
    ) -> Option<()> {
        let members = std::slice::from_ref(member);
        self.inject_group_notice(account, "leave", group, &member.uid, members, json!({}))
    }

    /// `by` removed `members` from `group`.
    pub fn inject_group_remove(
        &self,
        account: &str,
        group: &SimGroup,
        by: &str,
        members: &[Sender],
    ) -> Option<()> {
        self.inject_group_notice(account, "remove_member", group, by, members, json!({}))
    }

    /// `by` renamed the group: `group.name` is the new name.
    pub fn inject_group_renamed(&self, account: &str, group: &SimGroup, by: &str) -> Option<()> {
        self.inject_group_notice(account, "update", group, by, &[], json!({}))
    }

    /// `by` changed the group's settings to `setting` (`groupSetting`: blockName, joinAppr…).
    pub fn inject_group_settings(
        &self,
        account: &str,
        group: &SimGroup,
        by: &str,
        setting: Value,
    ) -> Option<()> {
        let extra = json!({"groupSetting": setting});
        self.inject_group_notice(account, "update_setting", group, by, &[], extra)
    }

    /// `uids` ask to join `group`, which needs an admin's approval.
    pub fn inject_group_join_request(
        &self,
        account: &str,
        group_id: &str,
        uids: &[&str],
    ) -> Option<()> {
        let data = json!({"uids": uids, "totalPending": uids.len(), "groupId": group_id,
            "time": now_ms().to_string()});
        self.push_controls(account, vec![control("group", "join_request", data)])
    }

    fn push_controls(&self, account: &str, controls: Vec<Value>) -> Option<()> {
        let body = json!({ "data": { "controls": controls } });
        self.push(account, Header::new(1, 601, 0), body)
    }
}

/// One control item. Zalo sends `data` as JSON text; a bare uid stays the plain string.
fn control(act_type: &str, act: &str, data: Value) -> Value {
    let data = match data {
        Value::String(text) => text,
        other => other.to_string(),
    };
    json!({"content": {"act_type": act_type, "act": act, "data": data}})
}

/// The fields every membership or info notice of a group carries.
fn group_data(group: &SimGroup, actor: &str, members: &[Sender]) -> Value {
    let members: Vec<Value> = members
        .iter()
        .map(|m| json!({"id": m.uid, "dName": m.display_name, "avatar": "", "type": 0, "avatar_25": ""}))
        .collect();
    json!({
        "subType": 0,
        "groupId": group.id,
        "creatorId": group.creator,
        "groupName": group.name,
        "sourceId": actor,
        "updateMembers": members,
        "groupSetting": null,
        "groupTopic": null,
        "info": null,
        "extraData": null,
        "time": now_ms().to_string(),
        "avt": null,
        "fullAvt": null,
        "isAdd": 0,
        "hideGroupInfo": 0,
        "version": "1",
        "groupType": 1,
    })
}
