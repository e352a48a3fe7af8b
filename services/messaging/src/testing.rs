//! What several modules' tests share.

use tracing_subscriber::layer::SubscriberExt as _;

/// A subscriber whose spans are traced (sampled, never exported) and the provider behind it
/// (keep it alive while the subscriber is in use).
pub(crate) fn otel_subscriber() -> (
    impl tracing::Subscriber + Send + Sync,
    opentelemetry_sdk::trace::SdkTracerProvider,
) {
    use opentelemetry::trace::TracerProvider as _;
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    let tracer = provider.tracer("test");
    (
        tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(tracer)),
        provider,
    )
}
