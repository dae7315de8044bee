//! RFC 7252 §4.8 transmission parameters and the time spans derived from them (§4.8.2).
//!
//! The derived values are the lifetimes a server needs for deduplication
//! (`EXCHANGE_LIFETIME`, `NON_LIFETIME`) and the retransmission schedule for
//! Confirmable messages it sends (separate responses). They are provided as
//! constants for the RFC defaults and, through [`TransmissionParams`],
//! computed from configurable base parameters so that a deployment that
//! tunes `ACK_TIMEOUT` gets consistent lifetimes automatically.

use std::time::Duration;

/// Initial ACK timeout for a Confirmable message.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(2);
/// The initial timeout is chosen uniformly in `[ACK_TIMEOUT, ACK_TIMEOUT * ACK_RANDOM_FACTOR]`.
pub const ACK_RANDOM_FACTOR: f64 = 1.5;
/// Number of retransmissions of a Confirmable message before giving up.
pub const MAX_RETRANSMIT: u32 = 4;
/// Maximum number of simultaneous outstanding interactions with one peer.
pub const NSTART: u32 = 1;
/// Upper bound of the random delay before answering a multicast request.
pub const DEFAULT_LEISURE: Duration = Duration::from_secs(5);
/// Average data rate (bytes per second) not to exceed toward an unresponsive peer.
pub const PROBING_RATE: u32 = 1;

/// Time from the first to the last transmission of a Confirmable message (45 s).
pub const MAX_TRANSMIT_SPAN: Duration = Duration::from_secs(45);
/// Time from the first transmission until the sender gives up waiting for an ACK (93 s).
pub const MAX_TRANSMIT_WAIT: Duration = Duration::from_secs(93);
/// Maximum time a datagram is expected to take through the network (100 s).
pub const MAX_LATENCY: Duration = Duration::from_secs(100);
/// Time a node takes to turn around a Confirmable message into an ACK (= `ACK_TIMEOUT`).
pub const PROCESSING_DELAY: Duration = Duration::from_secs(2);
/// Maximum round-trip time, `2 * MAX_LATENCY + PROCESSING_DELAY` (202 s).
pub const MAX_RTT: Duration = Duration::from_secs(202);
/// How long a Confirmable message id must be remembered for deduplication (247 s).
pub const EXCHANGE_LIFETIME: Duration = Duration::from_secs(247);
/// How long a Non-confirmable message id must be remembered for deduplication (145 s).
pub const NON_LIFETIME: Duration = Duration::from_secs(145);

/// The base transmission parameters that the derived spans depend on.
///
/// `MAX_LATENCY` is a network property rather than a protocol knob but is
/// kept here so every derived value can be computed from one struct.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TransmissionParams {
    /// See [`ACK_TIMEOUT`].
    pub ack_timeout: Duration,
    /// See [`ACK_RANDOM_FACTOR`]; must be at least 1.0.
    pub ack_random_factor: f64,
    /// See [`MAX_RETRANSMIT`].
    pub max_retransmit: u32,
    /// See [`MAX_LATENCY`].
    pub max_latency: Duration,
}

impl Default for TransmissionParams {
    /// The RFC 7252 defaults.
    fn default() -> Self {
        TransmissionParams {
            ack_timeout: ACK_TIMEOUT,
            ack_random_factor: ACK_RANDOM_FACTOR,
            max_retransmit: MAX_RETRANSMIT,
            max_latency: MAX_LATENCY,
        }
    }
}

impl TransmissionParams {
    /// `2^max_retransmit` as a float; saturates for absurd retransmit counts.
    fn backoff_factor(&self) -> f64 {
        2f64.powi(i32::try_from(self.max_retransmit).unwrap_or(i32::MAX))
    }

    fn secs(value: f64) -> Duration {
        Duration::try_from_secs_f64(value).unwrap_or(Duration::MAX)
    }

    /// `ACK_TIMEOUT * (2^MAX_RETRANSMIT - 1) * ACK_RANDOM_FACTOR`.
    pub fn max_transmit_span(&self) -> Duration {
        Self::secs(
            self.ack_timeout.as_secs_f64() * (self.backoff_factor() - 1.0) * self.ack_random_factor,
        )
    }

    /// `ACK_TIMEOUT * (2^(MAX_RETRANSMIT + 1) - 1) * ACK_RANDOM_FACTOR`.
    pub fn max_transmit_wait(&self) -> Duration {
        Self::secs(
            self.ack_timeout.as_secs_f64()
                * (2.0 * self.backoff_factor() - 1.0)
                * self.ack_random_factor,
        )
    }

    /// `PROCESSING_DELAY`, which RFC 7252 sets equal to `ACK_TIMEOUT`.
    pub fn processing_delay(&self) -> Duration {
        self.ack_timeout
    }

    /// `2 * MAX_LATENCY + PROCESSING_DELAY`.
    pub fn max_rtt(&self) -> Duration {
        self.max_latency
            .saturating_mul(2)
            .saturating_add(self.processing_delay())
    }

    /// `MAX_TRANSMIT_SPAN + 2 * MAX_LATENCY + PROCESSING_DELAY`.
    pub fn exchange_lifetime(&self) -> Duration {
        self.max_transmit_span().saturating_add(self.max_rtt())
    }

    /// `MAX_TRANSMIT_SPAN + MAX_LATENCY`.
    pub fn non_lifetime(&self) -> Duration {
        self.max_transmit_span().saturating_add(self.max_latency)
    }

    /// Initial retransmission timeout for a Confirmable message (§4.2).
    ///
    /// `unit` is a caller-supplied random number in `[0, 1]` (clamped), so
    /// the crate needs no random number generator; the result lies in
    /// `[ACK_TIMEOUT, ACK_TIMEOUT * ACK_RANDOM_FACTOR]`.
    pub fn initial_timeout(&self, unit: f64) -> Duration {
        let unit = if unit.is_nan() {
            0.0
        } else {
            unit.clamp(0.0, 1.0)
        };
        let factor = 1.0 + (self.ack_random_factor - 1.0).max(0.0) * unit;
        Self::secs(self.ack_timeout.as_secs_f64() * factor)
    }

    /// Timeout before retransmission number `attempt + 1`: the initial timeout
    /// doubled `attempt` times (§4.2); `None` once `attempt` reaches
    /// `max_retransmit`, meaning the sender must give up.
    pub fn retransmit_timeout(&self, initial: Duration, attempt: u32) -> Option<Duration> {
        if attempt >= self.max_retransmit {
            return None;
        }
        Some(initial.saturating_mul(2u32.saturating_pow(attempt)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_defaults_match_rfc_constants() {
        let p = TransmissionParams::default();
        assert_eq!(p.max_transmit_span(), MAX_TRANSMIT_SPAN);
        assert_eq!(p.max_transmit_wait(), MAX_TRANSMIT_WAIT);
        assert_eq!(p.processing_delay(), PROCESSING_DELAY);
        assert_eq!(p.max_rtt(), MAX_RTT);
        assert_eq!(p.exchange_lifetime(), EXCHANGE_LIFETIME);
        assert_eq!(p.non_lifetime(), NON_LIFETIME);
    }

    #[test]
    fn retransmission_schedule() {
        let p = TransmissionParams::default();
        assert_eq!(p.initial_timeout(0.0), Duration::from_secs(2));
        assert_eq!(p.initial_timeout(1.0), Duration::from_secs(3));
        assert_eq!(p.initial_timeout(7.0), Duration::from_secs(3));
        assert_eq!(p.initial_timeout(f64::NAN), Duration::from_secs(2));
        let initial = Duration::from_secs(2);
        let schedule: Vec<_> = (0..=MAX_RETRANSMIT)
            .map(|a| p.retransmit_timeout(initial, a))
            .collect();
        let secs = |s| Some(Duration::from_secs(s));
        assert_eq!(schedule, vec![secs(2), secs(4), secs(8), secs(16), None]);
    }

    #[test]
    fn absurd_parameters_saturate_instead_of_panicking() {
        let p = TransmissionParams {
            ack_timeout: Duration::MAX,
            ack_random_factor: 1e300,
            max_retransmit: u32::MAX,
            max_latency: Duration::MAX,
        };
        assert_eq!(p.exchange_lifetime(), Duration::MAX);
        assert_eq!(p.non_lifetime(), Duration::MAX);
        assert_eq!(p.initial_timeout(1.0), Duration::MAX);
        assert_eq!(
            p.retransmit_timeout(Duration::from_secs(u64::MAX / 2), 100),
            Some(Duration::MAX)
        );
    }
}
