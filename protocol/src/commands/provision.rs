//! Provision (MS-ASPROV): policy download and acknowledgement (the two-step
//! PolicyKey dance), remote wipe acknowledgement, and from 14.1 the device
//! information sent along.
//!
//! Exists to type the exchange. It must not choose policies or keys. The
//! `EASProvisionDoc` settings are kept as their ordered elements (every
//! MS-ASPROV setting, including 16.x ones, passes through unchanged).

use super::settings::DeviceInformation;
use super::tree::{self, Owned};
use super::{eas_document, since, CommandError};
use crate::status::{PolicyStatus, ProvisionStatus};
use crate::version::ProtocolVersion;
use crate::wbxml::tags::{provision as pv, settings as st};
use crate::wbxml::{Element, Tag};

/// The WBXML policy type (12.0+).
pub const POLICY_TYPE_WBXML: &str = "MS-EAS-Provisioning-WBXML";
/// The XML policy type (2.5).
pub const POLICY_TYPE_XML: &str = "MS-WAP-Provisioning-XML";

/// A `Policy` in a request: a download (no key) or an acknowledgement.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PolicyRequest {
    /// `PolicyType`.
    pub policy_type: String,
    /// `PolicyKey` being acknowledged (the temporary key).
    pub policy_key: Option<u32>,
    /// `Status` of applying the policy (1 applied, 2 partially, …).
    pub status: Option<u8>,
}

/// Provision request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProvisionRequest {
    /// settings:`DeviceInformation/Set` (14.1+).
    pub device_information: Option<DeviceInformation>,
    /// `Policies/Policy`.
    pub policy: Option<PolicyRequest>,
    /// `RemoteWipe/Status` (acknowledging a wipe).
    pub remote_wipe_status: Option<u8>,
    /// `AccountOnlyRemoteWipe/Status` (16.1).
    pub account_only_remote_wipe_status: Option<u8>,
}

/// `Data` of a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyData {
    /// `EASProvisionDoc`: its settings in order.
    EasProvisionDoc(Vec<Owned>),
    /// The 2.5 XML policy document, as text.
    WapProvisioningXml(String),
}

impl PolicyData {
    /// The text of a setting of an `EASProvisionDoc` (e.g. `provision::MIN_DEVICE_PASSWORD_LENGTH`).
    pub fn setting(&self, tag: Tag) -> Option<&str> {
        match self {
            PolicyData::EasProvisionDoc(settings) => settings
                .iter()
                .find(|s| s.tag == tag)
                .map(|s| s.text().unwrap_or("")),
            PolicyData::WapProvisioningXml(_) => None,
        }
    }
}

/// A `Policy` in a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyResponse {
    /// `PolicyType`.
    pub policy_type: String,
    /// `Status`.
    pub status: PolicyStatus,
    /// `PolicyKey` (temporary on download, final on acknowledgement).
    pub policy_key: Option<u32>,
    /// `Data` (on download).
    pub data: Option<PolicyData>,
}

/// Provision response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvisionResponse {
    /// `Status`.
    pub status: ProvisionStatus,
    /// settings:`DeviceInformation/Status` (14.1+).
    pub device_information_status: Option<u16>,
    /// `Policies/Policy`.
    pub policy: Option<PolicyResponse>,
    /// `RemoteWipe`: the device must wipe itself.
    pub remote_wipe: bool,
    /// `AccountOnlyRemoteWipe` (16.1).
    pub account_only_remote_wipe: bool,
}

fn policy_el<'e, 'a>(el: &'e Element<'a>) -> Option<&'e Element<'a>> {
    el.child(pv::POLICIES)?.child(pv::POLICY)
}

impl ProvisionRequest {
    /// Reads a `Provision` request.
    pub fn from_element(el: &Element<'_>, v: ProtocolVersion) -> Result<Self, CommandError> {
        tree::expect_tag(el, pv::PROVISION)?;
        since(el, st::DEVICE_INFORMATION, v, ProtocolVersion::V14_1)?;
        since(el, pv::ACCOUNT_ONLY_REMOTE_WIPE, v, ProtocolVersion::V16_1)?;
        let policy = match policy_el(el) {
            None => None,
            Some(p) => Some(PolicyRequest {
                policy_type: tree::req_text(p, pv::POLICY_TYPE)?,
                policy_key: tree::opt_num(p, pv::POLICY_KEY)?,
                status: tree::opt_num(p, pv::STATUS)?,
            }),
        };
        let device_information = match el.child(st::DEVICE_INFORMATION) {
            None => None,
            Some(di) => Some(DeviceInformation::from_set(
                di.child(st::SET).ok_or(CommandError::Missing(st::SET))?,
            )?),
        };
        let wipe = |tag| -> Result<Option<u8>, CommandError> {
            el.child(tag)
                .map(|w| tree::req_num(w, pv::STATUS))
                .transpose()
        };
        Ok(ProvisionRequest {
            device_information,
            policy,
            remote_wipe_status: wipe(pv::REMOTE_WIPE)?,
            account_only_remote_wipe_status: wipe(pv::ACCOUNT_ONLY_REMOTE_WIPE)?,
        })
    }

    /// Builds the `Provision` request element.
    pub fn to_element(&self, v: ProtocolVersion) -> Element<'_> {
        let mut el = Element::new(pv::PROVISION);
        if v >= ProtocolVersion::V14_1 {
            if let Some(d) = &self.device_information {
                el.push(d.to_element(v));
            }
        }
        if let Some(p) = &self.policy {
            let mut pe = Element::new(pv::POLICY);
            pe.push(tree::text_el(pv::POLICY_TYPE, &p.policy_type));
            tree::push_opt(&mut pe, pv::POLICY_KEY, p.policy_key);
            tree::push_opt(&mut pe, pv::STATUS, p.status);
            el.push(Element::new(pv::POLICIES).with(pe));
        }
        if let Some(s) = self.remote_wipe_status {
            el.push(Element::new(pv::REMOTE_WIPE).with(tree::text_el(pv::STATUS, s)));
        }
        if v >= ProtocolVersion::V16_1 {
            if let Some(s) = self.account_only_remote_wipe_status {
                el.push(
                    Element::new(pv::ACCOUNT_ONLY_REMOTE_WIPE).with(tree::text_el(pv::STATUS, s)),
                );
            }
        }
        el
    }
}

impl ProvisionResponse {
    /// Reads a `Provision` response.
    pub fn from_element(el: &Element<'_>, _v: ProtocolVersion) -> Result<Self, CommandError> {
        tree::expect_tag(el, pv::PROVISION)?;
        let policy = match policy_el(el) {
            None => None,
            Some(p) => {
                let data = match p.child(pv::DATA) {
                    None => None,
                    Some(d) => Some(match d.child(pv::EAS_PROVISION_DOC) {
                        Some(doc) => PolicyData::EasProvisionDoc(tree::owned_children(doc)),
                        None => PolicyData::WapProvisioningXml(tree::content(d)?),
                    }),
                };
                Some(PolicyResponse {
                    policy_type: tree::req_text(p, pv::POLICY_TYPE)?,
                    status: PolicyStatus::from_code(tree::req_num(p, pv::STATUS)?),
                    policy_key: tree::opt_num(p, pv::POLICY_KEY)?,
                    data,
                })
            }
        };
        Ok(ProvisionResponse {
            status: ProvisionStatus::from_code(tree::req_num(el, pv::STATUS)?),
            device_information_status: el
                .child(st::DEVICE_INFORMATION)
                .map(|d| tree::req_num(d, st::STATUS))
                .transpose()?,
            policy,
            remote_wipe: tree::has(el, pv::REMOTE_WIPE),
            account_only_remote_wipe: tree::has(el, pv::ACCOUNT_ONLY_REMOTE_WIPE),
        })
    }

    /// Builds the `Provision` response element.
    pub fn to_element(&self, v: ProtocolVersion) -> Element<'_> {
        let mut el = Element::new(pv::PROVISION);
        el.push(tree::text_el(pv::STATUS, self.status.code()));
        if v >= ProtocolVersion::V14_1 {
            if let Some(s) = self.device_information_status {
                el.push(Element::new(st::DEVICE_INFORMATION).with(tree::text_el(st::STATUS, s)));
            }
        }
        if let Some(p) = &self.policy {
            let mut pe = Element::new(pv::POLICY);
            pe.push(tree::text_el(pv::POLICY_TYPE, &p.policy_type));
            pe.push(tree::text_el(pv::STATUS, p.status.code()));
            tree::push_opt(&mut pe, pv::POLICY_KEY, p.policy_key);
            match &p.data {
                None => {}
                Some(PolicyData::EasProvisionDoc(settings)) => {
                    let mut doc = Element::new(pv::EAS_PROVISION_DOC);
                    for s in settings {
                        doc.push(s.clone());
                    }
                    pe.push(Element::new(pv::DATA).with(doc));
                }
                Some(PolicyData::WapProvisioningXml(xml)) => {
                    pe.push(tree::text_el(pv::DATA, xml));
                }
            }
            el.push(Element::new(pv::POLICIES).with(pe));
        }
        tree::push_flag(&mut el, pv::REMOTE_WIPE, self.remote_wipe);
        if v >= ProtocolVersion::V16_1 {
            tree::push_flag(
                &mut el,
                pv::ACCOUNT_ONLY_REMOTE_WIPE,
                self.account_only_remote_wipe,
            );
        }
        el
    }
}

eas_document!(ProvisionRequest, pv::PROVISION);
eas_document!(ProvisionResponse, pv::PROVISION);
