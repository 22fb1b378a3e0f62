//! One endpoint's rolling measurements: the latest answers' time to first token, total latency
//! and throughput (a fixed ring), and uptime in minute and hour buckets. Pure; time is given as
//! the duration since the tracker started.

use std::time::Duration;

/// Answers kept for percentiles. Enough for a stable p90; p99 is then the slowest of them.
const SAMPLES: usize = 64;
/// Once the ring is full, the medians are recomputed every this many samples: they move little
/// per sample, and recomputing on every answer cost a measurable share of a request's CPU.
const SAMPLES_PER_SUMMARY: usize = 8;
/// Samples older than this are left out of the percentiles the endpoints API reports.
const WINDOW: Duration = Duration::from_secs(30 * 60);
/// A failure rate this high over the last minute or two opens the breaker...
const FAILING_RATE: f64 = 0.5;
/// ...once there are at least this many attempts to judge by.
const FAILING_MIN_ATTEMPTS: u32 = 10;

#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Duration,
    ttft: Duration,
    latency: Duration,
    /// Output tokens per second; `None` when the answer had no measurable generation time.
    throughput: Option<f64>,
}

/// What one answer measured.
#[derive(Debug, Clone, Copy)]
pub struct Measurement {
    pub ttft: Duration,
    pub latency: Duration,
    pub output_tokens: u64,
}

impl Measurement {
    /// Tokens over the generation time (after the first token) when there was any, else over
    /// the whole answer, as a non-streamed answer arrives in one piece.
    fn throughput(&self) -> Option<f64> {
        let generation = self.latency.saturating_sub(self.ttft);
        let time = if generation.is_zero() {
            self.latency
        } else {
            generation
        };
        (self.output_tokens > 0 && !time.is_zero())
            .then(|| self.output_tokens as f64 / time.as_secs_f64())
    }
}

/// The nearest-rank median, found without sorting; reorders `values`.
fn median(values: &mut [f64]) -> Option<f64> {
    let rank = values.len().div_ceil(2).checked_sub(1)?;
    Some(*values.select_nth_unstable_by(rank, f64::total_cmp).1)
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Percentiles {
    pub p50: f64,
    pub p75: f64,
    pub p90: f64,
    pub p99: f64,
}

impl Percentiles {
    /// Nearest-rank percentiles; `None` for no values. Sorts `values` in place.
    fn of(values: &mut [f64]) -> Option<Percentiles> {
        if values.is_empty() {
            return None;
        }
        values.sort_by(f64::total_cmp);
        let rank = |p: f64| {
            let index = (p * values.len() as f64).ceil() as usize;
            values[index.clamp(1, values.len()) - 1]
        };
        Some(Percentiles {
            p50: rank(0.5),
            p75: rank(0.75),
            p90: rank(0.9),
            p99: rank(0.99),
        })
    }
}

/// Attempts and counted failures in one time slot.
#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    /// Which slot of time this is (time / width); a stale slot is reused from zero.
    epoch: u64,
    attempts: u32,
    failures: u32,
}

/// A ring of `N` buckets each `width` long.
#[derive(Debug, Clone)]
struct Buckets<const N: usize> {
    width: Duration,
    slots: [Bucket; N],
}

impl<const N: usize> Buckets<N> {
    fn new(width: Duration) -> Self {
        Self {
            width,
            slots: [Bucket::default(); N],
        }
    }

    fn epoch(&self, at: Duration) -> u64 {
        (at.as_millis() / self.width.as_millis().max(1)) as u64
    }

    fn add(&mut self, at: Duration, failed: bool) {
        let epoch = self.epoch(at);
        let slot = &mut self.slots[(epoch % N as u64) as usize];
        if slot.epoch != epoch {
            *slot = Bucket {
                epoch,
                ..Bucket::default()
            };
        }
        slot.attempts = slot.attempts.saturating_add(1);
        slot.failures = slot.failures.saturating_add(u32::from(failed));
    }

    /// Attempts and failures in the last `span` buckets, the current one included.
    fn totals(&self, at: Duration, span: u64) -> (u32, u32) {
        let now = self.epoch(at);
        let oldest = now.saturating_sub(span.saturating_sub(1));
        self.slots
            .iter()
            .filter(|slot| slot.attempts > 0 && (oldest..=now).contains(&slot.epoch))
            .fold((0, 0), |(attempts, failures), slot| {
                (attempts + slot.attempts, failures + slot.failures)
            })
    }

    /// Percentage of attempts that did not fail; `None` with no attempts.
    fn uptime(&self, at: Duration, span: u64) -> Option<f64> {
        let (attempts, failures) = self.totals(at, span);
        (attempts > 0).then(|| 100.0 * f64::from(attempts - failures) / f64::from(attempts))
    }
}

/// Uptime over OpenRouter's three spans, in percent.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Uptime {
    pub last_5m: Option<f64>,
    pub last_30m: Option<f64>,
    pub last_1d: Option<f64>,
}

#[derive(Debug, Clone)]
pub(crate) struct Stats {
    samples: Vec<Sample>,
    /// Where the next sample goes once the ring is full.
    next: usize,
    /// Medians over the ring, kept current (see [`SAMPLES_PER_SUMMARY`]) so plans read them for
    /// free.
    ttft_p50: Option<Duration>,
    throughput_p50: Option<f64>,
    /// Samples since the medians were last computed.
    unsummarised: usize,
    minutes: Buckets<30>,
    hours: Buckets<24>,
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            samples: Vec::new(),
            next: 0,
            ttft_p50: None,
            throughput_p50: None,
            unsummarised: 0,
            minutes: Buckets::new(Duration::from_secs(60)),
            hours: Buckets::new(Duration::from_secs(3600)),
        }
    }
}

impl Stats {
    /// An attempt that counts for uptime: answered, or failed in a way that is the endpoint's
    /// fault.
    pub fn attempted(&mut self, at: Duration, failed: bool) {
        self.minutes.add(at, failed);
        self.hours.add(at, failed);
    }

    /// Whether the last minute or two has failed too often to keep trying.
    pub fn failing_often(&self, at: Duration) -> bool {
        let (attempts, failures) = self.minutes.totals(at, 2);
        attempts >= FAILING_MIN_ATTEMPTS
            && f64::from(failures) >= FAILING_RATE * f64::from(attempts)
    }

    pub fn measured(&mut self, at: Duration, measurement: Measurement) {
        let sample = Sample {
            at,
            ttft: measurement.ttft,
            latency: measurement.latency,
            throughput: measurement.throughput(),
        };
        let filling = self.samples.len() < SAMPLES;
        if filling {
            self.samples.push(sample);
        } else {
            self.samples[self.next] = sample;
            self.next = (self.next + 1) % SAMPLES;
        }
        self.unsummarised += 1;
        if filling || self.unsummarised >= SAMPLES_PER_SUMMARY {
            self.unsummarised = 0;
            let mut values = [0.0; SAMPLES];
            let count = self.collect(&mut values, None, |sample| Some(sample.ttft.as_secs_f64()));
            self.ttft_p50 = median(&mut values[..count]).map(Duration::from_secs_f64);
            let count = self.collect(&mut values, None, |sample| sample.throughput);
            self.throughput_p50 = median(&mut values[..count]);
        }
    }

    /// Copies one measure of the samples (those since `since`, if given) into `values`.
    fn collect(
        &self,
        values: &mut [f64; SAMPLES],
        since: Option<Duration>,
        measure: impl Fn(&Sample) -> Option<f64>,
    ) -> usize {
        let mut count = 0;
        for sample in &self.samples {
            if since.is_some_and(|since| sample.at < since) {
                continue;
            }
            if let Some(value) = measure(sample) {
                values[count] = value;
                count += 1;
            }
        }
        count
    }

    pub fn ttft_p50(&self) -> Option<Duration> {
        self.ttft_p50
    }

    pub fn throughput_p50(&self) -> Option<f64> {
        self.throughput_p50
    }

    /// Percentiles of answers within the last 30 minutes: time to first token and total
    /// latency in seconds, throughput in tokens per second.
    pub fn recent(&self, at: Duration) -> Recent {
        let since = at.checked_sub(WINDOW);
        let mut values = [0.0; SAMPLES];
        let mut percentiles = |measure: fn(&Sample) -> Option<f64>| {
            let count = self.collect(&mut values, since, measure);
            Percentiles::of(&mut values[..count])
        };
        Recent {
            ttft: percentiles(|sample| Some(sample.ttft.as_secs_f64())),
            latency: percentiles(|sample| Some(sample.latency.as_secs_f64())),
            throughput: percentiles(|sample| sample.throughput),
            uptime: Uptime {
                last_5m: self.minutes.uptime(at, 5),
                last_30m: self.minutes.uptime(at, 30),
                last_1d: self.hours.uptime(at, 24),
            },
        }
    }
}

/// The last 30 minutes of one endpoint, as the endpoints API reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Recent {
    pub ttft: Option<Percentiles>,
    pub latency: Option<Percentiles>,
    pub throughput: Option<Percentiles>,
    pub uptime: Uptime,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_median_is_the_nearest_rank_p50() {
        let mut values: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        assert_eq!(median(&mut values), Some(50.0));
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [7.0]), Some(7.0));
        assert_eq!(median(&mut []), None);
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let mut values: Vec<f64> = (1..=100).map(f64::from).collect();
        let p = Percentiles::of(&mut values).unwrap();
        assert_eq!((p.p50, p.p75, p.p90, p.p99), (50.0, 75.0, 90.0, 99.0));
        assert_eq!(Percentiles::of(&mut [7.0]).unwrap().p99, 7.0);
        assert!(Percentiles::of(&mut []).is_none());
    }

    #[test]
    fn medians_follow_the_latest_samples_and_throughput_counts_generation_time() {
        let mut stats = Stats::default();
        assert_eq!(stats.ttft_p50(), None);
        for i in 0..(SAMPLES as u64 * 2) {
            stats.measured(
                Duration::from_secs(i),
                Measurement {
                    ttft: ms(100 + i),
                    latency: ms(1100 + i),
                    output_tokens: 50,
                },
            );
        }
        // The ring keeps the last 64 (ttft 164..=227 ms), whose median rank is the 32nd.
        assert_eq!(stats.ttft_p50(), Some(ms(195)));
        assert_eq!(stats.throughput_p50(), Some(50.0));
    }

    #[test]
    fn the_recent_window_leaves_out_old_samples() {
        let mut stats = Stats::default();
        let answer = |ttft| Measurement {
            ttft: ms(ttft),
            latency: ms(ttft),
            output_tokens: 0,
        };
        stats.measured(Duration::ZERO, answer(900));
        stats.measured(Duration::from_secs(3600), answer(100));
        let recent = stats.recent(Duration::from_secs(3600));
        assert_eq!(recent.ttft.unwrap().p99, 0.1);
        assert_eq!(recent.throughput, None, "no tokens, no throughput");
    }

    #[test]
    fn uptime_counts_each_span_separately() {
        let mut stats = Stats::default();
        let at = Duration::from_secs(3 * 3600);
        // Twenty minutes ago: one failure; now: three answers.
        stats.attempted(at - Duration::from_secs(20 * 60), true);
        for _ in 0..3 {
            stats.attempted(at, false);
        }
        let uptime = stats.recent(at).uptime;
        assert_eq!(uptime.last_5m, Some(100.0));
        assert_eq!(uptime.last_30m, Some(75.0));
        assert_eq!(uptime.last_1d, Some(75.0));
        assert_eq!(Stats::default().recent(at).uptime, Uptime::default());
    }

    #[test]
    fn a_minute_of_mostly_failures_is_failing_often() {
        let mut stats = Stats::default();
        let at = Duration::from_secs(600);
        for i in 0..10 {
            stats.attempted(at, i % 2 == 0);
        }
        assert!(stats.failing_often(at));
        assert!(!stats.failing_often(at + Duration::from_secs(180)));
    }
}
