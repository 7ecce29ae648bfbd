//! The admin HTTP address (`[server] admin_listen`, loopback by default and
//! unauthenticated: keep it off public interfaces).
//!
//! - `GET /metrics`: Prometheus text exposition ([`super::metrics`]).
//! - `GET /loggers`: every named logger and its level, one `NAME level` per line.
//! - `PUT /loggers/NAME` with body `trace|debug|info|warn`: changes that
//!   logger's level at once (WARN and above always pass).
//! - `GET /capture`: the devices under full capture (`crate::capture`), one
//!   `user/device source` per line; `PUT /capture/USER/DEVICE` switches a
//!   device's capture on, `DELETE /capture/USER/DEVICE` off (this process
//!   only: a restart returns to `[capture] devices`).
//! - `GET /devices` (every device) or `GET /devices/USER`: one device per
//!   line (`crate::admin::describe`); `POST /devices/USER/DEVICE/ACTION`
//!   (`wipe`, `allow`, `quarantine`) carries out the action through the
//!   running server (`crate::admin::DeviceAdmin`): 200 with the sentence,
//!   404 for an unknown device, 400 for a bad name, 503 when the store
//!   fails or no device traffic is served. `opush device` uses these when
//!   the server holds the store.
//! - `GET /sent-copies` (every user's) or `GET /sent-copies/USER`: the Sent
//!   copies waiting to be saved, one per line (`crate::admin::describe_sent`);
//!   `POST /sent-copies/USER/MESSAGE-ID/ACTION` (`drop`, `retry`; the
//!   Message-ID %-encoded): 200 with the sentence, 404 for no such copy,
//!   409 while a try of it is under way, 400 for a bad name, 503 as above.
//!   `opush sent` uses these when the server holds the store.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use tokio::net::TcpListener;
use warp::http::StatusCode;
use warp::Filter;

use super::logger::{Logger, LoggerLevel};
use crate::admin::{Action, AdminError, DeviceAdmin, SentAction};
use crate::capture::{percent_decode, Captures};

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

/// Switches full capture of a device on (`on`) or off from the admin
/// address; the answer's status and text.
pub fn switch_capture(
    capture: Option<&Captures>,
    user: &str,
    device: &str,
    on: bool,
) -> (StatusCode, String) {
    let Some(capture) = capture else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "no device traffic is served (admin-only mode): nothing to capture\n".to_owned(),
        );
    };
    let (Some(user), Some(device)) = (percent_decode(user), percent_decode(device)) else {
        return (
            StatusCode::BAD_REQUEST,
            "bad %-escape in the user or device\n".to_owned(),
        );
    };
    if on {
        match capture.enable(&user, &device) {
            Ok(fresh) => {
                tracing::info!(target: "CONFIGURATION", user = %user, device = %device, "full capture on");
                (
                    StatusCode::OK,
                    format!(
                        "{user}/{device} captured{} (bodies kept {} s)\n",
                        if fresh { "" } else { " already" },
                        capture.ttl().as_secs()
                    ),
                )
            }
            Err(e) => (StatusCode::BAD_REQUEST, format!("{e}\n")),
        }
    } else if capture.disable(&user, &device) {
        tracing::info!(target: "CONFIGURATION", user = %user, device = %device, "full capture off");
        (
            StatusCode::OK,
            format!("{user}/{device} no longer captured\n"),
        )
    } else {
        (
            StatusCode::NOT_FOUND,
            format!("{user}/{device} was not captured\n"),
        )
    }
}

/// What tells two administration routes apart in their answers.
struct Route {
    /// What the path's second segment names.
    second: &'static str,
    /// The actions the route knows, for the answer to an unknown one.
    expected: &'static str,
    /// What is missing in admin-only mode.
    no_store: &'static str,
}

/// An administration request as read: the store it acts on, its two path
/// segments (%-decoded) and its action.
type RouteRead<'a, A> = (&'a DeviceAdmin, Option<String>, Option<String>, Option<A>);

impl Route {
    /// Reads a request's `/USER/SECOND/ACTION` path; `Err` is the answer
    /// refusing it (400 for a bad %-escape, 404 for an unknown action, 503
    /// in admin-only mode).
    fn read<'a, A>(
        &self,
        devices: Option<&'a DeviceAdmin>,
        (user, second): (Option<&str>, Option<&str>),
        action: Option<&str>,
        parse: fn(&str) -> Option<A>,
    ) -> Result<RouteRead<'a, A>, (StatusCode, String)> {
        let decode = |s: Option<&str>| match s {
            None => Ok(None),
            Some(s) => percent_decode(s).map(Some).ok_or(()),
        };
        let (Ok(user), Ok(second)) = (decode(user), decode(second)) else {
            return Err((
                StatusCode::BAD_REQUEST,
                format!("bad %-escape in the user or {}\n", self.second),
            ));
        };
        let action = match action.map(|name| (name, parse(name))) {
            None => None,
            Some((_, Some(action))) => Some(action),
            Some((name, None)) => {
                return Err((
                    StatusCode::NOT_FOUND,
                    format!("unknown action {name:?}: expected {}\n", self.expected),
                ))
            }
        };
        let Some(devices) = devices else {
            return Err((
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "no device traffic is served (admin-only mode): {}\n",
                    self.no_store
                ),
            ));
        };
        Ok((devices, user, second, action))
    }
}

/// Answers a device administration request (`action` None: a listing).
pub async fn device_request(
    devices: Option<&DeviceAdmin>,
    user: Option<&str>,
    device: Option<&str>,
    action: Option<&str>,
) -> (StatusCode, String) {
    let route = Route {
        second: "device",
        expected: "wipe, allow or quarantine",
        no_store: "no device store",
    };
    let (devices, user, device, action) =
        match route.read(devices, (user, device), action, Action::parse) {
            Ok(read) => read,
            Err(answer) => return answer,
        };
    let res = match (action, user.as_deref(), device.as_deref()) {
        (None, user, None) => devices.list(user).await,
        (Some(action), Some(user), Some(device)) => {
            let res = devices.run(action, user, device).await;
            if res.is_ok() {
                tracing::info!(target: "CONFIGURATION", user = %user, device = %device, action = action.name(), "device administration");
            }
            res.map(|line| format!("{line}\n"))
        }
        _ => return (StatusCode::NOT_FOUND, "no such device route\n".to_owned()),
    };
    match res {
        Ok(text) => (StatusCode::OK, text),
        Err(e @ AdminError::UnknownDevice { .. }) => (StatusCode::NOT_FOUND, format!("{e}\n")),
        Err(e @ AdminError::InvalidDevice(_)) => (StatusCode::BAD_REQUEST, format!("{e}\n")),
        Err(e) => {
            tracing::warn!(target: "CONFIGURATION", error = %e, "device administration failed");
            (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n"))
        }
    }
}

/// Answers a Sent copy administration request (`action` None: a listing).
pub async fn sent_request(
    devices: Option<&DeviceAdmin>,
    user: Option<&str>,
    message_id: Option<&str>,
    action: Option<&str>,
) -> (StatusCode, String) {
    let route = Route {
        second: "Message-ID",
        expected: "drop or retry",
        no_store: "no store",
    };
    let (devices, user, message_id, action) =
        match route.read(devices, (user, message_id), action, SentAction::parse) {
            Ok(read) => read,
            Err(answer) => return answer,
        };
    let res = match (action, user.as_deref(), message_id.as_deref()) {
        (None, user, None) => devices.list_sent(user).await,
        (Some(action), Some(user), Some(id)) => devices
            .sent_action(action, user, id)
            .await
            .map(|line| format!("{line}\n")),
        _ => {
            return (
                StatusCode::NOT_FOUND,
                "no such sent-copies route\n".to_owned(),
            )
        }
    };
    match res {
        Ok(text) => (StatusCode::OK, text),
        Err(e @ AdminError::UnknownSentCopy { .. }) => (StatusCode::NOT_FOUND, format!("{e}\n")),
        Err(e @ AdminError::SentCopyBusy { .. }) => (StatusCode::CONFLICT, format!("{e}\n")),
        Err(e @ AdminError::InvalidDevice(_)) => (StatusCode::BAD_REQUEST, format!("{e}\n")),
        Err(e) => {
            tracing::warn!(target: "CONFIGURATION", error = %e, "sent copy administration failed");
            (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n"))
        }
    }
}

fn known() -> String {
    Logger::ALL.map(Logger::name).join(", ")
}

/// The admin routes (`capture`: the server's full-capture switches,
/// `devices`: its device administration; both `None` in admin-only mode).
pub fn routes(
    capture: Option<Arc<Captures>>,
    devices: Option<Arc<DeviceAdmin>>,
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
    let listed = capture.clone();
    let list_capture = warp::get()
        .and(warp::path("capture"))
        .and(warp::path::end())
        .map(move || match &listed {
            Some(c) => text(StatusCode::OK, c.describe()),
            None => text(StatusCode::OK, String::new()),
        });
    let switch = warp::put()
        .map(|| true)
        .or(warp::delete().map(|| false))
        .unify()
        .and(warp::path("capture"))
        .and(warp::path::param::<String>())
        .and(warp::path::param::<String>())
        .and(warp::path::end())
        .map(move |on: bool, user: String, device: String| {
            let (status, msg) = switch_capture(capture.as_deref(), &user, &device, on);
            text(status, msg)
        });
    let listed_devices = devices.clone();
    let list_devices = warp::get()
        .and(warp::path("devices"))
        .and(
            warp::path::param::<String>()
                .map(Some)
                .or(warp::any().map(|| None))
                .unify(),
        )
        .and(warp::path::end())
        .then(move |user: Option<String>| {
            let devices = listed_devices.clone();
            async move {
                let (status, msg) =
                    device_request(devices.as_deref(), user.as_deref(), None, None).await;
                text(status, msg)
            }
        });
    let listed_sent = devices.clone();
    let list_sent = warp::get()
        .and(warp::path("sent-copies"))
        .and(
            warp::path::param::<String>()
                .map(Some)
                .or(warp::any().map(|| None))
                .unify(),
        )
        .and(warp::path::end())
        .then(move |user: Option<String>| {
            let devices = listed_sent.clone();
            async move {
                let (status, msg) =
                    sent_request(devices.as_deref(), user.as_deref(), None, None).await;
                text(status, msg)
            }
        });
    let sent_devices = devices.clone();
    let sent_action = warp::post()
        .and(warp::path("sent-copies"))
        .and(warp::path::param::<String>())
        .and(warp::path::param::<String>())
        .and(warp::path::param::<String>())
        .and(warp::path::end())
        .then(move |user: String, id: String, action: String| {
            let devices = sent_devices.clone();
            async move {
                let (status, msg) =
                    sent_request(devices.as_deref(), Some(&user), Some(&id), Some(&action)).await;
                text(status, msg)
            }
        });
    let device_action = warp::post()
        .and(warp::path("devices"))
        .and(warp::path::param::<String>())
        .and(warp::path::param::<String>())
        .and(warp::path::param::<String>())
        .and(warp::path::end())
        .then(move |user: String, device: String, action: String| {
            let devices = devices.clone();
            async move {
                let (status, msg) = device_request(
                    devices.as_deref(),
                    Some(&user),
                    Some(&device),
                    Some(&action),
                )
                .await;
                text(status, msg)
            }
        });
    metrics
        .or(list)
        .unify()
        .or(list_devices)
        .unify()
        .or(device_action)
        .unify()
        .or(list_sent)
        .unify()
        .or(sent_action)
        .unify()
        .or(put)
        .unify()
        .or(list_capture)
        .unify()
        .or(switch)
        .unify()
        .recover(|_rejection: warp::Rejection| async {
            Ok::<_, std::convert::Infallible>(text(
                StatusCode::NOT_FOUND,
                "admin address: GET /metrics, GET /loggers, PUT /loggers/NAME, GET /capture, \
                 PUT|DELETE /capture/USER/DEVICE, GET /devices[/USER], \
                 POST /devices/USER/DEVICE/wipe|allow|quarantine, GET /sent-copies[/USER], \
                 POST /sent-copies/USER/MESSAGE-ID/drop|retry\n"
                    .to_owned(),
            ))
        })
        .unify()
}

/// Serves the admin routes on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    capture: Option<Arc<Captures>>,
    devices: Option<Arc<DeviceAdmin>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    warp::serve(routes(capture, devices))
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

    #[tokio::test]
    async fn device_routes_refuse_what_they_cannot_serve() {
        // Admin-only mode: no store, nothing to administer.
        let (status, msg) = device_request(None, Some("a@b.test"), Some("D"), Some("wipe")).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{msg}");
        assert_eq!(
            device_request(None, None, None, None).await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        // Bad input is a 4xx whatever the mode.
        let bad_escape = device_request(None, Some("a%4"), Some("D"), Some("wipe")).await;
        assert_eq!(bad_escape.0, StatusCode::BAD_REQUEST);
        let (status, msg) = device_request(None, Some("a"), Some("D"), Some("erase")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(msg.contains("erase"), "{msg}");
    }

    #[tokio::test]
    async fn sent_copy_routes_refuse_what_they_cannot_serve() {
        let (status, msg) =
            sent_request(None, Some("a@b.test"), Some("m%40x"), Some("retry")).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{msg}");
        assert_eq!(
            sent_request(None, None, None, None).await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        let bad_escape = sent_request(None, Some("a"), Some("m%4"), Some("drop")).await;
        assert_eq!(bad_escape.0, StatusCode::BAD_REQUEST);
        let (status, msg) = sent_request(None, Some("a"), Some("m"), Some("resend")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(msg.contains("resend"), "{msg}");
    }

    #[test]
    fn capture_switch_validates_and_answers() {
        let c = Captures::default();
        assert_eq!(
            switch_capture(None, "a@b.test", "D", true).0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            switch_capture(Some(&c), "a%40b.test", "D", false).0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            switch_capture(Some(&c), "a%4", "D", true).0,
            StatusCode::BAD_REQUEST
        );
        let (status, msg) = switch_capture(Some(&c), "a%40b.test", "D", true);
        assert_eq!(status, StatusCode::OK, "{msg}");
        assert!(c.is_on("a@b.test", "D"));
        assert_eq!(
            switch_capture(Some(&c), "a@b.test", "D", false).0,
            StatusCode::OK
        );
        assert!(!c.is_on("a@b.test", "D"));
    }
}
