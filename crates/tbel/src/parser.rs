//! Tokens → [`Program`], with variables resolved to frame slots.

use std::collections::HashMap;
use std::rc::Rc;

use crate::ast::*;
use crate::error::{Pos, Result, TbelError};
use crate::lexer::{Tok, Token};
use crate::stack::StackGuard;
use crate::value::Value;

/// Classes whose static members scripts may use, by simple name.
pub(crate) const STATIC_CLASSES: &[&str] = &[
    "Math",
    "Integer",
    "Long",
    "Double",
    "Float",
    "Boolean",
    "String",
    "Byte",
    "Short",
    "Character",
    "Arrays",
    "JSON",
    "Date",
    "Number",
    "Collections",
    "StringUtils",
];

const KEYWORDS: &[&str] = &[
    "if",
    "else",
    "for",
    "foreach",
    "while",
    "do",
    "return",
    "break",
    "continue",
    "switch",
    "case",
    "default",
    "function",
    "def",
    "var",
    "new",
    "true",
    "false",
    "null",
    "nil",
    "instanceof",
    "is",
];

fn decl_type(name: &str) -> Option<DeclType> {
    Some(match name {
        "var" | "def" | "Object" | "List" | "Map" | "ArrayList" | "HashMap" | "LinkedHashMap"
        | "Date" | "Set" => DeclType::Any,
        "int" | "Integer" => DeclType::Int,
        "long" | "Long" => DeclType::Long,
        "double" | "Double" => DeclType::Double,
        "float" | "Float" => DeclType::Float,
        "byte" | "Byte" => DeclType::Byte,
        "short" | "Short" => DeclType::Short,
        "boolean" | "Boolean" => DeclType::Bool,
        "String" | "char" | "Character" => DeclType::Str,
        _ => return None,
    })
}

struct Scope {
    names: HashMap<Rc<str>, u32>,
    order: Vec<Rc<str>>,
}

impl Scope {
    fn new() -> Self {
        Scope {
            names: HashMap::new(),
            order: Vec::new(),
        }
    }
    fn get(&self, n: &str) -> Option<u32> {
        self.names.get(n).copied()
    }
    fn declare(&mut self, n: &str) -> u32 {
        if let Some(s) = self.names.get(n) {
            return *s;
        }
        let s = self.order.len() as u32;
        let rc: Rc<str> = n.into();
        self.names.insert(rc.clone(), s);
        self.order.push(rc);
        s
    }
}

pub(crate) struct Parser {
    toks: Vec<Token>,
    i: usize,
    global: Scope,
    /// The scope of the function being parsed, if any.
    local: Option<Scope>,
    func_index: HashMap<String, u32>,
    funcs: Vec<Option<Func>>,
    /// The function being parsed, if any.
    cur_func: Option<u32>,
    /// The scopes of the functions enclosing the one being parsed, outermost first.
    enclosing: Vec<Scope>,
    /// Parsing the value of an inline map entry, outside any parentheses or nested collection.
    in_map_value: bool,
    names: Vec<NameRef>,
    /// For each of `names`, the function it appears in.
    name_func: Vec<Option<u32>>,
    guard: StackGuard,
}

type R<T> = Result<T>;

impl Parser {
    pub(crate) fn parse(toks: Vec<Token>, inputs: &[&str]) -> R<Program> {
        let mut p = Parser {
            toks,
            i: 0,
            global: Scope::new(),
            local: None,
            func_index: HashMap::new(),
            funcs: Vec::new(),
            cur_func: None,
            in_map_value: false,
            enclosing: Vec::new(),
            names: Vec::new(),
            name_func: Vec::new(),
            guard: StackGuard::new(256 * 1024),
        };
        let inputs: Vec<u32> = inputs.iter().map(|n| p.global.declare(n)).collect();
        // Functions may be called before they are defined: learn their names first.
        for k in 0..p.toks.len().saturating_sub(2) {
            if let (Tok::Ident(kw), Tok::Ident(name), Tok::P("(")) =
                (&p.toks[k].tok, &p.toks[k + 1].tok, &p.toks[k + 2].tok)
                && (kw == "function" || kw == "def")
                && !p.func_index.contains_key(name)
            {
                p.func_index.insert(name.clone(), p.funcs.len() as u32);
                p.funcs.push(None);
            }
        }
        let mut body = Vec::new();
        while !p.at_eof() {
            if p.eat("}") {
                return Err(TbelError::compile("unexpected '}'", p.prev_pos()));
            }
            body.push(p.statement()?);
        }
        let funcs = p
            .funcs
            .into_iter()
            .enumerate()
            .map(|(k, f)| {
                f.unwrap_or_else(|| Func {
                    name: format!("#{k}").into(),
                    params: 0,
                    slots: 0,
                    slot_names: vec![],
                    slot_index: HashMap::new(),
                    body: vec![],
                })
            })
            .collect();
        let mut names = p.names;
        for n in &mut names {
            n.global = p.global.get(&n.name);
        }
        Ok(Program {
            body,
            names,
            slots: p.global.order.len() as u32,
            slot_names: p.global.order,
            funcs,
            inputs,
        })
    }

    // ---- token helpers ----
    fn peek(&self) -> &Tok {
        &self.toks[self.i].tok
    }
    fn peek_at(&self, k: usize) -> &Tok {
        &self.toks[(self.i + k).min(self.toks.len() - 1)].tok
    }
    fn pos(&self) -> Pos {
        self.toks[self.i].pos
    }
    fn prev_pos(&self) -> Pos {
        self.toks[self.i.saturating_sub(1)].pos
    }
    fn at_eof(&self) -> bool {
        matches!(self.peek(), Tok::Eof)
    }
    fn is_p(&self, p: &str) -> bool {
        matches!(self.peek(), Tok::P(q) if *q == p)
    }
    fn is_kw(&self, k: &str) -> bool {
        matches!(self.peek(), Tok::Ident(q) if q == k)
    }
    fn eat(&mut self, p: &str) -> bool {
        if self.is_p(p) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn eat_kw(&mut self, k: &str) -> bool {
        if self.is_kw(k) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn expect(&mut self, p: &str) -> R<()> {
        if self.eat(p) {
            Ok(())
        } else {
            Err(self.unexpected(&format!("expected '{p}'")))
        }
    }
    fn unexpected(&self, what: &str) -> TbelError {
        let found = match self.peek() {
            Tok::Eof => "end of script".to_string(),
            Tok::P(p) => format!("'{p}'"),
            Tok::Ident(s) => format!("'{s}'"),
            Tok::Str(s) => format!("\"{s}\""),
            t => format!("{t:?}"),
        };
        TbelError::compile(format!("{what}, found {found}"), self.pos())
    }
    fn ident(&mut self) -> R<String> {
        match self.peek().clone() {
            Tok::Ident(s) => {
                self.i += 1;
                Ok(s)
            }
            _ => Err(self.unexpected("expected a name")),
        }
    }
    fn check_depth(&self) -> R<()> {
        if self.guard.exceeded() {
            return Err(TbelError::compile(
                "script is nested too deeply",
                self.pos(),
            ));
        }
        Ok(())
    }

    // ---- scopes ----
    fn declare(&mut self, name: &str) -> u32 {
        match &mut self.local {
            Some(l) => l.declare(name),
            None => self.global.declare(name),
        }
    }
    /// A variable being read. A slot of the current scope is bound now; any other name is
    /// resolved when it is read ([`Expr::Name`]): MVEL looks names up at run time through its
    /// chain of resolver factories, so a function sees a top-level variable assigned after the
    /// function's definition, and its callers' variables, and a loop sees a variable assigned
    /// later in its own body.
    fn lookup(&mut self, name: &str, pos: Pos) -> Expr {
        let bound = match &self.local {
            Some(l) => l.get(name),
            None => self.global.get(name),
        };
        match bound {
            Some(s) => Expr::Local(s),
            None => Expr::Name(self.name_ref(name), pos),
        }
    }
    fn name_ref(&mut self, name: &str) -> u32 {
        self.names.push(NameRef { name: name.into(), local: None, global: None });
        self.name_func.push(self.cur_func);
        (self.names.len() - 1) as u32
    }
    /// A variable being assigned without `var`. At the top level: a top-level variable. In a
    /// function: a name the top level had declared when the function was defined is written
    /// through the chain (as MVEL's `Function` makes such names inputs); any other name becomes
    /// a variable of the function's own.
    fn assign_target(&mut self, name: &str) -> Target {
        if let Some(l) = &mut self.local {
            if let Some(s) = l.get(name) {
                return Target::Local(s);
            }
            if self.global.get(name).is_some() || self.enclosing.iter().any(|s| s.get(name).is_some()) {
                return Target::Name(self.name_ref(name));
            }
            return Target::Local(l.declare(name));
        }
        Target::Local(self.global.declare(name))
    }

    // ---- statements ----
    fn block_or_stmt(&mut self) -> R<Stmt> {
        if self.is_p("{") {
            self.i += 1;
            let mut v = Vec::new();
            while !self.eat("}") {
                if self.at_eof() {
                    return Err(self.unexpected("expected '}'"));
                }
                v.push(self.statement()?);
            }
            Ok(Stmt::Block(v))
        } else {
            self.statement()
        }
    }

    fn end_stmt(&mut self) -> R<()> {
        if self.eat(";") || self.is_p("}") || self.at_eof() || self.toks[self.i].nl_before {
            Ok(())
        } else {
            Err(self.unexpected("expected ';'"))
        }
    }

    fn statement(&mut self) -> R<Stmt> {
        self.check_depth()?;
        let pos = self.pos();
        if self.eat(";") {
            return Ok(Stmt::Empty);
        }
        if self.is_p("{") {
            // A block, unless it is a map literal used as an expression statement.
            if !self.looks_like_map() {
                return self.block_or_stmt();
            }
        }
        if let Tok::Ident(kw) = self.peek().clone() {
            match kw.as_str() {
                "if" => {
                    self.i += 1;
                    let mut branches = Vec::new();
                    let mut otherwise = None;
                    loop {
                        self.expect("(")?;
                        let c = self.expr()?;
                        self.expect(")")?;
                        branches.push((c, self.block_or_stmt()?));
                        if !self.eat_kw("else") {
                            break;
                        }
                        if !self.eat_kw("if") {
                            otherwise = Some(Box::new(self.block_or_stmt()?));
                            break;
                        }
                    }
                    return Ok(Stmt::If(branches, otherwise));
                }
                "while" => {
                    self.i += 1;
                    self.expect("(")?;
                    let c = self.expr()?;
                    self.expect(")")?;
                    let b = self.block_or_stmt()?;
                    return Ok(Stmt::While(c, Box::new(b)));
                }
                "do" => {
                    self.i += 1;
                    let b = self.block_or_stmt()?;
                    if !self.eat_kw("while") {
                        return Err(self.unexpected("expected 'while'"));
                    }
                    self.expect("(")?;
                    let c = self.expr()?;
                    self.expect(")")?;
                    self.eat(";");
                    return Ok(Stmt::DoWhile(Box::new(b), c));
                }
                "for" | "foreach" => {
                    self.i += 1;
                    return self.for_stmt(pos, kw == "foreach");
                }
                "return" => {
                    self.i += 1;
                    if self.eat(";") || self.is_p("}") || self.at_eof() {
                        return Ok(Stmt::Return(None));
                    }
                    let e = self.expr()?;
                    self.end_stmt()?;
                    return Ok(Stmt::Return(Some(e)));
                }
                "break" => {
                    self.i += 1;
                    self.end_stmt()?;
                    return Ok(Stmt::Break);
                }
                "continue" => {
                    self.i += 1;
                    self.end_stmt()?;
                    return Ok(Stmt::Continue);
                }
                "switch" => {
                    self.i += 1;
                    return self.switch_stmt();
                }
                "function" | "def"
                    if matches!(self.peek_at(1), Tok::Ident(_))
                        && matches!(self.peek_at(2), Tok::P("(")) =>
                {
                    self.i += 1;
                    return self.function();
                }
                _ => {}
            }
            if let Some(s) = self.try_decl()? {
                self.end_stmt()?;
                return Ok(s);
            }
        }
        let e = self.expr()?;
        self.end_stmt()?;
        Ok(Stmt::Expr(e))
    }

    /// `var x = 1, y`, `int x = 5`, `String[] a = ...`; None when the tokens are no declaration.
    fn try_decl(&mut self) -> R<Option<Stmt>> {
        let Tok::Ident(ty) = self.peek().clone() else {
            return Ok(None);
        };
        let Some(dt) = decl_type(&ty) else {
            return Ok(None);
        };
        let mut k = 1;
        let mut array = false;
        while matches!(self.peek_at(k), Tok::P("[")) && matches!(self.peek_at(k + 1), Tok::P("]")) {
            k += 2;
            array = true;
        }
        let Tok::Ident(name) = self.peek_at(k).clone() else {
            return Ok(None);
        };
        if KEYWORDS.contains(&name.as_str()) && name != "var" {
            return Ok(None);
        }
        let dt = if array { DeclType::Any } else { dt };
        self.i += k + 1;
        let mut decls = Vec::new();
        let mut name = name;
        loop {
            let pos = self.prev_pos();
            let init = if self.eat("=") {
                Some(self.expr()?)
            } else {
                None
            };
            let slot = self.declare(&name);
            decls.push(Stmt::Decl(slot, dt, init, pos));
            if !self.eat(",") {
                break;
            }
            name = self.ident()?;
        }
        Ok(Some(if decls.len() == 1 {
            decls.pop().unwrap()
        } else {
            Stmt::Block(decls)
        }))
    }

    fn for_stmt(&mut self, pos: Pos, foreach: bool) -> R<Stmt> {
        self.expect("(")?;
        // foreach form: `(x : coll)`, `(var x : coll)`, `(Type x : coll)`.
        let mut k = 0;
        if let Tok::Ident(t) = self.peek()
            && decl_type(t).is_some()
            && matches!(self.peek_at(1), Tok::Ident(_))
        {
            k = 1;
        }
        if let (Tok::Ident(name), Tok::P(":")) =
            (self.peek_at(k).clone(), self.peek_at(k + 1).clone())
        {
            self.i += k + 2;
            let coll = self.expr()?;
            self.expect(")")?;
            let slot = self.declare(&name);
            let body = self.block_or_stmt()?;
            return Ok(Stmt::Foreach {
                slot,
                coll,
                body: Box::new(body),
                pos,
            });
        }
        if foreach {
            return Err(self.unexpected("expected 'name : collection'"));
        }
        let mut init = Vec::new();
        if !self.eat(";") {
            if let Some(d) = self.try_decl()? {
                init.push(d);
            } else {
                init.push(Stmt::Expr(self.expr()?));
                while self.eat(",") {
                    init.push(Stmt::Expr(self.expr()?));
                }
            }
            self.expect(";")?;
        }
        let cond = if self.is_p(";") {
            None
        } else {
            Some(self.expr()?)
        };
        self.expect(";")?;
        let mut update = Vec::new();
        if !self.is_p(")") {
            update.push(self.expr()?);
            while self.eat(",") {
                update.push(self.expr()?);
            }
        }
        self.expect(")")?;
        let body = self.block_or_stmt()?;
        Ok(Stmt::For {
            init,
            cond,
            update,
            body: Box::new(body),
        })
    }

    fn switch_stmt(&mut self) -> R<Stmt> {
        self.expect("(")?;
        let subject = self.expr()?;
        self.expect(")")?;
        self.expect("{")?;
        let mut cases: Vec<(Option<Expr>, Vec<Stmt>)> = Vec::new();
        while !self.eat("}") {
            if self.eat_kw("case") {
                let e = self.ternary()?;
                self.expect(":")?;
                cases.push((Some(e), Vec::new()));
            } else if self.eat_kw("default") {
                self.expect(":")?;
                cases.push((None, Vec::new()));
            } else if self.at_eof() {
                return Err(self.unexpected("expected '}'"));
            } else {
                let s = self.statement()?;
                match cases.last_mut() {
                    Some(c) => c.1.push(s),
                    None => return Err(self.unexpected("expected 'case'")),
                }
            }
        }
        Ok(Stmt::Switch { subject, cases })
    }

    fn function(&mut self) -> R<Stmt> {
        let name = self.ident()?;
        let mut idx = self.func_index[&name];
        let redefinition = self.funcs[idx as usize].is_some();
        if redefinition {
            // Function.getReducedValueAccelerated returns the instance already defined under
            // that name (its duplicate-function error is commented out): the first definition
            // stays. The later one is parsed, into a slot nothing calls.
            idx = self.funcs.len() as u32;
            self.funcs.push(None);
        }
        self.expect("(")?;
        let mut scope = Scope::new();
        let mut params = 0;
        if !self.eat(")") {
            loop {
                let mut p = self.ident()?;
                if decl_type(&p).is_some() && matches!(self.peek(), Tok::Ident(_)) {
                    p = self.ident()?;
                }
                scope.declare(&p);
                params += 1;
                if self.eat(")") {
                    break;
                }
                self.expect(",")?;
            }
        }
        // A function defined inside another (Function.java declares it in the function's
        // parser context) is parsed like any other; the enclosing function's variables are
        // found through the resolver chain when it runs, since the enclosing function calls it.
        let enclosing = self.local.replace(scope);
        let enclosing_func = self.cur_func.replace(idx);
        if let Some(outer) = enclosing {
            self.enclosing.push(outer);
        }
        let body = self.block_or_stmt();
        self.cur_func = enclosing_func;
        let scope = self.local.take().unwrap();
        if enclosing_func.is_some() {
            self.local = self.enclosing.pop();
        }
        for (n, f) in self.names.iter_mut().zip(&self.name_func) {
            if *f == Some(idx) {
                n.local = scope.get(&n.name);
            }
        }
        let body = match body? {
            Stmt::Block(v) => v,
            s => vec![s],
        };
        self.funcs[idx as usize] = Some(Func {
            name: name.into(),
            params,
            slots: scope.order.len() as u32,
            slot_index: scope.names,
            slot_names: scope.order,
            body,
        });
        Ok(if redefinition { Stmt::Empty } else { Stmt::FuncDef(idx) })
    }

    /// After `{`: is this a map literal (`{}`, `{a: 1}`, `{"a": 1}`)?
    fn looks_like_map(&self) -> bool {
        matches!(self.peek_at(1), Tok::P("}"))
            || (matches!(
                self.peek_at(1),
                Tok::Ident(_) | Tok::Str(_) | Tok::Int(_) | Tok::Long(_)
            ) && matches!(self.peek_at(2), Tok::P(":")))
    }

    // ---- expressions ----
    pub(crate) fn expr(&mut self) -> R<Expr> {
        self.check_depth()?;
        let lhs = self.ternary()?;
        let op = match self.peek() {
            Tok::P("=") => None,
            Tok::P("+=") => Some(BinOp::Add),
            Tok::P("-=") => Some(BinOp::Sub),
            Tok::P("*=") => Some(BinOp::Mul),
            Tok::P("/=") => Some(BinOp::Div),
            Tok::P("%=") => Some(BinOp::Rem),
            Tok::P("&=") => Some(BinOp::BitAnd),
            Tok::P("|=") => Some(BinOp::BitOr),
            Tok::P("^=") => Some(BinOp::BitXor),
            Tok::P("<<=") => Some(BinOp::Shl),
            Tok::P(">>=") => Some(BinOp::Shr),
            Tok::P(">>>=") => Some(BinOp::UShr),
            _ => return Ok(lhs),
        };
        let pos = self.pos();
        self.i += 1;
        let target = self.make_target(lhs, pos)?;
        let rhs = self.expr()?;
        Ok(Expr::Assign(Box::new(target), op, Box::new(rhs), pos))
    }

    fn make_target(&mut self, e: Expr, pos: Pos) -> R<Target> {
        Ok(match e {
            Expr::NullSafeChain(_) => {
                return Err(TbelError::compile("null-safe navigation cannot be assigned to", pos));
            }
            Expr::Local(s) => Target::Local(s),
            Expr::Name(id, _) => {
                let name = self.names[id as usize].name.clone();
                self.assign_target(&name)
            }
            Expr::Prop { obj, name, .. } => Target::Prop(*obj, name),
            Expr::Index { obj, index, .. } => Target::Index(*obj, *index),
            _ => return Err(TbelError::compile("invalid assignment target", pos)),
        })
    }

    fn ternary(&mut self) -> R<Expr> {
        let c = self.binary(0)?;
        if self.eat("?") {
            let a = self.expr()?;
            if self.in_map_value && self.is_p(":") {
                // Cut at its `:` by MVEL's collection parser (see `map_entries`): no else.
                return Ok(Expr::Ternary(Box::new(c), Box::new(a), Box::new(Expr::Const(Value::Null))));
            }
            self.expect(":")?;
            let b = self.expr()?;
            return Ok(Expr::Ternary(Box::new(c), Box::new(a), Box::new(b)));
        }
        Ok(c)
    }

    fn binop(&self) -> Option<(u8, &'static str)> {
        let Tok::P(p) = self.peek() else {
            if self.is_kw("instanceof") || self.is_kw("is") {
                return Some((7, "instanceof"));
            }
            return None;
        };
        let prec = match *p {
            "||" => 1,
            "&&" => 2,
            "|" => 3,
            "^" => 4,
            "&" => 5,
            "==" | "!=" | "===" | "!==" => 6,
            "<" | ">" | "<=" | ">=" => 7,
            "<<" | ">>" | ">>>" => 8,
            "+" | "-" => 9,
            "*" | "/" | "%" => 10,
            _ => return None,
        };
        Some((prec, p))
    }

    fn binary(&mut self, min: u8) -> R<Expr> {
        self.check_depth()?;
        let mut lhs = self.unary()?;
        while let Some((prec, op)) = self.binop() {
            if prec <= min {
                break;
            }
            let pos = self.pos();
            self.i += 1;
            if op == "instanceof" {
                let mut ty = self.ident()?;
                while self.eat(".") {
                    ty = self.ident()?;
                }
                lhs = Expr::InstanceOf(Box::new(lhs), ty.into());
                continue;
            }
            let rhs = self.binary(prec)?;
            lhs = match op {
                "||" => Expr::Or(Box::new(lhs), Box::new(rhs)),
                "&&" => Expr::And(Box::new(lhs), Box::new(rhs)),
                _ => {
                    let b = match op {
                        "|" => BinOp::BitOr,
                        "^" => BinOp::BitXor,
                        "&" => BinOp::BitAnd,
                        "==" => BinOp::Eq,
                        "!=" => BinOp::Ne,
                        "===" => BinOp::StrictEq,
                        "!==" => BinOp::StrictNe,
                        "<" => BinOp::Lt,
                        ">" => BinOp::Gt,
                        "<=" => BinOp::Le,
                        ">=" => BinOp::Ge,
                        "<<" => BinOp::Shl,
                        ">>" => BinOp::Shr,
                        ">>>" => BinOp::UShr,
                        "+" => BinOp::Add,
                        "-" => BinOp::Sub,
                        "*" => BinOp::Mul,
                        "/" => BinOp::Div,
                        _ => BinOp::Rem,
                    };
                    // CompilerTools.boOptimize: Integer operands known at compile time get
                    // Java int arithmetic; everything else is decided at run time.
                    let b = match b.int_optimized() {
                        Some(int_op) if integer_at_compile_time(&lhs) && integer_at_compile_time(&rhs) => int_op,
                        _ => b,
                    };
                    fold(Expr::Binary(b, Box::new(lhs), Box::new(rhs), pos))
                }
            };
        }
        Ok(lhs)
    }

    fn unary(&mut self) -> R<Expr> {
        self.check_depth()?;
        let pos = self.pos();
        let op = match self.peek() {
            Tok::P("-") => UnOp::Neg,
            Tok::P("+") => UnOp::Plus,
            Tok::P("!") => UnOp::Not,
            Tok::P("~") => UnOp::BitNot,
            Tok::P("++") | Tok::P("--") => {
                let inc = self.is_p("++");
                self.i += 1;
                let e = self.unary()?;
                let target = self.make_target(e, pos)?;
                return Ok(Expr::IncDec {
                    target: Box::new(target),
                    inc,
                    prefix: true,
                    pos,
                });
            }
            Tok::P("(") => {
                // Cast: `(int) x`, `(double) (a + b)`.
                if let (Tok::Ident(t), Tok::P(")")) =
                    (self.peek_at(1).clone(), self.peek_at(2).clone())
                    && let Some(dt) = decl_type(&t)
                    && t != "var"
                    && t != "def"
                    && matches!(
                        self.peek_at(3),
                        Tok::Ident(_)
                            | Tok::P("(")
                            | Tok::Int(_)
                            | Tok::Long(_)
                            | Tok::Double(_)
                            | Tok::Float(_)
                            | Tok::Str(_)
                            | Tok::P("-")
                    )
                {
                    self.i += 3;
                    let e = self.unary()?;
                    return Ok(Expr::Cast(dt, Box::new(e), pos));
                }
                return self.postfix();
            }
            _ => return self.postfix(),
        };
        self.i += 1;
        let e = self.unary()?;
        Ok(fold(Expr::Unary(op, Box::new(e), pos)))
    }

    fn args(&mut self) -> R<Vec<Expr>> {
        let saved = std::mem::replace(&mut self.in_map_value, false);
        let r = self.args_inner();
        self.in_map_value = saved;
        r
    }

    fn args_inner(&mut self) -> R<Vec<Expr>> {
        let mut v = Vec::new();
        if self.eat(")") {
            return Ok(v);
        }
        loop {
            v.push(self.expr()?);
            if self.eat(")") {
                return Ok(v);
            }
            self.expect(",")?;
        }
    }

    /// A primary expression and its chain of `.name`, `.name(args)`, `[index]`, `++`/`--`.
    /// A chain with a null-safe step (`a.?b.c()`) is wrapped in [`Expr::NullSafeChain`]: as in
    /// MVEL's property accessor, a null at that step makes the whole rest of the chain null.
    fn postfix(&mut self) -> R<Expr> {
        let mut e = self.primary()?;
        let mut any_null_safe = false;
        loop {
            let pos = self.pos();
            if self.is_p(".") || self.is_p(".?") || self.is_p("?.") {
                let null_safe = !self.is_p(".");
                any_null_safe |= null_safe;
                self.i += 1;
                let name: Rc<str> = self.ident()?.into();
                if self.eat("(") {
                    let args = self.args()?;
                    e = Expr::Method {
                        obj: Box::new(e),
                        name,
                        args,
                        null_safe,
                        pos,
                    };
                } else {
                    e = Expr::Prop {
                        obj: Box::new(e),
                        name,
                        null_safe,
                        pos,
                    };
                }
            } else if self.is_p("[") && !self.toks[self.i].nl_before {
                self.i += 1;
                let saved = std::mem::replace(&mut self.in_map_value, false);
                let idx = self.expr();
                self.in_map_value = saved;
                let idx = idx?;
                self.expect("]")?;
                e = Expr::Index {
                    obj: Box::new(e),
                    index: Box::new(idx),
                    pos,
                };
            } else if (self.is_p("++") || self.is_p("--")) && !self.toks[self.i].nl_before {
                let inc = self.is_p("++");
                self.i += 1;
                let target = self.make_target(e, pos)?;
                e = Expr::IncDec {
                    target: Box::new(target),
                    inc,
                    prefix: false,
                    pos,
                };
            } else if any_null_safe {
                return Ok(Expr::NullSafeChain(Box::new(e)));
            } else {
                return Ok(e);
            }
        }
    }

    fn primary(&mut self) -> R<Expr> {
        self.check_depth()?;
        let pos = self.pos();
        let t = self.peek().clone();
        self.i += 1;
        Ok(match t {
            Tok::Int(v) => Expr::Const(Value::Int(v)),
            Tok::Long(v) => Expr::Const(Value::Long(v)),
            Tok::Float(v) => Expr::Const(Value::Float(v)),
            Tok::Double(v) => Expr::Const(Value::Double(v)),
            Tok::Str(s) => Expr::Const(Value::str(&s)),
            Tok::P("(") => {
                let saved = std::mem::replace(&mut self.in_map_value, false);
                let e = self.expr();
                self.in_map_value = saved;
                let e = e?;
                self.expect(")")?;
                e
            }
            Tok::P("[") => self.list_literal()?,
            Tok::P("{") => self.brace_literal()?,
            Tok::Ident(name) => return self.ident_expr(name, pos),
            _ => {
                self.i -= 1;
                return Err(self.unexpected("expected an expression"));
            }
        })
    }

    fn map_key(&mut self) -> R<Rc<str>> {
        let t = self.peek().clone();
        self.i += 1;
        Ok(match t {
            Tok::Ident(s) | Tok::Str(s) => s.into(),
            Tok::Int(v) => v.to_string().into(),
            Tok::Long(v) => v.to_string().into(),
            _ => {
                self.i -= 1;
                return Err(self.unexpected("expected a map key"));
            }
        })
    }

    /// Entries of an inline map. MVEL's CollectionParser splits them on characters: every `:`
    /// outside parentheses, quotes and nested collections makes the text before it the current
    /// key, every `,` puts the text before it under that key. So a ternary at the top of a value
    /// (`k: c ? a : b`) is cut at its `:`: `c ? a` becomes the key of `b` and `k` is dropped, as
    /// ThingsBoard does with published converters that write this.
    fn map_entries(&mut self, close: &str) -> R<Expr> {
        let mut entries = Vec::new();
        if self.eat(close) {
            return Ok(Expr::Map(entries));
        }
        loop {
            let mut k = MapKey::Name(self.map_key()?);
            self.expect(":")?;
            let saved = std::mem::replace(&mut self.in_map_value, true);
            let mut v = self.expr();
            while v.is_ok() && self.eat(":") {
                k = MapKey::Computed(v?);
                v = self.expr();
            }
            self.in_map_value = saved;
            entries.push((k, v?));
            if self.eat(close) {
                return Ok(Expr::Map(entries));
            }
            self.expect(",")?;
            if self.eat(close) {
                return Ok(Expr::Map(entries));
            }
        }
    }

    fn list_items(&mut self, close: &str) -> R<Expr> {
        let saved = std::mem::replace(&mut self.in_map_value, false);
        let r = self.list_items_inner(close);
        self.in_map_value = saved;
        r
    }

    fn list_items_inner(&mut self, close: &str) -> R<Expr> {
        let mut items = Vec::new();
        if self.eat(close) {
            return Ok(Expr::List(items));
        }
        loop {
            items.push(self.expr()?);
            if self.eat(close) {
                return Ok(Expr::List(items));
            }
            self.expect(",")?;
            if self.eat(close) {
                return Ok(Expr::List(items));
            }
        }
    }

    fn list_literal(&mut self) -> R<Expr> {
        if self.is_p(":") && matches!(self.peek_at(1), Tok::P("]")) {
            self.i += 2;
            return Ok(Expr::Map(vec![]));
        }
        if matches!(self.peek(), Tok::Ident(_) | Tok::Str(_) | Tok::Int(_))
            && matches!(self.peek_at(1), Tok::P(":"))
        {
            return self.map_entries("]");
        }
        self.list_items("]")
    }

    fn brace_literal(&mut self) -> R<Expr> {
        if self.is_p("}")
            || (matches!(
                self.peek(),
                Tok::Ident(_) | Tok::Str(_) | Tok::Int(_) | Tok::Long(_)
            ) && matches!(self.peek_at(1), Tok::P(":")))
        {
            return self.map_entries("}");
        }
        self.list_items("}")
    }

    fn ident_expr(&mut self, name: String, pos: Pos) -> R<Expr> {
        match name.as_str() {
            "true" => return Ok(Expr::Const(Value::Bool(true))),
            "false" => return Ok(Expr::Const(Value::Bool(false))),
            "null" | "nil" => return Ok(Expr::Const(Value::Null)),
            "new" => return self.new_expr(pos),
            _ => {}
        }
        // Fully qualified class names: java.util.Arrays, java.lang.Math, ...
        if name == "java" && self.is_p(".") {
            let mut path = vec![name.clone()];
            while self.is_p(".") {
                if let Tok::Ident(seg) = self.peek_at(1).clone() {
                    self.i += 2;
                    let upper = seg.chars().next().is_some_and(|c| c.is_uppercase());
                    path.push(seg);
                    if upper {
                        break;
                    }
                } else {
                    break;
                }
            }
            let full = path.join(".");
            let simple = path.last().unwrap().clone();
            let allowed = matches!(
                full.as_str(),
                "java.lang.Math"
                    | "java.lang.Integer"
                    | "java.lang.Long"
                    | "java.lang.Double"
                    | "java.lang.Float"
                    | "java.lang.Boolean"
                    | "java.lang.String"
                    | "java.lang.Byte"
                    | "java.lang.Short"
                    | "java.lang.Character"
                    | "java.util.Arrays"
                    | "java.util.Collections"
            );
            if !allowed {
                return Err(TbelError::compile(
                    format!("unresolvable property or identifier: {full}"),
                    pos,
                ));
            }
            return self.static_member(&simple, pos);
        }
        let is_var = self.local.as_ref().is_some_and(|l| l.get(&name).is_some())
            || self.global.get(&name).is_some();
        if !is_var && self.is_p("(") {
            self.i += 1;
            let args = self.args()?;
            if let Some(&f) = self.func_index.get(&name) {
                return Ok(Expr::Call { func: f, args, pos, helper_may_exist: std::cell::Cell::new(true) });
            }
            return Ok(Expr::Helper {
                name: name.into(),
                args,
                pos,
            });
        }
        if !is_var && self.is_p(".") && STATIC_CLASSES.contains(&name.as_str()) {
            return self.static_member(&name, pos);
        }
        Ok(self.lookup(&name, pos))
    }

    fn static_member(&mut self, class: &str, pos: Pos) -> R<Expr> {
        let class: &'static str = STATIC_CLASSES
            .iter()
            .find(|c| **c == class)
            .copied()
            .unwrap_or("");
        if class.is_empty() {
            return Err(TbelError::compile("unresolvable class", pos));
        }
        self.expect(".")?;
        let member: Rc<str> = self.ident()?.into();
        let args = if self.eat("(") {
            Some(self.args()?)
        } else {
            None
        };
        Ok(Expr::Static {
            class,
            member,
            args,
            pos,
        })
    }

    fn new_expr(&mut self, pos: Pos) -> R<Expr> {
        let mut class = self.ident()?;
        while self.eat(".") {
            class = self.ident()?;
        }
        // Generic arguments: new ArrayList<>() / new HashMap<String, Object>()
        if self.is_p("<") {
            let mut depth = 0;
            loop {
                match self.peek() {
                    Tok::P("<") => depth += 1,
                    Tok::P(">") => depth -= 1,
                    Tok::P(">>") => depth -= 2,
                    Tok::Eof => return Err(self.unexpected("expected '>'")),
                    _ => {}
                }
                self.i += 1;
                if depth <= 0 {
                    break;
                }
            }
        }
        if self.eat("[") {
            let elem = decl_type(&class).unwrap_or(DeclType::Any);
            if self.eat("]") {
                // new int[]{1, 2, 3}
                self.expect("{")?;
                let items = self.list_items("}")?;
                return Ok(match items {
                    Expr::List(v) => {
                        Expr::List(v.into_iter().map(|e| cast_expr(elem, e, pos)).collect())
                    }
                    e => e,
                });
            }
            let size = self.expr()?;
            self.expect("]")?;
            return Ok(Expr::NewArray {
                elem,
                size: Box::new(size),
                pos,
            });
        }
        self.expect("(")?;
        let args = self.args()?;
        Ok(Expr::New {
            class: class.into(),
            args,
            pos,
        })
    }
}

fn cast_expr(dt: DeclType, e: Expr, pos: Pos) -> Expr {
    if dt == DeclType::Any {
        e
    } else {
        Expr::Cast(dt, Box::new(e), pos)
    }
}

/// Constant folding for negative literals (so `-2147483648` stays an int).
/// Whether MVEL's compiler knows `e` as an Integer (its egress type): an int literal
/// (ASTNode.setName types only numeric literals), an Int* node, a bitwise operation
/// (CompilerTools.getReturnTypeFromOp types `& | ^ << >> >>>` as Integer whatever the operands),
/// or `+ - * / %` of two Integers (getReturnTypeFromOp: the wider operand type). Names, calls,
/// properties and elements have no egress type at compile time.
fn integer_at_compile_time(e: &Expr) -> bool {
    match e {
        Expr::Const(Value::Int(_)) => true,
        Expr::Binary(op, a, b, _) => match op {
            BinOp::IntAdd | BinOp::IntSub | BinOp::IntMul | BinOp::IntDiv => true,
            BinOp::BitAnd | BinOp::BitOr | BinOp::BitXor | BinOp::Shl | BinOp::Shr | BinOp::UShr => true,
            BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div | BinOp::Rem => {
                integer_at_compile_time(a) && integer_at_compile_time(b)
            }
            _ => false,
        },
        _ => false,
    }
}

fn fold(e: Expr) -> Expr {
    match e {
        Expr::Unary(UnOp::Neg, inner, pos) => match *inner {
            Expr::Const(Value::Int(v)) => Expr::Const(Value::Int(v.wrapping_neg())),
            Expr::Const(Value::Long(v)) => {
                if v == 2147483648 {
                    Expr::Const(Value::Int(i32::MIN))
                } else {
                    Expr::Const(Value::Long(v.wrapping_neg()))
                }
            }
            Expr::Const(Value::Double(v)) => Expr::Const(Value::Double(-v)),
            Expr::Const(Value::Float(v)) => Expr::Const(Value::Float(-v)),
            other => Expr::Unary(UnOp::Neg, Box::new(other), pos),
        },
        e => e,
    }
}
