//! Typed events from decoded websocket frames.
//!
//! [`parse_frame`] (or [`parse`] on an already split frame) turns one frame into the events it
//! carries. It never panics on what the server or a corrupted link sends: a frame that cannot
//! be opened is an `Err` to log and skip; a command we do not model is [`Event::Unknown`];
//! one bad item inside a good batch is [`Event::Invalid`], so the other items of the batch are
//! not lost.
//!
//! Ids arrive as strings but sometimes as numbers; both are read as strings. `uidFrom` "0"
//! means the account itself (a message the owner sent from the phone) and `idTo` "0" in a
//! direct chat means the account too; both are kept as sent, with [`Message::from_self`] and
//! [`Message::thread_id`] saying what they mean.

use serde_json::Value;

use crate::Error;
use crate::frame::{self, Header};

/// Commands of the frames we model.
pub mod cmd {
    pub const DIRECT_MESSAGES: u16 = 501;
    pub const DIRECT_RECEIPTS: u16 = 502;
    pub const GROUP_MESSAGES: u16 = 521;
    pub const GROUP_RECEIPTS: u16 = 522;
    pub const CONTROL: u16 = 601;
    pub const REACTIONS: u16 = 612;
    pub const DUPLICATE_SESSION: u16 = 3000;
}

/// Whether a conversation is a direct chat or a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ThreadKind {
    Direct,
    Group,
}

/// One event of a frame. The large kinds are boxed so the enum stays small in channels.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The connection's AES-GCM key (frame 1, 1, 1): needed for every later frame.
    CipherKey(Vec<u8>),
    /// A chat message, received or sent by the account from another device.
    Message(Box<Message>),
    /// A message was recalled (undone) by its sender: keep the original, mark it recalled.
    Recall(Box<Recall>),
    Reaction(Box<Reaction>),
    /// Messages reached the recipient's device.
    Delivered(Box<Receipt>),
    /// Messages were read.
    Seen(Box<Receipt>),
    /// A friend request, new or removed friend, block… (control `act_type` "fr").
    Friend(Box<FriendEvent>),
    /// A member joined or left a group, the group was renamed or its settings changed…
    /// (control `act_type` "group").
    Group(Box<GroupEvent>),
    /// Any other control notice (file upload done, friend and group acts not modelled), kept
    /// raw.
    Control {
        act_type: String,
        act: String,
        raw: Value,
    },
    /// The account opened another web session: the server closes this one (3000). Alert the
    /// owner; do not reconnect in a loop against the other session.
    DuplicateSession,
    /// A command we do not model, with its payload as sent (still packed).
    Unknown {
        cmd: u16,
        sub_cmd: u8,
        payload: Value,
    },
    /// An item of a known batch that did not have the expected shape.
    Invalid {
        cmd: u16,
        reason: String,
        raw: Value,
    },
}

/// The body of a message.
#[derive(Debug, Clone, PartialEq)]
pub enum Content {
    /// Plain text (`msgType` "webchat").
    Text(String),
    /// Anything else (photos, files, stickers, links…), as sent.
    Object(Value),
}

/// A chat message.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub thread_kind: ThreadKind,
    /// The other party of a direct chat, or the group id.
    pub thread_id: String,
    /// The server's id of the message.
    pub msg_id: String,
    /// The sending client's id of the message (quotes and recalls name both).
    pub cli_msg_id: String,
    /// "webchat" for text; "chat.photo", "share.file"… otherwise.
    pub msg_type: String,
    /// The sender as sent: "0" when it is the account itself.
    pub uid_from: String,
    /// Sent by the account owner (from the phone or another session), not received.
    pub from_self: bool,
    pub id_to: String,
    /// The sender's display name, when the server sends it.
    pub display_name: Option<String>,
    /// Server time in Unix milliseconds.
    pub ts_ms: i64,
    pub content: Content,
    /// The message this one replies to, as sent.
    pub quote: Option<Value>,
    /// The whole item, for fields not modelled here.
    pub raw: Value,
}

/// A recall: the sender took back an earlier message.
#[derive(Debug, Clone, PartialEq)]
pub struct Recall {
    pub thread_kind: ThreadKind,
    pub thread_id: String,
    /// The id of the recall notice itself.
    pub msg_id: String,
    pub uid_from: String,
    pub from_self: bool,
    pub id_to: String,
    pub ts_ms: i64,
    /// The server id (`msgId`) of the recalled message.
    pub recalled_msg_id: String,
    /// The client id (`cliMsgId`) of the recalled message.
    pub recalled_cli_msg_id: String,
    pub raw: Value,
}

/// A reaction to one or more messages.
#[derive(Debug, Clone, PartialEq)]
pub struct Reaction {
    pub thread_kind: ThreadKind,
    pub thread_id: String,
    pub msg_id: String,
    pub uid_from: String,
    pub from_self: bool,
    pub id_to: String,
    pub ts_ms: i64,
    /// The icon code, e.g. "/-heart"; empty when a reaction is removed.
    pub icon: String,
    /// The server ids (`gMsgID`) of the messages reacted to.
    pub target_msg_ids: Vec<String>,
    pub raw: Value,
}

/// Delivery or read receipt for a message.
#[derive(Debug, Clone, PartialEq)]
pub struct Receipt {
    pub thread_kind: ThreadKind,
    /// The peer of a direct chat (`idTo`) or the group (`groupId`), when sent.
    pub thread_id: Option<String>,
    pub msg_id: String,
    /// Who has the message (delivered) or has read it.
    pub uids: Vec<String>,
    pub raw: Value,
}

/// What happened to a friendship (the control's `act`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FriendKind {
    /// "add": a friend request was accepted, by either side.
    Added,
    /// "remove": the friendship was ended, by either side.
    Removed,
    /// "req_v2": a friend request, to or from the account. Zalo also sends an older "req"
    /// notice for the same request; that one stays [`Event::Control`], so one request is one
    /// event.
    Request,
    /// "undo_req": the sender withdrew a request.
    RequestUndone,
    /// "reject": a request was declined.
    RequestRejected,
    /// "seen_fr_req": the account looked at its pending requests.
    RequestsSeen,
    /// "block" / "unblock": the account blocked or unblocked a user's messages.
    Blocked,
    Unblocked,
    /// "block_call" / "unblock_call": the same for calls.
    CallsBlocked,
    CallsUnblocked,
}

impl FriendKind {
    /// The kind of a control's act; None for acts not modelled.
    pub fn from_act(act: &str) -> Option<Self> {
        Some(match act {
            "add" => Self::Added,
            "remove" => Self::Removed,
            "req_v2" => Self::Request,
            "undo_req" => Self::RequestUndone,
            "reject" => Self::RequestRejected,
            "seen_fr_req" => Self::RequestsSeen,
            "block" => Self::Blocked,
            "unblock" => Self::Unblocked,
            "block_call" => Self::CallsBlocked,
            "unblock_call" => Self::CallsUnblocked,
            _ => return None,
        })
    }

    /// The act Zalo sends for this kind.
    pub fn act(self) -> &'static str {
        match self {
            Self::Added => "add",
            Self::Removed => "remove",
            Self::Request => "req_v2",
            Self::RequestUndone => "undo_req",
            Self::RequestRejected => "reject",
            Self::RequestsSeen => "seen_fr_req",
            Self::Blocked => "block",
            Self::Unblocked => "unblock",
            Self::CallsBlocked => "block_call",
            Self::CallsUnblocked => "unblock_call",
        }
    }
}

/// A change in the account's friends.
///
/// Zalo sends only the other user's id for add, remove and (un)block, and `fromUid`/`toUid`
/// for requests, so which side the account is on depends on its own uid: see
/// [`FriendEvent::peer`] and [`FriendEvent::from_self`].
#[derive(Debug, Clone, PartialEq)]
pub struct FriendEvent {
    pub kind: FriendKind,
    /// The user added, removed, blocked or unblocked (None for requests).
    pub user_id: Option<String>,
    /// Requests: who sent it (`fromUid`).
    pub from_uid: Option<String>,
    /// Requests: to whom (`toUid`).
    pub to_uid: Option<String>,
    /// The note sent with a request.
    pub message: Option<String>,
    /// [`FriendKind::RequestsSeen`]: the senders of the requests seen.
    pub seen_uids: Vec<String>,
    /// The whole control item.
    pub raw: Value,
}

impl FriendEvent {
    /// The other user of the event, given the account's own uid.
    pub fn peer(&self, own_uid: &str) -> Option<&str> {
        if let Some(user) = &self.user_id {
            return Some(user);
        }
        match (self.from_uid.as_deref(), self.to_uid.as_deref()) {
            (Some(from), to) if from == own_uid => to,
            (Some(from), _) => Some(from),
            (None, to) => to,
        }
    }

    /// Whether the account did it (from the phone or another session), as the reference
    /// client reads it: blocks and seen requests are always the account's own; adds and
    /// removes are counted as the other side's; requests are the account's when it sent them.
    pub fn from_self(&self, own_uid: &str) -> bool {
        match self.kind {
            FriendKind::Added | FriendKind::Removed => false,
            FriendKind::Request | FriendKind::RequestUndone | FriendKind::RequestRejected => {
                self.from_uid.as_deref() == Some(own_uid)
            }
            FriendKind::RequestsSeen
            | FriendKind::Blocked
            | FriendKind::Unblocked
            | FriendKind::CallsBlocked
            | FriendKind::CallsUnblocked => true,
        }
    }
}

/// What happened in a group (the control's `act`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GroupKind {
    /// "join_request": users ask to join a group that needs approval. Zalo also sends
    /// "join_reject" when a request is approved (alongside "join"); that one stays
    /// [`Event::Control`].
    JoinRequest,
    /// "join": members were added or joined. The account's own join (a new group it was added
    /// to, or created) is one whose members include the account.
    Join,
    /// "leave": members left.
    Leave,
    /// "remove_member": an admin removed members.
    RemoveMember,
    /// "block_member": an admin removed members and barred them from rejoining.
    BlockMember,
    /// "update_setting": the group's settings (`groupSetting`) changed.
    UpdateSetting,
    /// "update": the group's name or other details changed.
    Update,
    /// "update_avatar": the group's picture changed.
    UpdateAvatar,
    /// "new_link": the group's invitation link changed.
    NewLink,
    /// "add_admin" / "remove_admin": members were made or unmade deputies.
    AddAdmin,
    RemoveAdmin,
}

impl GroupKind {
    /// The kind of a control's act; None for acts not modelled.
    pub fn from_act(act: &str) -> Option<Self> {
        Some(match act {
            "join_request" => Self::JoinRequest,
            "join" => Self::Join,
            "leave" => Self::Leave,
            "remove_member" => Self::RemoveMember,
            "block_member" => Self::BlockMember,
            "update_setting" => Self::UpdateSetting,
            "update" => Self::Update,
            "update_avatar" => Self::UpdateAvatar,
            "new_link" => Self::NewLink,
            "add_admin" => Self::AddAdmin,
            "remove_admin" => Self::RemoveAdmin,
            _ => return None,
        })
    }

    /// The act Zalo sends for this kind.
    pub fn act(self) -> &'static str {
        match self {
            Self::JoinRequest => "join_request",
            Self::Join => "join",
            Self::Leave => "leave",
            Self::RemoveMember => "remove_member",
            Self::BlockMember => "block_member",
            Self::UpdateSetting => "update_setting",
            Self::Update => "update",
            Self::UpdateAvatar => "update_avatar",
            Self::NewLink => "new_link",
            Self::AddAdmin => "add_admin",
            Self::RemoveAdmin => "remove_admin",
        }
    }
}

/// A member named by a group event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMember {
    pub uid: String,
    /// The display name, when sent (not for join requests).
    pub display_name: Option<String>,
}

/// A change in a group the account is in.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupEvent {
    pub kind: GroupKind,
    pub group_id: String,
    /// The group's name as of this event (the new name after an "update").
    pub group_name: Option<String>,
    /// Who made the change (`sourceId`): the admin who added or removed, the member who
    /// left. None for join requests.
    pub actor_id: Option<String>,
    pub creator_id: Option<String>,
    /// The members the change is about (`updateMembers`; the requesters of a join request).
    pub members: Vec<GroupMember>,
    /// When, in Unix milliseconds (`time`), if sent.
    pub ts_ms: Option<i64>,
    /// The whole control item; its `content.data` holds the settings, link, avatar….
    pub raw: Value,
}

impl GroupEvent {
    /// Whether `uid` made the change or is among its members: with the account's own uid,
    /// whether the account was added (a new group), removed, made admin, or acted itself.
    pub fn involves(&self, uid: &str) -> bool {
        self.actor_id.as_deref() == Some(uid) || self.members.iter().any(|m| m.uid == uid)
    }
}

/// Parses one raw frame. `cipher_key` is the key from the connection's key frame (which
/// itself parses to [`Event::CipherKey`]).
pub fn parse_frame(bytes: &[u8], cipher_key: Option<&[u8]>) -> Result<Vec<Event>, Error> {
    let (header, payload) = frame::decode(bytes)?;
    parse(header, &payload, cipher_key)
}

/// Parses a decoded frame into events. Commands are matched as the reference client does:
/// messages, receipts and control notices on sub-command 0, reactions on any.
pub fn parse(
    header: Header,
    payload: &Value,
    cipher_key: Option<&[u8]>,
) -> Result<Vec<Event>, Error> {
    if let Some(key) = frame::key_from_frame(header, payload)? {
        return Ok(vec![Event::CipherKey(key)]);
    }
    let unknown = || {
        vec![Event::Unknown {
            cmd: header.cmd,
            sub_cmd: header.sub_cmd,
            payload: payload.clone(),
        }]
    };
    if header.cmd == cmd::DUPLICATE_SESSION {
        return Ok(vec![Event::DuplicateSession]);
    }
    let modelled = match header.cmd {
        cmd::DIRECT_MESSAGES
        | cmd::GROUP_MESSAGES
        | cmd::DIRECT_RECEIPTS
        | cmd::GROUP_RECEIPTS
        | cmd::CONTROL => header.sub_cmd == 0,
        cmd::REACTIONS => true,
        _ => false,
    };
    if !modelled || payload.is_null() {
        return Ok(unknown());
    }
    let decoded = frame::decode_data(payload, cipher_key)?;
    // The events sit under "data" of the unpacked payload.
    let body = decoded.get("data").unwrap_or(&Value::Null);
    let cmd = header.cmd;
    let events = match cmd {
        cmd::DIRECT_MESSAGES => messages(cmd, body, "msgs", ThreadKind::Direct),
        cmd::GROUP_MESSAGES => messages(cmd, body, "groupMsgs", ThreadKind::Group),
        cmd::REACTIONS => {
            let mut events = reactions(cmd, body, "reacts", ThreadKind::Direct);
            events.extend(reactions(cmd, body, "reactGroups", ThreadKind::Group));
            events
        }
        cmd::DIRECT_RECEIPTS => {
            let mut events = receipts(cmd, body, "delivereds", ThreadKind::Direct, false);
            events.extend(receipts(cmd, body, "seens", ThreadKind::Direct, true));
            events
        }
        cmd::GROUP_RECEIPTS => {
            let mut events = receipts(cmd, body, "delivereds", ThreadKind::Group, false);
            events.extend(receipts(cmd, body, "groupSeens", ThreadKind::Group, true));
            events
        }
        cmd::CONTROL => controls(cmd, body),
        _ => unknown(),
    };
    Ok(events)
}

fn items<'a>(body: &'a Value, field: &str) -> &'a [Value] {
    body.get(field)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

fn messages(cmd: u16, body: &Value, field: &str, kind: ThreadKind) -> Vec<Event> {
    items(body, field)
        .iter()
        .map(|item| message(item, kind).unwrap_or_else(|reason| invalid(cmd, reason, item)))
        .collect()
}

fn message(item: &Value, kind: ThreadKind) -> Result<Event, String> {
    let common = Common::read(item, kind)?;
    let content = item.get("content").unwrap_or(&Value::Null);
    if let Some(recalled) = content
        .as_object()
        .and_then(|c| c.get("deleteMsg").map(|_| c))
    {
        return Ok(Event::Recall(Box::new(Recall {
            thread_kind: kind,
            thread_id: common.thread_id,
            msg_id: common.msg_id,
            uid_from: common.uid_from,
            from_self: common.from_self,
            id_to: common.id_to,
            ts_ms: common.ts_ms,
            recalled_msg_id: recalled.get("globalMsgId").and_then(id).unwrap_or_default(),
            recalled_cli_msg_id: recalled.get("cliMsgId").and_then(id).unwrap_or_default(),
            raw: item.clone(),
        })));
    }
    let content = match content {
        Value::String(text) => Content::Text(text.clone()),
        Value::Null => return Err("content is missing".to_owned()),
        other => Content::Object(other.clone()),
    };
    Ok(Event::Message(Box::new(Message {
        thread_kind: kind,
        thread_id: common.thread_id,
        msg_id: common.msg_id,
        cli_msg_id: item.get("cliMsgId").and_then(id).unwrap_or_default(),
        msg_type: item
            .get("msgType")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        uid_from: common.uid_from,
        from_self: common.from_self,
        id_to: common.id_to,
        display_name: item.get("dName").and_then(Value::as_str).map(str::to_owned),
        ts_ms: common.ts_ms,
        content,
        quote: item.get("quote").filter(|q| !q.is_null()).cloned(),
        raw: item.clone(),
    })))
}

fn reactions(cmd: u16, body: &Value, field: &str, kind: ThreadKind) -> Vec<Event> {
    items(body, field)
        .iter()
        .map(|item| reaction(item, kind).unwrap_or_else(|reason| invalid(cmd, reason, item)))
        .collect()
}

fn reaction(item: &Value, kind: ThreadKind) -> Result<Event, String> {
    let common = Common::read(item, kind)?;
    // The reaction's content is JSON inside a string.
    let content = match item.get("content") {
        Some(Value::String(text)) => serde_json::from_str::<Value>(text)
            .map_err(|err| format!("reaction content is not JSON: {err}"))?,
        Some(other @ Value::Object(_)) => other.clone(),
        _ => return Err("reaction content is missing".to_owned()),
    };
    let target_msg_ids = content
        .get("rMsg")
        .and_then(Value::as_array)
        .map(|targets| {
            targets
                .iter()
                .filter_map(|t| t.get("gMsgID").and_then(id))
                .collect()
        })
        .unwrap_or_default();
    Ok(Event::Reaction(Box::new(Reaction {
        thread_kind: kind,
        thread_id: common.thread_id,
        msg_id: common.msg_id,
        uid_from: common.uid_from,
        from_self: common.from_self,
        id_to: common.id_to,
        ts_ms: common.ts_ms,
        icon: content
            .get("rIcon")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        target_msg_ids,
        raw: item.clone(),
    })))
}

fn receipts(cmd: u16, body: &Value, field: &str, kind: ThreadKind, seen: bool) -> Vec<Event> {
    items(body, field)
        .iter()
        .map(|item| {
            let Some(msg_id) = item.get("msgId").and_then(id) else {
                return invalid(cmd, "msgId is missing".to_owned(), item);
            };
            let thread_id = match kind {
                ThreadKind::Direct => item.get("idTo").and_then(id),
                ThreadKind::Group => item.get("groupId").and_then(id),
            };
            let uids_field = if seen { "seenUids" } else { "deliveredUids" };
            let uids = item
                .get(uids_field)
                .and_then(Value::as_array)
                .map(|uids| uids.iter().filter_map(id).collect())
                .unwrap_or_default();
            let receipt = Receipt {
                thread_kind: kind,
                thread_id,
                msg_id,
                uids,
                raw: item.clone(),
            };
            if seen {
                Event::Seen(Box::new(receipt))
            } else {
                Event::Delivered(Box::new(receipt))
            }
        })
        .collect()
}

fn controls(cmd: u16, body: &Value) -> Vec<Event> {
    items(body, "controls")
        .iter()
        .map(|item| {
            let content = item.get("content").unwrap_or(&Value::Null);
            let text = |field: &str| {
                content
                    .get(field)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned()
            };
            if !content.is_object() {
                return invalid(cmd, "control content is missing".to_owned(), item);
            }
            let (act_type, act) = (text("act_type"), text("act"));
            let social = match act_type.as_str() {
                "fr" => friend(&act, content, item),
                "group" => group(&act, content, item),
                _ => None,
            };
            // A notice we cannot read as a friend or group event stays a raw control notice,
            // as before these were modelled.
            social.unwrap_or(Event::Control {
                act_type,
                act,
                raw: item.clone(),
            })
        })
        .collect()
}

/// A control's `data`: JSON inside a string, as Zalo sends it, or already a value.
fn control_data(content: &Value) -> Option<Value> {
    match content.get("data")? {
        Value::String(text) => Some(
            // A bare uid ("add", "block"…) is not JSON text in every reading (it may be too
            // large for a number): keep it as the string it was.
            serde_json::from_str::<Value>(text)
                .ok()
                .filter(|v| v.is_object() || v.is_array())
                .unwrap_or_else(|| Value::String(text.clone())),
        ),
        Value::Null => None,
        other => Some(other.clone()),
    }
}

fn friend(act: &str, content: &Value, item: &Value) -> Option<Event> {
    let kind = FriendKind::from_act(act)?;
    let data = control_data(content)?;
    let field = |name: &str| data.get(name).and_then(id).filter(|v| !v.is_empty());
    let mut event = FriendEvent {
        kind,
        user_id: None,
        from_uid: None,
        to_uid: None,
        message: None,
        seen_uids: Vec::new(),
        raw: item.clone(),
    };
    match kind {
        FriendKind::Added
        | FriendKind::Removed
        | FriendKind::Blocked
        | FriendKind::Unblocked
        | FriendKind::CallsBlocked
        | FriendKind::CallsUnblocked => {
            event.user_id = Some(id(&data).filter(|v| !v.is_empty())?);
        }
        FriendKind::Request | FriendKind::RequestUndone | FriendKind::RequestRejected => {
            event.from_uid = Some(field("fromUid")?);
            event.to_uid = Some(field("toUid")?);
            event.message = data
                .get("message")
                .and_then(Value::as_str)
                .map(str::to_owned);
        }
        FriendKind::RequestsSeen => {
            event.seen_uids = data.as_array()?.iter().filter_map(id).collect();
        }
    }
    Some(Event::Friend(Box::new(event)))
}

fn group(act: &str, content: &Value, item: &Value) -> Option<Event> {
    let kind = GroupKind::from_act(act)?;
    let data = control_data(content)?;
    let field = |name: &str| data.get(name).and_then(id).filter(|v| !v.is_empty());
    let group_id = field("groupId").or_else(|| field("group_id"))?;
    let members = if kind == GroupKind::JoinRequest {
        // Requesters are bare uids.
        data.get("uids")
            .and_then(Value::as_array)
            .map(|uids| {
                uids.iter()
                    .filter_map(id)
                    .map(|uid| GroupMember {
                        uid,
                        display_name: None,
                    })
                    .collect()
            })
            .unwrap_or_default()
    } else {
        data.get("updateMembers")
            .and_then(Value::as_array)
            .map(|members| {
                members
                    .iter()
                    .filter_map(|m| {
                        Some(GroupMember {
                            uid: m.get("id").and_then(id)?,
                            display_name: m.get("dName").and_then(Value::as_str).map(str::to_owned),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    Some(Event::Group(Box::new(GroupEvent {
        kind,
        group_id,
        group_name: data
            .get("groupName")
            .and_then(Value::as_str)
            .map(str::to_owned),
        actor_id: field("sourceId"),
        creator_id: field("creatorId"),
        members,
        ts_ms: data.get("time").and_then(timestamp),
        raw: item.clone(),
    })))
}

fn invalid(cmd: u16, reason: String, raw: &Value) -> Event {
    Event::Invalid {
        cmd,
        reason,
        raw: raw.clone(),
    }
}

/// The fields every message-like item has.
struct Common {
    thread_id: String,
    msg_id: String,
    uid_from: String,
    from_self: bool,
    id_to: String,
    ts_ms: i64,
}

impl Common {
    fn read(item: &Value, kind: ThreadKind) -> Result<Self, String> {
        if !item.is_object() {
            return Err("item is not an object".to_owned());
        }
        let msg_id = item.get("msgId").and_then(id).ok_or("msgId is missing")?;
        let uid_from = item
            .get("uidFrom")
            .and_then(id)
            .ok_or("uidFrom is missing")?;
        let id_to = item.get("idTo").and_then(id).unwrap_or_default();
        let ts_ms = item
            .get("ts")
            .and_then(timestamp)
            .ok_or("ts is missing or not a number")?;
        let from_self = uid_from == "0";
        // In a direct chat the thread is the other party; in a group it is the group.
        let thread_id = match kind {
            ThreadKind::Direct if !from_self => uid_from.clone(),
            _ => id_to.clone(),
        };
        Ok(Self {
            thread_id,
            msg_id,
            uid_from,
            from_self,
            id_to,
            ts_ms,
        })
    }
}

/// An id sent as a string or a number.
fn id(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

/// A millisecond timestamp sent as a string or a number.
fn timestamp(value: &Value) -> Option<i64> {
    match value {
        Value::String(text) => text.trim().parse().ok(),
        Value::Number(number) => number.as_i64(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn frame_of(cmd: u16, body: Value) -> Vec<u8> {
        let packed = frame::encode_data(&json!({ "data": body }), 2, Some(&[5; 32])).expect("pack");
        frame::encode(Header::new(1, cmd, 0), packed.to_string().as_bytes())
    }

    #[test]
    fn direct_message_from_the_phone_is_flagged_self() {
        let bytes = frame_of(
            501,
            json!({"msgs": [{"msgId": "10", "cliMsgId": "11", "msgType": "webchat",
                "uidFrom": "0", "idTo": "777", "dName": "", "ts": "1700000000000",
                "content": "xin chào"}]}),
        );
        let events = parse_frame(&bytes, Some(&[5; 32])).expect("events");
        let [Event::Message(message)] = events.as_slice() else {
            panic!("expected one message, got {events:?}");
        };
        assert!(message.from_self);
        assert_eq!(message.thread_id, "777");
        assert_eq!(message.ts_ms, 1_700_000_000_000);
        assert_eq!(message.content, Content::Text("xin chào".into()));
    }

    #[test]
    fn recall_names_the_recalled_message_and_bad_items_do_not_sink_the_batch() {
        let bytes = frame_of(
            521,
            json!({"groupMsgs": [
                {"msgId": "20", "uidFrom": "5", "idTo": "g1", "ts": 1,
                 "content": {"deleteMsg": 1, "globalMsgId": 19, "cliMsgId": 18}},
                {"msgId": "21"}
            ]}),
        );
        let events = parse_frame(&bytes, Some(&[5; 32])).expect("events");
        let [Event::Recall(recall), Event::Invalid { .. }] = events.as_slice() else {
            panic!("expected a recall and an invalid item, got {events:?}");
        };
        assert_eq!(recall.recalled_msg_id, "19");
        assert_eq!(recall.thread_id, "g1");
    }

    #[test]
    fn unknown_commands_and_kicks() {
        let bytes = frame::encode(Header::new(1, 9999, 0), b"{\"x\":1}");
        assert!(matches!(
            parse_frame(&bytes, None).expect("events").as_slice(),
            [Event::Unknown { cmd: 9999, .. }]
        ));
        let bytes = frame::encode(Header::new(1, 3000, 0), b"{}");
        assert_eq!(
            parse_frame(&bytes, None).expect("events"),
            vec![Event::DuplicateSession]
        );
    }

    #[test]
    fn friend_and_group_notices_are_typed_and_unreadable_ones_stay_raw() {
        let bytes = frame_of(
            601,
            json!({"controls": [
                {"content": {"act_type": "fr", "act": "add", "data": "8123"}},
                {"content": {"act_type": "fr", "act": "req_v2",
                    "data": "{\"fromUid\":\"8123\",\"toUid\":\"800\",\"src\":1,\"message\":\"hi\"}"}},
                {"content": {"act_type": "fr", "act": "req", "data": "{}"}},
                {"content": {"act_type": "group", "act": "join", "data": {"groupId": "g1",
                    "groupName": "Sales", "sourceId": "5", "time": "1700000000000",
                    "updateMembers": [{"id": "800", "dName": "Me"}]}}},
                {"content": {"act_type": "group", "act": "leave", "data": "not json"}},
                {"content": {"act_type": "group", "act": "new_pin_topic", "data": "{}"}},
            ]}),
        );
        let events = parse_frame(&bytes, Some(&[5; 32])).expect("events");
        let [
            Event::Friend(added),
            Event::Friend(request),
            Event::Control { act: req, .. },
            Event::Group(join),
            Event::Control { act: leave, .. },
            Event::Control { act: pin, .. },
        ] = events.as_slice()
        else {
            panic!("unexpected events {events:?}");
        };
        assert_eq!(added.kind, FriendKind::Added);
        assert_eq!(added.peer("800"), Some("8123"));
        assert_eq!(request.kind, FriendKind::Request);
        assert_eq!(request.peer("800"), Some("8123"));
        assert!(!request.from_self("800"));
        assert_eq!(request.message.as_deref(), Some("hi"));
        assert_eq!(
            (req.as_str(), leave.as_str(), pin.as_str()),
            ("req", "leave", "new_pin_topic")
        );
        assert_eq!(join.kind, GroupKind::Join);
        assert_eq!(join.group_name.as_deref(), Some("Sales"));
        assert_eq!(join.ts_ms, Some(1_700_000_000_000));
        assert!(join.involves("800"));
    }
}
