//! `GET /v1/audit`: the audit log (docs/security.md).

use axum::Json;
use tidings_hub::hub::AuditFilter;
use tidings_hub::model::audit::AuditView;

use crate::error::{ApiResult, ErrorBody};
use crate::request::Call;

#[utoipa::path(get, path = "/v1/audit", tag = "audit",
    params(("from" = Option<String>, Query, description = "From this time (ISO 8601 or Unix seconds)"), ("to" = Option<String>, Query, description = "Before this time"), ("timeline" = Option<String>, Query, description = "today, 7d, week, 30d, month, all"), ("action" = Option<String>, Query, description = "Actions starting with this (`application.`, `delivery.replay`)"), ("application" = Option<String>, Query, description = "Entries of this application"), ("page" = Option<i64>, Query), ("pagination" = Option<i64>, Query)),
    responses((status = 200, description = "Audit entries, newest first (the admin only)", body = [AuditView]), (status = 400, description = "Malformed request", body = ErrorBody), (status = 401, description = "No valid credentials", body = ErrorBody), (status = 403, description = "Not the admin", body = ErrorBody)))]
pub async fn list(call: Call) -> ApiResult<Json<Vec<AuditView>>> {
    let who = call.admin()?;
    let (from, to) = call.time_range()?;
    let filter = AuditFilter {
        from,
        to,
        action: call.param("action").map(str::to_owned),
        application: call.param("application").map(str::to_owned),
    };
    Ok(Json(
        call.state.hub.audit(who, &filter, call.page()?).await?,
    ))
}
