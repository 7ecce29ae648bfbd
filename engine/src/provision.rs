//! Provision: the policy-key states (initial, pending acknowledgement,
//! acknowledged, outdated), the per-request policy check (HTTP 449 up to
//! 12.1, EAS Status 140/142/143/144 from 14.0) and remote wipe.
//!
//! Policy key values come from the caller (a random u32 chosen by the
//! server); this module never generates one.

use crate::decision::{Decision, EngineConfig};
use crate::event::Event;
use crate::state::{DeviceState, PolicyState, WipeState};
use crate::types::{Command, PolicyKey, ProtocolVersion, Timestamp};

/// Result of checking `X-MS-PolicyKey` before a command.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PolicyCheck {
    /// Go on.
    Allowed,
    /// Up to 12.1: HTTP 449 "Retry after sending a Provision command".
    Http449,
    /// From 14.0: this EAS Status in the command's response
    /// ([MS-ASCMD] 2.2.2 common status codes): 140 remote wipe requested,
    /// 142 not provisioned, 143 policy refresh, 144 invalid policy key.
    Status(u16),
}

/// Checks the device's policy key for `command`.
pub fn check_policy(
    state: &DeviceState,
    command: Command,
    header_key: Option<PolicyKey>,
    version: ProtocolVersion,
    config: &EngineConfig,
) -> PolicyCheck {
    if command == Command::Provision {
        return PolicyCheck::Allowed;
    }
    let header_key = header_key.filter(|k| k.0 != 0);
    let status = if state.wipe == WipeState::Requested {
        Some(140)
    } else if !config.require_provisioning {
        None
    } else {
        match (state.policy, header_key) {
            (PolicyState::Acknowledged(k), Some(h)) if k == h => None,
            // Android devices (seen in the corpus: Samsung GT-I9100, EAS
            // 12.1) send their key with Sync but none with Ping, and
            // Exchange answers those Pings 200. A provisioned device's
            // key-less Ping is let through; a wrong key still is not.
            (PolicyState::Acknowledged(_), None) if command == Command::Ping => None,
            (PolicyState::Acknowledged(_) | PolicyState::Outdated(_), Some(_)) => {
                match state.policy {
                    PolicyState::Outdated(k) if Some(k) == header_key => Some(143),
                    _ => Some(144),
                }
            }
            (_, None) | (PolicyState::Initial | PolicyState::Pending(_), Some(_)) => Some(142),
        }
    };
    match status {
        None => PolicyCheck::Allowed,
        Some(s) if version.uses_provision_statuses() => PolicyCheck::Status(s),
        Some(_) => PolicyCheck::Http449,
    }
}

/// A Provision request in engine terms.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ProvisionRequest {
    /// PolicyKey in the request (phase 2 acknowledgement).
    pub policy_key: Option<PolicyKey>,
    /// Status in the acknowledgement (1 applied, 2 partially…).
    pub policy_status: Option<u8>,
    /// RemoteWipe Status from the device (wipe acknowledgement).
    pub remote_wipe_status: Option<u8>,
}

/// Provision response model ([MS-ASPROV] 2.2.2).
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ProvisionResponse {
    /// Provision Status (1 success).
    pub status: u8,
    /// Policy Status (1 success, 5 wrong policy key acknowledged).
    pub policy_status: Option<u8>,
    /// PolicyKey to send.
    pub policy_key: Option<PolicyKey>,
    /// Include the policy document (phase 1).
    pub include_policy: bool,
    /// Send `<RemoteWipe/>`.
    pub remote_wipe: bool,
}

/// Decides a Provision request; `new_key` is the caller's fresh random key.
pub fn decide_provision(
    state: &DeviceState,
    req: &ProvisionRequest,
    new_key: PolicyKey,
    now: Timestamp,
    config: &EngineConfig,
) -> Decision<ProvisionResponse> {
    let mut resp = ProvisionResponse {
        status: 1,
        policy_status: None,
        policy_key: None,
        include_policy: false,
        remote_wipe: false,
    };
    match state.wipe {
        WipeState::Requested if req.remote_wipe_status.is_some() => {
            return Decision {
                response: resp,
                events: vec![Event::WipeAcknowledged { at: now }],
            };
        }
        WipeState::Requested | WipeState::Acknowledged => {
            resp.remote_wipe = true;
            return Decision {
                response: resp,
                events: vec![],
            };
        }
        WipeState::None => {}
    }
    let ack = req.policy_key.filter(|k| k.0 != 0);
    match (ack, state.policy) {
        (None, _) => {
            // Phase 1: send the policy with a temporary key.
            resp.policy_status = Some(1);
            resp.policy_key = Some(new_key);
            resp.include_policy = true;
            Decision {
                response: resp,
                events: vec![Event::PolicyKeyIssued {
                    policy_key: new_key,
                }],
            }
        }
        (Some(k), PolicyState::Pending(p)) if k == p => {
            let accepted = match req.policy_status {
                Some(1) => true,
                Some(2) => config.allow_partial_compliance,
                _ => false,
            };
            if !accepted {
                // The device cannot apply the policy: no final key.
                resp.policy_status = Some(1);
                resp.policy_key = Some(p);
                return Decision {
                    response: resp,
                    events: vec![],
                };
            }
            resp.policy_status = Some(1);
            resp.policy_key = Some(new_key);
            Decision {
                response: resp,
                events: vec![Event::DeviceProvisioned {
                    policy_key: new_key,
                }],
            }
        }
        (Some(k), PolicyState::Acknowledged(a)) if k == a => {
            // A repeated acknowledgement whose answer was lost.
            resp.policy_status = Some(1);
            resp.policy_key = Some(a);
            Decision {
                response: resp,
                events: vec![],
            }
        }
        _ => {
            // [MS-ASPROV] Policy Status 5: the acknowledged key is not the one sent.
            resp.policy_status = Some(5);
            Decision {
                response: resp,
                events: vec![],
            }
        }
    }
}
