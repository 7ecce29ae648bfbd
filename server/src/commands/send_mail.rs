//! `handle_send_mail`: SendMail ([MS-ASCMD] 2.2.1.17): send a message the device composed, as raw MIME (before 14.0) or in a ComposeMail request.
//!
//! The pipeline (size limit, ClientId dedupe, SMTP, Sent copy, receipts) is
//! shared with the other ComposeMail commands in `super::compose`; this
//! module only names the command.

use opush_protocol::query::Command;

use super::{compose, CommandContext, CommandError, EasResponse};
use crate::session::EasServices;

/// Handles `Cmd=SendMail`.
pub async fn handle_send_mail(
    ctx: &CommandContext<'_>,
    eas: &EasServices,
) -> Result<EasResponse, CommandError> {
    compose::handle_compose(ctx, eas, Command::SendMail).await
}
