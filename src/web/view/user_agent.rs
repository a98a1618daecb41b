//! A browser's User-Agent as people name it ("Firefox on Linux"), for the sessions list; the full
//! string is shown on hover.

/// "Chrome on Windows", "Safari on iPhone", "curl"; "Unknown browser" when nothing is recognised.
pub fn describe(user_agent: &str) -> String {
    let has = |needle: &str| user_agent.contains(needle);
    // Order matters: Edge and Opera also say Chrome; Chrome also says Safari.
    let browser = if has("Edg/") {
        "Edge"
    } else if has("OPR/") {
        "Opera"
    } else if has("Firefox/") {
        "Firefox"
    } else if has("Chrome/") || has("Chromium/") || has("HeadlessChrome/") {
        "Chrome"
    } else if has("Safari/") {
        "Safari"
    } else if let Some(tool) = ["curl/", "Wget/", "python-requests/"]
        .into_iter()
        .find(|tool| user_agent.starts_with(tool))
    {
        return tool.trim_end_matches('/').to_owned();
    } else {
        return "Unknown browser".into();
    };
    let system = if has("iPhone") {
        Some("iPhone")
    } else if has("iPad") {
        Some("iPad")
    } else if has("Android") {
        Some("Android")
    } else if has("Windows") {
        Some("Windows")
    } else if has("Mac OS X") || has("Macintosh") {
        Some("macOS")
    } else if has("CrOS") {
        Some("ChromeOS")
    } else if has("Linux") {
        Some("Linux")
    } else {
        None
    };
    match system {
        Some(system) => format!("{browser} on {system}"),
        None => browser.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::describe;

    #[test]
    fn names_common_browsers() {
        assert_eq!(
            describe("Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"),
            "Firefox on Linux"
        );
        assert_eq!(
            describe(
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0"
            ),
            "Edge on Windows"
        );
        assert_eq!(
            describe(
                "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1"
            ),
            "Safari on iPhone"
        );
        assert_eq!(describe("curl/8.5.0"), "curl");
        assert_eq!(describe(""), "Unknown browser");
    }
}
