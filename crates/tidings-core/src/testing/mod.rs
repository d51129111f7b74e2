//! The conformance suite: the behaviour every [`Broker`] backend must show,
//! written once against the trait.
//!
//! A backend runs it with [`conformance_tests!`](crate::conformance_tests),
//! giving an async expression that makes a fresh [`Fixture`] per test:
//!
//! ```text
//! tidings_core::conformance_tests!(async { MyFixture::new().await });
//! ```
//!
//! Time-dependent cases use short settings (visibility timeouts of a few
//! hundred milliseconds) and synchronise by blocking receives, which return
//! as soon as the awaited message is deliverable: no sleeps.

pub mod cases;
pub mod hooked;

pub use hooked::{Call, Gate, Hook, HookFuture, Hooked};

use crate::Broker;

/// A broker under test, with whatever must live as long as it (a temporary
/// directory, a key prefix to clean up).
pub trait Fixture: Send + Sync {
    /// The broker.
    fn broker(&self) -> &dyn Broker;
}

impl<B: Broker> Fixture for B {
    fn broker(&self) -> &dyn Broker {
        self
    }
}

/// Generates one `#[tokio::test]` per conformance case. `$setup` is an
/// expression evaluating to a future of a [`Fixture`].
///
/// With `optional:` first, `$setup` evaluates to a future of an
/// `Option<Fixture>`: `None` (a server that is not there, on a developer's
/// machine) skips the case.
///
/// With `in_sequence:` first, the macro is an expression instead: a future
/// that runs every case one after the other, each with a fresh fixture (for
/// a backend whose server the test starts once, such as a Redis Cluster).
#[macro_export]
macro_rules! conformance_tests {
    (in_sequence: $setup:expr) => {
        $crate::conformance_tests! { @list [sequence] $setup }
    };
    (optional: $setup:expr) => {
        $crate::conformance_tests!(@list [optional] $setup);
    };
    ($setup:expr) => {
        $crate::conformance_tests!(@list [required] $setup);
    };
    (@list [$mode:ident] $setup:expr) => {
        $crate::conformance_tests! { @cases [$mode] $setup;
            create_queue_is_idempotent,
            unknown_queue_is_a_typed_error,
            bad_input_is_rejected,
            send_receive_ack,
            buffered_queue_works_like_any_other,
            batch_send_keeps_order,
            single_consumer_sees_send_order,
            consumers_of_a_group_share_work,
            every_group_sees_every_message,
            group_created_later_sees_stored_messages,
            blocking_receive_wakes_on_send,
            receive_returns_empty_after_wait,
            unacked_message_is_redelivered,
            max_deliveries_moves_to_dead_letters,
            nack_retry_redelivers_after_delay,
            nack_dead_letter_moves_at_once,
            dead_letters_requeue_by_id_and_all,
            dead_letters_purge,
            nack_many_gives_back_every_pending_id_at_once,
            dead_letter_is_found_by_id,
            peek_shows_messages_without_taking_them,
            expired_message_is_never_delivered,
            expired_message_can_be_dead_lettered,
            delayed_message_waits,
            dedup_id_returns_original,
            transaction_applies_everything,
            transaction_with_bad_ack_applies_nothing,
            transaction_with_unknown_queue_applies_nothing,
            transaction_nacks_with_a_record_or_not_at_all,
            purge_removes_messages,
            delete_removes_everything,
            retention_keeps_acked_messages,
            retention_by_age_lets_acked_messages_go,
            info_reports_groups_and_consumers,
            pending_lists_what_consumers_hold,
            forgotten_consumers_leave_the_group,
            deleted_group_lets_go_of_what_it_owed,
            ack_of_unknown_ids_is_skipped,
            ack_and_receive_acks_then_takes_more,
            concurrent_senders_lose_nothing,
            records_are_kept_in_key_order,
            records_change_with_messages_or_not_at_all,
            bad_record_keys_are_rejected,
            expectations_guard_a_transaction,
            concurrent_inserts_of_one_key_admit_one,
            counters_add_with_the_writes_they_count
        }
    };
    (@cases [sequence] $setup:expr; $($case:ident),* $(,)?) => {
        async {
            $(
                let fixture = $setup.await;
                $crate::testing::cases::$case($crate::testing::Fixture::broker(&fixture)).await;
                drop(fixture);
            )*
        }
    };
    (@cases [required] $setup:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let fixture = $setup.await;
                $crate::testing::cases::$case($crate::testing::Fixture::broker(&fixture)).await;
            }
        )*
    };
    (@cases [optional] $setup:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let Some(fixture) = $setup.await else {
                    return;
                };
                $crate::testing::cases::$case($crate::testing::Fixture::broker(&fixture)).await;
            }
        )*
    };
}
