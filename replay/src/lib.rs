//! Reading a recorded device session back and re-running it through the
//! engine: bundles ([`Bundle`]: the state a stretch of a device's log starts
//! from, its events and the captured bodies), [`run`] (every `Decided`
//! event re-decided on the state folded up to it, responses, events and the
//! final state compared) and [`show`] (a readable transcript).
//!
//! It reads storage ([`export`]) and never writes it, and it needs no
//! backend to replay. Format compatibility follows the engine's: a bundle
//! written by a newer engine format is refused with a clear message.

mod bundle;
mod run;
mod show;

pub use bundle::{export, Bundle, BundleCapture, BundleError, BundleEvent, BUNDLE_MAGIC};
pub use run::{run, Divergence, Report};
pub use show::show;
