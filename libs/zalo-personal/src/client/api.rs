//! Calls made with the session key: sending text to a user or a group, user profiles.
//! Each posts a form `params=<AES-CBC(zpw_enk) of the JSON parameters>` and gets back
//! `{error_code, data: <encrypted JSON>}`.

use serde_json::{Value, json};

use super::{
    ClientError, Session, browser_headers, new_client_id, transport::encode_pairs, versioned_url,
};
use crate::crypto;

/// A user's profile as `getprofiles/v2` answers it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserInfo {
    pub uid: String,
    pub display_name: String,
    pub zalo_name: String,
    pub avatar: String,
}

impl Session {
    /// Sends `text` to the user `to_uid`; returns Zalo's `msgId`.
    pub async fn send_text(&self, to_uid: &str, text: &str) -> Result<String, ClientError> {
        self.send_text_with_id(to_uid, text, new_client_id()).await
    }

    /// [`Session::send_text`] with the caller's `clientId` (see [`super::new_client_id`]).
    pub async fn send_text_with_id(
        &self,
        to_uid: &str,
        text: &str,
        client_id: i64,
    ) -> Result<String, ClientError> {
        let params = json!({
            "message": text,
            "clientId": client_id,
            "imei": self.credentials.imei,
            "ttl": 0,
            "toid": to_uid,
        });
        let host = first(&self.services.chat, "chat")?;
        let url = versioned_url(&format!("{host}/api/message/sms"), &[("nretry", "0")]);
        let data = self.call(&url, &params).await?;
        msg_id(&data)
    }

    /// Sends `text` to the group `group_id`; returns Zalo's `msgId`.
    pub async fn send_group_text(&self, group_id: &str, text: &str) -> Result<String, ClientError> {
        self.send_group_text_with_id(group_id, text, new_client_id())
            .await
    }

    /// [`Session::send_group_text`] with the caller's `clientId`.
    pub async fn send_group_text_with_id(
        &self,
        group_id: &str,
        text: &str,
        client_id: i64,
    ) -> Result<String, ClientError> {
        let params = json!({
            "message": text,
            "clientId": client_id,
            "visibility": 0,
            "ttl": 0,
            "grid": group_id,
        });
        let host = first(&self.services.group, "group")?;
        let url = versioned_url(&format!("{host}/api/group/sendmsg"), &[("nretry", "0")]);
        let data = self.call(&url, &params).await?;
        msg_id(&data)
    }

    /// A user's display name and avatar.
    pub async fn user_info(&self, uid: &str) -> Result<UserInfo, ClientError> {
        let params = json!({
            "phonebook_version": 0,
            "friend_pversion_map": [format!("{uid}_0")],
            "avatar_size": 120,
            "language": self.credentials.language,
            "show_online_status": 1,
            "imei": self.credentials.imei,
        });
        // Older service maps have no `profile` list; the chat host answers there too.
        let host = first(&self.services.profile, "profile")
            .or_else(|_| first(&self.services.chat, "chat"))?;
        let url = versioned_url(&format!("{host}/api/social/friend/getprofiles/v2"), &[]);
        let data = self.call(&url, &params).await?;
        let data = payload(&data);
        let profile = data["changed_profiles"]
            .get(uid)
            .or_else(|| data["changed_profiles"].get(format!("{uid}_0")))
            .ok_or_else(|| ClientError::Unexpected(format!("no profile for user {uid}")))?;
        let text = |name: &str| profile[name].as_str().unwrap_or_default().to_string();
        Ok(UserInfo {
            uid: profile["userId"].as_str().unwrap_or(uid).to_string(),
            display_name: text("displayName"),
            zalo_name: text("zaloName"),
            avatar: text("avatar"),
        })
    }

    /// Refreshes the session on the server, as the web client does every few minutes: the
    /// cookies last longer when used. Errors as for any call (102: log in again).
    pub async fn keep_alive(&self) -> Result<(), ClientError> {
        let params = json!({ "imei": self.credentials.imei });
        let encrypted = self.cipher.encrypt(&params.to_string());
        let host = first(&self.services.chat, "chat")?;
        let url = versioned_url(&format!("{host}/keepalive"), &[("params", &encrypted)]);
        let cookie = self.credentials.cookie_header();
        let response = self
            .client
            .http
            .request(
                http::Method::GET,
                &url,
                &browser_headers(&cookie, &self.credentials.user_agent),
                Vec::new(),
                None,
            )
            .await?;
        if response.status != 200 {
            return Err(ClientError::Unexpected(format!("HTTP {}", response.status)));
        }
        // Answered in the clear, unlike the other calls.
        crypto::decode_plain_response(&response.body)?;
        Ok(())
    }

    /// Posts encrypted `params` to `url` and decrypts the answer.
    pub(super) async fn call(&self, url: &str, params: &Value) -> Result<Value, ClientError> {
        let encrypted = self.cipher.encrypt(&params.to_string());
        let body = encode_pairs([("params", encrypted.as_str())]);
        let cookie = self.credentials.cookie_header();
        let response = self
            .client
            .http
            .request(
                http::Method::POST,
                url,
                &browser_headers(&cookie, &self.credentials.user_agent),
                body.into_bytes(),
                None,
            )
            .await?;
        if response.status != 200 {
            return Err(ClientError::Unexpected(format!("HTTP {}", response.status)));
        }
        Ok(crypto::decode_response(&self.cipher, &response.body)?)
    }
}

pub(super) fn first<'a>(hosts: &'a [String], what: &str) -> Result<&'a str, ClientError> {
    hosts
        .first()
        .map(String::as_str)
        .ok_or_else(|| ClientError::Unexpected(format!("no {what} host in the service map")))
}

/// The answer's payload, whether or not it is still wrapped in `{error_code, data}`.
pub(super) fn payload(value: &Value) -> &Value {
    if value.get("error_code").is_some() && value.get("data").is_some() {
        &value["data"]
    } else {
        value
    }
}

pub(super) fn msg_id(value: &Value) -> Result<String, ClientError> {
    match &payload(value)["msgId"] {
        Value::String(id) => Ok(id.clone()),
        Value::Number(id) => Ok(id.to_string()),
        _ => Err(ClientError::Unexpected(
            "send answered without msgId".into(),
        )),
    }
}
