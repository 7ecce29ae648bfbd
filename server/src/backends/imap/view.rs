//! What a session knows of the mailbox it has selected, kept current from
//! every response it reads, so a device's next Sync window can learn the
//! mailbox's freshness from a NOOP on the selected session instead of a new
//! SELECT (on Dovecot, the first FETCH after any SELECT of a big mailbox is
//! several times slower than the next ones).
//!
//! The one fact a caller relies on: after a NOOP, a known
//! [`MailboxView::highestmodseq`] is the mailbox's HIGHESTMODSEQ. It holds
//! because a server reports every change of the selected mailbox by the end
//! of a NOOP (RFC 3501 6.1.2, 7.4.1), and each report is folded here:
//! a `HIGHESTMODSEQ` response code (untagged or in a tagged OK) sets it; an
//! untagged FETCH with MODSEQ (RFC 7162 3.2: sent with every unsolicited
//! FETCH once CONDSTORE is enabled) raises it to that MODSEQ; a change whose
//! mod-sequence cannot be read from the report — a new EXISTS count,
//! EXPUNGE, VANISHED, a UIDVALIDITY change, flags without MODSEQ — makes it
//! unknown until the next code. This session's own changes count too: a
//! mutation ([`Tracker::begin_own`]) leaves it unknown unless the server
//! reported its result (the MODSEQ of a stored UID, or a code). Unknown
//! is learnt again from a STATUS of the selected mailbox, which Dovecot
//! answers from the session's view, not from the mailbox as it is now
//! ([`Tracker::status`]: taken only when its counts are the view's); only
//! when that fails does the caller fall back to a SELECT.
//!
//! Why unknown happens without anything going wrong: Dovecot sends no
//! `HIGHESTMODSEQ` code after changes when the highest mod-sequence is the
//! MODSEQ of a FETCH it has sent meanwhile (RFC 7162 3.2 lets a client
//! raise its HIGHESTMODSEQ from them). So a session that reads another
//! session's expunges and then its flag change during one of its own
//! commands (a read-ahead's body FETCH between two windows) has its view
//! unknown, and the NOOP after it, with nothing new, says nothing more.
//!
//! Pure bookkeeping (no I/O): unit-tested on parsed server lines below.

use std::ops::RangeInclusive;

use async_imap::imap_proto::{
    AttributeValue, MailboxDatum, Response, ResponseCode, Status, StatusAttribute,
};

use super::MailboxState;

/// A session's view of its selected mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MailboxView {
    /// UIDVALIDITY.
    pub uidvalidity: u32,
    /// EXISTS, when the count is known.
    pub exists: Option<u32>,
    /// UIDNEXT, when known (it is not after new messages arrived).
    pub uidnext: Option<u32>,
    /// HIGHESTMODSEQ, when known (see the module docs); `None` without CONDSTORE.
    pub highestmodseq: Option<u64>,
}

impl MailboxView {
    /// The view right after SELECT/EXAMINE answered `st`.
    pub fn opened(st: &MailboxState) -> MailboxView {
        MailboxView {
            uidvalidity: st.uidvalidity,
            exists: Some(st.exists),
            uidnext: Some(st.uidnext),
            highestmodseq: st.highestmodseq,
        }
    }
}

/// A change this session is making to its selected mailbox, until the
/// server's answer shows its result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnChange {
    /// `UID STORE` of these UIDs (sorted): a FETCH with MODSEQ for one of
    /// them reports it.
    Store(Vec<u32>),
    /// EXPUNGE or MOVE out of the selected mailbox: reported by a
    /// `HIGHESTMODSEQ` code (the count follows the EXPUNGE/VANISHED
    /// responses the command must send).
    Expunge,
    /// APPEND to the selected mailbox: reported by a `HIGHESTMODSEQ` code;
    /// the count and UIDNEXT are unknown until an EXISTS says it.
    Append,
}

impl OwnChange {
    /// `UID STORE` of `uids` (any order).
    pub fn store(uids: &[u32]) -> OwnChange {
        let mut sorted = uids.to_vec();
        sorted.sort_unstable();
        OwnChange::Store(sorted)
    }
}

/// Keeps a [`MailboxView`] current (see the module docs for the rules).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracker {
    view: MailboxView,
    /// Whether the highest mod-sequence is tracked at all (CONDSTORE on).
    condstore: bool,
    own: Option<OwnChange>,
    /// The server said something went wrong with the mailbox (an untagged
    /// NO or BAD: Dovecot answers so, then serves the old view, when the
    /// selected mailbox was deleted and created again). The selection is
    /// not to be trusted any more.
    lost: bool,
}

impl Tracker {
    /// Tracking from a fresh SELECT/EXAMINE answer.
    pub fn new(st: &MailboxState, condstore: bool) -> Tracker {
        let mut view = MailboxView::opened(st);
        if !condstore {
            view.highestmodseq = None;
        }
        Tracker {
            view,
            condstore,
            own: None,
            lost: false,
        }
    }

    /// The view now.
    pub fn view(&self) -> MailboxView {
        self.view
    }

    /// Whether the selection is not to be trusted any more (see `lost`):
    /// the session leaves it and SELECTs again.
    pub fn lost(&self) -> bool {
        self.lost
    }

    /// Folds one untagged response read while the mailbox is selected.
    pub fn seen(&mut self, r: &Response<'_>) {
        match r {
            // The same count again is no news.
            Response::MailboxData(MailboxDatum::Exists(n)) if self.view.exists != Some(*n) => {
                if self.view.exists.is_none_or(|e| *n > e) {
                    self.view.uidnext = None;
                }
                self.view.exists = Some(*n);
                self.unknown();
            }
            Response::Expunge(_) => {
                self.view.exists = self.view.exists.and_then(|e| e.checked_sub(1));
                self.unknown();
            }
            // VANISHED (EARLIER) answers a CHANGEDSINCE: history, not news.
            Response::Vanished {
                earlier: false,
                uids,
            } => {
                let gone = uids.iter().map(range_len).sum::<u64>();
                self.view.exists = self
                    .view
                    .exists
                    .and_then(|e| u32::try_from(u64::from(e).checked_sub(gone)?).ok());
                self.unknown();
            }
            Response::Fetch(_, attrs) => self.fetched(attrs),
            Response::Data {
                status: Status::Ok,
                outcome,
            } => self.code(outcome.code.as_ref()),
            Response::Data {
                status: Status::No | Status::Bad,
                ..
            } => {
                self.lost = true;
                self.view.highestmodseq = None;
            }
            _ => {}
        }
    }

    /// Folds a STATUS response of the selected mailbox itself, read at
    /// this point of the response stream: a server that answers it from
    /// the session's view (Dovecot: the selected mailbox's STATUS is not
    /// synchronized first) tells the HIGHESTMODSEQ of that view. It is
    /// taken only while unknown, with CONDSTORE, and when the answer's
    /// UIDVALIDITY, MESSAGES and UIDNEXT are those the view knows (a
    /// server answering with the mailbox as it is now, with changes the
    /// session has not been told of, shows them there mostly: not taken).
    /// A change read after it makes it unknown again, as any.
    pub fn status(&mut self, attrs: &[StatusAttribute]) {
        let (mut highest, mut messages, mut validity, mut uidnext) = (None, None, None, None);
        for a in attrs {
            match a {
                StatusAttribute::HighestModSeq(n) => highest = Some(*n),
                StatusAttribute::Messages(n) => messages = Some(*n),
                StatusAttribute::UidValidity(v) => validity = Some(*v),
                StatusAttribute::UidNext(n) => uidnext = Some(*n),
                _ => {}
            }
        }
        let agrees = validity.is_none_or(|v| v == self.view.uidvalidity)
            && messages.is_some()
            && messages == self.view.exists
            && self
                .view
                .uidnext
                .is_none_or(|u| uidnext.is_none_or(|n| n == u));
        if !self.condstore || self.lost || self.own.is_some() || !agrees {
            return;
        }
        if self.view.highestmodseq.is_none() {
            self.view.highestmodseq = highest;
        }
        if self.view.uidnext.is_none() {
            self.view.uidnext = uidnext;
        }
    }

    /// Folds the response code of the command's tagged OK.
    pub fn done(&mut self, code: Option<&ResponseCode<'_>>) {
        self.code(code);
    }

    /// This session starts changing its selected mailbox.
    pub fn begin_own(&mut self, change: OwnChange) {
        if change == OwnChange::Append {
            self.view.exists = None;
            self.view.uidnext = None;
        }
        self.own = Some(change);
    }

    /// The own change is answered (or failed): unless the server reported
    /// its result, the highest mod-sequence is unknown now.
    pub fn end_own(&mut self) {
        if self.own.take().is_some() {
            self.unknown();
        }
    }

    fn unknown(&mut self) {
        self.view.highestmodseq = None;
    }

    fn fetched(&mut self, attrs: &[AttributeValue<'_>]) {
        let mut uid = None;
        let mut modseq = None;
        let mut flags = false;
        for a in attrs {
            match a {
                AttributeValue::Uid(u) => uid = Some(*u),
                AttributeValue::ModSeq(m) => modseq = Some(*m),
                AttributeValue::Flags(_) => flags = true,
                _ => {}
            }
        }
        match modseq {
            Some(m) => {
                self.view.highestmodseq = self.view.highestmodseq.map(|h| h.max(m));
                if let (Some(OwnChange::Store(uids)), Some(u)) = (&self.own, uid) {
                    if uids.binary_search(&u).is_ok() {
                        self.own = None;
                    }
                }
            }
            // Flags changed somewhere and the server did not say when.
            None if flags && self.condstore => self.unknown(),
            None => {}
        }
    }

    fn code(&mut self, code: Option<&ResponseCode<'_>>) {
        match code {
            Some(ResponseCode::HighestModSeq(n)) if self.condstore => {
                self.view.highestmodseq = Some(*n);
                self.own = None;
            }
            Some(ResponseCode::UidNext(n)) => self.view.uidnext = Some(*n),
            Some(ResponseCode::UidValidity(v)) if *v != self.view.uidvalidity => {
                self.view = MailboxView {
                    uidvalidity: *v,
                    ..MailboxView::default()
                };
            }
            _ => {}
        }
    }
}

/// The UIDs in `r` (`8:7` is the same as `7:8`).
fn range_len(r: &RangeInclusive<u32>) -> u64 {
    u64::from(r.start().abs_diff(*r.end())) + 1
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code: a panic is a test failure")]

    use super::*;

    fn opened() -> Tracker {
        Tracker::new(
            &MailboxState {
                uidvalidity: 7,
                uidnext: 11,
                highestmodseq: Some(40),
                exists: 10,
            },
            true,
        )
    }

    /// Folds server lines (CRLF added) as `Session::exec` does: untagged
    /// ones with `seen`, the tagged one's code with `done`.
    fn feed(t: &mut Tracker, lines: &[&str]) {
        for line in lines {
            let bytes = format!("{line}\r\n").into_bytes();
            let (rest, r) = Response::parse(&bytes).unwrap();
            assert!(rest.is_empty(), "{line}");
            match r {
                Response::Done { outcome, .. } => t.done(outcome.code.as_ref()),
                other => t.seen(&other),
            }
        }
    }

    #[test]
    fn a_quiet_noop_keeps_everything_known() {
        let mut t = opened();
        feed(&mut t, &["* 3 RECENT", "O1 OK NOOP completed"]);
        assert_eq!(
            t.view(),
            MailboxView {
                uidvalidity: 7,
                exists: Some(10),
                uidnext: Some(11),
                highestmodseq: Some(40)
            }
        );
    }

    #[test]
    fn a_flag_change_by_another_session_raises_the_modseq() {
        let mut t = opened();
        feed(
            &mut t,
            &[
                "* 4 FETCH (UID 5 MODSEQ (43) FLAGS (\\Flagged))",
                "* 2 FETCH (UID 2 MODSEQ (41) FLAGS (\\Seen))",
                "O2 OK NOOP completed",
            ],
        );
        assert_eq!(t.view().highestmodseq, Some(43));
        assert_eq!(t.view().exists, Some(10));
    }

    #[test]
    fn solicited_fetches_below_the_highest_change_nothing() {
        let mut t = opened();
        feed(
            &mut t,
            &[
                "* 1 FETCH (UID 1 FLAGS (\\Seen) MODSEQ (3) RFC822.SIZE 10)",
                "* 2 FETCH (UID 2 BODY[] {2}\r\nhi)",
                "O3 OK Fetch completed",
            ],
        );
        assert_eq!(t.view().highestmodseq, Some(40));
    }

    #[test]
    fn flags_without_modseq_make_it_unknown() {
        let mut t = opened();
        feed(&mut t, &["* 4 FETCH (FLAGS (\\Seen))"]);
        assert_eq!(t.view().highestmodseq, None);
        // … and a later FETCH with MODSEQ does not guess it back.
        feed(&mut t, &["* 4 FETCH (UID 5 MODSEQ (50) FLAGS (\\Seen))"]);
        assert_eq!(t.view().highestmodseq, None);
    }

    #[test]
    fn new_messages_are_unknown_until_the_code_that_follows() {
        let mut t = opened();
        feed(&mut t, &["* 12 EXISTS"]);
        assert_eq!(t.view().highestmodseq, None);
        assert_eq!(t.view().exists, Some(12));
        assert_eq!(t.view().uidnext, None);
        feed(&mut t, &["O4 OK [HIGHESTMODSEQ 44] NOOP completed"]);
        assert_eq!(t.view().highestmodseq, Some(44));
        // The same count again is no news.
        feed(&mut t, &["* 12 EXISTS"]);
        assert_eq!(t.view().highestmodseq, Some(44));
        feed(&mut t, &["* OK [UIDNEXT 15] Predicted next UID"]);
        assert_eq!(t.view().uidnext, Some(15));
    }

    #[test]
    fn expunges_count_down_and_wait_for_a_code() {
        let mut t = opened();
        feed(&mut t, &["* VANISHED 3:4,8"]);
        assert_eq!(t.view().exists, Some(7));
        assert_eq!(t.view().highestmodseq, None);
        feed(&mut t, &["* OK [HIGHESTMODSEQ 47] Highest"]);
        assert_eq!(t.view().highestmodseq, Some(47));
        feed(&mut t, &["* 2 EXPUNGE"]);
        assert_eq!(t.view().exists, Some(6));
        assert_eq!(t.view().highestmodseq, None);
        // More vanished than known: the count is unknown, not negative.
        feed(&mut t, &["* VANISHED 1:100"]);
        assert_eq!(t.view().exists, None);
    }

    #[test]
    fn vanished_earlier_is_history() {
        let mut t = opened();
        feed(
            &mut t,
            &["* VANISHED (EARLIER) 1:9", "O5 OK Fetch completed"],
        );
        assert_eq!(t.view().highestmodseq, Some(40));
        assert_eq!(t.view().exists, Some(10));
    }

    #[test]
    fn an_own_store_is_known_only_when_reported() {
        let mut t = opened();
        t.begin_own(OwnChange::Store(vec![5]));
        feed(
            &mut t,
            &["* 4 FETCH (UID 5 MODSEQ (41))", "O6 OK Store completed"],
        );
        t.end_own();
        assert_eq!(t.view().highestmodseq, Some(41));

        // Another message's report is not this store's.
        t.begin_own(OwnChange::Store(vec![6]));
        feed(
            &mut t,
            &["* 4 FETCH (UID 5 MODSEQ (42))", "O7 OK Store completed"],
        );
        t.end_own();
        assert_eq!(t.view().highestmodseq, None);
    }

    #[test]
    fn an_own_expunge_or_append_needs_the_code() {
        let mut t = opened();
        t.begin_own(OwnChange::Expunge);
        feed(
            &mut t,
            &["* VANISHED 3", "O8 OK [HIGHESTMODSEQ 45] Expunge completed"],
        );
        t.end_own();
        assert_eq!(t.view().highestmodseq, Some(45));
        assert_eq!(t.view().exists, Some(9));

        t.begin_own(OwnChange::Expunge);
        feed(&mut t, &["* VANISHED 4", "O9 OK Expunge completed"]);
        t.end_own();
        assert_eq!(t.view().highestmodseq, None);
        assert_eq!(t.view().exists, Some(8));

        // An APPEND reported in full (Dovecot) …
        let mut t = opened();
        t.begin_own(OwnChange::Append);
        feed(
            &mut t,
            &[
                "* 11 EXISTS",
                "* OK [HIGHESTMODSEQ 46] Highest",
                "O10 OK [APPENDUID 7 11] Append completed",
            ],
        );
        t.end_own();
        assert_eq!(t.view().highestmodseq, Some(46));
        assert_eq!(t.view().exists, Some(11));
        // … and one not reported at all.
        t.begin_own(OwnChange::Append);
        feed(&mut t, &["O11 OK [APPENDUID 7 12] Append completed"]);
        t.end_own();
        assert_eq!(t.view().highestmodseq, None);
        assert_eq!(t.view().exists, None);
    }

    #[test]
    fn a_new_uidvalidity_forgets_everything() {
        let mut t = opened();
        feed(&mut t, &["* OK [UIDVALIDITY 8] UIDs valid"]);
        assert_eq!(
            t.view(),
            MailboxView {
                uidvalidity: 8,
                ..MailboxView::default()
            }
        );
    }

    #[test]
    fn an_untagged_no_loses_the_selection() {
        let mut t = opened();
        feed(&mut t, &["* 3 RECENT", "O1 OK NOOP completed"]);
        assert!(!t.lost());
        // What Dovecot says when the selected mailbox was deleted and created again.
        feed(
            &mut t,
            &[
                "* NO Internal error occurred. Refer to server log for more information.",
                "O2 OK NOOP completed",
            ],
        );
        assert!(t.lost());
        assert_eq!(t.view().highestmodseq, None);
    }

    /// Folds a `* STATUS` line as `Session::exec` does for the selected mailbox.
    fn status_line(t: &mut Tracker, line: &str) {
        let bytes = format!("{line}\r\n").into_bytes();
        let (_, r) = Response::parse(&bytes).unwrap();
        match r {
            Response::MailboxData(MailboxDatum::Status { status, .. }) => t.status(&status),
            other => panic!("not a STATUS: {other:?}"),
        }
    }

    #[test]
    fn a_status_of_the_view_tells_an_unknown_modseq() {
        // What Dovecot sends a session that reads another session's
        // expunge and then its flag change during a body FETCH: no code
        // (the last MODSEQ is the highest), so unknown after it, and a
        // NOOP with nothing new says nothing more.
        let mut t = opened();
        feed(
            &mut t,
            &[
                "* 6 FETCH (UID 6 BODY[] {2}\r\nhi)",
                "* VANISHED 3",
                "* 4 FETCH (UID 5 MODSEQ (44) FLAGS (\\Seen))",
                "O3 OK Fetch completed",
                "O4 OK NOOP completed",
            ],
        );
        assert_eq!(t.view().highestmodseq, None);
        assert_eq!(t.view().exists, Some(9));
        // Another count than the view's: changes not told yet, not taken.
        status_line(
            &mut t,
            "* STATUS INBOX (MESSAGES 8 UIDNEXT 11 UIDVALIDITY 7 HIGHESTMODSEQ 46)",
        );
        assert_eq!(t.view().highestmodseq, None);
        // Another UIDVALIDITY: not taken.
        status_line(
            &mut t,
            "* STATUS INBOX (MESSAGES 9 UIDNEXT 11 UIDVALIDITY 8 HIGHESTMODSEQ 44)",
        );
        assert_eq!(t.view().highestmodseq, None);
        status_line(
            &mut t,
            "* STATUS INBOX (MESSAGES 9 UIDNEXT 11 UIDVALIDITY 7 HIGHESTMODSEQ 44)",
        );
        assert_eq!(t.view().highestmodseq, Some(44));
        // A change read after it: unknown again.
        feed(&mut t, &["* 10 EXISTS"]);
        assert_eq!(t.view().highestmodseq, None);
    }

    #[test]
    fn a_status_leaves_a_known_modseq_and_a_lost_selection_alone() {
        let mut t = opened();
        status_line(
            &mut t,
            "* STATUS INBOX (MESSAGES 10 UIDNEXT 11 UIDVALIDITY 7 HIGHESTMODSEQ 99)",
        );
        assert_eq!(t.view().highestmodseq, Some(40));
        feed(&mut t, &["* NO Internal error occurred."]);
        status_line(
            &mut t,
            "* STATUS INBOX (MESSAGES 10 UIDNEXT 11 UIDVALIDITY 7 HIGHESTMODSEQ 40)",
        );
        assert_eq!(t.view().highestmodseq, None);
        // Without CONDSTORE nothing claims one either.
        let mut t = Tracker::new(
            &MailboxState {
                uidvalidity: 7,
                uidnext: 11,
                highestmodseq: None,
                exists: 10,
            },
            false,
        );
        status_line(
            &mut t,
            "* STATUS INBOX (MESSAGES 10 UIDNEXT 11 UIDVALIDITY 7 HIGHESTMODSEQ 40)",
        );
        assert_eq!(t.view().highestmodseq, None);
    }

    #[test]
    fn without_condstore_nothing_claims_a_modseq() {
        let mut t = Tracker::new(
            &MailboxState {
                uidvalidity: 7,
                uidnext: 11,
                highestmodseq: Some(40),
                exists: 10,
            },
            false,
        );
        feed(&mut t, &["O1 OK [HIGHESTMODSEQ 45] NOOP completed"]);
        assert_eq!(t.view().highestmodseq, None);
    }
}
