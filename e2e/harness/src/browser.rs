//! A real browser for the console's tests: Debian's headless Chromium driven through
//! ChromeDriver over the W3C WebDriver protocol (JSON over HTTP on loopback), with just the
//! commands the tests use. ChromeDriver listens on a free ephemeral port and is stopped with the
//! [`Browser`].

use anyhow::{Context, bail};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Where the browser and its driver are, when installed.
pub fn installed() -> Result<(PathBuf, PathBuf), String> {
    let find = |names: &[&str]| {
        names
            .iter()
            .flat_map(|n| {
                [
                    PathBuf::from("/usr/bin").join(n),
                    PathBuf::from("/usr/lib/chromium").join(n),
                ]
            })
            .find(|p| p.exists())
    };
    let chromium = find(&["chromium", "chromium-browser"])
        .ok_or("Chromium is not installed (apt-get install chromium)")?;
    let driver = find(&["chromedriver"])
        .ok_or("ChromeDriver is not installed (apt-get install chromium-driver)")?;
    Ok((chromium, driver))
}

/// A headless Chromium session.
pub struct Browser {
    driver: crate::Process,
    address: SocketAddr,
    session: String,
}

/// One HTTP exchange with the driver: (status, JSON body).
fn exchange(
    address: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> anyhow::Result<(u16, Value)> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let body = body.map(Value::to_string).unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    // The driver keeps connections open: read the head, then the body by its length (or its
    // chunks up to the last one).
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut buf)?;
        if n == 0 {
            bail!("ChromeDriver closed the connection");
        }
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).to_ascii_lowercase();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no status from ChromeDriver")?;
    let length: Option<usize> = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok());
    loop {
        let body = &raw[head_end..];
        let done = match length {
            Some(len) => body.len() >= len,
            None => body.ends_with(b"0\r\n\r\n"),
        };
        if done {
            break;
        }
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
    }
    let body = String::from_utf8_lossy(&raw[head_end..]);
    // Chunked or not, the JSON value is between the first '{' and the last '}'.
    let json = match (body.find('{'), body.rfind('}')) {
        (Some(a), Some(b)) if b >= a => serde_json::from_str(&body[a..=b])?,
        _ => Value::Null,
    };
    Ok((status, json))
}

impl Browser {
    /// Starts ChromeDriver and a headless Chromium session (logs in `work`).
    pub fn start(work: &Path) -> anyhow::Result<Browser> {
        let (chromium, driver_bin) = installed().map_err(anyhow::Error::msg)?;
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0")?;
            l.local_addr()?.port()
        };
        let mut cmd = Command::new(driver_bin);
        cmd.arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1");
        let driver = crate::Process::spawn(cmd, &work.join("chromedriver.log"))?;
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(20);
        while exchange(address, "GET", "/status", None).is_err() {
            if Instant::now() > deadline {
                bail!(
                    "ChromeDriver did not start (see {})",
                    work.join("chromedriver.log").display()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let profile = work.join("chromium-profile");
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1280,900", "--no-first-run", "--no-default-browser-check",
                         format!("--user-data-dir={}", profile.display())],
            },
            "goog:loggingPrefs": {"browser": "ALL"},
        }}});
        let (status, reply) = exchange(address, "POST", "/session", Some(&capabilities))?;
        let session = reply["value"]["sessionId"]
            .as_str()
            .with_context(|| format!("no session ({status}): {reply}"))?
            .to_string();
        Ok(Browser {
            driver,
            address,
            session,
        })
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let (status, reply) = exchange(
            self.address,
            method,
            &format!("/session/{}{path}", self.session),
            body.as_ref(),
        )?;
        if status != 200 {
            bail!("WebDriver {method} {path}: {status} {reply}");
        }
        Ok(reply["value"].clone())
    }

    /// Loads `url` and waits for it.
    pub fn goto(&self, url: &str) -> anyhow::Result<()> {
        self.call("POST", "/url", Some(json!({"url": url})))
            .map(|_| ())
    }

    /// The elements matching a CSS selector, in document order.
    pub fn find_all(&self, css: &str) -> anyhow::Result<Vec<String>> {
        let found = self.call(
            "POST",
            "/elements",
            Some(json!({"using": "css selector", "value": css})),
        )?;
        Ok(found
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e.as_object()?.values().next()?.as_str().map(str::to_string))
            .collect())
    }

    /// The first element matching a CSS selector.
    pub fn find(&self, css: &str) -> anyhow::Result<String> {
        self.find_all(css)?
            .into_iter()
            .next()
            .with_context(|| format!("no element matches {css:?}"))
    }

    /// Clicks an element (and, for a link, waits for the page it loads).
    pub fn click(&self, element: &str) -> anyhow::Result<()> {
        self.call(
            "POST",
            &format!("/element/{element}/click"),
            Some(json!({})),
        )
        .map(|_| ())
    }

    /// An element's visible text.
    pub fn text(&self, element: &str) -> anyhow::Result<String> {
        Ok(self
            .call("GET", &format!("/element/{element}/text"), None)?
            .as_str()
            .unwrap_or_default()
            .to_string())
    }

    /// An element's attribute.
    pub fn attribute(&self, element: &str, name: &str) -> anyhow::Result<Option<String>> {
        Ok(self
            .call("GET", &format!("/element/{element}/attribute/{name}"), None)?
            .as_str()
            .map(str::to_string))
    }

    /// Runs a script in the page and returns its value.
    pub fn script(&self, script: &str) -> anyhow::Result<Value> {
        self.call(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
    }

    /// The current page's URL.
    pub fn url(&self) -> anyhow::Result<String> {
        Ok(self
            .call("GET", "/url", None)?
            .as_str()
            .unwrap_or_default()
            .to_string())
    }

    /// Saves a screenshot of the viewport as PNG.
    pub fn screenshot(&self, path: &Path) -> anyhow::Result<()> {
        use base64::Engine as _;
        let data = self.call("GET", "/screenshot", None)?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(data.as_str().context("no screenshot")?)?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, png)?;
        Ok(())
    }

    /// Messages the page logged at level SEVERE (script errors, failed loads) since the last
    /// call.
    pub fn console_errors(&self) -> anyhow::Result<Vec<String>> {
        let entries = self.call("POST", "/se/log", Some(json!({"type": "browser"})))?;
        Ok(entries
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["level"] == "SEVERE")
            .map(|e| e["message"].as_str().unwrap_or_default().to_string())
            .collect())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = exchange(
            self.address,
            "DELETE",
            &format!("/session/{}", self.session),
            None,
        );
        self.driver.kill();
    }
}
