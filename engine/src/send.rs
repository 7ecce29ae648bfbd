//! SendMail / SmartReply / SmartForward: whether a message may go out, so a
//! device retrying after a lost answer does not send it twice.
//!
//! [MS-ASCMD] 2.2.3.27.1: the server remembers the `ClientId` of the last
//! messages sent and answers a repeated one with Status 118
//! (MessagePreviouslySent) instead of sending again. The device's state keeps
//! the last [`MAX_SENT_CLIENT_IDS`] ClientIds, folded from
//! [`Event::MailSent`]. A request without ClientId (the MIME form before
//! 14.0) is always sent.
//!
//! The size limit (`[smtp] max_message_size`, Status 122) is checked here
//! too, so a replay re-checks both from the recorded request.
//!
//! The server records `MailSent` only after the relay accepted the message:
//! a failed or interrupted submission leaves nothing behind, so the retry
//! goes out. This module does no I/O and reads no clock: `at` is an input.

use crate::event::Event;
use crate::state::DeviceState;
use crate::types::{ClientId, Timestamp};
use rkyv::{Archive, Deserialize, Serialize};

/// How many ClientIds of sent messages a device remembers.
pub const MAX_SENT_CLIENT_IDS: usize = 256;

/// What the check before a submission looks at.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SendRequest {
    /// The request's ClientId, if any.
    pub client_id: Option<ClientId>,
    /// Size of the message the device sent, bytes.
    pub size: u64,
    /// The server's limit (`[smtp] max_message_size`), bytes.
    pub max_size: u64,
}

/// The engine's answer before a message is submitted.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum SendCheck {
    /// Submit it.
    Send,
    /// This ClientId was sent already: answer 118, do not submit.
    AlreadySent,
    /// Over the size limit: answer 122 (or HTTP 413 before 14.0).
    TooLarge,
}

/// The response of the decision taken once the relay accepted a message
/// (its events remember the ClientId).
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct MailAccepted;

/// Decides whether a message may be sent: not over the size limit, and
/// not a ClientId sent before.
pub fn check_send(state: &DeviceState, request: &SendRequest) -> SendCheck {
    if request.size > request.max_size {
        return SendCheck::TooLarge;
    }
    match &request.client_id {
        Some(id) if !id.0.is_empty() && state.sent.contains(id) => SendCheck::AlreadySent,
        _ => SendCheck::Send,
    }
}

/// The events recording that the relay accepted the message (none without a
/// ClientId: there is nothing to deduplicate on).
pub fn decide_sent(client_id: Option<&ClientId>, at: Timestamp) -> Vec<Event> {
    match client_id {
        Some(id) if !id.0.is_empty() => vec![Event::MailSent {
            client_id: id.clone(),
            at,
        }],
        _ => Vec::new(),
    }
}

/// Folds a `MailSent`: remember the ClientId, forget the oldest past the bound.
pub(crate) fn remember_sent(state: &mut DeviceState, client_id: &ClientId) {
    if state.sent.contains(client_id) {
        return;
    }
    state.sent.push(client_id.clone());
    if state.sent.len() > MAX_SENT_CLIENT_IDS {
        let excess = state.sent.len() - MAX_SENT_CLIENT_IDS;
        state.sent.drain(..excess);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test code: a panic is a test failure")]
mod tests {
    use super::*;
    use crate::state::fold;

    fn id(s: &str) -> ClientId {
        ClientId(s.to_owned())
    }

    /// A small message with this ClientId (if any).
    fn req(client_id: Option<&ClientId>) -> SendRequest {
        SendRequest {
            client_id: client_id.cloned(),
            size: 100,
            max_size: 1000,
        }
    }

    // [MS-ASCMD] Status 122 (message too large): checked before the ClientId.
    #[test]
    fn a_message_over_the_limit_is_refused() {
        let mut state = DeviceState::default();
        fold(&mut state, &decide_sent(Some(&id("a")), Timestamp(5)));
        let mut r = req(Some(&id("a")));
        r.size = 1001;
        assert_eq!(check_send(&state, &r), SendCheck::TooLarge);
        r.size = 1000;
        assert_eq!(check_send(&state, &r), SendCheck::AlreadySent);
        r.client_id = None;
        assert_eq!(check_send(&state, &r), SendCheck::Send);
    }

    // [MS-ASCMD] 2.2.3.27.1 / Status 118 MessagePreviouslySent
    #[test]
    fn a_sent_client_id_is_not_sent_again() {
        let mut state = DeviceState::default();
        assert_eq!(check_send(&state, &req(Some(&id("a")))), SendCheck::Send);
        fold(&mut state, &decide_sent(Some(&id("a")), Timestamp(5)));
        assert_eq!(
            check_send(&state, &req(Some(&id("a")))),
            SendCheck::AlreadySent
        );
        assert_eq!(check_send(&state, &req(Some(&id("b")))), SendCheck::Send);
        assert_eq!(check_send(&state, &req(None)), SendCheck::Send);
        assert!(decide_sent(None, Timestamp(5)).is_empty());
        assert!(decide_sent(Some(&id("")), Timestamp(5)).is_empty());
    }

    #[test]
    fn only_the_last_client_ids_are_remembered() {
        let mut state = DeviceState::default();
        for n in 0..MAX_SENT_CLIENT_IDS + 10 {
            fold(
                &mut state,
                &decide_sent(Some(&id(&n.to_string())), Timestamp(1)),
            );
        }
        // A replayed event changes nothing.
        fold(&mut state, &decide_sent(Some(&id("200")), Timestamp(1)));
        assert_eq!(state.sent.len(), MAX_SENT_CLIENT_IDS);
        assert_eq!(check_send(&state, &req(Some(&id("0")))), SendCheck::Send);
        assert_eq!(check_send(&state, &req(Some(&id("9")))), SendCheck::Send);
        assert_eq!(
            check_send(&state, &req(Some(&id("10")))),
            SendCheck::AlreadySent
        );
        assert_eq!(state.sent.last().unwrap(), &id("265"));
    }

    #[test]
    fn snapshots_keep_sent_client_ids() {
        let mut state = DeviceState::default();
        fold(&mut state, &decide_sent(Some(&id("x")), Timestamp(1)));
        let back = crate::decode_snapshot(&crate::encode_snapshot(&state).unwrap()).unwrap();
        assert_eq!(
            check_send(&back, &req(Some(&id("x")))),
            SendCheck::AlreadySent
        );
    }
}
