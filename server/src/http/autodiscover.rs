//! The Autodiscover answer (MS-ASCMD 2.2.1.1): the mobilesync response
//! pointing an authenticated device at `[server] public_url`, or the
//! Autodiscover error document (600 invalid request, 601 schema not
//! available).
//!
//! It must not look users up (no LDAP here): the display name is the login's
//! user part and the e-mail address is the one the device sent.

use std::time::{SystemTime, UNIX_EPOCH};

use opush_protocol::autodiscover::{
    error_response_xml, AutodiscoverError, AutodiscoverErrorCode, AutodiscoverRequest,
    AutodiscoverResponse,
};

use super::auth::AuthenticatedUser;
use super::HttpSettings;
use crate::commands::EasResponse;
use crate::error::ServerError;

/// `Content-Type` of Autodiscover answers.
pub const CONTENT_TYPE_XML: &str = "text/xml; charset=utf-8";

/// Answers one Autodiscover POST body.
pub fn answer(
    settings: &HttpSettings,
    user: &AuthenticatedUser,
    body: &[u8],
) -> Result<EasResponse, ServerError> {
    let request = match AutodiscoverRequest::parse(body) {
        Ok(r) => r,
        Err(AutodiscoverError::TooLarge) => {
            return Err(ServerError::PayloadTooLarge {
                limit: opush_protocol::autodiscover::MAX_REQUEST_BYTES as u64,
            })
        }
        Err(AutodiscoverError::MissingEmailAddress) => {
            tracing::warn!("autodiscover request without EMailAddress");
            return Ok(xml(error_document(AutodiscoverErrorCode::InvalidRequest)));
        }
        Err(AutodiscoverError::InvalidEmailAddress) => {
            // Not echoed: the answer would not be well-formed XML.
            tracing::warn!("autodiscover EMailAddress holds a control character");
            return Ok(xml(error_document(AutodiscoverErrorCode::InvalidRequest)));
        }
        Err(e) => return Err(ServerError::BadRequest(format!("autodiscover: {e}"))),
    };
    if !request.accepts_mobilesync() {
        tracing::warn!(
            schema = request.acceptable_response_schema.as_deref().unwrap_or("-"),
            "autodiscover asks for a response schema other than mobilesync"
        );
        return Ok(xml(error_document(
            AutodiscoverErrorCode::SchemaNotAvailable,
        )));
    }
    let res = AutodiscoverResponse::mobile_sync(
        &user.login.user,
        &request.email_address,
        &settings.mobile_sync_url(),
    );
    Ok(xml(res.to_xml()))
}

fn xml(text: String) -> EasResponse {
    EasResponse {
        http_status: 200,
        content_type: Some(CONTENT_TYPE_XML),
        headers: Vec::new(),
        body: text.into_bytes(),
        tail: None,
    }
}

fn error_document(code: AutodiscoverErrorCode) -> String {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = since.as_secs() % 86_400;
    let time = format!(
        "{:02}:{:02}:{:02}.{:07}",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60,
        since.subsec_nanos() / 100
    );
    let id = (since.as_nanos() % 4_294_967_296).to_string();
    error_response_xml(code, &time, &id)
}
