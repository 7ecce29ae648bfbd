//! The set of a collection's items that may need sending (`dirty`), kept in
//! both page orders a decision can ask for ([`PageOrder`]).
//!
//! Why two orders: engines before format version 6 paged in the byte order
//! of the ids, which scatters an IMAP mailbox (`7/1`, `7/10`, `7/100`,
//! `7/1000`, `7/10000`, `7/1001` …), so a phone's initial sync showed old
//! mail first and today's last. New decisions page newest first; decisions
//! recorded before must still replay in the order they were made in. Both
//! orders are kept so either is a walk, never a sort: paging stays
//! O(window) at any point of a 100,000-item initial sync.
//!
//! Only the id order is archived (snapshots keep the layout they had); the
//! newest-first index is derived from it and rebuilt when a snapshot is
//! read ([`DirtySet::from_sorted_ids`]).

use crate::decision::PageOrder;
use crate::types::BackendItemId;
use rkyv::{Archive, Deserialize, Serialize};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

/// Newest first: ids of the IMAP form `<validity>/<uid>` (both canonical
/// decimal: digits, no leading zero) by validity ascending, then UID
/// descending; then every other id in byte order. Validity ascending:
/// after a UIDVALIDITY change (usually to a larger value) the Deletes of
/// the old ids come before the Adds of the new ones, so a device resyncing
/// a large folder never shows both copies. A canonical IMAP id is named by
/// its two numbers, so the index is keyed by them (no string compared or
/// built to find one).
type NewestKey = (u64, Reverse<u64>);

/// Where an id ranks before its bytes are compared (derived order: the
/// fields in turn).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Rank {
    /// 0 for an IMAP id, 1 for any other (after every IMAP id).
    other: u8,
    validity: u64,
    uid: Reverse<u64>,
}

impl Rank {
    /// The rank of `id` in `order` (every id ranks the same in id order).
    fn of(order: PageOrder, id: &BackendItemId) -> Rank {
        let uid = match order {
            PageOrder::ById => Some((0, 0)),
            PageOrder::NewestFirst => imap_uid(id),
        };
        match uid {
            Some((validity, uid)) => Rank {
                other: 0,
                validity,
                uid: Reverse(uid),
            },
            None => Rank {
                other: 1,
                validity: 0,
                uid: Reverse(0),
            },
        }
    }
}

/// The sort key of an id in a [`PageOrder`]: ids sorted by it come in the
/// order a [`DirtySet`] walks them in. Computed once per id, so sorting a
/// 10,000-message listing parses each id once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PageKey<'a> {
    rank: Rank,
    id: &'a BackendItemId,
}

impl PageOrder {
    /// The key that sorts `id` in this order.
    pub fn key(self, id: &BackendItemId) -> PageKey<'_> {
        PageKey {
            rank: Rank::of(self, id),
            id,
        }
    }
}

/// `(validity, uid)` of an id of the form `<validity>/<uid>`, both in
/// canonical decimal (digits, no leading zero, within u64): exactly one
/// string has those two numbers.
fn imap_uid(id: &BackendItemId) -> Option<(u64, u64)> {
    let (v, u) = id.0.split_once('/')?;
    let canonical = |s: &str| {
        !s.is_empty()
            && s.bytes().all(|b| b.is_ascii_digit())
            && (s.len() == 1 || !s.starts_with('0'))
    };
    if !(canonical(v) && canonical(u)) {
        return None;
    }
    Some((v.parse().ok()?, u.parse().ok()?))
}

/// The index key of a canonical IMAP id.
fn newest_key(id: &BackendItemId) -> Option<NewestKey> {
    imap_uid(id).map(|(v, u)| (v, Reverse(u)))
}

/// The ids of the items that may need sending, walkable in either
/// [`PageOrder`].
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default)]
pub struct DirtySet {
    /// The set, in id order (the archived part).
    ids: BTreeSet<BackendItemId>,
    /// The canonical IMAP ids of `ids`, newest first ([`NewestKey`]); not
    /// archived, derived from `ids`. The other ids are walked in `ids`.
    #[rkyv(with = rkyv::with::Skip)]
    newest: BTreeMap<NewestKey, BackendItemId>,
}

impl PartialEq for DirtySet {
    fn eq(&self, other: &Self) -> bool {
        // `newest` is derived from `ids`.
        self.ids == other.ids
    }
}

impl Eq for DirtySet {}

impl DirtySet {
    /// An empty set.
    pub fn new() -> DirtySet {
        DirtySet::default()
    }

    /// The set of `ids`, which are in id order without repeats (an archived
    /// set's walk): both orders are bulk-built.
    pub fn from_sorted_ids(ids: Vec<BackendItemId>) -> DirtySet {
        let ids: BTreeSet<BackendItemId> = ids.into_iter().collect();
        let newest = index(&ids);
        DirtySet { ids, newest }
    }

    /// Adds `id` (no-op if present).
    pub fn insert(&mut self, id: &BackendItemId) {
        if self.ids.insert(id.clone()) {
            if let Some(key) = newest_key(id) {
                self.newest.insert(key, id.clone());
            }
        }
    }

    /// Removes `id` (no-op if absent).
    pub fn remove(&mut self, id: &BackendItemId) {
        if self.ids.remove(id) {
            if let Some(key) = newest_key(id) {
                self.newest.remove(&key);
            }
        }
    }

    /// Whether `id` is in the set.
    pub fn contains(&self, id: &BackendItemId) -> bool {
        self.ids.contains(id)
    }

    /// How many ids.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The ids in id order.
    pub fn iter(&self) -> impl Iterator<Item = &BackendItemId> + '_ {
        self.ids.iter()
    }

    /// The ids in `order`.
    pub fn iter_in(&self, order: PageOrder) -> InOrder<'_> {
        match order {
            PageOrder::ById => InOrder(Walk::ById(self.ids.iter())),
            PageOrder::NewestFirst => InOrder(Walk::Newest {
                imap: self.newest.values(),
                other: self.ids.iter(),
                others_left: self.ids.len() - self.newest.len(),
            }),
        }
    }

    /// Adds every id of `ids`.
    pub fn extend(&mut self, ids: impl IntoIterator<Item = BackendItemId>) {
        for id in ids {
            self.insert(&id);
        }
    }
}

impl ArchivedDirtySet {
    /// The archived ids, in id order (a snapshot's).
    pub(crate) fn ids(&self) -> impl Iterator<Item = &rkyv::Archived<BackendItemId>> + '_ {
        self.ids.iter()
    }
}

impl FromIterator<BackendItemId> for DirtySet {
    fn from_iter<I: IntoIterator<Item = BackendItemId>>(iter: I) -> Self {
        let ids: BTreeSet<BackendItemId> = iter.into_iter().collect();
        let newest = index(&ids);
        DirtySet { ids, newest }
    }
}

/// The newest-first index of `ids`.
fn index(ids: &BTreeSet<BackendItemId>) -> BTreeMap<NewestKey, BackendItemId> {
    ids.iter()
        .filter_map(|id| Some((newest_key(id)?, id.clone())))
        .collect()
}

/// A walk of a [`DirtySet`] in one [`PageOrder`].
pub struct InOrder<'a>(Walk<'a>);

enum Walk<'a> {
    ById(std::collections::btree_set::Iter<'a, BackendItemId>),
    /// The IMAP ids, then the others (those of `other` that are no
    /// canonical IMAP id; none left to find: the walk of `other` stops).
    Newest {
        imap: std::collections::btree_map::Values<'a, NewestKey, BackendItemId>,
        other: std::collections::btree_set::Iter<'a, BackendItemId>,
        others_left: usize,
    },
}

impl<'a> Iterator for InOrder<'a> {
    type Item = &'a BackendItemId;

    fn next(&mut self) -> Option<&'a BackendItemId> {
        match &mut self.0 {
            Walk::ById(it) => it.next(),
            Walk::Newest {
                imap,
                other,
                others_left,
            } => {
                if let Some(id) = imap.next() {
                    return Some(id);
                }
                if *others_left == 0 {
                    return None;
                }
                let id = other.find(|id| newest_key(id).is_none())?;
                *others_left -= 1;
                Some(id)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(list: &[&str]) -> Vec<BackendItemId> {
        list.iter().map(|s| BackendItemId((*s).into())).collect()
    }

    fn walk(set: &DirtySet, order: PageOrder) -> Vec<&str> {
        set.iter_in(order).map(|id| id.0.as_str()).collect()
    }

    #[test]
    fn newest_first_is_uid_descending_then_other_ids_in_byte_order() {
        let set: DirtySet = ids(&[
            "7/1",
            "7/10",
            "7/100",
            "7/2",
            "7/9",
            "8/3",
            "/dav/b.ics",
            "/dav/a.ics",
            "7/x",
        ])
        .into_iter()
        .collect();
        assert_eq!(
            walk(&set, PageOrder::NewestFirst),
            [
                "7/100",
                "7/10",
                "7/9",
                "7/2",
                "7/1",
                "8/3",
                "/dav/a.ics",
                "/dav/b.ics",
                "7/x"
            ]
        );
        assert_eq!(
            walk(&set, PageOrder::ById),
            [
                "/dav/a.ics",
                "/dav/b.ics",
                "7/1",
                "7/10",
                "7/100",
                "7/2",
                "7/9",
                "7/x",
                "8/3"
            ]
        );
        // `PageOrder::key` sorts as the walks go.
        for order in [PageOrder::ById, PageOrder::NewestFirst] {
            let mut sorted: Vec<BackendItemId> = set.iter().cloned().collect();
            sorted.reverse();
            sorted.sort_by(|a, b| order.key(a).cmp(&order.key(b)));
            let sorted: Vec<&str> = sorted.iter().map(|id| id.0.as_str()).collect();
            assert_eq!(sorted, walk(&set, order));
        }
    }

    #[test]
    fn equal_numbers_written_differently_stay_two_ids() {
        let mut set = DirtySet::new();
        set.insert(&BackendItemId("7/1".into()));
        set.insert(&BackendItemId("7/01".into()));
        assert_eq!(set.len(), 2);
        // "7/01" is no canonical IMAP id: it comes after, in byte order.
        assert_eq!(walk(&set, PageOrder::NewestFirst), ["7/1", "7/01"]);
        set.remove(&BackendItemId("7/1".into()));
        assert_eq!(walk(&set, PageOrder::NewestFirst), ["7/01"]);
        assert_eq!(walk(&set, PageOrder::ById), ["7/01"]);
    }

    #[test]
    fn both_orders_hold_the_same_ids_after_inserts_and_removes() {
        let mut set = DirtySet::new();
        // IMAP ids, and others among them in byte order ("7/05", hrefs).
        let id = |i: u32| match i % 5 {
            0 => BackendItemId(format!("/dav/{i}.ics")),
            1 => BackendItemId(format!("7/0{i}")),
            _ => BackendItemId(format!("7/{i}")),
        };
        for i in 0..50u32 {
            set.insert(&id(i * 7 % 50));
            if i % 3 == 0 {
                set.remove(&id(i % 11));
            }
        }
        set.insert(&BackendItemId("7/3".into()));
        set.insert(&BackendItemId("7/3".into()));
        let mut a: Vec<&str> = walk(&set, PageOrder::NewestFirst);
        let b: Vec<&str> = walk(&set, PageOrder::ById);
        assert_eq!(a.len(), set.len());
        a.sort_unstable();
        assert_eq!(a, b);
        let rebuilt = DirtySet::from_sorted_ids(set.iter().cloned().collect());
        assert_eq!(
            walk(&rebuilt, PageOrder::NewestFirst),
            walk(&set, PageOrder::NewestFirst)
        );
        // And in the order `PageOrder::key` gives.
        let order = PageOrder::NewestFirst;
        let mut keyed: Vec<BackendItemId> = set.iter().cloned().collect();
        keyed.sort_by(|a, b| order.key(a).cmp(&order.key(b)));
        let keyed: Vec<&str> = keyed.iter().map(|id| id.0.as_str()).collect();
        assert_eq!(keyed, walk(&set, order));
    }
}
