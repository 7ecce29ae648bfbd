//! AirSyncBase types shared by Sync, ItemOperations, Search and Find
//! (MS-ASAIRS): body preferences, bodies, attachments.
//!
//! Exists so every command reads and writes bodies the same way. It must not
//! fetch or convert content; it only carries what the wire carries.

use super::tree;
use super::CommandError;
use crate::wbxml::tags::airsyncbase as asb;
use crate::wbxml::Element;

/// `BodyPreference` (MS-ASAIRS 2.2.2.7), 12.0+.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BodyPreference {
    /// `Type`: 1 plain text, 2 HTML, 3 RTF, 4 MIME.
    pub body_type: u8,
    /// `TruncationSize` in bytes.
    pub truncation_size: Option<u32>,
    /// `AllOrNone`.
    pub all_or_none: Option<bool>,
    /// `Preview` length in characters (14.0+).
    pub preview: Option<u32>,
}

impl BodyPreference {
    /// Reads a `BodyPreference` or `BodyPartPreference` element.
    pub fn from_element(el: &Element<'_>) -> Result<Self, CommandError> {
        Ok(BodyPreference {
            body_type: tree::req_num(el, asb::TYPE)?,
            truncation_size: tree::opt_num(el, asb::TRUNCATION_SIZE)?,
            all_or_none: tree::opt_bool(el, asb::ALL_OR_NONE)?,
            preview: tree::opt_num(el, asb::PREVIEW)?,
        })
    }

    /// Builds the element named `tag` (`BodyPreference` or `BodyPartPreference`).
    pub fn to_element(&self, tag: crate::wbxml::Tag) -> Element<'_> {
        let mut el = Element::new(tag);
        el.push(tree::text_el(asb::TYPE, self.body_type));
        tree::push_opt(&mut el, asb::TRUNCATION_SIZE, self.truncation_size);
        tree::push_bool(&mut el, asb::ALL_OR_NONE, self.all_or_none);
        tree::push_opt(&mut el, asb::PREVIEW, self.preview);
        el
    }
}

/// `Body` (MS-ASAIRS 2.2.2.9).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Body {
    /// `Type`.
    pub body_type: u8,
    /// `EstimatedDataSize`.
    pub estimated_data_size: Option<u64>,
    /// `Truncated`.
    pub truncated: Option<bool>,
    /// `Data`.
    pub data: Option<String>,
    /// `Preview` (14.0+).
    pub preview: Option<String>,
}

impl Body {
    /// Reads a `Body` element.
    pub fn from_element(el: &Element<'_>) -> Result<Self, CommandError> {
        Ok(Body {
            body_type: tree::req_num(el, asb::TYPE)?,
            estimated_data_size: tree::opt_num(el, asb::ESTIMATED_DATA_SIZE)?,
            truncated: tree::opt_bool(el, asb::TRUNCATED)?,
            data: tree::opt_text(el, asb::DATA)?,
            preview: tree::opt_text(el, asb::PREVIEW)?,
        })
    }

    /// Writes the element [`Body::to_element`] builds, straight to WBXML.
    pub fn write(&self, w: &mut crate::wbxml::Writer<'_>) {
        w.start(asb::BODY);
        tree::write_num(w, asb::TYPE, Some(u64::from(self.body_type)));
        tree::write_num(w, asb::ESTIMATED_DATA_SIZE, self.estimated_data_size);
        tree::write_bool(w, asb::TRUNCATED, self.truncated);
        tree::write_str(w, asb::DATA, self.data.as_deref());
        tree::write_str(w, asb::PREVIEW, self.preview.as_deref());
        w.end();
    }

    /// Builds the `Body` element (borrowing the data and preview).
    pub fn to_element(&self) -> Element<'_> {
        let mut el = Element::new(asb::BODY);
        el.push(tree::text_el(asb::TYPE, self.body_type));
        tree::push_opt(&mut el, asb::ESTIMATED_DATA_SIZE, self.estimated_data_size);
        tree::push_bool(&mut el, asb::TRUNCATED, self.truncated);
        tree::push_str(&mut el, asb::DATA, self.data.as_deref());
        tree::push_str(&mut el, asb::PREVIEW, self.preview.as_deref());
        el
    }
}

/// `Attachment` (MS-ASAIRS 2.2.2.4).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Attachment {
    /// `DisplayName`.
    pub display_name: Option<String>,
    /// `FileReference` (for ItemOperations Fetch).
    pub file_reference: Option<String>,
    /// `Method` (1 normal, 5 embedded message, 6 OLE).
    pub method: Option<u8>,
    /// `EstimatedDataSize`.
    pub estimated_data_size: Option<u64>,
    /// `ContentId`.
    pub content_id: Option<String>,
    /// `ContentLocation`.
    pub content_location: Option<String>,
    /// `IsInline`.
    pub is_inline: Option<bool>,
    /// `ClientId` (16.0+, in a Sync response's `Responses`: the device's id
    /// of an attachment it added, with the `FileReference` it now has).
    pub client_id: Option<String>,
}

impl Attachment {
    /// Reads an `Attachment` element.
    pub fn from_element(el: &Element<'_>) -> Result<Self, CommandError> {
        Ok(Attachment {
            display_name: tree::opt_text(el, asb::DISPLAY_NAME)?,
            file_reference: tree::opt_text(el, asb::FILE_REFERENCE)?,
            method: tree::opt_num(el, asb::METHOD)?,
            estimated_data_size: tree::opt_num(el, asb::ESTIMATED_DATA_SIZE)?,
            content_id: tree::opt_text(el, asb::CONTENT_ID)?,
            content_location: tree::opt_text(el, asb::CONTENT_LOCATION)?,
            is_inline: tree::opt_bool(el, asb::IS_INLINE)?,
            client_id: tree::opt_text(el, asb::CLIENT_ID)?,
        })
    }

    /// Builds the `Attachment` element (borrowing its strings).
    pub fn to_element(&self) -> Element<'_> {
        let mut el = Element::new(asb::ATTACHMENT);
        tree::push_str(&mut el, asb::CLIENT_ID, self.client_id.as_deref());
        tree::push_str(&mut el, asb::DISPLAY_NAME, self.display_name.as_deref());
        tree::push_str(&mut el, asb::FILE_REFERENCE, self.file_reference.as_deref());
        tree::push_opt(&mut el, asb::METHOD, self.method);
        tree::push_opt(&mut el, asb::ESTIMATED_DATA_SIZE, self.estimated_data_size);
        tree::push_str(&mut el, asb::CONTENT_ID, self.content_id.as_deref());
        tree::push_str(
            &mut el,
            asb::CONTENT_LOCATION,
            self.content_location.as_deref(),
        );
        tree::push_bool(&mut el, asb::IS_INLINE, self.is_inline);
        el
    }
}

/// An attachment a device adds to a draft (`Attachments/Add`, MS-ASAIRS
/// 2.2.2.2; 16.0+ Sync requests).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct AttachmentAdd {
    /// `ClientId`: the device's temporary id of the attachment.
    pub client_id: String,
    /// `Content`: the attachment's bytes (opaque).
    pub content: Vec<u8>,
    /// `DisplayName`.
    pub display_name: Option<String>,
    /// `ContentType`.
    pub content_type: Option<String>,
    /// `Method` (1 normal, 5 embedded message, 6 OLE).
    pub method: Option<u8>,
    /// `ContentId`.
    pub content_id: Option<String>,
    /// `ContentLocation`.
    pub content_location: Option<String>,
    /// `IsInline`.
    pub is_inline: Option<bool>,
}

impl std::fmt::Debug for AttachmentAdd {
    /// The content as its length and a 64-bit FNV-1a hash: a request's
    /// debug form (logged, digested to recognise a retried request) stays
    /// small and still tells different contents apart.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hash = self.content.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
        f.debug_struct("AttachmentAdd")
            .field("client_id", &self.client_id)
            .field(
                "content",
                &format_args!("<{} bytes, fnv1a {hash:016x}>", self.content.len()),
            )
            .field("display_name", &self.display_name)
            .field("content_type", &self.content_type)
            .field("method", &self.method)
            .field("content_id", &self.content_id)
            .field("content_location", &self.content_location)
            .field("is_inline", &self.is_inline)
            .finish()
    }
}

impl AttachmentAdd {
    /// Reads an `Add` element of `Attachments`.
    pub fn from_element(el: &Element<'_>) -> Result<Self, CommandError> {
        Ok(AttachmentAdd {
            client_id: tree::req_text(el, asb::CLIENT_ID)?,
            content: el.child(asb::CONTENT).map(tree::bytes).unwrap_or_default(),
            display_name: tree::opt_text(el, asb::DISPLAY_NAME)?,
            content_type: tree::opt_text(el, asb::CONTENT_TYPE)?,
            method: tree::opt_num(el, asb::METHOD)?,
            content_id: tree::opt_text(el, asb::CONTENT_ID)?,
            content_location: tree::opt_text(el, asb::CONTENT_LOCATION)?,
            is_inline: tree::opt_bool(el, asb::IS_INLINE)?,
        })
    }

    /// Builds the `Add` element.
    pub fn to_element(&self) -> Element<'_> {
        let mut el = Element::new(asb::ADD);
        el.push(tree::text_el(asb::CLIENT_ID, &self.client_id));
        el.push(Element::with_opaque(asb::CONTENT, self.content.clone()));
        tree::push_opt(&mut el, asb::DISPLAY_NAME, self.display_name.as_deref());
        tree::push_opt(&mut el, asb::CONTENT_TYPE, self.content_type.as_deref());
        tree::push_opt(&mut el, asb::METHOD, self.method);
        tree::push_opt(&mut el, asb::CONTENT_ID, self.content_id.as_deref());
        tree::push_opt(
            &mut el,
            asb::CONTENT_LOCATION,
            self.content_location.as_deref(),
        );
        tree::push_bool(&mut el, asb::IS_INLINE, self.is_inline);
        el
    }
}

/// The 16.x attachment edits of an `Attachments` element of a request:
/// its `Add` children and the `FileReference` of each `Delete`.
pub fn attachment_edits_from(
    el: &Element<'_>,
) -> Result<(Vec<AttachmentAdd>, Vec<String>), CommandError> {
    let adds = el
        .children_with(asb::ADD)
        .map(AttachmentAdd::from_element)
        .collect::<Result<_, _>>()?;
    let deletes = el
        .children_with(asb::DELETE)
        .map(|d| tree::req_text(d, asb::FILE_REFERENCE))
        .collect::<Result<_, _>>()?;
    Ok((adds, deletes))
}

/// Reads the `Attachment` children of an `Attachments` element.
pub fn attachments_from(el: &Element<'_>) -> Result<Vec<Attachment>, CommandError> {
    el.children_with(asb::ATTACHMENT)
        .map(Attachment::from_element)
        .collect()
}

/// Builds an `Attachments` element (none when the list is empty).
pub fn attachments_to(list: &[Attachment]) -> Option<Element<'_>> {
    attachments_with_edits(list, &[], &[])
}

/// Builds an `Attachments` element with `Attachment`s and the 16.x request
/// edits (`Add`s, then a `Delete` per FileReference); none when all are
/// empty.
pub fn attachments_with_edits<'a>(
    list: &'a [Attachment],
    adds: &'a [AttachmentAdd],
    deletes: &'a [String],
) -> Option<Element<'a>> {
    if list.is_empty() && adds.is_empty() && deletes.is_empty() {
        return None;
    }
    let mut el = Element::new(asb::ATTACHMENTS);
    for a in list {
        el.push(a.to_element());
    }
    for a in adds {
        el.push(a.to_element());
    }
    for d in deletes {
        el.push(Element::new(asb::DELETE).with(tree::text_el(asb::FILE_REFERENCE, d)));
    }
    Some(el)
}
