//! Task item payloads (MS-ASTASK) as carried in Sync `ApplicationData`.
//!
//! Exists so a tasks connector maps tasks from a struct. It must not
//! interpret dates. The task `Recurrence` is kept as its element; other
//! properties not named here are kept in `extra`, in order.

use super::airsyncbase::Body;
use super::tree::{self, Owned};
use super::CommandError;
use crate::version::ProtocolVersion;
use crate::wbxml::tags::{airsyncbase as asb, tasks as tk};
use crate::wbxml::{Element, Tag};

/// A task.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Task {
    /// airsyncbase `Body` (12.0+).
    pub body: Option<Body>,
    /// `Subject`.
    pub subject: Option<String>,
    /// `Importance` (0 low, 1 normal, 2 high).
    pub importance: Option<u8>,
    /// `UtcStartDate`.
    pub utc_start_date: Option<String>,
    /// `StartDate`.
    pub start_date: Option<String>,
    /// `UtcDueDate`.
    pub utc_due_date: Option<String>,
    /// `DueDate`.
    pub due_date: Option<String>,
    /// `Categories/Category`.
    pub categories: Option<Vec<String>>,
    /// `Recurrence`, kept as its element.
    pub recurrence: Option<Owned>,
    /// `Complete`.
    pub complete: Option<bool>,
    /// `DateCompleted`.
    pub date_completed: Option<String>,
    /// `Sensitivity`.
    pub sensitivity: Option<u8>,
    /// `ReminderTime`.
    pub reminder_time: Option<String>,
    /// `ReminderSet`.
    pub reminder_set: Option<bool>,
    /// `OrdinalDate`.
    pub ordinal_date: Option<String>,
    /// `SubOrdinalDate`.
    pub sub_ordinal_date: Option<String>,
    /// Other properties, in order.
    pub extra: Vec<Owned>,
}

impl Task {
    /// Reads the properties of a container element (`ApplicationData`, …).
    pub fn from_properties(el: &Element<'_>, v: ProtocolVersion) -> Result<Self, CommandError> {
        let mut t = Task::default();
        for p in el.elements() {
            let num = |p: &Element<'_>| tree::parse::<u8>(p.tag, &tree::content(p)?);
            match p.tag {
                asb::BODY if v.has_airsyncbase() && t.body.is_none() => {
                    t.body = Some(Body::from_element(p)?)
                }
                tk::SUBJECT if t.subject.is_none() => t.subject = Some(tree::content(p)?),
                tk::IMPORTANCE => t.importance = Some(num(p)?),
                tk::UTC_START_DATE => t.utc_start_date = Some(tree::content(p)?),
                tk::START_DATE => t.start_date = Some(tree::content(p)?),
                tk::UTC_DUE_DATE => t.utc_due_date = Some(tree::content(p)?),
                tk::DUE_DATE => t.due_date = Some(tree::content(p)?),
                tk::CATEGORIES => {
                    t.categories = Some(
                        p.children_with(tk::CATEGORY)
                            .map(tree::content)
                            .collect::<Result<_, _>>()?,
                    )
                }
                tk::RECURRENCE => t.recurrence = Some(tree::owned(p)),
                tk::COMPLETE => t.complete = Some(tree::bool_of(p)?),
                tk::DATE_COMPLETED => t.date_completed = Some(tree::content(p)?),
                tk::SENSITIVITY => t.sensitivity = Some(num(p)?),
                tk::REMINDER_TIME => t.reminder_time = Some(tree::content(p)?),
                tk::REMINDER_SET => t.reminder_set = Some(tree::bool_of(p)?),
                tk::ORDINAL_DATE => t.ordinal_date = Some(tree::content(p)?),
                tk::SUB_ORDINAL_DATE => t.sub_ordinal_date = Some(tree::content(p)?),
                _ => t.extra.push(tree::owned(p)),
            }
        }
        Ok(t)
    }

    /// Builds the properties inside an element named `tag` (MS-ASTASK order).
    pub fn to_element_as(&self, tag: Tag, v: ProtocolVersion) -> Element<'_> {
        let mut el = Element::new(tag);
        if v.has_airsyncbase() {
            if let Some(b) = &self.body {
                el.push(b.to_element());
            }
        }
        tree::push_opt(&mut el, tk::SUBJECT, self.subject.as_deref());
        tree::push_opt(&mut el, tk::IMPORTANCE, self.importance);
        tree::push_opt(&mut el, tk::UTC_START_DATE, self.utc_start_date.as_deref());
        tree::push_opt(&mut el, tk::START_DATE, self.start_date.as_deref());
        tree::push_opt(&mut el, tk::UTC_DUE_DATE, self.utc_due_date.as_deref());
        tree::push_opt(&mut el, tk::DUE_DATE, self.due_date.as_deref());
        if let Some(cats) = &self.categories {
            let mut c = Element::new(tk::CATEGORIES);
            for cat in cats {
                c.push(tree::text_el(tk::CATEGORY, cat));
            }
            el.push(c);
        }
        if let Some(r) = &self.recurrence {
            el.push(r.clone());
        }
        tree::push_bool(&mut el, tk::COMPLETE, self.complete);
        tree::push_opt(&mut el, tk::DATE_COMPLETED, self.date_completed.as_deref());
        tree::push_opt(&mut el, tk::SENSITIVITY, self.sensitivity);
        tree::push_opt(&mut el, tk::REMINDER_TIME, self.reminder_time.as_deref());
        tree::push_bool(&mut el, tk::REMINDER_SET, self.reminder_set);
        tree::push_opt(&mut el, tk::ORDINAL_DATE, self.ordinal_date.as_deref());
        tree::push_opt(
            &mut el,
            tk::SUB_ORDINAL_DATE,
            self.sub_ordinal_date.as_deref(),
        );
        for x in &self.extra {
            el.push(x.clone());
        }
        el
    }
}
