//! The API's errors: one variant per `error` value the README documents, answered as
//! `{"error": "<code>", "reason": "<why>"}` with the variant's status.
//!
//! `into_response` only builds the answer; [`log_errors`] (a response middleware) logs each
//! error once, at `warn` for 5xx and `info` for 4xx.

use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// Why a request was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppError {
    /// 400: nothing (or only whitespace) was sent.
    #[error("the request body is empty")]
    EmptyBody,
    /// 400: the body is not JSON.
    #[error("{0}")]
    MalformedJson(String),
    /// 400: JSON, but not a message (no payload, a key that is not a string, not an object).
    #[error("{0}")]
    InvalidMessage(String),
    /// 400: the body could not be read (e.g. the client went away mid-body).
    #[error("{0}")]
    UnreadableBody(String),
    /// 400: `[]`.
    #[error("the batch has no messages")]
    EmptyBatch,
    /// 413: more items than `MAX_BATCH_ITEMS`.
    #[error("the batch has {items} messages; at most {max} are accepted (MAX_BATCH_ITEMS)")]
    TooManyMessages { items: usize, max: usize },
    /// 413: the body is over `MAX_BODY_BYTES`, or the record over what Kafka accepts.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// 415: a content type other than JSON or text, none, or more than one.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 503: no broker acked the message within `KAFKA_MESSAGE_TIMEOUT_MS`.
    #[error("{0}")]
    KafkaUnavailable(String),
    /// 503: `MAX_CONCURRENT_REQUESTS` requests are already being served.
    #[error("{0} requests are already in progress (MAX_CONCURRENT_REQUESTS): retry later")]
    Overloaded(usize),
    /// 408: the body did not arrive within `REQUEST_BODY_TIMEOUT` (a slow upload).
    #[error("the request body did not arrive within REQUEST_BODY_TIMEOUT")]
    RequestTimeout,
    /// 431: the request's headers are larger than `MAX_HEADER_BYTES` in all.
    #[error(
        "the request headers take {bytes} bytes; at most {max} are accepted (MAX_HEADER_BYTES)"
    )]
    HeadersTooLarge { bytes: usize, max: usize },
    /// 404: any other path.
    #[error(
        "no {method} {path}: the API is POST /messages, POST /messages/batch, GET /healthz, GET /readyz"
    )]
    NotFound { method: Method, path: String },
    /// 405: a known path with another method.
    #[error("{method} is not allowed on {path}")]
    MethodNotAllowed { method: Method, path: String },
    /// Item `index` of a batch is invalid: the item's own error, with its index.
    #[error("message {index}: {source}")]
    InBatch {
        index: usize,
        #[source]
        source: Box<AppError>,
    },
}

impl AppError {
    pub fn status(&self) -> StatusCode {
        match self {
            AppError::EmptyBody
            | AppError::MalformedJson(_)
            | AppError::InvalidMessage(_)
            | AppError::UnreadableBody(_)
            | AppError::EmptyBatch => StatusCode::BAD_REQUEST,
            AppError::TooManyMessages { .. } | AppError::PayloadTooLarge(_) => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            AppError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            AppError::KafkaUnavailable(_) | AppError::Overloaded(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            AppError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            AppError::HeadersTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            AppError::NotFound { .. } => StatusCode::NOT_FOUND,
            AppError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            AppError::InBatch { source, .. } => source.status(),
        }
    }

    /// The `error` field of the answer.
    pub fn code(&self) -> &'static str {
        match self {
            AppError::EmptyBody => "empty_body",
            AppError::MalformedJson(_) => "malformed_json",
            AppError::InvalidMessage(_) => "invalid_message",
            AppError::UnreadableBody(_) => "unreadable_body",
            AppError::EmptyBatch => "empty_batch",
            AppError::TooManyMessages { .. } => "too_many_messages",
            AppError::PayloadTooLarge(_) => "payload_too_large",
            AppError::UnsupportedMediaType(_) => "unsupported_media_type",
            AppError::KafkaUnavailable(_) => "kafka_unavailable",
            AppError::Overloaded(_) => "overloaded",
            AppError::RequestTimeout => "request_timeout",
            AppError::HeadersTooLarge { .. } => "header_fields_too_large",
            AppError::NotFound { .. } => "not_found",
            AppError::MethodNotAllowed { .. } => "method_not_allowed",
            AppError::InBatch { source, .. } => source.code(),
        }
    }

    /// The answer's body.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: self.code(),
            reason: self.to_string(),
        }
    }
}

/// `{"error": "...", "reason": "..."}`.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorBody {
    pub error: &'static str,
    pub reason: String,
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let mut res = (self.status(), axum::Json(self.body())).into_response();
        if matches!(self, AppError::Overloaded(_)) {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        // For `log_errors`.
        res.extensions_mut().insert(self);
        res
    }
}

/// Logs the error behind an error answer, once: `warn` for 5xx, `info` for 4xx.
pub async fn log_errors(res: Response) -> Response {
    if let Some(e) = res.extensions().get::<AppError>() {
        if e.status().is_server_error() {
            tracing::warn!(error = e.code(), reason = %e, "request failed");
        } else {
            tracing::info!(error = e.code(), reason = %e, "request rejected");
        }
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_items_error_keeps_its_status_and_code_and_names_the_item() {
        let e = AppError::InBatch {
            index: 3,
            source: Box::new(AppError::InvalidMessage(
                "the message has no \"payload\"".into(),
            )),
        };
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        assert_eq!(e.code(), "invalid_message");
        assert_eq!(e.to_string(), "message 3: the message has no \"payload\"");
    }

    #[test]
    fn an_overloaded_answer_says_when_to_retry() {
        let res = AppError::Overloaded(64).into_response();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(res.headers()[header::RETRY_AFTER], "1");
    }
}
