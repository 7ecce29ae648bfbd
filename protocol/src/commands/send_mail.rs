//! SendMail (MS-ASCMD): typed request and response, sharing
//! [`super::compose`] with the other ComposeMail commands.
//!
//! Exists so the server's `send_mail` handler gets a typed value. It must not
//! send mail or touch the MIME bytes.

pub use super::compose::{ComposeRequest, ComposeResponse, Forwardee, Source};
use crate::wbxml::tags::composemail as cm;

super::compose::compose_command!(
    "SendMail",
    SendMailRequest,
    SendMailResponse,
    super::Command::SendMail,
    cm::SEND_MAIL
);
