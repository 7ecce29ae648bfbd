//! Note item payloads (MS-ASNOTE, 14.0+) as carried in Sync `ApplicationData`.
//!
//! Exists so notes are a struct like the other classes. It must not
//! interpret dates; unnamed properties are kept in `extra`, in order.

use super::airsyncbase::Body;
use super::tree::{self, Owned};
use super::CommandError;
use crate::version::ProtocolVersion;
use crate::wbxml::tags::{airsyncbase as asb, notes as nt};
use crate::wbxml::{Element, Tag};

/// A note.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Note {
    /// `Subject`.
    pub subject: Option<String>,
    /// airsyncbase `Body`.
    pub body: Option<Body>,
    /// `MessageClass` (`IPM.StickyNote`).
    pub message_class: Option<String>,
    /// `LastModifiedDate`.
    pub last_modified_date: Option<String>,
    /// `Categories/Category`.
    pub categories: Option<Vec<String>>,
    /// Other properties, in order.
    pub extra: Vec<Owned>,
}

impl Note {
    /// Reads the properties of a container element (`ApplicationData`, …).
    pub fn from_properties(el: &Element<'_>, v: ProtocolVersion) -> Result<Self, CommandError> {
        let mut n = Note::default();
        for p in el.elements() {
            match p.tag {
                nt::SUBJECT => n.subject = Some(tree::content(p)?),
                asb::BODY if v.has_airsyncbase() => n.body = Some(Body::from_element(p)?),
                nt::MESSAGE_CLASS => n.message_class = Some(tree::content(p)?),
                nt::LAST_MODIFIED_DATE => n.last_modified_date = Some(tree::content(p)?),
                nt::CATEGORIES => {
                    n.categories = Some(
                        p.children_with(nt::CATEGORY)
                            .map(tree::content)
                            .collect::<Result<_, _>>()?,
                    )
                }
                _ => n.extra.push(tree::owned(p)),
            }
        }
        Ok(n)
    }

    /// Builds the properties inside an element named `tag`.
    pub fn to_element_as(&self, tag: Tag, v: ProtocolVersion) -> Element<'_> {
        let mut el = Element::new(tag);
        tree::push_opt(&mut el, nt::SUBJECT, self.subject.as_deref());
        if v.has_airsyncbase() {
            if let Some(b) = &self.body {
                el.push(b.to_element());
            }
        }
        tree::push_opt(&mut el, nt::MESSAGE_CLASS, self.message_class.as_deref());
        tree::push_opt(
            &mut el,
            nt::LAST_MODIFIED_DATE,
            self.last_modified_date.as_deref(),
        );
        if let Some(cats) = &self.categories {
            let mut c = Element::new(nt::CATEGORIES);
            for cat in cats {
                c.push(tree::text_el(nt::CATEGORY, cat));
            }
            el.push(c);
        }
        for x in &self.extra {
            el.push(x.clone());
        }
        el
    }
}
