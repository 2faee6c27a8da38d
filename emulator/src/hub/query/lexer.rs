//! Splits query text into tokens.
//!
//! Identifiers start with a letter, `_` or `$` and go on with letters, digits, `_` and `$`;
//! keywords are identifiers the parser recognises (case-insensitively). Strings are quoted
//! with `'` or `"` and know the escapes `\\`, `\'`, `\"`, `\n`, `\r`, `\t`. Numbers are JSON
//! numbers. Positions count characters from 1, for error messages.

use serde_json::Number;

use super::QueryError;
use super::ast::CmpOp;

/// One token.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    Ident(String),
    Str(String),
    Num(Number),
    Star,
    Comma,
    Dot,
    LParen,
    RParen,
    LBracket,
    RBracket,
    Cmp(CmpOp),
    End,
}

impl Tok {
    /// How the token reads in an error message.
    pub(crate) fn describe(&self) -> String {
        match self {
            Tok::Ident(s) => format!("'{s}'"),
            Tok::Str(s) => format!("the string '{s}'"),
            Tok::Num(n) => format!("the number {n}"),
            Tok::Star => "'*'".into(),
            Tok::Comma => "','".into(),
            Tok::Dot => "'.'".into(),
            Tok::LParen => "'('".into(),
            Tok::RParen => "')'".into(),
            Tok::LBracket => "'['".into(),
            Tok::RBracket => "']'".into(),
            Tok::Cmp(op) => format!("'{}'", op.as_str()),
            Tok::End => "the end of the query".into(),
        }
    }
}

/// A token and where it starts (character position, from 1).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Token {
    pub tok: Tok,
    pub pos: usize,
}

/// The tokens of `text`, ending with [`Tok::End`].
pub(crate) fn lex(text: &str) -> Result<Vec<Token>, QueryError> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let pos = i + 1;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let single = match c {
            '*' => Some(Tok::Star),
            ',' => Some(Tok::Comma),
            '.' => Some(Tok::Dot),
            '(' => Some(Tok::LParen),
            ')' => Some(Tok::RParen),
            '[' => Some(Tok::LBracket),
            ']' => Some(Tok::RBracket),
            '=' => Some(Tok::Cmp(CmpOp::Eq)),
            _ => None,
        };
        if let Some(tok) = single {
            out.push(Token { tok, pos });
            i += 1;
            continue;
        }
        let next = chars.get(i + 1).copied();
        let two = match (c, next) {
            ('!', Some('=')) | ('<', Some('>')) => Some(CmpOp::Ne),
            ('<', Some('=')) => Some(CmpOp::Le),
            ('>', Some('=')) => Some(CmpOp::Ge),
            _ => None,
        };
        if let Some(op) = two {
            out.push(Token {
                tok: Tok::Cmp(op),
                pos,
            });
            i += 2;
            continue;
        }
        match c {
            '<' | '>' => {
                let op = if c == '<' { CmpOp::Lt } else { CmpOp::Gt };
                out.push(Token {
                    tok: Tok::Cmp(op),
                    pos,
                });
                i += 1;
            }
            '\'' | '"' => {
                let (s, end) = string(&chars, i)?;
                out.push(Token {
                    tok: Tok::Str(s),
                    pos,
                });
                i = end;
            }
            c if c.is_ascii_digit() || (c == '-' && next.is_some_and(|n| n.is_ascii_digit())) => {
                let (n, end) = number(&chars, i)?;
                out.push(Token {
                    tok: Tok::Num(n),
                    pos,
                });
                i = end;
            }
            c if is_ident_start(c) => {
                let start = i;
                while i < chars.len() && is_ident_char(chars[i]) {
                    i += 1;
                }
                out.push(Token {
                    tok: Tok::Ident(chars[start..i].iter().collect()),
                    pos,
                });
            }
            other => {
                return Err(QueryError::at(
                    pos,
                    format!("unexpected character {other:?}"),
                ));
            }
        }
    }
    out.push(Token {
        tok: Tok::End,
        pos: chars.len() + 1,
    });
    Ok(out)
}

/// True for a character that may start an identifier.
pub(crate) fn is_ident_start(c: char) -> bool {
    c.is_alphabetic() || c == '_' || c == '$'
}

/// True for a character that may continue an identifier.
pub(crate) fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '$'
}

fn string(chars: &[char], start: usize) -> Result<(String, usize), QueryError> {
    let quote = chars[start];
    let mut s = String::new();
    let mut i = start + 1;
    while i < chars.len() {
        match chars[i] {
            c if c == quote => return Ok((s, i + 1)),
            '\\' => {
                let escaped = match chars.get(i + 1) {
                    Some('\\') => '\\',
                    Some('\'') => '\'',
                    Some('"') => '"',
                    Some('n') => '\n',
                    Some('r') => '\r',
                    Some('t') => '\t',
                    Some(other) => {
                        return Err(QueryError::at(
                            i + 1,
                            format!("the escape '\\{other}' is not supported in strings"),
                        ));
                    }
                    None => break,
                };
                s.push(escaped);
                i += 2;
            }
            c => {
                s.push(c);
                i += 1;
            }
        }
    }
    Err(QueryError::at(
        start + 1,
        format!("the string starting here has no closing {quote}"),
    ))
}

fn number(chars: &[char], start: usize) -> Result<(Number, usize), QueryError> {
    let mut i = start;
    if chars[i] == '-' {
        i += 1;
    }
    let digits = |i: &mut usize| {
        while *i < chars.len() && chars[*i].is_ascii_digit() {
            *i += 1;
        }
    };
    digits(&mut i);
    if chars.get(i) == Some(&'.') && chars.get(i + 1).is_some_and(char::is_ascii_digit) {
        i += 1;
        digits(&mut i);
    }
    if matches!(chars.get(i), Some('e' | 'E')) {
        let mut j = i + 1;
        if matches!(chars.get(j), Some('+' | '-')) {
            j += 1;
        }
        if chars.get(j).is_some_and(char::is_ascii_digit) {
            i = j;
            digits(&mut i);
        }
    }
    let text: String = chars[start..i].iter().collect();
    let bad = || QueryError::at(start + 1, format!("'{text}' is not a valid number"));
    let unsigned = text.trim_start_matches('-').as_bytes();
    if unsigned.len() > 1 && unsigned[0] == b'0' && unsigned[1].is_ascii_digit() {
        return Err(bad());
    }
    // Integers exactly; everything else through the standard library's correctly rounded
    // float parser, so printed numbers read back bit for bit.
    let n = if let Ok(i) = text.parse::<i64>() {
        Number::from(i)
    } else if let Ok(u) = text.parse::<u64>() {
        Number::from(u)
    } else {
        text.parse::<f64>()
            .ok()
            .and_then(Number::from_f64)
            .ok_or_else(bad)?
    };
    Ok((n, i))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(s: &str) -> Vec<Tok> {
        lex(s).unwrap().into_iter().map(|t| t.tok).collect()
    }

    #[test]
    fn tokens_and_positions() {
        let t = lex("SELECT * FROM devices WHERE tags.a<>'x' AND n >= -1.5e3").unwrap();
        let kinds: Vec<&Tok> = t.iter().map(|t| &t.tok).collect();
        assert_eq!(kinds[1], &Tok::Star);
        assert_eq!(kinds[8], &Tok::Cmp(CmpOp::Ne));
        assert_eq!(kinds[9], &Tok::Str("x".into()));
        assert_eq!(kinds[12], &Tok::Cmp(CmpOp::Ge));
        assert_eq!(kinds[13], &Tok::Num("-1.5e3".parse().unwrap()));
        assert_eq!(t[4].pos, 23, "WHERE starts at character 23");
        assert_eq!(t.last().map(|t| &t.tok), Some(&Tok::End));
    }

    #[test]
    fn strings_and_escapes() {
        assert_eq!(
            toks(r#"'it\'s' "a\"b" 'x\\y'"#)[..3],
            [
                Tok::Str("it's".into()),
                Tok::Str("a\"b".into()),
                Tok::Str("x\\y".into())
            ]
        );
        assert!(lex("'open").unwrap_err().message.contains("no closing"));
        assert!(lex(r"'\q'").unwrap_err().message.contains("escape"));
    }

    #[test]
    fn bad_input_is_named() {
        let e = lex("SELECT * FROM devices WHERE a ~ 1").unwrap_err();
        assert_eq!(e.position, Some(31));
        assert!(e.message.contains('~'));
        assert!(lex("01").is_err());
        assert_eq!(toks("$version"), [Tok::Ident("$version".into()), Tok::End]);
        assert_eq!(
            toks("x<y"),
            [
                Tok::Ident("x".into()),
                Tok::Cmp(CmpOp::Lt),
                Tok::Ident("y".into()),
                Tok::End
            ]
        );
    }
}
