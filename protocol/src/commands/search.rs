//! Search (MS-ASCMD 2.2.1.16): GAL, Mailbox and DocumentLibrary searches.
//!
//! Exists to type the request and response; searching is the backends' job.
//! The `Query` tree (And/Or/FreeText/EqualTo/…) is kept as its element;
//! result properties are an [`ApplicationData`] (GAL properties stay a
//! generic list). `Password` never prints.

use super::airsyncbase::BodyPreference;
use super::items::ApplicationData;
use super::tree::{self, Owned};
use super::{eas_document, CommandError};
use crate::headers::Password;
use crate::status::SearchStatus;
use crate::version::ProtocolVersion;
use crate::wbxml::tags::{airsync as s, airsyncbase as asb, search as se};
use crate::wbxml::Element;

/// Search `Options`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SearchOptions {
    /// `Range` (`0-99`).
    pub range: Option<String>,
    /// `UserName`.
    pub user_name: Option<String>,
    /// `Password` (never printed).
    pub password: Option<Password>,
    /// `DeepTraversal`.
    pub deep_traversal: bool,
    /// `RebuildResults`.
    pub rebuild_results: bool,
    /// airsyncbase `BodyPreference`.
    pub body_preferences: Vec<BodyPreference>,
    /// Other options (Schema, Picture, MIMESupport, RightsManagementSupport…).
    pub extra: Vec<Owned>,
}

/// Search request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SearchRequest {
    /// `Store/Name` (`GAL`, `Mailbox`, `DocumentLibrary`).
    pub name: String,
    /// `Store/Query`, kept as its element.
    pub query: Option<Owned>,
    /// `Store/Options`.
    pub options: Option<SearchOptions>,
}

/// One `Result`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SearchResult {
    /// airsync:`Class`.
    pub class: Option<String>,
    /// `LongId`.
    pub long_id: Option<String>,
    /// airsync:`CollectionId`.
    pub collection_id: Option<String>,
    /// `Properties`.
    pub properties: Option<ApplicationData>,
}

/// Search response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchResponse {
    /// Global `Status`.
    pub status: SearchStatus,
    /// `Response/Store/Status`.
    pub store_status: Option<SearchStatus>,
    /// `Result`s (an empty `<Result/>` means no match and is not listed).
    pub results: Vec<SearchResult>,
    /// `Range`.
    pub range: Option<String>,
    /// `Total`.
    pub total: Option<u32>,
}

impl SearchRequest {
    /// Reads a `Search` request.
    pub fn from_element(el: &Element<'_>, _v: ProtocolVersion) -> Result<Self, CommandError> {
        tree::expect_tag(el, se::SEARCH)?;
        let store = el
            .child(se::STORE)
            .ok_or(CommandError::Missing(se::STORE))?;
        let options = match store.child(se::OPTIONS) {
            None => None,
            Some(o) => {
                let mut opts = SearchOptions::default();
                for c in o.elements() {
                    match c.tag {
                        se::RANGE => opts.range = Some(tree::content(c)?),
                        se::USER_NAME => opts.user_name = Some(tree::content(c)?),
                        se::PASSWORD => opts.password = Some(Password::new(tree::content(c)?)),
                        se::DEEP_TRAVERSAL => opts.deep_traversal = true,
                        se::REBUILD_RESULTS => opts.rebuild_results = true,
                        asb::BODY_PREFERENCE => {
                            opts.body_preferences.push(BodyPreference::from_element(c)?)
                        }
                        _ => opts.extra.push(tree::owned(c)),
                    }
                }
                Some(opts)
            }
        };
        Ok(SearchRequest {
            name: tree::req_text(store, se::NAME)?,
            query: store.child(se::QUERY).map(tree::owned),
            options,
        })
    }

    /// Builds the `Search` request element.
    pub fn to_element(&self, _v: ProtocolVersion) -> Element<'_> {
        let mut store = Element::new(se::STORE);
        store.push(tree::text_el(se::NAME, &self.name));
        if let Some(q) = &self.query {
            store.push(q.clone());
        }
        if let Some(o) = &self.options {
            let mut oe = Element::new(se::OPTIONS);
            tree::push_opt(&mut oe, se::RANGE, o.range.as_deref());
            tree::push_opt(&mut oe, se::USER_NAME, o.user_name.as_deref());
            tree::push_opt(
                &mut oe,
                se::PASSWORD,
                o.password.as_ref().map(Password::expose),
            );
            tree::push_flag(&mut oe, se::DEEP_TRAVERSAL, o.deep_traversal);
            tree::push_flag(&mut oe, se::REBUILD_RESULTS, o.rebuild_results);
            for p in &o.body_preferences {
                oe.push(p.to_element(asb::BODY_PREFERENCE));
            }
            for x in &o.extra {
                oe.push(x.clone());
            }
            store.push(oe);
        }
        Element::new(se::SEARCH).with(store)
    }
}

impl SearchResponse {
    /// Reads a `Search` response.
    pub fn from_element(el: &Element<'_>, v: ProtocolVersion) -> Result<Self, CommandError> {
        tree::expect_tag(el, se::SEARCH)?;
        let store = el.child(se::RESPONSE).and_then(|r| r.child(se::STORE));
        let mut res = SearchResponse {
            status: SearchStatus::from_code(tree::req_num(el, se::STATUS)?),
            store_status: None,
            results: Vec::new(),
            range: None,
            total: None,
        };
        if let Some(store) = store {
            res.store_status =
                tree::opt_num::<u16>(store, se::STATUS)?.map(SearchStatus::from_code);
            res.range = tree::opt_text(store, se::RANGE)?;
            res.total = tree::opt_num(store, se::TOTAL)?;
            for r in store.children_with(se::RESULT) {
                if r.is_empty() {
                    continue;
                }
                res.results.push(SearchResult {
                    class: tree::opt_text(r, s::CLASS)?,
                    long_id: tree::opt_text(r, se::LONG_ID)?,
                    collection_id: tree::opt_text(r, s::COLLECTION_ID)?,
                    properties: r
                        .child(se::PROPERTIES)
                        .map(|p| ApplicationData::from_properties(p, v))
                        .transpose()?,
                });
            }
        }
        Ok(res)
    }

    /// Builds the `Search` response element.
    pub fn to_element(&self, v: ProtocolVersion) -> Element<'_> {
        let mut el = Element::new(se::SEARCH);
        el.push(tree::text_el(se::STATUS, self.status.code()));
        if let Some(st) = self.store_status {
            let mut store = Element::new(se::STORE);
            store.push(tree::text_el(se::STATUS, st.code()));
            if self.results.is_empty() {
                store.push(Element::new(se::RESULT));
            }
            for r in &self.results {
                let mut re = Element::new(se::RESULT);
                tree::push_opt(&mut re, s::CLASS, r.class.as_deref());
                tree::push_opt(&mut re, se::LONG_ID, r.long_id.as_deref());
                tree::push_opt(&mut re, s::COLLECTION_ID, r.collection_id.as_deref());
                if let Some(p) = &r.properties {
                    re.push(p.to_element_as(se::PROPERTIES, v));
                }
                store.push(re);
            }
            tree::push_opt(&mut store, se::RANGE, self.range.as_deref());
            tree::push_opt(&mut store, se::TOTAL, self.total);
            el.push(Element::new(se::RESPONSE).with(store));
        }
        el
    }
}

eas_document!(SearchRequest, se::SEARCH);
eas_document!(SearchResponse, se::SEARCH);
