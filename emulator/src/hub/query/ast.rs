//! The query syntax tree and its printer.
//!
//! Printing gives text the parser reads back into the same tree: `AND`/`OR` groups and `NOT`
//! operands are parenthesised, so precedence never has to be reconstructed, and strings use
//! single quotes with `\\` and `\'` escaped.

use std::fmt;

use serde_json::Number;

/// Words the parser reserves: they cannot start a path.
pub(crate) const KEYWORDS: &[&str] = &[
    "SELECT",
    "FROM",
    "WHERE",
    "AND",
    "OR",
    "NOT",
    "IN",
    "NIN",
    "AS",
    "GROUP",
    "BY",
    "TRUE",
    "FALSE",
    "NULL",
    "COUNT",
    "IS_DEFINED",
    "TOP",
    "DISTINCT",
    "VALUE",
    "ORDER",
    "JOIN",
    "LIKE",
    "BETWEEN",
    "LIMIT",
    "OFFSET",
    "HAVING",
    "EXISTS",
    "UNDEFINED",
];

/// True when `s` is a reserved word (in any letter case).
pub(crate) fn is_keyword(s: &str) -> bool {
    KEYWORDS.iter().any(|k| k.eq_ignore_ascii_case(s))
}

/// A parsed query.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    /// What each result row holds.
    pub select: Select,
    /// The collection queried.
    pub from: Collection,
    /// The `WHERE` condition.
    pub filter: Option<Expr>,
    /// The `GROUP BY` field.
    pub group_by: Option<Path>,
}

/// The select list.
#[derive(Debug, Clone, PartialEq)]
pub enum Select {
    /// `SELECT *`: whole twins.
    All,
    /// `SELECT a, b.c AS x, COUNT() AS n`.
    Columns(Vec<Column>),
}

/// One entry of the select list.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    /// What it holds.
    pub value: ColumnValue,
    /// `AS name`.
    pub alias: Option<String>,
}

/// A projected field or an aggregate.
#[derive(Debug, Clone, PartialEq)]
pub enum ColumnValue {
    /// A field of the twin.
    Path(Path),
    /// `COUNT()`.
    Count,
}

/// The collection after `FROM`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Collection {
    /// `devices`: device twins.
    Devices,
    /// `devices.modules`: module twins.
    Modules,
}

/// A dotted field path such as `properties.reported.battery`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Path(pub Vec<String>);

impl Path {
    /// The last segment: a projected column's default name.
    pub fn last(&self) -> &str {
        self.0.last().map_or("", String::as_str)
    }
}

/// A condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// All of these (two or more).
    And(Vec<Expr>),
    /// Any of these (two or more).
    Or(Vec<Expr>),
    /// The negation.
    Not(Box<Expr>),
    /// `left op right`.
    Compare(Operand, CmpOp, Operand),
    /// `operand IN [..]`, or `NIN` / `NOT IN` when `negated`.
    In {
        /// The tested value.
        operand: Operand,
        /// The candidates.
        list: Vec<Literal>,
        /// `NIN`.
        negated: bool,
    },
    /// `IS_DEFINED(path)`.
    IsDefined(Path),
}

/// One side of a comparison.
#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    /// A field of the twin.
    Path(Path),
    /// A constant.
    Literal(Literal),
}

/// A constant.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    /// `'text'`.
    String(String),
    /// `42`, `-1.5`.
    Number(Number),
    /// `true` / `false`.
    Bool(bool),
    /// `null`.
    Null,
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    /// `=`.
    Eq,
    /// `!=` (also read as `<>`).
    Ne,
    /// `<`.
    Lt,
    /// `>`.
    Gt,
    /// `<=`.
    Le,
    /// `>=`.
    Ge,
}

impl CmpOp {
    /// How the operator is written.
    pub fn as_str(self) -> &'static str {
        match self {
            CmpOp::Eq => "=",
            CmpOp::Ne => "!=",
            CmpOp::Lt => "<",
            CmpOp::Gt => ">",
            CmpOp::Le => "<=",
            CmpOp::Ge => ">=",
        }
    }
}

impl fmt::Display for Query {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SELECT ")?;
        match &self.select {
            Select::All => f.write_str("*")?,
            Select::Columns(cols) => {
                for (i, c) in cols.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    match &c.value {
                        ColumnValue::Path(p) => write!(f, "{p}")?,
                        ColumnValue::Count => f.write_str("COUNT()")?,
                    }
                    if let Some(a) = &c.alias {
                        write!(f, " AS {a}")?;
                    }
                }
            }
        }
        f.write_str(match self.from {
            Collection::Devices => " FROM devices",
            Collection::Modules => " FROM devices.modules",
        })?;
        if let Some(e) = &self.filter {
            write!(f, " WHERE {e}")?;
        }
        if let Some(g) = &self.group_by {
            write!(f, " GROUP BY {g}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("."))
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let group = |f: &mut fmt::Formatter<'_>, items: &[Expr], op: &str| {
            f.write_str("(")?;
            for (i, e) in items.iter().enumerate() {
                if i > 0 {
                    write!(f, " {op} ")?;
                }
                write!(f, "{e}")?;
            }
            f.write_str(")")
        };
        match self {
            Expr::And(items) => group(f, items, "AND"),
            Expr::Or(items) => group(f, items, "OR"),
            Expr::Not(e) => write!(f, "NOT ({e})"),
            Expr::Compare(l, op, r) => write!(f, "{l} {} {r}", op.as_str()),
            Expr::In {
                operand,
                list,
                negated,
            } => {
                write!(f, "{operand} {} [", if *negated { "NIN" } else { "IN" })?;
                for (i, l) in list.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{l}")?;
                }
                f.write_str("]")
            }
            Expr::IsDefined(p) => write!(f, "IS_DEFINED({p})"),
        }
    }
}

impl fmt::Display for Operand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Operand::Path(p) => write!(f, "{p}"),
            Operand::Literal(l) => write!(f, "{l}"),
        }
    }
}

impl fmt::Display for Literal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Literal::String(s) => {
                f.write_str("'")?;
                for c in s.chars() {
                    match c {
                        '\\' => f.write_str("\\\\")?,
                        '\'' => f.write_str("\\'")?,
                        c => write!(f, "{c}")?,
                    }
                }
                f.write_str("'")
            }
            Literal::Number(n) => write!(f, "{n}"),
            Literal::Bool(b) => write!(f, "{b}"),
            Literal::Null => f.write_str("null"),
        }
    }
}
