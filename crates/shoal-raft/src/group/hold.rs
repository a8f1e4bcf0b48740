//! Holding back a replication stream's entry-less requests for a moment.
//!
//! When a write commits, the leader tells its followers the new commit index at once,
//! in a request without entries. On one runtime thread that request is encoded and
//! written to both followers before the client hears its answer: two socket writes on
//! the write's path. Held back for up to [`HOLD`], it leaves together with the next
//! request (the next write's entries, one socket write for both), or alone when the
//! time is up; a busy stream holds nothing for long. Holding never reorders.
//!
//! A held request that the next one *supersedes* is dropped instead of sent: the next
//! request continues the log from the same entry, for the same leader, with a commit
//! index at least as new, so it tells the follower everything the held one would, and
//! its answer acknowledges both (the leader counts answers by the log position they
//! confirm, not one by one). The follower then handles, stores and answers one request
//! per write instead of two: one socket write less each way, on the write's path.
//!
//! The first request of a stream is never held (a new stream probes where the
//! follower's log stands, and a heartbeat is a stream of one request).

use std::{
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use futures_util::Stream;
use tokio::time::{Instant, Sleep};

/// Longest an entry-less request waits for company.
pub const HOLD: Duration = Duration::from_millis(1);

/// `inner`, with the items `holdable` picks (after the first) held back for up to
/// `hold` or until the next item comes.
pub struct HoldBack<S: Stream> {
    inner: S,
    inner_done: bool,
    started: bool,
    held: Option<S::Item>,
    /// Goes out right after the held item that was released for it.
    queued: Option<S::Item>,
    timer: Pin<Box<Sleep>>,
    hold: Duration,
    holdable: fn(&S::Item) -> bool,
    /// `supersedes(held, next)`: `next` makes `held` redundant.
    supersedes: fn(&S::Item, &S::Item) -> bool,
}

impl<S: Stream + Unpin> HoldBack<S> {
    pub fn new(
        inner: S,
        hold: Duration,
        holdable: fn(&S::Item) -> bool,
        supersedes: fn(&S::Item, &S::Item) -> bool,
    ) -> Self {
        Self {
            inner,
            inner_done: false,
            started: false,
            held: None,
            queued: None,
            timer: Box::pin(tokio::time::sleep(hold)),
            hold,
            holdable,
            supersedes,
        }
    }
}

impl<S: Stream + Unpin> Stream for HoldBack<S>
where
    S::Item: Unpin,
{
    type Item = S::Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        let this = self.get_mut();
        if let Some(item) = this.queued.take() {
            return Poll::Ready(Some(item));
        }
        loop {
            if this.inner_done {
                return Poll::Ready(this.held.take());
            }
            match Pin::new(&mut this.inner).poll_next(cx) {
                Poll::Ready(Some(item)) => {
                    let first = !std::mem::replace(&mut this.started, true);
                    let hold = !first && (this.holdable)(&item);
                    if this
                        .held
                        .as_ref()
                        .is_some_and(|held| (this.supersedes)(held, &item))
                    {
                        // Dropped; its successor keeps the held one's deadline.
                        if hold {
                            this.held = Some(item);
                            continue;
                        }
                        this.held = None;
                        return Poll::Ready(Some(item));
                    }
                    if let Some(held) = this.held.take() {
                        // The held one goes now, ahead of what came after it.
                        if hold {
                            this.held = Some(item);
                            this.timer.as_mut().reset(Instant::now() + this.hold);
                        } else {
                            this.queued = Some(item);
                        }
                        return Poll::Ready(Some(held));
                    }
                    if !hold {
                        return Poll::Ready(Some(item));
                    }
                    this.held = Some(item);
                    this.timer.as_mut().reset(Instant::now() + this.hold);
                }
                Poll::Ready(None) => this.inner_done = true,
                Poll::Pending => {
                    if this.held.is_some() && this.timer.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(this.held.take());
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;

    use super::*;

    fn empty(x: &u32) -> bool {
        *x == 0
    }

    /// Test items: a held 0 is superseded by 100 alone; a held 10 (holdable where a
    /// test says so) by anything above 10.
    fn supersedes(held: &u32, next: &u32) -> bool {
        (*held == 0 && *next == 100) || (*held == 10 && *next > 10)
    }

    /// Items from a channel, so the test decides when each one arrives.
    fn channel() -> (
        tokio::sync::mpsc::UnboundedSender<u32>,
        HoldBack<impl Stream<Item = u32> + Unpin>,
    ) {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u32>();
        let inner = Box::pin(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)));
        (tx, HoldBack::new(inner, HOLD, empty, supersedes))
    }

    async fn next_now<S: Stream + Unpin>(s: &mut S) -> Option<Option<S::Item>> {
        tokio::time::timeout(Duration::ZERO, s.next()).await.ok()
    }

    #[tokio::test(start_paused = true)]
    async fn an_entryless_request_waits_for_the_next_and_leaves_first() {
        let (tx, mut s) = channel();
        tx.send(0).unwrap(); // the first item of a stream is never held
        assert_eq!(next_now(&mut s).await, Some(Some(0)));
        tx.send(5).unwrap();
        assert_eq!(next_now(&mut s).await, Some(Some(5)));
        tx.send(0).unwrap();
        assert_eq!(next_now(&mut s).await, None, "held back");
        tx.send(7).unwrap();
        assert_eq!(next_now(&mut s).await, Some(Some(0)), "released, in order");
        assert_eq!(next_now(&mut s).await, Some(Some(7)));
        assert_eq!(next_now(&mut s).await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_held_request_leaves_alone_when_its_time_is_up() {
        let (tx, mut s) = channel();
        tx.send(3).unwrap();
        tx.send(0).unwrap();
        assert_eq!(s.next().await, Some(3));
        let start = Instant::now();
        assert_eq!(s.next().await, Some(0));
        let waited = start.elapsed();
        assert!(waited >= HOLD && waited < HOLD * 3, "waited {waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_newer_entryless_request_releases_the_held_one_and_is_held_itself() {
        let (tx, mut s) = channel();
        tx.send(1).unwrap();
        tx.send(0).unwrap();
        tx.send(0).unwrap();
        assert_eq!(next_now(&mut s).await, Some(Some(1)));
        assert_eq!(
            next_now(&mut s).await,
            Some(Some(0)),
            "the first 0, released"
        );
        assert_eq!(next_now(&mut s).await, None, "the second 0, held");
        assert_eq!(s.next().await, Some(0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_superseded_request_is_dropped_and_its_successor_goes_at_once() {
        let (tx, mut s) = channel();
        tx.send(1).unwrap();
        tx.send(0).unwrap();
        assert_eq!(next_now(&mut s).await, Some(Some(1)));
        assert_eq!(next_now(&mut s).await, None, "held back");
        tx.send(100).unwrap();
        assert_eq!(
            next_now(&mut s).await,
            Some(Some(100)),
            "the held 0 is gone"
        );
        assert_eq!(next_now(&mut s).await, None);
        // Not superseded: both go, in order.
        tx.send(0).unwrap();
        tx.send(7).unwrap();
        assert_eq!(next_now(&mut s).await, Some(Some(0)));
        assert_eq!(next_now(&mut s).await, Some(Some(7)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_superseding_holdable_request_is_held_until_the_first_ones_time() {
        // A longer hold than HOLD: the timer's millisecond steps must not blur the two
        // deadlines apart.
        let hold = Duration::from_millis(10);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u32>();
        let inner = Box::pin(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)));
        let mut s = HoldBack::new(inner, hold, |x: &u32| *x >= 10, supersedes);
        tx.send(1).unwrap();
        tx.send(10).unwrap();
        assert_eq!(next_now(&mut s).await, Some(Some(1)));
        let start = Instant::now();
        assert_eq!(next_now(&mut s).await, None, "10 held");
        tokio::time::advance(hold / 2).await;
        tx.send(11).unwrap();
        assert_eq!(s.next().await, Some(11), "11 replaced 10");
        let waited = start.elapsed();
        assert!(
            waited >= hold && waited < hold * 13 / 10,
            "11 left at 10's deadline, not its own: waited {waited:?}"
        );
        drop(tx);
        assert_eq!(s.next().await, None, "10 was dropped");
    }

    #[tokio::test(start_paused = true)]
    async fn the_end_of_the_stream_releases_what_is_held() {
        let (tx, mut s) = channel();
        tx.send(2).unwrap();
        tx.send(0).unwrap();
        drop(tx);
        assert_eq!(next_now(&mut s).await, Some(Some(2)));
        assert_eq!(next_now(&mut s).await, Some(Some(0)));
        assert_eq!(next_now(&mut s).await, Some(None));
    }
}
