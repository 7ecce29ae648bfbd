//! What each data command counts into SUMMARY.IN (what the device sent)
//! and SUMMARY.OUT (what the server sent back), so a handler's part is one
//! call. `CHANGE` counts adds and changes (a move is a change), `DELETE`
//! deletes (soft deletes included, and emptied folders once each), `FETCH`
//! fetched items.

use opush_engine::{ReplyKind, ServerChange, SyncResponse};
use opush_protocol::commands::item_operations::{Operation, OperationResult};
use opush_protocol::commands::move_items::{MoveItemsRequest, MoveItemsResponse};
use opush_protocol::status::ItemOperationsStatus;

use super::scope::{count, Direction, Kind};

/// Sync, one collection: the device's commands as the engine answered
/// them, and the changes sent (only when the collection's status is success).
pub fn sync(r: &SyncResponse) {
    let kind = |k: ReplyKind| match k {
        ReplyKind::Add | ReplyKind::Change => Kind::Change,
        ReplyKind::Delete => Kind::Delete,
        ReplyKind::Fetch => Kind::Fetch,
    };
    for reply in &r.replies {
        count(Direction::In, kind(reply.kind), 1);
        if reply.kind == ReplyKind::Fetch && reply.status == 1 {
            count(Direction::Out, Kind::Fetch, 1);
        }
    }
    if r.status != opush_engine::SyncStatus::Success {
        return;
    }
    for change in &r.changes {
        let kind = match change {
            ServerChange::Add { .. } | ServerChange::Change { .. } => Kind::Change,
            ServerChange::Delete { .. } | ServerChange::SoftDelete { .. } => Kind::Delete,
        };
        count(Direction::Out, kind, 1);
    }
    // A collection with nothing to report still counts as a data request.
    count(Direction::In, Kind::Change, 0);
}

/// FolderSync: the hierarchy changes sent (adds and updates, deletes).
pub fn folder_sync(changes: &[opush_engine::FolderChange]) {
    let deletes = changes
        .iter()
        .filter(|c| matches!(c, opush_engine::FolderChange::Delete { .. }))
        .count();
    count(Direction::Out, Kind::Change, changes.len() - deletes);
    count(Direction::Out, Kind::Delete, deletes);
}

/// Search: the items returned (each with its properties: a fetch).
pub fn search(n_results: usize) {
    count(Direction::Out, Kind::Fetch, n_results);
}

/// SendMail / SmartReply / SmartForward: one message from the device.
pub fn message_sent() {
    count(Direction::In, Kind::Change, 1);
}

/// ItemOperations: fetches asked and returned, folders emptied, moves.
pub fn item_operations(ops: &[Operation], results: &[OperationResult]) {
    for op in ops {
        let kind = match op {
            Operation::Fetch { .. } => Kind::Fetch,
            Operation::EmptyFolderContents { .. } => Kind::Delete,
            Operation::Move { .. } => Kind::Change,
        };
        count(Direction::In, kind, 1);
    }
    for res in results {
        match res {
            OperationResult::Fetch {
                status: ItemOperationsStatus::Success,
                ..
            } => count(Direction::Out, Kind::Fetch, 1),
            OperationResult::EmptyFolderContents {
                status: ItemOperationsStatus::Success,
                ..
            } => count(Direction::Out, Kind::Delete, 1),
            OperationResult::Move {
                status: ItemOperationsStatus::Success,
                ..
            } => count(Direction::Out, Kind::Change, 1),
            _ => count(Direction::Out, Kind::Fetch, 0),
        }
    }
}

/// MoveItems: moves asked, moves done.
pub fn move_items(req: &MoveItemsRequest, res: &MoveItemsResponse) {
    count(Direction::In, Kind::Change, req.moves.len());
    let done = res
        .responses
        .iter()
        .filter(|r| r.dst_msg_id.is_some())
        .count();
    count(Direction::Out, Kind::Change, done);
}
