//! The EAS wire protocol, sans I/O: the WBXML codec, every EAS code page
//! (MS-ASWBXML), typed requests and responses for every MS-ASCMD command,
//! and the HTTP request line (plain and base64 query forms, EAS headers).
//!
//! Architecture invariant: this crate knows nothing about HTTP servers,
//! storage, time or the network. It works on `&[u8]` and typed values only.

pub mod autodiscover;
pub mod commands;
pub mod headers;
pub mod multipart;
pub mod query;
pub mod status;
pub mod version;

pub mod wbxml;
pub mod xml;
