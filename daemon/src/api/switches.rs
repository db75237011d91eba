//! Handlers of `/v1/switches`: list, create (`201` with the switch), destroy (`204`). Switch
//! changes are a few fast interface commands, so they answer directly rather than as jobs.

use axum::Json;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::StatusCode;

use super::{ApiError, AppState, Body, Peer};
use crate::wire;

pub(super) async fn list(State(s): State<AppState>) -> Result<Json<Vec<wire::Switch>>, ApiError> {
    Ok(Json(s.core.list_switches().await?))
}

pub(super) async fn create(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Body(req): Body<wire::CreateSwitch>,
) -> Result<(StatusCode, Json<wire::Switch>), ApiError> {
    let switch = s.core.create_switch(req, peer.0).await?;
    Ok((StatusCode::CREATED, Json(switch)))
}

pub(super) async fn destroy(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    s.core.destroy_switch(&name, peer.0).await?;
    Ok(StatusCode::NO_CONTENT)
}
