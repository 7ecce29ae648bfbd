//! The BREAKDOWN timing tree of one request, built from the timed sections
//! the request went through.
//!
//! Rules (issue #8): the root is `REQUEST`; a category's time is the sum of
//! its children (an `OTHER` child takes what the named children do not
//! explain); a category appears once per branch (sibling sections of one
//! category are added up, a section nested in a section of its own category
//! is already counted by it); children are sorted by descending time with
//! `OTHER` last. Rendered in milliseconds:
//! `REQUEST:1147 (EMAIL:1095 (IMAP:1003, STORAGE:16, OTHER:76), STORAGE:14, OTHER:38)`.
//!
//! Pure logic: durations come in as numbers, nothing here reads a clock.

use std::fmt;

/// What a timed section of a request was doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Category {
    /// The whole request (the root only).
    Request,
    /// A handler working on email.
    Email,
    /// A handler working on calendars.
    Calendar,
    /// A handler working on contacts.
    Contacts,
    /// A handler working on tasks.
    Tasks,
    /// A handler working on the folder hierarchy.
    Folders,
    /// A handler working on the device itself (Provision, Settings, Ping).
    Device,
    /// The event store.
    Storage,
    /// The IMAP server.
    Imap,
    /// The SMTP server.
    Smtp,
    /// CalDAV / CardDAV.
    Dav,
    /// The directory.
    Ldap,
    /// Time no named child explains.
    Other,
}

impl Category {
    /// The name printed in the tree.
    pub const fn name(self) -> &'static str {
        match self {
            Category::Request => "REQUEST",
            Category::Email => "EMAIL",
            Category::Calendar => "CALENDAR",
            Category::Contacts => "CONTACTS",
            Category::Tasks => "TASKS",
            Category::Folders => "FOLDERS",
            Category::Device => "DEVICE",
            Category::Storage => "STORAGE",
            Category::Imap => "IMAP",
            Category::Smtp => "SMTP",
            Category::Dav => "DAV",
            Category::Ldap => "LDAP",
            Category::Other => "OTHER",
        }
    }
}

/// One finished timed section: the categories of the sections open around
/// it (outermost first) followed by its own, and how long it took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// Enclosing categories then its own (never empty for a useful section).
    pub path: Vec<Category>,
    /// Duration in microseconds.
    pub micros: u64,
}

/// A node of the tree, durations in microseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The category.
    pub category: Category,
    /// Its time: at least its measured time and the sum of its children.
    pub micros: u64,
    /// Sorted children; when there are any, the last is `OTHER`.
    pub children: Vec<Node>,
}

/// Builds the tree of a request that took `total_micros`.
pub fn build(total_micros: u64, sections: &[Section]) -> Node {
    let mut root = Node {
        category: Category::Request,
        micros: total_micros,
        children: Vec::new(),
    };
    for s in sections {
        let Some(path) = normalize(&s.path) else {
            continue;
        };
        let mut node = &mut root;
        for (depth, cat) in path.iter().enumerate() {
            let pos = match node.children.iter().position(|c| c.category == *cat) {
                Some(p) => p,
                None => {
                    node.children.push(Node {
                        category: *cat,
                        micros: 0,
                        children: Vec::new(),
                    });
                    node.children.len() - 1
                }
            };
            node = &mut node.children[pos];
            if depth + 1 == path.len() {
                node.micros = node.micros.saturating_add(s.micros);
            }
        }
    }
    finish(&mut root);
    root
}

/// The path a section is filed under, or `None` when an enclosing section
/// of the same category already counts its time. `REQUEST` and `OTHER` are
/// never filed below the root; repeated enclosing categories keep their
/// outermost place.
fn normalize(path: &[Category]) -> Option<Vec<Category>> {
    let (own, outer) = path.split_last()?;
    if matches!(own, Category::Request | Category::Other) || outer.contains(own) {
        return None;
    }
    let mut out: Vec<Category> = Vec::with_capacity(path.len());
    for cat in outer {
        if !matches!(cat, Category::Request | Category::Other) && !out.contains(cat) {
            out.push(*cat);
        }
    }
    out.push(*own);
    Some(out)
}

fn finish(node: &mut Node) {
    if node.children.is_empty() {
        return;
    }
    for c in &mut node.children {
        finish(c);
    }
    let named: u64 = node.children.iter().map(|c| c.micros).sum();
    node.micros = node.micros.max(named);
    node.children
        .sort_by(|a, b| b.micros.cmp(&a.micros).then(a.category.cmp(&b.category)));
    node.children.push(Node {
        category: Category::Other,
        micros: node.micros - named,
        children: Vec::new(),
    });
}

impl Node {
    /// The tree in milliseconds: each named node's time rounded down, and
    /// each `OTHER` the difference, so a parent is exactly the sum of its
    /// children in the printed numbers too.
    pub fn millis(&self) -> Node {
        let ms = self.micros / 1000;
        self.millis_as(ms)
    }

    fn millis_as(&self, ms: u64) -> Node {
        let mut children: Vec<Node> = self
            .children
            .iter()
            .filter(|c| c.category != Category::Other)
            .map(Node::millis)
            .collect();
        if !self.children.is_empty() {
            let named: u64 = children.iter().map(|c| c.micros).sum();
            children.push(Node {
                category: Category::Other,
                micros: ms.saturating_sub(named),
                children: Vec::new(),
            });
        }
        Node {
            category: self.category,
            micros: ms,
            children,
        }
    }
}

/// Prints the tree with its durations as they are (use [`Node::millis`] first).
impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.category.name(), self.micros)?;
        if !self.children.is_empty() {
            f.write_str(" (")?;
            for (i, c) in self.children.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{c}")?;
            }
            f.write_str(")")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Category::*;
    use super::*;
    use proptest::prelude::*;

    fn s(path: &[Category], ms: u64) -> Section {
        Section {
            path: path.to_vec(),
            micros: ms * 1000,
        }
    }

    #[test]
    fn the_issue_example() {
        let sections = [
            s(&[Email, Storage], 10),
            s(&[Email, Imap], 1000),
            s(&[Email, Storage], 6),
            s(&[Email, Imap], 3),
            s(&[Email], 1095),
            s(&[Storage], 14),
        ];
        let tree = build(1_147_000, &sections).millis();
        assert_eq!(
            tree.to_string(),
            "REQUEST:1147 (EMAIL:1095 (IMAP:1003, STORAGE:16, OTHER:76), STORAGE:14, OTHER:38)"
        );
    }

    #[test]
    fn no_sections_is_a_bare_request() {
        assert_eq!(build(5_400, &[]).millis().to_string(), "REQUEST:5");
    }

    #[test]
    fn a_section_inside_its_own_category_is_not_counted_twice() {
        // STORAGE opened inside STORAGE (a store call made by a store helper).
        let sections = [s(&[Storage, Storage], 4), s(&[Storage], 9)];
        assert_eq!(
            build(10_000, &sections).millis().to_string(),
            "REQUEST:10 (STORAGE:9, OTHER:1)"
        );
        // IMAP inside STORAGE inside EMAIL inside STORAGE: filed under the
        // outer STORAGE's branch once.
        let sections = [
            s(&[Storage, Email, Storage, Imap], 2),
            s(&[Storage, Email], 5),
            s(&[Storage], 8),
        ];
        assert_eq!(
            build(8_000, &sections).millis().to_string(),
            "REQUEST:8 (STORAGE:8 (EMAIL:5 (IMAP:2, OTHER:3), OTHER:3), OTHER:0)"
        );
    }

    #[test]
    fn children_longer_than_the_parent_stretch_it() {
        // Overlapping sections (concurrent work) may add up to more than
        // the parent's own measurement: the parent takes their sum.
        let sections = [
            s(&[Email, Imap], 7),
            s(&[Email, Storage], 6),
            s(&[Email], 10),
        ];
        assert_eq!(
            build(9_000, &sections).millis().to_string(),
            "REQUEST:13 (EMAIL:13 (IMAP:7, STORAGE:6, OTHER:0), OTHER:0)"
        );
    }

    #[test]
    fn sub_millisecond_sections_keep_the_sums_exact() {
        let sections = [
            Section {
                path: vec![Storage],
                micros: 700,
            },
            Section {
                path: vec![Imap],
                micros: 1_900,
            },
        ];
        assert_eq!(
            build(2_650, &sections).millis().to_string(),
            "REQUEST:2 (IMAP:1, STORAGE:0, OTHER:1)"
        );
    }

    fn category() -> impl Strategy<Value = Category> {
        prop_oneof![
            Just(Request),
            Just(Email),
            Just(Folders),
            Just(Storage),
            Just(Imap),
            Just(Smtp),
            Just(Other),
        ]
    }

    fn check(node: &Node, ancestors: &mut Vec<Category>) -> Result<(), TestCaseError> {
        prop_assert!(
            !ancestors.contains(&node.category),
            "repeated on a branch: {node}"
        );
        if node.children.is_empty() {
            return Ok(());
        }
        let sum: u64 = node.children.iter().map(|c| c.micros).sum();
        prop_assert_eq!(sum, node.micros, "not the sum of its children: {}", node);
        let last = node.children.last().map(|c| c.category);
        prop_assert_eq!(last, Some(Other));
        let named = &node.children[..node.children.len() - 1];
        for pair in named.windows(2) {
            prop_assert!(pair[0].micros >= pair[1].micros, "unsorted: {}", node);
        }
        let mut cats: Vec<_> = named.iter().map(|c| c.category).collect();
        cats.sort();
        cats.dedup();
        prop_assert_eq!(cats.len(), named.len(), "duplicate sibling: {}", node);
        prop_assert!(!cats.contains(&Other) && !cats.contains(&Request));
        ancestors.push(node.category);
        for c in &node.children {
            check(c, ancestors)?;
        }
        ancestors.pop();
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn rules_hold_for_any_sections(
            total in 0u64..5_000_000,
            sections in prop::collection::vec(
                (prop::collection::vec(category(), 1..5), 0u64..2_000_000),
                0..12,
            ),
        ) {
            let sections: Vec<Section> = sections
                .into_iter()
                .map(|(path, micros)| Section { path, micros })
                .collect();
            let tree = build(total, &sections);
            prop_assert_eq!(tree.category, Request);
            prop_assert!(tree.micros >= total);
            check(&tree, &mut Vec::new())?;
            // The same rules hold in printed milliseconds.
            let ms = tree.millis();
            prop_assert_eq!(ms.micros, tree.micros / 1000);
            check(&ms, &mut Vec::new())?;
            // Every counted section's time is in the tree: a top-level
            // section is never larger than its node.
            for s in &sections {
                if let Some(p) = normalize(&s.path) {
                    if p.len() == 1 {
                        let node = tree.children.iter().find(|c| c.category == p[0]);
                        prop_assert!(node.is_some_and(|n| n.micros >= s.micros));
                    }
                }
            }
        }
    }
}
