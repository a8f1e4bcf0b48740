//! The one retry backoff: capped doubling. Pure, so sans-IO cores can use it too.

use std::time::Duration;

/// The delay after `previous` (None: the first try waits `first`), doubled and capped.
pub fn capped_doubling(previous: Option<Duration>, first: Duration, cap: Duration) -> Duration {
    previous.map_or(first, |p| p.saturating_mul(2)).min(cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap() {
        let ms = Duration::from_millis;
        let mut d = None;
        let seq: Vec<u128> = (0..6)
            .map(|_| {
                let next = capped_doubling(d, ms(200), ms(2_000));
                d = Some(next);
                next.as_millis()
            })
            .collect();
        assert_eq!(seq, [200, 400, 800, 1600, 2000, 2000]);
        assert_eq!(
            capped_doubling(None, ms(500), ms(100)),
            ms(100),
            "the cap wins"
        );
    }
}
