//! Unary requests in one piece.
//!
//! tonic hands a request's message to the HTTP/2 layer as a stream that is known to
//! have ended only once it is polled again, so the request leaves as HEADERS, a DATA
//! frame, then an empty DATA frame that ends the stream: three socket writes, and the
//! server (which waits for the end of a unary request before handling it) may be woken
//! for each. [`WholeBody`] takes a request body that is complete at once (a unary
//! call's always is) and passes it on as one body of known length, which goes out as
//! HEADERS and one DATA frame that ends the stream. A body that is not complete at
//! once (a streaming call) passes on unchanged, whatever was already taken from it in
//! front.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use bytes::{Bytes, BytesMut};
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tonic::{
    Status,
    body::Body,
    codegen::{Service, http},
};

/// A service that passes each request on with its body gathered (see the module doc).
#[derive(Debug, Clone)]
pub struct WholeBody<S> {
    inner: S,
}

impl<S> WholeBody<S> {
    pub fn new(inner: S) -> Self {
        Self { inner }
    }
}

impl<S> Service<http::Request<Body>> for WholeBody<S>
where
    S: Service<http::Request<Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> S::Future {
        let (parts, body) = request.into_parts();
        self.inner
            .call(http::Request::from_parts(parts, gather(body)))
    }
}

/// `body` as one piece if all of it is ready now, else as it was.
fn gather(mut body: Body) -> Body {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let mut data = BytesMut::new();
    loop {
        match Pin::new(&mut body).poll_frame(&mut cx) {
            Poll::Ready(None) => return Body::new(http_body_util::Full::new(data.freeze())),
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(chunk) => data.extend_from_slice(&chunk),
                Err(frame) => return Body::new(Rest::new(data, Some(Ok(frame)), body)),
            },
            Poll::Ready(Some(Err(e))) => return Body::new(Rest::new(data, Some(Err(e)), body)),
            Poll::Pending => return Body::new(Rest::new(data, None, body)),
        }
    }
}

/// What was taken from a body that was not complete at once, then the rest of it.
struct Rest {
    taken: Option<Bytes>,
    next: Option<Result<Frame<Bytes>, Status>>,
    rest: Body,
}

impl Rest {
    fn new(taken: BytesMut, next: Option<Result<Frame<Bytes>, Status>>, rest: Body) -> Self {
        Self {
            taken: (!taken.is_empty()).then(|| taken.freeze()),
            next,
            rest,
        }
    }
}

impl HttpBody for Rest {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.get_mut();
        if let Some(taken) = this.taken.take() {
            return Poll::Ready(Some(Ok(Frame::data(taken))));
        }
        if let Some(next) = this.next.take() {
            return Poll::Ready(Some(next));
        }
        Pin::new(&mut this.rest).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.taken.is_none() && self.next.is_none() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let mut hint = self.rest.size_hint();
        let taken = self.taken.as_ref().map_or(0, |t| t.len() as u64);
        hint.set_lower(hint.lower() + taken);
        if let Some(upper) = hint.upper() {
            hint.set_upper(upper + taken);
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;
    use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};

    use super::*;

    /// A body fed from a channel: frames sent before it is read are ready at once; it
    /// ends when the sender is dropped.
    struct Source(tokio::sync::mpsc::UnboundedReceiver<Result<Frame<Bytes>, Status>>);

    impl HttpBody for Source {
        type Data = Bytes;
        type Error = Status;
        fn poll_frame(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
            self.get_mut().0.poll_recv(cx)
        }
    }

    fn source() -> (UnboundedSender<Result<Frame<Bytes>, Status>>, Body) {
        let (tx, rx) = unbounded_channel();
        (tx, Body::new(Source(rx)))
    }

    fn data(b: &'static [u8]) -> Result<Frame<Bytes>, Status> {
        Ok(Frame::data(Bytes::from_static(b)))
    }

    fn trailers() -> Result<Frame<Bytes>, Status> {
        let mut t = http::HeaderMap::new();
        t.insert("x-end", http::HeaderValue::from_static("1"));
        Ok(Frame::trailers(t))
    }

    /// The body's bytes, and whether trailers came.
    async fn read(body: Body) -> (Bytes, bool) {
        let collected = body.collect().await.expect("body reads");
        let trailers = collected.trailers().is_some();
        (collected.to_bytes(), trailers)
    }

    #[tokio::test]
    async fn a_body_complete_at_once_becomes_one_piece_of_known_length() {
        let (tx, body) = source();
        tx.send(data(b"ab")).unwrap();
        tx.send(data(b"cd")).unwrap();
        drop(tx);
        let body = gather(body);
        assert_eq!(body.size_hint().exact(), Some(4), "known length");
        assert_eq!(read(body).await, (Bytes::from_static(b"abcd"), false));
    }

    #[tokio::test]
    async fn a_body_not_complete_at_once_keeps_everything_in_order() {
        let (tx, body) = source();
        tx.send(data(b"ab")).unwrap();
        let body = gather(body);
        assert_eq!(body.size_hint().exact(), None, "length unknown");
        tx.send(data(b"cd")).unwrap();
        tx.send(trailers()).unwrap();
        drop(tx);
        assert_eq!(read(body).await, (Bytes::from_static(b"abcd"), true));
    }

    #[tokio::test]
    async fn trailers_ready_at_once_are_kept() {
        let (tx, body) = source();
        tx.send(data(b"ab")).unwrap();
        tx.send(trailers()).unwrap();
        drop(tx);
        assert_eq!(read(gather(body)).await, (Bytes::from_static(b"ab"), true));
    }
}
