//! The syntax tree the parser builds once and the interpreter walks many times.
//! Variables are already resolved to slots.

use std::collections::HashMap;
use std::rc::Rc;

use crate::error::Pos;
use crate::value::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
    Shl,
    Shr,
    UShr,
    BitAnd,
    BitOr,
    BitXor,
    Eq,
    Ne,
    StrictEq,
    StrictNe,
    Lt,
    Le,
    Gt,
    Ge,
    /// `+ - * /` whose operands are both Integer when the script is compiled (int literals and
    /// such operations of them): MVEL's `IntAdd`/`IntSub`/`IntMult`/`IntDiv` nodes
    /// (CompilerTools.boOptimize), plain Java int arithmetic (`7 / 2` is 3). Any other operands
    /// go through MathProcessor at run time, where int / int is a double division.
    IntAdd,
    IntSub,
    IntMul,
    IntDiv,
}

impl BinOp {
    /// The compile-time Integer form of `+ - * /`.
    pub(crate) fn int_optimized(self) -> Option<BinOp> {
        Some(match self {
            BinOp::Add => BinOp::IntAdd,
            BinOp::Sub => BinOp::IntSub,
            BinOp::Mul => BinOp::IntMul,
            BinOp::Div => BinOp::IntDiv,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UnOp {
    Neg,
    Plus,
    Not,
    BitNot,
}

/// Declared type of a typed declaration (`int x = ...`), for the conversion MVEL applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DeclType {
    Any,
    Int,
    Long,
    Double,
    Float,
    Byte,
    Short,
    Bool,
    Str,
}

#[derive(Debug)]
pub(crate) enum Expr {
    Const(Value),
    /// Slot in the current frame.
    Local(u32),
    /// A variable resolved when it is read, as MVEL resolves names through its chain of
    /// variable-resolver factories: the function's own slot, then the callers' frames (innermost
    /// first), then the top level. Index into [`Program::names`].
    Name(u32, Pos),
    /// Stops the whole chain with `null` when a step marked null-safe (`a.?b`) yields null.
    NullSafeChain(Box<Expr>),
    List(Vec<Expr>),
    Map(Vec<(MapKey, Expr)>),
    Unary(UnOp, Box<Expr>, Pos),
    Binary(BinOp, Box<Expr>, Box<Expr>, Pos),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Ternary(Box<Expr>, Box<Expr>, Box<Expr>),
    Assign(Box<Target>, Option<BinOp>, Box<Expr>, Pos),
    IncDec {
        target: Box<Target>,
        inc: bool,
        prefix: bool,
        pos: Pos,
    },
    Prop {
        obj: Box<Expr>,
        name: Rc<str>,
        null_safe: bool,
        pos: Pos,
    },
    Index {
        obj: Box<Expr>,
        index: Box<Expr>,
        pos: Pos,
    },
    Method {
        obj: Box<Expr>,
        name: Rc<str>,
        args: Vec<Expr>,
        null_safe: bool,
        pos: Pos,
    },
    /// Call of a function defined in the script. Until its definition has run, a ThingsBoard
    /// helper of that name is called instead, if there is one: MVEL resolves a call by name
    /// through the variable factories, where ThingsBoard's helpers are imports and a script's
    /// function exists only once its definition has run (ast/Function.java). `helper_may_exist`
    /// is cleared the first time the helper turns out not to exist.
    Call {
        func: u32,
        args: Vec<Expr>,
        pos: Pos,
        helper_may_exist: std::cell::Cell<bool>,
    },
    /// Call of a ThingsBoard helper (`parseBytesToInt(...)`), by name.
    Helper {
        name: Rc<str>,
        args: Vec<Expr>,
        pos: Pos,
    },
    /// `Class.member` or `Class.method(args)` of an allowed class.
    Static {
        class: &'static str,
        member: Rc<str>,
        args: Option<Vec<Expr>>,
        pos: Pos,
    },
    /// `new Class(args)`.
    New {
        class: Rc<str>,
        args: Vec<Expr>,
        pos: Pos,
    },
    /// `new int[n]`, `new byte[n]`.
    NewArray {
        elem: DeclType,
        size: Box<Expr>,
        pos: Pos,
    },
    /// `x instanceof Type`, `x is Type`.
    InstanceOf(Box<Expr>, Rc<str>),
    /// Typed conversion `(int) x`.
    Cast(DeclType, Box<Expr>, Pos),
}

/// The key of an inline map entry.
#[derive(Debug)]
pub(crate) enum MapKey {
    /// `name:`, `"name":`, `1:`.
    Name(Rc<str>),
    /// An expression MVEL's character-level CollectionParser took as a key: in
    /// `{k: c ? a : b}` the text between the two colons, `c ? a`, is a key whose value is `b`.
    Computed(Expr),
}

#[derive(Debug)]
pub(crate) enum Target {
    Local(u32),
    /// A variable the enclosing scope knew when the function was defined: written where the
    /// dynamic chain finds it (a caller's frame, else the top level). Index into [`Program::names`].
    Name(u32),
    Prop(Expr, Rc<str>),
    Index(Expr, Expr),
}

#[derive(Debug)]
pub(crate) enum Stmt {
    Expr(Expr),
    /// `var x = e` / `int x = e` (a declaration without value sets null).
    Decl(u32, DeclType, Option<Expr>, Pos),
    /// `if (c) s else if (c2) s2 ... else e`: the branches of an else-if chain side by side, so
    /// a long chain costs no recursion in the parser or the evaluator.
    If(Vec<(Expr, Stmt)>, Option<Box<Stmt>>),
    While(Expr, Box<Stmt>),
    DoWhile(Box<Stmt>, Expr),
    For {
        init: Vec<Stmt>,
        cond: Option<Expr>,
        update: Vec<Expr>,
        body: Box<Stmt>,
    },
    Foreach {
        slot: u32,
        coll: Expr,
        body: Box<Stmt>,
        pos: Pos,
    },
    Block(Vec<Stmt>),
    Return(Option<Expr>),
    /// A function's definition (index into [`Program::funcs`]): from here on, its name means
    /// this function rather than a helper of the same name.
    FuncDef(u32),
    Break,
    Continue,
    Switch {
        subject: Expr,
        cases: Vec<(Option<Expr>, Vec<Stmt>)>,
    },
    Empty,
}

#[derive(Debug)]
pub(crate) struct Func {
    pub name: Rc<str>,
    pub params: u32,
    pub slots: u32,
    pub slot_names: Vec<Rc<str>>,
    /// Slot by name, for functions it calls that read its variables (MVEL's dynamic scoping).
    pub slot_index: HashMap<Rc<str>, u32>,
    pub body: Vec<Stmt>,
}

/// A name read (or written) where it cannot be bound to one slot at parse time.
#[derive(Debug)]
pub(crate) struct NameRef {
    pub name: Rc<str>,
    /// The slot of that name in the function where it appears, if the function has one.
    pub local: Option<u32>,
    /// The top-level slot of that name, if the top level has one.
    pub global: Option<u32>,
}

#[derive(Debug)]
pub(crate) struct Program {
    pub body: Vec<Stmt>,
    pub slots: u32,
    pub slot_names: Vec<Rc<str>>,
    pub funcs: Vec<Func>,
    /// The names of every [`Expr::Name`] and [`Target::Name`].
    pub names: Vec<NameRef>,
    /// Slots of the declared inputs (`payload`, `metadata`), in order.
    pub inputs: Vec<u32>,
}
