//! Times as admins read them: relative ("5 minutes ago"), with the exact UTC time on hover.

use chrono::NaiveDateTime;

/// A point in time ready for `<time datetime="{{ iso }}" title="{{ exact }}">{{ relative }}</time>`.
#[derive(Clone, Debug)]
pub struct Moment {
    pub iso: String,
    pub exact: String,
    pub relative: String,
}

impl Moment {
    pub fn new(at: NaiveDateTime, now: NaiveDateTime) -> Self {
        Self {
            iso: at
                .and_utc()
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            exact: at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
            relative: relative((at - now).num_seconds()),
        }
    }
}

/// "just now", "40 seconds ago", "3 minutes ago", "in 2 hours", "5 days ago". Seconds are written
/// out below a minute: a machine Offline after 30 s of silence must not read "last seen just now".
pub fn relative(delta_secs: i64) -> String {
    let future = delta_secs > 0;
    let secs = delta_secs.unsigned_abs();
    if secs < 10 {
        return if future {
            "in a few seconds".into()
        } else {
            "just now".into()
        };
    }
    if secs < 60 {
        return if future {
            format!("in {secs} seconds")
        } else {
            format!("{secs} seconds ago")
        };
    }
    let (amount, unit) = match secs {
        0..=2_699 => ((secs + 30) / 60, "minute"),
        2_700..=129_599 => ((secs + 1800) / 3600, "hour"),
        129_600..=3_887_999 => ((secs + 43_200) / 86_400, "day"),
        3_888_000..=27_647_999 => ((secs + 1_296_000) / 2_592_000, "month"),
        _ => ((secs + 15_768_000) / 31_536_000, "year"),
    };
    let amount = amount.max(1);
    let plural = if amount == 1 { "" } else { "s" };
    if future {
        format!("in {amount} {unit}{plural}")
    } else {
        format!("{amount} {unit}{plural} ago")
    }
}

/// A duration in words for "expires in …", rounded up to what matters.
pub fn duration_words(secs: i64) -> String {
    relative(secs).trim_start_matches("in ").to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_naturally() {
        assert_eq!(relative(-9), "just now");
        assert_eq!(relative(5), "in a few seconds");
        assert_eq!(relative(-50), "50 seconds ago");
        assert_eq!(relative(20), "in 20 seconds");
        assert_eq!(relative(-60), "1 minute ago");
        assert_eq!(relative(-119), "2 minutes ago");
        assert_eq!(relative(3600), "in 1 hour");
        assert_eq!(relative(-2_690), "45 minutes ago");
        assert_eq!(relative(-2 * 3600), "2 hours ago");
        assert_eq!(relative(7 * 86_400), "in 7 days");
        assert_eq!(relative(-120 * 86_400), "4 months ago");
        assert_eq!(relative(-800 * 86_400), "2 years ago");
        assert_eq!(duration_words(86_400), "24 hours");
    }

    #[test]
    fn exact_time_is_utc() {
        let at = chrono::NaiveDate::from_ymd_opt(2026, 11, 28)
            .unwrap()
            .and_hms_opt(9, 5, 3)
            .unwrap();
        let moment = Moment::new(at, at);
        assert_eq!(moment.iso, "2026-11-28T09:05:03Z");
        assert_eq!(moment.exact, "2026-11-28 09:05:03 UTC");
        assert_eq!(moment.relative, "just now");
    }
}
