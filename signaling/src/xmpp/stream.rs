//! One c2s connection up to a bound resource: TCP (NODELAY, QUICKACK re-armed after every read),
//! stream header, STARTTLS, SASL (SCRAM-SHA-256, SCRAM-SHA-1, PLAIN), resource bind.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use minidom::Element;
use rustls::ClientConfig;
use sasl::client::mechanisms::{Plain, Scram};
use sasl::client::Mechanism;
use sasl::common::scram::{Sha1, Sha256};
use sasl::common::ChannelBinding;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tracing::debug;

use super::config::{SecurityMode, XmppConfig};
use super::iq::set_attr;
use super::reader::{XmlEvent, XmlReader};
use super::{ns, tls, XmppError};

/// Any byte stream the session runs on (plain TCP or TLS over it).
pub(crate) trait IoStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> IoStream for T {}
pub(crate) type BoxedStream = Box<dyn IoStream>;

/// A negotiated, bound c2s stream.
pub(crate) struct Negotiated {
    pub stream: BoxedStream,
    pub reader: XmlReader,
    /// Our full JID as bound.
    pub jid: String,
}

/// Connects and negotiates. The caller bounds the whole thing with `connect_timeout`.
pub(crate) async fn connect(cfg: &XmppConfig, tls_config: &Arc<ClientConfig>) -> Result<Negotiated, XmppError> {
    let domain = cfg.effective_domain().to_owned();
    let tcp = TcpStream::connect((cfg.host.as_str(), cfg.port)).await?;
    tcp.set_nodelay(true)?;
    let tcp = QuickAckTcp::new(tcp);
    let mut conn = Conn::new(tcp, cfg);
    let features = conn.open_stream(&domain).await?;
    let offers_tls = features.get_child("starttls", ns::TLS).is_some();
    let use_tls = match cfg.security_mode {
        SecurityMode::Required if !offers_tls => return Err(XmppError::StartTlsNotOffered),
        SecurityMode::Required | SecurityMode::IfPossible => offers_tls,
        SecurityMode::Disabled => false,
    };
    let (mut conn, features) = if use_tls {
        conn.send(&Element::bare("starttls", ns::TLS)).await?;
        let el = conn.next_stanza().await?;
        if !el.is("proceed", ns::TLS) {
            return Err(XmppError::Protocol(format!("STARTTLS answered with <{}>", el.name())));
        }
        if conn.reader.has_buffered_input() {
            return Err(XmppError::Protocol("data after <proceed/>".into()));
        }
        let connector = tokio_rustls::TlsConnector::from(tls_config.clone());
        let tls_stream = connector.connect(tls::server_name(&domain)?, conn.io).await?;
        debug!("TLS established");
        let mut conn = Conn::new(Box::new(tls_stream) as BoxedStream, cfg);
        let features = conn.open_stream(&domain).await?;
        (conn, features)
    } else {
        (conn.boxed(), features)
    };
    authenticate(&mut conn, &features, cfg).await?;
    let features = conn.open_stream(&domain).await?;
    let jid = bind(&mut conn, &features, cfg).await?;
    Ok(Negotiated {
        stream: conn.io,
        reader: conn.reader,
        jid,
    })
}

async fn authenticate<S: IoStream>(conn: &mut Conn<S>, features: &Element, cfg: &XmppConfig) -> Result<(), XmppError> {
    let offered: Vec<String> = features
        .get_child("mechanisms", ns::SASL)
        .map(|m| {
            m.children()
                .filter(|c| c.is("mechanism", ns::SASL))
                .map(|c| c.text().trim().to_owned())
                .collect()
        })
        .unwrap_or_default();
    let user = cfg.username.clone();
    let pass = cfg.password.expose().to_owned();
    // We never do channel binding ("n,,"), so the -PLUS variants are not candidates.
    let mut mech: Box<dyn Mechanism + Send> = if offered.iter().any(|m| m == "SCRAM-SHA-256") {
        Box::new(Scram::<Sha256>::new(user, pass, ChannelBinding::None).map_err(|e| XmppError::Sasl(format!("{e:?}")))?)
    } else if offered.iter().any(|m| m == "SCRAM-SHA-1") {
        Box::new(Scram::<Sha1>::new(user, pass, ChannelBinding::None).map_err(|e| XmppError::Sasl(format!("{e:?}")))?)
    } else if offered.iter().any(|m| m == "PLAIN") {
        Box::new(Plain::new(user, pass))
    } else {
        return Err(XmppError::NoSaslMechanism(offered));
    };
    debug!(mechanism = mech.name(), "SASL");
    let mut auth = Element::bare("auth", ns::SASL);
    set_attr(&mut auth, "mechanism", mech.name());
    auth.append_text(b64_or_empty(&mech.initial()));
    conn.send(&auth).await?;
    loop {
        let el = conn.next_stanza().await?;
        if el.ns() != ns::SASL {
            return Err(XmppError::Protocol(format!("unexpected <{}> in SASL", el.name())));
        }
        match el.name() {
            "challenge" => {
                let challenge = b64_decode(&el.text())?;
                let resp = mech.response(&challenge).map_err(|e| XmppError::Sasl(e.to_string()))?;
                let mut r = Element::bare("response", ns::SASL);
                r.append_text(b64_or_empty(&resp));
                conn.send(&r).await?;
            }
            "success" => {
                let data = b64_decode(&el.text())?;
                mech.success(&data).map_err(|e| XmppError::Sasl(e.to_string()))?;
                return Ok(());
            }
            "failure" => {
                let condition = el
                    .children()
                    .find(|c| c.name() != "text")
                    .map(|c| c.name().to_owned())
                    .unwrap_or_else(|| "unknown".into());
                return Err(XmppError::AuthFailed(condition));
            }
            other => {
                return Err(XmppError::Protocol(format!("unexpected SASL <{other}>")));
            }
        }
    }
}

async fn bind<S: IoStream>(conn: &mut Conn<S>, features: &Element, cfg: &XmppConfig) -> Result<String, XmppError> {
    if features.get_child("bind", ns::BIND).is_none() {
        return Err(XmppError::Protocol("server offers no resource binding".into()));
    }
    let mut iq = Element::bare("iq", ns::CLIENT);
    set_attr(&mut iq, "type", "set");
    set_attr(&mut iq, "id", "bind-1");
    let mut b = Element::bare("bind", ns::BIND);
    if let Some(res) = &cfg.resource {
        let mut r = Element::bare("resource", ns::BIND);
        r.append_text(res.clone());
        b.append_child(r);
    }
    iq.append_child(b);
    conn.send(&iq).await?;
    let reply = conn.next_iq_reply("bind-1").await?;
    let jid = reply
        .get_child("bind", ns::BIND)
        .and_then(|b| b.get_child("jid", ns::BIND))
        .map(|j| j.text().trim().to_owned())
        .filter(|j| !j.is_empty())
        .ok_or_else(|| XmppError::Bind(error_of(&reply)))?;
    // RFC 3921 session establishment, only when the server says it is not optional.
    if let Some(s) = features.get_child("session", ns::SESSION) {
        if s.get_child("optional", ns::SESSION).is_none() {
            let mut iq = Element::bare("iq", ns::CLIENT);
            set_attr(&mut iq, "type", "set");
            set_attr(&mut iq, "id", "session-1");
            iq.append_child(Element::bare("session", ns::SESSION));
            conn.send(&iq).await?;
            let reply = conn.next_iq_reply("session-1").await?;
            if reply.attr("type") != Some("result") {
                return Err(XmppError::Bind(format!("session: {}", error_of(&reply))));
            }
        }
    }
    Ok(jid)
}

fn error_of(reply: &Element) -> String {
    super::iq::StanzaError::from_stanza(reply)
        .map(|e| e.to_string())
        .unwrap_or_else(|| "no JID in bind result".into())
}

fn b64_or_empty(data: &[u8]) -> String {
    // RFC 6120 §6.4.2: an empty initial response is sent as "=".
    if data.is_empty() {
        "=".to_owned()
    } else {
        B64.encode(data)
    }
}

fn b64_decode(text: &str) -> Result<Vec<u8>, XmppError> {
    let t = text.trim();
    if t.is_empty() || t == "=" {
        return Ok(Vec::new());
    }
    B64.decode(t)
        .map_err(|e| XmppError::Protocol(format!("bad base64 in SASL: {e}")))
}

/// A stream plus its XML reader, during negotiation (no concurrent traffic yet).
struct Conn<S> {
    io: S,
    reader: XmlReader,
    max_stanza_size: usize,
    max_depth: usize,
    buf: Box<[u8]>,
}

impl<S: IoStream> Conn<S> {
    fn new(io: S, cfg: &XmppConfig) -> Self {
        Self {
            io,
            reader: XmlReader::new(cfg.max_stanza_size, cfg.max_stanza_depth),
            max_stanza_size: cfg.max_stanza_size,
            max_depth: cfg.max_stanza_depth,
            buf: vec![0; READ_BUF].into_boxed_slice(),
        }
    }

    fn boxed(self) -> Conn<BoxedStream>
    where
        S: 'static,
    {
        Conn {
            io: Box::new(self.io),
            reader: self.reader,
            max_stanza_size: self.max_stanza_size,
            max_depth: self.max_depth,
            buf: self.buf,
        }
    }

    /// Sends a stream header (with a fresh reader, as every restart is a new document) and
    /// returns the server's `<stream:features>`.
    async fn open_stream(&mut self, domain: &str) -> Result<Element, XmppError> {
        self.reader = XmlReader::new(self.max_stanza_size, self.max_depth);
        let header = stream_header(domain);
        self.io.write_all(header.as_bytes()).await?;
        self.io.flush().await?;
        loop {
            match read_event(&mut self.io, &mut self.reader, &mut self.buf).await? {
                XmlEvent::StreamOpen { id } => debug!(?id, "stream opened"),
                XmlEvent::Stanza(el) => {
                    check_stream_error(&el)?;
                    if el.is("features", ns::STREAM) {
                        return Ok(el);
                    }
                    return Err(XmppError::Protocol(format!(
                        "expected <stream:features>, got <{}>",
                        el.name()
                    )));
                }
                XmlEvent::StreamClose => return Err(XmppError::StreamClosed),
                XmlEvent::Oversized(el) => {
                    return Err(XmppError::Protocol(format!("oversized <{}> before login", el.name())))
                }
            }
        }
    }

    async fn next_stanza(&mut self) -> Result<Element, XmppError> {
        match read_event(&mut self.io, &mut self.reader, &mut self.buf).await? {
            XmlEvent::Stanza(el) => {
                check_stream_error(&el)?;
                Ok(el)
            }
            XmlEvent::StreamClose => Err(XmppError::StreamClosed),
            XmlEvent::StreamOpen { .. } => Err(XmppError::Protocol("second stream header".into())),
            XmlEvent::Oversized(el) => Err(XmppError::Protocol(format!("oversized <{}> before login", el.name()))),
        }
    }

    /// The reply to our IQ `id`; anything else arriving meanwhile is dropped (nothing but our
    /// own requests can arrive before the resource is bound).
    async fn next_iq_reply(&mut self, id: &str) -> Result<Element, XmppError> {
        loop {
            let el = self.next_stanza().await?;
            if el.is("iq", ns::CLIENT) && el.attr("id") == Some(id) {
                return Ok(el);
            }
            debug!(name = el.name(), "ignored during negotiation");
        }
    }

    async fn send(&mut self, el: &Element) -> Result<(), XmppError> {
        let bytes = serialize(el)?;
        self.io.write_all(&bytes).await?;
        self.io.flush().await?;
        Ok(())
    }
}

pub(crate) const READ_BUF: usize = 16 * 1024;

/// Reads until the reader yields an event. Cancel-safe: bytes read are fed to the reader
/// before the next await, and the parse state lives in `reader`.
pub(crate) async fn read_event<R: AsyncRead + Unpin + ?Sized>(
    io: &mut R,
    reader: &mut XmlReader,
    buf: &mut [u8],
) -> Result<XmlEvent, XmppError> {
    loop {
        if let Some(ev) = reader.next_event()? {
            return Ok(ev);
        }
        let n = io.read(buf).await?;
        if n == 0 {
            return Err(XmppError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "server closed the connection",
            )));
        }
        tracing::trace!(bytes = n, data = %String::from_utf8_lossy(&buf[..n.min(512)]), "read");
        reader.feed(&buf[..n]);
    }
}

pub(crate) fn check_stream_error(el: &Element) -> Result<(), XmppError> {
    if el.is("error", ns::STREAM) {
        let condition = el
            .children()
            .find(|c| c.ns() == ns::STREAMS_ERR && c.name() != "text")
            .map(|c| c.name().to_owned())
            .unwrap_or_else(|| "undefined-condition".into());
        let text = el
            .get_child("text", ns::STREAMS_ERR)
            .map(|t| t.text())
            .unwrap_or_default();
        return Err(XmppError::StreamError { condition, text });
    }
    Ok(())
}

pub(crate) fn serialize(el: &Element) -> Result<Vec<u8>, XmppError> {
    // minidom's writer asserts on inconsistent namespace-prefix declarations (possible only
    // for elements built by hand with reserved prefixes). A panic here would end the
    // connection task for good, so it becomes an error for this one stanza instead.
    let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut out = Vec::with_capacity(256);
        el.write_to(&mut out).map(|()| out)
    }));
    match res {
        Ok(Ok(out)) => Ok(out),
        Ok(Err(e)) => Err(XmppError::Protocol(format!("cannot serialise <{}>: {e}", el.name()))),
        Err(_) => Err(XmppError::Protocol(format!("serialising <{}> panicked", el.name()))),
    }
}

fn stream_header(domain: &str) -> String {
    format!(
        "<?xml version='1.0'?><stream:stream to='{}' version='1.0' xml:lang='en' \
         xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>",
        escape_attr(domain)
    )
}

fn escape_attr(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

/// TCP with `TCP_QUICKACK` re-armed after every read that returned data.
///
/// Linux clears QUICKACK again after a few segments, so it must be re-armed. Without it, the
/// kernel delays the ACK of a small segment from the server by up to 40 ms; a server that runs
/// with Nagle on (Prosody's default) then holds the next stanza to us until that ACK arrives,
/// and every sequential IQ costs ~40 ms (measured: notes/xmpp.md).
pub(crate) struct QuickAckTcp {
    inner: TcpStream,
}

impl QuickAckTcp {
    pub(crate) fn new(inner: TcpStream) -> Self {
        rearm_quickack(&inner);
        Self { inner }
    }
}

#[cfg(target_os = "linux")]
fn rearm_quickack(tcp: &TcpStream) {
    // Best effort: a failure only costs latency.
    let _ = socket2::SockRef::from(tcp).set_tcp_quickack(true);
}

#[cfg(not(target_os = "linux"))]
fn rearm_quickack(_tcp: &TcpStream) {}

impl AsyncRead for QuickAckTcp {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(res, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            rearm_quickack(&self.inner);
        }
        res
    }
}

impl AsyncWrite for QuickAckTcp {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Writes one serialised stanza and flushes, bounded by `timeout`.
pub(crate) async fn write_bytes<W: AsyncWrite + Unpin + ?Sized>(
    wr: &mut W,
    bytes: &[u8],
    timeout: Duration,
) -> Result<(), XmppError> {
    tokio::time::timeout(timeout, async {
        wr.write_all(bytes).await?;
        wr.flush().await
    })
    .await
    .map_err(|_| XmppError::Timeout("write"))??;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_escapes_domain() {
        let h = stream_header("a'b<c");
        assert!(h.contains("to='a&apos;b&lt;c'"));
    }

    #[test]
    fn sasl_base64_edge_cases() {
        assert_eq!(b64_or_empty(b""), "=");
        assert_eq!(b64_decode("=").unwrap(), Vec::<u8>::new());
        assert_eq!(b64_decode(" aGk= ").unwrap(), b"hi");
        assert!(b64_decode("!!").is_err());
    }

    /// A stanza built with minidom serialises with its namespace declared, so it is valid
    /// on its own inside our stream.
    #[test]
    fn serialized_stanza_declares_namespace() {
        let mut iq = Element::bare("iq", ns::CLIENT);
        set_attr(&mut iq, "type", "get");
        iq.append_child(Element::bare("ping", ns::PING));
        let s = String::from_utf8(serialize(&iq).unwrap()).unwrap();
        assert!(s.starts_with("<iq"), "{s}");
        assert!(s.contains("xmlns='jabber:client'"), "{s}");
        assert!(s.contains("<ping xmlns='urn:xmpp:ping'"), "{s}");
    }
}

#[cfg(test)]
mod serialize_tests {
    use super::*;

    /// Payloads parsed from text (they carry declared prefixes) nest inside our stanzas.
    #[test]
    fn parsed_payload_inside_built_stanza() {
        for payload in [
            "<conference-modified xmlns='jitsi:colibri2'/>",
            "<conference-modified xmlns='jitsi:colibri2'><endpoint id='a'><transport xmlns='jitsi:colibri2'/></endpoint></conference-modified>",
            "<foo xmlns='a' xmlns:x='b'><x:bar x:attr='1'/></foo>",
            "<foo xmlns='jabber:client'/>",
        ] {
            let p: Element = payload.parse().unwrap();
            let mut iq = Element::bare("iq", ns::CLIENT);
            set_attr(&mut iq, "type", "result");
            iq.append_child(p.clone());
            let s = String::from_utf8(serialize(&iq).unwrap()).unwrap();
            let back: Element = s.parse().unwrap();
            assert_eq!(back.children().next().unwrap(), &p, "{s}");
        }
    }
}
