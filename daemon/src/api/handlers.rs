//! Route handlers: parse, call the core, answer. Mutations answer `202 Accepted` with the job
//! and a `Location` header; `GET /v1/jobs/{id}?wait=N` waits for its final state.

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use tokio::sync::broadcast;
use uuid::Uuid;

use super::{ApiError, AppState, Body, Peer, Query};
use crate::core::Error;
use crate::wire;

/// Longest `?wait=` honoured.
const MAX_WAIT: Duration = Duration::from_secs(300);

type ApiResult<T> = Result<T, ApiError>;

fn accepted(job: Result<wire::Job, Error>) -> ApiResult<Response> {
    let job = job?;
    let location = format!("/v1/jobs/{}", job.id);
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(job),
    )
        .into_response())
}

pub(super) async fn system_info(State(s): State<AppState>) -> Json<wire::SystemInfo> {
    Json(s.core.system_info())
}

pub(super) async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

pub(super) async fn pools(State(s): State<AppState>) -> ApiResult<Json<Vec<wire::Pool>>> {
    Ok(Json(s.core.list_pools().await?))
}

pub(super) async fn list_datasets(
    State(s): State<AppState>,
) -> ApiResult<Json<Vec<wire::Dataset>>> {
    Ok(Json(s.core.list_datasets().await?))
}

pub(super) async fn get_dataset(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<wire::Dataset>> {
    Ok(Json(s.core.get_dataset(&name).await?))
}

pub(super) async fn create_dataset(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Body(req): Body<wire::CreateDataset>,
) -> ApiResult<Response> {
    accepted(s.core.create_dataset(req, peer.0))
}

pub(super) async fn set_properties(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Path(name): Path<String>,
    Body(req): Body<wire::SetProperties>,
) -> ApiResult<Response> {
    accepted(s.core.set_properties(&name, req, peer.0))
}

pub(super) async fn destroy_dataset(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Path(name): Path<String>,
    Query(q): Query<wire::DestroyDataset>,
) -> ApiResult<Response> {
    accepted(s.core.destroy_dataset(&name, q, peer.0))
}

pub(super) async fn list_snapshots(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<Vec<wire::Snapshot>>> {
    Ok(Json(s.core.list_snapshots(&name).await?))
}

pub(super) async fn create_snapshot(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Path(name): Path<String>,
    Body(req): Body<wire::CreateSnapshot>,
) -> ApiResult<Response> {
    accepted(s.core.create_snapshot(&name, req, peer.0))
}

pub(super) async fn destroy_snapshot(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Path((name, snap)): Path<(String, String)>,
    Query(q): Query<wire::DestroySnapshot>,
) -> ApiResult<Response> {
    accepted(s.core.destroy_snapshot(&name, &snap, q, peer.0))
}

pub(super) async fn rollback(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Path((name, snap)): Path<(String, String)>,
    Body(req): Body<wire::Rollback>,
) -> ApiResult<Response> {
    accepted(s.core.rollback(&name, &snap, req, peer.0))
}

pub(super) async fn clone_snapshot(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Path((name, snap)): Path<(String, String)>,
    Body(req): Body<wire::Clone>,
) -> ApiResult<Response> {
    accepted(s.core.clone_snapshot(&name, &snap, req, peer.0))
}

pub(super) async fn hold(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Path((name, snap)): Path<(String, String)>,
    Body(req): Body<wire::Hold>,
) -> ApiResult<Response> {
    accepted(s.core.hold(&name, &snap, req, true, peer.0))
}

pub(super) async fn release(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Path((name, snap)): Path<(String, String)>,
    Body(req): Body<wire::Hold>,
) -> ApiResult<Response> {
    accepted(s.core.hold(&name, &snap, req, false, peer.0))
}

pub(super) async fn list_exports(State(s): State<AppState>) -> ApiResult<Json<Vec<wire::Export>>> {
    Ok(Json(s.core.list_exports().await?))
}

pub(super) async fn get_export(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<wire::Export>> {
    Ok(Json(s.core.get_export(&name).await?))
}

pub(super) async fn put_export(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Path(name): Path<String>,
    Body(req): Body<wire::PutExport>,
) -> ApiResult<Json<wire::Export>> {
    Ok(Json(s.core.put_export(&name, req, peer.0).await?))
}

pub(super) async fn remove_export(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    s.core.remove_export(&name, peer.0)?;
    Ok(StatusCode::NO_CONTENT)
}

/// `text/plain`: the file labd would write.
pub(super) async fn render_exports(
    State(s): State<AppState>,
    Query(q): Query<wire::RenderQuery>,
) -> ApiResult<String> {
    Ok(s.core.render_exports(q.format.as_deref()).await?)
}

pub(super) async fn apply_exports(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
) -> ApiResult<Response> {
    accepted(s.core.apply_exports(peer.0))
}

pub(super) async fn list_templates(
    State(s): State<AppState>,
) -> ApiResult<Json<Vec<wire::Template>>> {
    Ok(Json(s.core.list_templates()?))
}

pub(super) async fn get_template(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<wire::Template>> {
    Ok(Json(s.core.get_template(&name)?))
}

pub(super) async fn template_command(
    State(s): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<wire::CommandQuery>,
) -> ApiResult<Json<wire::CommandPreview>> {
    let preview = s
        .core
        .template_command(&name, q.driver.as_deref(), q.vm.as_deref())
        .await?;
    Ok(Json(preview))
}

pub(super) async fn list_vms(State(s): State<AppState>) -> ApiResult<Json<Vec<wire::Vm>>> {
    Ok(Json(s.core.list_vms().await?))
}

pub(super) async fn get_vm(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<wire::Vm>> {
    Ok(Json(s.core.get_vm(&name).await?))
}

pub(super) async fn create_vm(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Body(req): Body<wire::CreateVm>,
) -> ApiResult<Response> {
    accepted(s.core.create_vm(req, peer.0).await)
}

pub(super) async fn destroy_vm(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    accepted(s.core.destroy_vm(&name, peer.0))
}

pub(super) async fn start_vm(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    accepted(s.core.start_vm(&name, peer.0).await)
}

pub(super) async fn stop_vm(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Path(name): Path<String>,
    Query(q): Query<wire::StopVmQuery>,
) -> ApiResult<Response> {
    accepted(s.core.stop_vm(&name, q.force, peer.0))
}

pub(super) async fn restart_vm(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Path(name): Path<String>,
    Query(q): Query<wire::StopVmQuery>,
) -> ApiResult<Response> {
    accepted(s.core.restart_vm(&name, q.force, peer.0).await)
}

pub(super) async fn snapshot_vm(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Path(name): Path<String>,
    Body(req): Body<wire::SnapshotVm>,
) -> ApiResult<Response> {
    accepted(s.core.snapshot_vm(&name, req, peer.0).await)
}

pub(super) async fn clone_vm(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Path(name): Path<String>,
    Body(req): Body<wire::CloneVm>,
) -> ApiResult<Response> {
    accepted(s.core.clone_vm(&name, req, peer.0).await)
}

pub(super) async fn vm_command(
    State(s): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<wire::VmCommandQuery>,
) -> ApiResult<Json<wire::CommandPreview>> {
    Ok(Json(s.core.vm_command(&name, q.driver.as_deref()).await?))
}

pub(super) async fn list_policies(
    State(s): State<AppState>,
) -> ApiResult<Json<Vec<wire::PolicyInfo>>> {
    Ok(Json(s.core.list_policies().await?))
}

pub(super) async fn get_policy(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<wire::PolicyInfo>> {
    Ok(Json(s.core.get_policy(&name).await?))
}

pub(super) async fn run_policies(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
) -> ApiResult<Response> {
    accepted(s.core.run_policies(peer.0, false))
}

pub(super) async fn plan(
    State(s): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<wire::PlanQuery>,
) -> ApiResult<Json<wire::DatasetPlan>> {
    Ok(Json(s.core.plan(&name, q.at).await?))
}

pub(super) async fn explain(
    State(s): State<AppState>,
    Path((name, snap)): Path<(String, String)>,
    Query(q): Query<wire::PlanQuery>,
) -> ApiResult<Json<wire::DatasetPlan>> {
    Ok(Json(s.core.explain(&name, &snap, q.at).await?))
}

pub(super) async fn list_jobs(State(s): State<AppState>) -> Json<Vec<wire::Job>> {
    Json(s.core.jobs.list())
}

pub(super) async fn get_job(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<wire::JobWait>,
) -> ApiResult<Json<wire::Job>> {
    let id: Uuid = id.parse().map_err(|_| {
        ApiError::bad_request("id", "invalid_id", format!("'{id}' is not a job id"))
    })?;
    let job = match q.wait {
        Some(secs) => {
            let wait = Duration::from_secs(secs).min(MAX_WAIT);
            s.core.jobs.wait(id, wait).await
        }
        None => s.core.jobs.get(id),
    };
    job.map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no job {id}")))
}

/// `GET /v1/events`: server-sent events until labd has stopped: the stream ends right after
/// the `daemon.stopped` event, so subscribers see the jobs that finish while labd stops. A
/// subscriber that lags is sent a `lagged` event (`data.missed`) and disconnected; it must
/// re-read state.
pub(super) async fn events(
    State(s): State<AppState>,
    Query(q): Query<wire::EventFilter>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let mut resources = Vec::new();
    if let Some(r) = q.resource {
        let resolved = s.core.resolve_resource(&r);
        if resolved != r {
            resources.push(resolved);
        }
        resources.push(r);
    }
    let filter = crate::events::Filter::new(q.kind.as_deref(), resources);
    let rx = s.core.events.subscribe();
    let state = (rx, false, filter);
    let stream = futures_util::stream::unfold(state, |(mut rx, ended, filter)| async move {
        if ended {
            return None;
        }
        let (event, last) = loop {
            match rx.recv().await {
                Ok(ev) if !filter.matches(&ev) => {}
                Ok(ev) => {
                    let last = ev.kind == "daemon.stopped";
                    break (ev, last);
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    let ev = wire::Event {
                        seq: 0,
                        time: jiff::Timestamp::now(),
                        kind: "lagged".to_owned(),
                        resource: "events".to_owned(),
                        actor: None,
                        data: serde_json::json!({"missed": missed}),
                    };
                    break (ev, true);
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        };
        let sse = SseEvent::default()
            .event(event.kind.clone())
            .id(event.seq.to_string())
            .json_data(&event)
            .unwrap_or_else(|_| SseEvent::default().comment("unserializable event"));
        Some((Ok(sse), (rx, last, filter)))
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// `GET /metrics`: Prometheus text exposition format.
pub(super) async fn metrics(State(s): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.core.metrics.render(),
    )
}

pub(super) async fn no_route() -> ApiError {
    ApiError::not_found("no such route")
}

pub(super) async fn no_method() -> Response {
    let mut r = ApiError::bad_request("method", "method_not_allowed", "method not allowed here")
        .into_response();
    *r.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    r
}
