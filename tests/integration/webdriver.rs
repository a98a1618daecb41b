//! A small W3C WebDriver client driving real headless Chromium through chromedriver, so browser tests
//! click and type the way an admin does.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

fn chromium_binary() -> String {
    std::env::var("GRANITE_TEST_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into())
}

fn chromedriver_binary() -> String {
    std::env::var("GRANITE_TEST_CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".into())
}

pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    agent: ureq::Agent,
    profile: std::path::PathBuf,
}

#[derive(Clone)]
pub struct Element(String);

/// WebDriver's codes of the keys the keyboard tests press.
pub const TAB: &str = "\u{E004}";
pub const ENTER: &str = "\u{E007}";
pub const ESCAPE: &str = "\u{E00C}";

impl Browser {
    /// Starts chromedriver and a headless Chromium. Fails loudly when either is missing: browser tests
    /// are never skipped.
    pub fn start() -> Self {
        for binary in [chromium_binary(), chromedriver_binary()] {
            assert!(
                std::path::Path::new(&binary).exists(),
                "{binary} is missing: browser tests need Debian's chromium and chromium-driver (`.ci/run` installs them)"
            );
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new(chromedriver_binary())
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = agent
                .get(format!("{base}/status"))
                .call()
                .ok()
                .and_then(|mut r| r.body_mut().read_json::<Value>().ok())
                .is_some_and(|v| v["value"]["ready"] == json!(true));
            if ready {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not become ready"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let profile = std::env::temp_dir().join(format!(
            "granite-chromium-{}",
            granite::secret::random_base62(12)
        ));
        let capabilities = json!({
            "capabilities": { "alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": chromium_binary(),
                    "args": [
                        "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                        "--disable-component-update", "--disable-quic", "--no-first-run", "--disable-sync",
                        "--window-size=1280,1000", format!("--user-data-dir={}", profile.display()),
                    ]
                }
            }}
        });
        let mut browser = Self {
            driver,
            base,
            session: String::new(),
            agent,
            profile,
        };
        let created = browser.command("POST", "/session", Some(capabilities));
        browser.session = created["sessionId"]
            .as_str()
            .expect("a WebDriver session")
            .to_owned();
        browser
    }

    fn command(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.try_command(method, path, body)
            .unwrap_or_else(|(status, value)| {
                panic!("WebDriver {method} {path} answered {status}: {value}")
            })
    }

    fn try_command(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, (u16, Value)> {
        let url = format!("{}{path}", self.base);
        let mut response = match method {
            "GET" => self.agent.get(&url).call(),
            "DELETE" => self.agent.delete(&url).call(),
            _ => self
                .agent
                .post(&url)
                .send_json(body.unwrap_or_else(|| json!({}))),
        }
        .unwrap_or_else(|e| panic!("WebDriver {method} {path} failed: {e}"));
        let status = response.status().as_u16();
        let value: Value = response.body_mut().read_json().unwrap_or(Value::Null);
        if status < 400 {
            Ok(value["value"].clone())
        } else {
            Err((status, value))
        }
    }

    fn session_command(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.command(method, &format!("/session/{}{path}", self.session), body)
    }

    pub fn goto(&self, url: &str) {
        self.session_command("POST", "/url", Some(json!({ "url": url })));
    }

    pub fn current_url(&self) -> String {
        self.session_command("GET", "/url", None)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    fn find_all(&self, using: &str, value: &str) -> Vec<Element> {
        let found = self.session_command(
            "POST",
            "/elements",
            Some(json!({ "using": using, "value": value })),
        );
        found
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(|e| e[ELEMENT_KEY].as_str())
                    .map(|id| Element(id.to_owned()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Waits up to 15 s for elements matching a CSS selector.
    pub fn wait_for_css(&self, selector: &str) -> Vec<Element> {
        self.wait_until(&format!("an element matching {selector}"), || {
            let found = self.find_all("css selector", selector);
            (!found.is_empty()).then_some(found)
        })
    }

    pub fn css(&self, selector: &str) -> Vec<Element> {
        self.find_all("css selector", selector)
    }

    /// The form field whose `<label>` reads `label`, as a screen reader user finds it.
    pub fn field_labelled(&self, label: &str) -> Element {
        let labels = self.wait_until(&format!("a label {label:?}"), || {
            let found = self.find_all("xpath", &format!("//label[normalize-space()='{label}']"));
            (!found.is_empty()).then_some(found)
        });
        let target = self
            .attribute(&labels[0], "for")
            .expect("the label names its field");
        self.wait_for_css(&format!("#{target}")).remove(0)
    }

    /// The button whose visible text or `aria-label` is `name`.
    pub fn button_named(&self, name: &str) -> Element {
        let xpath = format!("//button[normalize-space()='{name}' or @aria-label='{name}']");
        self.wait_until(&format!("a button {name:?}"), || {
            self.find_all("xpath", &xpath).into_iter().next()
        })
    }

    /// Clicks the button named `name`, finding it again if a refresh replaced it in between.
    pub fn click_button(&self, name: &str) {
        let xpath = format!("//button[normalize-space()='{name}' or @aria-label='{name}']");
        self.wait_until(&format!("a clickable button {name:?}"), || {
            let button = self.find_all("xpath", &xpath).into_iter().next()?;
            let clicked = self.try_command(
                "POST",
                &format!("/session/{}/element/{}/click", self.session, button.0),
                None,
            );
            match clicked {
                Ok(_) => Some(()),
                Err((_, value)) if value.to_string().contains("stale element") => None,
                Err((status, value)) => panic!("clicking {name:?} answered {status}: {value}"),
            }
        })
    }

    /// The visible text of the first element matching `selector`, read in one step (no stale handles).
    pub fn text_of(&self, selector: &str) -> Option<String> {
        let script =
            "const e = document.querySelector(arguments[0]); return e ? e.innerText : null;";
        let value = self.session_command(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": [selector] })),
        );
        value.as_str().map(str::to_owned)
    }

    /// An attribute of the first element matching `selector`, read in one step.
    pub fn attribute_of(&self, selector: &str, name: &str) -> Option<String> {
        let script = "const e = document.querySelector(arguments[0]); return e ? e.getAttribute(arguments[1]) : null;";
        let value = self.session_command(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": [selector, name] })),
        );
        value.as_str().map(str::to_owned)
    }

    pub fn count(&self, selector: &str) -> usize {
        let script = "return document.querySelectorAll(arguments[0]).length;";
        let value = self.session_command(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": [selector] })),
        );
        value.as_u64().unwrap_or(0) as usize
    }

    pub fn type_into(&self, element: &Element, text: &str) {
        self.session_command(
            "POST",
            &format!("/element/{}/value", element.0),
            Some(json!({ "text": text })),
        );
    }

    pub fn click(&self, element: &Element) {
        self.session_command("POST", &format!("/element/{}/click", element.0), None);
    }

    pub fn text(&self, element: &Element) -> String {
        self.session_command("GET", &format!("/element/{}/text", element.0), None)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    pub fn attribute(&self, element: &Element, name: &str) -> Option<String> {
        self.session_command(
            "GET",
            &format!("/element/{}/attribute/{name}", element.0),
            None,
        )
        .as_str()
        .map(str::to_owned)
    }

    /// Accepts the browser's own confirm dialog once it is open.
    pub fn accept_dialog(&self) -> String {
        let url = format!("{}/session/{}/alert/text", self.base, self.session);
        let text = self.wait_until("a confirm dialog", || {
            let mut response = self.agent.get(&url).call().ok()?;
            (response.status().as_u16() == 200)
                .then(|| response.body_mut().read_json::<Value>().ok())
                .flatten()
                .and_then(|v| v["value"].as_str().map(str::to_owned))
        });
        self.session_command("POST", "/alert/accept", None);
        text
    }

    /// Runs a script in the page and returns its result.
    pub fn execute(&self, script: &str) -> Value {
        self.session_command(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": [] })),
        )
    }

    /// Presses one key on whatever has focus, as a keyboard does (WebDriver key codes: [`TAB`],
    /// [`ENTER`], [`ESCAPE`], or a character).
    pub fn press(&self, key: &str) {
        let actions = json!({ "actions": [{ "type": "key", "id": "keyboard", "actions": [
            { "type": "keyDown", "value": key }, { "type": "keyUp", "value": key },
        ]}]});
        self.session_command("POST", "/actions", Some(actions));
    }

    /// Types `text` key by key into whatever has focus.
    pub fn type_keys(&self, text: &str) {
        let keys: Vec<Value> = text
            .chars()
            .flat_map(|c| {
                [
                    json!({ "type": "keyDown", "value": c.to_string() }),
                    json!({ "type": "keyUp", "value": c.to_string() }),
                ]
            })
            .collect();
        let actions = json!({ "actions": [{ "type": "key", "id": "keyboard", "actions": keys }]});
        self.session_command("POST", "/actions", Some(actions));
    }

    /// The accessible name of what has focus, roughly: its aria-label, its label's text, its own
    /// text, or its id; `"the page body"` when nothing does.
    pub fn focused(&self) -> String {
        self.execute(
            "const e = document.activeElement; \
             if (!e || e === document.body) return 'the page body'; \
             const label = e.id && document.querySelector('label[for=\"' + e.id + '\"]'); \
             return (e.getAttribute('aria-label') || (label && label.textContent.trim()) || e.textContent.trim() || e.id).slice(0, 120);",
        )
        .as_str()
        .unwrap_or_default()
        .to_owned()
    }

    /// Presses Tab until what has focus is named as `wanted` says; fails after 150 presses.
    pub fn tab_to(&self, what: &str, wanted: impl Fn(&str) -> bool) {
        for _ in 0..150 {
            if wanted(&self.focused()) {
                return;
            }
            self.press(TAB);
        }
        panic!("Tab never reached {what}; focus is on {:?}", self.focused());
    }

    /// Runs a script that calls its last argument with the result (a promise's outcome, for example).
    pub fn execute_async(&self, script: &str) -> Value {
        self.session_command(
            "POST",
            "/execute/async",
            Some(json!({ "script": script, "args": [] })),
        )
    }

    /// Resizes the window (to capture a whole page in one screenshot).
    pub fn resize(&self, width: u32, height: u32) {
        self.session_command(
            "POST",
            "/window/rect",
            Some(json!({ "width": width, "height": height })),
        );
    }

    /// Saves a PNG of the viewport under target/screenshots/ (for people reviewing what a test saw).
    pub fn screenshot(&self, name: &str) {
        use base64::Engine;
        let data = self.session_command("GET", "/screenshot", None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(data.as_str().unwrap_or_default())
            .unwrap();
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }

    pub fn wait_until<T>(&self, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(found) = probe() {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "waited 15 s for {what} on {}",
                self.current_url()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self
                .agent
                .delete(format!("{}/session/{}", self.base, self.session))
                .call();
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}
