//! Presentation: an expression with style settings (`:legend`, `:color`, `:axis`, ...).
//! Style words only record settings; the graph API reads them when it draws or lists lines.

use std::collections::BTreeMap;
use std::fmt;

use super::expr::TimeSeriesExpr;
use crate::parser::write_escaped;

/// Atlas's `StyleExpr`: the expression and its settings by key.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct StyleExpr {
    pub expr: TimeSeriesExpr,
    pub settings: BTreeMap<String, String>,
}

impl StyleExpr {
    pub(crate) fn new(expr: TimeSeriesExpr) -> Self {
        StyleExpr {
            expr,
            settings: BTreeMap::new(),
        }
    }

    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.settings.get(key).map(String::as_str)
    }

    pub(crate) fn set(&mut self, key: &str, value: String) {
        self.settings.insert(key.to_string(), value);
    }

    /// Appends a `:decode` or `:s` command to the legend rewrite chain.
    pub(crate) fn push_sed(&mut self, command: String) {
        let sed = match self.settings.remove("sed") {
            Some(old) => format!("{old},{command}"),
            None => command,
        };
        self.settings.insert("sed".to_string(), sed);
    }
}

impl fmt::Display for StyleExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.expr)?;
        // Atlas prints settings in descending key order, so that e.g. a palette comes before
        // an alpha and the pair parses back the same.
        for (key, value) in self.settings.iter().rev() {
            f.write_str(",")?;
            match key.as_str() {
                "sed" => f.write_str(value)?,
                "ls" => write!(f, ":{value}")?,
                "offset" => write!(f, "{value},:offset")?,
                _ => {
                    write_escaped(f, value)?;
                    write!(f, ",:{key}")?;
                }
            }
        }
        Ok(())
    }
}
