//! Property tests of the frame and event decoders, which read bytes from the network: they
//! must never panic, must undo their encoders, and must refuse tampered ciphertext.

use base64::Engine as _;
use proptest::prelude::*;
use serde_json::{Value, json};
use zalo_personal::events;
use zalo_personal::frame::{self, Header};

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        ".{0,24}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(".{0,8}", inner, 0..6)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

fn cipher_key() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 16),
        prop::collection::vec(any::<u8>(), 24),
        prop::collection::vec(any::<u8>(), 32),
    ]
}

/// Message-like items with fields of any type, to shake the event parser.
fn item() -> impl Strategy<Value = Value> {
    (
        json_value(),
        json_value(),
        json_value(),
        json_value(),
        prop_oneof![
            json_value(),
            Just(json!({"deleteMsg": 1, "globalMsgId": 5}))
        ],
    )
        .prop_map(|(msg_id, uid_from, ts, id_to, content)| {
            json!({"msgId": msg_id, "uidFrom": uid_from, "ts": ts, "idTo": id_to,
                   "content": content, "quote": null})
        })
}

/// Friend and group control notices: known and unknown acts, with `data` of any type, as JSON
/// text or as a value.
fn control_item() -> impl Strategy<Value = Value> {
    let act = prop::sample::select(vec![
        "add",
        "remove",
        "req",
        "req_v2",
        "undo_req",
        "reject",
        "seen_fr_req",
        "block",
        "unblock",
        "block_call",
        "unblock_call",
        "join_request",
        "join",
        "join_reject",
        "leave",
        "remove_member",
        "block_member",
        "update_setting",
        "update",
        "update_avatar",
        "new_link",
        "add_admin",
        "remove_admin",
        "pin_create",
        "",
    ]);
    let data = prop_oneof![
        json_value(),
        json_value().prop_map(|v| Value::from(v.to_string())),
        (json_value(), json_value(), json_value()).prop_map(|(group, uid, name)| {
            Value::from(
                json!({"groupId": group, "fromUid": uid, "toUid": name, "uids": [uid],
                    "updateMembers": [{"id": uid, "dName": name}], "time": name})
                .to_string(),
            )
        }),
    ];
    (prop::sample::select(vec!["fr", "group", "file_done"]), act, data).prop_map(
        |(act_type, act, data)| json!({"content": {"act_type": act_type, "act": act, "data": data}}),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512), key in cipher_key()) {
        let _ = frame::decode(&bytes);
        let _ = events::parse_frame(&bytes, None);
        let _ = events::parse_frame(&bytes, Some(&key));
    }

    #[test]
    fn arbitrary_bodies_behind_known_headers_never_panic(
        cmd in prop::sample::select(vec![1u16, 2, 501, 502, 521, 522, 601, 612, 3000, 9]),
        sub_cmd in 0u8..3,
        body in prop::collection::vec(any::<u8>(), 0..256),
        key in cipher_key(),
    ) {
        let bytes = frame::encode(Header::new(1, cmd, sub_cmd), &body);
        let _ = events::parse_frame(&bytes, Some(&key));
    }

    #[test]
    fn arbitrary_payloads_never_panic(
        data in prop_oneof![".{0,64}".prop_map(Value::from), json_value()],
        encrypt in prop_oneof![(0u64..6).prop_map(Value::from), json_value()],
        key in prop::option::of(prop::collection::vec(any::<u8>(), 0..40)),
    ) {
        let payload = json!({"data": data, "encrypt": encrypt});
        let _ = frame::decode_data(&payload, key.as_deref());
    }

    #[test]
    fn arbitrary_binary_data_of_each_type_never_panics(
        raw in prop::collection::vec(any::<u8>(), 0..200),
        encrypt in 1u8..4,
        key in cipher_key(),
    ) {
        let b64 = base64::engine::general_purpose::STANDARD.encode(&raw);
        let payload = json!({"data": b64, "encrypt": encrypt});
        let _ = frame::decode_data(&payload, Some(&key));
    }

    #[test]
    fn arbitrary_event_items_never_panic(
        cmd in prop::sample::select(vec![501u16, 521, 612, 502, 522, 601]),
        field in prop::sample::select(vec!["msgs", "groupMsgs", "reacts", "reactGroups",
            "delivereds", "seens", "groupSeens", "controls"]),
        items in prop::collection::vec(prop_oneof![item(), control_item(), json_value()], 0..4),
        key in cipher_key(),
    ) {
        let body = json!({"data": {field: items}});
        let packed = frame::encode_data(&body, 3, Some(&key)).expect("pack");
        let bytes = frame::encode(Header::new(1, cmd, 0), packed.to_string().as_bytes());
        let events = events::parse_frame(&bytes, Some(&key)).expect("a packed frame opens");
        prop_assert!(events.len() <= items.len() * 2);
    }

    #[test]
    fn every_encrypt_type_round_trips(value in json_value(), encrypt in 0u8..4, key in cipher_key()) {
        let packed = frame::encode_data(&value, encrypt, Some(&key)).expect("pack");
        let bytes = frame::encode(Header::new(1, 501, 0), packed.to_string().as_bytes());
        let (header, payload) = frame::decode(&bytes).expect("frame");
        prop_assert_eq!(header, Header::new(1, 501, 0));
        prop_assert_eq!(frame::decode_data(&payload, Some(&key)).expect("unpack"), value);
    }

    #[test]
    fn headers_round_trip(version: u8, cmd: u16, sub_cmd: u8, value in json_value()) {
        let header = Header::new(version, cmd, sub_cmd);
        let bytes = frame::encode(header, value.to_string().as_bytes());
        let (decoded, payload) = frame::decode(&bytes).expect("frame");
        prop_assert_eq!(decoded, header);
        prop_assert_eq!(payload, value);
    }

    #[test]
    fn flipped_bits_in_gcm_payloads_are_rejected(
        value in json_value(),
        encrypt in 2u8..4,
        key in cipher_key(),
        position: prop::sample::Index,
        bit in 0u8..8,
    ) {
        let packed = frame::encode_data(&value, encrypt, Some(&key)).expect("pack");
        let data = packed["data"].as_str().expect("data");
        let decoded = urlencoding_decode(data);
        let mut sealed = base64::engine::general_purpose::STANDARD.decode(decoded).expect("base64");
        let index = position.index(sealed.len());
        sealed[index] ^= 1 << bit;
        let tampered = json!({
            "data": base64::engine::general_purpose::STANDARD.encode(&sealed),
            "encrypt": encrypt,
        });
        prop_assert!(frame::decode_data(&tampered, Some(&key)).is_err());
    }
}

/// The three escapes the encoder produces for base64 text.
fn urlencoding_decode(text: &str) -> String {
    text.replace("%2B", "+")
        .replace("%2F", "/")
        .replace("%3D", "=")
}
