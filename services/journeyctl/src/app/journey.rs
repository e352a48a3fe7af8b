//! `journey`: show a trace (and the traces linked to it) as a journey, as text or JSON.

use super::{http_client, print_pages, progress_line};
use crate::cli::{JourneyArgs, use_color};
use crate::error::Error;
use crate::journey::Journey;
use crate::links::Stitched;
use crate::zipkin::ZipkinClient;

/// The trace id given, or the latest of `--service` with `--last`.
async fn trace_id(a: &JourneyArgs, zipkin: &ZipkinClient) -> Result<String, Error> {
    if let Some(t) = &a.trace_id {
        return Ok(t.to_string());
    }
    zipkin
        .last_trace_id(&a.service, a.lookback)
        .await?
        .ok_or_else(|| Error::NoRecentTrace {
            service: a.service.clone(),
            lookback: a.lookback,
        })
}

pub(super) async fn journey(a: JourneyArgs) -> Result<(), Error> {
    let zipkin = http_client("Zipkin", ZipkinClient::new(&a.zipkin_url))?;
    let trace_id = trace_id(&a, &zipkin).await?;
    let spans = zipkin
        .trace(&trace_id)
        .await?
        .filter(|s| !s.is_empty())
        .ok_or_else(|| Error::TraceNotFound {
            trace_id: trace_id.clone(),
        })?;
    let stitched = match a.links.limits() {
        Some(limits) => crate::links::follow(&zipkin, spans.clone(), None, &limits)
            .await
            .unwrap_or_else(|e| {
                // The trace itself is shown all the same.
                progress_line(&format!(
                    "linked traces not followed: {}",
                    crate::error::chain(&e)
                ));
                Stitched {
                    spans,
                    ..Stitched::default()
                }
            }),
        None => Stitched {
            spans,
            ..Stitched::default()
        },
    };
    let j = Journey::new(stitched.spans);
    if a.json {
        let mut doc = serde_json::json!({
            "trace_id": trace_id,
            "services": j.services(),
            "total_us": j.total_us(),
            "hops": j.hops(),
            "spans": j.spans(),
        });
        if !stitched.linked.is_empty() {
            doc["linked_traces"] = serde_json::json!(stitched.linked);
        }
        println!(
            "{}",
            serde_json::to_string_pretty(&doc).map_err(Error::Json)?
        );
    } else {
        print!("{}", j.render(use_color()));
        print_pages(&zipkin, &j, stitched.truncated);
    }
    Ok(())
}
