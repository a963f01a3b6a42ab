//! OTLP's `MetricsService` and `LogsService`: each export converted and stored on a blocking
//! thread, which builds its [`Outcome`]; [`partial`] is the one place an outcome becomes an
//! OTLP partial success.

use argus_proto::otlp::collector::logs::v1::logs_service_server::LogsService;
use argus_proto::otlp::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use argus_proto::otlp::collector::metrics::v1::metrics_service_server::MetricsService;
use argus_proto::otlp::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use tonic::{Request, Response, Status};

use super::status;
use crate::convert::{otlp_logs, otlp_metrics};
use crate::outcome::{Kind, Outcome};
use crate::state::AppState;
use crate::validation::{Refusals, RejectReason, Rejection};

#[derive(Clone)]
pub struct OtlpService {
    pub state: AppState,
}

/// An export's outcome as OTLP's partial success: `None` when everything was taken, else
/// how many items were refused and the first reasons. Retry later is UNAVAILABLE, which
/// OTLP exporters retry.
pub fn partial(outcome: Outcome) -> Result<Option<(i64, String)>, Status> {
    if let Outcome::RetryLater(why) = outcome {
        return Err(status::retry_later(why));
    }
    let refused = outcome.refused();
    Ok((refused > 0).then(|| {
        (
            i64::try_from(refused).unwrap_or(i64::MAX),
            outcome.reasons().join("; "),
        )
    }))
}

#[tonic::async_trait]
impl MetricsService for OtlpService {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        let req = request.into_inner();
        let st = self.state.clone();
        let outcome = tokio::task::spawn_blocking(move || {
            let writer = st.store.writer();
            let mut conv = otlp_metrics(&writer, &req);
            conv.commit(writer, &[], &st.metrics, st.cluster.as_deref())
        })
        .await
        .map_err(|_| status::task_failed("storing the export"))?;
        Ok(Response::new(ExportMetricsServiceResponse {
            partial_success: partial(outcome)?.map(|(rejected_data_points, error_message)| {
                ExportMetricsPartialSuccess {
                    rejected_data_points,
                    error_message,
                }
            }),
        }))
    }
}

#[tonic::async_trait]
impl LogsService for OtlpService {
    async fn export(
        &self,
        request: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        let req = request.into_inner();
        let st = self.state.clone();
        // Turning records into events and running the live engines: a blocking thread's
        // work, not the reactor's.
        let outcome = tokio::task::spawn_blocking(move || {
            let now = st.store.now_ms();
            let mut taken = 0;
            let mut refusals = Refusals::default();
            for (stream, events) in otlp_logs(&req, now) {
                match st.events.publish(&stream, &events) {
                    Ok(n) => taken += n,
                    Err(e) => refusals.add_n(
                        Rejection::new(RejectReason::InvalidValue, e.to_string()),
                        events.len() as u64,
                    ),
                }
            }
            Outcome::taken(Kind::Events, taken, refusals, &st.metrics)
        })
        .await
        .map_err(|_| status::task_failed("taking the export"))?;
        Ok(Response::new(ExportLogsServiceResponse {
            partial_success: partial(outcome)?.map(|(rejected_log_records, error_message)| {
                ExportLogsPartialSuccess {
                    rejected_log_records,
                    error_message,
                }
            }),
        }))
    }
}
