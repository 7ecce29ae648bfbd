//! Contact item payloads (MS-ASCNTC): the Contacts page properties as named
//! fields, with Categories, Children and the AirSyncBase body.
//!
//! Exists so the CardDAV connector maps contacts from a struct. It must not
//! reformat values (dates, phone numbers stay as sent). Contacts2 properties
//! and anything else not named here are kept in `extra`, in order.

use super::airsyncbase::Body;
use super::tree::{self, Owned};
use super::CommandError;
use crate::version::ProtocolVersion;
use crate::wbxml::tags::{airsyncbase as asb, contacts as ct};
use crate::wbxml::{Element, Tag};

macro_rules! contact {
    ($($field:ident = $tag:ident $name:literal,)*) => {
        /// A contact. Every field is optional: a Sync `Change` carries only
        /// what changed (and per MS-ASCNTC, an absent field is deleted).
        #[derive(Debug, Clone, PartialEq, Eq, Default)]
        pub struct Contact {
            /// airsyncbase `Body` (12.0+).
            pub body: Option<Body>,
            $(
                #[doc = concat!("`", $name, "`.")]
                pub $field: Option<String>,
            )*
            /// `Categories/Category`.
            pub categories: Option<Vec<String>>,
            /// `Children/Child`.
            pub children: Option<Vec<String>>,
            /// airsyncbase `NativeBodyType`.
            pub native_body_type: Option<u8>,
            /// Other properties (Contacts2, 2.5 body…), in order.
            pub extra: Vec<Owned>,
        }

        impl Contact {
            fn read_text(&mut self, c: &Element<'_>) -> Result<bool, CommandError> {
                let slot = match c.tag {
                    $(ct::$tag => &mut self.$field,)*
                    _ => return Ok(false),
                };
                if slot.is_some() {
                    return Ok(false);
                }
                *slot = Some(tree::content(c)?);
                Ok(true)
            }

            fn write_text<'a>(&'a self, el: &mut Element<'a>) {
                $(tree::push_opt(el, ct::$tag, self.$field.as_deref());)*
            }
        }
    };
}

// Exchange's order: the Contacts page in token order, except that
// MiddleName precedes LastName.
contact! {
    anniversary = ANNIVERSARY "Anniversary",
    assistant_name = ASSISTANT_NAME "AssistantName",
    assistant_phone_number = ASSISTANT_PHONE_NUMBER "AssistantPhoneNumber",
    birthday = BIRTHDAY "Birthday",
    business2_phone_number = BUSINESS2_PHONE_NUMBER "Business2PhoneNumber",
    business_address_city = BUSINESS_ADDRESS_CITY "BusinessAddressCity",
    business_address_country = BUSINESS_ADDRESS_COUNTRY "BusinessAddressCountry",
    business_address_postal_code = BUSINESS_ADDRESS_POSTAL_CODE "BusinessAddressPostalCode",
    business_address_state = BUSINESS_ADDRESS_STATE "BusinessAddressState",
    business_address_street = BUSINESS_ADDRESS_STREET "BusinessAddressStreet",
    business_fax_number = BUSINESS_FAX_NUMBER "BusinessFaxNumber",
    business_phone_number = BUSINESS_PHONE_NUMBER "BusinessPhoneNumber",
    car_phone_number = CAR_PHONE_NUMBER "CarPhoneNumber",
    company_name = COMPANY_NAME "CompanyName",
    department = DEPARTMENT "Department",
    email1_address = EMAIL1_ADDRESS "Email1Address",
    email2_address = EMAIL2_ADDRESS "Email2Address",
    email3_address = EMAIL3_ADDRESS "Email3Address",
    file_as = FILE_AS "FileAs",
    first_name = FIRST_NAME "FirstName",
    home2_phone_number = HOME2_PHONE_NUMBER "Home2PhoneNumber",
    home_address_city = HOME_ADDRESS_CITY "HomeAddressCity",
    home_address_country = HOME_ADDRESS_COUNTRY "HomeAddressCountry",
    home_address_postal_code = HOME_ADDRESS_POSTAL_CODE "HomeAddressPostalCode",
    home_address_state = HOME_ADDRESS_STATE "HomeAddressState",
    home_address_street = HOME_ADDRESS_STREET "HomeAddressStreet",
    home_fax_number = HOME_FAX_NUMBER "HomeFaxNumber",
    home_phone_number = HOME_PHONE_NUMBER "HomePhoneNumber",
    job_title = JOB_TITLE "JobTitle",
    middle_name = MIDDLE_NAME "MiddleName",
    last_name = LAST_NAME "LastName",
    mobile_phone_number = MOBILE_PHONE_NUMBER "MobilePhoneNumber",
    office_location = OFFICE_LOCATION "OfficeLocation",
    other_address_city = OTHER_ADDRESS_CITY "OtherAddressCity",
    other_address_country = OTHER_ADDRESS_COUNTRY "OtherAddressCountry",
    other_address_postal_code = OTHER_ADDRESS_POSTAL_CODE "OtherAddressPostalCode",
    other_address_state = OTHER_ADDRESS_STATE "OtherAddressState",
    other_address_street = OTHER_ADDRESS_STREET "OtherAddressStreet",
    pager_number = PAGER_NUMBER "PagerNumber",
    radio_phone_number = RADIO_PHONE_NUMBER "RadioPhoneNumber",
    spouse = SPOUSE "Spouse",
    suffix = SUFFIX "Suffix",
    title = TITLE "Title",
    web_page = WEB_PAGE "WebPage",
    yomi_company_name = YOMI_COMPANY_NAME "YomiCompanyName",
    yomi_first_name = YOMI_FIRST_NAME "YomiFirstName",
    yomi_last_name = YOMI_LAST_NAME "YomiLastName",
    picture = PICTURE "Picture",
    alias = ALIAS "Alias",
    weighted_rank = WEIGHTED_RANK "WeightedRank",
}

fn list(el: &Element<'_>, item: Tag) -> Result<Vec<String>, CommandError> {
    el.children_with(item).map(tree::content).collect()
}

fn push_list(el: &mut Element<'_>, tag: Tag, item: Tag, values: &Option<Vec<String>>) {
    if let Some(values) = values {
        let mut l = Element::new(tag);
        for v in values {
            l.push(tree::text_el(item, v));
        }
        el.push(l);
    }
}

impl Contact {
    /// Reads the properties of a container element (`ApplicationData`, …).
    pub fn from_properties(el: &Element<'_>, v: ProtocolVersion) -> Result<Self, CommandError> {
        let mut c = Contact::default();
        for p in el.elements() {
            match p.tag {
                asb::BODY if v.has_airsyncbase() && c.body.is_none() => {
                    c.body = Some(Body::from_element(p)?)
                }
                asb::NATIVE_BODY_TYPE if v.has_airsyncbase() => {
                    c.native_body_type = Some(tree::parse(p.tag, &tree::content(p)?)?)
                }
                ct::CATEGORIES => c.categories = Some(list(p, ct::CATEGORY)?),
                ct::CHILDREN => c.children = Some(list(p, ct::CHILD)?),
                _ => {
                    if !c.read_text(p)? {
                        c.extra.push(tree::owned(p));
                    }
                }
            }
        }
        Ok(c)
    }

    /// Builds the properties inside an element named `tag`.
    pub fn to_element_as(&self, tag: Tag, v: ProtocolVersion) -> Element<'_> {
        let mut el = Element::new(tag);
        if v.has_airsyncbase() {
            if let Some(b) = &self.body {
                el.push(b.to_element());
            }
        }
        self.write_text(&mut el);
        push_list(&mut el, ct::CATEGORIES, ct::CATEGORY, &self.categories);
        push_list(&mut el, ct::CHILDREN, ct::CHILD, &self.children);
        if v.has_airsyncbase() {
            tree::push_opt(&mut el, asb::NATIVE_BODY_TYPE, self.native_body_type);
        }
        for x in &self.extra {
            el.push(x.clone());
        }
        el
    }
}
