//! The ComposeMail types shared by SendMail, SmartReply and SmartForward
//! (MS-ASCMD 2.2.1.17, .19, .20): the 14.0+ WBXML body and the pre-14.0
//! MIME body with query parameters.
//!
//! Exists so the three commands share one model. It must not parse or
//! rewrite the MIME message: it carries the bytes.

use super::tree;
use super::{require_version, Command, CommandError};
use crate::query::RequestLine;
use crate::status::ComposeMailStatus;
use crate::version::ProtocolVersion;
use crate::wbxml::tags::composemail as cm;
use crate::wbxml::{Element, Tag};

/// `Source` of SmartReply/SmartForward: the original message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Source {
    /// `FolderId`.
    pub folder_id: Option<String>,
    /// `ItemId`.
    pub item_id: Option<String>,
    /// `LongId` (from Search).
    pub long_id: Option<String>,
    /// `InstanceId` (a recurring meeting's occurrence).
    pub instance_id: Option<String>,
}

/// `Forwardee` (16.0+ SmartForward of a meeting).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Forwardee {
    /// `ForwardeeName`.
    pub name: Option<String>,
    /// `ForwardeeEmail`.
    pub email: String,
}

/// A SendMail, SmartReply or SmartForward request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ComposeRequest {
    /// `ClientId` (dedupes retries).
    pub client_id: Option<String>,
    /// `Source` (SmartReply/SmartForward).
    pub source: Option<Source>,
    /// `AccountId` (14.1+).
    pub account_id: Option<String>,
    /// `SaveInSentItems`.
    pub save_in_sent_items: bool,
    /// `ReplaceMime` (SmartReply/SmartForward).
    pub replace_mime: bool,
    /// `Mime`: the RFC 822 message.
    pub mime: Vec<u8>,
    /// `Forwardees` (16.0+, SmartForward).
    pub forwardees: Vec<Forwardee>,
}

impl ComposeRequest {
    pub(crate) fn from_element_for(
        el: &Element<'_>,
        v: ProtocolVersion,
        command: Command,
        root: Tag,
    ) -> Result<Self, CommandError> {
        require_version(command, v, ProtocolVersion::V14_0)?;
        tree::expect_tag(el, root)?;
        let source = match el.child(cm::SOURCE) {
            None => None,
            Some(s) => Some(Source {
                folder_id: tree::opt_text(s, cm::FOLDER_ID)?,
                item_id: tree::opt_text(s, cm::ITEM_ID)?,
                long_id: tree::opt_text(s, cm::LONG_ID)?,
                instance_id: tree::opt_text(s, cm::INSTANCE_ID)?,
            }),
        };
        let forwardees = match el.child(cm::FORWARDEES) {
            None => Vec::new(),
            Some(f) => f
                .children_with(cm::FORWARDEE)
                .map(|f| {
                    Ok(Forwardee {
                        name: tree::opt_text(f, cm::FORWARDEE_NAME)?,
                        email: tree::req_text(f, cm::FORWARDEE_EMAIL)?,
                    })
                })
                .collect::<Result<_, CommandError>>()?,
        };
        Ok(ComposeRequest {
            client_id: tree::opt_text(el, cm::CLIENT_ID)?,
            source,
            account_id: tree::opt_text(el, cm::ACCOUNT_ID)?,
            save_in_sent_items: tree::has(el, cm::SAVE_IN_SENT_ITEMS),
            replace_mime: tree::has(el, cm::REPLACE_MIME),
            mime: tree::bytes(el.child(cm::MIME).ok_or(CommandError::Missing(cm::MIME))?),
            forwardees,
        })
    }

    pub(crate) fn to_element_for(&self, v: ProtocolVersion, root: Tag) -> Element<'_> {
        let mut el = Element::new(root);
        tree::push_opt(&mut el, cm::CLIENT_ID, self.client_id.as_deref());
        if let Some(s) = &self.source {
            let mut se = Element::new(cm::SOURCE);
            tree::push_opt(&mut se, cm::FOLDER_ID, s.folder_id.as_deref());
            tree::push_opt(&mut se, cm::ITEM_ID, s.item_id.as_deref());
            tree::push_opt(&mut se, cm::LONG_ID, s.long_id.as_deref());
            tree::push_opt(&mut se, cm::INSTANCE_ID, s.instance_id.as_deref());
            el.push(se);
        }
        if v >= ProtocolVersion::V14_1 {
            tree::push_opt(&mut el, cm::ACCOUNT_ID, self.account_id.as_deref());
        }
        tree::push_flag(&mut el, cm::SAVE_IN_SENT_ITEMS, self.save_in_sent_items);
        tree::push_flag(&mut el, cm::REPLACE_MIME, self.replace_mime);
        el.push(Element::with_opaque(cm::MIME, self.mime.clone()));
        if v >= ProtocolVersion::V16_0 && !self.forwardees.is_empty() {
            let mut fs = Element::new(cm::FORWARDEES);
            for f in &self.forwardees {
                let mut fe = Element::new(cm::FORWARDEE);
                tree::push_opt(&mut fe, cm::FORWARDEE_NAME, f.name.as_deref());
                fe.push(tree::text_el(cm::FORWARDEE_EMAIL, &f.email));
                fs.push(fe);
            }
            el.push(fs);
        }
        el
    }

    /// The pre-14.0 form: the body is the MIME message and the rest comes
    /// from the query (`SaveInSent`, `ItemId`, `CollectionId`, `LongId`,
    /// `Occurrence`). SmartReply/SmartForward need `ItemId` or `LongId`.
    pub fn from_mime(
        line: &RequestLine,
        mime: &[u8],
        needs_source: bool,
    ) -> Result<Self, CommandError> {
        let p = &line.params;
        let source = if p.item_id.is_some() || p.long_id.is_some() {
            Some(Source {
                folder_id: p.collection_id.clone(),
                item_id: p.item_id.clone(),
                long_id: p.long_id.clone(),
                instance_id: p.occurrence.clone(),
            })
        } else if needs_source {
            return Err(CommandError::MissingQueryParameter("ItemId"));
        } else {
            None
        };
        Ok(ComposeRequest {
            client_id: None,
            source,
            account_id: None,
            save_in_sent_items: p.save_in_sent,
            replace_mime: false,
            mime: mime.to_vec(),
            forwardees: Vec::new(),
        })
    }
}

/// The response of SendMail/SmartReply/SmartForward: empty on success,
/// a `Status` otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComposeResponse {
    /// `Status`.
    pub status: ComposeMailStatus,
}

impl ComposeResponse {
    pub(crate) fn from_element_for(el: &Element<'_>, root: Tag) -> Result<Self, CommandError> {
        tree::expect_tag(el, root)?;
        Ok(ComposeResponse {
            status: ComposeMailStatus::from_code(tree::req_num(el, cm::STATUS)?),
        })
    }

    pub(crate) fn to_element_for(&self, root: Tag) -> Element<'_> {
        Element::new(root).with(tree::text_el(cm::STATUS, self.status.code()))
    }
}

/// Defines a compose command's request/response newtypes.
macro_rules! compose_command {
    ($doc:literal, $req:ident, $res:ident, $command:expr, $root:expr) => {
        #[doc = concat!($doc, " request (14.0+ WBXML form; see [`ComposeRequest::from_mime`] before 14.0).")]
        #[derive(Debug, Clone, PartialEq, Eq, Default)]
        pub struct $req(pub $crate::commands::compose::ComposeRequest);

        #[doc = concat!($doc, " response (only sent on failure).")]
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct $res(pub $crate::commands::compose::ComposeResponse);

        impl $req {
            /// Reads the request.
            pub fn from_element(
                el: &$crate::wbxml::Element<'_>,
                v: $crate::version::ProtocolVersion,
            ) -> Result<Self, $crate::commands::CommandError> {
                $crate::commands::compose::ComposeRequest::from_element_for(el, v, $command, $root)
                    .map($req)
            }

            /// Builds the request element.
            pub fn to_element(
                &self,
                v: $crate::version::ProtocolVersion,
            ) -> $crate::wbxml::Element<'_> {
                self.0.to_element_for(v, $root)
            }
        }

        impl $res {
            /// Reads the response.
            pub fn from_element(
                el: &$crate::wbxml::Element<'_>,
                _v: $crate::version::ProtocolVersion,
            ) -> Result<Self, $crate::commands::CommandError> {
                $crate::commands::compose::ComposeResponse::from_element_for(el, $root).map($res)
            }

            /// Builds the response element.
            pub fn to_element(
                &self,
                _v: $crate::version::ProtocolVersion,
            ) -> $crate::wbxml::Element<'_> {
                self.0.to_element_for($root)
            }
        }

        $crate::commands::eas_document!($req, $root);
        $crate::commands::eas_document!($res, $root);
    };
}
pub(crate) use compose_command;
