//! EAS protocol versions (`MS-ASProtocolVersion`), as named in MS-ASHTTP.
//!
//! Exists so every layer compares versions as an ordered enum instead of
//! strings. Parses the header form ("14.1") and the one-byte form used by the
//! base64 query (141). It must not guess: an unknown version is an error.

use std::fmt;
use std::str::FromStr;

/// An EAS protocol version. Ordered: `V12_1 < V14_0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProtocolVersion {
    /// 2.5
    V2_5,
    /// 12.0
    V12_0,
    /// 12.1
    V12_1,
    /// 14.0
    V14_0,
    /// 14.1
    V14_1,
    /// 16.0
    V16_0,
    /// 16.1
    V16_1,
}

/// A protocol version string or byte that is not one of [`ProtocolVersion::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    /// The header value is not a known version.
    #[error("unknown EAS protocol version {0:?}")]
    UnknownName(String),
    /// The base64 query's version byte is not a known version.
    #[error("unknown EAS protocol version byte {0}")]
    UnknownByte(u8),
}

/// Value of the `MS-ASProtocolVersions` header of an OPTIONS response.
pub const PROTOCOL_VERSIONS_HEADER: &str = "2.5,12.0,12.1,14.0,14.1,16.0,16.1";

impl ProtocolVersion {
    /// Every version, oldest first.
    pub const ALL: [ProtocolVersion; 7] = [
        ProtocolVersion::V2_5,
        ProtocolVersion::V12_0,
        ProtocolVersion::V12_1,
        ProtocolVersion::V14_0,
        ProtocolVersion::V14_1,
        ProtocolVersion::V16_0,
        ProtocolVersion::V16_1,
    ];

    /// The newest version.
    pub const LATEST: ProtocolVersion = ProtocolVersion::V16_1;

    /// The header form, e.g. `"14.1"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ProtocolVersion::V2_5 => "2.5",
            ProtocolVersion::V12_0 => "12.0",
            ProtocolVersion::V12_1 => "12.1",
            ProtocolVersion::V14_0 => "14.0",
            ProtocolVersion::V14_1 => "14.1",
            ProtocolVersion::V16_0 => "16.0",
            ProtocolVersion::V16_1 => "16.1",
        }
    }

    /// The base64 query byte: major * 10 + minor (MS-ASHTTP 2.2.1.1.1.1.1).
    pub fn query_byte(self) -> u8 {
        match self {
            ProtocolVersion::V2_5 => 25,
            ProtocolVersion::V12_0 => 120,
            ProtocolVersion::V12_1 => 121,
            ProtocolVersion::V14_0 => 140,
            ProtocolVersion::V14_1 => 141,
            ProtocolVersion::V16_0 => 160,
            ProtocolVersion::V16_1 => 161,
        }
    }

    /// Parses the base64 query byte (e.g. 141 → 14.1).
    pub fn from_query_byte(byte: u8) -> Result<Self, VersionError> {
        Self::ALL
            .into_iter()
            .find(|v| v.query_byte() == byte)
            .ok_or(VersionError::UnknownByte(byte))
    }

    /// True for 12.0 and later (AirSyncBase, BodyPreference).
    pub fn has_airsyncbase(self) -> bool {
        self >= ProtocolVersion::V12_0
    }
}

impl FromStr for ProtocolVersion {
    type Err = VersionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let trimmed = s.trim();
        Self::ALL
            .into_iter()
            .find(|v| v.as_str() == trimmed)
            .ok_or_else(|| VersionError::UnknownName(s.chars().take(32).collect()))
    }
}

impl fmt::Display for ProtocolVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test code: a panic is a test failure")]
mod tests {
    use super::*;

    #[test]
    fn header_and_byte_forms_agree() {
        for v in ProtocolVersion::ALL {
            assert_eq!(v.as_str().parse::<ProtocolVersion>(), Ok(v));
            assert_eq!(ProtocolVersion::from_query_byte(v.query_byte()), Ok(v));
        }
        assert_eq!(
            ProtocolVersion::from_query_byte(121),
            Ok(ProtocolVersion::V12_1)
        );
        assert_eq!(
            ProtocolVersion::from_query_byte(160),
            Ok(ProtocolVersion::V16_0)
        );
        assert!(ProtocolVersion::from_query_byte(142).is_err());
        assert!("14.2".parse::<ProtocolVersion>().is_err());
        assert!("".parse::<ProtocolVersion>().is_err());
    }

    #[test]
    fn versions_header_lists_all_in_order() {
        let joined: Vec<&str> = ProtocolVersion::ALL.iter().map(|v| v.as_str()).collect();
        assert_eq!(joined.join(","), PROTOCOL_VERSIONS_HEADER);
        assert!(ProtocolVersion::V12_1 < ProtocolVersion::V14_0);
    }
}
