//! ValidateCert (MS-ASCMD 2.2.1.22): check S/MIME certificates.
//!
//! Exists to type the request and response; it must not validate anything.
//! Certificates are carried as their base64 text, unchanged.

use super::tree;
use super::{eas_document, CommandError};
use crate::status::ValidateCertStatus;
use crate::version::ProtocolVersion;
use crate::wbxml::tags::validatecert as vc;
use crate::wbxml::Element;

/// ValidateCert request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ValidateCertRequest {
    /// `CertificateChain/Certificate` (intermediates).
    pub certificate_chain: Vec<String>,
    /// `Certificates/Certificate` (to validate).
    pub certificates: Vec<String>,
    /// `CheckCRL`.
    pub check_crl: Option<bool>,
}

/// ValidateCert response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidateCertResponse {
    /// Global `Status`.
    pub status: ValidateCertStatus,
    /// `Certificate/Status`, one per certificate.
    pub certificates: Vec<ValidateCertStatus>,
}

fn certs(el: &Element<'_>, tag: crate::wbxml::Tag) -> Result<Vec<String>, CommandError> {
    match el.child(tag) {
        None => Ok(Vec::new()),
        Some(c) => c
            .children_with(vc::CERTIFICATE)
            .map(tree::content)
            .collect(),
    }
}

impl ValidateCertRequest {
    /// Reads a `ValidateCert` request.
    pub fn from_element(el: &Element<'_>, _v: ProtocolVersion) -> Result<Self, CommandError> {
        tree::expect_tag(el, vc::VALIDATE_CERT)?;
        Ok(ValidateCertRequest {
            certificate_chain: certs(el, vc::CERTIFICATE_CHAIN)?,
            certificates: certs(el, vc::CERTIFICATES)?,
            check_crl: tree::opt_bool(el, vc::CHECK_CRL)?,
        })
    }

    /// Builds the `ValidateCert` request element.
    pub fn to_element(&self, _v: ProtocolVersion) -> Element<'_> {
        let mut el = Element::new(vc::VALIDATE_CERT);
        for (tag, list) in [
            (vc::CERTIFICATE_CHAIN, &self.certificate_chain),
            (vc::CERTIFICATES, &self.certificates),
        ] {
            if !list.is_empty() {
                let mut c = Element::new(tag);
                for cert in list {
                    c.push(tree::text_el(vc::CERTIFICATE, cert));
                }
                el.push(c);
            }
        }
        tree::push_bool(&mut el, vc::CHECK_CRL, self.check_crl);
        el
    }
}

impl ValidateCertResponse {
    /// Reads a `ValidateCert` response.
    pub fn from_element(el: &Element<'_>, _v: ProtocolVersion) -> Result<Self, CommandError> {
        tree::expect_tag(el, vc::VALIDATE_CERT)?;
        Ok(ValidateCertResponse {
            status: ValidateCertStatus::from_code(tree::req_num(el, vc::STATUS)?),
            certificates: el
                .children_with(vc::CERTIFICATE)
                .map(|c| Ok(ValidateCertStatus::from_code(tree::req_num(c, vc::STATUS)?)))
                .collect::<Result<_, CommandError>>()?,
        })
    }

    /// Builds the `ValidateCert` response element.
    pub fn to_element(&self, _v: ProtocolVersion) -> Element<'_> {
        let mut el = Element::new(vc::VALIDATE_CERT);
        el.push(tree::text_el(vc::STATUS, self.status.code()));
        for s in &self.certificates {
            el.push(Element::new(vc::CERTIFICATE).with(tree::text_el(vc::STATUS, s.code())));
        }
        el
    }
}

eas_document!(ValidateCertRequest, vc::VALIDATE_CERT);
eas_document!(ValidateCertResponse, vc::VALIDATE_CERT);
