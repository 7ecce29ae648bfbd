//! ResolveRecipients (MS-ASCMD 2.2.1.15): resolve names to addresses, with
//! optional certificates, availability and pictures.
//!
//! Exists to type the request and response; resolving is the LDAP backend's
//! job. `Options` and a recipient's Availability/Certificates/Picture are
//! kept as their elements.

use super::tree::{self, Owned};
use super::{eas_document, CommandError};
use crate::status::ResolveRecipientsStatus;
use crate::version::ProtocolVersion;
use crate::wbxml::tags::resolverecipients as rr;
use crate::wbxml::Element;

/// ResolveRecipients request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResolveRecipientsRequest {
    /// `To` (names or addresses to resolve).
    pub to: Vec<String>,
    /// `Options`, kept as its element.
    pub options: Option<Owned>,
}

/// A resolved `Recipient`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Recipient {
    /// `Type`: 1 GAL, 2 contact.
    pub recipient_type: u8,
    /// `DisplayName`.
    pub display_name: String,
    /// `EmailAddress`.
    pub email_address: String,
    /// Availability, Certificates, Picture elements, in order.
    pub extra: Vec<Owned>,
}

/// One `Response` (per `To`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientResponse {
    /// `To` echoed.
    pub to: String,
    /// `Status`.
    pub status: ResolveRecipientsStatus,
    /// `RecipientCount`.
    pub recipient_count: Option<u32>,
    /// `Recipient`s.
    pub recipients: Vec<Recipient>,
}

/// ResolveRecipients response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolveRecipientsResponse {
    /// Global `Status`.
    pub status: ResolveRecipientsStatus,
    /// One per `To`.
    pub responses: Vec<RecipientResponse>,
}

impl ResolveRecipientsRequest {
    /// Reads a `ResolveRecipients` request.
    pub fn from_element(el: &Element<'_>, _v: ProtocolVersion) -> Result<Self, CommandError> {
        tree::expect_tag(el, rr::RESOLVE_RECIPIENTS)?;
        Ok(ResolveRecipientsRequest {
            to: el
                .children_with(rr::TO)
                .map(tree::content)
                .collect::<Result<_, _>>()?,
            options: el.child(rr::OPTIONS).map(tree::owned),
        })
    }

    /// Builds the `ResolveRecipients` request element.
    pub fn to_element(&self, _v: ProtocolVersion) -> Element<'_> {
        let mut el = Element::new(rr::RESOLVE_RECIPIENTS);
        for t in &self.to {
            el.push(tree::text_el(rr::TO, t));
        }
        if let Some(o) = &self.options {
            el.push(o.clone());
        }
        el
    }
}

impl ResolveRecipientsResponse {
    /// Reads a `ResolveRecipients` response.
    pub fn from_element(el: &Element<'_>, _v: ProtocolVersion) -> Result<Self, CommandError> {
        tree::expect_tag(el, rr::RESOLVE_RECIPIENTS)?;
        let responses = el
            .children_with(rr::RESPONSE)
            .map(|r| {
                Ok(RecipientResponse {
                    to: tree::req_text(r, rr::TO)?,
                    status: ResolveRecipientsStatus::from_code(tree::req_num(r, rr::STATUS)?),
                    recipient_count: tree::opt_num(r, rr::RECIPIENT_COUNT)?,
                    recipients: r
                        .children_with(rr::RECIPIENT)
                        .map(|x| {
                            Ok(Recipient {
                                recipient_type: tree::req_num(x, rr::TYPE)?,
                                display_name: tree::req_text(x, rr::DISPLAY_NAME)?,
                                email_address: tree::req_text(x, rr::EMAIL_ADDRESS)?,
                                extra: x
                                    .elements()
                                    .filter(|e| {
                                        !matches!(
                                            e.tag,
                                            rr::TYPE | rr::DISPLAY_NAME | rr::EMAIL_ADDRESS
                                        )
                                    })
                                    .map(tree::owned)
                                    .collect(),
                            })
                        })
                        .collect::<Result<_, CommandError>>()?,
                })
            })
            .collect::<Result<_, CommandError>>()?;
        Ok(ResolveRecipientsResponse {
            status: ResolveRecipientsStatus::from_code(tree::req_num(el, rr::STATUS)?),
            responses,
        })
    }

    /// Builds the `ResolveRecipients` response element.
    pub fn to_element(&self, _v: ProtocolVersion) -> Element<'_> {
        let mut el = Element::new(rr::RESOLVE_RECIPIENTS);
        el.push(tree::text_el(rr::STATUS, self.status.code()));
        for r in &self.responses {
            let mut re = Element::new(rr::RESPONSE);
            re.push(tree::text_el(rr::TO, &r.to));
            re.push(tree::text_el(rr::STATUS, r.status.code()));
            tree::push_opt(&mut re, rr::RECIPIENT_COUNT, r.recipient_count);
            for x in &r.recipients {
                let mut xe = Element::new(rr::RECIPIENT);
                xe.push(tree::text_el(rr::TYPE, x.recipient_type));
                xe.push(tree::text_el(rr::DISPLAY_NAME, &x.display_name));
                xe.push(tree::text_el(rr::EMAIL_ADDRESS, &x.email_address));
                for e in &x.extra {
                    xe.push(e.clone());
                }
                re.push(xe);
            }
            el.push(re);
        }
        el
    }
}

eas_document!(ResolveRecipientsRequest, rr::RESOLVE_RECIPIENTS);
eas_document!(ResolveRecipientsResponse, rr::RESOLVE_RECIPIENTS);
