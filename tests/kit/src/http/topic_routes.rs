//! The HTTP side of topics (PROTOCOL §5): `POST /v1/api/topics/consume` and
//! `/ack` (the topics themselves are in [`crate::topics`]).

use super::*;

/// Which topic endpoint.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum TopicCall {
    Consume,
    Ack,
}

/// `POST /v1/api/topics/consume` and `/ack` (§5): Bearer auth in the SQL
/// envelope, then the body (framework plain-text 400s), then the role
/// (`403 FORBIDDEN`) and the topic (`404 NOT_FOUND`).
pub(super) fn topics(
    state: &State,
    headers: &http::HeaderMap,
    is_json: bool,
    body: &[u8],
    started: Instant,
    call: TopicCall,
) -> Answer {
    let role = match bearer(state, headers) {
        Ok((_, role)) => role,
        Err(code) => return bearer_refused(code, started),
    };
    if !is_json {
        return text(StatusCode::BAD_REQUEST, "Content type error".into());
    }
    if body.len() > MAX_JSON {
        return text(StatusCode::BAD_REQUEST, json_overflow(body.len()));
    }
    let topic_error =
        |status: StatusCode, error: String, code: &str| json_answer(status, json!({"error": error, "code": code}));
    let bad_body = |e: serde_json::Error| text(StatusCode::BAD_REQUEST, format!("Json deserialize error: {e}"));
    let request = match call {
        TopicCall::Consume => serde_json::from_slice(body).map(Ok),
        TopicCall::Ack => serde_json::from_slice(body).map(Err),
    };
    let request: Result<crate::topics::ConsumeRequest, crate::topics::AckRequest> = match request {
        Ok(r) => r,
        Err(e) => return bad_body(e),
    };
    if !matches!(role.as_str(), "service" | "dba" | "system") {
        let what = match call {
            TopicCall::Consume => "consumption",
            TopicCall::Ack => "acknowledgment",
        };
        return topic_error(
            StatusCode::FORBIDDEN,
            format!("Topic {what} requires service, dba, or system role"),
            "FORBIDDEN",
        );
    }
    let Ok(mut engine) = state.engine.lock() else {
        return topic_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Failed to lookup topic".into(),
            "INTERNAL_ERROR",
        );
    };
    let (topic_id, answer) = match &request {
        Ok(c) => (&c.topic_id, engine.topics.consume(c)),
        Err(a) => (&a.topic_id, engine.topics.ack(a)),
    };
    match answer {
        Some(v) => json_answer(StatusCode::OK, v),
        None => topic_error(
            StatusCode::NOT_FOUND,
            format!("Topic '{topic_id}' does not exist"),
            "NOT_FOUND",
        ),
    }
}
