//! GetItemEstimate (MS-ASCMD 2.2.1.9): how many items a Sync would bring.
//!
//! Exists to type the request and response; counting is the engine's job.
//! Before 12.1 each collection carries `Class`, `FilterType` and `SyncKey`
//! directly; from 12.1 `SyncKey` and `Options` (AirSync page) are used.

use super::sync::SyncOptions;
use super::tree;
use super::{eas_document, CollectionId, CommandError, SyncKey};
use crate::status::GetItemEstimateStatus;
use crate::version::ProtocolVersion;
use crate::wbxml::tags::{airsync as s, getitemestimate as gie};
use crate::wbxml::Element;

/// A collection to estimate.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EstimateCollection {
    /// `Class` (before 12.1).
    pub class: Option<String>,
    /// `CollectionId`.
    pub collection_id: CollectionId,
    /// `FilterType` (before 12.1).
    pub filter_type: Option<u8>,
    /// airsync:`SyncKey`.
    pub sync_key: SyncKey,
    /// airsync:`ConversationMode` (14.0+).
    pub conversation_mode: Option<bool>,
    /// airsync:`Options` (12.1+).
    pub options: Vec<SyncOptions>,
}

/// GetItemEstimate request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GetItemEstimateRequest {
    /// `Collections/Collection`.
    pub collections: Vec<EstimateCollection>,
}

/// One `Response` of the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EstimateResponse {
    /// `Status`.
    pub status: GetItemEstimateStatus,
    /// `Collection/Class` (before 12.1).
    pub class: Option<String>,
    /// `Collection/CollectionId`.
    pub collection_id: Option<CollectionId>,
    /// `Collection/Estimate`.
    pub estimate: Option<u32>,
}

/// GetItemEstimate response.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GetItemEstimateResponse {
    /// `Response` elements, one per collection.
    pub responses: Vec<EstimateResponse>,
}

impl GetItemEstimateRequest {
    /// Reads a `GetItemEstimate` request.
    pub fn from_element(el: &Element<'_>, v: ProtocolVersion) -> Result<Self, CommandError> {
        tree::expect_tag(el, gie::GET_ITEM_ESTIMATE)?;
        let cs = el
            .child(gie::COLLECTIONS)
            .ok_or(CommandError::Missing(gie::COLLECTIONS))?;
        let collections = cs
            .children_with(gie::COLLECTION)
            .map(|c| {
                Ok(EstimateCollection {
                    class: tree::opt_text(c, gie::CLASS)?,
                    collection_id: CollectionId(tree::req_text(c, gie::COLLECTION_ID)?),
                    filter_type: tree::opt_num(c, s::FILTER_TYPE)?,
                    sync_key: SyncKey(tree::req_text(c, s::SYNC_KEY)?),
                    conversation_mode: tree::opt_bool(c, s::CONVERSATION_MODE)?,
                    options: c
                        .children_with(s::OPTIONS)
                        .map(|o| SyncOptions::from_element(o, v))
                        .collect::<Result<_, _>>()?,
                })
            })
            .collect::<Result<_, CommandError>>()?;
        Ok(GetItemEstimateRequest { collections })
    }

    /// Builds the `GetItemEstimate` request element.
    pub fn to_element(&self, v: ProtocolVersion) -> Element<'_> {
        let mut cs = Element::new(gie::COLLECTIONS);
        for c in &self.collections {
            let mut ce = Element::new(gie::COLLECTION);
            if v < ProtocolVersion::V12_1 {
                tree::push_opt(&mut ce, gie::CLASS, c.class.as_deref());
                ce.push(tree::text_el(gie::COLLECTION_ID, &c.collection_id));
                tree::push_opt(&mut ce, s::FILTER_TYPE, c.filter_type);
                ce.push(tree::text_el(s::SYNC_KEY, &c.sync_key));
            } else {
                ce.push(tree::text_el(s::SYNC_KEY, &c.sync_key));
                ce.push(tree::text_el(gie::COLLECTION_ID, &c.collection_id));
                if v >= ProtocolVersion::V14_0 {
                    tree::push_bool(&mut ce, s::CONVERSATION_MODE, c.conversation_mode);
                }
                for o in &c.options {
                    ce.push(o.to_element(v));
                }
            }
            cs.push(ce);
        }
        Element::new(gie::GET_ITEM_ESTIMATE).with(cs)
    }
}

impl GetItemEstimateResponse {
    /// Reads a `GetItemEstimate` response.
    pub fn from_element(el: &Element<'_>, _v: ProtocolVersion) -> Result<Self, CommandError> {
        tree::expect_tag(el, gie::GET_ITEM_ESTIMATE)?;
        let responses = el
            .children_with(gie::RESPONSE)
            .map(|r| {
                let c = r.child(gie::COLLECTION);
                Ok(EstimateResponse {
                    status: GetItemEstimateStatus::from_code(tree::req_num(r, gie::STATUS)?),
                    class: c
                        .map(|c| tree::opt_text(c, gie::CLASS))
                        .transpose()?
                        .flatten(),
                    collection_id: c
                        .map(|c| tree::opt_text(c, gie::COLLECTION_ID))
                        .transpose()?
                        .flatten()
                        .map(CollectionId),
                    estimate: c
                        .map(|c| tree::opt_num(c, gie::ESTIMATE))
                        .transpose()?
                        .flatten(),
                })
            })
            .collect::<Result<_, CommandError>>()?;
        Ok(GetItemEstimateResponse { responses })
    }

    /// Builds the `GetItemEstimate` response element.
    pub fn to_element(&self, v: ProtocolVersion) -> Element<'_> {
        let mut el = Element::new(gie::GET_ITEM_ESTIMATE);
        for r in &self.responses {
            let mut re = Element::new(gie::RESPONSE);
            re.push(tree::text_el(gie::STATUS, r.status.code()));
            if r.collection_id.is_some() || r.estimate.is_some() || r.class.is_some() {
                let mut c = Element::new(gie::COLLECTION);
                if v < ProtocolVersion::V12_1 {
                    tree::push_opt(&mut c, gie::CLASS, r.class.as_deref());
                }
                tree::push_opt(&mut c, gie::COLLECTION_ID, r.collection_id.as_ref());
                tree::push_opt(&mut c, gie::ESTIMATE, r.estimate);
                re.push(c);
            }
            el.push(re);
        }
        el
    }
}

eas_document!(GetItemEstimateRequest, gie::GET_ITEM_ESTIMATE);
eas_document!(GetItemEstimateResponse, gie::GET_ITEM_ESTIMATE);
