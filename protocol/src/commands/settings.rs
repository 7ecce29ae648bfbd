//! Settings (MS-ASCMD 2.2.1.18): device information, user information,
//! out-of-office, device password, rights management templates.
//!
//! Exists to type these exchanges. The device password is a
//! [`crate::headers::Password`] so it never prints. Rights-management
//! payloads are kept as their elements for now.
//!
//! The user's addresses move with the version (MS-ASCMD 2.2.3.57): under
//! `UserInformation/Get/EmailAddresses` in 12.0 to 14.0, under
//! `Get/Accounts/Account/EmailAddresses` from 14.1. [`UserInformation`] is
//! one model of both: the response is written in the form of its version,
//! and read in either form (a client must not choke on a server that
//! answers the other one).

use super::tree::{self, Owned};
use super::{eas_document, since, CommandError};
use crate::headers::Password;
use crate::status::SettingsStatus;
use crate::version::ProtocolVersion;
use crate::wbxml::tags::settings as st;
use crate::wbxml::Element;

/// `DeviceInformation/Set` (also sent inside Provision from 14.1).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeviceInformation {
    /// `Model`.
    pub model: Option<String>,
    /// `IMEI`.
    pub imei: Option<String>,
    /// `FriendlyName`.
    pub friendly_name: Option<String>,
    /// `OS`.
    pub os: Option<String>,
    /// `OSLanguage`.
    pub os_language: Option<String>,
    /// `PhoneNumber`.
    pub phone_number: Option<String>,
    /// `UserAgent`.
    pub user_agent: Option<String>,
    /// `EnableOutboundSMS` (14.0+).
    pub enable_outbound_sms: Option<bool>,
    /// `MobileOperator` (14.0+).
    pub mobile_operator: Option<String>,
}

impl DeviceInformation {
    /// Reads a `Set` element.
    pub fn from_set(el: &Element<'_>) -> Result<Self, CommandError> {
        Ok(DeviceInformation {
            model: tree::opt_text(el, st::MODEL)?,
            imei: tree::opt_text(el, st::IMEI)?,
            friendly_name: tree::opt_text(el, st::FRIENDLY_NAME)?,
            os: tree::opt_text(el, st::OS)?,
            os_language: tree::opt_text(el, st::OS_LANGUAGE)?,
            phone_number: tree::opt_text(el, st::PHONE_NUMBER)?,
            user_agent: tree::opt_text(el, st::USER_AGENT)?,
            enable_outbound_sms: tree::opt_bool(el, st::ENABLE_OUTBOUND_SMS)?,
            mobile_operator: tree::opt_text(el, st::MOBILE_OPERATOR)?,
        })
    }

    /// Builds `DeviceInformation/Set`.
    pub fn to_element(&self, v: ProtocolVersion) -> Element<'_> {
        let mut set = Element::new(st::SET);
        tree::push_opt(&mut set, st::MODEL, self.model.as_deref());
        tree::push_opt(&mut set, st::IMEI, self.imei.as_deref());
        tree::push_opt(&mut set, st::FRIENDLY_NAME, self.friendly_name.as_deref());
        tree::push_opt(&mut set, st::OS, self.os.as_deref());
        tree::push_opt(&mut set, st::OS_LANGUAGE, self.os_language.as_deref());
        tree::push_opt(&mut set, st::PHONE_NUMBER, self.phone_number.as_deref());
        tree::push_opt(&mut set, st::USER_AGENT, self.user_agent.as_deref());
        if v >= ProtocolVersion::V14_0 {
            tree::push_bool(&mut set, st::ENABLE_OUTBOUND_SMS, self.enable_outbound_sms);
            tree::push_opt(
                &mut set,
                st::MOBILE_OPERATOR,
                self.mobile_operator.as_deref(),
            );
        }
        Element::new(st::DEVICE_INFORMATION).with(set)
    }
}

/// Who an out-of-office message is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OofAudience {
    /// `AppliesToInternal`.
    Internal,
    /// `AppliesToExternalKnown`.
    ExternalKnown,
    /// `AppliesToExternalUnknown`.
    ExternalUnknown,
}

impl OofAudience {
    fn tag(self) -> crate::wbxml::Tag {
        match self {
            OofAudience::Internal => st::APPLIES_TO_INTERNAL,
            OofAudience::ExternalKnown => st::APPLIES_TO_EXTERNAL_KNOWN,
            OofAudience::ExternalUnknown => st::APPLIES_TO_EXTERNAL_UNKNOWN,
        }
    }
}

/// `OofMessage`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OofMessage {
    /// The audience (one `AppliesTo…` element).
    pub audience: OofAudience,
    /// `Enabled`.
    pub enabled: Option<bool>,
    /// `ReplyMessage`.
    pub reply_message: Option<String>,
    /// `BodyType` (`Text` or `HTML`).
    pub body_type: Option<String>,
}

/// Out-of-office settings (`Oof/Set`, or `Oof/Get` in a response).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OofSettings {
    /// `OofState`: 0 disabled, 1 global, 2 time-based.
    pub state: Option<u8>,
    /// `StartTime`.
    pub start_time: Option<String>,
    /// `EndTime`.
    pub end_time: Option<String>,
    /// `OofMessage`s.
    pub messages: Vec<OofMessage>,
}

impl OofSettings {
    fn from_element(el: &Element<'_>) -> Result<Self, CommandError> {
        let messages = el
            .children_with(st::OOF_MESSAGE)
            .map(|m| {
                let audience = [
                    OofAudience::Internal,
                    OofAudience::ExternalKnown,
                    OofAudience::ExternalUnknown,
                ]
                .into_iter()
                .find(|a| tree::has(m, a.tag()))
                .ok_or(CommandError::Missing(st::APPLIES_TO_INTERNAL))?;
                Ok(OofMessage {
                    audience,
                    enabled: tree::opt_bool(m, st::ENABLED)?,
                    reply_message: tree::opt_text(m, st::REPLY_MESSAGE)?,
                    body_type: tree::opt_text(m, st::BODY_TYPE)?,
                })
            })
            .collect::<Result<_, CommandError>>()?;
        Ok(OofSettings {
            state: tree::opt_num(el, st::OOF_STATE)?,
            start_time: tree::opt_text(el, st::START_TIME)?,
            end_time: tree::opt_text(el, st::END_TIME)?,
            messages,
        })
    }

    fn to_element(&self, tag: crate::wbxml::Tag) -> Element<'_> {
        let mut el = Element::new(tag);
        tree::push_opt(&mut el, st::OOF_STATE, self.state);
        tree::push_opt(&mut el, st::START_TIME, self.start_time.as_deref());
        tree::push_opt(&mut el, st::END_TIME, self.end_time.as_deref());
        for m in &self.messages {
            let mut me = Element::new(st::OOF_MESSAGE).with(Element::new(m.audience.tag()));
            tree::push_bool(&mut me, st::ENABLED, m.enabled);
            tree::push_opt(&mut me, st::REPLY_MESSAGE, m.reply_message.as_deref());
            tree::push_opt(&mut me, st::BODY_TYPE, m.body_type.as_deref());
            el.push(me);
        }
        el
    }
}

/// `Oof` in a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OofRequest {
    /// `Get/BodyType`.
    Get {
        /// `Text` or `HTML`.
        body_type: String,
    },
    /// `Set`.
    Set(OofSettings),
}

/// `Oof` in a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OofResponse {
    /// `Status`.
    pub status: SettingsStatus,
    /// `Get` (answer to a Get).
    pub get: Option<OofSettings>,
}

/// Settings request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SettingsRequest {
    /// `Oof` (Get or Set).
    pub oof: Option<OofRequest>,
    /// `DevicePassword/Set/Password` (never printed).
    pub device_password: Option<Password>,
    /// `UserInformation/Get`.
    pub user_information_get: bool,
    /// `DeviceInformation/Set`.
    pub device_information: Option<DeviceInformation>,
    /// `RightsManagementInformation/Get` (14.1+).
    pub rights_management_get: bool,
}

/// One `Accounts/Account` of a response (14.1+); before 14.1, the user's
/// addresses are the `EmailAddresses` of `Get`, read and written as a single
/// account with nothing else.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Account {
    /// `AccountId` (14.1+; never for the primary account).
    pub account_id: Option<String>,
    /// `AccountName` (14.1+).
    pub account_name: Option<String>,
    /// `UserDisplayName` (14.1+).
    pub user_display_name: Option<String>,
    /// `SendDisabled` (14.1+).
    pub send_disabled: Option<bool>,
    /// `EmailAddresses/SMTPAddress`es.
    pub smtp_addresses: Vec<String>,
    /// `EmailAddresses/PrimarySmtpAddress` (14.1+).
    pub primary_smtp_address: Option<String>,
}

impl Account {
    /// Reads an `EmailAddresses` element into this account.
    fn read_email_addresses(&mut self, ea: &Element<'_>) -> Result<(), CommandError> {
        for a in ea.children_with(st::SMTP_ADDRESS) {
            self.smtp_addresses.push(tree::content(a)?);
        }
        if self.primary_smtp_address.is_none() {
            self.primary_smtp_address = tree::opt_text(ea, st::PRIMARY_SMTP_ADDRESS)?;
        }
        Ok(())
    }

    /// Reads an `Account` element (14.1+).
    fn from_element(el: &Element<'_>) -> Result<Self, CommandError> {
        let mut account = Account {
            account_id: tree::opt_text(el, st::ACCOUNT_ID)?,
            account_name: tree::opt_text(el, st::ACCOUNT_NAME)?,
            user_display_name: tree::opt_text(el, st::USER_DISPLAY_NAME)?,
            send_disabled: tree::opt_bool(el, st::SEND_DISABLED)?,
            ..Account::default()
        };
        if let Some(ea) = el.child(st::EMAIL_ADDRESSES) {
            account.read_email_addresses(ea)?;
        }
        Ok(account)
    }

    /// `EmailAddresses`, with `PrimarySmtpAddress` when `primary` (14.1+);
    /// none when there is no address to put in it.
    fn email_addresses(&self, primary: bool) -> Option<Element<'_>> {
        let primary = self.primary_smtp_address.as_deref().filter(|_| primary);
        if self.smtp_addresses.is_empty() && primary.is_none() {
            return None;
        }
        let mut ea = Element::new(st::EMAIL_ADDRESSES);
        for a in &self.smtp_addresses {
            ea.push(tree::text_el(st::SMTP_ADDRESS, a));
        }
        tree::push_opt(&mut ea, st::PRIMARY_SMTP_ADDRESS, primary);
        Some(ea)
    }

    /// Builds an `Account` element (14.1+).
    fn to_element(&self) -> Element<'_> {
        let mut el = Element::new(st::ACCOUNT);
        tree::push_opt(&mut el, st::ACCOUNT_ID, self.account_id.as_deref());
        tree::push_opt(&mut el, st::ACCOUNT_NAME, self.account_name.as_deref());
        tree::push_opt(
            &mut el,
            st::USER_DISPLAY_NAME,
            self.user_display_name.as_deref(),
        );
        tree::push_bool(&mut el, st::SEND_DISABLED, self.send_disabled);
        if let Some(ea) = self.email_addresses(true) {
            el.push(ea);
        }
        el
    }
}

/// `UserInformation/Get` of a response.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserInformation {
    /// The accounts, the user's own first. Before 14.1 only the addresses
    /// are written, every account's in one `Get/EmailAddresses`.
    pub accounts: Vec<Account>,
}

impl UserInformation {
    /// Reads a response's `Get`: `EmailAddresses` straight under it (before
    /// 14.1) and `Accounts/Account` (14.1+), whichever it holds.
    fn from_get(get: &Element<'_>) -> Result<Self, CommandError> {
        let mut accounts = Vec::new();
        if let Some(ea) = get.child(st::EMAIL_ADDRESSES) {
            let mut account = Account::default();
            account.read_email_addresses(ea)?;
            accounts.push(account);
        }
        if let Some(list) = get.child(st::ACCOUNTS) {
            for a in list.children_with(st::ACCOUNT) {
                accounts.push(Account::from_element(a)?);
            }
        }
        Ok(UserInformation { accounts })
    }

    /// Builds the response's `Get` in the form of `v`.
    fn to_get(&self, v: ProtocolVersion) -> Element<'_> {
        let mut get = Element::new(st::GET);
        if v >= ProtocolVersion::V14_1 {
            if !self.accounts.is_empty() {
                let mut list = Element::new(st::ACCOUNTS);
                for a in &self.accounts {
                    list.push(a.to_element());
                }
                get.push(list);
            }
        } else {
            let mut addresses = self
                .accounts
                .iter()
                .flat_map(|a| &a.smtp_addresses)
                .peekable();
            if addresses.peek().is_some() {
                let mut ea = Element::new(st::EMAIL_ADDRESSES);
                for a in addresses {
                    ea.push(tree::text_el(st::SMTP_ADDRESS, a));
                }
                get.push(ea);
            }
        }
        get
    }
}

/// Settings response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingsResponse {
    /// Global `Status`.
    pub status: SettingsStatus,
    /// `Oof` answer.
    pub oof: Option<OofResponse>,
    /// `DevicePassword/Status`.
    pub device_password_status: Option<SettingsStatus>,
    /// `UserInformation`: its `Status` and `Get`.
    pub user_information: Option<(SettingsStatus, Option<UserInformation>)>,
    /// `DeviceInformation/Status`.
    pub device_information_status: Option<SettingsStatus>,
    /// `RightsManagementInformation`, kept as its element.
    pub rights_management: Option<Owned>,
}

fn status_in(el: &Element<'_>) -> Result<SettingsStatus, CommandError> {
    Ok(SettingsStatus::from_code(tree::req_num(el, st::STATUS)?))
}

impl SettingsRequest {
    /// Reads a `Settings` request.
    pub fn from_element(el: &Element<'_>, v: ProtocolVersion) -> Result<Self, CommandError> {
        tree::expect_tag(el, st::SETTINGS)?;
        since(
            el,
            st::RIGHTS_MANAGEMENT_INFORMATION,
            v,
            ProtocolVersion::V14_1,
        )?;
        let device_password = match el.child(st::DEVICE_PASSWORD) {
            None => None,
            Some(dp) => {
                let set = dp.child(st::SET).ok_or(CommandError::Missing(st::SET))?;
                Some(Password::new(tree::req_text(set, st::PASSWORD)?))
            }
        };
        let device_information = match el.child(st::DEVICE_INFORMATION) {
            None => None,
            Some(di) => Some(DeviceInformation::from_set(
                di.child(st::SET).ok_or(CommandError::Missing(st::SET))?,
            )?),
        };
        Ok(SettingsRequest {
            oof: match el.child(st::OOF) {
                None => None,
                Some(o) => Some(match (o.child(st::GET), o.child(st::SET)) {
                    (Some(g), _) => OofRequest::Get {
                        body_type: tree::req_text(g, st::BODY_TYPE)?,
                    },
                    (None, Some(set)) => OofRequest::Set(OofSettings::from_element(set)?),
                    (None, None) => return Err(CommandError::Missing(st::GET)),
                }),
            },
            device_password,
            user_information_get: el
                .child(st::USER_INFORMATION)
                .is_some_and(|u| tree::has(u, st::GET)),
            device_information,
            rights_management_get: el
                .child(st::RIGHTS_MANAGEMENT_INFORMATION)
                .is_some_and(|u| tree::has(u, st::GET)),
        })
    }

    /// Builds the `Settings` request element.
    pub fn to_element(&self, v: ProtocolVersion) -> Element<'_> {
        let mut el = Element::new(st::SETTINGS);
        match &self.oof {
            None => {}
            Some(OofRequest::Get { body_type }) => el.push(
                Element::new(st::OOF)
                    .with(Element::new(st::GET).with(tree::text_el(st::BODY_TYPE, body_type))),
            ),
            Some(OofRequest::Set(settings)) => {
                el.push(Element::new(st::OOF).with(settings.to_element(st::SET)))
            }
        }
        if let Some(p) = &self.device_password {
            el.push(
                Element::new(st::DEVICE_PASSWORD)
                    .with(Element::new(st::SET).with(tree::text_el(st::PASSWORD, p.expose()))),
            );
        }
        if self.user_information_get {
            el.push(Element::new(st::USER_INFORMATION).with(Element::new(st::GET)));
        }
        if let Some(d) = &self.device_information {
            el.push(d.to_element(v));
        }
        if self.rights_management_get && v >= ProtocolVersion::V14_1 {
            el.push(Element::new(st::RIGHTS_MANAGEMENT_INFORMATION).with(Element::new(st::GET)));
        }
        el
    }
}

impl SettingsResponse {
    /// Reads a `Settings` response.
    pub fn from_element(el: &Element<'_>, _v: ProtocolVersion) -> Result<Self, CommandError> {
        tree::expect_tag(el, st::SETTINGS)?;
        let user_information = match el.child(st::USER_INFORMATION) {
            None => None,
            Some(u) => {
                let get = u
                    .child(st::GET)
                    .map(UserInformation::from_get)
                    .transpose()?;
                Some((status_in(u)?, get))
            }
        };
        Ok(SettingsResponse {
            status: status_in(el)?,
            oof: el
                .child(st::OOF)
                .map(|o| {
                    Ok::<_, CommandError>(OofResponse {
                        status: status_in(o)?,
                        get: o
                            .child(st::GET)
                            .map(OofSettings::from_element)
                            .transpose()?,
                    })
                })
                .transpose()?,
            device_password_status: el.child(st::DEVICE_PASSWORD).map(status_in).transpose()?,
            user_information,
            device_information_status: el
                .child(st::DEVICE_INFORMATION)
                .map(status_in)
                .transpose()?,
            rights_management: el.child(st::RIGHTS_MANAGEMENT_INFORMATION).map(tree::owned),
        })
    }

    /// Builds the `Settings` response element.
    pub fn to_element(&self, v: ProtocolVersion) -> Element<'_> {
        let status_el = |s: SettingsStatus| tree::text_el(st::STATUS, s.code());
        let mut el = Element::new(st::SETTINGS);
        el.push(status_el(self.status));
        if let Some(o) = &self.oof {
            let mut oe = Element::new(st::OOF).with(status_el(o.status));
            if let Some(g) = &o.get {
                oe.push(g.to_element(st::GET));
            }
            el.push(oe);
        }
        if let Some(s) = self.device_password_status {
            el.push(Element::new(st::DEVICE_PASSWORD).with(status_el(s)));
        }
        if let Some((s, get)) = &self.user_information {
            let mut u = Element::new(st::USER_INFORMATION).with(status_el(*s));
            if let Some(info) = get {
                u.push(info.to_get(v));
            }
            el.push(u);
        }
        if let Some(s) = self.device_information_status {
            el.push(Element::new(st::DEVICE_INFORMATION).with(status_el(s)));
        }
        if let Some(r) = &self.rights_management {
            el.push(r.clone());
        }
        el
    }
}

eas_document!(SettingsRequest, st::SETTINGS);
eas_document!(SettingsResponse, st::SETTINGS);

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test code: a panic is a test failure")]
mod tests {
    use super::*;

    /// The element at `path` under `el`, each step the first child so named.
    fn at<'e, 'a>(el: &'e Element<'a>, path: &[crate::wbxml::Tag]) -> Option<&'e Element<'a>> {
        path.iter().try_fold(el, |e, t| e.child(*t))
    }

    fn response(info: UserInformation) -> SettingsResponse {
        SettingsResponse {
            status: SettingsStatus::Success,
            oof: None,
            device_password_status: None,
            user_information: Some((SettingsStatus::Success, Some(info))),
            device_information_status: None,
            rights_management: None,
        }
    }

    fn ann() -> UserInformation {
        UserInformation {
            accounts: vec![Account {
                user_display_name: Some("Ann".into()),
                smtp_addresses: vec!["ann@example.org".into(), "a@example.org".into()],
                primary_smtp_address: Some("ann@example.org".into()),
                ..Account::default()
            }],
        }
    }

    // [MS-ASCMD] 2.2.3.57 EmailAddresses: a child of Get in 12.0, 12.1 and
    // 14.0, of Accounts/Account from 14.1; 2.2.3.138 PrimarySmtpAddress and
    // 2.2.3.2 Account's children are 14.1+ only.
    #[test]
    fn user_information_email_addresses_move_under_account_from_14_1() {
        let res = response(ann());
        let get = [st::USER_INFORMATION, st::GET];
        for v in [ProtocolVersion::V12_1, ProtocolVersion::V14_0] {
            let el = res.to_element(v);
            let g = at(&el, &get).unwrap();
            assert!(g.child(st::ACCOUNTS).is_none(), "{v}");
            let ea = g.child(st::EMAIL_ADDRESSES).unwrap();
            let smtp: Vec<_> = ea
                .children_with(st::SMTP_ADDRESS)
                .map(|a| a.text().unwrap())
                .collect();
            assert_eq!(smtp, ["ann@example.org", "a@example.org"], "{v}");
            assert!(ea.child(st::PRIMARY_SMTP_ADDRESS).is_none(), "{v}");
            assert_eq!(g.elements().count(), 1, "{v}");
        }
        for v in [
            ProtocolVersion::V14_1,
            ProtocolVersion::V16_0,
            ProtocolVersion::V16_1,
        ] {
            let el = res.to_element(v);
            let g = at(&el, &get).unwrap();
            assert!(g.child(st::EMAIL_ADDRESSES).is_none(), "{v}");
            let account = at(g, &[st::ACCOUNTS, st::ACCOUNT]).unwrap();
            assert_eq!(account.child_text(st::USER_DISPLAY_NAME), Some("Ann"));
            assert!(account.child(st::ACCOUNT_ID).is_none(), "{v}");
            let ea = account.child(st::EMAIL_ADDRESSES).unwrap();
            assert_eq!(
                ea.children_with(st::SMTP_ADDRESS).count(),
                2,
                "{v}: every address"
            );
            assert_eq!(
                ea.child_text(st::PRIMARY_SMTP_ADDRESS),
                Some("ann@example.org"),
                "{v}"
            );
        }
    }

    // A client reads either form whatever the version it asked for.
    #[test]
    fn user_information_is_read_in_either_form() {
        let old = crate::xml::xml_to_element(
            r#"<Settings xmlns="Settings:"><Status>1</Status><UserInformation><Status>1</Status><Get><EmailAddresses><SMTPAddress>ann@example.org</SMTPAddress></EmailAddresses></Get></UserInformation></Settings>"#,
        )
        .unwrap();
        let new = crate::xml::xml_to_element(
            r#"<Settings xmlns="Settings:"><Status>1</Status><UserInformation><Status>1</Status><Get><Accounts><Account><UserDisplayName>Ann</UserDisplayName><SendDisabled>0</SendDisabled><EmailAddresses><SMTPAddress>ann@example.org</SMTPAddress><PrimarySmtpAddress>ann@example.org</PrimarySmtpAddress></EmailAddresses></Account><Account><AccountId>2</AccountId><AccountName>Club</AccountName><EmailAddresses><SMTPAddress>ann@club.example</SMTPAddress></EmailAddresses></Account></Accounts></Get></UserInformation></Settings>"#,
        )
        .unwrap();
        let addresses = |el: &Element<'_>, v| {
            let res = SettingsResponse::from_element(el, v).unwrap();
            let (_, info) = res.user_information.unwrap();
            info.unwrap().accounts
        };
        for v in [ProtocolVersion::V14_0, ProtocolVersion::V16_1] {
            let old = addresses(&old, v);
            assert_eq!(old.len(), 1);
            assert_eq!(old[0].smtp_addresses, ["ann@example.org"]);
            let new = addresses(&new, v);
            assert_eq!(new.len(), 2);
            assert_eq!(new[0].smtp_addresses, ["ann@example.org"]);
            assert_eq!(
                new[0].primary_smtp_address.as_deref(),
                Some("ann@example.org")
            );
            assert_eq!(new[0].send_disabled, Some(false));
            assert_eq!(new[1].account_id.as_deref(), Some("2"));
            assert_eq!(new[1].account_name.as_deref(), Some("Club"));
            assert_eq!(new[1].smtp_addresses, ["ann@club.example"]);
        }
    }
}
