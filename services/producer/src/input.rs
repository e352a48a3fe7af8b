//! What the API accepts: the bodies of `POST /messages` and `POST /messages/batch`, validated
//! before anything reaches Kafka.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use serde::Deserialize;

use crate::error::AppError;

impl From<BytesRejection> for AppError {
    fn from(r: BytesRejection) -> Self {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&r);
        while let Some(e) = cause {
            if e.is::<tower_http::timeout::TimeoutError>() {
                return AppError::RequestTimeout;
            }
            cause = e.source();
        }
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            AppError::PayloadTooLarge(r.body_text())
        } else {
            AppError::UnreadableBody(r.body_text())
        }
    }
}

/// A message as the API accepts it: a JSON object (an array of the same fields is not one).
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "serde_json::Map<String, serde_json::Value>")]
struct MessageIn {
    key: Option<String>,
    payload: Option<serde_json::Value>,
}

impl TryFrom<serde_json::Map<String, serde_json::Value>> for MessageIn {
    type Error = serde_json::Error;
    fn try_from(object: serde_json::Map<String, serde_json::Value>) -> Result<Self, Self::Error> {
        #[derive(Deserialize)]
        struct Fields {
            #[serde(default)]
            key: Option<String>,
            #[serde(default)]
            payload: Option<serde_json::Value>,
        }
        let Fields { key, payload } = serde_json::from_value(serde_json::Value::Object(object))?;
        Ok(MessageIn { key, payload })
    }
}

/// A validated message, ready for Kafka.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub key: Option<String>,
    pub value: Vec<u8>,
}

impl TryFrom<MessageIn> for Message {
    type Error = AppError;
    fn try_from(m: MessageIn) -> Result<Self, AppError> {
        let payload = m
            .payload
            .filter(|p| !p.is_null())
            .ok_or_else(|| AppError::InvalidMessage("the message has no \"payload\"".into()))?;
        let value =
            serde_json::to_vec(&payload).map_err(|e| AppError::InvalidMessage(e.to_string()))?;
        Ok(Message { key: m.key, value })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyKind {
    Json,
    Text,
}

fn body_kind(headers: &HeaderMap) -> Result<BodyKind, AppError> {
    let mut types = headers.get_all(header::CONTENT_TYPE).iter();
    let (Some(value), None) = (types.next(), types.next()) else {
        let n = headers.get_all(header::CONTENT_TYPE).iter().count();
        return Err(AppError::UnsupportedMediaType(match n {
            0 => "no content type: send application/json or text/plain".into(),
            n => format!("{n} Content-Type headers: send exactly one"),
        }));
    };
    let ct = value
        .to_str()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match ct.as_str() {
        "application/json" => Ok(BodyKind::Json),
        t if t.starts_with("application/") && t.ends_with("+json") => Ok(BodyKind::Json),
        "text/plain" => Ok(BodyKind::Text),
        other => Err(AppError::UnsupportedMediaType(format!(
            "content type {other:?} is not supported: send application/json or text/plain"
        ))),
    }
}

fn json_error(e: &serde_json::Error) -> AppError {
    use serde_json::error::Category;
    match e.classify() {
        Category::Data => AppError::InvalidMessage(e.to_string()),
        _ => AppError::MalformedJson(e.to_string()),
    }
}

fn non_empty(body: &Bytes) -> Result<(), AppError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(AppError::EmptyBody);
    }
    Ok(())
}

/// Validates one `POST /messages` body.
pub fn parse_one(headers: &HeaderMap, body: &Bytes) -> Result<Message, AppError> {
    let kind = body_kind(headers)?;
    non_empty(body)?;
    match kind {
        BodyKind::Json => serde_json::from_slice::<MessageIn>(body)
            .map_err(|e| json_error(&e))?
            .try_into(),
        BodyKind::Text => {
            let text = std::str::from_utf8(body).map_err(|e| {
                AppError::InvalidMessage(format!("text/plain body is not UTF-8: {e}"))
            })?;
            Ok(Message {
                key: None,
                value: text.as_bytes().to_vec(),
            })
        }
    }
}

/// Validates one `POST /messages/batch` body of at most `max_items` messages. The items are
/// counted before any is parsed into a message, so an oversized batch costs no memory.
pub fn parse_batch(
    headers: &HeaderMap,
    body: &Bytes,
    max_items: usize,
) -> Result<Vec<Message>, AppError> {
    if body_kind(headers)? != BodyKind::Json {
        return Err(AppError::UnsupportedMediaType(
            "a batch is a JSON array: send application/json".into(),
        ));
    }
    non_empty(body)?;
    let count = serde_json::from_slice::<Vec<serde::de::IgnoredAny>>(body)
        .map_err(|e| json_error(&e))?
        .len();
    if count == 0 {
        return Err(AppError::EmptyBatch);
    }
    if count > max_items {
        return Err(AppError::TooManyMessages {
            items: count,
            max: max_items,
        });
    }
    let items: Vec<serde_json::Value> = serde_json::from_slice(body).map_err(|e| json_error(&e))?;
    items
        .into_iter()
        .enumerate()
        .map(|(index, item)| {
            serde_json::from_value::<MessageIn>(item)
                .map_err(|e| json_error(&e))
                .and_then(Message::try_from)
                .map_err(|e| AppError::InBatch {
                    index,
                    source: Box::new(e),
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn ct(v: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(v));
        h
    }

    fn b(s: &'static str) -> Bytes {
        Bytes::from_static(s.as_bytes())
    }

    #[test]
    fn a_json_message_with_key_and_payload_is_accepted() {
        let m = parse_one(
            &ct("application/json; charset=utf-8"),
            &b(r#"{"key":"k","payload":{"a":1}}"#),
        )
        .unwrap();
        assert_eq!(m.key.as_deref(), Some("k"));
        assert_eq!(m.value, br#"{"a":1}"#);
    }

    #[test]
    fn a_text_plain_body_is_the_payload() {
        let m = parse_one(&ct("text/plain"), &b("hello")).unwrap();
        assert_eq!((m.key, m.value), (None, b"hello".to_vec()));
    }

    #[test]
    fn bad_bodies_get_400_with_a_specific_error() {
        let cases = [
            ("application/json", "", "empty_body"),
            ("application/json", "  \n", "empty_body"),
            ("application/json", "{not json", "malformed_json"),
            ("application/json", r#"{"key":"k"}"#, "invalid_message"),
            ("application/json", r#"{"payload":null}"#, "invalid_message"),
            (
                "application/json",
                r#"{"key":5,"payload":1}"#,
                "invalid_message",
            ),
            // The fields in order, as an array, are not a message.
            ("application/json", r#"["k",{"a":1}]"#, "invalid_message"),
            ("application/json", r#"[null,1]"#, "invalid_message"),
            ("text/plain", "", "empty_body"),
        ];
        for (t, body, error) in cases {
            let e = parse_one(&ct(t), &b(body)).unwrap_err();
            assert_eq!(
                (e.status(), e.code()),
                (StatusCode::BAD_REQUEST, error),
                "{body:?}: {e:?}"
            );
        }
    }

    #[test]
    fn other_missing_or_several_content_types_get_415() {
        let mut two = ct("application/json");
        two.append(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        for h in [ct("application/xml"), HeaderMap::new(), two] {
            let e = parse_one(&h, &b(r#"{"payload":1}"#)).unwrap_err();
            assert_eq!(e.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE, "{e}");
        }
        let mut two = ct("text/plain");
        two.append(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        let e = parse_one(&two, &b("hello")).unwrap_err();
        assert_eq!(e.to_string(), "2 Content-Type headers: send exactly one");
        let e = parse_batch(&ct("text/plain"), &b("[]"), 10).unwrap_err();
        assert_eq!(e.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }

    #[test]
    fn a_batch_is_validated_as_a_whole_before_anything_is_sent() {
        let json = ct("application/json");
        let ok = parse_batch(
            &json,
            &b(r#"[{"payload":1},{"key":"x","payload":"y"}]"#),
            10,
        )
        .unwrap();
        assert_eq!(ok.len(), 2);
        let e = parse_batch(&json, &b(r#"[{"payload":1},{"key":"x"}]"#), 10).unwrap_err();
        assert_eq!(e.code(), "invalid_message");
        assert!(e.to_string().starts_with("message 1:"), "{e:?}");
        let e = parse_batch(&json, &b("[]"), 10).unwrap_err();
        assert_eq!(e.code(), "empty_batch");
        let e = parse_batch(&json, &b(r#"[{"payload":1},["k",2]]"#), 10).unwrap_err();
        assert_eq!(e.code(), "invalid_message");
        assert!(e.to_string().contains("expected a map"), "{e:?}");
    }

    #[test]
    fn a_batch_over_the_item_limit_gets_413_before_its_items_are_parsed() {
        let json = ct("application/json");
        let three = b(r#"[{"payload":1},{"payload":2},{"nonsense":3}]"#);
        let e = parse_batch(&json, &three, 2).unwrap_err();
        assert_eq!(
            (e.status(), e.code()),
            (StatusCode::PAYLOAD_TOO_LARGE, "too_many_messages")
        );
        assert_eq!(
            e.to_string(),
            "the batch has 3 messages; at most 2 are accepted (MAX_BATCH_ITEMS)"
        );
        assert!(parse_batch(&json, &b(r#"[{"payload":1},{"payload":2}]"#), 2).is_ok());
    }
}
