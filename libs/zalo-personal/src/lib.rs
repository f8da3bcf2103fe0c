//! A client of the Zalo web protocol used by personal accounts (chat.zalo.me), written from
//! the protocol's public facts; usable outside giao. See `docs/zalo-personal.md`.
//!
//! - [`crypto`]: request signing, zcid, parameter and response encryption.
//! - [`frame`]: the websocket frame format and its payload encodings.
//! - [`events`]: typed events (messages, recalls, reactions, receipts, friend and group
//!   changes) from decoded frames.
//! - [`client`]: QR and cookie login, the websocket listener, sending, user info.
//! - `sim` (feature `simulator`): the server side, on loopback, with fault knobs.

pub mod client;
pub mod crypto;
pub mod error;
pub mod events;
pub mod frame;
#[cfg(feature = "simulator")]
pub mod sim;

pub use error::Error;
