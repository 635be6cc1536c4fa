//! ARM template expressions: the few that image templates use (`[parameters('x')]`,
//! `[variables('x')]`, `[concat(...)]`, nested), evaluated against a deployment's parameters and
//! variables. Anything else is an error naming the expression, for the caller to place at its path.

use serde_json::{Map, Value};

/// How deep parameters and variables may refer to each other (a cycle stops here).
const MAX_DEPTH: usize = 32;

const NOT_EVALUATED: &str = "kiln cannot evaluate the expression";

/// The parameters and variables an expression can read.
#[derive(Debug, Default)]
pub struct Scope {
    /// Parameter values: the parameters file's `value`, else the template's `defaultValue`.
    pub parameters: Map<String, Value>,
    pub variables: Map<String, Value>,
}

/// Whether a JSON string is an ARM expression (`[...]`; `[[` escapes a literal bracket).
pub fn is_expression(s: &str) -> bool {
    s.starts_with('[') && s.ends_with(']') && !s.starts_with("[[")
}

impl Scope {
    /// `value` with every expression inside it evaluated; `Err` is (JSON path suffix, message)
    /// for each expression that could not be, all at once.
    pub fn resolve(&self, value: &Value, path: &str, errors: &mut Vec<(String, String)>) -> Value {
        self.resolve_at(value, path, errors, 0)
    }

    fn resolve_at(
        &self,
        value: &Value,
        path: &str,
        errors: &mut Vec<(String, String)>,
        depth: usize,
    ) -> Value {
        match value {
            Value::String(s) if is_expression(s) => match self.eval_text(s, depth) {
                Ok(v) => v,
                Err(e) => {
                    errors.push((path.to_string(), e));
                    Value::Null
                }
            },
            Value::String(s) if s.starts_with("[[") => Value::String(s[1..].to_string()),
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| self.resolve_at(v, &format!("{path}[{i}]"), errors, depth))
                    .collect(),
            ),
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| {
                        let at = if path.is_empty() {
                            k.clone()
                        } else {
                            format!("{path}.{k}")
                        };
                        (k.clone(), self.resolve_at(v, &at, errors, depth))
                    })
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    /// Evaluates one `[...]` string.
    fn eval_text(&self, text: &str, depth: usize) -> Result<Value, String> {
        let body = &text[1..text.len() - 1];
        let mut p = Parser {
            s: body.as_bytes(),
            at: 0,
        };
        let expr = p.expr().and_then(|e| {
            p.space();
            if p.at == p.s.len() {
                Ok(e)
            } else {
                Err(format!("unexpected text at character {}", p.at + 1))
            }
        });
        let expr = expr.map_err(|e| format!("cannot read the expression {text}: {e}"))?;
        self.eval(&expr, depth).map_err(|e| {
            // An error from a parameter's or variable's own expression is already whole.
            if e.starts_with(NOT_EVALUATED) || e.starts_with("cannot read") {
                e
            } else {
                format!("{NOT_EVALUATED} {text}: {e}; kiln evaluates parameters(), variables() and concat() only")
            }
        })
    }

    fn eval(&self, e: &Expr, depth: usize) -> Result<Value, String> {
        if depth > MAX_DEPTH {
            return Err("parameters or variables refer to each other in a cycle".into());
        }
        match e {
            Expr::Literal(v) => Ok(v.clone()),
            Expr::Member(field) => Err(format!("property access .{field} is not supported")),
            Expr::Call(name, args) => {
                let known = ["parameters", "variables", "concat"];
                if !known.iter().any(|k| k.eq_ignore_ascii_case(name)) {
                    return Err(format!("the function {name}() is not supported"));
                }
                let values = args
                    .iter()
                    .map(|a| self.eval(a, depth))
                    .collect::<Result<Vec<_>, _>>()?;
                match (name.to_ascii_lowercase().as_str(), values.as_slice()) {
                    ("parameters", [Value::String(n)]) => {
                        let v = self
                            .parameters
                            .get(n)
                            .ok_or_else(|| {
                                format!("no parameter {n:?} has a value: give it in a parameters file (--parameters FILE)")
                            })?;
                        self.resolve_nested(v, depth)
                    }
                    ("variables", [Value::String(n)]) => {
                        let v = self
                            .variables
                            .get(n)
                            .ok_or_else(|| format!("no variable {n:?} is defined"))?;
                        self.resolve_nested(v, depth)
                    }
                    ("concat", vs) if vs.iter().all(Value::is_array) && !vs.is_empty() => {
                        Ok(Value::Array(
                            vs.iter()
                                .flat_map(|v| v.as_array().cloned().unwrap_or_default())
                                .collect(),
                        ))
                    }
                    ("concat", vs) => {
                        let mut out = String::new();
                        for v in vs {
                            match v {
                                Value::String(s) => out.push_str(s),
                                Value::Number(n) => out.push_str(&n.to_string()),
                                Value::Bool(b) => out.push_str(&b.to_string()),
                                other => {
                                    return Err(format!("concat() cannot join {other}"));
                                }
                            }
                        }
                        Ok(Value::String(out))
                    }
                    ("parameters" | "variables", _) => {
                        Err(format!("{name}() takes one string argument"))
                    }
                    _ => Err(format!("the function {name}() is not supported")),
                }
            }
        }
    }

    /// A parameter's or variable's value, which may itself hold expressions.
    fn resolve_nested(&self, v: &Value, depth: usize) -> Result<Value, String> {
        let mut errors = Vec::new();
        let out = self.resolve_at(v, "", &mut errors, depth + 1);
        match errors.into_iter().next() {
            Some((_, e)) => Err(e),
            None => Ok(out),
        }
    }
}

#[derive(Debug)]
enum Expr {
    Literal(Value),
    Call(String, Vec<Expr>),
    /// A property access such as `.location` (never evaluated: named in the error).
    Member(String),
}

struct Parser<'a> {
    s: &'a [u8],
    at: usize,
}

impl Parser<'_> {
    fn space(&mut self) {
        while self.s.get(self.at).is_some_and(u8::is_ascii_whitespace) {
            self.at += 1;
        }
    }

    fn expr(&mut self) -> Result<Expr, String> {
        self.space();
        let mut e = match self.s.get(self.at) {
            Some(b'\'') => self.string()?,
            Some(c) if c.is_ascii_digit() || *c == b'-' => self.number()?,
            Some(c) if c.is_ascii_alphabetic() => {
                let name = self.ident();
                self.space();
                match name.as_str() {
                    "true" => Expr::Literal(Value::Bool(true)),
                    "false" => Expr::Literal(Value::Bool(false)),
                    _ => {
                        if self.s.get(self.at) != Some(&b'(') {
                            return Err(format!("{name} is not a function call"));
                        }
                        self.at += 1;
                        let mut args = Vec::new();
                        self.space();
                        if self.s.get(self.at) == Some(&b')') {
                            self.at += 1;
                        } else {
                            loop {
                                args.push(self.expr()?);
                                self.space();
                                match self.s.get(self.at) {
                                    Some(b',') => self.at += 1,
                                    Some(b')') => {
                                        self.at += 1;
                                        break;
                                    }
                                    _ => return Err(format!("{name}( is not closed")),
                                }
                            }
                        }
                        Expr::Call(name, args)
                    }
                }
            }
            _ => return Err(format!("unexpected text at character {}", self.at + 1)),
        };
        loop {
            self.space();
            match self.s.get(self.at) {
                Some(b'.') => {
                    self.at += 1;
                    let field = self.ident();
                    e = Expr::Member(field);
                }
                Some(b'[') => return Err("indexing with [...] is not supported".into()),
                _ => return Ok(e),
            }
        }
    }

    fn ident(&mut self) -> String {
        let start = self.at;
        while self
            .s
            .get(self.at)
            .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_')
        {
            self.at += 1;
        }
        String::from_utf8_lossy(&self.s[start..self.at]).into_owned()
    }

    fn string(&mut self) -> Result<Expr, String> {
        self.at += 1;
        let mut out = Vec::new();
        loop {
            match self.s.get(self.at) {
                None => return Err("a string is not closed".into()),
                Some(b'\'') if self.s.get(self.at + 1) == Some(&b'\'') => {
                    out.push(b'\'');
                    self.at += 2;
                }
                Some(b'\'') => {
                    self.at += 1;
                    return Ok(Expr::Literal(Value::String(
                        String::from_utf8_lossy(&out).into_owned(),
                    )));
                }
                Some(&c) => {
                    out.push(c);
                    self.at += 1;
                }
            }
        }
    }

    fn number(&mut self) -> Result<Expr, String> {
        let start = self.at;
        self.at += 1;
        while self.s.get(self.at).is_some_and(u8::is_ascii_digit) {
            self.at += 1;
        }
        let text = String::from_utf8_lossy(&self.s[start..self.at]);
        text.parse::<i64>()
            .map(|n| Expr::Literal(Value::from(n)))
            .map_err(|_| format!("{text} is not a number"))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn eval(text: &str) -> Result<Value, String> {
        let scope = Scope {
            parameters: json!({"p": "a", "n": 3, "ref": "[variables('v')]"})
                .as_object()
                .cloned()
                .unwrap(),
            variables:
                json!({"v": "[concat(parameters('p'), '-x')]", "loop": "[variables('loop')]"})
                    .as_object()
                    .cloned()
                    .unwrap(),
        };
        let mut errors = Vec::new();
        let v = scope.resolve(&json!(text), "f", &mut errors);
        match errors.into_iter().next() {
            Some((_, e)) => Err(e),
            None => Ok(v),
        }
    }

    #[test]
    fn expressions() {
        assert_eq!(eval("[parameters('p')]"), Ok(json!("a")));
        assert_eq!(eval("[parameters('ref')]"), Ok(json!("a-x")));
        assert_eq!(
            eval("[concat('it''s ', parameters('n'))]"),
            Ok(json!("it's 3"))
        );
        assert_eq!(eval("[[literal]"), Ok(json!("[literal]")));
        assert_eq!(eval("plain"), Ok(json!("plain")));
        assert!(eval("[uniqueString('x')]")
            .unwrap_err()
            .contains("uniqueString()"));
        assert!(eval("[resourceGroup().location]").is_err());
        assert!(eval("[variables('loop')]").unwrap_err().contains("cycle"));
        assert!(eval("[concat('a']").unwrap_err().contains("not closed"));
    }
}
