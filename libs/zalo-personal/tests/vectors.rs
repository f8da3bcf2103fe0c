//! Checks our protocol functions against values the reference client (zca-js) computed or
//! accepted for fixed inputs: `testdata/zca_vectors.json`, made by `make vectors`. The `how`
//! field of that file says how each group was obtained.

use std::collections::BTreeMap;

use serde_json::Value;
use zalo_personal::crypto::{self, SessionCipher};
use zalo_personal::events::{self, Content, Event, ThreadKind};
use zalo_personal::frame::{self, Header};

fn vectors() -> Value {
    let text = include_str!("../testdata/zca_vectors.json");
    serde_json::from_str(text).expect("vectors are JSON")
}

fn list<'a>(vectors: &'a Value, field: &str) -> &'a [Value] {
    let items = vectors[field].as_array().expect("a list of vectors");
    assert!(!items.is_empty(), "no {field} vectors");
    items
}

fn text<'a>(value: &'a Value, field: &str) -> &'a str {
    value[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} is a string in {value}"))
}

fn b64(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .expect("base64 in vectors")
}

fn hex16(text: &str) -> [u8; 16] {
    hex::decode(text)
        .expect("hex in vectors")
        .try_into()
        .expect("16 bytes")
}

#[test]
fn imei_is_uuid_and_md5_of_the_user_agent() {
    let vectors = vectors();
    for v in list(&vectors, "imei") {
        assert_eq!(
            crypto::imei(text(v, "uuid"), text(v, "user_agent")),
            text(v, "imei")
        );
    }
}

#[test]
fn sign_keys_match() {
    let vectors = vectors();
    for v in list(&vectors, "sign_key") {
        let params: BTreeMap<String, String> = v["params"]
            .as_object()
            .expect("params object")
            .iter()
            .map(|(key, value)| {
                let value = match value {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (key.clone(), value)
            })
            .collect();
        assert_eq!(
            crypto::sign_key(text(v, "kind"), &params),
            text(v, "sign_key"),
            "kind {}",
            text(v, "kind")
        );
    }
}

#[test]
fn zcid_login_key_and_login_params_match() {
    let vectors = vectors();
    for v in list(&vectors, "login") {
        let api_type = u32::try_from(v["api_type"].as_u64().expect("api_type")).expect("u32");
        let ts_ms = v["ts_ms"].as_i64().expect("ts_ms");
        let zcid = crypto::zcid(api_type, text(v, "imei"), ts_ms).expect("zcid");
        assert_eq!(zcid, text(v, "zcid"));
        let key = crypto::login_key(&zcid, text(v, "zcid_ext")).expect("login key");
        assert_eq!(
            key,
            text(v, "login_key"),
            "zcid_ext {}",
            text(v, "zcid_ext")
        );
        let encrypted = crypto::encrypt_login_params(&key, text(v, "params_json")).expect("params");
        assert_eq!(encrypted, text(v, "params_encrypted"));
    }
}

#[test]
fn login_answers_decrypt() {
    let vectors = vectors();
    for v in list(&vectors, "login_data") {
        let plain = crypto::decrypt_login_data(text(v, "key"), text(v, "data")).expect("plain");
        assert_eq!(plain, text(v, "plain"));
    }
}

#[test]
fn session_cipher_matches_both_ways() {
    let vectors = vectors();
    for v in list(&vectors, "session") {
        let cipher = SessionCipher::from_enk(text(v, "enk")).expect("enk");
        assert_eq!(cipher.encrypt(text(v, "plain")), text(v, "encrypted"));
        assert_eq!(
            cipher.decrypt(text(v, "encrypted")).expect("plain"),
            text(v, "plain")
        );
        assert_eq!(
            cipher.decrypt(text(v, "uri_encoded")).expect("plain"),
            text(v, "plain")
        );
    }
}

#[test]
fn responses_give_the_same_data_or_error_code() {
    let vectors = vectors();
    for v in list(&vectors, "responses") {
        let cipher = SessionCipher::from_enk(text(v, "enk")).expect("enk");
        let result = crypto::decode_response(&cipher, text(v, "body").as_bytes());
        match v["error_code"].as_i64() {
            Some(code) => {
                let err = result.expect_err("an error answer");
                assert_eq!(err.api_code(), Some(code), "{err}");
            }
            None => assert_eq!(result.expect("data"), v["data"]),
        }
    }
}

#[test]
fn payloads_decode_to_the_plain_json() {
    let vectors = vectors();
    for v in list(&vectors, "payloads") {
        let key = v["key_b64"].as_str().map(b64);
        let plain: Value = serde_json::from_str(text(v, "plain")).expect("plain JSON");
        let decoded = frame::decode_data(&v["payload"], key.as_deref())
            .unwrap_or_else(|err| panic!("{}: {err}", text(v, "note")));
        assert_eq!(decoded, plain, "{}", text(v, "note"));
    }
}

#[test]
fn uncompressed_payloads_encode_byte_for_byte() {
    // Types 0 and 3 involve no compressor, so with the same IV and additional data our
    // encoder must produce exactly the payload zca-js accepted. (Compressed types depend on
    // the compressor's choices; they are covered by decoding above and by round trips.)
    let vectors = vectors();
    let mut compared = 0;
    for v in list(&vectors, "payloads") {
        let encrypt = u8::try_from(v["encrypt"].as_u64().expect("encrypt")).expect("u8");
        if encrypt != 0 && encrypt != 3 {
            continue;
        }
        let plain: Value = serde_json::from_str(text(v, "plain")).expect("plain JSON");
        // The plain text has sorted keys, so any map order serialises it the same.
        assert_eq!(
            serde_json::to_string(&plain).expect("json"),
            text(v, "plain")
        );
        let key = v["key_b64"].as_str().map(b64);
        let iv = v["iv_hex"].as_str().map_or([0; 16], hex16);
        let aad = v["aad_hex"].as_str().map_or([0; 16], hex16);
        let packed =
            frame::encode_data_with(&plain, encrypt, key.as_deref(), iv, aad).expect("packed");
        assert_eq!(packed, v["payload"], "{}", text(v, "note"));
        compared += 1;
    }
    assert!(compared >= 2);
}

#[test]
fn payloads_zca_refuses_are_errors() {
    let vectors = vectors();
    for v in list(&vectors, "rejects") {
        let key = v["key_b64"].as_str().map(b64);
        let result = frame::decode_data(&v["payload"], key.as_deref());
        assert!(result.is_err(), "{} decoded to {result:?}", text(v, "note"));
    }
}

#[test]
fn ping_is_the_bytes_zca_sends() {
    let vectors = vectors();
    let ping = &vectors["ping"];
    let expected = b64(text(ping, "frame_b64"));
    assert_eq!(
        frame::encode_ping(ping["event_id"].as_i64().expect("id")),
        expected
    );
    let (header, _) = frame::decode(&expected).expect("frame");
    assert_eq!(header, Header::PING);
}

/// Our events, reduced to what zca-js's emitted events say, in zca-js's vocabulary.
fn summarise(event: &Event) -> Vec<Value> {
    let group = |kind: ThreadKind| kind == ThreadKind::Group;
    match event {
        Event::CipherKey(key) => {
            use base64::Engine as _;
            vec![serde_json::json!({
                "event": "cipher_key",
                "key": base64::engine::general_purpose::STANDARD.encode(key),
            })]
        }
        Event::Message(m) => vec![serde_json::json!({
            "event": "message", "thread_id": m.thread_id, "is_self": m.from_self,
            "msg_id": m.msg_id, "group": group(m.thread_kind),
            "content": match &m.content { Content::Text(t) => Value::from(t.clone()), Content::Object(o) => o.clone() },
        })],
        Event::Recall(r) => vec![serde_json::json!({
            "event": "undo", "thread_id": r.thread_id, "is_self": r.from_self,
            "msg_id": r.msg_id, "group": group(r.thread_kind), "recalled_msg_id": r.recalled_msg_id,
        })],
        Event::Reaction(r) => vec![serde_json::json!({
            "event": "reaction", "thread_id": r.thread_id, "is_self": r.from_self,
            "msg_id": r.msg_id, "group": group(r.thread_kind), "icon": r.icon,
        })],
        Event::Delivered(r) => {
            vec![serde_json::json!({"event": "delivered_messages", "msg_ids": [r.msg_id]})]
        }
        Event::Seen(r) => {
            vec![serde_json::json!({"event": "seen_messages", "msg_ids": [r.msg_id]})]
        }
        Event::Control { act_type, raw, .. } if act_type == "file_done" => {
            vec![
                serde_json::json!({"event": "upload_attachment", "file_id": raw["content"]["fileId"]}),
            ]
        }
        // zca-js answers a duplicate session by closing with code 3000.
        Event::DuplicateSession => vec![serde_json::json!({"event": "closed", "code": 3000})],
        other => panic!("zca-js emitted nothing comparable to {other:?}"),
    }
}

#[test]
fn frames_give_the_events_zca_emits() {
    let vectors = vectors();
    let mut cipher_key: Option<Vec<u8>> = None;
    for v in list(&vectors, "frames") {
        let bytes = b64(text(v, "frame_b64"));
        let events = events::parse_frame(&bytes, cipher_key.as_deref())
            .unwrap_or_else(|err| panic!("{}: {err}", text(v, "note")));
        for event in &events {
            if let Event::CipherKey(key) = event {
                cipher_key = Some(key.clone());
            }
        }
        let ours: Vec<Value> = events.iter().flat_map(summarise).collect();
        let theirs = v["zca_events"].as_array().expect("events");
        assert_eq!(&ours, theirs, "{}", text(v, "note"));
    }
}

#[test]
fn frames_with_a_wrong_key_are_errors_not_panics() {
    let vectors = vectors();
    for v in list(&vectors, "frames") {
        let bytes = b64(text(v, "frame_b64"));
        // Whatever the key, parsing returns; encrypted frames must fail under a wrong one.
        let result = events::parse_frame(&bytes, Some(&[0; 32]));
        let (_, payload) = frame::decode(&bytes).expect("frame");
        if payload["encrypt"].as_u64().is_some_and(|e| e >= 2) {
            assert!(result.is_err(), "{}", text(v, "note"));
        }
    }
}

/// Our friend and group events, in the vocabulary of zca-js's `friend_event` and
/// `group_event` (`own_uid` is the account, which zca-js's thread ids and `isSelf` depend on).
fn summarise_social(event: &Event, own_uid: &str) -> Vec<Value> {
    use serde_json::json;
    use zalo_personal::events::{FriendKind, GroupKind};
    match event {
        Event::CipherKey(_) => summarise(event),
        Event::Friend(f) => {
            let kind = match f.kind {
                FriendKind::Added => "ADD",
                FriendKind::Removed => "REMOVE",
                FriendKind::Request => "REQUEST",
                FriendKind::RequestUndone => "UNDO_REQUEST",
                FriendKind::RequestRejected => "REJECT_REQUEST",
                FriendKind::RequestsSeen => "SEEN_FRIEND_REQUEST",
                FriendKind::Blocked => "BLOCK",
                FriendKind::Unblocked => "UNBLOCK",
                FriendKind::CallsBlocked => "BLOCK_CALL",
                FriendKind::CallsUnblocked => "UNBLOCK_CALL",
            };
            // zca-js's thread: the user for adds and blocks, the addressee of a request, the
            // account itself for seen requests.
            let thread_id = match f.kind {
                FriendKind::Request | FriendKind::RequestUndone | FriendKind::RequestRejected => {
                    f.to_uid.clone()
                }
                FriendKind::RequestsSeen => Some(own_uid.to_owned()),
                _ => f.user_id.clone(),
            };
            let mut summary = json!({"event": "friend_event", "type": kind,
                "thread_id": thread_id, "is_self": f.from_self(own_uid)});
            if let Some(uid) = &f.user_id {
                summary["uid"] = json!(uid);
            } else if f.kind == FriendKind::RequestsSeen {
                summary["uids"] = json!(f.seen_uids);
            } else {
                summary["from_uid"] = json!(f.from_uid);
                summary["to_uid"] = json!(f.to_uid);
                if let Some(message) = &f.message {
                    summary["message"] = json!(message);
                }
            }
            vec![summary]
        }
        Event::Group(g) => vec![json!({
            "event": "group_event", "type": g.kind.act(), "act": g.kind.act(),
            "thread_id": g.group_id,
            // zca-js never counts a join request as the account's own.
            "is_self": g.kind != GroupKind::JoinRequest && g.involves(own_uid),
            "group_name": g.group_name, "source_id": g.actor_id,
            "member_ids": g.members.iter().map(|m| m.uid.clone()).collect::<Vec<_>>(),
            "member_names": if g.kind == GroupKind::JoinRequest { vec![] } else {
                g.members.iter().map(|m| m.display_name.clone().unwrap_or_default()).collect::<Vec<_>>()
            },
        })],
        // The duplicates Zalo sends alongside (friend "req", group "join_reject"): zca-js drops
        // them; we keep them as raw control notices.
        Event::Control { act_type, act, .. }
            if (act_type == "fr" && act == "req")
                || (act_type == "group" && act == "join_reject") =>
        {
            vec![]
        }
        other => panic!("zca-js emitted nothing comparable to {other:?}"),
    }
}

#[test]
fn friend_and_group_notices_give_the_events_zca_emits() {
    let vectors = vectors();
    let own_uid = text(&vectors, "own_uid").to_owned();
    let mut cipher_key: Option<Vec<u8>> = None;
    let mut social = 0;
    for v in list(&vectors, "social_frames") {
        let bytes = b64(text(v, "frame_b64"));
        let events = events::parse_frame(&bytes, cipher_key.as_deref())
            .unwrap_or_else(|err| panic!("{}: {err}", text(v, "note")));
        for event in &events {
            match event {
                Event::CipherKey(key) => cipher_key = Some(key.clone()),
                Event::Friend(_) | Event::Group(_) => social += 1,
                _ => {}
            }
        }
        let ours: Vec<Value> = events
            .iter()
            .flat_map(|e| summarise_social(e, &own_uid))
            .collect();
        let theirs = v["zca_events"].as_array().expect("events");
        assert_eq!(&ours, theirs, "{}", text(v, "note"));
    }
    assert!(social >= 20, "only {social} friend and group events");
}

/// The zca-js version the lock file of `scripts/zca-vectors` pins.
fn pinned_zca_version(lock: &Value) -> Option<&str> {
    lock["packages"]["node_modules/zca-js"]["version"].as_str()
}

/// The vectors must come from the zca-js the repository pins: after a version bump in
/// `scripts/zca-vectors/package-lock.json`, the committed vectors (and the interop test's
/// expectations built on them) are stale until they are made again.
#[test]
fn vectors_come_from_the_pinned_zca_js() {
    let lock: Value = serde_json::from_str(include_str!(
        "../../../scripts/zca-vectors/package-lock.json"
    ))
    .expect("the lock file is JSON");
    let pinned = pinned_zca_version(&lock).expect("the lock file pins zca-js");
    let vectors = vectors();
    let recorded = vectors["zca_js_version"]
        .as_str()
        .expect("the vectors record the zca-js version they were made with");
    assert_eq!(
        recorded, pinned,
        "testdata/zca_vectors.json was made with zca-js {recorded} but \
         scripts/zca-vectors/package-lock.json pins {pinned}: run `make vectors` and commit the result"
    );
    // The manifest asks for the same exact version the lock holds.
    assert_eq!(
        lock["packages"][""]["dependencies"]["zca-js"].as_str(),
        Some(pinned),
        "package.json and package-lock.json disagree on zca-js: run `npm install` in scripts/zca-vectors, then `make vectors`"
    );
}
