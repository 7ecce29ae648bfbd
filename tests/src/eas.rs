//! A device's side of Exchange ActiveSync over real HTTP/1.1, for the
//! integration tests and the load tool: plain or base64 request lines,
//! Basic authentication, `MS-ASProtocolVersion` and `X-MS-PolicyKey`
//! headers, one kept-alive connection per client, WBXML bodies built and
//! read with `opush-protocol`.
//!
//! It is deliberately small and written against the bytes on the wire (no
//! HTTP library) so a test sees exactly what opush answered: status line,
//! headers and body. It must not know opush's internals.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use opush_protocol::headers::{BasicCredentials, Login, Password};
use opush_protocol::wbxml::{self, Element};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// How long a client waits for one whole answer before failing.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(120);

/// One HTTP answer.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Headers, in order.
    pub headers: Vec<(String, String)>,
    /// Body (de-chunked).
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// A header's value (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The WBXML body as a tree; panics (fails the test) when it does not decode.
    pub fn element(&self) -> Element<'static> {
        match wbxml::decode(&self.body) {
            Ok(e) => e.into_owned(),
            Err(e) => panic!(
                "HTTP {} body is not WBXML ({e}): {:?}",
                self.status,
                String::from_utf8_lossy(&self.body[..self.body.len().min(200)])
            ),
        }
    }

    /// The WBXML body as XML text, for assertions and failure messages.
    pub fn xml(&self) -> String {
        opush_protocol::xml::wbxml_to_xml(&self.body)
            .unwrap_or_else(|e| panic!("HTTP {} body is not WBXML: {e}", self.status))
    }
}

/// WBXML from XML text in the namespaces `opush wbxml decode` prints.
pub fn wbxml_of(xml: &str) -> Vec<u8> {
    opush_protocol::xml::xml_to_wbxml(xml).unwrap_or_else(|e| panic!("bad test XML ({e}): {xml}"))
}

/// The text of the first element named `name` (any code page), depth first.
pub fn find_text(root: &Element<'_>, name: &str) -> Option<String> {
    if root.tag.name() == Some(name) {
        return root.text_concat().map(|t| t.into_owned());
    }
    root.elements().find_map(|e| find_text(e, name))
}

/// Every element named `name` (any code page), in document order.
pub fn find_all<'e, 'a>(root: &'e Element<'a>, name: &str) -> Vec<&'e Element<'a>> {
    let mut out = Vec::new();
    let mut stack = vec![root];
    while let Some(e) = stack.pop() {
        if e.tag.name() == Some(name) {
            out.push(e);
        }
        let children: Vec<_> = e.elements().collect();
        stack.extend(children.into_iter().rev());
    }
    out
}

/// A device talking to one server.
pub struct EasClient {
    /// Where opush listens.
    pub addr: SocketAddr,
    /// The login (`user@domain` or `DOMAIN\user`).
    pub login: String,
    /// `Authorization` header value.
    pub authorization: String,
    /// `DeviceId`.
    pub device_id: String,
    /// `DeviceType`.
    pub device_type: String,
    /// `MS-ASProtocolVersion` (e.g. "14.1").
    pub version: String,
    /// The policy key sent as `X-MS-PolicyKey` (once provisioned).
    pub policy_key: Option<String>,
    /// `User-Agent`.
    pub user_agent: String,
    conn: Option<BufReader<TcpStream>>,
}

impl EasClient {
    /// A client for `login`/`password` as device `device_id` speaking `version`.
    pub fn new(
        addr: SocketAddr,
        login: &str,
        password: &str,
        device_id: &str,
        version: &str,
    ) -> Self {
        EasClient {
            addr,
            login: login.to_owned(),
            authorization: basic(login, password),
            device_id: device_id.to_owned(),
            device_type: "OpushTest".to_owned(),
            version: version.to_owned(),
            policy_key: None,
            user_agent: "opush-tests/1".to_owned(),
            conn: None,
        }
    }

    /// Sends the next requests to `addr` on a connection of their own: the
    /// device behind a load balancer, now reaching another opush of the
    /// same store.
    pub fn switch_to(&mut self, addr: SocketAddr) {
        if self.addr != addr {
            self.addr = addr;
            self.conn = None;
        }
    }

    /// The plain request line for `cmd` plus `extra` (`&Name=value…`).
    pub fn plain_query(&self, cmd: &str, extra: &str) -> String {
        format!(
            "Cmd={cmd}&User={}&DeviceId={}&DeviceType={}{extra}",
            percent(&self.login),
            percent(&self.device_id),
            percent(&self.device_type)
        )
    }

    /// `POST /Microsoft-Server-ActiveSync?<plain query>` with the device's headers.
    pub async fn post(&mut self, cmd: &str, body: &[u8]) -> HttpResponse {
        let query = self.plain_query(cmd, "");
        self.post_query(&query, true, body).await
    }

    /// POST of an XML document (encoded to WBXML) for `cmd`.
    pub async fn post_xml(&mut self, cmd: &str, xml: &str) -> HttpResponse {
        self.post(cmd, &wbxml_of(xml)).await
    }

    /// POST with a ready request line (plain or base64). `version_header`:
    /// send `MS-ASProtocolVersion` and `X-MS-PolicyKey` (a base64 query
    /// carries them itself).
    pub async fn post_query(
        &mut self,
        query: &str,
        version_header: bool,
        body: &[u8],
    ) -> HttpResponse {
        let mut headers = vec![
            ("Authorization".to_owned(), self.authorization.clone()),
            ("User-Agent".to_owned(), self.user_agent.clone()),
            (
                "Content-Type".to_owned(),
                "application/vnd.ms-sync.wbxml".to_owned(),
            ),
        ];
        if version_header {
            headers.push(("MS-ASProtocolVersion".to_owned(), self.version.clone()));
            if let Some(k) = &self.policy_key {
                headers.push(("X-MS-PolicyKey".to_owned(), k.clone()));
            }
        }
        let target = format!("/Microsoft-Server-ActiveSync?{query}");
        self.send("POST", &target, &headers, body).await
    }

    /// `OPTIONS /Microsoft-Server-ActiveSync` with credentials.
    pub async fn options(&mut self) -> HttpResponse {
        let headers = vec![("Authorization".to_owned(), self.authorization.clone())];
        self.send("OPTIONS", "/Microsoft-Server-ActiveSync", &headers, b"")
            .await
    }

    /// Sends one request on the kept-alive connection (reconnecting once
    /// when the server closed it in between); panics on a transport failure.
    pub async fn send(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(String, String)],
        body: &[u8],
    ) -> HttpResponse {
        let reused = self.conn.is_some();
        match self.try_send(method, target, headers, body).await {
            Ok(r) => r,
            Err(e) if reused => {
                self.conn = None;
                self.try_send(method, target, headers, body)
                    .await
                    .unwrap_or_else(|e2| panic!("{method} {target}: {e} then {e2}"))
            }
            Err(e) => panic!("{method} {target}: {e}"),
        }
    }

    /// Like [`EasClient::send`], returning the transport error.
    pub async fn try_send(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(String, String)],
        body: &[u8],
    ) -> io::Result<HttpResponse> {
        let mut conn = match self.conn.take() {
            Some(c) => c,
            None => BufReader::new(TcpStream::connect(self.addr).await?),
        };
        let mut req = format!("{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
        for (n, v) in headers {
            req.push_str(&format!("{n}: {v}\r\n"));
        }
        req.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
        let mut bytes = req.into_bytes();
        bytes.extend_from_slice(body);
        conn.get_mut().write_all(&bytes).await?;
        let res = tokio::time::timeout(RESPONSE_TIMEOUT, read_response(&mut conn))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no answer in time"))??;
        let close = res
            .header("Connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        if !close {
            self.conn = Some(conn);
        }
        Ok(res)
    }
}

/// Sends `bytes` (a whole request, head and body, as they are) on a new
/// connection and reads one answer, for requests [`EasClient`] would not
/// write (bad heads, chunked or cut bodies); an error when the server
/// closes without answering or gives no answer within `timeout`.
pub async fn raw_exchange(
    addr: SocketAddr,
    bytes: &[u8],
    timeout: Duration,
) -> io::Result<HttpResponse> {
    let mut conn = BufReader::new(TcpStream::connect(addr).await?);
    // The server may answer (and close) before reading all of a refused
    // request: a failed write still leaves its answer to read.
    let _ = conn.get_mut().write_all(bytes).await;
    tokio::time::timeout(timeout, read_response(&mut conn))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no answer in time"))?
}

/// `Authorization: Basic …` for a login and password.
pub fn basic(login: &str, password: &str) -> String {
    BasicCredentials {
        login: Login::parse(login),
        password: Password::new(password),
    }
    .to_header_value()
}

fn percent(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

async fn read_response(conn: &mut BufReader<TcpStream>) -> io::Result<HttpResponse> {
    let mut status_line = String::new();
    if conn.read_line(&mut status_line).await? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed before the answer",
        ));
    }
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| bad(format!("bad status line {status_line:?}")))?;
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        conn.read_line(&mut line).await?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((n, v)) = line.split_once(':') {
            headers.push((n.trim().to_owned(), v.trim().to_owned()));
        }
    }
    let get = |name: &str| {
        headers
            .iter()
            .find(|(n, _): &&(String, String)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let mut body = Vec::new();
    if get("Transfer-Encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
        loop {
            let mut size = String::new();
            conn.read_line(&mut size).await?;
            let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| bad(format!("bad chunk size {size:?}")))?;
            if n == 0 {
                let mut end = String::new();
                conn.read_line(&mut end).await?;
                break;
            }
            let start = body.len();
            body.resize(start + n, 0);
            conn.read_exact(&mut body[start..]).await?;
            let mut crlf = [0u8; 2];
            conn.read_exact(&mut crlf).await?;
        }
    } else if let Some(len) = get("Content-Length") {
        let n: usize = len.parse().map_err(|_| bad("bad Content-Length"))?;
        body.resize(n, 0);
        conn.read_exact(&mut body).await?;
    } else if status != 204 && status != 304 && !(100..200).contains(&status) {
        conn.read_to_end(&mut body).await?;
    }
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}
