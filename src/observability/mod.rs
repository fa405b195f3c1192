//! Everything that lets an operator see the processes: logs and spans ([`logs`]), span export
//! and trace propagation across the queue ([`traces`]), Prometheus metrics and the consumer's
//! small metrics server ([`metrics`]), and [`Chain`] for logging an error with every cause once.
//!
//! Only mains install anything global ([`logs::init`], [`metrics::install`]); building a
//! service never does, so tests can build many in one process.

pub mod logs;
pub mod metrics;
pub mod traces;

use std::fmt;

/// An error and each of its causes, once, joined by ": " (what `{:#}` prints for anyhow).
pub struct Chain<'a>(pub &'a (dyn std::error::Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn each_cause_once() {
        let e = Outer(std::io::Error::other("inner"));
        assert_eq!(Chain(&e).to_string(), "outer: inner");
    }
}
