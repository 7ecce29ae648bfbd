//! Calendar item payloads (MS-ASCAL): events with attendees, recurrence and
//! exceptions, as carried in Sync `ApplicationData` and ItemOperations or
//! Search `Properties`.
//!
//! Exists so the CalDAV connector and the engine see events as structs. It
//! must not interpret times or time zones: values stay as the wire has them
//! (`TimeZone` is the base64 blob, times are compact ISO strings). Properties
//! not named here are kept in `extra`, in order, and written back as received.

use super::airsyncbase::Body;
use super::tree::{self, Owned};
use super::CommandError;
use crate::version::ProtocolVersion;
use crate::wbxml::tags::{airsyncbase as asb, calendar as cal};
use crate::wbxml::{Element, Tag};

/// An `Attendee`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Attendee {
    /// `Email`.
    pub email: String,
    /// `Name`.
    pub name: Option<String>,
    /// `AttendeeStatus` (0 unknown, 2 tentative, 3 accept, 4 decline, 5 not responded).
    pub status: Option<u8>,
    /// `AttendeeType` (1 required, 2 optional, 3 resource).
    pub attendee_type: Option<u8>,
}

/// `Recurrence` (MS-ASCAL 2.2.2.35).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Recurrence {
    /// `Type` (0 daily, 1 weekly, 2 monthly, 3 monthly on the nth day, 5 yearly, 6 yearly on the nth day).
    pub recurrence_type: u8,
    /// `Occurrences`.
    pub occurrences: Option<u32>,
    /// `Interval`.
    pub interval: Option<u32>,
    /// `WeekOfMonth`.
    pub week_of_month: Option<u8>,
    /// `DayOfWeek` (bit mask, Sunday = 1).
    pub day_of_week: Option<u8>,
    /// `MonthOfYear`.
    pub month_of_year: Option<u8>,
    /// `Until`.
    pub until: Option<String>,
    /// `DayOfMonth`.
    pub day_of_month: Option<u8>,
    /// `CalendarType` (14.0+).
    pub calendar_type: Option<u8>,
    /// `IsLeapMonth` (14.0+).
    pub is_leap_month: Option<bool>,
    /// `FirstDayOfWeek` (14.1+).
    pub first_day_of_week: Option<u8>,
}

/// Properties shared by an event and its exceptions.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EventFields {
    /// `DtStamp`.
    pub dt_stamp: Option<String>,
    /// `StartTime`.
    pub start_time: Option<String>,
    /// `Subject`.
    pub subject: Option<String>,
    /// `Attendees` (None when absent, which differs from an empty list).
    pub attendees: Option<Vec<Attendee>>,
    /// `Location`.
    pub location: Option<String>,
    /// `EndTime`.
    pub end_time: Option<String>,
    /// airsyncbase `Body` (12.0+).
    pub body: Option<Body>,
    /// `Sensitivity` (0 normal … 3 confidential).
    pub sensitivity: Option<u8>,
    /// `BusyStatus` (0 free, 1 tentative, 2 busy, 3 out of office, 4 elsewhere).
    pub busy_status: Option<u8>,
    /// `AllDayEvent`.
    pub all_day_event: Option<bool>,
    /// `Reminder` in minutes.
    pub reminder: Option<u32>,
    /// `Categories/Category`.
    pub categories: Option<Vec<String>>,
    /// `MeetingStatus`.
    pub meeting_status: Option<u8>,
    /// Other properties, in order.
    pub extra: Vec<Owned>,
}

/// An `Exception` of a recurring event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Exception {
    /// `Deleted`.
    pub deleted: Option<bool>,
    /// The overridden properties.
    pub fields: EventFields,
    /// `ExceptionStartTime` (the original start of the occurrence).
    pub exception_start_time: Option<String>,
}

/// A calendar item.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Calendar {
    /// `TimeZone` (base64 of the TIME_ZONE_INFORMATION structure).
    pub time_zone: Option<String>,
    /// `UID`.
    pub uid: Option<String>,
    /// `OrganizerName`.
    pub organizer_name: Option<String>,
    /// `OrganizerEmail`.
    pub organizer_email: Option<String>,
    /// The event's properties.
    pub fields: EventFields,
    /// `Recurrence`.
    pub recurrence: Option<Recurrence>,
    /// `Exceptions` (None when absent).
    pub exceptions: Option<Vec<Exception>>,
    /// `ResponseRequested`.
    pub response_requested: Option<bool>,
    /// `ResponseType` (14.0+).
    pub response_type: Option<u8>,
    /// `DisallowNewTimeProposal` (14.0+).
    pub disallow_new_time_proposal: Option<bool>,
    /// airsyncbase `NativeBodyType`.
    pub native_body_type: Option<u8>,
}

fn num<T: std::str::FromStr>(c: &Element<'_>) -> Result<T, CommandError> {
    tree::parse(c.tag, &tree::content(c)?)
}

impl EventFields {
    /// Reads a field this struct names; returns false if `c` is not one.
    fn read(&mut self, c: &Element<'_>, v: ProtocolVersion) -> Result<bool, CommandError> {
        match c.tag {
            cal::DT_STAMP => self.dt_stamp = Some(tree::content(c)?),
            cal::START_TIME => self.start_time = Some(tree::content(c)?),
            cal::SUBJECT => self.subject = Some(tree::content(c)?),
            cal::ATTENDEES => {
                self.attendees = Some(
                    c.children_with(cal::ATTENDEE)
                        .map(|a| {
                            Ok(Attendee {
                                email: tree::req_text(a, cal::EMAIL)?,
                                name: tree::opt_text(a, cal::NAME)?,
                                status: tree::opt_num(a, cal::ATTENDEE_STATUS)?,
                                attendee_type: tree::opt_num(a, cal::ATTENDEE_TYPE)?,
                            })
                        })
                        .collect::<Result<_, CommandError>>()?,
                )
            }
            cal::LOCATION => self.location = Some(tree::content(c)?),
            cal::END_TIME => self.end_time = Some(tree::content(c)?),
            asb::BODY if v.has_airsyncbase() => self.body = Some(Body::from_element(c)?),
            cal::SENSITIVITY => self.sensitivity = Some(num(c)?),
            cal::BUSY_STATUS => self.busy_status = Some(num(c)?),
            cal::ALL_DAY_EVENT => self.all_day_event = Some(tree::bool_of(c)?),
            cal::REMINDER => self.reminder = Some(num(c)?),
            cal::CATEGORIES => {
                self.categories = Some(
                    c.children_with(cal::CATEGORY)
                        .map(tree::content)
                        .collect::<Result<_, _>>()?,
                )
            }
            cal::MEETING_STATUS => self.meeting_status = Some(num(c)?),
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Writes the fields that come before `EndTime` in Exchange's order.
    fn write_head<'a>(&'a self, el: &mut Element<'a>) {
        tree::push_opt(el, cal::DT_STAMP, self.dt_stamp.as_deref());
        tree::push_opt(el, cal::START_TIME, self.start_time.as_deref());
        tree::push_opt(el, cal::SUBJECT, self.subject.as_deref());
    }

    fn write_attendees_location_end<'a>(&'a self, el: &mut Element<'a>) {
        if let Some(list) = &self.attendees {
            let mut a = Element::new(cal::ATTENDEES);
            for x in list {
                let mut ae = Element::new(cal::ATTENDEE);
                ae.push(tree::text_el(cal::EMAIL, &x.email));
                tree::push_opt(&mut ae, cal::NAME, x.name.as_deref());
                tree::push_opt(&mut ae, cal::ATTENDEE_STATUS, x.status);
                tree::push_opt(&mut ae, cal::ATTENDEE_TYPE, x.attendee_type);
                a.push(ae);
            }
            el.push(a);
        }
        tree::push_opt(el, cal::LOCATION, self.location.as_deref());
        tree::push_opt(el, cal::END_TIME, self.end_time.as_deref());
    }

    fn write_tail<'a>(
        &'a self,
        el: &mut Element<'a>,
        v: ProtocolVersion,
        exceptions: Option<&Element<'a>>,
    ) {
        if v.has_airsyncbase() {
            if let Some(b) = &self.body {
                el.push(b.to_element());
            }
        }
        tree::push_opt(el, cal::SENSITIVITY, self.sensitivity);
        tree::push_opt(el, cal::BUSY_STATUS, self.busy_status);
        tree::push_bool(el, cal::ALL_DAY_EVENT, self.all_day_event);
        tree::push_opt(el, cal::REMINDER, self.reminder);
        if let Some(cats) = &self.categories {
            let mut c = Element::new(cal::CATEGORIES);
            for cat in cats {
                c.push(tree::text_el(cal::CATEGORY, cat));
            }
            el.push(c);
        }
        if let Some(x) = exceptions {
            el.push(x.clone());
        }
        tree::push_opt(el, cal::MEETING_STATUS, self.meeting_status);
    }
}

impl Recurrence {
    fn from_element(el: &Element<'_>) -> Result<Self, CommandError> {
        Ok(Recurrence {
            recurrence_type: tree::req_num(el, cal::TYPE)?,
            occurrences: tree::opt_num(el, cal::OCCURRENCES)?,
            interval: tree::opt_num(el, cal::INTERVAL)?,
            week_of_month: tree::opt_num(el, cal::WEEK_OF_MONTH)?,
            day_of_week: tree::opt_num(el, cal::DAY_OF_WEEK)?,
            month_of_year: tree::opt_num(el, cal::MONTH_OF_YEAR)?,
            until: tree::opt_text(el, cal::UNTIL)?,
            day_of_month: tree::opt_num(el, cal::DAY_OF_MONTH)?,
            calendar_type: tree::opt_num(el, cal::CALENDAR_TYPE)?,
            is_leap_month: tree::opt_bool(el, cal::IS_LEAP_MONTH)?,
            first_day_of_week: tree::opt_num(el, cal::FIRST_DAY_OF_WEEK)?,
        })
    }

    fn to_element(&self) -> Element<'_> {
        let mut el = Element::new(cal::RECURRENCE);
        el.push(tree::text_el(cal::TYPE, self.recurrence_type));
        tree::push_opt(&mut el, cal::OCCURRENCES, self.occurrences);
        tree::push_opt(&mut el, cal::INTERVAL, self.interval);
        tree::push_opt(&mut el, cal::WEEK_OF_MONTH, self.week_of_month);
        tree::push_opt(&mut el, cal::DAY_OF_WEEK, self.day_of_week);
        tree::push_opt(&mut el, cal::MONTH_OF_YEAR, self.month_of_year);
        tree::push_opt(&mut el, cal::UNTIL, self.until.as_deref());
        tree::push_opt(&mut el, cal::DAY_OF_MONTH, self.day_of_month);
        tree::push_opt(&mut el, cal::CALENDAR_TYPE, self.calendar_type);
        tree::push_bool(&mut el, cal::IS_LEAP_MONTH, self.is_leap_month);
        tree::push_opt(&mut el, cal::FIRST_DAY_OF_WEEK, self.first_day_of_week);
        el
    }
}

impl Exception {
    fn from_element(el: &Element<'_>, v: ProtocolVersion) -> Result<Self, CommandError> {
        let mut x = Exception::default();
        for c in el.elements() {
            match c.tag {
                cal::DELETED => x.deleted = Some(tree::bool_of(c)?),
                cal::EXCEPTION_START_TIME => x.exception_start_time = Some(tree::content(c)?),
                _ => {
                    if !x.fields.read(c, v)? {
                        x.fields.extra.push(tree::owned(c));
                    }
                }
            }
        }
        Ok(x)
    }

    fn to_element(&self, v: ProtocolVersion) -> Element<'_> {
        let mut el = Element::new(cal::EXCEPTION);
        tree::push_bool(&mut el, cal::DELETED, self.deleted);
        self.fields.write_head(&mut el);
        self.fields.write_attendees_location_end(&mut el);
        self.fields.write_tail(&mut el, v, None);
        for x in &self.fields.extra {
            el.push(x.clone());
        }
        tree::push_opt(
            &mut el,
            cal::EXCEPTION_START_TIME,
            self.exception_start_time.as_deref(),
        );
        el
    }
}

impl Calendar {
    /// Reads the properties of a container element (`ApplicationData`, …).
    pub fn from_properties(el: &Element<'_>, v: ProtocolVersion) -> Result<Self, CommandError> {
        let mut c = Calendar::default();
        for p in el.elements() {
            match p.tag {
                cal::TIME_ZONE => c.time_zone = Some(tree::content(p)?),
                cal::UID => c.uid = Some(tree::content(p)?),
                cal::ORGANIZER_NAME => c.organizer_name = Some(tree::content(p)?),
                cal::ORGANIZER_EMAIL => c.organizer_email = Some(tree::content(p)?),
                cal::RECURRENCE => c.recurrence = Some(Recurrence::from_element(p)?),
                cal::EXCEPTIONS => {
                    c.exceptions = Some(
                        p.children_with(cal::EXCEPTION)
                            .map(|x| Exception::from_element(x, v))
                            .collect::<Result<_, _>>()?,
                    )
                }
                cal::RESPONSE_REQUESTED => c.response_requested = Some(tree::bool_of(p)?),
                cal::RESPONSE_TYPE => c.response_type = Some(num(p)?),
                cal::DISALLOW_NEW_TIME_PROPOSAL => {
                    c.disallow_new_time_proposal = Some(tree::bool_of(p)?)
                }
                asb::NATIVE_BODY_TYPE if v.has_airsyncbase() => c.native_body_type = Some(num(p)?),
                _ => {
                    if !c.fields.read(p, v)? {
                        c.fields.extra.push(tree::owned(p));
                    }
                }
            }
        }
        Ok(c)
    }

    /// Builds the properties inside an element named `tag`, in the order
    /// Exchange writes them.
    pub fn to_element_as(&self, tag: Tag, v: ProtocolVersion) -> Element<'_> {
        let mut el = Element::new(tag);
        tree::push_opt(&mut el, cal::TIME_ZONE, self.time_zone.as_deref());
        self.fields.write_head(&mut el);
        tree::push_opt(&mut el, cal::UID, self.uid.as_deref());
        tree::push_opt(&mut el, cal::ORGANIZER_NAME, self.organizer_name.as_deref());
        tree::push_opt(
            &mut el,
            cal::ORGANIZER_EMAIL,
            self.organizer_email.as_deref(),
        );
        self.fields.write_attendees_location_end(&mut el);
        if let Some(r) = &self.recurrence {
            el.push(r.to_element());
        }
        let exceptions = self.exceptions.as_ref().map(|list| {
            let mut x = Element::new(cal::EXCEPTIONS);
            for e in list {
                x.push(e.to_element(v));
            }
            x
        });
        self.fields.write_tail(&mut el, v, exceptions.as_ref());
        tree::push_bool(&mut el, cal::RESPONSE_REQUESTED, self.response_requested);
        tree::push_opt(&mut el, cal::RESPONSE_TYPE, self.response_type);
        tree::push_bool(
            &mut el,
            cal::DISALLOW_NEW_TIME_PROPOSAL,
            self.disallow_new_time_proposal,
        );
        if v.has_airsyncbase() {
            tree::push_opt(&mut el, asb::NATIVE_BODY_TYPE, self.native_body_type);
        }
        for x in &self.fields.extra {
            el.push(x.clone());
        }
        el
    }
}
