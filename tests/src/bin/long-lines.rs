//! `make lint`'s check for what rustfmt leaves alone: rustfmt gives up on a statement it cannot
//! fit in 100 columns (a long macro call, a long chain) and then leaves every line of it as
//! written, silently. A line whose code alone (string literal contents and comments not
//! counted) is wider than 100 columns is such a line: this lists them and exits 1.
//!
//! Usage: `long-lines <file.rs>...` (the Makefile passes `git ls-files '*.rs'`).

use std::process::ExitCode;

const MAX: usize = 100;

/// Where the scanner is between lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Code,
    /// Inside `"..."` (escapes honoured).
    Str,
    /// Inside `r#"..."#` with this many `#`.
    Raw(usize),
    /// Inside `/* ... */`, nested this deep.
    Block(usize),
}

/// The width of `line`'s code (string contents and comments left out), and the state after it.
fn code_width(line: &str, mut state: State) -> (usize, State) {
    let chars: Vec<char> = line.chars().collect();
    let mut width = 0;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        match state {
            State::Code => match (c, next) {
                ('/', Some('/')) => break,
                ('/', Some('*')) => {
                    state = State::Block(1);
                    i += 1;
                }
                ('"', _) => {
                    width += 2; // the quotes
                    state = State::Str;
                }
                ('r', Some('"' | '#')) if !prev_is_ident(&chars, i) => {
                    let hashes = chars[i + 1..].iter().take_while(|&&h| h == '#').count();
                    if chars.get(i + 1 + hashes) == Some(&'"') {
                        width += 3 + 2 * hashes;
                        state = State::Raw(hashes);
                        i += 1 + hashes;
                    } else {
                        width += 1;
                    }
                }
                ('\'', _) => {
                    // A char literal ('x', '\n', '\u{..}') or a lifetime ('a).
                    let end = chars[i + 1..]
                        .iter()
                        .take(12)
                        .position(|&q| q == '\'')
                        .map(|p| i + 1 + p);
                    match end {
                        Some(e) if e == i + 2 || chars[i + 1] == '\\' => {
                            width += e - i + 1;
                            i = e;
                        }
                        _ => width += 1,
                    }
                }
                _ => width += 1,
            },
            State::Str => match c {
                '\\' => i += 1,
                '"' => state = State::Code,
                _ => {}
            },
            State::Raw(hashes) => {
                if c == '"'
                    && chars[i + 1..]
                        .iter()
                        .take(hashes)
                        .filter(|&&h| h == '#')
                        .count()
                        == hashes
                {
                    state = State::Code;
                    i += hashes;
                }
            }
            State::Block(depth) => match (c, next) {
                ('*', Some('/')) => {
                    state = if depth == 1 {
                        State::Code
                    } else {
                        State::Block(depth - 1)
                    };
                    i += 1;
                }
                ('/', Some('*')) => {
                    state = State::Block(depth + 1);
                    i += 1;
                }
                _ => {}
            },
        }
        i += 1;
    }
    (width, state)
}

fn prev_is_ident(chars: &[char], i: usize) -> bool {
    i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_')
}

fn main() -> ExitCode {
    let mut found = 0;
    for path in std::env::args().skip(1) {
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("long-lines: {path}: {e}");
                return ExitCode::from(2);
            }
        };
        let mut state = State::Code;
        for (n, line) in text.lines().enumerate() {
            let (width, after) = code_width(line, state);
            if state == State::Code && width > MAX {
                println!("{path}:{}: {width} columns of code: {}", n + 1, line.trim());
                found += 1;
            }
            state = after;
        }
    }
    if found > 0 {
        eprintln!(
            "long-lines: {found} line(s) wider than {MAX} columns that rustfmt left as written: \
             break them up (shorter names, a `let`, fewer fields per macro call) so rustfmt formats them"
        );
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_contents_and_comments_do_not_count() {
        let (w, s) = code_width(
            r#"    f("a very long string"); // and a comment"#,
            State::Code,
        );
        assert_eq!((w, s), ("    f(\"\"); ".len(), State::Code));
    }

    #[test]
    fn a_string_left_open_carries_over_to_the_next_line() {
        let (_, s) = code_width(r#"    let s = "starts here \"#, State::Code);
        assert_eq!(s, State::Str);
        let (w, s) = code_width(r#"    and ends here";"#, s);
        assert_eq!((w, s), (1, State::Code));
    }

    #[test]
    fn raw_strings_chars_and_lifetimes_are_told_apart() {
        let (w, s) = code_width(r###"let x: &'a str = r#"q"#; let c = '"';"###, State::Code);
        assert_eq!(s, State::Code);
        assert_eq!(w, r###"let x: &'a str = r#""#; let c = '"';"###.len());
    }
}
