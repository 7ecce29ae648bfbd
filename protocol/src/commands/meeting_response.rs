//! MeetingResponse (MS-ASCMD 2.2.1.11): accept, tentatively accept or
//! decline meeting requests.
//!
//! Exists to type the request and response; it must not touch calendars.
//! `InstanceId` from 14.1, `SendResponse` and proposed times from 16.0.

use super::tree::{self, Owned};
use super::{eas_document, since, CommandError};
use crate::status::MeetingResponseStatus;
use crate::version::ProtocolVersion;
use crate::wbxml::tags::{meetingresponse as mr, search};
use crate::wbxml::Element;

/// One `Request`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MeetingRequestResponse {
    /// `UserResponse`: 1 accepted, 2 tentative, 3 declined.
    pub user_response: u8,
    /// `CollectionId` (absent with LongId).
    pub collection_id: Option<String>,
    /// `RequestId` (the meeting request's ServerId).
    pub request_id: Option<String>,
    /// search:`LongId`.
    pub long_id: Option<String>,
    /// `InstanceId` (14.1+).
    pub instance_id: Option<String>,
    /// `SendResponse` (16.0+), kept as its element.
    pub send_response: Option<Owned>,
}

/// MeetingResponse request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MeetingResponseRequest {
    /// The requests.
    pub requests: Vec<MeetingRequestResponse>,
}

/// One `Result`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeetingResponseResult {
    /// `RequestId`.
    pub request_id: Option<String>,
    /// search:`LongId`.
    pub long_id: Option<String>,
    /// `Status`.
    pub status: MeetingResponseStatus,
    /// `CalendarId` (the calendar item, unless declined).
    pub calendar_id: Option<String>,
}

/// MeetingResponse response.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MeetingResponseResponse {
    /// One per request.
    pub results: Vec<MeetingResponseResult>,
}

impl MeetingResponseRequest {
    /// Reads a `MeetingResponse` request.
    pub fn from_element(el: &Element<'_>, v: ProtocolVersion) -> Result<Self, CommandError> {
        tree::expect_tag(el, mr::MEETING_RESPONSE)?;
        let requests = el
            .children_with(mr::REQUEST)
            .map(|r| {
                since(r, mr::INSTANCE_ID, v, ProtocolVersion::V14_1)?;
                since(r, mr::SEND_RESPONSE, v, ProtocolVersion::V16_0)?;
                Ok(MeetingRequestResponse {
                    user_response: tree::req_num(r, mr::USER_RESPONSE)?,
                    collection_id: tree::opt_text(r, mr::COLLECTION_ID)?,
                    request_id: tree::opt_text(r, mr::REQUEST_ID)?,
                    long_id: tree::opt_text(r, search::LONG_ID)?,
                    instance_id: tree::opt_text(r, mr::INSTANCE_ID)?,
                    send_response: r.child(mr::SEND_RESPONSE).map(tree::owned),
                })
            })
            .collect::<Result<_, CommandError>>()?;
        Ok(MeetingResponseRequest { requests })
    }

    /// Builds the `MeetingResponse` request element.
    pub fn to_element(&self, v: ProtocolVersion) -> Element<'_> {
        let mut el = Element::new(mr::MEETING_RESPONSE);
        for r in &self.requests {
            let mut re = Element::new(mr::REQUEST);
            re.push(tree::text_el(mr::USER_RESPONSE, r.user_response));
            tree::push_opt(&mut re, mr::COLLECTION_ID, r.collection_id.as_deref());
            tree::push_opt(&mut re, mr::REQUEST_ID, r.request_id.as_deref());
            tree::push_opt(&mut re, search::LONG_ID, r.long_id.as_deref());
            if v >= ProtocolVersion::V14_1 {
                tree::push_opt(&mut re, mr::INSTANCE_ID, r.instance_id.as_deref());
            }
            if v >= ProtocolVersion::V16_0 {
                if let Some(s) = &r.send_response {
                    re.push(s.clone());
                }
            }
            el.push(re);
        }
        el
    }
}

impl MeetingResponseResponse {
    /// Reads a `MeetingResponse` response.
    pub fn from_element(el: &Element<'_>, _v: ProtocolVersion) -> Result<Self, CommandError> {
        tree::expect_tag(el, mr::MEETING_RESPONSE)?;
        let results = el
            .children_with(mr::RESULT)
            .map(|r| {
                Ok(MeetingResponseResult {
                    request_id: tree::opt_text(r, mr::REQUEST_ID)?,
                    long_id: tree::opt_text(r, search::LONG_ID)?,
                    status: MeetingResponseStatus::from_code(tree::req_num(r, mr::STATUS)?),
                    calendar_id: tree::opt_text(r, mr::CALENDAR_ID)?,
                })
            })
            .collect::<Result<_, CommandError>>()?;
        Ok(MeetingResponseResponse { results })
    }

    /// Builds the `MeetingResponse` response element.
    pub fn to_element(&self, _v: ProtocolVersion) -> Element<'_> {
        let mut el = Element::new(mr::MEETING_RESPONSE);
        for r in &self.results {
            let mut re = Element::new(mr::RESULT);
            tree::push_opt(&mut re, mr::REQUEST_ID, r.request_id.as_deref());
            tree::push_opt(&mut re, search::LONG_ID, r.long_id.as_deref());
            re.push(tree::text_el(mr::STATUS, r.status.code()));
            tree::push_opt(&mut re, mr::CALENDAR_ID, r.calendar_id.as_deref());
            el.push(re);
        }
        el
    }
}

eas_document!(MeetingResponseRequest, mr::MEETING_RESPONSE);
eas_document!(MeetingResponseResponse, mr::MEETING_RESPONSE);
