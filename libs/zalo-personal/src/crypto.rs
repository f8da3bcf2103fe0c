//! Request signing and the AES layers of the web protocol.
//!
//! Three keys are in play, one after the other:
//! - a fixed key that turns `type,imei,timestamp` into the `zcid` the login endpoints ask for;
//! - the login key, assembled from `zcid` and `md5(zcid_ext)`, that encrypts the
//!   `getLoginInfo` parameters and decrypts its answer;
//! - the session key `zpw_enk` from that answer, used by every later request and response
//!   ([`SessionCipher`]).
//!
//! All three are AES-CBC with an all-zero IV and PKCS#7 padding, as the web client does; the
//! encodings around them differ (upper-case hex for `zcid`, base64 elsewhere) and are noted on
//! each function. `testdata/zca_vectors.json` holds values computed by the reference client for
//! fixed inputs; `tests/vectors.rs` checks every function here against them.

use std::collections::BTreeMap;

use aes::{Aes128, Aes192, Aes256};
use base64::Engine as _;
use cbc::cipher::{BlockModeDecrypt, BlockModeEncrypt, KeyIvInit, block_padding::Pkcs7};
use md5::{Digest, Md5};

use crate::Error;

/// The fixed key (as its UTF-8 bytes, so AES-256) that encrypts `type,imei,ts` into `zcid`.
const ZCID_KEY: &[u8; 32] = b"3FC4F0D2AB50057BCE0D90D9187A22B1";

/// The protocol uses CBC with a zero IV everywhere: the IV carries no secret and the server
/// expects it.
const ZERO_IV: [u8; 16] = [0; 16];

/// The device id the server binds cookies to: a random UUID, a dash, and the lower-case md5 hex
/// of the user agent. Keep both the UUID and the user agent with the account's credentials:
/// a different pair looks like a new device.
pub fn imei(uuid: &str, user_agent: &str) -> String {
    format!("{uuid}-{}", md5_hex(user_agent))
}

/// The `signkey` query parameter: lower-case md5 hex of `"zsecure" + kind + values`, values in
/// the byte order of their keys (the reference client sorts the keys; for the ASCII keys the
/// protocol uses, that is the same order). `kind` names the endpoint, e.g. `getlogininfo`.
/// Numbers go in as their decimal text, as the reference client concatenates them.
pub fn sign_key(kind: &str, params: &BTreeMap<String, String>) -> String {
    let mut hasher = Md5::new();
    hasher.update(b"zsecure");
    hasher.update(kind.as_bytes());
    for value in params.values() {
        hasher.update(value.as_bytes());
    }
    hex::encode(hasher.finalize())
}

/// The `zcid` parameter of the login endpoints: `"{api_type},{imei},{ts_ms}"` encrypted with the
/// fixed key, as upper-case hex. `ts_ms` is the client's "first launch" time in milliseconds.
pub fn zcid(api_type: u32, imei: &str, ts_ms: i64) -> Result<String, Error> {
    // The reference client refuses these as missing parameters; so do we rather than send a
    // zcid the server will not recognise.
    if api_type == 0 || imei.is_empty() || ts_ms == 0 {
        return Err(Error::malformed(
            "zcid input",
            "api type, imei and timestamp must all be set",
        ));
    }
    let message = format!("{api_type},{imei},{ts_ms}");
    let encrypted = cbc_encrypt(ZCID_KEY, message.as_bytes())?;
    Ok(hex::encode_upper(encrypted))
}

/// The key that encrypts the `getLoginInfo` parameters and decrypts its answer: 32 ASCII
/// characters, used as their UTF-8 bytes (AES-256). It is the first 8 even-position characters
/// of the upper-case md5 hex of `zcid_ext`, then the first 12 even-position characters of
/// `zcid`, then the last 12 odd-position characters of `zcid`, last first.
///
/// `zcid_ext` is a short random string the client makes up per login (the reference client uses
/// 6 to 12 lower-case hex characters) and sends beside `zcid`.
pub fn login_key(zcid: &str, zcid_ext: &str) -> Result<String, Error> {
    if zcid_ext.is_empty() {
        return Err(Error::malformed("zcid_ext", "empty"));
    }
    // zcid is our own upper-case hex; positions are then bytes. Anything shorter than 24
    // characters cannot give 12 odd and 12 even characters and would yield a short key.
    if !zcid.is_ascii() || zcid.len() < 24 {
        return Err(Error::malformed(
            "zcid",
            format!("expected at least 24 hex characters, got {}", zcid.len()),
        ));
    }
    let ext_hash = md5_hex(zcid_ext).to_ascii_uppercase();
    let zcid = zcid.as_bytes();
    let mut key = String::with_capacity(32);
    key.extend(ext_hash.chars().step_by(2).take(8));
    key.extend(zcid.iter().step_by(2).take(12).map(|&b| char::from(b)));
    let odd: Vec<u8> = zcid.iter().skip(1).step_by(2).copied().collect();
    key.extend(odd.iter().rev().take(12).map(|&b| char::from(b)));
    Ok(key)
}

/// Encrypts the JSON of the `getLoginInfo` parameters (`computer_name`, `imei`, `language`,
/// `ts`) under the login key, as standard base64: the `params` query parameter.
pub fn encrypt_login_params(key: &str, json: &str) -> Result<String, Error> {
    if json.is_empty() {
        return Err(Error::malformed("login params", "empty"));
    }
    let encrypted = cbc_encrypt(key.as_bytes(), json.as_bytes())?;
    Ok(base64::engine::general_purpose::STANDARD.encode(encrypted))
}

/// Decrypts the `data` field of the `getLoginInfo` answer under the login key: it may be
/// URI-encoded, then base64, then AES-CBC; the plaintext is JSON text.
pub fn decrypt_login_data(key: &str, data: &str) -> Result<String, Error> {
    let bytes = decode_base64(&uri_decode(data)?, "login data")?;
    let plain = cbc_decrypt(key.as_bytes(), &bytes, "login data")?;
    String::from_utf8(plain).map_err(|_| Error::Decrypt { what: "login data" })
}

/// The session cipher: AES-CBC under the key the server hands out at login (`zpw_enk`), for
/// the `params` of every request and the `data` of every answer.
#[derive(Clone)]
pub struct SessionCipher {
    key: Vec<u8>,
}

impl std::fmt::Debug for SessionCipher {
    // The key is a credential: never let it reach a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionCipher")
            .field("key_bits", &(self.key.len() * 8))
            .finish()
    }
}

impl SessionCipher {
    /// Takes `zpw_enk` from the login answer: base64 of a 16, 24 or 32 byte AES key.
    pub fn from_enk(zpw_enk_base64: &str) -> Result<Self, Error> {
        let key = decode_base64(zpw_enk_base64, "zpw_enk")?;
        Self::from_key(key)
    }

    /// Takes the raw key bytes (16, 24 or 32); for simulators that make their own keys.
    pub fn from_key(key: Vec<u8>) -> Result<Self, Error> {
        check_aes_key(&key, "zpw_enk")?;
        Ok(Self { key })
    }

    /// The key as the server sends it in `zpw_enk`.
    pub fn enk_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(&self.key)
    }

    /// Encrypts request parameters (usually JSON text), as standard base64.
    pub fn encrypt(&self, plain: &str) -> String {
        let encrypted = match self.key.len() {
            16 => cbc_encrypt_with::<Aes128>(&self.key, plain.as_bytes()),
            24 => cbc_encrypt_with::<Aes192>(&self.key, plain.as_bytes()),
            _ => cbc_encrypt_with::<Aes256>(&self.key, plain.as_bytes()),
        };
        base64::engine::general_purpose::STANDARD.encode(encrypted)
    }

    /// Decrypts a response's `data`: possibly URI-encoded, then base64, then AES-CBC, then
    /// UTF-8 text.
    pub fn decrypt(&self, b64: &str) -> Result<String, Error> {
        let bytes = decode_base64(&uri_decode(b64)?, "response data")?;
        let plain = cbc_decrypt(&self.key, &bytes, "response data")?;
        String::from_utf8(plain).map_err(|_| Error::Decrypt {
            what: "response data",
        })
    }
}

/// Opens an encrypted answer `{error_code, error_message, data: "<cipher>"}` and returns the
/// inner `data`. Both the outer envelope and the decrypted JSON carry an `error_code`; either
/// being non-zero becomes [`Error::Api`] with that code, so callers can tell a timed-out
/// session (102) or a rate limit from a transport fault.
pub fn decode_response(cipher: &SessionCipher, body: &[u8]) -> Result<serde_json::Value, Error> {
    let outer: serde_json::Value = serde_json::from_slice(body)
        .map_err(|err| Error::malformed("response body", err.to_string()))?;
    check_error_code(&outer, "response body")?;
    let Some(data) = outer.get("data").and_then(serde_json::Value::as_str) else {
        return Err(Error::malformed(
            "response body",
            "data is missing or not a string",
        ));
    };
    let plain = cipher.decrypt(data)?;
    let mut inner: serde_json::Value = serde_json::from_str(&plain)
        .map_err(|err| Error::malformed("decrypted response", err.to_string()))?;
    check_error_code(&inner, "decrypted response")?;
    Ok(inner
        .get_mut("data")
        .map(serde_json::Value::take)
        .unwrap_or_default())
}

/// Opens an answer the server sends in the clear (`getServerInfo`, the QR login steps):
/// checks `error_code` and returns `data`.
pub fn decode_plain_response(body: &[u8]) -> Result<serde_json::Value, Error> {
    let mut outer: serde_json::Value = serde_json::from_slice(body)
        .map_err(|err| Error::malformed("response body", err.to_string()))?;
    check_error_code(&outer, "response body")?;
    Ok(outer
        .get_mut("data")
        .map(serde_json::Value::take)
        .unwrap_or_default())
}

/// Lower-case md5 hex of a string's UTF-8 bytes.
pub fn md5_hex(text: &str) -> String {
    hex::encode(Md5::digest(text.as_bytes()))
}

/// The reference client treats an `error_code` that is absent or not zero as a failure; the
/// server sometimes sends numbers as strings, so "0" is zero too.
fn check_error_code(value: &serde_json::Value, what: &'static str) -> Result<(), Error> {
    let code = match value.get("error_code") {
        Some(serde_json::Value::Number(n)) => n.as_i64(),
        Some(serde_json::Value::String(s)) => s.trim().parse::<i64>().ok(),
        _ => None,
    };
    let Some(code) = code else {
        return Err(Error::malformed(
            what,
            "error_code is missing or not a number",
        ));
    };
    if code == 0 {
        return Ok(());
    }
    let message = value
        .get("error_message")
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default()
        .to_owned();
    Err(Error::Api { code, message })
}

fn check_aes_key(key: &[u8], what: &'static str) -> Result<(), Error> {
    match key.len() {
        16 | 24 | 32 => Ok(()),
        other => Err(Error::malformed(
            what,
            format!("an AES key has 16, 24 or 32 bytes, got {other}"),
        )),
    }
}

fn cbc_encrypt(key: &[u8], plain: &[u8]) -> Result<Vec<u8>, Error> {
    check_aes_key(key, "aes key")?;
    Ok(match key.len() {
        16 => cbc_encrypt_with::<Aes128>(key, plain),
        24 => cbc_encrypt_with::<Aes192>(key, plain),
        _ => cbc_encrypt_with::<Aes256>(key, plain),
    })
}

fn cbc_decrypt(key: &[u8], data: &[u8], what: &'static str) -> Result<Vec<u8>, Error> {
    check_aes_key(key, "aes key")?;
    let plain = match key.len() {
        16 => cbc_decrypt_with::<Aes128>(key, data),
        24 => cbc_decrypt_with::<Aes192>(key, data),
        _ => cbc_decrypt_with::<Aes256>(key, data),
    };
    plain.ok_or(Error::Decrypt { what })
}

/// `key` must have the cipher's key length; callers check it first.
fn cbc_encrypt_with<C>(key: &[u8], plain: &[u8]) -> Vec<u8>
where
    C: cbc::cipher::BlockCipherEncrypt,
    cbc::Encryptor<C>: KeyIvInit + BlockModeEncrypt,
{
    match cbc::Encryptor::<C>::new_from_slices(key, &ZERO_IV) {
        Ok(encryptor) => encryptor.encrypt_padded_vec::<Pkcs7>(plain),
        // Unreachable after check_aes_key; an empty result fails loudly at the server.
        Err(_) => Vec::new(),
    }
}

fn cbc_decrypt_with<C>(key: &[u8], data: &[u8]) -> Option<Vec<u8>>
where
    C: cbc::cipher::BlockCipherDecrypt,
    cbc::Decryptor<C>: KeyIvInit + BlockModeDecrypt,
{
    let decryptor = cbc::Decryptor::<C>::new_from_slices(key, &ZERO_IV).ok()?;
    decryptor.decrypt_padded_vec::<Pkcs7>(data).ok()
}

/// Base64 as the reference client reads it: standard or URL-safe alphabet, padding optional,
/// whitespace ignored.
pub(crate) fn decode_base64(text: &str, what: &'static str) -> Result<Vec<u8>, Error> {
    let cleaned: String = text
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .map(|c| match c {
            '-' => '+',
            '_' => '/',
            other => other,
        })
        .collect();
    base64::engine::general_purpose::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::general_purpose::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent)
            .with_decode_allow_trailing_bits(true),
    )
    .decode(cleaned.as_bytes())
    .map_err(|err| Error::malformed(what, format!("invalid base64: {err}")))
}

/// The inverse of JavaScript's `decodeURIComponent`: `%XX` escapes become bytes, the result
/// must be UTF-8, everything else (including `+`) is kept as is.
pub(crate) fn uri_decode(text: &str) -> Result<String, Error> {
    if !text.contains('%') {
        return Ok(text.to_owned());
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let escape = bytes
                .get(index + 1..index + 3)
                .and_then(|hex| std::str::from_utf8(hex).ok())
                .and_then(|hex| u8::from_str_radix(hex, 16).ok());
            let Some(byte) = escape else {
                return Err(Error::malformed(
                    "uri-encoded text",
                    format!("bad escape at byte {index}"),
                ));
            };
            out.push(byte);
            index += 3;
        } else {
            out.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(out)
        .map_err(|_| Error::malformed("uri-encoded text", "escapes are not UTF-8"))
}

/// JavaScript's `encodeURIComponent`: what the server applies to base64 before sending it.
pub(crate) fn uri_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        let keep = byte.is_ascii_alphanumeric()
            || matches!(
                byte,
                b'-' | b'_' | b'.' | b'!' | b'~' | b'*' | b'\'' | b'(' | b')'
            );
        if keep {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_key_has_32_characters_from_both_inputs() {
        let zcid = zcid(30, "imei", 1_700_000_000_000).expect("zcid");
        let key = login_key(&zcid, "abc123").expect("key");
        assert_eq!(key.len(), 32);
        assert_eq!(
            &key[8..20],
            zcid.chars().step_by(2).take(12).collect::<String>()
        );
    }

    #[test]
    fn short_zcid_is_refused() {
        assert!(login_key("ABCDEF", "abc").is_err());
        assert!(login_key(&"A".repeat(40), "").is_err());
    }

    #[test]
    fn session_cipher_round_trips_and_rejects_another_key() {
        let cipher = SessionCipher::from_key(vec![7; 32]).expect("key");
        let other = SessionCipher::from_key(vec![8; 32]).expect("key");
        let sealed = cipher.encrypt("{\"a\":1}");
        assert_eq!(cipher.decrypt(&sealed).expect("plain"), "{\"a\":1}");
        assert_eq!(
            cipher.decrypt(&uri_encode(&sealed)).expect("plain"),
            "{\"a\":1}"
        );
        // A wrong key fails the padding check almost always; when it does not, the text is
        // not what was sent.
        assert_ne!(other.decrypt(&sealed).ok().as_deref(), Some("{\"a\":1}"));
    }

    #[test]
    fn response_error_codes_become_api_errors() {
        let cipher = SessionCipher::from_key(vec![1; 16]).expect("key");
        let body = br#"{"error_code":102,"error_message":"session expired"}"#;
        let err = decode_response(&cipher, body).expect_err("error");
        assert_eq!(err.api_code(), Some(102));

        let inner = cipher.encrypt(r#"{"error_code":"221","error_message":"limit"}"#);
        let body = serde_json::json!({"error_code": 0, "data": inner}).to_string();
        let err = decode_response(&cipher, body.as_bytes()).expect_err("error");
        assert_eq!(err.api_code(), Some(221));

        let inner = cipher.encrypt(r#"{"error_code":0,"data":{"msgId":"1"}}"#);
        let body = serde_json::json!({"error_code": "0", "data": inner}).to_string();
        let data = decode_response(&cipher, body.as_bytes()).expect("data");
        assert_eq!(data["msgId"], "1");
    }

    #[test]
    fn uri_codec_matches_javascript() {
        assert_eq!(uri_encode("a+b/c=="), "a%2Bb%2Fc%3D%3D");
        assert_eq!(uri_decode("a%2Bb%2fc%3D+").expect("text"), "a+b/c=+");
        assert!(uri_decode("%zz").is_err());
        assert!(uri_decode("%").is_err());
        assert!(uri_decode("%ff").is_err());
    }
}
