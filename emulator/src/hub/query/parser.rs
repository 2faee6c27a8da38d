//! Recursive-descent parser for the query subset.
//!
//! ```text
//! query    := SELECT select FROM collection [WHERE or] [GROUP BY path]
//! select   := '*' | column {',' column}
//! column   := (COUNT '(' ')' | path) [AS ident]
//! collection := devices | devices '.' modules
//! or       := and {OR and}
//! and      := unary {AND unary}
//! unary    := NOT unary | primary
//! primary  := '(' or ')' | IS_DEFINED '(' path ')'
//!           | operand (cmp operand | IN list | NIN list | NOT IN list)
//! operand  := path | string | number | true | false | null
//! list     := '[' [literal {',' literal}] ']'
//! path     := ident {'.' ident}
//! ```
//!
//! Keywords, function names and the collection name are case-insensitive. Anything else (other
//! functions, `TOP`, `ORDER BY`, `JOIN`, `devices.jobs`, ...) is refused with a message that
//! names it. Nesting (parentheses and `NOT`) is limited so hostile input cannot exhaust the
//! stack; `AND`/`OR` chains are flat lists, so their length costs no depth.

use super::QueryError;
use super::ast::{
    Collection, Column, ColumnValue, Expr, Literal, Operand, Path, Query, Select, is_keyword,
};
use super::lexer::{Tok, Token, lex};

/// Deepest nesting of parentheses and `NOT`.
pub const MAX_NESTING: usize = 32;

/// Parses and checks a query.
pub fn parse(text: &str) -> Result<Query, QueryError> {
    let mut p = Parser {
        toks: lex(text)?,
        i: 0,
        depth: 0,
    };
    let q = p.query()?;
    check(&q)?;
    Ok(q)
}

struct Parser {
    toks: Vec<Token>,
    i: usize,
    depth: usize,
}

const BRACKETS: &str =
    "bracket paths such as tags['name'] or indexes such as a[0] are not supported; use tags.name";

/// Clauses and words outside the subset, with what to say about them.
const UNSUPPORTED: &[(&str, &str)] = &[
    (
        "TOP",
        "TOP is not supported; use x-ms-max-item-count for the page size",
    ),
    ("DISTINCT", "SELECT DISTINCT is not supported"),
    ("VALUE", "SELECT VALUE is not supported"),
    (
        "ORDER",
        "ORDER BY is not supported; results come in device id order",
    ),
    ("JOIN", "JOIN is not supported"),
    ("LIKE", "LIKE is not supported"),
    ("BETWEEN", "BETWEEN is not supported; use >= and <="),
    (
        "LIMIT",
        "LIMIT is not supported; use x-ms-max-item-count for the page size",
    ),
    (
        "OFFSET",
        "OFFSET is not supported; use the continuation token",
    ),
    ("HAVING", "HAVING is not supported"),
    ("EXISTS", "EXISTS is not supported; use IS_DEFINED(path)"),
    (
        "UNDEFINED",
        "the literal undefined is not supported; use IS_DEFINED(path)",
    ),
];

impl Parser {
    fn peek(&self) -> &Token {
        // `lex` always ends with `End`, and `bump` never moves past it.
        &self.toks[self.i.min(self.toks.len() - 1)]
    }

    fn peek_at(&self, ahead: usize) -> &Tok {
        &self.toks[(self.i + ahead).min(self.toks.len() - 1)].tok
    }

    fn bump(&mut self) -> Token {
        let t = self.peek().clone();
        if t.tok != Tok::End {
            self.i += 1;
        }
        t
    }

    fn is_kw(&self, kw: &str) -> bool {
        matches!(&self.peek().tok, Tok::Ident(s) if s.eq_ignore_ascii_case(kw))
    }

    fn eat_kw(&mut self, kw: &str) -> bool {
        let yes = self.is_kw(kw);
        if yes {
            self.i += 1;
        }
        yes
    }

    /// An error at the current token: what was expected, or what is not supported.
    fn unexpected(&self, expected: &str) -> QueryError {
        let t = self.peek();
        if let Tok::Ident(s) = &t.tok
            && let Some((_, why)) = UNSUPPORTED.iter().find(|(k, _)| k.eq_ignore_ascii_case(s))
        {
            return QueryError::unsupported(t.pos, (*why).to_owned());
        }
        QueryError::at(
            t.pos,
            format!("expected {expected}, found {}", t.tok.describe()),
        )
    }

    fn expect(&mut self, tok: Tok, what: &str) -> Result<(), QueryError> {
        if self.peek().tok == tok {
            self.bump();
            Ok(())
        } else {
            Err(self.unexpected(what))
        }
    }

    fn expect_kw(&mut self, kw: &str) -> Result<(), QueryError> {
        if self.eat_kw(kw) {
            Ok(())
        } else {
            Err(self.unexpected(kw))
        }
    }

    fn query(&mut self) -> Result<Query, QueryError> {
        self.expect_kw("SELECT")?;
        let select = if self.peek().tok == Tok::Star {
            self.bump();
            Select::All
        } else {
            let mut cols = vec![self.column()?];
            while self.peek().tok == Tok::Comma {
                self.bump();
                cols.push(self.column()?);
            }
            Select::Columns(cols)
        };
        self.expect_kw("FROM")?;
        let from = self.collection()?;
        let filter = if self.eat_kw("WHERE") {
            Some(self.or()?)
        } else {
            None
        };
        let group_by = if self.eat_kw("GROUP") {
            self.expect_kw("BY")?;
            Some(self.path()?)
        } else {
            None
        };
        if self.peek().tok != Tok::End {
            let what = if filter.is_none() && group_by.is_none() {
                "WHERE, GROUP BY or the end of the query"
            } else {
                "the end of the query"
            };
            return Err(self.unexpected(what));
        }
        Ok(Query {
            select,
            from,
            filter,
            group_by,
        })
    }

    fn column(&mut self) -> Result<Column, QueryError> {
        let start = self.peek().pos;
        let value = if let Tok::Ident(name) = &self.peek().tok
            && *self.peek_at(1) == Tok::LParen
        {
            let name = name.clone();
            if !name.eq_ignore_ascii_case("COUNT") {
                return Err(QueryError::unsupported(
                    start,
                    format!("the function {name}() is not supported in SELECT; only COUNT() is"),
                ));
            }
            self.bump();
            self.bump();
            self.expect(Tok::RParen, "')' (COUNT takes no arguments)")?;
            ColumnValue::Count
        } else {
            ColumnValue::Path(self.path()?)
        };
        let alias = if self.eat_kw("AS") {
            match self.bump() {
                Token {
                    tok: Tok::Ident(a), ..
                } if !is_keyword(&a) => Some(a),
                t => {
                    return Err(QueryError::at(
                        t.pos,
                        format!("expected a name after AS, found {}", t.tok.describe()),
                    ));
                }
            }
        } else {
            None
        };
        Ok(Column { value, alias })
    }

    fn collection(&mut self) -> Result<Collection, QueryError> {
        let t = self.bump();
        match &t.tok {
            Tok::Ident(s) if s.eq_ignore_ascii_case("devices") => {}
            _ => {
                return Err(QueryError::at(
                    t.pos,
                    format!(
                        "expected devices or devices.modules after FROM, found {}",
                        t.tok.describe()
                    ),
                ));
            }
        }
        if self.peek().tok != Tok::Dot {
            return Ok(Collection::Devices);
        }
        self.bump();
        let t = self.bump();
        match &t.tok {
            Tok::Ident(s) if s.eq_ignore_ascii_case("modules") => Ok(Collection::Modules),
            Tok::Ident(s) => Err(QueryError::unsupported(
                t.pos,
                format!("queries on devices.{s} are not supported; use devices or devices.modules"),
            )),
            other => Err(QueryError::at(
                t.pos,
                format!(
                    "expected modules after 'devices.', found {}",
                    other.describe()
                ),
            )),
        }
    }

    fn path(&mut self) -> Result<Path, QueryError> {
        let t = self.peek().clone();
        let first = match &t.tok {
            Tok::Ident(s) if !is_keyword(s) => s.clone(),
            _ => return Err(self.unexpected("a field such as deviceId or tags.name")),
        };
        self.bump();
        let mut segs = vec![first];
        while self.peek().tok == Tok::Dot {
            self.bump();
            match self.bump() {
                Token {
                    tok: Tok::Ident(s), ..
                } => segs.push(s),
                Token {
                    tok: Tok::LBracket,
                    pos,
                } => {
                    return Err(QueryError::unsupported(pos, BRACKETS.into()));
                }
                other => {
                    return Err(QueryError::at(
                        other.pos,
                        format!(
                            "expected a field name after '.', found {}",
                            other.tok.describe()
                        ),
                    ));
                }
            }
        }
        if self.peek().tok == Tok::LBracket {
            return Err(QueryError::unsupported(self.peek().pos, BRACKETS.into()));
        }
        Ok(Path(segs))
    }

    fn nest(&mut self) -> Result<(), QueryError> {
        self.depth += 1;
        if self.depth > MAX_NESTING {
            return Err(QueryError::at(
                self.peek().pos,
                format!("the condition is nested more than {MAX_NESTING} levels deep"),
            ));
        }
        Ok(())
    }

    fn or(&mut self) -> Result<Expr, QueryError> {
        let mut items = vec![self.and()?];
        while self.eat_kw("OR") {
            items.push(self.and()?);
        }
        Ok(if items.len() == 1 {
            items.remove(0)
        } else {
            Expr::Or(items)
        })
    }

    fn and(&mut self) -> Result<Expr, QueryError> {
        let mut items = vec![self.unary()?];
        while self.eat_kw("AND") {
            items.push(self.unary()?);
        }
        Ok(if items.len() == 1 {
            items.remove(0)
        } else {
            Expr::And(items)
        })
    }

    fn unary(&mut self) -> Result<Expr, QueryError> {
        if self.eat_kw("NOT") {
            self.nest()?;
            let e = self.unary()?;
            self.depth -= 1;
            return Ok(Expr::Not(Box::new(e)));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Expr, QueryError> {
        if self.peek().tok == Tok::LParen {
            self.bump();
            self.nest()?;
            let e = self.or()?;
            self.depth -= 1;
            self.expect(Tok::RParen, "')'")?;
            return Ok(e);
        }
        if let Tok::Ident(name) = &self.peek().tok
            && *self.peek_at(1) == Tok::LParen
        {
            let (name, pos) = (name.clone(), self.peek().pos);
            if !name.eq_ignore_ascii_case("IS_DEFINED") {
                return Err(QueryError::unsupported(
                    pos,
                    format!(
                        "the function {name}() is not supported; the emulator's conditions support IS_DEFINED(path)"
                    ),
                ));
            }
            self.bump();
            self.bump();
            let p = self.path()?;
            self.expect(Tok::RParen, "')'")?;
            return Ok(Expr::IsDefined(p));
        }
        let left = self.operand()?;
        let t = self.peek().clone();
        match &t.tok {
            Tok::Cmp(op) => {
                let op = *op;
                self.bump();
                let right = self.operand()?;
                Ok(Expr::Compare(left, op, right))
            }
            Tok::Ident(s) if s.eq_ignore_ascii_case("IN") || s.eq_ignore_ascii_case("NIN") => {
                let negated = s.eq_ignore_ascii_case("NIN");
                self.bump();
                Ok(Expr::In {
                    operand: left,
                    list: self.list()?,
                    negated,
                })
            }
            Tok::Ident(s) if s.eq_ignore_ascii_case("NOT") && self.peek_at_kw(1, "IN") => {
                self.bump();
                self.bump();
                Ok(Expr::In {
                    operand: left,
                    list: self.list()?,
                    negated: true,
                })
            }
            _ => Err(self.unexpected("a comparison (=, !=, <>, <, >, <=, >=), IN or NIN")),
        }
    }

    fn peek_at_kw(&self, ahead: usize, kw: &str) -> bool {
        matches!(self.peek_at(ahead), Tok::Ident(s) if s.eq_ignore_ascii_case(kw))
    }

    fn operand(&mut self) -> Result<Operand, QueryError> {
        if let Some(l) = self.literal() {
            return Ok(Operand::Literal(l));
        }
        Ok(Operand::Path(self.path()?))
    }

    fn literal(&mut self) -> Option<Literal> {
        let l = match &self.peek().tok {
            Tok::Str(s) => Literal::String(s.clone()),
            Tok::Num(n) => Literal::Number(n.clone()),
            Tok::Ident(s) if s.eq_ignore_ascii_case("true") => Literal::Bool(true),
            Tok::Ident(s) if s.eq_ignore_ascii_case("false") => Literal::Bool(false),
            Tok::Ident(s) if s.eq_ignore_ascii_case("null") => Literal::Null,
            _ => return None,
        };
        self.bump();
        Some(l)
    }

    fn list(&mut self) -> Result<Vec<Literal>, QueryError> {
        if self.peek().tok != Tok::LBracket {
            if self.peek().tok == Tok::LParen {
                return Err(QueryError::at(
                    self.peek().pos,
                    "IN takes a list in square brackets: IN ['a', 'b']".into(),
                ));
            }
            return Err(self.unexpected("'[' starting the list"));
        }
        self.bump();
        let mut items = Vec::new();
        if self.peek().tok == Tok::RBracket {
            self.bump();
            return Ok(items);
        }
        loop {
            match self.literal() {
                Some(l) => items.push(l),
                None => {
                    return Err(self.unexpected("a constant (string, number, true, false, null)"));
                }
            }
            match self.bump() {
                Token {
                    tok: Tok::Comma, ..
                } => {}
                Token {
                    tok: Tok::RBracket, ..
                } => return Ok(items),
                t => {
                    return Err(QueryError::at(
                        t.pos,
                        format!(
                            "expected ',' or ']' in the list, found {}",
                            t.tok.describe()
                        ),
                    ));
                }
            }
        }
    }
}

/// Rules on the query as a whole: what may be grouped and projected together.
fn check(q: &Query) -> Result<(), QueryError> {
    let Select::Columns(cols) = &q.select else {
        if q.group_by.is_some() {
            return Err(QueryError::general(
                "GROUP BY needs a select list such as SELECT field, COUNT() AS n".into(),
            ));
        }
        return Ok(());
    };
    let has_count = cols.iter().any(|c| c.value == ColumnValue::Count);
    for c in cols {
        if let ColumnValue::Path(p) = &c.value {
            match &q.group_by {
                Some(g) if !super::eval::same_field(p, g) => {
                    return Err(QueryError::general(format!(
                        "'{p}' is neither COUNT() nor the GROUP BY field '{g}'"
                    )));
                }
                None if has_count => {
                    return Err(QueryError::general(format!(
                        "'{p}' cannot be selected next to COUNT() without GROUP BY {p}"
                    )));
                }
                _ => {}
            }
        }
    }
    let mut names = std::collections::HashSet::new();
    for c in cols {
        let name = output_name(c);
        if !names.insert(name.to_owned()) {
            return Err(QueryError::general(format!(
                "two columns are named '{name}'; give one a different name with AS"
            )));
        }
    }
    Ok(())
}

/// The key a column gets in a result row: its alias, the path's last segment, or `$1` for an
/// unnamed `COUNT()` (the document-query convention).
pub(crate) fn output_name(c: &Column) -> &str {
    match (&c.alias, &c.value) {
        (Some(a), _) => a,
        (None, ColumnValue::Path(p)) => p.last(),
        (None, ColumnValue::Count) => "$1",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Path {
        Path(s.split('.').map(str::to_owned).collect())
    }

    #[test]
    fn the_documented_queries_parse() {
        for q in [
            "SELECT * FROM devices",
            "select * from Devices where tags.location.region = 'US'",
            "SELECT * FROM devices WHERE tags.location.region = 'US' AND properties.reported.connectivity IN ['wired', 'wifi']",
            "SELECT * FROM devices WHERE NOT (status = 'disabled') OR connectionState <> 'Connected'",
            "SELECT * FROM devices WHERE is_defined(properties.reported.x) AND capabilities.iotEdge = true",
            "SELECT deviceId, tags.x AS x2 FROM devices WHERE properties.desired.$version >= 2",
            "SELECT COUNT() AS numberOfDevices FROM devices",
            "SELECT properties.reported.telemetryConfig.status AS status, COUNT() AS numberOfDevices FROM devices GROUP BY properties.reported.telemetryConfig.status",
            "SELECT * FROM devices.modules WHERE moduleId = 'm1'",
            "SELECT * FROM devices WHERE deviceId NIN ['a', \"b\"] AND tags.n NOT IN [1, 2.5, -3, null, false]",
        ] {
            parse(q).unwrap_or_else(|e| panic!("{q}: {e:?}"));
        }
    }

    #[test]
    fn precedence_and_shape() {
        let q = parse("SELECT * FROM devices WHERE a = 1 OR b = 2 AND NOT c = 3").unwrap();
        let Some(Expr::Or(items)) = q.filter else {
            panic!("OR at the top")
        };
        assert!(matches!(&items[1], Expr::And(v) if matches!(v[1], Expr::Not(_))));
        parse("SELECT deviceId AS id, COUNT() AS n FROM devices GROUP BY DeviceId").unwrap();
        assert!(parse("SELECT tags.b, COUNT() AS n FROM devices GROUP BY tags.a").is_err());
        let q = parse("SELECT tags.a AS a, COUNT() AS n FROM devices GROUP BY tags.a").unwrap();
        assert_eq!(q.group_by, Some(p("tags.a")));
    }

    #[test]
    fn unsupported_parts_are_named() {
        for (q, needle) in [
            ("SELECT TOP 5 * FROM devices", "TOP"),
            ("SELECT * FROM devices ORDER BY deviceId", "ORDER BY"),
            ("SELECT * FROM devices.jobs", "devices.jobs"),
            (
                "SELECT * FROM devices WHERE STARTSWITH(deviceId, 'a')",
                "STARTSWITH",
            ),
            ("SELECT MAX(tags.x) FROM devices", "MAX"),
            ("SELECT * FROM devices WHERE tags['a b'] = 1", "bracket"),
            ("SELECT * FROM devices WHERE a IN ('x')", "square brackets"),
            ("SELECT * FROM devices WHERE a BETWEEN 1 AND 2", "BETWEEN"),
            ("SELECT * FROM twins", "devices"),
            ("SELECT *, deviceId FROM devices", "expected FROM"),
            (
                "SELECT * FROM devices WHERE a = 1 b",
                "the end of the query",
            ),
            ("SELECT deviceId, COUNT() AS n FROM devices", "GROUP BY"),
            ("SELECT * FROM devices GROUP BY tags.a", "GROUP BY needs"),
            (
                "SELECT tags.a, properties.desired.a FROM devices",
                "named 'a'",
            ),
            ("SELECT * FROM devices WHERE", "field"),
            ("DELETE FROM devices", "SELECT"),
        ] {
            let e = parse(q).unwrap_err();
            assert!(e.message.contains(needle), "{q}: {}", e.message);
        }
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = format!(
            "SELECT * FROM devices WHERE {}a = 1{}",
            "(".repeat(MAX_NESTING + 1),
            ")".repeat(MAX_NESTING + 1)
        );
        assert!(parse(&deep).unwrap_err().message.contains("nested"));
        let nots = format!(
            "SELECT * FROM devices WHERE {} a = 1",
            "NOT ".repeat(10_000)
        );
        assert!(parse(&nots).is_err());
        let ok = format!(
            "SELECT * FROM devices WHERE {}a = 1{}",
            "(".repeat(MAX_NESTING),
            ")".repeat(MAX_NESTING)
        );
        parse(&ok).unwrap();
        // Long flat chains cost no depth.
        let long = format!(
            "SELECT * FROM devices WHERE {}",
            vec!["a = 1"; 5000].join(" AND ")
        );
        parse(&long).unwrap();
    }
}
