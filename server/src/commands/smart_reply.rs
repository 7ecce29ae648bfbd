//! `handle_smart_reply`: SmartReply ([MS-ASCMD] 2.2.1.19): reply to a message the server has; the device sends only its new text and the server quotes the original and flags it answered.
//!
//! The pipeline (size limit, ClientId dedupe, SMTP, Sent copy, receipts) is
//! shared with the other ComposeMail commands in `super::compose`; this
//! module only names the command.

use opush_protocol::query::Command;

use super::{compose, CommandContext, CommandError, EasResponse};
use crate::session::EasServices;

/// Handles `Cmd=SmartReply`.
pub async fn handle_smart_reply(
    ctx: &CommandContext<'_>,
    eas: &EasServices,
) -> Result<EasResponse, CommandError> {
    compose::handle_compose(ctx, eas, Command::SmartReply).await
}
