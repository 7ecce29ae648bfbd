//! SmartForward (MS-ASCMD): typed request and response, sharing
//! [`super::compose`] with the other ComposeMail commands.
//!
//! Exists so the server's `smart_forward` handler gets a typed value. It must not
//! send mail or touch the MIME bytes.

pub use super::compose::{ComposeRequest, ComposeResponse, Forwardee, Source};
use crate::wbxml::tags::composemail as cm;

super::compose::compose_command!(
    "SmartForward",
    SmartForwardRequest,
    SmartForwardResponse,
    super::Command::SmartForward,
    cm::SMART_FORWARD
);
