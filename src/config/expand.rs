//! `$VAR` / `${VAR}` expansion on the raw config text, with the semantics of Go's `os.Expand`
//! as Litestream 0.5 calls it (so one file means the same thing to both programs):
//!
//! * `$NAME` takes the longest run of ASCII letters, digits and `_`; `${NAME}` takes
//!   everything up to the first `}` (no `:-default` syntax: that whole text is the name).
//! * `$` followed by one of the shell "special" characters `* # $ @ ! ? - 0..9` is the variable
//!   of that one-character name, so `$$` is **not** an escape: it expands the (normally unset)
//!   variable `$`. There is no way to write a literal `$NAME`; Litestream's answer is its
//!   `-no-expand-env` flag.
//! * A `$` followed by anything else (space, `/`, `.`, end of text) stays as it is.
//! * `${}` and an unterminated `${` are dropped.
//! * `PID` always expands to the current process id (Litestream >= 0.5.8 does the same).
//! * An unset variable expands to the empty string. We additionally record each one with the
//!   line it was used on, so warnings and validation errors can say "${NAME} is not set".

/// One use of a variable that is not set in the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsetVar {
    /// The variable name, without `$`/`${}`.
    pub name: String,
    /// 1-based line of the expanded text where it was used.
    pub line: usize,
}

fn is_special(c: u8) -> bool {
    matches!(
        c,
        b'*' | b'#' | b'$' | b'@' | b'!' | b'?' | b'-' | b'0'..=b'9'
    )
}

fn is_alnum(c: u8) -> bool {
    c == b'_' || c.is_ascii_alphanumeric()
}

/// The name at the start of `s` (the text after a `$`) and how many bytes it spans.
/// `("", n>0)` means bad syntax to be dropped; `("", 0)` means "no name: keep the `$`".
fn shell_name(s: &[u8]) -> (&[u8], usize) {
    if s[0] == b'{' {
        if s.len() > 2 && is_special(s[1]) && s[2] == b'}' {
            return (&s[1..2], 3);
        }
        for i in 1..s.len() {
            if s[i] == b'}' {
                if i == 1 {
                    return (&[], 2);
                }
                return (&s[1..i], i + 1);
            }
        }
        return (&[], 1);
    }
    if is_special(s[0]) {
        return (&s[0..1], 1);
    }
    let mut i = 0;
    while i < s.len() && is_alnum(s[i]) {
        i += 1;
    }
    (&s[..i], i)
}

/// Expand `text`, looking variables up with `lookup`. Returns the expanded text and every
/// use of an unset variable (in order).
pub fn expand(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> (String, Vec<UnsetVar>) {
    fn push(out: &mut Vec<u8>, line: &mut usize, bytes: &[u8]) {
        *line += bytes.iter().filter(|&&c| c == b'\n').count();
        out.extend_from_slice(bytes);
    }
    let s = text.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(s.len());
    let mut unset = Vec::new();
    // Current line of the *output*, which is what the YAML parser reports positions in.
    let mut line = 1usize;
    let mut i = 0usize; // start of the not-yet-copied run of `s`
    let mut j = 0usize;
    while j < s.len() {
        if s[j] == b'$' && j + 1 < s.len() {
            push(&mut out, &mut line, &s[i..j]);
            let (name, w) = shell_name(&s[j + 1..]);
            if name.is_empty() && w > 0 {
                // Bad syntax (`${}` or an unterminated `${`): dropped, as Go does.
            } else if name.is_empty() {
                out.push(b'$');
            } else {
                // `name` is delimited by ASCII bytes, so it is valid UTF-8.
                let name = String::from_utf8_lossy(name).into_owned();
                let value = if name == "PID" {
                    Some(std::process::id().to_string())
                } else {
                    lookup(&name)
                };
                match value {
                    Some(v) => push(&mut out, &mut line, v.as_bytes()),
                    None => unset.push(UnsetVar { name, line }),
                }
            }
            j += w;
            i = j + 1;
        }
        j += 1;
    }
    if i < s.len() {
        out.extend_from_slice(&s[i..]);
    }
    // Only whole UTF-8 sequences were copied or substituted, so this cannot fail.
    let text = String::from_utf8(out)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
    (text, unset)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "A" => Some("alpha".into()),
            "EMPTY" => Some(String::new()),
            "B_2" => Some("bee".into()),
            _ => None,
        }
    }

    fn ex(s: &str) -> String {
        expand(s, &env).0
    }

    #[test]
    fn go_expand_semantics() {
        assert_eq!(ex("x: $A"), "x: alpha");
        assert_eq!(ex("x: ${A}"), "x: alpha");
        assert_eq!(ex("x: ${A}b"), "x: alphab");
        assert_eq!(ex("x: $Ab"), "x: "); // the name is `Ab`
        assert_eq!(ex("x: $B_2/y"), "x: bee/y");
        assert_eq!(ex("$$"), ""); // `$$` is the variable `$`, not an escape
        assert_eq!(ex("a$1b"), "ab");
        assert_eq!(ex("cost: 5$"), "cost: 5$");
        assert_eq!(ex("a $ b"), "a $ b");
        assert_eq!(ex("a$/b"), "a$/b");
        assert_eq!(ex("a${}b"), "ab");
        assert_eq!(ex("a${Ab"), "aAb"); // unterminated `${` is dropped
        assert_eq!(ex("${A:-x}"), ""); // no default syntax: the name is `A:-x`
        assert_eq!(ex("${EMPTY}"), "");
        assert_eq!(ex("p: $PID"), format!("p: {}", std::process::id()));
        assert_eq!(ex("héllo $A wörld"), "héllo alpha wörld");
        assert_eq!(ex("no vars"), "no vars");
    }

    #[test]
    fn records_unset_with_lines() {
        let (_, u) = expand("a: $A\nb: ${NOPE}\n\nc: $EMPTY $ALSO_NOPE\n", &env);
        assert_eq!(
            u,
            vec![
                UnsetVar {
                    name: "NOPE".into(),
                    line: 2
                },
                UnsetVar {
                    name: "ALSO_NOPE".into(),
                    line: 4
                }
            ]
        );
        // Set-but-empty is not "unset".
        let (_, u) = expand("x: $EMPTY", &env);
        assert!(u.is_empty());
    }
}
