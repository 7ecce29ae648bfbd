//! `handle_smart_forward`: SmartForward ([MS-ASCMD] 2.2.1.20): forward a message the server has; the device sends only its new text and the server adds the original with its attachments and flags it forwarded.
//!
//! The pipeline (size limit, ClientId dedupe, SMTP, Sent copy, receipts) is
//! shared with the other ComposeMail commands in `super::compose`; this
//! module only names the command.

use opush_protocol::query::Command;

use super::{compose, CommandContext, CommandError, EasResponse};
use crate::session::EasServices;

/// Handles `Cmd=SmartForward`.
pub async fn handle_smart_forward(
    ctx: &CommandContext<'_>,
    eas: &EasServices,
) -> Result<EasResponse, CommandError> {
    compose::handle_compose(ctx, eas, Command::SmartForward).await
}
