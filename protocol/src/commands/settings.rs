//! Settings (MS-ASCMD 2.2.1.18): device information, user information,
//! out-of-office, device password, rights management templates.
//!
//! Exists to type these exchanges. The device password is a
//! [`crate::headers::Password`] so it never prints. Out-of-office and
//! rights-management payloads are kept as their elements for now.

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
    pub fn to_element(&self, v: ProtocolVersion) -> Owned {
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

/// Settings request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SettingsRequest {
    /// `Oof` (Get or Set), kept as its element.
    pub oof: Option<Owned>,
    /// `DevicePassword/Set/Password` (never printed).
    pub device_password: Option<Password>,
    /// `UserInformation/Get`.
    pub user_information_get: bool,
    /// `DeviceInformation/Set`.
    pub device_information: Option<DeviceInformation>,
    /// `RightsManagementInformation/Get` (14.1+).
    pub rights_management_get: bool,
}

/// `UserInformation/Get` of a response.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserInformation {
    /// `EmailAddresses/SmtpAddress` (before 14.1 or outside Accounts).
    pub smtp_addresses: Vec<String>,
    /// `EmailAddresses/PrimarySmtpAddress` (14.1+).
    pub primary_smtp_address: Option<String>,
    /// `Accounts` (14.1+), kept as its element.
    pub accounts: Option<Owned>,
}

/// Settings response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingsResponse {
    /// Global `Status`.
    pub status: SettingsStatus,
    /// `Oof` answer, kept as its element.
    pub oof: Option<Owned>,
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
            oof: el.child(st::OOF).map(tree::owned),
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
    pub fn to_element(&self, v: ProtocolVersion) -> Owned {
        let mut el = Element::new(st::SETTINGS);
        if let Some(o) = &self.oof {
            el.push(o.clone());
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
                let get = match u.child(st::GET) {
                    None => None,
                    Some(g) => {
                        let mut info = UserInformation {
                            accounts: g.child(st::ACCOUNTS).map(tree::owned),
                            ..UserInformation::default()
                        };
                        if let Some(ea) = g.child(st::EMAIL_ADDRESSES) {
                            info.smtp_addresses = ea
                                .children_with(st::SMTP_ADDRESS)
                                .map(tree::content)
                                .collect::<Result<_, _>>()?;
                            info.primary_smtp_address =
                                tree::opt_text(ea, st::PRIMARY_SMTP_ADDRESS)?;
                        }
                        Some(info)
                    }
                };
                Some((status_in(u)?, get))
            }
        };
        Ok(SettingsResponse {
            status: status_in(el)?,
            oof: el.child(st::OOF).map(tree::owned),
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
    pub fn to_element(&self, _v: ProtocolVersion) -> Owned {
        let status_el = |s: SettingsStatus| tree::text_el(st::STATUS, s.code());
        let mut el = Element::new(st::SETTINGS);
        el.push(status_el(self.status));
        if let Some(o) = &self.oof {
            el.push(o.clone());
        }
        if let Some(s) = self.device_password_status {
            el.push(Element::new(st::DEVICE_PASSWORD).with(status_el(s)));
        }
        if let Some((s, get)) = &self.user_information {
            let mut u = Element::new(st::USER_INFORMATION).with(status_el(*s));
            if let Some(info) = get {
                let mut g = Element::new(st::GET);
                if !info.smtp_addresses.is_empty() || info.primary_smtp_address.is_some() {
                    let mut ea = Element::new(st::EMAIL_ADDRESSES);
                    for a in &info.smtp_addresses {
                        ea.push(tree::text_el(st::SMTP_ADDRESS, a));
                    }
                    tree::push_opt(
                        &mut ea,
                        st::PRIMARY_SMTP_ADDRESS,
                        info.primary_smtp_address.as_deref(),
                    );
                    g.push(ea);
                }
                if let Some(a) = &info.accounts {
                    g.push(a.clone());
                }
                u.push(g);
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
