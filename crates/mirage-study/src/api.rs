//! What crosses the wire: request bodies, how each is validated, and the error
//! responses. Every refusal is a 4xx with a JSON body `{"error": "..."}` saying what
//! to fix; only a fault on the server's side is a 500.

use crate::admin::AdminRefusal;
use crate::error::StudyError;
use crate::pool::valid_name;
use crate::store::Choice;
use crate::ticket::{well_formed, TicketRefusal, TICKET_HEX_LEN};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

/// Largest request body the server reads (a vote is under 200 bytes).
pub const MAX_BODY_BYTES: usize = 4096;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn unknown_study(id: &str) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, format!("no study named {id:?}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(serde_json::json!({ "error": self.message })),
        )
            .into_response()
    }
}

impl From<TicketRefusal> for ApiError {
    fn from(r: TicketRefusal) -> ApiError {
        let status = match r {
            TicketRefusal::Unknown => StatusCode::FORBIDDEN,
            TicketRefusal::Used => StatusCode::CONFLICT,
            TicketRefusal::Expired => StatusCode::GONE,
        };
        ApiError::new(status, r.message())
    }
}

impl From<AdminRefusal> for ApiError {
    fn from(r: AdminRefusal) -> ApiError {
        let status = match r {
            AdminRefusal::Disabled => StatusCode::FORBIDDEN,
            AdminRefusal::Missing | AdminRefusal::Wrong => StatusCode::UNAUTHORIZED,
        };
        ApiError::new(status, r.message())
    }
}

impl From<StudyError> for ApiError {
    fn from(e: StudyError) -> ApiError {
        match e {
            StudyError::Pool { .. } | StudyError::BadStudyId(_) => {
                ApiError::bad_request(e.to_string())
            }
            StudyError::StudyExists(_) => ApiError::new(StatusCode::CONFLICT, e.to_string()),
            StudyError::UnknownStudy(_) => ApiError::new(StatusCode::NOT_FOUND, e.to_string()),
            other => {
                // The operator needs the cause; the client only needs to know it was not
                // its fault.
                eprintln!("mirage-study: {other}");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error (logged on the server)",
                )
            }
        }
    }
}

/// `POST /api/studies/{study}/votes`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VoteBody {
    ticket: String,
    choice: String,
    #[serde(default)]
    rater: Option<String>,
}

#[derive(Debug, PartialEq, Eq)]
pub struct VoteRequest {
    pub ticket: String,
    pub choice: Choice,
    pub rater: Option<String>,
}

/// `POST /api/admin/studies`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateStudyRequest {
    pub id: String,
    /// A pool folder on the server's disk (admins are trusted with paths).
    pub pool: String,
}

fn parse_json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("malformed JSON: {e}")))
}

impl VoteRequest {
    pub fn parse(body: &[u8]) -> Result<VoteRequest, ApiError> {
        let body: VoteBody = parse_json(body)?;
        if !well_formed(&body.ticket) {
            return Err(ApiError::bad_request(format!(
                "ticket must be {TICKET_HEX_LEN} lowercase hex characters, as issued with the pair"
            )));
        }
        let choice = match body.choice.as_str() {
            "a" => Choice::A,
            "b" => Choice::B,
            _ => return Err(ApiError::bad_request("choice must be \"a\" or \"b\"")),
        };
        if let Some(r) = &body.rater {
            if !valid_name(r) {
                return Err(ApiError::bad_request(
                    "rater must be 1–64 characters of A-Z a-z 0-9 . _ -",
                ));
            }
        }
        Ok(VoteRequest {
            ticket: body.ticket,
            choice,
            rater: body.rater,
        })
    }
}

impl CreateStudyRequest {
    pub fn parse(body: &[u8]) -> Result<CreateStudyRequest, ApiError> {
        let request: CreateStudyRequest = parse_json(body)?;
        if !valid_name(&request.id) {
            return Err(StudyError::BadStudyId(request.id).into());
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ticket::new_ticket;

    #[test]
    fn a_good_vote_parses() {
        let t = new_ticket();
        let v = VoteRequest::parse(
            format!(r#"{{"ticket":"{t}","choice":"b","rater":"r-1"}}"#).as_bytes(),
        )
        .unwrap();
        assert_eq!(
            v,
            VoteRequest {
                ticket: t,
                choice: Choice::B,
                rater: Some("r-1".into())
            }
        );
    }

    #[test]
    fn bad_votes_are_400_with_a_reason() {
        let t = new_ticket();
        let cases = [
            ("{", "malformed JSON"),
            ("[]", "malformed JSON"),
            ("\u{0}", "malformed JSON"),
            (r#"{"choice":"a"}"#, "missing field `ticket`"),
            (&format!(r#"{{"ticket":"{t}"}}"#), "missing field `choice`"),
            (
                &format!(r#"{{"ticket":"{t}","choice":"c"}}"#),
                "choice must be",
            ),
            (
                &format!(r#"{{"ticket":"{t}","choice":"A"}}"#),
                "choice must be",
            ),
            (
                &format!(r#"{{"ticket":"{t}","choice":1}}"#),
                "malformed JSON",
            ),
            (r#"{"ticket":"xyz","choice":"a"}"#, "ticket must be"),
            (
                &format!(r#"{{"ticket":"{t}","choice":"a","rater":"a b"}}"#),
                "rater must be",
            ),
            (
                &format!(r#"{{"ticket":"{t}","choice":"a","winner":"avif"}}"#),
                "unknown field `winner`",
            ),
        ];
        for (body, expected) in cases {
            let e = VoteRequest::parse(body.as_bytes()).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{body}");
            assert!(
                e.message.contains(expected),
                "{body}: {:?} should contain {expected:?}",
                e.message
            );
        }
    }

    #[test]
    fn study_ids_are_checked_on_create() {
        let e = CreateStudyRequest::parse(br#"{"id":"../etc","pool":"/tmp"}"#).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(CreateStudyRequest::parse(br#"{"id":"kodak-0.1","pool":"/tmp"}"#).is_ok());
    }
}
