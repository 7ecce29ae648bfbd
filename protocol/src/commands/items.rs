//! Item payloads (`ApplicationData`) carried by Sync, ItemOperations and
//! Search: Email is modelled field by field (MS-ASEMAIL, MS-ASAIRS,
//! Email2), Calendar (`super::calendar`, MS-ASCAL) and Contacts
//! (`super::contacts`, MS-ASCNTC), Tasks (`super::tasks`, MS-ASTASK) and
//! Notes (`super::notes`, MS-ASNOTE) too; anything else (document library
//! entries, GAL results, attachment data) is kept as its ordered list of
//! property elements (typed by tag, values untouched).
//!
//! Exists so the engine and backends see an email as a struct. It must not
//! interpret MIME or dates: values stay as the wire has them. Properties the
//! Email model does not name are kept in `extra`, so nothing is lost.

use super::airsyncbase::{self, Attachment, Body};
use super::calendar::Calendar;
use super::contacts::Contact;
use super::notes::Note;
use super::tasks::Task;
use super::tree::{self, Owned};
use super::CommandError;
use crate::version::ProtocolVersion;
use crate::wbxml::tags::{airsync, airsyncbase as asb, email, email2};
use crate::wbxml::{Element, Tag, Writer};

/// The content of an `ApplicationData` element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplicationData {
    /// An email (properties on the Email, Email2 and AirSyncBase pages only).
    Email(Box<Email>),
    /// A calendar item (any property on the Calendar page).
    Calendar(Box<Calendar>),
    /// A contact (a Contacts or Contacts2 property, no Calendar one).
    Contact(Box<Contact>),
    /// A task (a top-level Tasks property, no Calendar or Contacts one).
    Task(Box<Task>),
    /// A note (a Notes property, none of the classes above).
    Note(Box<Note>),
    /// Any other class (Calendar, Contacts, Tasks, Notes, SMS…): the property
    /// elements in document order.
    Properties(Vec<Owned>),
}

/// Pages whose presence makes an `ApplicationData` a non-email item.
const NON_EMAIL_PAGES: [u8; 5] = [
    crate::wbxml::tags::contacts::PAGE,
    crate::wbxml::tags::calendar::PAGE,
    crate::wbxml::tags::tasks::PAGE,
    crate::wbxml::tags::contacts2::PAGE,
    crate::wbxml::tags::notes::PAGE,
];

impl ApplicationData {
    /// Reads an `ApplicationData` element. The class is inferred from the
    /// code pages of its children: any Contacts/Calendar/Tasks/Notes property
    /// makes it generic; otherwise an Email or Email2 property makes it an
    /// Email. (The collection's class, known to the engine, is authoritative.)
    pub fn from_element(el: &Element<'_>, version: ProtocolVersion) -> Result<Self, CommandError> {
        tree::expect_tag(el, airsync::APPLICATION_DATA)?;
        Self::from_properties(el, version)
    }

    /// Reads the item properties of any container element (`ApplicationData`,
    /// ItemOperations or Search `Properties`).
    pub fn from_properties(
        el: &Element<'_>,
        version: ProtocolVersion,
    ) -> Result<Self, CommandError> {
        use crate::wbxml::tags::{calendar, contacts, contacts2};
        let pages = || el.elements().map(|c| c.tag.page);
        let has = |page: u8| pages().any(|p| p == page);
        if has(calendar::PAGE) {
            return Ok(ApplicationData::Calendar(Box::new(
                Calendar::from_properties(el, version)?,
            )));
        }
        if has(contacts::PAGE) || has(contacts2::PAGE) {
            return Ok(ApplicationData::Contact(Box::new(
                Contact::from_properties(el, version)?,
            )));
        }
        if has(crate::wbxml::tags::tasks::PAGE) {
            return Ok(ApplicationData::Task(Box::new(Task::from_properties(
                el, version,
            )?)));
        }
        if has(crate::wbxml::tags::notes::PAGE) {
            return Ok(ApplicationData::Note(Box::new(Note::from_properties(
                el, version,
            )?)));
        }
        // Only AirSyncBase properties (a 16.x draft Change that just adds or
        // deletes attachments) is read as an Email too: no other class
        // changes nothing but attachments without its own properties.
        let only_airsyncbase = pages().next().is_some() && pages().all(|p| p == asb::PAGE);
        let is_email = !pages().any(|p| NON_EMAIL_PAGES.contains(&p))
            && (pages().any(|p| p == email::PAGE || p == email2::PAGE) || only_airsyncbase);
        if is_email {
            Ok(ApplicationData::Email(Box::new(Email::from_children(
                el, version,
            )?)))
        } else {
            Ok(ApplicationData::Properties(tree::owned_children(el)))
        }
    }

    /// Builds the `ApplicationData` element.
    pub fn to_element(&self, version: ProtocolVersion) -> Element<'_> {
        self.to_element_as(airsync::APPLICATION_DATA, version)
    }

    /// Writes what [`ApplicationData::to_element_as`] builds, an email
    /// straight to WBXML (no tree), other classes from their tree.
    pub fn write_as(&self, w: &mut Writer<'_>, tag: Tag, version: ProtocolVersion) {
        match self {
            ApplicationData::Email(e) => e.write_as(w, tag, version),
            other => w.element(&other.to_element_as(tag, version)),
        }
    }

    /// Builds the properties inside an element named `tag` (an email's
    /// strings are borrowed, not copied).
    pub fn to_element_as(&self, tag: Tag, version: ProtocolVersion) -> Element<'_> {
        match self {
            ApplicationData::Email(e) => e.to_element_as(tag, version),
            ApplicationData::Calendar(c) => c.to_element_as(tag, version),
            ApplicationData::Contact(c) => c.to_element_as(tag, version),
            ApplicationData::Task(t) => t.to_element_as(tag, version),
            ApplicationData::Note(n) => n.to_element_as(tag, version),
            ApplicationData::Properties(props) => {
                let mut el = Element::new(tag);
                for p in props {
                    el.push(p.clone());
                }
                el
            }
        }
    }
}

/// `Flag` (MS-ASEMAIL 2.2.2.34). An empty `<Flag/>` clears the flag.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Flag {
    /// `Status`: 0 cleared, 1 complete, 2 active.
    pub status: Option<u8>,
    /// `FlagType` (e.g. "Follow up").
    pub flag_type: Option<String>,
    /// `CompleteTime`.
    pub complete_time: Option<String>,
    /// The Tasks-page properties (StartDate, DueDate, ReminderSet…), in order.
    pub task_properties: Vec<Owned>,
}

impl Flag {
    fn from_element(el: &Element<'_>) -> Result<Self, CommandError> {
        let mut flag = Flag::default();
        for c in el.elements() {
            match c.tag {
                email::STATUS => flag.status = Some(tree::parse(c.tag, &tree::content(c)?)?),
                email::FLAG_TYPE => flag.flag_type = Some(tree::content(c)?),
                email::COMPLETE_TIME => flag.complete_time = Some(tree::content(c)?),
                _ => flag.task_properties.push(tree::owned(c)),
            }
        }
        Ok(flag)
    }

    fn to_element(&self) -> Element<'_> {
        let mut el = Element::new(email::FLAG);
        tree::push_opt(&mut el, email::STATUS, self.status);
        tree::push_str(&mut el, email::FLAG_TYPE, self.flag_type.as_deref());
        for p in &self.task_properties {
            el.push(p.clone());
        }
        tree::push_str(&mut el, email::COMPLETE_TIME, self.complete_time.as_deref());
        el
    }
}

/// `MeetingRequest` of a meeting invitation email (MS-ASEMAIL 2.2.2.48).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MeetingRequest {
    /// `AllDayEvent`.
    pub all_day_event: Option<bool>,
    /// `StartTime`.
    pub start_time: Option<String>,
    /// `DtStamp`.
    pub dt_stamp: Option<String>,
    /// `EndTime`.
    pub end_time: Option<String>,
    /// `InstanceType` (0 single, 1 master, 2 occurrence, 3 exception).
    pub instance_type: Option<u8>,
    /// `Location`.
    pub location: Option<String>,
    /// `Organizer`.
    pub organizer: Option<String>,
    /// `RecurrenceId`.
    pub recurrence_id: Option<String>,
    /// `Reminder` (seconds).
    pub reminder: Option<u32>,
    /// `ResponseRequested`.
    pub response_requested: Option<bool>,
    /// `Sensitivity`.
    pub sensitivity: Option<u8>,
    /// `BusyStatus` (intended status).
    pub busy_status: Option<u8>,
    /// `TimeZone` (base64).
    pub time_zone: Option<String>,
    /// `GlobalObjId` (base64).
    pub global_obj_id: Option<String>,
    /// Other properties (`Recurrences`, `DisallowNewTimeProposal`, Email2
    /// `MeetingMessageType`…), in order.
    pub extra: Vec<Owned>,
}

impl MeetingRequest {
    fn from_element(el: &Element<'_>) -> Result<Self, CommandError> {
        let mut m = MeetingRequest::default();
        for c in el.elements() {
            let text = || tree::content(c);
            match c.tag {
                email::ALL_DAY_EVENT => m.all_day_event = Some(tree::bool_of(c)?),
                email::START_TIME => m.start_time = Some(text()?),
                email::DT_STAMP => m.dt_stamp = Some(text()?),
                email::END_TIME => m.end_time = Some(text()?),
                email::INSTANCE_TYPE => m.instance_type = Some(tree::parse(c.tag, &text()?)?),
                email::LOCATION => m.location = Some(text()?),
                email::ORGANIZER => m.organizer = Some(text()?),
                email::RECURRENCE_ID => m.recurrence_id = Some(text()?),
                email::REMINDER => m.reminder = Some(tree::parse(c.tag, &text()?)?),
                email::RESPONSE_REQUESTED => m.response_requested = Some(tree::bool_of(c)?),
                email::SENSITIVITY => m.sensitivity = Some(tree::parse(c.tag, &text()?)?),
                email::BUSY_STATUS => m.busy_status = Some(tree::parse(c.tag, &text()?)?),
                email::TIME_ZONE => m.time_zone = Some(text()?),
                email::GLOBAL_OBJ_ID => m.global_obj_id = Some(text()?),
                _ => m.extra.push(tree::owned(c)),
            }
        }
        Ok(m)
    }

    fn to_element(&self) -> Element<'_> {
        let mut el = Element::new(email::MEETING_REQUEST);
        tree::push_bool(&mut el, email::ALL_DAY_EVENT, self.all_day_event);
        tree::push_opt(&mut el, email::START_TIME, self.start_time.as_deref());
        tree::push_opt(&mut el, email::DT_STAMP, self.dt_stamp.as_deref());
        tree::push_opt(&mut el, email::END_TIME, self.end_time.as_deref());
        tree::push_opt(&mut el, email::INSTANCE_TYPE, self.instance_type);
        tree::push_opt(&mut el, email::LOCATION, self.location.as_deref());
        tree::push_opt(&mut el, email::ORGANIZER, self.organizer.as_deref());
        tree::push_opt(&mut el, email::RECURRENCE_ID, self.recurrence_id.as_deref());
        tree::push_opt(&mut el, email::REMINDER, self.reminder);
        tree::push_bool(&mut el, email::RESPONSE_REQUESTED, self.response_requested);
        for x in &self.extra {
            el.push(x.clone());
        }
        tree::push_opt(&mut el, email::SENSITIVITY, self.sensitivity);
        tree::push_opt(&mut el, email::BUSY_STATUS, self.busy_status);
        tree::push_opt(&mut el, email::TIME_ZONE, self.time_zone.as_deref());
        tree::push_opt(&mut el, email::GLOBAL_OBJ_ID, self.global_obj_id.as_deref());
        el
    }
}

/// An email item (MS-ASEMAIL 2.2.2). Every field is optional: a Sync
/// `Change` carries only what changed (typically `Read` or `Flag`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Email {
    /// `To`.
    pub to: Option<String>,
    /// `Cc`.
    pub cc: Option<String>,
    /// `From`.
    pub from: Option<String>,
    /// `Subject`.
    pub subject: Option<String>,
    /// `ReplyTo`.
    pub reply_to: Option<String>,
    /// `DateReceived` (as sent, e.g. `2014-09-24T07:48:51.828Z`).
    pub date_received: Option<String>,
    /// `DisplayTo`.
    pub display_to: Option<String>,
    /// `ThreadTopic`.
    pub thread_topic: Option<String>,
    /// `Importance` (0 low, 1 normal, 2 high).
    pub importance: Option<u8>,
    /// `Read`.
    pub read: Option<bool>,
    /// AirSyncBase `Attachments` (12.0+).
    pub attachments: Vec<Attachment>,
    /// Attachments a device adds to a draft (`Attachments/Add`, 16.0+).
    pub attachments_add: Vec<airsyncbase::AttachmentAdd>,
    /// FileReferences of the attachments a device deletes from a draft
    /// (`Attachments/Delete`, 16.0+).
    pub attachments_delete: Vec<String>,
    /// AirSyncBase `Body` (12.0+).
    pub body: Option<Body>,
    /// `MessageClass` (e.g. `IPM.Note`).
    pub message_class: Option<String>,
    /// `MeetingRequest` (invitations).
    pub meeting_request: Option<MeetingRequest>,
    /// `InternetCPID`.
    pub internet_cpid: Option<String>,
    /// `Flag`.
    pub flag: Option<Flag>,
    /// `ContentClass`.
    pub content_class: Option<String>,
    /// AirSyncBase `NativeBodyType` (12.0+).
    pub native_body_type: Option<u8>,
    /// `Categories/Category`.
    pub categories: Option<Vec<String>>,
    /// Email2 `ConversationId` (14.0+, opaque).
    pub conversation_id: Option<Vec<u8>>,
    /// Email2 `ConversationIndex` (14.0+, opaque).
    pub conversation_index: Option<Vec<u8>>,
    /// Email2 `LastVerbExecuted` (14.0+).
    pub last_verb_executed: Option<u8>,
    /// Email2 `LastVerbExecutionTime` (14.0+).
    pub last_verb_execution_time: Option<String>,
    /// Email2 `ReceivedAsBcc` (14.0+).
    pub received_as_bcc: Option<bool>,
    /// Email2 `Sender` (14.0+).
    pub sender: Option<String>,
    /// Other properties (Email2 UmCallerID, IsDraft, Bcc, RightsManagement…),
    /// in document order.
    pub extra: Vec<Owned>,
}

fn set_text(
    slot: &mut Option<String>,
    c: &Element<'_>,
    extra: &mut Vec<Owned>,
) -> Result<(), CommandError> {
    if slot.is_some() {
        extra.push(tree::owned(c));
    } else {
        *slot = Some(tree::content(c)?);
    }
    Ok(())
}

impl Email {
    fn from_children(el: &Element<'_>, version: ProtocolVersion) -> Result<Self, CommandError> {
        let mut e = Email::default();
        let mut extra = Vec::new();
        for c in el.elements() {
            let t = c.tag;
            match t {
                email::TO => set_text(&mut e.to, c, &mut extra)?,
                email::CC => set_text(&mut e.cc, c, &mut extra)?,
                email::FROM => set_text(&mut e.from, c, &mut extra)?,
                email::SUBJECT => set_text(&mut e.subject, c, &mut extra)?,
                email::REPLY_TO => set_text(&mut e.reply_to, c, &mut extra)?,
                email::DATE_RECEIVED => set_text(&mut e.date_received, c, &mut extra)?,
                email::DISPLAY_TO => set_text(&mut e.display_to, c, &mut extra)?,
                email::THREAD_TOPIC => set_text(&mut e.thread_topic, c, &mut extra)?,
                email::IMPORTANCE => e.importance = Some(tree::parse(t, &tree::content(c)?)?),
                email::READ => e.read = Some(tree::bool_of(c)?),
                asb::ATTACHMENTS if version.has_airsyncbase() => {
                    e.attachments = airsyncbase::attachments_from(c)?;
                    (e.attachments_add, e.attachments_delete) =
                        airsyncbase::attachment_edits_from(c)?;
                }
                asb::BODY if version.has_airsyncbase() => e.body = Some(Body::from_element(c)?),
                email::MESSAGE_CLASS => set_text(&mut e.message_class, c, &mut extra)?,
                email::MEETING_REQUEST => {
                    e.meeting_request = Some(MeetingRequest::from_element(c)?)
                }
                email::INTERNET_CPID => set_text(&mut e.internet_cpid, c, &mut extra)?,
                email::FLAG => e.flag = Some(Flag::from_element(c)?),
                email::CONTENT_CLASS => set_text(&mut e.content_class, c, &mut extra)?,
                asb::NATIVE_BODY_TYPE if version.has_airsyncbase() => {
                    e.native_body_type = Some(tree::parse(t, &tree::content(c)?)?)
                }
                email::CATEGORIES => {
                    e.categories = Some(
                        c.children_with(email::CATEGORY)
                            .map(tree::content)
                            .collect::<Result<_, _>>()?,
                    )
                }
                email2::CONVERSATION_ID
                | email2::CONVERSATION_INDEX
                | email2::LAST_VERB_EXECUTED
                | email2::LAST_VERB_EXECUTION_TIME
                | email2::RECEIVED_AS_BCC
                | email2::SENDER
                    if version < ProtocolVersion::V14_0 =>
                {
                    return Err(CommandError::NotInVersion { tag: t, version })
                }
                email2::CONVERSATION_ID => e.conversation_id = Some(tree::bytes(c)),
                email2::CONVERSATION_INDEX => e.conversation_index = Some(tree::bytes(c)),
                email2::LAST_VERB_EXECUTED => {
                    e.last_verb_executed = Some(tree::parse(t, &tree::content(c)?)?)
                }
                email2::LAST_VERB_EXECUTION_TIME => {
                    set_text(&mut e.last_verb_execution_time, c, &mut extra)?
                }
                email2::RECEIVED_AS_BCC => e.received_as_bcc = Some(tree::bool_of(c)?),
                email2::SENDER => set_text(&mut e.sender, c, &mut extra)?,
                _ => extra.push(tree::owned(c)),
            }
        }
        e.extra = extra;
        Ok(e)
    }

    /// Builds the `ApplicationData` element for `version` (AirSyncBase
    /// properties are left out before 12.0, Email2 ones before 14.0).
    pub fn to_element(&self, version: ProtocolVersion) -> Element<'_> {
        self.to_element_as(airsync::APPLICATION_DATA, version)
    }

    /// Writes, straight to WBXML, the element [`Email::to_element_as`]
    /// builds: the same bytes without a node per property (a Sync window
    /// writes hundreds of emails). Keep the two in step: a test compares
    /// them on generated emails (protocol/tests/writer.rs).
    pub fn write_as(&self, w: &mut Writer<'_>, tag: Tag, version: ProtocolVersion) {
        let asb_ok = version.has_airsyncbase();
        let e2_ok = version >= ProtocolVersion::V14_0;
        w.start(tag);
        tree::write_str(w, email::TO, self.to.as_deref());
        tree::write_str(w, email::CC, self.cc.as_deref());
        tree::write_str(w, email::FROM, self.from.as_deref());
        tree::write_str(w, email::SUBJECT, self.subject.as_deref());
        tree::write_str(w, email::REPLY_TO, self.reply_to.as_deref());
        tree::write_str(w, email::DATE_RECEIVED, self.date_received.as_deref());
        tree::write_str(w, email::DISPLAY_TO, self.display_to.as_deref());
        tree::write_str(w, email::THREAD_TOPIC, self.thread_topic.as_deref());
        tree::write_num(w, email::IMPORTANCE, self.importance.map(u64::from));
        tree::write_bool(w, email::READ, self.read);
        if asb_ok {
            if let Some(a) = airsyncbase::attachments_with_edits(
                &self.attachments,
                &self.attachments_add,
                &self.attachments_delete,
            ) {
                w.element(&a);
            }
            if let Some(b) = &self.body {
                b.write(w);
            }
        }
        tree::write_str(w, email::MESSAGE_CLASS, self.message_class.as_deref());
        if let Some(m) = &self.meeting_request {
            w.element(&m.to_element());
        }
        tree::write_str(w, email::INTERNET_CPID, self.internet_cpid.as_deref());
        if let Some(f) = &self.flag {
            w.element(&f.to_element());
        }
        tree::write_str(w, email::CONTENT_CLASS, self.content_class.as_deref());
        if asb_ok {
            tree::write_num(
                w,
                asb::NATIVE_BODY_TYPE,
                self.native_body_type.map(u64::from),
            );
        }
        if let Some(cats) = &self.categories {
            w.start(email::CATEGORIES);
            for cat in cats {
                tree::write_str(w, email::CATEGORY, Some(cat));
            }
            w.end();
        }
        if e2_ok {
            tree::write_opaque(w, email2::CONVERSATION_ID, self.conversation_id.as_ref());
            tree::write_opaque(
                w,
                email2::CONVERSATION_INDEX,
                self.conversation_index.as_ref(),
            );
            tree::write_num(
                w,
                email2::LAST_VERB_EXECUTED,
                self.last_verb_executed.map(u64::from),
            );
            tree::write_str(
                w,
                email2::LAST_VERB_EXECUTION_TIME,
                self.last_verb_execution_time.as_deref(),
            );
            tree::write_bool(w, email2::RECEIVED_AS_BCC, self.received_as_bcc);
            tree::write_str(w, email2::SENDER, self.sender.as_deref());
        }
        for x in &self.extra {
            w.element(x);
        }
        w.end();
    }

    /// About the bytes [`Email::write_as`] writes (the buffer of a
    /// response is sized from it; a short guess only costs a regrowth).
    pub fn encoded_len_hint(&self) -> usize {
        let texts = [
            &self.to,
            &self.cc,
            &self.from,
            &self.subject,
            &self.reply_to,
            &self.date_received,
            &self.display_to,
            &self.thread_topic,
            &self.message_class,
            &self.internet_cpid,
            &self.content_class,
        ];
        let body = self.body.as_ref().map_or(0, |b| {
            b.data.as_ref().map_or(0, String::len) + b.preview.as_ref().map_or(0, String::len)
        });
        texts
            .iter()
            .map(|t| t.as_ref().map_or(0, String::len))
            .sum::<usize>()
            + body
            + 160
            + 100 * self.attachments.len()
    }

    /// Builds the properties inside an element named `tag`, borrowing the
    /// strings (a window of hundreds of emails is not copied to be encoded).
    pub fn to_element_as(&self, tag: Tag, version: ProtocolVersion) -> Element<'_> {
        // Room for the usual properties at once: a window of hundreds of
        // emails would otherwise regrow (and copy) each list four times.
        let mut el = Element {
            tag,
            children: Vec::with_capacity(20),
        };
        let asb_ok = version.has_airsyncbase();
        let e2_ok = version >= ProtocolVersion::V14_0;
        tree::push_str(&mut el, email::TO, self.to.as_deref());
        tree::push_str(&mut el, email::CC, self.cc.as_deref());
        tree::push_str(&mut el, email::FROM, self.from.as_deref());
        tree::push_str(&mut el, email::SUBJECT, self.subject.as_deref());
        tree::push_str(&mut el, email::REPLY_TO, self.reply_to.as_deref());
        tree::push_str(&mut el, email::DATE_RECEIVED, self.date_received.as_deref());
        tree::push_str(&mut el, email::DISPLAY_TO, self.display_to.as_deref());
        tree::push_str(&mut el, email::THREAD_TOPIC, self.thread_topic.as_deref());
        tree::push_opt(&mut el, email::IMPORTANCE, self.importance);
        tree::push_bool(&mut el, email::READ, self.read);
        if asb_ok {
            if let Some(a) = airsyncbase::attachments_with_edits(
                &self.attachments,
                &self.attachments_add,
                &self.attachments_delete,
            ) {
                el.push(a);
            }
            if let Some(b) = &self.body {
                el.push(b.to_element());
            }
        }
        tree::push_str(&mut el, email::MESSAGE_CLASS, self.message_class.as_deref());
        if let Some(m) = &self.meeting_request {
            el.push(m.to_element());
        }
        tree::push_str(&mut el, email::INTERNET_CPID, self.internet_cpid.as_deref());
        if let Some(f) = &self.flag {
            el.push(f.to_element());
        }
        tree::push_str(&mut el, email::CONTENT_CLASS, self.content_class.as_deref());
        if asb_ok {
            tree::push_opt(&mut el, asb::NATIVE_BODY_TYPE, self.native_body_type);
        }
        if let Some(cats) = &self.categories {
            let mut c = Element::new(email::CATEGORIES);
            for cat in cats {
                c.push(tree::str_el(email::CATEGORY, cat));
            }
            el.push(c);
        }
        if e2_ok {
            tree::push_opaque(
                &mut el,
                email2::CONVERSATION_ID,
                self.conversation_id.as_ref(),
            );
            tree::push_opaque(
                &mut el,
                email2::CONVERSATION_INDEX,
                self.conversation_index.as_ref(),
            );
            tree::push_opt(&mut el, email2::LAST_VERB_EXECUTED, self.last_verb_executed);
            tree::push_opt(
                &mut el,
                email2::LAST_VERB_EXECUTION_TIME,
                self.last_verb_execution_time.as_deref(),
            );
            tree::push_bool(&mut el, email2::RECEIVED_AS_BCC, self.received_as_bcc);
            tree::push_opt(&mut el, email2::SENDER, self.sender.as_deref());
        }
        // Unmodelled properties are passed through as received.
        for x in &self.extra {
            el.push(x.clone());
        }
        el
    }
}
