//! Find (MS-ASCMD 2.2.1.2, 16.1 only): mailbox or GAL search with paging.
//!
//! Exists to type the request and response. Rejects any version before
//! 16.1. The request keeps what a server acts on: the criterion (mailbox
//! or GAL), its `FreeText`, `airsync:Class`, `airsync:CollectionId`,
//! `DeepTraversal` and `Range`; other options (`MaxSize`, `MaxPictures`,
//! `Picture`) are not kept. A `Find` without `ExecuteSearch` or without a
//! criterion decodes with `criterion: None`: what to answer is the
//! server's decision (Status 2), not a decoding error.
//!
//! The response follows the FindResponse schema (MS-ASCMD 6.8): a global
//! `Status`, then a `Response` with `itemoperations:Store` ("Mailbox"), its
//! `Status`, the `Result`s (`airsync:Class`, `airsync:ServerId`,
//! `airsync:CollectionId`, `Properties`), `Range` and `Total`.

use super::tree::{self, Owned};
use super::{eas_document, require_version, Command, CommandError};
use crate::status::FindStatus;
use crate::version::ProtocolVersion;
use crate::wbxml::tags::{airsync as s, email as em, email2 as em2, find as fd, itemoperations};
use crate::wbxml::{Element, Tag};

/// Find request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FindRequest {
    /// `SearchId` (a client GUID).
    pub search_id: String,
    /// The criterion of `ExecuteSearch`; `None` when the request has none.
    pub criterion: Option<FindCriterion>,
}

/// The criterion of `ExecuteSearch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FindCriterion {
    /// `MailBoxSearchCriterion`.
    Mailbox(MailboxSearch),
    /// `GalSearchCriterion`.
    Gal(GalSearch),
}

/// `MailBoxSearchCriterion`: `Query` and `Options`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MailboxSearch {
    /// `Query/FreeText`.
    pub free_text: Option<String>,
    /// `Query/airsync:Class` (`Email`).
    pub class: Option<String>,
    /// `Query/airsync:CollectionId`: the folder searched.
    pub collection_id: Option<String>,
    /// `Options/DeepTraversal` (also accepted in `Query`): search the
    /// folder's subfolders too.
    pub deep_traversal: bool,
    /// `Options/Range` (`"m-n"`, as sent).
    pub range: Option<String>,
}

/// `GalSearchCriterion`: `Query` (the text) and `Options/Range`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GalSearch {
    /// The query text (`Query`'s text, or its `FreeText`).
    pub query: Option<String>,
    /// `Options/Range`.
    pub range: Option<String>,
}

/// `Properties` of a mailbox `Result` (MS-ASCMD 2.2.3.139.1), in the
/// schema's order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FindProperties {
    /// email:`Subject`.
    pub subject: Option<String>,
    /// email:`DateReceived`.
    pub date_received: Option<String>,
    /// email:`DisplayTo`.
    pub display_to: Option<String>,
    /// `DisplayCc`.
    pub display_cc: Option<String>,
    /// `DisplayBcc`.
    pub display_bcc: Option<String>,
    /// email:`Importance` (0 low, 1 normal, 2 high).
    pub importance: Option<u8>,
    /// email:`Read`.
    pub read: Option<bool>,
    /// email2:`IsDraft`.
    pub is_draft: Option<bool>,
    /// `Preview` (at most 255 characters of the body).
    pub preview: Option<String>,
    /// `HasAttachments`.
    pub has_attachments: Option<bool>,
    /// email:`From`.
    pub from: Option<String>,
    /// Any other property (the GAL ones), in document order.
    pub extra: Vec<Owned>,
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
    pub properties: Option<FindProperties>,
}

/// `Response`: the answer of the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FindStoreResponse {
    /// itemoperations:`Store` (`Mailbox`).
    pub store: String,
    /// `Response/Status`.
    pub status: FindStatus,
    /// `Result`s.
    pub results: Vec<FindResult>,
    /// `Range` of the results returned.
    pub range: Option<String>,
    /// `Total`: how many entries matched.
    pub total: Option<u32>,
}

/// Find response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FindResponse {
    /// Global `Status`.
    pub status: FindStatus,
    /// `Response`.
    pub response: Option<FindStoreResponse>,
}

/// The first element `tag` at or under `el` (depth first).
fn descendant<'e, 'a>(el: &'e Element<'a>, tag: Tag) -> Option<&'e Element<'a>> {
    if el.tag == tag {
        return Some(el);
    }
    el.elements().find_map(|c| descendant(c, tag))
}

fn descendant_text(el: Option<&Element<'_>>, tag: Tag) -> Result<Option<String>, CommandError> {
    el.and_then(|e| descendant(e, tag))
        .map(tree::content)
        .transpose()
}

impl MailboxSearch {
    fn from_element(el: &Element<'_>) -> Result<Self, CommandError> {
        let query = el.child(fd::QUERY);
        let options = el.child(fd::OPTIONS);
        Ok(MailboxSearch {
            free_text: descendant_text(query, fd::FREE_TEXT)?,
            class: descendant_text(query, s::CLASS)?,
            collection_id: descendant_text(query, s::COLLECTION_ID)?,
            deep_traversal: [query, options]
                .into_iter()
                .flatten()
                .any(|e| e.child(fd::DEEP_TRAVERSAL).is_some()),
            range: options
                .map(|o| tree::opt_text(o, fd::RANGE))
                .transpose()?
                .flatten(),
        })
    }

    fn to_element(&self) -> Element<'_> {
        let mut query = Element::new(fd::QUERY);
        tree::push_str(&mut query, s::CLASS, self.class.as_deref());
        tree::push_str(&mut query, s::COLLECTION_ID, self.collection_id.as_deref());
        tree::push_str(&mut query, fd::FREE_TEXT, self.free_text.as_deref());
        let mut el = Element::new(fd::MAIL_BOX_SEARCH_CRITERION).with(query);
        if self.range.is_some() || self.deep_traversal {
            let mut options = Element::new(fd::OPTIONS);
            tree::push_str(&mut options, fd::RANGE, self.range.as_deref());
            tree::push_flag(&mut options, fd::DEEP_TRAVERSAL, self.deep_traversal);
            el.push(options);
        }
        el
    }
}

impl GalSearch {
    fn from_element(el: &Element<'_>) -> Result<Self, CommandError> {
        let query = match el.child(fd::QUERY) {
            Some(q) => match q.child(fd::FREE_TEXT) {
                Some(t) => Some(tree::content(t)?),
                None => Some(tree::content(q)?),
            },
            None => None,
        };
        let range = el
            .child(fd::OPTIONS)
            .map(|o| tree::opt_text(o, fd::RANGE))
            .transpose()?
            .flatten();
        Ok(GalSearch { query, range })
    }

    fn to_element(&self) -> Element<'_> {
        let mut el = Element::new(fd::GAL_SEARCH_CRITERION);
        tree::push_str(&mut el, fd::QUERY, self.query.as_deref());
        if let Some(r) = self.range.as_deref() {
            el.push(Element::new(fd::OPTIONS).with(tree::str_el(fd::RANGE, r)));
        }
        el
    }
}

impl FindProperties {
    fn from_element(el: &Element<'_>) -> Result<Self, CommandError> {
        let mut p = FindProperties::default();
        for c in el.elements() {
            let t = c.tag;
            if t == em::SUBJECT {
                p.subject = Some(tree::content(c)?);
            } else if t == em::DATE_RECEIVED {
                p.date_received = Some(tree::content(c)?);
            } else if t == em::DISPLAY_TO {
                p.display_to = Some(tree::content(c)?);
            } else if t == fd::DISPLAY_CC {
                p.display_cc = Some(tree::content(c)?);
            } else if t == fd::DISPLAY_BCC {
                p.display_bcc = Some(tree::content(c)?);
            } else if t == em::IMPORTANCE {
                p.importance = Some(tree::parse(t, &tree::content(c)?)?);
            } else if t == em::READ {
                p.read = Some(tree::bool_of(c)?);
            } else if t == em2::IS_DRAFT {
                p.is_draft = Some(tree::bool_of(c)?);
            } else if t == fd::PREVIEW {
                p.preview = Some(tree::content(c)?);
            } else if t == fd::HAS_ATTACHMENTS {
                p.has_attachments = Some(tree::bool_of(c)?);
            } else if t == em::FROM {
                p.from = Some(tree::content(c)?);
            } else {
                p.extra.push(tree::owned(c));
            }
        }
        Ok(p)
    }

    fn to_element(&self) -> Element<'_> {
        let mut el = Element::new(fd::PROPERTIES);
        tree::push_str(&mut el, em::SUBJECT, self.subject.as_deref());
        tree::push_str(&mut el, em::DATE_RECEIVED, self.date_received.as_deref());
        tree::push_str(&mut el, em::DISPLAY_TO, self.display_to.as_deref());
        tree::push_str(&mut el, fd::DISPLAY_CC, self.display_cc.as_deref());
        tree::push_str(&mut el, fd::DISPLAY_BCC, self.display_bcc.as_deref());
        tree::push_opt(&mut el, em::IMPORTANCE, self.importance);
        tree::push_bool(&mut el, em::READ, self.read);
        tree::push_bool(&mut el, em2::IS_DRAFT, self.is_draft);
        tree::push_str(&mut el, fd::PREVIEW, self.preview.as_deref());
        tree::push_bool(&mut el, fd::HAS_ATTACHMENTS, self.has_attachments);
        tree::push_str(&mut el, em::FROM, self.from.as_deref());
        for x in &self.extra {
            el.push(x.clone());
        }
        el
    }
}

impl FindRequest {
    /// Reads a `Find` request (16.1 only).
    pub fn from_element(el: &Element<'_>, v: ProtocolVersion) -> Result<Self, CommandError> {
        require_version(Command::Find, v, ProtocolVersion::V16_1)?;
        tree::expect_tag(el, fd::FIND)?;
        let criterion = match el.child(fd::EXECUTE_SEARCH) {
            None => None,
            Some(x) => {
                if let Some(m) = x.child(fd::MAIL_BOX_SEARCH_CRITERION) {
                    Some(FindCriterion::Mailbox(MailboxSearch::from_element(m)?))
                } else if let Some(g) = x.child(fd::GAL_SEARCH_CRITERION) {
                    Some(FindCriterion::Gal(GalSearch::from_element(g)?))
                } else {
                    None
                }
            }
        };
        Ok(FindRequest {
            search_id: tree::req_text(el, fd::SEARCH_ID)?,
            criterion,
        })
    }

    /// Builds the `Find` request element.
    pub fn to_element(&self, _v: ProtocolVersion) -> Element<'_> {
        let mut el = Element::new(fd::FIND);
        el.push(tree::str_el(fd::SEARCH_ID, &self.search_id));
        if let Some(c) = &self.criterion {
            el.push(Element::new(fd::EXECUTE_SEARCH).with(match c {
                FindCriterion::Mailbox(m) => m.to_element(),
                FindCriterion::Gal(g) => g.to_element(),
            }));
        }
        el
    }
}

impl FindResponse {
    /// A response with only the global `Status` (the request was not run).
    pub fn status_only(status: FindStatus) -> Self {
        FindResponse {
            status,
            response: None,
        }
    }

    /// Reads a `Find` response.
    pub fn from_element(el: &Element<'_>, v: ProtocolVersion) -> Result<Self, CommandError> {
        require_version(Command::Find, v, ProtocolVersion::V16_1)?;
        tree::expect_tag(el, fd::FIND)?;
        let status = FindStatus::from_code(tree::req_num(el, fd::STATUS)?);
        let response = match el.child(fd::RESPONSE) {
            None => None,
            Some(r) => {
                let mut results = Vec::new();
                for x in r.children_with(fd::RESULT) {
                    results.push(FindResult {
                        class: tree::opt_text(x, s::CLASS)?,
                        server_id: tree::opt_text(x, s::SERVER_ID)?,
                        collection_id: tree::opt_text(x, s::COLLECTION_ID)?,
                        properties: x
                            .child(fd::PROPERTIES)
                            .map(FindProperties::from_element)
                            .transpose()?,
                    });
                }
                Some(FindStoreResponse {
                    store: tree::opt_text(r, itemoperations::STORE)?.unwrap_or_default(),
                    status: FindStatus::from_code(tree::req_num(r, fd::STATUS)?),
                    results,
                    range: tree::opt_text(r, fd::RANGE)?,
                    total: tree::opt_num(r, fd::TOTAL)?,
                })
            }
        };
        Ok(FindResponse { status, response })
    }

    /// Builds the `Find` response element.
    pub fn to_element(&self, _v: ProtocolVersion) -> Element<'_> {
        let mut el = Element::new(fd::FIND);
        el.push(tree::text_el(fd::STATUS, self.status.code()));
        if let Some(r) = &self.response {
            let mut re = Element::new(fd::RESPONSE);
            re.push(tree::str_el(itemoperations::STORE, &r.store));
            re.push(tree::text_el(fd::STATUS, r.status.code()));
            for x in &r.results {
                let mut xe = Element::new(fd::RESULT);
                tree::push_str(&mut xe, s::CLASS, x.class.as_deref());
                tree::push_str(&mut xe, s::SERVER_ID, x.server_id.as_deref());
                tree::push_str(&mut xe, s::COLLECTION_ID, x.collection_id.as_deref());
                if let Some(p) = &x.properties {
                    xe.push(p.to_element());
                }
                re.push(xe);
            }
            tree::push_str(&mut re, fd::RANGE, r.range.as_deref());
            tree::push_opt(&mut re, fd::TOTAL, r.total);
            el.push(re);
        }
        el
    }
}

eas_document!(FindRequest, fd::FIND);
eas_document!(FindResponse, fd::FIND);

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test code: a panic is a test failure")]
mod tests {
    use super::*;

    fn request(criterion: Element<'static>) -> Element<'static> {
        Element::new(fd::FIND)
            .with(Element::with_text(fd::SEARCH_ID, "id"))
            .with(Element::new(fd::EXECUTE_SEARCH).with(criterion))
    }

    // [MS-ASCMD] 2.2.3.142.1 / 2.2.3.125.1: Query holds FreeText, Class and
    // CollectionId; Options holds Range and DeepTraversal.
    #[test]
    fn mailbox_criterion_is_read_from_query_and_options() {
        let el = request(
            Element::new(fd::MAIL_BOX_SEARCH_CRITERION)
                .with(
                    Element::new(fd::QUERY)
                        .with(Element::with_text(s::CLASS, "Email"))
                        .with(Element::with_text(s::COLLECTION_ID, "5"))
                        .with(Element::with_text(fd::FREE_TEXT, "lunch")),
                )
                .with(
                    Element::new(fd::OPTIONS)
                        .with(Element::with_text(fd::RANGE, "0-9"))
                        .with(Element::new(fd::DEEP_TRAVERSAL)),
                ),
        );
        let req = FindRequest::from_element(&el, ProtocolVersion::V16_1).unwrap();
        assert_eq!(
            req.criterion,
            Some(FindCriterion::Mailbox(MailboxSearch {
                free_text: Some("lunch".into()),
                class: Some("Email".into()),
                collection_id: Some("5".into()),
                deep_traversal: true,
                range: Some("0-9".into()),
            }))
        );
        let back = FindRequest::from_element(
            &req.to_element(ProtocolVersion::V16_1),
            ProtocolVersion::V16_1,
        )
        .unwrap();
        assert_eq!(back, req);
    }

    #[test]
    fn no_criterion_decodes_as_none_and_old_versions_are_refused() {
        let el = Element::new(fd::FIND)
            .with(Element::with_text(fd::SEARCH_ID, "id"))
            .with(Element::new(fd::EXECUTE_SEARCH));
        let req = FindRequest::from_element(&el, ProtocolVersion::V16_1).unwrap();
        assert_eq!(req.criterion, None);
        assert!(matches!(
            FindRequest::from_element(&el, ProtocolVersion::V14_1),
            Err(CommandError::CommandNotInVersion { .. })
        ));
    }
}
