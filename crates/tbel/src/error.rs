//! The one error type of the interpreter.

use std::fmt;

/// What kind of failure stopped a script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The source does not parse, or is too large.
    Compile,
    /// The script raised an error while running (bad argument, unknown method, `raiseError`, ...).
    Runtime,
    /// The script ran past its deadline.
    Timeout,
    /// The script allocated more than its memory budget (`Script memory overflow`).
    Memory,
    /// The script recursed deeper than allowed.
    StackOverflow,
    /// Internal: a null-safe step (`a.?b`) met null and unwinds to its chain, which yields null.
    /// Never returned by [`crate::Script::run`].
    #[doc(hidden)]
    NullSafeStop,
}

/// A compile or run-time error, with the 1-based line and column of the script it points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TbelError {
    /// The class of failure.
    pub kind: ErrorKind,
    /// The message, as ThingsBoard words it where it has a word for it.
    pub message: String,
    /// 1-based line, when known.
    pub line: Option<u32>,
    /// 1-based column, when known.
    pub column: Option<u32>,
}

impl TbelError {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        TbelError {
            kind,
            message: message.into(),
            line: None,
            column: None,
        }
    }
    pub(crate) fn compile(message: impl Into<String>, pos: Pos) -> Self {
        TbelError {
            kind: ErrorKind::Compile,
            message: message.into(),
            line: Some(pos.line),
            column: Some(pos.col),
        }
    }
    pub(crate) fn runtime(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Runtime, message)
    }
    /// Attaches a position unless the error already has one.
    pub(crate) fn at(mut self, pos: Pos) -> Self {
        if self.line.is_none() && pos.line > 0 {
            self.line = Some(pos.line);
            self.column = Some(pos.col);
        }
        self
    }
}

impl fmt::Display for TbelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let (Some(l), Some(c)) = (self.line, self.column) {
            write!(f, " [Line: {l}, Column: {c}]")?;
        }
        Ok(())
    }
}

impl std::error::Error for TbelError {}

/// A position in the source: 1-based line and column (0 = unknown).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    /// 1-based line.
    pub line: u32,
    /// 1-based column (in characters).
    pub col: u32,
}

pub(crate) type Result<T> = std::result::Result<T, TbelError>;
