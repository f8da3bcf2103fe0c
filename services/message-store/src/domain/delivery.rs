//! Delivery status moves one way: pending → sent → delivered → seen, or to failed from
//! pending or sent. Channels report out of order (a "seen" can overtake a "delivered"), so a
//! late report never moves a message back.

use giao_proto::common::DeliveryStatus;

fn rank(status: DeliveryStatus) -> Option<u8> {
    match status {
        DeliveryStatus::Pending => Some(1),
        DeliveryStatus::Sent => Some(2),
        DeliveryStatus::Delivered => Some(3),
        DeliveryStatus::Seen => Some(4),
        DeliveryStatus::Failed | DeliveryStatus::Unspecified => None,
    }
}

/// Whether a message in `current` may move to `next`.
pub fn may_move(current: DeliveryStatus, next: DeliveryStatus) -> bool {
    match next {
        DeliveryStatus::Unspecified => false,
        DeliveryStatus::Failed => matches!(current, DeliveryStatus::Pending | DeliveryStatus::Sent),
        _ => match (rank(current), rank(next)) {
            (Some(from), Some(to)) => to > from,
            // A failed send that the channel later reports as delivered did arrive.
            (None, Some(to)) => current == DeliveryStatus::Failed && to >= 3,
            _ => false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use DeliveryStatus::*;

    #[test]
    fn moves_forward_only() {
        assert!(may_move(Pending, Sent));
        assert!(may_move(Sent, Seen));
        assert!(may_move(Delivered, Seen));
        assert!(!may_move(Seen, Delivered));
        assert!(!may_move(Sent, Sent));
        assert!(!may_move(Sent, Pending));
    }

    #[test]
    fn failures_only_before_delivery() {
        assert!(may_move(Pending, Failed));
        assert!(may_move(Sent, Failed));
        assert!(!may_move(Delivered, Failed));
        assert!(may_move(Failed, Seen));
        assert!(!may_move(Failed, Sent));
    }
}
