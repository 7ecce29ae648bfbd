//! Find (MS-ASCMD 2.2.1.2, 16.1 only): mailbox or GAL search with paging.
//!
//! Exists to type the request and response. Rejects any version before
//! 16.1. The search criterion and options are kept as their elements;
//! result properties are an [`ApplicationData`].

use super::items::ApplicationData;
use super::tree::{self, Owned};
use super::{eas_document, require_version, Command, CommandError};
use crate::status::FindStatus;
use crate::version::ProtocolVersion;
use crate::wbxml::tags::{airsync as s, find as fd};
use crate::wbxml::Element;

/// Find request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FindRequest {
    /// `SearchId` (a client GUID).
    pub search_id: String,
    /// `ExecuteSearch` (MailBoxSearchCriterion or GALSearchCriterion, Options).
    pub execute_search: Option<Owned>,
}

/// One `Result`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FindResult {
    /// airsync:`Class`.
    pub class: Option<String>,
    /// airsync:`ServerId`.
    pub server_id: Option<String>,
    /// airsync:`CollectionId`.
    pub collection_id: Option<String>,
    /// `Properties`.
    pub properties: Option<ApplicationData>,
}

/// Find response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FindResponse {
    /// Global `Status`.
    pub status: FindStatus,
    /// `Response/Status`.
    pub response_status: Option<FindStatus>,
    /// `Response/Result`s.
    pub results: Vec<FindResult>,
    /// `Response/Range`.
    pub range: Option<String>,
    /// `Response/Total`.
    pub total: Option<u32>,
}

impl FindRequest {
    /// Reads a `Find` request (16.1 only).
    pub fn from_element(el: &Element<'_>, v: ProtocolVersion) -> Result<Self, CommandError> {
        require_version(Command::Find, v, ProtocolVersion::V16_1)?;
        tree::expect_tag(el, fd::FIND)?;
        Ok(FindRequest {
            search_id: tree::req_text(el, fd::SEARCH_ID)?,
            execute_search: el.child(fd::EXECUTE_SEARCH).map(tree::owned),
        })
    }

    /// Builds the `Find` request element.
    pub fn to_element(&self, _v: ProtocolVersion) -> Element<'_> {
        let mut el = Element::new(fd::FIND);
        el.push(tree::text_el(fd::SEARCH_ID, &self.search_id));
        if let Some(x) = &self.execute_search {
            el.push(x.clone());
        }
        el
    }
}

impl FindResponse {
    /// Reads a `Find` response.
    pub fn from_element(el: &Element<'_>, v: ProtocolVersion) -> Result<Self, CommandError> {
        require_version(Command::Find, v, ProtocolVersion::V16_1)?;
        tree::expect_tag(el, fd::FIND)?;
        let mut res = FindResponse {
            status: FindStatus::from_code(tree::req_num(el, fd::STATUS)?),
            response_status: None,
            results: Vec::new(),
            range: None,
            total: None,
        };
        if let Some(r) = el.child(fd::RESPONSE) {
            res.response_status = tree::opt_num::<u16>(r, fd::STATUS)?.map(FindStatus::from_code);
            res.range = tree::opt_text(r, fd::RANGE)?;
            res.total = tree::opt_num(r, fd::TOTAL)?;
            for x in r.children_with(fd::RESULT) {
                res.results.push(FindResult {
                    class: tree::opt_text(x, s::CLASS)?,
                    server_id: tree::opt_text(x, s::SERVER_ID)?,
                    collection_id: tree::opt_text(x, s::COLLECTION_ID)?,
                    properties: x
                        .child(fd::PROPERTIES)
                        .map(|p| ApplicationData::from_properties(p, v))
                        .transpose()?,
                });
            }
        }
        Ok(res)
    }

    /// Builds the `Find` response element.
    pub fn to_element(&self, v: ProtocolVersion) -> Element<'_> {
        let mut el = Element::new(fd::FIND);
        el.push(tree::text_el(fd::STATUS, self.status.code()));
        if let Some(st) = self.response_status {
            let mut r = Element::new(fd::RESPONSE);
            r.push(tree::text_el(fd::STATUS, st.code()));
            for x in &self.results {
                let mut xe = Element::new(fd::RESULT);
                tree::push_opt(&mut xe, s::CLASS, x.class.as_deref());
                tree::push_opt(&mut xe, s::SERVER_ID, x.server_id.as_deref());
                tree::push_opt(&mut xe, s::COLLECTION_ID, x.collection_id.as_deref());
                if let Some(p) = &x.properties {
                    xe.push(p.to_element_as(fd::PROPERTIES, v));
                }
                r.push(xe);
            }
            tree::push_opt(&mut r, fd::RANGE, self.range.as_deref());
            tree::push_opt(&mut r, fd::TOTAL, self.total);
            el.push(r);
        }
        el
    }
}

eas_document!(FindRequest, fd::FIND);
eas_document!(FindResponse, fd::FIND);
