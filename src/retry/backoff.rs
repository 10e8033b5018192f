//! When to try again: the message's age, clamped to [min, max], plus up to 5%
//! jitter so that a destination's messages do not all return at once.

use std::time::Duration;

pub fn retry_delay(age: Duration, min: Duration, max: Duration) -> Duration {
    let base = age.clamp(min, max);
    base + base.mul_f64(fastrand::f64() * 0.05)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_the_age_within_bounds() {
        let (min, max) = (Duration::from_secs(1000), Duration::from_secs(4000));
        for (age, base) in [
            (0, 1000),
            (999, 1000),
            (2500, 2500),
            (4000, 4000),
            (90_000, 4000),
        ] {
            let delay = retry_delay(Duration::from_secs(age), min, max);
            let base = Duration::from_secs(base);
            assert!(
                delay >= base && delay <= base.mul_f64(1.05),
                "age {age}: {delay:?}"
            );
        }
    }
}
