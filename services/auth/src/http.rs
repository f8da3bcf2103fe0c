//! `GET /.well-known/jwks.json` on the service's HTTP (metrics) listener, for verifiers that
//! speak plain HTTP. Same keys as the GetJwks RPC.

use std::sync::Arc;

use axum::{Json, Router, extract::State, response::IntoResponse, routing::get};

use crate::keys::KeyRing;

pub const JWKS_PATH: &str = "/.well-known/jwks.json";

pub fn routes(keys: Arc<KeyRing>) -> Router {
    Router::new().route(JWKS_PATH, get(jwks)).with_state(keys)
}

async fn jwks(State(keys): State<Arc<KeyRing>>) -> impl IntoResponse {
    let keys: Vec<serde_json::Value> = keys
        .jwks()
        .keys
        .into_iter()
        .map(|key| {
            serde_json::json!({
                "kid": key.kid,
                "kty": key.kty,
                "crv": key.crv,
                "x": key.x,
                "alg": key.alg,
                "use": key.r#use,
            })
        })
        .collect();
    (
        // Verifiers refetch on an unknown kid anyway; a short cache keeps rotations quick.
        [(http::header::CACHE_CONTROL, "public, max-age=60")],
        Json(serde_json::json!({ "keys": keys })),
    )
}
