//! JSON text ↔ values, as TbJson does with Jackson (insertion-ordered maps,
//! Integer/Long/Double numbers, compact output).

use std::rc::Rc;

use crate::error::{Result, TbelError};
use crate::value::{Value, java_double, java_float};

pub(crate) fn parse(text: &str) -> Result<Value> {
    let mut p = P {
        b: text.as_bytes(),
        i: 0,
        depth: 0,
    };
    p.ws();
    let v = p.value()?;
    p.ws();
    if p.i < p.b.len() {
        return Err(p.fail("Unexpected character"));
    }
    Ok(v)
}

struct P<'a> {
    b: &'a [u8],
    i: usize,
    depth: u32,
}

impl P<'_> {
    fn fail(&self, what: &str) -> TbelError {
        let found = self
            .b
            .get(self.i)
            .map_or("end-of-input".to_string(), |c| format!("'{}'", *c as char));
        TbelError::runtime(format!("{what} ({found}) at position {}", self.i))
    }
    fn ws(&mut self) {
        while self.i < self.b.len() && matches!(self.b[self.i], b' ' | b'\t' | b'\n' | b'\r') {
            self.i += 1;
        }
    }
    fn value(&mut self) -> Result<Value> {
        self.depth += 1;
        if self.depth > 500 {
            return Err(self.fail("JSON nesting too deep"));
        }
        let r = match self.b.get(self.i) {
            Some(b'{') => {
                self.i += 1;
                let mut m = indexmap::IndexMap::new();
                self.ws();
                if self.b.get(self.i) == Some(&b'}') {
                    self.i += 1;
                } else {
                    loop {
                        self.ws();
                        if self.b.get(self.i) != Some(&b'"') {
                            return Err(self.fail("Unexpected character, expected a field name"));
                        }
                        let k = self.string()?;
                        self.ws();
                        if self.b.get(self.i) != Some(&b':') {
                            return Err(self.fail("Unexpected character, expected ':'"));
                        }
                        self.i += 1;
                        self.ws();
                        let v = self.value()?;
                        m.insert(Rc::from(k), v);
                        self.ws();
                        match self.b.get(self.i) {
                            Some(b',') => self.i += 1,
                            Some(b'}') => {
                                self.i += 1;
                                break;
                            }
                            _ => return Err(self.fail("Unexpected character, expected ',' or '}'")),
                        }
                    }
                }
                Value::map(m)
            }
            Some(b'[') => {
                self.i += 1;
                let mut v = Vec::new();
                self.ws();
                if self.b.get(self.i) == Some(&b']') {
                    self.i += 1;
                } else {
                    loop {
                        self.ws();
                        v.push(self.value()?);
                        self.ws();
                        match self.b.get(self.i) {
                            Some(b',') => self.i += 1,
                            Some(b']') => {
                                self.i += 1;
                                break;
                            }
                            _ => return Err(self.fail("Unexpected character, expected ',' or ']'")),
                        }
                    }
                }
                Value::list(v)
            }
            Some(b'"') => Value::string(self.string()?),
            Some(b't') if self.b[self.i..].starts_with(b"true") => {
                self.i += 4;
                Value::Bool(true)
            }
            Some(b'f') if self.b[self.i..].starts_with(b"false") => {
                self.i += 5;
                Value::Bool(false)
            }
            Some(b'n') if self.b[self.i..].starts_with(b"null") => {
                self.i += 4;
                Value::Null
            }
            Some(c) if *c == b'-' || c.is_ascii_digit() => self.number()?,
            _ => return Err(self.fail("Unrecognized token")),
        };
        self.depth -= 1;
        Ok(r)
    }
    fn number(&mut self) -> Result<Value> {
        let st = self.i;
        let mut float = false;
        if self.b[self.i] == b'-' {
            self.i += 1;
        }
        while self.i < self.b.len() {
            match self.b[self.i] {
                b'0'..=b'9' => {}
                b'.' | b'e' | b'E' | b'+' | b'-' => float = true,
                _ => break,
            }
            self.i += 1;
        }
        let t = std::str::from_utf8(&self.b[st..self.i]).unwrap();
        if !float {
            if let Ok(v) = t.parse::<i32>() {
                return Ok(Value::Int(v));
            }
            if let Ok(v) = t.parse::<i64>() {
                return Ok(Value::Long(v));
            }
        }
        t.parse::<f64>()
            .map(Value::Double)
            .map_err(|_| self.fail("Invalid numeric value"))
    }
    fn string(&mut self) -> Result<String> {
        self.i += 1;
        let mut out = Vec::new();
        loop {
            let Some(&c) = self.b.get(self.i) else {
                return Err(self.fail("Unexpected end-of-input in string"));
            };
            self.i += 1;
            match c {
                b'"' => break,
                b'\\' => {
                    let e = *self
                        .b
                        .get(self.i)
                        .ok_or_else(|| self.fail("Unexpected end-of-input"))?;
                    self.i += 1;
                    match e {
                        b'n' => out.push(b'\n'),
                        b't' => out.push(b'\t'),
                        b'r' => out.push(b'\r'),
                        b'b' => out.push(8),
                        b'f' => out.push(12),
                        b'u' => {
                            let h = std::str::from_utf8(
                                self.b.get(self.i..self.i + 4).unwrap_or(b"zzzz"),
                            )
                            .unwrap_or("zzzz");
                            let mut cp = u32::from_str_radix(h, 16)
                                .map_err(|_| self.fail("Invalid unicode escape"))?;
                            self.i += 4;
                            if (0xD800..0xDC00).contains(&cp)
                                && self.b.get(self.i..self.i + 2) == Some(b"\\u")
                            {
                                let h2 = std::str::from_utf8(
                                    &self.b[self.i + 2..(self.i + 6).min(self.b.len())],
                                )
                                .unwrap_or("");
                                if let Ok(lo) = u32::from_str_radix(h2, 16)
                                    && (0xDC00..0xE000).contains(&lo)
                                {
                                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                                    self.i += 6;
                                }
                            }
                            let ch = char::from_u32(cp).unwrap_or('\u{FFFD}');
                            let mut buf = [0u8; 4];
                            out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                        }
                        other => out.push(other),
                    }
                }
                c => out.push(c),
            }
        }
        Ok(String::from_utf8_lossy(&out).into_owned())
    }
}

pub(crate) fn stringify(v: &Value) -> String {
    let mut s = String::new();
    write(v, &mut s, 0);
    s
}

fn write(v: &Value, out: &mut String, depth: usize) {
    if depth > 200 {
        out.push_str("null");
        return;
    }
    match v {
        Value::Null | Value::Undef => out.push_str("null"),
        Value::Str(s) => quote(s, out),
        Value::Char(c) => quote(&c.to_string(), out),
        Value::Double(d) if !d.is_finite() => quote(&java_double(*d), out),
        Value::Float(f) if !f.is_finite() => quote(&java_float(*f), out),
        Value::List(l) | Value::Set(l) => {
            out.push('[');
            for (i, x) in l.borrow().iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write(x, out, depth + 1);
            }
            out.push(']');
        }
        Value::Map(m) => {
            out.push('{');
            for (i, (k, x)) in m.borrow().iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                quote(k, out);
                out.push(':');
                write(x, out, depth + 1);
            }
            out.push('}');
        }
        Value::Entry(e) => {
            out.push('{');
            quote(&e.0.to_java_string(), out);
            out.push(':');
            write(&e.1, out, depth + 1);
            out.push('}');
        }
        Value::Date(d) => out.push_str(&d.borrow().to_string()),
        v => v.write_java(out, depth),
    }
}

fn quote(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}
