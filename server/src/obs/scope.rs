//! The request scope: what every log line of a request says about it
//! (request number, command, user), the timed sections its BREAKDOWN is
//! built from, and its SUMMARY.IN / SUMMARY.OUT counters.
//!
//! The scope is a tokio task-local set by the HTTP layer around each
//! request, so code deep in the request path (the store calls, the IMAP
//! session, a handler) records into it with one call and no parameter.
//! Outside a request every function here is a no-op.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use super::breakdown::{self, Category, Section};

tokio::task_local! {
    static SCOPE: Arc<RequestScope>;
}

static NEXT_REQUEST: AtomicU64 = AtomicU64::new(1);
static NEXT_THREAD: AtomicU64 = AtomicU64::new(1);

thread_local! {
    static THREAD_NO: u64 = NEXT_THREAD.fetch_add(1, Ordering::Relaxed);
}

/// A small number naming the current thread in log lines (`t<n>`).
pub fn thread_no() -> u64 {
    THREAD_NO.with(|n| *n)
}

/// CHANGE / DELETE / FETCH counts in one direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Items added or changed.
    pub change: u64,
    /// Items deleted (or moved away).
    pub delete: u64,
    /// Items fetched.
    pub fetch: u64,
}

impl fmt::Display for Counts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "CHANGE: {}, DELETE: {}, FETCH: {}",
            self.change, self.delete, self.fetch
        )
    }
}

/// Which way an item went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Sent by the device (SUMMARY.IN).
    In,
    /// Sent to the device (SUMMARY.OUT).
    Out,
}

/// What happened to an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Added or changed.
    Change,
    /// Deleted.
    Delete,
    /// Fetched.
    Fetch,
}

#[derive(Debug, Default)]
struct State {
    command: Option<&'static str>,
    user: Option<String>,
    next_section: u64,
    open: Vec<(u64, Category)>,
    sections: Vec<Section>,
    input: Counts,
    output: Counts,
    counted: bool,
}

/// One request's observability state.
#[derive(Debug)]
pub struct RequestScope {
    id: u64,
    started: Instant,
    state: Mutex<State>,
}

impl RequestScope {
    /// A new scope with the next request number, its clock started now.
    pub fn new() -> Arc<RequestScope> {
        Arc::new(RequestScope {
            id: NEXT_REQUEST.fetch_add(1, Ordering::Relaxed),
            started: Instant::now(),
            state: Mutex::new(State::default()),
        })
    }

    /// The request number (`r<n>` in log lines).
    pub fn id(&self) -> u64 {
        self.id
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means a log call panicked; the counters are plain numbers.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes `c<Command>/r<n>/<user>` (dashes for what is not known yet).
    pub fn write_context(&self, out: &mut String) {
        use std::fmt::Write as _;
        let st = self.lock();
        let _ = write!(
            out,
            "c{}/r{}/{}",
            st.command.unwrap_or("-"),
            self.id,
            st.user.as_deref().unwrap_or("-")
        );
    }

    /// The timing tree so far (the REQUEST root measured until now).
    pub fn breakdown(&self) -> breakdown::Node {
        let total = u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX);
        let st = self.lock();
        breakdown::build(total, &st.sections)
    }

    /// The SUMMARY.IN and SUMMARY.OUT counts, and whether anything counted.
    pub fn summary(&self) -> (Counts, Counts, bool) {
        let st = self.lock();
        (st.input, st.output, st.counted)
    }

    fn enter(self: &Arc<Self>, category: Category) -> SectionGuard {
        let mut st = self.lock();
        st.next_section += 1;
        let id = st.next_section;
        let mut path: Vec<Category> = st.open.iter().map(|(_, c)| *c).collect();
        path.push(category);
        st.open.push((id, category));
        SectionGuard {
            scope: self.clone(),
            id,
            path,
            started: Instant::now(),
        }
    }
}

/// Closes a timed section when dropped (finished or cancelled).
struct SectionGuard {
    scope: Arc<RequestScope>,
    id: u64,
    path: Vec<Category>,
    started: Instant,
}

impl Drop for SectionGuard {
    fn drop(&mut self) {
        let micros = u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX);
        let mut st = self.scope.lock();
        st.open.retain(|(id, _)| *id != self.id);
        st.sections.push(Section {
            path: std::mem::take(&mut self.path),
            micros,
        });
    }
}

/// Runs `fut` as the request `scope`.
pub async fn run<F: Future>(scope: Arc<RequestScope>, fut: F) -> F::Output {
    SCOPE.scope(scope, fut).await
}

/// The current request's scope, if running inside one.
pub fn current() -> Option<Arc<RequestScope>> {
    SCOPE.try_with(Arc::clone).ok()
}

/// Calls `f` with the current scope, if any.
pub fn with_current<R>(f: impl FnOnce(&RequestScope) -> R) -> Option<R> {
    SCOPE.try_with(|s| f(s)).ok()
}

/// Names the request's command in its log lines.
pub fn set_command(name: &'static str) {
    with_current(|s| s.lock().command = Some(name));
}

/// Names the request's user in its log lines.
pub fn set_user(user: &str) {
    with_current(|s| s.lock().user = Some(user.to_owned()));
}

/// Runs `fut` as a timed section of `category` of the current request.
pub async fn timed<F: Future>(category: Category, fut: F) -> F::Output {
    let _guard = current().map(|s| s.enter(category));
    fut.await
}

/// Adds `n` items of `kind` in `direction` to the request's summary.
pub fn count(direction: Direction, kind: Kind, n: usize) {
    let n = u64::try_from(n).unwrap_or(u64::MAX);
    with_current(|s| {
        let mut st = s.lock();
        st.counted = true;
        let c = match direction {
            Direction::In => &mut st.input,
            Direction::Out => &mut st.output,
        };
        let field = match kind {
            Kind::Change => &mut c.change,
            Kind::Delete => &mut c.delete,
            Kind::Fetch => &mut c.fetch,
        };
        *field = field.saturating_add(n);
    });
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test code: a panic is a test failure")]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sections_nest_and_counts_add_up_inside_a_scope_only() {
        // Outside a scope nothing is recorded and nothing fails.
        count(Direction::In, Kind::Change, 3);
        assert_eq!(timed(Category::Imap, async { 7 }).await, 7);

        let scope = RequestScope::new();
        run(scope.clone(), async {
            set_command("Sync");
            set_user("bob@example.test");
            timed(Category::Email, async {
                timed(Category::Imap, async {}).await;
                timed(Category::Storage, async {}).await;
            })
            .await;
            timed(Category::Storage, async {}).await;
            count(Direction::In, Kind::Change, 2);
            count(Direction::Out, Kind::Fetch, 1);
            count(Direction::Out, Kind::Delete, 4);
        })
        .await;
        let tree = scope.breakdown().millis().to_string();
        assert!(tree.starts_with("REQUEST:"), "{tree}");
        for part in ["EMAIL:", "IMAP:", "STORAGE:", "OTHER:"] {
            assert!(tree.contains(part), "{part} missing in {tree}");
        }
        let (i, o, counted) = scope.summary();
        assert!(counted);
        assert_eq!(i.to_string(), "CHANGE: 2, DELETE: 0, FETCH: 0");
        assert_eq!(o.to_string(), "CHANGE: 0, DELETE: 4, FETCH: 1");
        let mut ctx = String::new();
        scope.write_context(&mut ctx);
        assert_eq!(ctx, format!("cSync/r{}/bob@example.test", scope.id()));
    }

    #[tokio::test]
    async fn a_cancelled_section_still_closes() {
        let scope = RequestScope::new();
        run(scope.clone(), async {
            let slow = timed(Category::Imap, std::future::pending::<()>());
            let _ = tokio::time::timeout(std::time::Duration::from_millis(1), slow).await;
            timed(Category::Storage, async {}).await;
        })
        .await;
        let st = scope.lock();
        assert!(st.open.is_empty());
        // STORAGE did not nest under the cancelled IMAP section.
        assert!(st
            .sections
            .iter()
            .any(|s| s.path == vec![Category::Storage]));
    }
}
