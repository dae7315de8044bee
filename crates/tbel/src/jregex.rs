//! Java `Pattern` syntax on top of the `regex` crate, with a small per-thread cache.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use regex::Regex;

use crate::error::{Result, TbelError};

thread_local! {
    static CACHE: RefCell<HashMap<String, Rc<Regex>>> = RefCell::new(HashMap::new());
}

/// Whether `pat` has no regex meta characters (then it matches itself literally).
pub(crate) fn literal(pat: &str) -> Option<String> {
    const META: &[char] = &[
        '\\', '^', '$', '.', '|', '?', '*', '+', '(', ')', '[', ']', '{', '}',
    ];
    if !pat.contains(META) {
        return Some(pat.to_string());
    }
    // A single escaped meta character, e.g. "\\." or "\\|".
    let mut cs = pat.chars();
    if let (Some('\\'), Some(c), None) = (cs.next(), cs.next(), cs.next())
        && META.contains(&c)
    {
        return Some(c.to_string());
    }
    None
}

pub(crate) fn compile(pat: &str) -> Result<Rc<Regex>> {
    if let Some(r) = CACHE.with(|c| c.borrow().get(pat).cloned()) {
        return Ok(r);
    }
    let translated = translate(pat);
    let re = Regex::new(&translated).map_err(|e| {
        TbelError::runtime(format!(
            "PatternSyntaxException: {} near index 0\n{pat}",
            first_line(&e.to_string())
        ))
    })?;
    let re = Rc::new(re);
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.len() > 256 {
            c.clear();
        }
        c.insert(pat.to_string(), re.clone());
    });
    Ok(re)
}

fn first_line(s: &str) -> &str {
    s.lines()
        .rev()
        .find(|l| l.starts_with("error:"))
        .unwrap_or(s.lines().next().unwrap_or(""))
}

/// Java-only constructs rewritten for the regex crate: `\p{javaLowerCase}`-style classes
/// are rare; the common difference is `\Q...\E` quoting and `\h`.
fn translate(pat: &str) -> String {
    let mut out = String::with_capacity(pat.len());
    let mut chars = pat.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('Q') => {
                    let mut lit = String::new();
                    while let Some(d) = chars.next() {
                        if d == '\\' && chars.peek() == Some(&'E') {
                            chars.next();
                            break;
                        }
                        lit.push(d);
                    }
                    out.push_str(&regex::escape(&lit));
                }
                Some('h') => out.push_str(
                    "[ \\t\\xA0\\x{1680}\\x{180e}\\x{2000}-\\x{200a}\\x{202f}\\x{205f}\\x{3000}]",
                ),
                Some('Z') => out.push_str("\\z"),
                Some(d) => {
                    out.push('\\');
                    out.push(d);
                }
                None => out.push_str("\\\\"),
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Java replacement text (`$1`, `${name}`, `\$`) → the regex crate's (`${1}`, `$$`).
pub(crate) fn replacement(rep: &str) -> Result<String> {
    let mut out = String::with_capacity(rep.len() + 4);
    let mut chars = rep.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('$') => out.push_str("$$"),
                Some(d) => out.push(d),
                None => return Err(TbelError::runtime("character to be escaped is missing")),
            },
            '$' => {
                if chars.peek() == Some(&'{') {
                    chars.next();
                    let mut name = String::new();
                    for d in chars.by_ref() {
                        if d == '}' {
                            break;
                        }
                        name.push(d);
                    }
                    out.push_str(&format!("${{{name}}}"));
                } else {
                    let mut num = String::new();
                    while let Some(d) = chars.peek().copied().filter(char::is_ascii_digit) {
                        num.push(d);
                        chars.next();
                    }
                    if num.is_empty() {
                        return Err(TbelError::runtime("Illegal group reference"));
                    }
                    out.push_str(&format!("${{{num}}}"));
                }
            }
            c => out.push(c),
        }
    }
    Ok(out)
}

/// Java `String.split(regex, limit)`.
pub(crate) fn split(s: &str, pat: &str, limit: i32) -> Result<Vec<String>> {
    let mut parts: Vec<String> = if let Some(lit) = literal(pat).filter(|l| !l.is_empty()) {
        if limit > 0 {
            s.splitn(limit as usize, lit.as_str())
                .map(str::to_string)
                .collect()
        } else {
            s.split(lit.as_str()).map(str::to_string).collect()
        }
    } else {
        let re = compile(pat)?;
        let mut v = Vec::new();
        let mut last = 0;
        for m in re.find_iter(s) {
            if limit > 0 && v.len() as i32 == limit - 1 {
                break;
            }
            if m.end() == 0 {
                // A zero-width match at the start yields no leading empty string.
                continue;
            }
            if m.start() == m.end() && m.start() >= s.len() {
                break;
            }
            v.push(s[last..m.start()].to_string());
            last = m.end();
        }
        v.push(s[last..].to_string());
        v
    };
    if s.is_empty() {
        return Ok(vec![String::new()]);
    }
    if limit == 0 {
        while parts.len() > 1 && parts.last().is_some_and(String::is_empty) {
            parts.pop();
        }
        if parts.len() == 1 && parts[0].is_empty() {
            parts.clear();
        }
    }
    Ok(parts)
}
