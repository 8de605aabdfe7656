//! One request/response exchange on a connection: the request written, the head read (interim
//! responses skipped), the body framed, a bounded prefix kept for `expect.body_contains` and
//! the rest drained so the connection stays reusable.

use std::io;
use std::time::Instant;

use monoio::buf::IoBuf;

use crate::model::Method;

use super::clock::{phase_limit, Clock};
use super::conn::{Conn, Dial};
use super::error::io_error;
use super::http1::{self, BodyDecoder, Framing, ResponseHead};
use super::plan::Plan;
use super::pool::PoolKey;
use super::{ProbeError, ProbeReport, Prober};

/// Body bytes read and discarded past the kept prefix to keep a connection reusable; beyond
/// this (huge downloads, endless streams) we stop reading and close the connection instead.
const MAX_DRAIN_BYTES: u64 = 1024 * 1024;

/// What one request/response exchange saw, kept even when it fails part-way.
#[derive(Default)]
pub(super) struct Progress {
    /// Bytes read (head + body).
    pub(super) bytes: u64,
    /// When the first response byte arrived.
    pub(super) first_byte: Option<Instant>,
    /// Status of the final response head, once read.
    pub(super) status: Option<u16>,
}

/// A complete response.
pub(super) struct Exchange {
    /// The connection may carry another request.
    pub(super) reusable: bool,
    /// `expect.body_contains` result (true when there is no needle).
    pub(super) body_ok: bool,
    /// The `Location` of a redirect status (None for every other response).
    pub(super) redirect: Option<Box<str>>,
}

/// Where one request goes: the pool entry it may reuse, and where to dial when none is idle.
pub(super) struct Route<'a> {
    /// The pool entry.
    pub(super) key: PoolKey,
    /// Where a new connection goes.
    pub(super) to: Dial<'a>,
    /// Now, for the pool's idle expiry.
    pub(super) now: Instant,
}

impl Prober {
    /// Sends the buffer `request` makes (once per attempt) on an idle pooled connection for `route` (or a new one) and reads the
    /// response; the connection goes back to the pool when it may carry another request.
    ///
    /// A pooled connection the server already closed fails before any response byte; that says
    /// nothing about the target, so the request is tried once more on a fresh connection.
    /// `report.bytes` adds what this exchange read; `progress` holds what is still in flight
    /// (none once this returns Ok), so the whole-probe timer never counts a byte twice.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn send<B: IoBuf>(
        &self,
        plan: &Plan,
        route: Route<'_>,
        request: impl Fn() -> B,
        method: Method,
        clock: Clock<'_>,
        report: &mut ProbeReport,
        progress: &mut Progress,
    ) -> Result<Exchange, ProbeError> {
        let spec = &*plan.spec;
        let pooled = self.pool.borrow_mut().take(&route.key, route.now);
        let (mut conn, mut reused) = match pooled {
            Some(conn) => (conn, true),
            // Dialling (and the TLS handshake future inside it) is boxed: it is the cold path,
            // and inlined it would make every probe task several KB larger to spawn and move.
            None => (
                Box::pin(self.open(spec, route.to, clock, report)).await?,
                false,
            ),
        };
        loop {
            if reused {
                self.reused.set(self.reused.get() + 1);
            }
            *progress = Progress::default();
            report.reused = reused;
            let res = self
                .exchange(&mut conn, plan, request(), method, clock, progress)
                .await;
            report.bytes += progress.bytes;
            report.status_code = progress.status;
            if let Some(at) = progress.first_byte {
                report.timings.first_byte = at.saturating_duration_since(clock.start);
            }
            match res {
                Ok(ex) => {
                    progress.bytes = 0;
                    if ex.reusable {
                        self.park(&route.key, conn);
                    }
                    return Ok(ex);
                }
                Err(ProbeError::Connection(_)) if reused && progress.bytes == 0 => {
                    drop(conn);
                    conn = Box::pin(self.open(spec, route.to, clock, report)).await?;
                    reused = false;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Sends the request and reads the whole response (body bounded, rest discarded).
    ///
    /// `request` is the plan's own (`RequestBuf`) or a redirect hop's, sent with `method`
    /// (which decides the body framing); generic, so the plan's request is sent where it lies.
    pub(super) async fn exchange<B: IoBuf>(
        &self,
        conn: &mut Conn,
        plan: &Plan,
        request: B,
        method: Method,
        clock: Clock<'_>,
        progress: &mut Progress,
    ) -> Result<Exchange, ProbeError> {
        let max_head = self.limits.max_header_bytes;
        // Not `within`: its argument plus the timeout wrapping it would store the read future
        // twice in every probe task. Each branch builds its future in place.
        const HEAD: &str = "response head";
        clock.phase.set(HEAD);
        let head = match phase_limit(Some(plan.head_timeout.get()), clock) {
            Some(l) => monoio::time::timeout(l, read_head(conn, request, max_head, progress))
                .await
                .map_err(|_| clock.timeout(HEAD))?,
            None => read_head(conn, request, max_head, progress).await,
        }?;
        progress.status = Some(head.status);
        let framing = Framing::of(&head, method);
        // No phase limit of its own: the whole-probe timer covers the body.
        clock.phase.set("body");
        let keep = plan.keep.map_or(0, |k| k.get() as usize);
        let complete = read_body(conn, framing, max_head, keep, progress).await?;
        // The spec is read only when there is a needle to look for.
        let body_ok = plan.keep.is_none()
            || plan
                .spec
                .expect
                .body_contains
                .as_deref()
                .is_none_or(|n| http1::contains(&conn.kept, n.as_bytes()));
        // After 101 the connection no longer speaks HTTP/1.1.
        let reusable = complete
            && !head.close
            && head.status != 101
            && framing != Framing::UntilClose
            && conn.buffered().is_empty();
        Ok(Exchange {
            reusable,
            body_ok,
            redirect: head.location,
        })
    }
}

/// Writes the request and reads up to the final (non-1xx) response head.
async fn read_head<B: IoBuf>(
    conn: &mut Conn,
    request: B,
    max_head: usize,
    progress: &mut Progress,
) -> Result<ResponseHead, ProbeError> {
    conn.write_request(request)
        .await
        .map_err(|e| io_error("sending request", &e))?;
    loop {
        match http1::parse_head(conn.buffered(), max_head) {
            Ok(Some((head, n))) => {
                conn.pos += n;
                // Interim responses (100 Continue, 103 Early Hints) precede the real one;
                // 101 would switch protocols, so it is final.
                if (100..200).contains(&head.status) && head.status != 101 {
                    continue;
                }
                return Ok(head);
            }
            Ok(None) => {}
            Err(e) => return Err(ProbeError::Protocol(e.0)),
        }
        let n = conn
            .fill()
            .await
            .map_err(|e| io_error("reading response head", &e))?;
        if n == 0 {
            return Err(ProbeError::Connection(if progress.bytes == 0 {
                "connection closed before any response".into()
            } else {
                "connection closed in the middle of the response head".into()
            }));
        }
        progress.first_byte.get_or_insert_with(Instant::now);
        progress.bytes += n as u64;
    }
}

/// Reads the body per `framing`, keeping its first `keep` bytes in `conn.kept`. Returns false
/// when it stopped early (body longer than `keep + MAX_DRAIN_BYTES`).
async fn read_body(
    conn: &mut Conn,
    framing: Framing,
    max_trailers: usize,
    keep: usize,
    progress: &mut Progress,
) -> Result<bool, ProbeError> {
    conn.kept.clear();
    let mut decoder = BodyDecoder::new(framing, max_trailers);
    let mut seen: u64 = 0;
    let limit = (keep as u64).saturating_add(MAX_DRAIN_BYTES);
    loop {
        let Conn {
            rbuf, pos, kept, ..
        } = &mut *conn;
        let input = rbuf.get(*pos..).unwrap_or_default();
        if !input.is_empty() && !decoder.is_done() {
            let used = decoder
                .feed(input, &mut |data| {
                    seen += data.len() as u64;
                    http1::keep_bounded(kept, data, keep);
                })
                .map_err(|e| ProbeError::Protocol(e.0))?;
            *pos += used;
        }
        if *pos >= rbuf.len() {
            rbuf.clear();
            *pos = 0;
        }
        if decoder.is_done() {
            return Ok(true);
        }
        if seen >= limit {
            return Ok(false);
        }
        let n = match conn.fill().await {
            Ok(n) => n,
            // TLS peers often close without close_notify; for read-until-close that is the end.
            Err(e)
                if e.kind() == io::ErrorKind::UnexpectedEof && framing == Framing::UntilClose =>
            {
                0
            }
            Err(e) => return Err(io_error("reading response body", &e)),
        };
        if n == 0 {
            return decoder
                .eof()
                .map(|()| true)
                .map_err(|e| ProbeError::Connection(e.0));
        }
        progress.bytes += n as u64;
    }
}
