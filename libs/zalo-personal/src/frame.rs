//! The websocket frame format and the encodings of its `data` field.
//!
//! A frame is a 4-byte header — version (u8), command (u16, little-endian), sub-command (u8) —
//! followed by UTF-8 JSON. Event frames carry `{"data": "...", "encrypt": n}` where `n` says how
//! `data` is packed:
//!
//! | encrypt | packing of `data`                                                          |
//! |---------|----------------------------------------------------------------------------|
//! | 0       | JSON text                                                                  |
//! | 1       | base64 of zlib-compressed JSON                                             |
//! | 2       | URI-encoded base64 of `iv(16) ‖ aad(16) ‖ AES-GCM(zlib(JSON)) ‖ tag(16)`     |
//! | 3       | as 2, without compression                                                  |
//!
//! The AES-GCM key is the one the server sends, base64, in the first frame (1, 1, 1)
//! `{"key": ...}`; it changes with every connection. The GCM IV is 16 bytes, not the usual 12.
//! The reference client inflates with auto-detection of the zlib and gzip wrappers; so do we.

use std::io::Read as _;

use aes::{Aes128, Aes192, Aes256};
use aes_gcm::aead::consts::U16;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{AesGcm, Nonce};
use base64::Engine as _;
use serde_json::Value;

use crate::Error;
use crate::crypto::{decode_base64, uri_decode, uri_encode};

/// Length of the binary header in front of every frame.
pub const HEADER_LEN: usize = 4;

/// Inflated payloads larger than this are refused: a frame is a batch of chat events, and a
/// small compressed frame must not be able to claim unbounded memory.
pub const MAX_INFLATED_LEN: u64 = 16 * 1024 * 1024;

/// Length of the GCM IV, of the additional data after it, and of the tag at the end.
const IV_LEN: usize = 16;
const AAD_LEN: usize = 16;
const TAG_LEN: usize = 16;

/// The 4-byte header of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Header {
    pub version: u8,
    pub cmd: u16,
    pub sub_cmd: u8,
}

impl Header {
    /// The server's first frame, carrying the AES-GCM key of this connection.
    pub const KEY: Self = Self::new(1, 1, 1);
    /// The client's keep-alive.
    pub const PING: Self = Self::new(1, 2, 1);

    pub const fn new(version: u8, cmd: u16, sub_cmd: u8) -> Self {
        Self {
            version,
            cmd,
            sub_cmd,
        }
    }
}

/// Builds a frame from a header and the JSON bytes of its payload.
pub fn encode(header: Header, payload_json: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(HEADER_LEN + payload_json.len());
    frame.push(header.version);
    frame.extend_from_slice(&header.cmd.to_le_bytes());
    frame.push(header.sub_cmd);
    frame.extend_from_slice(payload_json);
    frame
}

/// Reads only the header; fails on fewer than 4 bytes.
pub fn decode_header(bytes: &[u8]) -> Result<Header, Error> {
    let Some(head) = bytes.get(..HEADER_LEN) else {
        return Err(Error::malformed(
            "frame",
            format!("{} bytes, shorter than the 4-byte header", bytes.len()),
        ));
    };
    Ok(Header::new(
        head[0],
        u16::from_le_bytes([head[1], head[2]]),
        head[3],
    ))
}

/// Splits a frame into its header and JSON payload. A frame with nothing after the header
/// gives `Value::Null` (the reference client ignores such frames).
pub fn decode(bytes: &[u8]) -> Result<(Header, Value), Error> {
    let header = decode_header(bytes)?;
    let body = &bytes[HEADER_LEN..];
    if body.is_empty() {
        return Ok((header, Value::Null));
    }
    let payload = serde_json::from_slice(body).map_err(|err| {
        Error::malformed(
            "frame payload",
            format!("cmd {} sub_cmd {}: {err}", header.cmd, header.sub_cmd),
        )
    })?;
    Ok((header, payload))
}

/// The key frame (1, 1, 1) a simulator sends first: `{"key": base64(cipher_key)}`.
pub fn encode_key_frame(cipher_key: &[u8]) -> Vec<u8> {
    let key = base64::engine::general_purpose::STANDARD.encode(cipher_key);
    encode(
        Header::KEY,
        json_bytes(&serde_json::json!({ "key": key })).as_slice(),
    )
}

/// The cipher key of a key frame, decoded from base64: `Ok(None)` when the frame is not a key
/// frame, an error when it is one with an unusable key.
pub fn key_from_frame(header: Header, payload: &Value) -> Result<Option<Vec<u8>>, Error> {
    if header != Header::KEY {
        return Ok(None);
    }
    let Some(key) = payload.get("key") else {
        return Ok(None);
    };
    let Some(key) = key.as_str() else {
        return Err(Error::malformed("cipher key", "key is not a string"));
    };
    let key = decode_base64(key, "cipher key")?;
    if !matches!(key.len(), 16 | 24 | 32) {
        return Err(Error::malformed(
            "cipher key",
            format!("an AES key has 16, 24 or 32 bytes, got {}", key.len()),
        ));
    }
    Ok(Some(key))
}

/// The client's keep-alive (1, 2, 1) `{"eventId": <ms>}`.
pub fn encode_ping(event_id_ms: i64) -> Vec<u8> {
    encode(
        Header::PING,
        json_bytes(&serde_json::json!({ "eventId": event_id_ms })).as_slice(),
    )
}

/// Unpacks the `{data, encrypt}` payload of an event frame into its JSON value. `cipher_key`
/// is the raw key from the key frame ([`key_from_frame`]); encrypt types 2 and 3 need it.
pub fn decode_data(payload: &Value, cipher_key: Option<&[u8]>) -> Result<Value, Error> {
    let Some(data) = payload.get("data").and_then(Value::as_str) else {
        return Err(Error::malformed(
            "event payload",
            "data is missing or not a string",
        ));
    };
    let encrypt = payload.get("encrypt").and_then(integral);
    let plain: Vec<u8> = match encrypt {
        Some(0) => data.as_bytes().to_vec(),
        Some(1) => inflate(&decode_base64(data, "event data")?)?,
        Some(kind @ (2 | 3)) => {
            let Some(key) = cipher_key else {
                return Err(Error::malformed(
                    "event payload",
                    format!("encrypt {kind} needs the cipher key, none received yet"),
                ));
            };
            let sealed = decode_base64(&uri_decode(data)?, "event data")?;
            let opened = gcm_open(key, &sealed)?;
            if kind == 2 { inflate(&opened)? } else { opened }
        }
        _ => {
            return Err(Error::malformed(
                "event payload",
                format!(
                    "encrypt must be 0, 1, 2 or 3, got {}",
                    payload.get("encrypt").unwrap_or(&Value::Null)
                ),
            ));
        }
    };
    serde_json::from_slice(&plain).map_err(|err| Error::malformed("event data", err.to_string()))
}

/// The inverse of [`decode_data`], for simulators: packs `value` with encrypt type 0–3, using
/// a fresh random IV and additional data for types 2 and 3.
pub fn encode_data(value: &Value, encrypt: u8, cipher_key: Option<&[u8]>) -> Result<Value, Error> {
    use aes_gcm::aead::Generate as _;
    let iv = <[u8; IV_LEN]>::try_generate()
        .map_err(|err| Error::malformed("gcm iv", format!("no system randomness: {err}")))?;
    let aad = <[u8; AAD_LEN]>::try_generate()
        .map_err(|err| Error::malformed("gcm aad", format!("no system randomness: {err}")))?;
    encode_data_with(value, encrypt, cipher_key, iv, aad)
}

/// [`encode_data`] with a chosen IV and additional data, so tests can compare bytes.
pub fn encode_data_with(
    value: &Value,
    encrypt: u8,
    cipher_key: Option<&[u8]>,
    iv: [u8; IV_LEN],
    aad: [u8; AAD_LEN],
) -> Result<Value, Error> {
    let text = json_bytes(value);
    let data = match encrypt {
        0 => String::from_utf8(text)
            .map_err(|_| Error::malformed("event data", "JSON text is not UTF-8"))?,
        1 => base64::engine::general_purpose::STANDARD.encode(deflate(&text)?),
        2 | 3 => {
            let Some(key) = cipher_key else {
                return Err(Error::malformed(
                    "event payload",
                    format!("encrypt {encrypt} needs a cipher key"),
                ));
            };
            let plain = if encrypt == 2 { deflate(&text)? } else { text };
            let sealed = gcm_seal(key, &iv, &aad, &plain)?;
            uri_encode(&base64::engine::general_purpose::STANDARD.encode(sealed))
        }
        other => {
            return Err(Error::malformed(
                "event payload",
                format!("encrypt must be 0, 1, 2 or 3, got {other}"),
            ));
        }
    };
    Ok(serde_json::json!({ "data": data, "encrypt": encrypt }))
}

/// `encrypt` as an integer: the reference client only checks it is a number in 0..=3.
fn integral(value: &Value) -> Option<u64> {
    value.as_u64().or_else(|| {
        value
            .as_f64()
            .filter(|f| f.fract() == 0.0 && (0.0..=3.0).contains(f))
            .map(|f| f as u64)
    })
}

fn json_bytes(value: &Value) -> Vec<u8> {
    // Serialising a Value cannot fail: its map keys are strings.
    serde_json::to_vec(value).unwrap_or_default()
}

/// Inflates a zlib stream, or a gzip one (the reference client auto-detects both).
fn inflate(compressed: &[u8]) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    let result = if compressed.starts_with(&[0x1f, 0x8b]) {
        flate2::read::GzDecoder::new(compressed)
            .take(MAX_INFLATED_LEN + 1)
            .read_to_end(&mut out)
    } else {
        flate2::read::ZlibDecoder::new(compressed)
            .take(MAX_INFLATED_LEN + 1)
            .read_to_end(&mut out)
    };
    result.map_err(|err| Error::malformed("compressed event data", err.to_string()))?;
    if out.len() as u64 > MAX_INFLATED_LEN {
        return Err(Error::malformed(
            "compressed event data",
            format!("inflates past {MAX_INFLATED_LEN} bytes"),
        ));
    }
    Ok(out)
}

fn deflate(plain: &[u8]) -> Result<Vec<u8>, Error> {
    use std::io::Write as _;
    let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    encoder
        .write_all(plain)
        .and_then(|()| encoder.finish())
        .map_err(|err| Error::malformed("event data", format!("cannot compress: {err}")))
}

type Gcm128 = AesGcm<Aes128, U16>;
type Gcm192 = AesGcm<Aes192, U16>;
type Gcm256 = AesGcm<Aes256, U16>;

/// Opens `iv ‖ aad ‖ ciphertext ‖ tag`.
fn gcm_open(key: &[u8], sealed: &[u8]) -> Result<Vec<u8>, Error> {
    if sealed.len() < IV_LEN + AAD_LEN + TAG_LEN {
        return Err(Error::malformed(
            "encrypted event data",
            format!("{} bytes, shorter than iv, aad and tag", sealed.len()),
        ));
    }
    let (iv, rest) = sealed.split_at(IV_LEN);
    let (aad, body) = rest.split_at(AAD_LEN);
    let nonce = Nonce::<U16>::try_from(iv)
        .map_err(|_| Error::malformed("encrypted event data", "bad iv length"))?;
    let payload = Payload { msg: body, aad };
    let opened = match key.len() {
        16 => Gcm128::new_from_slice(key)
            .ok()
            .map(|c| c.decrypt(&nonce, payload)),
        24 => Gcm192::new_from_slice(key)
            .ok()
            .map(|c| c.decrypt(&nonce, payload)),
        32 => Gcm256::new_from_slice(key)
            .ok()
            .map(|c| c.decrypt(&nonce, payload)),
        _ => None,
    };
    match opened {
        None => Err(Error::malformed(
            "cipher key",
            format!("an AES key has 16, 24 or 32 bytes, got {}", key.len()),
        )),
        Some(Err(_)) => Err(Error::Decrypt { what: "event data" }),
        Some(Ok(plain)) => Ok(plain),
    }
}

/// Seals to `iv ‖ aad ‖ ciphertext ‖ tag`.
fn gcm_seal(
    key: &[u8],
    iv: &[u8; IV_LEN],
    aad: &[u8; AAD_LEN],
    plain: &[u8],
) -> Result<Vec<u8>, Error> {
    let nonce = Nonce::<U16>::from(*iv);
    let payload = Payload { msg: plain, aad };
    let sealed = match key.len() {
        16 => Gcm128::new_from_slice(key)
            .ok()
            .map(|c| c.encrypt(&nonce, payload)),
        24 => Gcm192::new_from_slice(key)
            .ok()
            .map(|c| c.encrypt(&nonce, payload)),
        32 => Gcm256::new_from_slice(key)
            .ok()
            .map(|c| c.encrypt(&nonce, payload)),
        _ => None,
    };
    let Some(Ok(body)) = sealed else {
        return Err(Error::malformed(
            "cipher key",
            format!("an AES key has 16, 24 or 32 bytes, got {}", key.len()),
        ));
    };
    let mut out = Vec::with_capacity(IV_LEN + AAD_LEN + body.len());
    out.extend_from_slice(iv);
    out.extend_from_slice(aad);
    out.extend_from_slice(&body);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_little_endian() {
        let frame = encode(Header::new(1, 501, 0), b"{}");
        assert_eq!(&frame[..4], &[1, 0xf5, 0x01, 0]);
        let (header, payload) = decode(&frame).expect("frame");
        assert_eq!(header, Header::new(1, 501, 0));
        assert_eq!(payload, serde_json::json!({}));
    }

    #[test]
    fn short_and_empty_frames() {
        assert!(decode(&[1, 2, 3]).is_err());
        assert_eq!(decode(&[1, 2, 0, 1]).expect("frame").1, Value::Null);
    }

    #[test]
    fn key_frame_round_trips() {
        let (header, payload) = decode(&encode_key_frame(&[9; 32])).expect("frame");
        assert_eq!(
            key_from_frame(header, &payload).expect("key"),
            Some(vec![9; 32])
        );
        let (header, payload) = decode(&encode_ping(5)).expect("frame");
        assert_eq!(header, Header::PING);
        assert_eq!(key_from_frame(header, &payload).expect("not a key"), None);
    }

    #[test]
    fn every_encrypt_type_round_trips() {
        let value = serde_json::json!({"data": {"msgs": [{"msgId": "1", "content": "chào"}]}});
        for encrypt in 0..=3 {
            let packed = encode_data(&value, encrypt, Some(&[3; 16])).expect("packed");
            assert_eq!(decode_data(&packed, Some(&[3; 16])).expect("plain"), value);
        }
    }

    #[test]
    fn wrong_key_is_a_decrypt_error() {
        let value = serde_json::json!({"a": 1});
        let packed = encode_data(&value, 2, Some(&[3; 32])).expect("packed");
        assert!(matches!(
            decode_data(&packed, Some(&[4; 32])),
            Err(Error::Decrypt { .. })
        ));
        assert!(decode_data(&packed, None).is_err());
    }
}
