//! Signed access tokens and API key strings.
//!
//! Access tokens are compact JWTs signed with Ed25519 (`alg: EdDSA`), written by hand rather
//! than through a general JWT library: giao accepts exactly one algorithm, so the verifier
//! refuses every other `alg` (`none`, `HS256`, …) before it looks at any key, which closes the
//! classic algorithm-confusion attacks by construction. The auth service signs
//! ([`TokenSigner`]); every service verifies against the auth service's JWKS ([`verify`]).
//!
//! API keys are `gk_<api_key_id>_<secret>`; the server keeps only a SHA-256 of the whole string.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use giao_proto::auth::Jwk;
use serde::{Deserialize, Serialize};

/// The issuer every giao access token carries.
pub const ISSUER: &str = "giao";

/// The only signature algorithm giao issues or accepts.
pub const ALGORITHM: &str = "EdDSA";

/// Clock skew tolerated between the auth service and a verifier.
pub const LEEWAY_SECS: i64 = 30;

/// Prefix of every API key string.
pub const API_KEY_PREFIX: &str = "gk_";

/// Largest token the verifier will even try to decode.
const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// What an access token says about its holder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// Always [`ISSUER`].
    pub iss: String,
    /// The user id.
    pub sub: String,
    /// The tenant id.
    pub tid: String,
    /// Lowercase role name ([`crate::Role::as_str`]).
    pub role: String,
    /// The user's session version when the token was issued: a deactivation bumps it, and
    /// services reject tokens carrying an older one.
    pub sv: u64,
    #[serde(default)]
    pub teams: Vec<String>,
    pub iat: i64,
    pub exp: i64,
    /// Unique token id, for logs and revocation lists.
    pub jti: String,
}

/// Why a token was refused. The message never contains the token itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("malformed token")]
    Malformed,
    #[error("unsupported token algorithm {0}: only EdDSA is accepted")]
    UnsupportedAlgorithm(String),
    #[error("token signed with unknown key id {0}")]
    UnknownKid(String),
    #[error("token signature does not verify")]
    BadSignature,
    #[error("token expired")]
    Expired,
    #[error("token issued by someone other than giao")]
    WrongIssuer,
    #[error("unsupported key: {0}")]
    UnsupportedKey(String),
}

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    alg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    typ: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kid: Option<String>,
}

/// Signs access tokens with one Ed25519 key; held only by the auth service.
pub struct TokenSigner {
    kid: String,
    key: SigningKey,
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the private key.
        f.debug_struct("TokenSigner")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl TokenSigner {
    pub fn new(kid: impl Into<String>, key: SigningKey) -> Self {
        Self {
            kid: kid.into(),
            key,
        }
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn verifying_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// The public half, as verifiers hold it.
    pub fn public_key(&self) -> PublicKey {
        PublicKey {
            kid: self.kid.clone(),
            key: self.verifying_key(),
        }
    }

    /// A compact JWS: base64url(header).base64url(claims).base64url(signature).
    pub fn sign(&self, claims: &AccessClaims) -> String {
        let header = Header {
            alg: ALGORITHM.into(),
            typ: Some("JWT".into()),
            kid: Some(self.kid.clone()),
        };
        // Serialising these plain structs cannot fail.
        let header = serde_json::to_vec(&header).unwrap_or_default();
        let claims = serde_json::to_vec(claims).unwrap_or_default();
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims)
        );
        let signature = self.key.sign(signing_input.as_bytes());
        format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature.to_bytes())
        )
    }
}

/// A verification key with its key id, as published in the JWKS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    pub kid: String,
    pub key: VerifyingKey,
}

/// The JWK (RFC 8037 OKP) form of a public key.
pub fn to_jwk(key: &PublicKey) -> Jwk {
    Jwk {
        kid: key.kid.clone(),
        kty: "OKP".into(),
        crv: "Ed25519".into(),
        x: URL_SAFE_NO_PAD.encode(key.key.as_bytes()),
        alg: ALGORITHM.into(),
        r#use: "sig".into(),
    }
}

/// Reads a JWK; anything but an Ed25519 OKP signing key is refused.
pub fn from_jwk(jwk: &Jwk) -> Result<PublicKey, TokenError> {
    if jwk.kty != "OKP" || jwk.crv != "Ed25519" {
        return Err(TokenError::UnsupportedKey(format!(
            "kty {} crv {}: expected OKP Ed25519",
            jwk.kty, jwk.crv
        )));
    }
    if !jwk.alg.is_empty() && jwk.alg != ALGORITHM {
        return Err(TokenError::UnsupportedKey(format!("alg {}", jwk.alg)));
    }
    if jwk.kid.is_empty() {
        return Err(TokenError::UnsupportedKey("missing kid".into()));
    }
    let bytes: [u8; 32] = URL_SAFE_NO_PAD
        .decode(&jwk.x)
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(|| TokenError::UnsupportedKey("x is not 32 base64url bytes".into()))?;
    let key = VerifyingKey::from_bytes(&bytes)
        .map_err(|_| TokenError::UnsupportedKey("x is not an Ed25519 point".into()))?;
    Ok(PublicKey {
        kid: jwk.kid.clone(),
        key,
    })
}

struct Parts<'a> {
    header: Header,
    signing_input: &'a str,
    claims: &'a str,
    signature: &'a str,
}

fn split(token: &str) -> Result<Parts<'_>, TokenError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::Malformed);
    }
    let (signing_input, signature) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
    let (header, claims) = signing_input.split_once('.').ok_or(TokenError::Malformed)?;
    if claims.contains('.') {
        return Err(TokenError::Malformed);
    }
    let header = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| TokenError::Malformed)?;
    let header: Header = serde_json::from_slice(&header).map_err(|_| TokenError::Malformed)?;
    Ok(Parts {
        header,
        signing_input,
        claims,
        signature,
    })
}

/// The `kid` of a token's header, to pick the key (or to refresh a JWKS cache on a miss).
pub fn header_kid(token: &str) -> Result<String, TokenError> {
    split(token)?.header.kid.ok_or(TokenError::Malformed)
}

/// Verifies signature, issuer and expiry and returns the claims. The algorithm is checked
/// first, against the one giao uses, before any key is looked at.
pub fn verify(token: &str, keys: &[PublicKey], now_unix: i64) -> Result<AccessClaims, TokenError> {
    let parts = split(token)?;
    if parts.header.alg != ALGORITHM {
        let mut alg = parts.header.alg;
        alg.truncate(16);
        return Err(TokenError::UnsupportedAlgorithm(alg));
    }
    let kid = parts.header.kid.ok_or(TokenError::Malformed)?;
    let key = keys
        .iter()
        .find(|key| key.kid == kid)
        .ok_or_else(|| TokenError::UnknownKid(kid.chars().take(64).collect()))?;
    let signature = URL_SAFE_NO_PAD
        .decode(parts.signature)
        .map_err(|_| TokenError::Malformed)?;
    let signature = Signature::from_slice(&signature).map_err(|_| TokenError::Malformed)?;
    key.key
        .verify_strict(parts.signing_input.as_bytes(), &signature)
        .map_err(|_| TokenError::BadSignature)?;
    let claims = URL_SAFE_NO_PAD
        .decode(parts.claims)
        .map_err(|_| TokenError::Malformed)?;
    let claims: AccessClaims =
        serde_json::from_slice(&claims).map_err(|_| TokenError::Malformed)?;
    if claims.iss != ISSUER {
        return Err(TokenError::WrongIssuer);
    }
    if claims.exp <= now_unix - LEEWAY_SECS {
        return Err(TokenError::Expired);
    }
    Ok(claims)
}

/// Splits `gk_<api_key_id>_<secret>` into (id, secret). The id is a UUID-like token without
/// underscores; the secret is base64url and may contain them.
pub fn parse_api_key(key: &str) -> Option<(&str, &str)> {
    let rest = key.strip_prefix(API_KEY_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let valid_id = !id.is_empty()
        && id.len() <= 64
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    let valid_secret = secret.len() >= 16
        && secret.len() <= 128
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    (valid_id && valid_secret).then_some((id, secret))
}

/// Formats an API key string from its id and secret.
pub fn format_api_key(id: &str, secret: &str) -> String {
    format!("{API_KEY_PREFIX}{id}_{secret}")
}

/// base64url without padding, the encoding of every secret giao hands out.
pub fn encode_secret(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer(kid: &str, seed: u8) -> TokenSigner {
        TokenSigner::new(kid, SigningKey::from_bytes(&[seed; 32]))
    }

    fn claims(exp: i64) -> AccessClaims {
        AccessClaims {
            iss: ISSUER.into(),
            sub: "u1".into(),
            tid: "acme".into(),
            role: "agent".into(),
            sv: 3,
            teams: vec!["t1".into()],
            iat: exp - 600,
            exp,
            jti: "j1".into(),
        }
    }

    fn b64(value: &str) -> String {
        URL_SAFE_NO_PAD.encode(value)
    }

    #[test]
    fn signed_tokens_verify_and_carry_their_claims() {
        let signer = signer("k1", 1);
        let token = signer.sign(&claims(1_000));
        let header = URL_SAFE_NO_PAD
            .decode(token.split('.').next().expect("header"))
            .expect("base64");
        assert_eq!(
            String::from_utf8(header).expect("utf8"),
            r#"{"alg":"EdDSA","typ":"JWT","kid":"k1"}"#
        );
        assert!(!token.contains('='));
        assert_eq!(header_kid(&token).expect("kid"), "k1");
        let verified = verify(&token, &[signer.public_key()], 900).expect("verifies");
        assert_eq!(verified, claims(1_000));
    }

    #[test]
    fn expiry_has_a_small_leeway() {
        let signer = signer("k1", 1);
        let token = signer.sign(&claims(1_000));
        assert!(verify(&token, &[signer.public_key()], 1_000 + LEEWAY_SECS - 1).is_ok());
        assert_eq!(
            verify(&token, &[signer.public_key()], 1_000 + LEEWAY_SECS),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn alg_none_and_hmac_are_refused_before_any_key() {
        let signer = signer("k1", 1);
        let body = b64(&serde_json::to_string(&claims(1_000)).expect("json"));
        let none = format!(
            "{}.{body}.",
            b64(r#"{"alg":"none","typ":"JWT","kid":"k1"}"#)
        );
        assert_eq!(
            verify(&none, &[signer.public_key()], 900),
            Err(TokenError::UnsupportedAlgorithm("none".into()))
        );
        let hs = format!(
            "{}.{body}.{}",
            b64(r#"{"alg":"HS256","typ":"JWT","kid":"k1"}"#),
            b64("mac")
        );
        // No keys at all: the algorithm is refused first, not the missing key.
        assert_eq!(
            verify(&hs, &[], 900),
            Err(TokenError::UnsupportedAlgorithm("HS256".into()))
        );
    }

    #[test]
    fn forged_and_tampered_tokens_fail_the_signature() {
        let real = signer("k1", 1);
        let forger = signer("k1", 2);
        let forged = forger.sign(&claims(1_000));
        assert_eq!(
            verify(&forged, &[real.public_key()], 900),
            Err(TokenError::BadSignature)
        );
        // Same signature, claims swapped for an admin's.
        let token = real.sign(&claims(1_000));
        let mut admin = claims(1_000);
        admin.role = "admin".into();
        let parts: Vec<&str> = token.split('.').collect();
        let tampered = format!(
            "{}.{}.{}",
            parts[0],
            b64(&serde_json::to_string(&admin).expect("json")),
            parts[2]
        );
        assert_eq!(
            verify(&tampered, &[real.public_key()], 900),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn unknown_kid_wrong_issuer_and_garbage() {
        let signer = signer("k1", 1);
        let token = signer.sign(&claims(1_000));
        let other = self::signer("k2", 2);
        assert_eq!(
            verify(&token, &[other.public_key()], 900),
            Err(TokenError::UnknownKid("k1".into()))
        );
        let mut foreign = claims(1_000);
        foreign.iss = "evil".into();
        assert_eq!(
            verify(&signer.sign(&foreign), &[signer.public_key()], 900),
            Err(TokenError::WrongIssuer)
        );
        for garbage in ["", "a", "a.b", "a.b.c", "a.b.c.d", "dev.acme.u1.admin"] {
            assert_eq!(
                verify(garbage, &[signer.public_key()], 900),
                Err(TokenError::Malformed),
                "{garbage}"
            );
        }
    }

    #[test]
    fn errors_never_echo_the_token() {
        let signer = signer("k1", 1);
        let token = signer.sign(&claims(1_000));
        let error = verify(&token, &[], 900).expect_err("unknown kid");
        assert!(!error.to_string().contains(&token));
        assert!(
            !error
                .to_string()
                .contains(token.split('.').nth(1).expect("claims"))
        );
    }

    #[test]
    fn jwk_round_trip_and_rejection() {
        let key = signer("k1", 1).public_key();
        let jwk = to_jwk(&key);
        assert_eq!(
            (
                jwk.kty.as_str(),
                jwk.crv.as_str(),
                jwk.alg.as_str(),
                jwk.r#use.as_str()
            ),
            ("OKP", "Ed25519", "EdDSA", "sig")
        );
        assert_eq!(from_jwk(&jwk).expect("reads"), key);
        let rsa = Jwk {
            kty: "RSA".into(),
            ..jwk.clone()
        };
        assert!(matches!(from_jwk(&rsa), Err(TokenError::UnsupportedKey(_))));
        let x25519 = Jwk {
            crv: "X25519".into(),
            ..jwk
        };
        assert!(from_jwk(&x25519).is_err());
    }

    #[test]
    fn api_keys_parse_strictly() {
        let secret = encode_secret(&[7u8; 32]);
        let key = format_api_key("0190-ab", &secret);
        assert_eq!(parse_api_key(&key), Some(("0190-ab", secret.as_str())));
        // Secrets may contain underscores; the id never does.
        assert_eq!(
            parse_api_key("gk_id1_abc_def_ghi_jkl_mno"),
            Some(("id1", "abc_def_ghi_jkl_mno"))
        );
        for bad in [
            "",
            "gk_",
            "gk_id",
            "gk__secretsecretsecret",
            "xx_id_secretsecretsecret",
            "gk_id_short",
        ] {
            assert_eq!(parse_api_key(bad), None, "{bad}");
        }
    }
}
