//! Source text → tokens.

use crate::error::{Pos, Result, TbelError};

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    Int(i32),
    Long(i64),
    Float(f32),
    Double(f64),
    Str(String),
    Ident(String),
    /// Operators and punctuation.
    P(&'static str),
    Eof,
}

#[derive(Debug, Clone)]
pub(crate) struct Token {
    pub tok: Tok,
    pub pos: Pos,
    /// A line break separates this token from the previous one.
    pub nl_before: bool,
}

// Longest first, so that the greedy match picks `>>>=` before `>>`.
const PUNCTS: &[&str] = &[
    ">>>=", ">>>", "<<=", ">>=", "===", "!==", "==", "!=", "<=", ">=", "&&", "||", "++", "--",
    "+=", "-=", "*=", "/=", "%=", "&=", "|=", "^=", "<<", ">>", ".?", "?.", "::", "(", ")", "{",
    "}", "[", "]", ";", ",", ".", ":", "?", "+", "-", "*", "/", "%", "=", "<", ">", "!", "~", "&",
    "|", "^", "#", "@",
];

pub(crate) fn tokenize(src: &str) -> Result<Vec<Token>> {
    let chars: Vec<char> = src.chars().collect();
    let mut toks = Vec::new();
    let (mut i, mut line, mut col) = (0usize, 1u32, 1u32);
    let mut nl = false;
    macro_rules! adv {
        () => {{
            if chars[i] == '\n' {
                line += 1;
                col = 1;
            } else {
                col += 1;
            }
            i += 1;
        }};
    }
    while i < chars.len() {
        let c = chars[i];
        if c == '\n' {
            nl = true;
            adv!();
            continue;
        }
        if c.is_whitespace() {
            adv!();
            continue;
        }
        if c == '/' && chars.get(i + 1) == Some(&'/') {
            while i < chars.len() && chars[i] != '\n' {
                adv!();
            }
            continue;
        }
        if c == '/' && chars.get(i + 1) == Some(&'*') {
            let start = Pos { line, col };
            adv!();
            adv!();
            loop {
                if i >= chars.len() {
                    return Err(TbelError::compile("unterminated comment", start));
                }
                if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    adv!();
                    adv!();
                    break;
                }
                if chars[i] == '\n' {
                    nl = true;
                }
                adv!();
            }
            continue;
        }
        let pos = Pos { line, col };
        let tok = if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit()))
        {
            let start = i;
            let mut is_float = false;
            if c == '0' && matches!(chars.get(i + 1), Some('x' | 'X')) {
                adv!();
                adv!();
                let hs = i;
                while i < chars.len() && chars[i].is_ascii_hexdigit() {
                    adv!();
                }
                let digits: String = chars[hs..i].iter().collect();
                let long_suffix = matches!(chars.get(i), Some('l' | 'L'));
                if long_suffix {
                    adv!();
                }
                let v = u64::from_str_radix(&digits, 16).map_err(|_| {
                    TbelError::compile(format!("invalid number literal: 0x{digits}"), pos)
                })?;
                if !long_suffix && digits.len() <= 8 {
                    Tok::Int(v as u32 as i32)
                } else {
                    Tok::Long(v as i64)
                }
            } else {
                while i < chars.len() && chars[i].is_ascii_digit() {
                    adv!();
                }
                if i < chars.len()
                    && chars[i] == '.'
                    && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit())
                {
                    is_float = true;
                    adv!();
                    while i < chars.len() && chars[i].is_ascii_digit() {
                        adv!();
                    }
                }
                if i < chars.len()
                    && matches!(chars[i], 'e' | 'E')
                    && (chars.get(i + 1).is_some_and(|d| d.is_ascii_digit())
                        || (matches!(chars.get(i + 1), Some('+' | '-'))
                            && chars.get(i + 2).is_some_and(|d| d.is_ascii_digit())))
                {
                    is_float = true;
                    adv!();
                    adv!();
                    while i < chars.len() && chars[i].is_ascii_digit() {
                        adv!();
                    }
                }
                let text: String = chars[start..i].iter().collect();
                let bad = || TbelError::compile(format!("invalid number literal: {text}"), pos);
                match chars.get(i) {
                    Some('l' | 'L') if !is_float => {
                        adv!();
                        Tok::Long(text.parse().map_err(|_| bad())?)
                    }
                    Some('f' | 'F') => {
                        adv!();
                        Tok::Float(text.parse().map_err(|_| bad())?)
                    }
                    Some('d' | 'D') => {
                        adv!();
                        Tok::Double(text.parse().map_err(|_| bad())?)
                    }
                    _ if is_float => Tok::Double(text.parse().map_err(|_| bad())?),
                    _ => {
                        let v: i128 = text.parse().map_err(|_| bad())?;
                        if let Ok(v) = i32::try_from(v) {
                            Tok::Int(v)
                        } else if let Ok(v) = i64::try_from(v) {
                            Tok::Long(v)
                        } else {
                            Tok::Double(text.parse().map_err(|_| bad())?)
                        }
                    }
                }
            }
        } else if c == '"' || c == '\'' {
            let q = c;
            adv!();
            let mut s = String::new();
            loop {
                if i >= chars.len() {
                    return Err(TbelError::compile("unterminated string literal", pos));
                }
                let ch = chars[i];
                if ch == q {
                    adv!();
                    break;
                }
                if ch == '\\' {
                    adv!();
                    let Some(&e) = chars.get(i) else {
                        return Err(TbelError::compile("unterminated string literal", pos));
                    };
                    adv!();
                    match e {
                        'n' => s.push('\n'),
                        't' => s.push('\t'),
                        'r' => s.push('\r'),
                        'b' => s.push('\u{8}'),
                        'f' => s.push('\u{c}'),
                        '0'..='7' => {
                            let mut v = e.to_digit(8).unwrap();
                            for _ in 0..2 {
                                match chars.get(i).and_then(|d| d.to_digit(8)) {
                                    Some(d) if v * 8 + d < 256 => {
                                        v = v * 8 + d;
                                        adv!();
                                    }
                                    _ => break,
                                }
                            }
                            s.push(char::from_u32(v).unwrap_or('\0'));
                        }
                        'u' => {
                            let hex: String = chars
                                .get(i..i + 4)
                                .map(|h| h.iter().collect())
                                .unwrap_or_default();
                            let v = u32::from_str_radix(&hex, 16)
                                .map_err(|_| TbelError::compile("invalid unicode escape", pos))?;
                            for _ in 0..4 {
                                adv!();
                            }
                            s.push(char::from_u32(v).unwrap_or('\u{FFFD}'));
                        }
                        other => s.push(other),
                    }
                    continue;
                }
                s.push(ch);
                adv!();
            }
            Tok::Str(s)
        } else if c.is_alphabetic() || c == '_' || c == '$' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == '$')
            {
                adv!();
            }
            Tok::Ident(chars[start..i].iter().collect())
        } else {
            let mut found = None;
            for p in PUNCTS {
                let n = p.chars().count();
                if i + n <= chars.len() && chars[i..i + n].iter().copied().eq(p.chars()) {
                    found = Some(*p);
                    break;
                }
            }
            let Some(p) = found else {
                return Err(TbelError::compile(
                    format!("unexpected character '{c}'"),
                    pos,
                ));
            };
            for _ in 0..p.len() {
                adv!();
            }
            Tok::P(p)
        };
        toks.push(Token {
            tok,
            pos,
            nl_before: nl,
        });
        nl = false;
    }
    toks.push(Token {
        tok: Tok::Eof,
        pos: Pos { line, col },
        nl_before: true,
    });
    Ok(toks)
}
