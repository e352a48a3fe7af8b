//! What `wait` waits for: `KIND/NAME` or `KIND[SELECTOR]`, the selector in `kubectl -l` syntax
//! parsed into kube's [`Selector`].

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use kube::core::{Expression, Selector};

/// The kinds of workload `wait` understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    StatefulSet,
    Deployment,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::StatefulSet => "statefulset",
            Kind::Deployment => "deployment",
        }
    }
}

/// Why a workload list, target or selector does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("unknown kind `{0}` (statefulset or deployment)")]
    UnknownKind(String),
    #[error("`{0}` is neither KIND/NAME nor KIND[SELECTOR]")]
    Shape(String),
    #[error("`{0}`: a selector target is KIND[SELECTOR]")]
    UnclosedSelector(String),
    #[error("`{0}`: empty selector")]
    EmptySelector(String),
    #[error("`{0}`: empty name")]
    EmptyName(String),
    #[error(
        "`{requirement}` is not a label selector requirement (key, !key, key=value, key!=value, \
         key in (a,b), key notin (a,b)): {why}"
    )]
    Requirement {
        requirement: String,
        why: &'static str,
    },
}

impl FromStr for Kind {
    type Err = TargetError;
    fn from_str(s: &str) -> Result<Self, TargetError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "statefulset" | "statefulsets" | "sts" => Ok(Kind::StatefulSet),
            "deployment" | "deployments" | "deploy" => Ok(Kind::Deployment),
            other => Err(TargetError::UnknownKind(other.to_string())),
        }
    }
}

/// What to wait for: one workload by name, or every workload of a kind matching a label
/// selector (at least one must exist).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `statefulset/kafka`
    Named { kind: Kind, name: String },
    /// `deployment[app.kubernetes.io/name=zipkin,tier!=test]` (selector syntax of `kubectl -l`)
    Selected { kind: Kind, selector: Selector },
}

impl Target {
    pub fn kind(&self) -> Kind {
        match self {
            Target::Named { kind, .. } | Target::Selected { kind, .. } => *kind,
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Named { kind, name } => write!(f, "{}/{name}", kind.as_str()),
            Target::Selected { kind, selector } => write!(f, "{}[{selector}]", kind.as_str()),
        }
    }
}

impl FromStr for Target {
    type Err = TargetError;
    fn from_str(s: &str) -> Result<Self, TargetError> {
        let s = s.trim();
        if let Some((kind, rest)) = s.split_once('[') {
            let selector = rest
                .strip_suffix(']')
                .ok_or_else(|| TargetError::UnclosedSelector(s.to_string()))?
                .trim();
            if selector.is_empty() {
                return Err(TargetError::EmptySelector(s.to_string()));
            }
            return Ok(Target::Selected {
                kind: kind.parse()?,
                selector: parse_selector(selector)?,
            });
        }
        let (kind, name) = s
            .split_once('/')
            .ok_or_else(|| TargetError::Shape(s.to_string()))?;
        let name = name.trim();
        if name.is_empty() {
            return Err(TargetError::EmptyName(s.to_string()));
        }
        Ok(Target::Named {
            kind: kind.parse()?,
            name: name.to_string(),
        })
    }
}

/// Splits `s` at the `sep`s outside `open`...`close` brackets.
fn split_outside(s: &str, sep: char, open: char, close: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in s.char_indices() {
        if c == open {
            depth += 1;
        } else if c == close {
            depth = depth.saturating_sub(1);
        } else if c == sep && depth == 0 {
            parts.push(&s[start..i]);
            start = i + c.len_utf8();
        }
    }
    parts.push(&s[start..]);
    parts
}

/// Parses a comma-separated list of targets; commas inside `[...]` belong to the selector.
pub fn parse_targets(list: &str) -> Result<Vec<Target>, TargetError> {
    split_outside(list, ',', '[', ']')
        .into_iter()
        .filter(|t| !t.trim().is_empty())
        .map(str::parse)
        .collect()
}

/// Parses a label selector in `kubectl -l` syntax: comma-separated `key`, `!key`,
/// `key=value` (or `==`), `key!=value`, `key in (a,b)`, `key notin (a,b)`.
pub fn parse_selector(s: &str) -> Result<Selector, TargetError> {
    split_outside(s, ',', '(', ')')
        .into_iter()
        .map(parse_requirement)
        .collect()
}

fn parse_requirement(requirement: &str) -> Result<Expression, TargetError> {
    let r = requirement.trim();
    let bad = |why| TargetError::Requirement {
        requirement: r.to_string(),
        why,
    };
    let word = |w: &str, punctuation: &str, what| {
        let w = w.trim();
        let ok = w
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || punctuation.contains(c));
        if ok {
            Ok(w.to_string())
        } else {
            Err(bad(what))
        }
    };
    let key = |k: &str| {
        let k = word(k, "-_./", "a key may hold letters, digits and - _ . / only")?;
        if k.is_empty() {
            Err(bad("empty key"))
        } else {
            Ok(k)
        }
    };
    let value = |v: &str| word(v, "-_.", "a value may hold letters, digits and - _ . only");
    if let Some(k) = r.strip_prefix('!') {
        return Ok(Expression::DoesNotExist(key(k)?));
    }
    if let Some((head, rest)) = r.split_once('(') {
        let values = rest
            .strip_suffix(')')
            .ok_or_else(|| bad("the value set must end with `)`"))?
            .split(',')
            .map(value)
            .collect::<Result<BTreeSet<String>, _>>()?;
        let mut words = head.split_whitespace();
        let (k, op) = (words.next().unwrap_or_default(), words.next());
        if words.next().is_some() {
            return Err(bad("expected KEY in (...) or KEY notin (...)"));
        }
        return match op {
            Some("in") => Ok(Expression::In(key(k)?, values)),
            Some("notin") => Ok(Expression::NotIn(key(k)?, values)),
            _ => Err(bad("expected KEY in (...) or KEY notin (...)")),
        };
    }
    if let Some((k, v)) = r.split_once("!=") {
        return Ok(Expression::NotEqual(key(k)?, value(v)?));
    }
    if let Some((k, v)) = r.split_once("==").or_else(|| r.split_once('=')) {
        return Ok(Expression::Equal(key(k)?, value(v)?));
    }
    Ok(Expression::Exists(key(r)?))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_names_and_selectors_with_commas() {
        let t = parse_targets(
            "statefulset/kafka, deploy/zipkin,deployment[app=collector,tier in (a,b)]",
        )
        .unwrap();
        assert_eq!(
            t,
            vec![
                Target::Named {
                    kind: Kind::StatefulSet,
                    name: "kafka".into()
                },
                Target::Named {
                    kind: Kind::Deployment,
                    name: "zipkin".into()
                },
                Target::Selected {
                    kind: Kind::Deployment,
                    selector: Selector::from_iter([
                        Expression::Equal("app".into(), "collector".into()),
                        Expression::In("tier".into(), ["a".into(), "b".into()].into()),
                    ])
                },
            ]
        );
        assert_eq!(t[2].to_string(), "deployment[app=collector,tier in (a,b)]");
        assert!(parse_targets("").unwrap().is_empty());
    }

    #[test]
    fn malformed_targets_are_refused_saying_what_is_wrong() {
        let refused = [
            ("pod/x", TargetError::UnknownKind("pod".into())),
            ("kafka", TargetError::Shape("kafka".into())),
            ("sts/", TargetError::EmptyName("sts/".into())),
            ("deploy[]", TargetError::EmptySelector("deploy[]".into())),
            (
                "deploy[app=x",
                TargetError::UnclosedSelector("deploy[app=x".into()),
            ),
        ];
        for (input, why) in refused {
            assert_eq!(parse_targets(input), Err(why), "{input}");
        }
    }

    #[test]
    fn every_kubectl_selector_form_becomes_its_kube_expression() {
        let s = parse_selector(
            "a, !b, c=1, d==2, e!=3, f in (x, y), g notin (z), app.kubernetes.io/name=zipkin",
        )
        .unwrap();
        assert_eq!(
            s,
            Selector::from_iter([
                Expression::Exists("a".into()),
                Expression::DoesNotExist("b".into()),
                Expression::Equal("c".into(), "1".into()),
                Expression::Equal("d".into(), "2".into()),
                Expression::NotEqual("e".into(), "3".into()),
                Expression::In("f".into(), ["x".into(), "y".into()].into()),
                Expression::NotIn("g".into(), ["z".into()].into()),
                Expression::Equal("app.kubernetes.io/name".into(), "zipkin".into()),
            ])
        );
    }

    #[test]
    fn malformed_selector_requirements_are_refused_naming_the_requirement() {
        for bad in [
            "a in b)",
            "a within (b)",
            "=x",
            "a b",
            "tier in (a",
            "x>1",
            "a,,b",
        ] {
            let e = parse_selector(bad).unwrap_err();
            assert!(matches!(e, TargetError::Requirement { .. }), "{bad}: {e:?}");
        }
    }
}
