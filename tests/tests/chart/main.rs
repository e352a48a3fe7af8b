//! The Kubernetes packaging — charts/journey, the Dockerfile, skaffold.yaml, k8s/ — checked with
//! everything that runs without a cluster or Docker:
//!
//! - Helm itself: `helm lint --strict` and `helm template` with every `ci/*-values.yaml`, and
//!   values.schema.json rejecting wrong values;
//! - the rendered objects: Pod Security `restricted` rules, journeyctl's RBAC, pinned versions;
//! - the rendered configuration against the real programs: the Collector config through
//!   `otelcol validate`, every service/journeyctl environment through the binaries'
//!   `--print-config`, the Kafka environment through the apache/kafka image's own env→properties
//!   code (`kafka.docker.KafkaDockerWrapper`, shipped in the Kafka jar) and then a real broker
//!   (one node, and a three-voter quorum);
//! - k8s/ is what scripts/render-k8s.sh renders now;
//! - skaffold.yaml against skaffold's JSON schema, and against the Dockerfile and the chart;
//!   the Dockerfile through hadolint and its stages, users and build flags.
//!
//! What needs a real API server (objects accepted, admission, `helm install --wait`) is in the
//! control-plane tests.

mod collector;
mod dockerfile;
mod env;
mod generated;
mod helm;
mod kafka;
mod network;
mod security;
mod skaffold;

use std::collections::BTreeSet;

use journey_tests::chart::{s, seq};
use journey_tests::runner;
use journey_tests::tests;
use yaml_serde::Value;

use collector::{
    the_collector_mounts_exactly_the_config_files_and_gets_every_variable_they_read,
    the_rendered_collector_config_passes_otelcol_validate,
};
use dockerfile::the_dockerfile_builds_every_binary_locked_into_nonroot_distroless_stages;
use env::every_variable_the_chart_sets_is_accepted_by_its_binary_and_print_config_succeeds;
use generated::{
    the_chart_readme_is_what_helm_docs_generates_from_values_yaml_now,
    the_k8s_manifests_are_what_render_k8s_renders_now,
};
use helm::{
    an_image_digest_pins_that_image_and_leaves_the_others_on_their_tags,
    every_workload_takes_its_node_selector_tolerations_and_affinity_from_its_values,
    helm_lint_strict_passes_with_every_ci_values_file,
    helm_template_renders_every_ci_values_file_with_the_expected_objects,
    the_chart_pins_the_kafka_zipkin_and_collector_versions_the_local_stack_runs,
    the_collectors_gomemlimit_is_80_percent_of_its_memory_limit_in_any_quantity_form,
    the_values_schema_and_the_chart_reject_wrong_values,
};
use kafka::{
    the_kafka_env_becomes_the_same_properties_in_the_image_wrapper_and_by_the_convention,
    the_rendered_kafka_settings_boot_a_real_single_node_kafka,
    the_rendered_three_broker_settings_form_a_three_voter_quorum,
};
use network::every_connection_the_stack_makes_passes_its_network_policies_and_no_other_does;
use security::{
    every_pod_meets_pod_security_restricted_and_has_resources_and_probes,
    journeyctl_may_only_get_list_and_watch_workloads_and_pods_and_only_it_holds_the_token,
};
use skaffold::{
    skaffold_render_is_what_helm_template_renders_with_the_same_values,
    skaffold_yaml_matches_skaffolds_schema_the_dockerfile_and_the_chart,
};

fn main() -> std::process::ExitCode {
    runner::main(
        || Ok(()),
        tests![
            helm_lint_strict_passes_with_every_ci_values_file,
            helm_template_renders_every_ci_values_file_with_the_expected_objects,
            the_values_schema_and_the_chart_reject_wrong_values,
            an_image_digest_pins_that_image_and_leaves_the_others_on_their_tags,
            every_workload_takes_its_node_selector_tolerations_and_affinity_from_its_values,
            the_collectors_gomemlimit_is_80_percent_of_its_memory_limit_in_any_quantity_form,
            the_chart_pins_the_kafka_zipkin_and_collector_versions_the_local_stack_runs,
            every_pod_meets_pod_security_restricted_and_has_resources_and_probes,
            every_connection_the_stack_makes_passes_its_network_policies_and_no_other_does,
            journeyctl_may_only_get_list_and_watch_workloads_and_pods_and_only_it_holds_the_token,
            the_collector_mounts_exactly_the_config_files_and_gets_every_variable_they_read,
            the_rendered_collector_config_passes_otelcol_validate,
            every_variable_the_chart_sets_is_accepted_by_its_binary_and_print_config_succeeds,
            the_kafka_env_becomes_the_same_properties_in_the_image_wrapper_and_by_the_convention,
            the_rendered_kafka_settings_boot_a_real_single_node_kafka,
            the_rendered_three_broker_settings_form_a_three_voter_quorum,
            the_k8s_manifests_are_what_render_k8s_renders_now,
            the_chart_readme_is_what_helm_docs_generates_from_values_yaml_now,
            skaffold_yaml_matches_skaffolds_schema_the_dockerfile_and_the_chart,
            skaffold_render_is_what_helm_template_renders_with_the_same_values,
            the_dockerfile_builds_every_binary_locked_into_nonroot_distroless_stages,
        ],
    )
}

/// Variables filled from the downward API only to be expanded into others (`$(NAME)`): the
/// program never reads them itself.
pub(crate) fn expansion_helpers(c: &Value) -> BTreeSet<String> {
    let vars = seq(&c["env"]);
    vars.iter()
        .filter(|e| !e["valueFrom"]["fieldRef"].is_null())
        .map(|e| s(&e["name"]).to_string())
        .filter(|n| {
            let needle = format!("$({n})");
            vars.iter().any(|e| s(&e["value"]).contains(&needle))
        })
        .collect()
}

/// A container's environment, in order.
pub(crate) type Env = Vec<(String, String)>;

/// Dockerfile instructions: (INSTRUCTION, arguments).
pub(crate) type Instructions = Vec<(String, String)>;
