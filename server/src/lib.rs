//! The `opush` server library: HTTP front end, authentication, device
//! registry use, EAS command handlers, backend connectors and configuration.
//! The binary (`main.rs`) is a thin command line over it; tests start the
//! real server in-process from here.

pub mod admin;
pub mod backends;
pub mod capture;
pub mod commands;
pub mod config;
pub mod dates;
pub mod device;
pub mod draft;
pub mod email;
pub mod error;
pub mod fence;
pub mod http;
pub mod obs;
pub mod oof;
pub mod origin;
pub mod outgoing;
pub mod push;
pub mod receipt;
pub mod reply;
pub mod sent_copy;
pub mod serve;
pub mod session;
