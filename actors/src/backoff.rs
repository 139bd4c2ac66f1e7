//! The one backoff every retry loop in pagecast uses: a reconnecting relay, the service's Redis
//! connection and control subscription, a failing S3 part, a worker waiting for its id.
//!
//! Owns: the delays of one retry loop, from `first` doubling up to `max` (built on `backon`'s
//! exponential backoff, no jitter: the delays are what the docs say). [`Backoff::reset`] starts
//! over after a success.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

/// Delays for one retry loop. See the module docs.
#[derive(Debug)]
pub struct Backoff {
    builder: ExponentialBuilder,
    delays: ExponentialBackoff,
    first: Duration,
    max: Duration,
}

impl Backoff {
    /// `first`, then doubling up to `max`, for ever.
    pub fn new(first: Duration, max: Duration) -> Backoff {
        let builder = ExponentialBuilder::default()
            .with_min_delay(first)
            .with_max_delay(max.max(first))
            .with_factor(2.0)
            .without_max_times();
        Backoff {
            delays: builder.build(),
            builder,
            first,
            max: max.max(first),
        }
    }

    /// The same delay every time.
    pub fn fixed(every: Duration) -> Backoff {
        Backoff::new(every, every)
    }

    /// The next delay to wait.
    pub fn next_delay(&mut self) -> Duration {
        self.delays.next().unwrap_or(self.max)
    }

    /// After a success: the next delay is `first` again.
    pub fn reset(&mut self) {
        self.delays = self.builder.build();
    }

    /// Waits the next delay.
    pub async fn wait(&mut self) {
        tokio::time::sleep(self.next_delay()).await;
    }

    pub fn first(&self) -> Duration {
        self.first
    }

    pub fn max(&self) -> Duration {
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_maximum_and_start_over_after_a_reset() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(250), ms(2000));
        let seen: Vec<_> = (0..6).map(|_| b.next_delay()).collect();
        assert_eq!(
            seen,
            [ms(250), ms(500), ms(1000), ms(2000), ms(2000), ms(2000)]
        );
        b.reset();
        assert_eq!(b.next_delay(), ms(250));
        let mut f = Backoff::fixed(ms(1000));
        assert_eq!([f.next_delay(), f.next_delay()], [ms(1000), ms(1000)]);
    }
}
