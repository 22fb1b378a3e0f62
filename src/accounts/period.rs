//! Limit periods: where the current daily, weekly or monthly period began. Limits reset at
//! 00:00 UTC; weeks run Monday to Sunday. Pure calendar arithmetic, no clock of its own.

use chrono::{DateTime, Datelike, Days, NaiveDate, Utc};

use super::LimitReset;

/// The start of the period that `now` falls in, as Unix seconds: the value stored in
/// `key_credits.period_start`. A limit that never resets has one period since the epoch.
pub fn period_start(reset: Option<LimitReset>, now: DateTime<Utc>) -> i64 {
    let starts = PeriodStarts::at(now);
    let start = match reset {
        None => return 0,
        Some(LimitReset::Daily) => starts.day,
        Some(LimitReset::Weekly) => starts.week,
        Some(LimitReset::Monthly) => starts.month,
    };
    start
        .and_hms_opt(0, 0, 0)
        .map_or(0, |midnight| midnight.and_utc().timestamp())
}

/// The starts of the current UTC day, week (Monday) and month, for usage by period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeriodStarts {
    pub day: NaiveDate,
    pub week: NaiveDate,
    pub month: NaiveDate,
}

impl PeriodStarts {
    pub fn at(now: DateTime<Utc>) -> Self {
        let day = now.date_naive();
        let week = day
            .checked_sub_days(Days::new(u64::from(day.weekday().num_days_from_monday())))
            .unwrap_or(day);
        Self {
            day,
            week,
            month: day.with_day(1).unwrap_or(day),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().to_utc()
    }

    fn start(reset: Option<LimitReset>, now: &str) -> String {
        let seconds = period_start(reset, at(now));
        DateTime::from_timestamp(seconds, 0).unwrap().to_rfc3339()
    }

    #[test]
    fn a_daily_period_starts_at_utc_midnight_and_rolls_over_at_the_next() {
        let daily = Some(LimitReset::Daily);
        assert_eq!(
            start(daily, "2026-11-23T23:59:59.999Z"),
            "2026-11-23T00:00:00+00:00"
        );
        assert_eq!(
            start(daily, "2026-11-24T00:00:00Z"),
            "2026-11-24T00:00:00+00:00"
        );
        // A caller's local offset does not matter: the boundary is UTC.
        assert_eq!(
            start(daily, "2026-11-24T01:30:00+05:00"),
            "2026-11-23T00:00:00+00:00"
        );
    }

    #[test]
    fn a_weekly_period_runs_monday_to_sunday() {
        let weekly = Some(LimitReset::Weekly);
        // 2026-11-23 is a Monday.
        assert_eq!(
            start(weekly, "2026-11-23T00:00:00Z"),
            "2026-11-23T00:00:00+00:00"
        );
        assert_eq!(
            start(weekly, "2026-11-29T23:59:59Z"),
            "2026-11-23T00:00:00+00:00"
        );
        assert_eq!(
            start(weekly, "2026-11-30T00:00:00Z"),
            "2026-11-30T00:00:00+00:00"
        );
        // Across a month and a year boundary.
        assert_eq!(
            start(weekly, "2027-01-01T12:00:00Z"),
            "2026-12-28T00:00:00+00:00"
        );
    }

    #[test]
    fn a_monthly_period_starts_on_the_first_including_across_years_and_leap_days() {
        let monthly = Some(LimitReset::Monthly);
        assert_eq!(
            start(monthly, "2026-12-31T23:59:59Z"),
            "2026-12-01T00:00:00+00:00"
        );
        assert_eq!(
            start(monthly, "2027-01-01T00:00:00Z"),
            "2027-01-01T00:00:00+00:00"
        );
        assert_eq!(
            start(monthly, "2028-02-29T10:00:00Z"),
            "2028-02-01T00:00:00+00:00"
        );
    }

    #[test]
    fn a_limit_without_reset_has_one_period_since_the_epoch() {
        assert_eq!(period_start(None, at("2026-11-23T10:00:00Z")), 0);
    }

    /// Every instant from one second before to one second after each UTC midnight of three
    /// years (2027's year end, 2028's 29 February, weeks straddling months and years included),
    /// against starts found the slow way: stepping back a day at a time.
    #[test]
    fn every_day_of_three_years_falls_in_consistent_periods() {
        let first = NaiveDate::from_ymd_opt(2026, 1, 1).unwrap();
        let last = NaiveDate::from_ymd_opt(2029, 1, 1).unwrap();
        let mut leap_days = 0;
        let mut day = first;
        while day < last {
            let midnight = day.and_hms_opt(0, 0, 0).unwrap().and_utc();
            for offset in [-1, 0, 1, 43_200, 86_399] {
                let now = midnight + chrono::Duration::seconds(offset);
                starts_hold_at(now);
            }
            leap_days += i32::from(day.month() == 2 && day.day() == 29);
            day = day.succ_opt().unwrap();
        }
        assert_eq!(leap_days, 1, "2028-02-29 is swept");
    }

    fn starts_hold_at(now: DateTime<Utc>) {
        let starts = PeriodStarts::at(now);
        let today = now.date_naive();
        let mut monday = today;
        while monday.weekday() != chrono::Weekday::Mon {
            monday = monday.pred_opt().unwrap();
        }
        let mut first = today;
        while first.day() != 1 {
            first = first.pred_opt().unwrap();
        }
        assert_eq!(
            starts,
            PeriodStarts {
                day: today,
                week: monday,
                month: first
            },
            "{now}"
        );
        assert!(
            starts.month <= starts.day && starts.week <= starts.day,
            "{now}"
        );
        assert!((starts.day - starts.week).num_days() < 7, "{now}");

        let seconds = now.timestamp();
        for (reset, length_of) in [
            (LimitReset::Daily, 1),
            (LimitReset::Weekly, 7),
            (LimitReset::Monthly, days_in_month(starts.month)),
        ] {
            let start = period_start(Some(reset), now);
            let next = start + 86_400 * length_of;
            assert!(start <= seconds && seconds < next, "{reset:?} at {now}");
            // The next period starts where this one's arithmetic says it does.
            let next_instant = DateTime::from_timestamp(next, 0).unwrap();
            assert_eq!(
                period_start(Some(reset), next_instant),
                next,
                "{reset:?} at {now}"
            );
            let last_second = DateTime::from_timestamp(next - 1, 0).unwrap();
            assert_eq!(
                period_start(Some(reset), last_second),
                start,
                "{reset:?} at {now}"
            );
        }
        assert_eq!(
            period_start(Some(LimitReset::Daily), now),
            starts
                .day
                .and_hms_opt(0, 0, 0)
                .unwrap()
                .and_utc()
                .timestamp()
        );
    }

    fn days_in_month(first: NaiveDate) -> i64 {
        let next = first.checked_add_months(chrono::Months::new(1)).unwrap();
        (next - first).num_days()
    }

    #[test]
    fn usage_periods_are_the_current_day_week_and_month() {
        let starts = PeriodStarts::at(at("2026-11-01T08:00:00Z"));
        // 2026-11-01 is a Sunday: its week began in October.
        assert_eq!(starts.day.to_string(), "2026-11-01");
        assert_eq!(starts.week.to_string(), "2026-10-26");
        assert_eq!(starts.month.to_string(), "2026-11-01");
    }
}
