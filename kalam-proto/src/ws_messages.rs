//! WebSocket message framing (PROTOCOL §4): client messages as JSON text,
//! server frames into typed [`ServerMessage`]s.

use serde::{Deserialize, Serialize};

use crate::error::DecodeError;
use crate::live::LiveRow;
use crate::types::SchemaField;

/// Largest frame the server accepts (its codec limit); bigger ones make it
/// drop the connection without a close frame.
pub const MAX_CLIENT_FRAME: usize = 64 * 1024;

/// Options of a subscription.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SubscriptionOptions {
    /// Rows per initial page (the client sends at most 999; see PROTOCOL §4.6).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<u32>,
    /// Only the newest N rows as initial data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_rows: Option<u32>,
    /// Resume: only rows whose `_seq` is greater than this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<i64>,
}

impl SubscriptionOptions {
    /// Sets the initial page size (capped at 999).
    pub fn with_batch_size(mut self, n: u32) -> Self {
        self.batch_size = Some(n.min(MAX_BATCH_SIZE));
        self
    }

    /// Asks for only the newest `n` rows as initial data.
    pub fn with_last_rows(mut self, n: u32) -> Self {
        self.last_rows = Some(n);
        self
    }

    /// Resumes after the row with this `_seq`.
    pub fn with_from(mut self, seq: i64) -> Self {
        self.from = Some(seq);
        self
    }
}

/// The largest `batch_size` that avoids the server's 1000-row cut (§4.6).
pub const MAX_BATCH_SIZE: u32 = 999;

/// A message from the client.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage<'a> {
    /// First message on a socket.
    Authenticate {
        /// Always `jwt`.
        method: &'a str,
        /// The access token.
        token: &'a str,
        /// Required by the server.
        protocol: Protocol,
    },
    /// Start a subscription.
    Subscribe {
        /// Id, SQL and options.
        subscription: Subscription<'a>,
    },
    /// Ask for the next initial page.
    NextBatch {
        /// The subscription.
        subscription_id: &'a str,
        /// `batch_control.last_seq_id` of the last page (a JSON number).
        last_seq_id: Option<i64>,
    },
    /// Stop a subscription.
    Unsubscribe {
        /// The subscription.
        subscription_id: &'a str,
    },
}

/// The `subscription` object of a subscribe message.
#[derive(Debug, Clone, Serialize)]
pub struct Subscription<'a> {
    /// Client-chosen id (plain ASCII).
    pub id: &'a str,
    /// `SELECT … FROM ns.table [WHERE …]`.
    pub sql: &'a str,
    /// Without options there is no initial data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub options: Option<&'a SubscriptionOptions>,
}

/// The `protocol` object of `authenticate`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Protocol {
    /// `json` (this client) or `msgpack`.
    pub serialization: String,
    /// `none` or `gzip` (echoed, ignored by the server; `?compress=false` decides).
    pub compression: String,
}

impl Protocol {
    /// JSON, as this client speaks.
    pub fn json(gzip: bool) -> Self {
        Protocol {
            serialization: "json".into(),
            compression: if gzip { "gzip" } else { "none" }.into(),
        }
    }
}

impl ClientMessage<'_> {
    /// The message as JSON text.
    pub fn to_text(&self) -> String {
        // Serializing these plain structs cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Paging state of initial data.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct BatchControl {
    /// 0-based page number.
    #[serde(default)]
    pub batch_num: u32,
    /// More pages to come.
    #[serde(default)]
    pub has_more: bool,
    /// `loading`, `loading_batch` or `ready`.
    #[serde(default)]
    pub status: Option<String>,
    /// `_seq` of the last row of this page (a JSON number, may exceed 2^53).
    #[serde(default)]
    pub last_seq_id: Option<i64>,
}

/// What a change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeType {
    /// A row was inserted (or entered the filter as an insert).
    Insert,
    /// A row was updated.
    Update,
    /// A row was deleted.
    Delete,
}

/// A message from the server.
///
/// Decoded in one pass: the fields of every message type land in one flat
/// struct and the `type` picks the variant afterwards, so a frame is never
/// buffered first to find its tag (serde's internally tagged enums do that).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ServerMessage {
    /// Authentication succeeded.
    AuthSuccess {
        /// User id.
        user: Option<String>,
        /// Role.
        role: Option<String>,
    },
    /// Authentication failed (a close 1008 follows).
    AuthError {
        /// Generic message (`Invalid credentials`, a timeout, a rate limit).
        message: String,
    },
    /// A subscription was accepted.
    SubscriptionAck {
        /// The subscription.
        subscription_id: String,
        /// Columns.
        schema: Vec<SchemaField>,
        /// First page's control.
        batch_control: Option<BatchControl>,
    },
    /// A page of initial data.
    InitialDataBatch {
        /// The subscription.
        subscription_id: String,
        /// Rows as objects.
        rows: Vec<LiveRow>,
        /// Paging.
        batch_control: BatchControl,
    },
    /// A row changed.
    Change {
        /// The subscription.
        subscription_id: String,
        /// What happened.
        change_type: ChangeType,
        /// New values (insert, update).
        rows: Vec<LiveRow>,
        /// Old values (update: changed columns; delete: the deleted row).
        old_values: Vec<LiveRow>,
    },
    /// An error for a subscription, or for the connection (pseudo ids
    /// `protocol`, `rate_limit`, `subscribe`, `invalid_subscription`).
    Error {
        /// The subscription, or a pseudo id.
        subscription_id: String,
        /// Server code, e.g. `INVALID_SQL`.
        code: String,
        /// Message.
        message: String,
    },
}

/// Every field any server message has, for the one-pass decoder.
#[derive(Deserialize)]
struct Flat {
    #[serde(rename = "type")]
    ty: String,
    user: Option<String>,
    role: Option<String>,
    message: Option<String>,
    subscription_id: Option<String>,
    schema: Option<Vec<SchemaField>>,
    batch_control: Option<BatchControl>,
    rows: Option<Vec<LiveRow>>,
    old_values: Option<Vec<LiveRow>>,
    change_type: Option<ChangeType>,
    code: Option<String>,
}

impl<'de> Deserialize<'de> for ServerMessage {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let f = Flat::deserialize(deserializer)?;
        let id = |id: Option<String>| id.ok_or_else(|| D::Error::missing_field("subscription_id"));
        Ok(match f.ty.as_str() {
            "auth_success" => ServerMessage::AuthSuccess {
                user: f.user,
                role: f.role,
            },
            "auth_error" => ServerMessage::AuthError {
                message: f.message.unwrap_or_default(),
            },
            "subscription_ack" => ServerMessage::SubscriptionAck {
                subscription_id: id(f.subscription_id)?,
                schema: f.schema.unwrap_or_default(),
                batch_control: f.batch_control,
            },
            "initial_data_batch" => ServerMessage::InitialDataBatch {
                subscription_id: id(f.subscription_id)?,
                rows: f.rows.unwrap_or_default(),
                batch_control: f.batch_control.unwrap_or_default(),
            },
            "change" => ServerMessage::Change {
                subscription_id: id(f.subscription_id)?,
                change_type: f.change_type.ok_or_else(|| D::Error::missing_field("change_type"))?,
                rows: f.rows.unwrap_or_default(),
                old_values: f.old_values.unwrap_or_default(),
            },
            "error" => ServerMessage::Error {
                subscription_id: f.subscription_id.unwrap_or_default(),
                code: f.code.unwrap_or_default(),
                message: f.message.unwrap_or_default(),
            },
            other => {
                return Err(D::Error::unknown_variant(
                    other,
                    &[
                        "auth_success",
                        "auth_error",
                        "subscription_ack",
                        "initial_data_batch",
                        "change",
                        "error",
                    ],
                ));
            }
        })
    }
}

/// Decodes a text frame.
pub fn decode_text(text: &str) -> Result<ServerMessage, DecodeError> {
    serde_json::from_str(text).map_err(|e| DecodeError::new(0, "WebSocket message", e))
}

/// Decodes a binary frame: gzip(JSON) when compressed (needs the `gzip`
/// feature), else JSON. MessagePack is not spoken by this client.
pub fn decode_binary(bytes: &[u8]) -> Result<ServerMessage, DecodeError> {
    decode_binary_within(bytes, MAX_INFLATED)
}

/// [`decode_binary`] with a gzip frame inflated to at most `max_inflated`
/// bytes (the session's `max_response_bytes`).
pub fn decode_binary_within(bytes: &[u8], max_inflated: usize) -> Result<ServerMessage, DecodeError> {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let json =
            crate::gzip::gunzip(bytes, max_inflated).map_err(|e| DecodeError::new(0, "gzip WebSocket frame", e))?;
        return serde_json::from_slice(&json).map_err(|e| DecodeError::new(0, "WebSocket message", e));
    }
    if bytes.first() == Some(&b'{') {
        return serde_json::from_slice(bytes).map_err(|e| DecodeError::new(0, "WebSocket message", e));
    }
    Err(DecodeError::new(
        0,
        "WebSocket message",
        "binary frame is neither gzip nor JSON (MessagePack is not supported)",
    ))
}

/// Largest inflated frame [`decode_binary`] accepts (a gzip-bomb guard; a
/// session uses its `max_response_bytes` instead, the default of which is
/// the same 64 MiB).
pub const MAX_INFLATED: usize = 64 << 20;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_messages() {
        let opts = SubscriptionOptions::default()
            .with_batch_size(5000)
            .with_from(382_978_040_937_680_897);
        let m = ClientMessage::Subscribe {
            subscription: Subscription {
                id: "s1",
                sql: "SELECT * FROM demo.items",
                options: Some(&opts),
            },
        };
        assert_eq!(
            m.to_text(),
            r#"{"type":"subscribe","subscription":{"id":"s1","sql":"SELECT * FROM demo.items","options":{"batch_size":999,"from":382978040937680897}}}"#
        );
        let a = ClientMessage::Authenticate {
            method: "jwt",
            token: "T",
            protocol: Protocol::json(false),
        };
        assert_eq!(
            a.to_text(),
            r#"{"type":"authenticate","method":"jwt","token":"T","protocol":{"serialization":"json","compression":"none"}}"#
        );
        let n = ClientMessage::NextBatch {
            subscription_id: "s1",
            last_seq_id: Some(382_978_040_937_680_897),
        };
        assert_eq!(
            n.to_text(),
            r#"{"type":"next_batch","subscription_id":"s1","last_seq_id":382978040937680897}"#
        );
    }

    #[test]
    fn server_messages() {
        let m = decode_text(r#"{"type":"subscription_ack","subscription_id":"items","total_rows":0,"batch_control":{"batch_num":0,"has_more":false,"status":"ready","last_seq_id":382978040937680897},"schema":[{"name":"id","data_type":"BigInt","index":0,"flags":["pk"]}]}"#).unwrap();
        match m {
            ServerMessage::SubscriptionAck {
                batch_control, schema, ..
            } => {
                assert_eq!(batch_control.unwrap().last_seq_id, Some(382_978_040_937_680_897));
                assert!(schema[0].is_primary_key());
            }
            other => panic!("{other:?}"),
        }
        let m = decode_text(r#"{"type":"change","subscription_id":"items","change_type":"delete","old_values":[{"id":"1","_seq":"382978043261325313","_deleted":true}]}"#).unwrap();
        match m {
            ServerMessage::Change {
                change_type,
                old_values,
                ..
            } => {
                assert_eq!(change_type, ChangeType::Delete);
                assert_eq!(old_values[0].seq(), Some(382_978_043_261_325_313));
            }
            other => panic!("{other:?}"),
        }
        for bad in ["", "{", "[]", r#"{"type":"nope"}"#, r#"{"type":"change"}"#, "\u{0}"] {
            assert!(decode_text(bad).is_err(), "{bad:?}");
        }
        assert!(decode_binary(&[0x93, 1, 2]).is_err());
        assert!(decode_binary(&[0x1f, 0x8b, 0, 0]).is_err());
        assert!(decode_binary(br#"{"type":"auth_error","message":"x"}"#).is_ok());
    }
}
