//! Splitting `-exec "CMD ARGS"` into a program and its arguments, as Litestream does (Go's
//! `shellwords.Parse`): words split at blanks, `'...'` taken literally, `"..."` and a backslash
//! elsewhere escaping the next character (`\t` and `\n` give a tab and a newline). No variables,
//! globs or substitutions: the command runs without a shell. Unlike Litestream, which silently
//! drops everything from an unquoted `;`, `&`, `|`, `<` or `>` on, such a command is refused with
//! a hint to run a shell explicitly.

/// The words of `line`, or why it cannot be run without a shell.
pub fn split(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    // A word has started (possibly empty, as in `''`).
    let mut started = false;
    let (mut single, mut double) = (false, false);
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' if !double => {
                single = !single;
                started = true;
            }
            '"' if !single => {
                double = !double;
                started = true;
            }
            '\\' if !single => {
                let Some(n) = chars.next() else {
                    return Err(format!("{line:?} ends with a lone backslash"));
                };
                word.push(match n {
                    't' => '\t',
                    'n' => '\n',
                    n => n,
                });
                started = true;
            }
            c if c.is_whitespace() && !single && !double => {
                if started {
                    words.push(std::mem::take(&mut word));
                    started = false;
                }
            }
            ';' | '&' | '|' | '<' | '>' | '(' | ')' | '`' if !single && !double => {
                return Err(format!(
                    "{line:?} needs a shell (`{c}`): -exec runs one program directly, as \
                     Litestream does; to use a shell, say so: -exec \"sh -c '...'\""
                ));
            }
            c => {
                word.push(c);
                started = true;
            }
        }
    }
    if single || double {
        return Err(format!("{line:?} has an unclosed quote"));
    }
    if started {
        words.push(word);
    }
    if words.is_empty() {
        return Err("the command is empty".into());
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::split;

    #[test]
    fn words_quotes_and_escapes() {
        assert_eq!(
            split("  node dist/src/index.js  ").unwrap(),
            ["node", "dist/src/index.js"]
        );
        assert_eq!(
            split(r#"python3 -c 'print("a b")' "x y" a\ b '' $HOME"#).unwrap(),
            [
                "python3",
                "-c",
                r#"print("a b")"#,
                "x y",
                "a b",
                "",
                "$HOME"
            ]
        );
        assert_eq!(split(r#""a \"q\" \\ b""#).unwrap(), [r#"a "q" \ b"#]);
        assert_eq!(split(r"a\tb").unwrap(), ["a\tb"]);
        assert_eq!(
            split("sh -c 'a && b | c'").unwrap(),
            ["sh", "-c", "a && b | c"]
        );
    }

    #[test]
    fn refusals() {
        assert!(split("a && b").unwrap_err().contains("needs a shell"));
        assert!(split("a > log").unwrap_err().contains("needs a shell"));
        assert!(split("echo 'open").unwrap_err().contains("unclosed quote"));
        assert!(split("a \\").unwrap_err().contains("backslash"));
        assert!(split("   ").unwrap_err().contains("empty"));
    }
}
