//! The command line's tests. Every parse runs in a controlled environment ([`parse_in`]): the
//! variables the command line reads are exactly the ones a test gives, whatever the caller's
//! environment holds.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use journey_telemetry::test_support::{env_names, with_only_env};

use clap::error::ErrorKind;

use super::*;

/// Parses `args` with exactly `env` set among the variables the command line reads (the rest
/// unset for the parse).
fn parse_in(env: &[(&str, &str)], args: &[&str]) -> Result<Cli, clap::Error> {
    let argv = std::iter::once("journeyctl").chain(args.iter().copied());
    with_only_env(&command(), env, || try_parse_from(argv))
}

/// The arguments of subcommand `$variant`, or a panic naming what was parsed instead.
macro_rules! args_of {
    ($cli:expr, $variant:ident) => {
        match $cli.command {
            Command::$variant(a) => a,
            other => panic!("not {}: {other:?}", stringify!($variant)),
        }
    };
}

/// [`parse_in`] with no variable set.
fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
    parse_in(&[], args)
}

#[test]
fn the_cli_is_consistent() {
    command().debug_assert();
}

#[test]
fn init_reads_the_charts_environment_names() {
    let root = command();
    let init = root.find_subcommand("init").unwrap();
    let envs = env_names(init);
    for v in [
        "WAIT_WORKLOADS",
        "POD_NAMESPACE",
        "KAFKA_BOOTSTRAP_SERVERS",
        "KAFKA_SASL_PASSWORD",
        "KAFKA_EXPECTED_BROKERS",
        "COLLECTOR_HEALTH_URL",
        "ZIPKIN_URL",
        "WAIT_TIMEOUT",
        "TOPICS_FILE",
    ] {
        assert!(
            envs.iter().any(|e| e == v),
            "{v} not read by init: {envs:?}"
        );
    }
}

#[test]
fn init_takes_workloads_timeout_and_inline_topics_from_flags() {
    let a = args_of!(
        parse(&[
            "init",
            "--kafka-bootstrap-servers",
            "k:9092",
            "--workloads",
            "statefulset/kafka,deployment[app=z,b=c]",
            "--timeout",
            "90s",
            "--topic",
            "a:1;b:2:1:retention.ms=5",
        ])
        .unwrap(),
        Init
    );
    assert_eq!(a.targets.workloads.len(), 2);
    assert_eq!(a.targets.timeout, Duration::from_secs(90));
    assert_eq!(a.topics.resolve().unwrap().len(), 2);
}

#[test]
fn init_takes_the_same_settings_from_the_charts_environment() {
    let a = args_of!(
        parse_in(
            &[
                ("KAFKA_BOOTSTRAP_SERVERS", "k:9092"),
                ("WAIT_WORKLOADS", "statefulset/kafka"),
                ("WAIT_TIMEOUT", "2m"),
                ("TOPICS", "a:1"),
            ],
            &["init"],
        )
        .unwrap(),
        Init
    );
    assert_eq!(a.kafka.bootstrap_servers, "k:9092");
    assert_eq!(a.targets.workloads.len(), 1);
    assert_eq!(a.targets.timeout, Duration::from_secs(120));
    assert_eq!(a.topics.resolve().unwrap().len(), 1);
}

#[test]
fn wait_without_bootstrap_servers_skips_the_kafka_check() {
    let w = args_of!(parse(&["wait", "--workloads", "sts/kafka"]).unwrap(), Wait);
    let plan = wait_plan(&w.targets, "ns".into(), Some(&w.kafka));
    assert!(plan.kafka.is_none());
    assert_eq!(plan.targets.len(), 1);
}

#[test]
fn wait_with_bootstrap_servers_in_the_environment_checks_kafka() {
    let w = args_of!(
        parse_in(&[("KAFKA_BOOTSTRAP_SERVERS", "k:9092")], &["wait"]).unwrap(),
        Wait
    );
    let plan = wait_plan(&w.targets, "ns".into(), Some(&w.kafka));
    assert!(plan.kafka.is_some());
}

#[test]
fn seed_requires_the_bootstrap_servers() {
    let e = parse(&["seed"]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::MissingRequiredArgument);
    assert!(parse(&["seed", "--kafka-bootstrap-servers", "k:9092"]).is_ok());
}

#[test]
fn journey_needs_a_trace_id_or_last() {
    let e = parse(&["journey", "--zipkin-url", "http://z"]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::MissingRequiredArgument);
    assert!(parse(&["journey", "--last", "--zipkin-url", "http://z"]).is_ok());
}

#[test]
fn verify_follows_links_by_default_with_the_default_hops() {
    let v = args_of!(
        parse(&["verify", "--producer-url", "p", "--zipkin-url", "z"]).unwrap(),
        Verify
    );
    assert_eq!(v.hops().len(), 5);
    assert!(v.links.follow_links);
    assert!(v.links.limits().is_some());
}

#[test]
fn follow_links_false_in_the_environment_turns_link_following_off() {
    let v = args_of!(
        parse_in(
            &[("FOLLOW_LINKS", "false")],
            &["verify", "--producer-url", "p", "--zipkin-url", "z"],
        )
        .unwrap(),
        Verify
    );
    assert!(!v.links.follow_links);
}

#[test]
fn journey_flags_set_the_trace_id_and_the_link_limits() {
    let id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let j = args_of!(
        parse(&[
            "journey",
            "--follow-links=false",
            "--link-depth",
            "2",
            "--zipkin-url",
            "z",
            id,
        ])
        .unwrap(),
        Journey
    );
    assert!(!j.links.follow_links);
    assert!(j.links.limits().is_none());
    assert_eq!(j.links.link_depth, 2);
    let j = args_of!(
        parse(&["journey", "--follow-links", "--zipkin-url", "z", id]).unwrap(),
        Journey
    );
    assert_eq!(j.trace_id.map(|t| t.to_string()).as_deref(), Some(id));
    assert!(j.links.follow_links);
    assert!(j.links.limits().is_some());
}

#[test]
fn a_malformed_trace_id_is_refused_by_clap_naming_it() {
    let e = parse(&["journey", "--zipkin-url", "z", "not-a-trace"]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ValueValidation);
    assert_eq!(e.exit_code(), 2);
    assert!(
        e.to_string().contains("`not-a-trace` is not a trace id"),
        "{e}"
    );
}

#[test]
fn load_refuses_a_rate_a_duration_or_a_concurrency_that_is_not_above_zero() {
    for bad in [
        ["--rate", "0"],
        ["--rate", "NaN"],
        ["--rate", "fast"],
        ["--duration", "0s"],
        ["--concurrency", "0"],
    ] {
        let e = parse_in(&[("PRODUCER_URL", "http://p")], &["load", bad[0], bad[1]]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ValueValidation, "{bad:?}: {e}");
    }
    let l = args_of!(
        parse_in(
            &[("PRODUCER_URL", "http://p")],
            &["load", "--rate", "0.5", "--concurrency", "2"],
        )
        .unwrap(),
        Load
    );
    assert_eq!((l.rate, l.concurrency.get()), (0.5, 2));
}

#[test]
fn verify_refuses_a_payload_that_is_not_json() {
    let args = [
        "verify",
        "--producer-url",
        "p",
        "--zipkin-url",
        "z",
        "--payload",
    ];
    let e = parse(&[&args[..], &["{not json"]].concat()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ValueValidation);
    let v = args_of!(
        parse(&[&args[..], &[r#"{"n":1}"#]].concat()).unwrap(),
        Verify
    );
    assert_eq!(v.payload, Some(serde_json::json!({"n": 1})));
}

#[test]
fn wait_refuses_malformed_workloads_and_selectors() {
    for bad in ["pod/x", "deployment[tier in a]", "sts/"] {
        let e = parse(&["wait", "--workloads", bad]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ValueValidation, "{bad}: {e}");
    }
}

#[test]
fn keep_seeding_refuses_a_zero_period() {
    let e = parse(&[
        "init",
        "--kafka-bootstrap-servers",
        "k:9092",
        "--keep-seeding",
        "0s",
    ])
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ValueValidation);
}
