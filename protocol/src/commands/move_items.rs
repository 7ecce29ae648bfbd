//! MoveItems (MS-ASCMD 2.2.1.12): move items between folders.
//!
//! Exists to type the request and response; moving is the backends' job.

use super::tree;
use super::{eas_document, CollectionId, CommandError, ServerId};
use crate::status::MoveItemsStatus;
use crate::version::ProtocolVersion;
use crate::wbxml::tags::moveitems as mv;
use crate::wbxml::Element;

/// One `Move`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Move {
    /// `SrcMsgId`.
    pub src_msg_id: ServerId,
    /// `SrcFldId`.
    pub src_fld_id: CollectionId,
    /// `DstFldId`.
    pub dst_fld_id: CollectionId,
}

/// MoveItems request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MoveItemsRequest {
    /// The moves.
    pub moves: Vec<Move>,
}

/// One `Response`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MoveResult {
    /// `SrcMsgId`.
    pub src_msg_id: ServerId,
    /// `Status`.
    pub status: MoveItemsStatus,
    /// `DstMsgId` (on success).
    pub dst_msg_id: Option<ServerId>,
}

/// MoveItems response.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MoveItemsResponse {
    /// One per move.
    pub responses: Vec<MoveResult>,
}

impl MoveItemsRequest {
    /// Reads a `MoveItems` request.
    pub fn from_element(el: &Element<'_>, _v: ProtocolVersion) -> Result<Self, CommandError> {
        tree::expect_tag(el, mv::MOVE_ITEMS)?;
        let moves = el
            .children_with(mv::MOVE)
            .map(|m| {
                Ok(Move {
                    src_msg_id: ServerId(tree::req_text(m, mv::SRC_MSG_ID)?),
                    src_fld_id: CollectionId(tree::req_text(m, mv::SRC_FLD_ID)?),
                    dst_fld_id: CollectionId(tree::req_text(m, mv::DST_FLD_ID)?),
                })
            })
            .collect::<Result<_, CommandError>>()?;
        Ok(MoveItemsRequest { moves })
    }

    /// Builds the `MoveItems` request element.
    pub fn to_element(&self, _v: ProtocolVersion) -> Element<'_> {
        let mut el = Element::new(mv::MOVE_ITEMS);
        for m in &self.moves {
            el.push(
                Element::new(mv::MOVE)
                    .with(tree::text_el(mv::SRC_MSG_ID, &m.src_msg_id))
                    .with(tree::text_el(mv::SRC_FLD_ID, &m.src_fld_id))
                    .with(tree::text_el(mv::DST_FLD_ID, &m.dst_fld_id)),
            );
        }
        el
    }
}

impl MoveItemsResponse {
    /// Reads a `MoveItems` response.
    pub fn from_element(el: &Element<'_>, _v: ProtocolVersion) -> Result<Self, CommandError> {
        tree::expect_tag(el, mv::MOVE_ITEMS)?;
        let responses = el
            .children_with(mv::RESPONSE)
            .map(|r| {
                Ok(MoveResult {
                    src_msg_id: ServerId(tree::req_text(r, mv::SRC_MSG_ID)?),
                    status: MoveItemsStatus::from_code(tree::req_num(r, mv::STATUS)?),
                    dst_msg_id: tree::opt_text(r, mv::DST_MSG_ID)?.map(ServerId),
                })
            })
            .collect::<Result<_, CommandError>>()?;
        Ok(MoveItemsResponse { responses })
    }

    /// Builds the `MoveItems` response element.
    pub fn to_element(&self, _v: ProtocolVersion) -> Element<'_> {
        let mut el = Element::new(mv::MOVE_ITEMS);
        for r in &self.responses {
            let mut re = Element::new(mv::RESPONSE);
            re.push(tree::text_el(mv::SRC_MSG_ID, &r.src_msg_id));
            re.push(tree::text_el(mv::STATUS, r.status.code()));
            tree::push_opt(&mut re, mv::DST_MSG_ID, r.dst_msg_id.as_ref());
            el.push(re);
        }
        el
    }
}

eas_document!(MoveItemsRequest, mv::MOVE_ITEMS);
eas_document!(MoveItemsResponse, mv::MOVE_ITEMS);
