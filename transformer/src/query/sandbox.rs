//! The SQL sandbox: a transform is exactly one query. Everything else — DDL, DML, COPY, CREATE
//! EXTERNAL TABLE, SET, EXPLAIN — is refused before any data is read. The session it runs in knows
//! no table but `events` and has URL tables disabled, so a query cannot reach any other file.

use datafusion::execution::context::SQLOptions;
use datafusion::sql::parser::{DFParser, Statement};
use datafusion::sql::sqlparser::ast::Statement as SqlStatement;

use crate::error::{Error, Result};

/// Checks that `sql` is exactly one query statement.
pub fn check(sql: &str) -> Result<()> {
    let statements = DFParser::parse_sql(sql).map_err(|e| Error::Sql(crate::error::one_line(&e)))?;
    match statements.len() {
        0 => return Err(Error::Sql("no statement; write one SELECT query over the table `events`".into())),
        1 => {}
        n => return Err(Error::Sql(format!("{n} statements; write exactly one SELECT query"))),
    }
    match &statements[0] {
        Statement::Statement(statement) if matches!(**statement, SqlStatement::Query(_)) => Ok(()),
        other => Err(Error::Sql(format!(
            "only a query is allowed, not `{}`",
            statement_kind(&other.to_string())
        ))),
    }
}

/// The options every transform is planned with: no DDL, no DML, no statements.
pub fn options() -> SQLOptions {
    SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false)
}

fn statement_kind(text: &str) -> String {
    text.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_pass() {
        for sql in [
            "SELECT * FROM events",
            "select id, count(*) from events group by id",
            "WITH latest AS (SELECT * FROM events) SELECT * FROM latest",
            "SELECT 1 UNION ALL SELECT 2",
            "SELECT * FROM events;",
        ] {
            check(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
    }

    #[test]
    fn everything_else_is_refused_with_a_reason() {
        for (sql, expected) in [
            ("", "no statement"),
            ("SELECT 1; SELECT 2", "2 statements"),
            ("CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '/etc/passwd'", "not `CREATE EXTERNAL TABLE`"),
            ("COPY (SELECT 1) TO '/tmp/x.csv'", "not `COPY"),
            ("INSERT INTO events VALUES (1)", "not `INSERT INTO events`"),
            ("DROP TABLE events", "not `DROP TABLE events`"),
            ("SET datafusion.execution.batch_size = 1", "not `SET"),
            ("CREATE TABLE t AS SELECT 1", "not `CREATE TABLE t`"),
            ("EXPLAIN SELECT 1", "not `EXPLAIN SELECT 1`"),
            ("SELEC * FROM events", "invalid transform.sql"),
        ] {
            let message = check(sql).expect_err(sql).to_string();
            assert!(message.contains(expected), "{sql}: {message}");
        }
    }
}
