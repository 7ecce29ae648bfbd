//! The admin HTTP address (`[server] admin_listen`, loopback by default and
//! unauthenticated: keep it off public interfaces).
//!
//! - `GET /metrics`: Prometheus text exposition ([`super::metrics`]).
//! - `GET /loggers`: every named logger and its level, one `NAME level` per line.
//! - `PUT /loggers/NAME` with body `trace|debug|info|warn`: changes that
//!   logger's level at once (WARN and above always pass).

use std::future::Future;

use bytes::Bytes;
use tokio::net::TcpListener;
use warp::http::StatusCode;
use warp::Filter;

use super::logger::{Logger, LoggerLevel};

fn text(status: StatusCode, body: String) -> warp::reply::Response {
    let mut res = warp::reply::Response::new(body.into());
    *res.status_mut() = status;
    res.headers_mut().insert(
        warp::http::header::CONTENT_TYPE,
        warp::http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    res
}

/// Changes a logger's level from the admin address; the answer's status and text.
pub fn put_logger(name: &str, body: &[u8]) -> (StatusCode, String) {
    let Some(logger) = Logger::from_name(name) else {
        return (
            StatusCode::NOT_FOUND,
            format!("unknown logger {name:?}; known: {}\n", known()),
        );
    };
    let asked = String::from_utf8_lossy(body);
    let Some(level) = LoggerLevel::parse(&asked) else {
        return (
            StatusCode::BAD_REQUEST,
            format!(
                "unknown level {:?}: expected trace, debug, info or warn\n",
                asked.trim()
            ),
        );
    };
    super::set_level(logger, level);
    (
        StatusCode::OK,
        format!("{} {}\n", logger.name(), level.name()),
    )
}

fn known() -> String {
    Logger::ALL.map(Logger::name).join(", ")
}

/// The admin routes.
pub fn routes(
) -> impl Filter<Extract = (warp::reply::Response,), Error = std::convert::Infallible> + Clone {
    let metrics = warp::get()
        .and(warp::path("metrics"))
        .and(warp::path::end())
        .map(|| text(StatusCode::OK, super::metrics::render()));
    let list = warp::get()
        .and(warp::path("loggers"))
        .and(warp::path::end())
        .map(|| text(StatusCode::OK, super::levels().describe()));
    let put = warp::put()
        .and(warp::path("loggers"))
        .and(warp::path::param::<String>())
        .and(warp::path::end())
        .and(warp::body::content_length_limit(64))
        .and(warp::body::bytes())
        .map(|name: String, body: Bytes| {
            let (status, msg) = put_logger(&name, &body);
            text(status, msg)
        });
    metrics
        .or(list)
        .unify()
        .or(put)
        .unify()
        .recover(|_rejection: warp::Rejection| async {
            Ok::<_, std::convert::Infallible>(text(
                StatusCode::NOT_FOUND,
                "admin address: GET /metrics, GET /loggers, PUT /loggers/NAME\n".to_owned(),
            ))
        })
        .unify()
}

/// Serves the admin routes on `listener` until `shutdown` resolves.
pub async fn serve(listener: TcpListener, shutdown: impl Future<Output = ()> + Send + 'static) {
    warp::serve(routes())
        .incoming(listener)
        .graceful(shutdown)
        .run()
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_logger_validates_name_and_level() {
        assert_eq!(put_logger("NOPE", b"debug").0, StatusCode::NOT_FOUND);
        assert_eq!(put_logger("RESOURCES", b"loud").0, StatusCode::BAD_REQUEST);
        let (status, msg) = put_logger("resources", b"debug\n");
        assert_eq!(status, StatusCode::OK);
        assert_eq!(msg, "RESOURCES debug\n");
        assert_eq!(
            super::super::levels().get(Logger::Resources),
            LoggerLevel::Debug
        );
        put_logger("RESOURCES", b"info");
    }
}
