//! The tree-walking evaluator.

use std::rc::Rc;
use std::time::Instant;

use crate::ast::*;
use crate::error::{ErrorKind, Pos, Result, TbelError};
use crate::ops;
use crate::stack::StackGuard;
use crate::value::{Value, truthy};

pub(crate) enum Flow {
    Normal,
    Break,
    Continue,
    Return(Value),
}

/// Steps between two looks at the clock.
const CLOCK_EVERY: u32 = 1024;

pub(crate) struct Ctx<'p> {
    pub prog: &'p Program,
    stack: Vec<Value>,
    base: usize,
    /// Index of the function running, or None at the top level.
    cur_func: Option<u32>,
    /// The script functions being run, outermost first: (function, base of its frame). Names
    /// are resolved through them, innermost first, as MVEL's factories chain a function's
    /// variables to its caller's.
    frames: Vec<(u32, usize)>,
    /// Which functions' definitions have run (see [`Expr::Call`]).
    defined: Vec<bool>,
    deadline: Option<Instant>,
    steps: u32,
    pub mem: usize,
    pub mem_limit: usize,
    guard: StackGuard,
    depth: u32,
    max_depth: u32,
    /// Value of the last expression statement evaluated.
    last: Value,
}

impl<'p> Ctx<'p> {
    pub(crate) fn new(
        prog: &'p Program,
        deadline: Option<Instant>,
        mem_limit: usize,
        stack_budget: usize,
        max_depth: u32,
    ) -> Self {
        Ctx {
            prog,
            stack: vec![Value::Undef; prog.slots as usize],
            base: 0,
            cur_func: None,
            frames: Vec::new(),
            defined: vec![false; prog.funcs.len()],
            deadline,
            steps: 0,
            mem: 0,
            mem_limit,
            guard: StackGuard::new(stack_budget),
            depth: 0,
            max_depth,
            last: Value::Null,
        }
    }

    pub(crate) fn set_global(&mut self, slot: u32, v: Value) {
        self.stack[slot as usize] = v;
    }

    pub(crate) fn run(&mut self) -> Result<Value> {
        let prog = self.prog;
        match self.block(&prog.body)? {
            Flow::Return(v) => Ok(v),
            _ => Ok(std::mem::take(&mut self.last)),
        }
    }

    // ---- sandbox ----
    #[inline]
    pub(crate) fn tick(&mut self) -> Result<()> {
        self.steps = self.steps.wrapping_add(1);
        if self.steps.is_multiple_of(CLOCK_EVERY)
            && let Some(d) = self.deadline
            && Instant::now() >= d
        {
            return Err(TbelError::new(
                ErrorKind::Timeout,
                "Script execution is stopped!",
            ));
        }
        Ok(())
    }

    /// Accounts `n` bytes of new collection content.
    #[inline]
    pub(crate) fn alloc(&mut self, n: usize) -> Result<()> {
        self.mem += n;
        if self.mem_limit > 0 && self.mem > self.mem_limit {
            return Err(self.overflow(self.mem));
        }
        Ok(())
    }
    pub(crate) fn free(&mut self, n: usize) {
        self.mem = self.mem.saturating_sub(n);
    }
    /// A single new string of `len` bytes must fit the budget on its own.
    #[inline]
    pub(crate) fn check_str(&self, len: usize) -> Result<()> {
        if self.mem_limit > 0 && len + self.mem > self.mem_limit {
            return Err(self.overflow(len + self.mem));
        }
        Ok(())
    }
    fn overflow(&self, size: usize) -> TbelError {
        TbelError::new(
            ErrorKind::Memory,
            format!("Script memory overflow ({size} > {})!", self.mem_limit),
        )
    }

    fn slot_name(&self, slot: u32, global: bool) -> Rc<str> {
        let names = match (global, self.cur_func) {
            (false, Some(f)) => &self.prog.funcs[f as usize].slot_names,
            _ => &self.prog.slot_names,
        };
        names
            .get(slot as usize)
            .cloned()
            .unwrap_or_else(|| "?".into())
    }

    // ---- statements ----
    fn block(&mut self, stmts: &[Stmt]) -> Result<Flow> {
        for s in stmts {
            match self.stmt(s)? {
                Flow::Normal => {}
                f => return Ok(f),
            }
        }
        Ok(Flow::Normal)
    }

    fn stmt(&mut self, s: &Stmt) -> Result<Flow> {
        match s {
            Stmt::Expr(e) => {
                self.last = self.eval(e)?;
            }
            Stmt::Decl(slot, ty, init, pos) => {
                let v = match init {
                    Some(e) => {
                        let v = self.eval(e)?;
                        crate::convert::to_decl(*ty, v).map_err(|e| e.at(*pos))?
                    }
                    None => Value::Null,
                };
                self.last = v.clone();
                self.stack[self.base + *slot as usize] = v;
            }
            Stmt::If(branches, otherwise) => {
                for (c, then) in branches {
                    let cv = self.eval(c)?;
                    if truthy(&cv)? {
                        return self.stmt(then);
                    }
                }
                if let Some(e) = otherwise {
                    return self.stmt(e);
                }
            }
            Stmt::While(c, body) => loop {
                self.tick()?;
                let cv = self.eval(c)?;
                if !truthy(&cv)? {
                    break;
                }
                match self.stmt(body)? {
                    Flow::Break => break,
                    Flow::Return(v) => return Ok(Flow::Return(v)),
                    _ => {}
                }
            },
            Stmt::DoWhile(body, c) => loop {
                self.tick()?;
                match self.stmt(body)? {
                    Flow::Break => break,
                    Flow::Return(v) => return Ok(Flow::Return(v)),
                    _ => {}
                }
                let cv = self.eval(c)?;
                if !truthy(&cv)? {
                    break;
                }
            },
            Stmt::For {
                init,
                cond,
                update,
                body,
            } => {
                for s in init {
                    self.stmt(s)?;
                }
                loop {
                    self.tick()?;
                    if let Some(c) = cond {
                        let cv = self.eval(c)?;
                        if !truthy(&cv)? {
                            break;
                        }
                    }
                    match self.stmt(body)? {
                        Flow::Break => break,
                        Flow::Return(v) => return Ok(Flow::Return(v)),
                        _ => {}
                    }
                    for u in update {
                        self.eval(u)?;
                    }
                }
            }
            Stmt::Foreach {
                slot,
                coll,
                body,
                pos,
            } => {
                let c = self.eval(coll)?;
                let items: Vec<Value> = match &c {
                    Value::List(l) | Value::Set(l) => l.borrow().clone(),
                    Value::Map(m) => m
                        .borrow()
                        .iter()
                        .map(|(k, v)| Value::Entry(Rc::new((Value::Str(k.clone()), v.clone()))))
                        .collect(),
                    Value::Str(s) => s.chars().map(Value::Char).collect(),
                    Value::Int(n) => (1..=*n).map(Value::Int).collect(),
                    Value::Null | Value::Undef => {
                        return Err(TbelError::runtime("null value in foreach").at(*pos));
                    }
                    v => {
                        return Err(TbelError::runtime(format!(
                            "non-iterable type: {}",
                            v.type_name()
                        ))
                        .at(*pos));
                    }
                };
                for it in items {
                    self.tick()?;
                    self.stack[self.base + *slot as usize] = it;
                    match self.stmt(body)? {
                        Flow::Break => break,
                        Flow::Return(v) => return Ok(Flow::Return(v)),
                        _ => {}
                    }
                }
            }
            Stmt::Block(v) => return self.block(v),
            Stmt::Return(e) => {
                let v = match e {
                    Some(e) => self.eval(e)?,
                    None => Value::Null,
                };
                return Ok(Flow::Return(v));
            }
            Stmt::FuncDef(f) => self.defined[*f as usize] = true,
            Stmt::Break => return Ok(Flow::Break),
            Stmt::Continue => return Ok(Flow::Continue),
            Stmt::Switch { subject, cases } => {
                let v = self.eval(subject)?;
                let mut start = None;
                for (i, (c, _)) in cases.iter().enumerate() {
                    if let Some(c) = c {
                        let cv = self.eval(c)?;
                        if ops::loose_eq(&v, &cv) {
                            start = Some(i);
                            break;
                        }
                    }
                }
                if start.is_none() {
                    start = cases.iter().position(|(c, _)| c.is_none());
                }
                if let Some(start) = start {
                    for (_, body) in &cases[start..] {
                        match self.block(body)? {
                            Flow::Normal => {}
                            Flow::Break => break,
                            f => return Ok(f),
                        }
                    }
                }
            }
            Stmt::Empty => {}
        }
        Ok(Flow::Normal)
    }

    // ---- expressions ----
    pub(crate) fn eval(&mut self, e: &Expr) -> Result<Value> {
        match e {
            Expr::Const(v) => Ok(v.clone()),
            Expr::Local(s) => {
                let v = &self.stack[self.base + *s as usize];
                if let Value::Undef = v {
                    return Err(self.unresolved_slot(*s, false));
                }
                Ok(v.clone())
            }
            Expr::Name(id, pos) => match self.find_name(*id) {
                Some(at) => Ok(self.stack[at].clone()),
                None => Err(TbelError::runtime(format!(
                    "unresolvable property or identifier: {}",
                    self.prog.names[*id as usize].name
                ))
                .at(*pos)),
            },
            Expr::NullSafeChain(chain) => match self.eval(chain) {
                Err(e) if e.kind == ErrorKind::NullSafeStop => Ok(Value::Null),
                r => r,
            },
            Expr::List(items) => {
                let mut v = Vec::with_capacity(items.len());
                for i in items {
                    v.push(self.eval(i)?);
                }
                self.alloc(v.iter().map(Value::shallow_size).sum::<usize>() + 16)?;
                Ok(Value::list(v))
            }
            Expr::Map(entries) => {
                let mut m = indexmap::IndexMap::with_capacity(entries.len());
                let mut size = 16;
                for (k, e) in entries {
                    let k = match k {
                        MapKey::Name(k) => k.clone(),
                        MapKey::Computed(k) => self.eval(k)?.to_key(),
                    };
                    let v = self.eval(e)?;
                    // TBEL's maps drop a key whose value is null (ExecutionHashMap.put).
                    if v.is_null() {
                        m.shift_remove(&k);
                        continue;
                    }
                    size += k.len() + v.shallow_size();
                    m.insert(k, v);
                }
                self.alloc(size)?;
                Ok(Value::map(m))
            }
            Expr::Unary(op, inner, pos) => {
                let v = self.eval(inner)?;
                unary(*op, v).map_err(|e| e.at(*pos))
            }
            Expr::Binary(op, a, b, pos) => {
                let x = self.eval(a)?;
                let y = self.eval(b)?;
                let r = ops::binary(*op, &x, &y).map_err(|e| e.at(*pos))?;
                if let Value::Str(s) = &r {
                    self.check_str(s.len()).map_err(|e| e.at(*pos))?;
                }
                Ok(r)
            }
            Expr::And(a, b) => {
                let x = self.eval(a)?;
                if !truthy(&x)? {
                    return Ok(Value::Bool(false));
                }
                let y = self.eval(b)?;
                Ok(Value::Bool(truthy(&y)?))
            }
            Expr::Or(a, b) => {
                let x = self.eval(a)?;
                if truthy(&x)? {
                    return Ok(Value::Bool(true));
                }
                let y = self.eval(b)?;
                Ok(Value::Bool(truthy(&y)?))
            }
            Expr::Ternary(c, a, b) => {
                let cv = self.eval(c)?;
                if truthy(&cv)? {
                    self.eval(a)
                } else {
                    self.eval(b)
                }
            }
            Expr::Assign(target, op, rhs, pos) => self.assign(target, *op, rhs, *pos),
            Expr::IncDec {
                target,
                inc,
                prefix,
                pos,
            } => {
                let old = self.read_target(target, *pos)?;
                let one = Value::Int(1);
                let new = ops::binary(if *inc { BinOp::Add } else { BinOp::Sub }, &old, &one)
                    .map_err(|e| e.at(*pos))?;
                let new = match (&old, new) {
                    (Value::Byte(_), v) => Value::Byte(v.as_i64().unwrap_or(0) as i8),
                    (_, v) => v,
                };
                self.write_target(target, new.clone(), *pos)?;
                Ok(if *prefix { new } else { old })
            }
            Expr::Prop {
                obj,
                name,
                null_safe,
                pos,
            } => {
                let o = self.eval(obj)?;
                if o.is_null() {
                    if *null_safe {
                        return Err(null_safe_stop());
                    }
                    return Err(null_deref(name, obj).at(*pos));
                }
                let v = crate::lib_methods::property(&o, name).map_err(|e| e.at(*pos))?;
                if *null_safe && v.is_null() {
                    return Err(null_safe_stop());
                }
                Ok(v)
            }
            Expr::Index { obj, index, pos } => {
                let o = self.eval(obj)?;
                let i = self.eval(index)?;
                crate::lib_methods::index_get(&o, &i).map_err(|e| e.at(*pos))
            }
            Expr::Method {
                obj,
                name,
                args,
                null_safe,
                pos,
            } => {
                let o = self.eval(obj)?;
                if o.is_null() && *null_safe {
                    return Err(null_safe_stop());
                }
                let args = self.eval_args(args)?;
                if o.is_null() {
                    return Err(TbelError::runtime(format!(
                        "Cannot invoke method '{name}' of null ({})",
                        describe(obj)
                    ))
                    .at(*pos));
                }
                let v = crate::lib_methods::call_method(self, &o, name, args).map_err(|e| e.at(*pos))?;
                if *null_safe && v.is_null() {
                    return Err(null_safe_stop());
                }
                Ok(v)
            }
            Expr::Call { func, args, pos, helper_may_exist } => {
                let args = self.eval_args(args)?;
                if !self.defined[*func as usize] && helper_may_exist.get() {
                    let name = &self.prog.funcs[*func as usize].name;
                    match crate::lib_helpers::call_helper(self, name, args.clone()) {
                        Err(e) if e.message.starts_with("unable to resolve method:") => helper_may_exist.set(false),
                        r => return r.map_err(|e| e.at(*pos)),
                    }
                }
                self.call_func(*func, args).map_err(|e| e.at(*pos))
            }
            Expr::Helper { name, args, pos } => {
                let args = self.eval_args(args)?;
                crate::lib_helpers::call_helper(self, name, args).map_err(|e| e.at(*pos))
            }
            Expr::Static {
                class,
                member,
                args,
                pos,
            } => {
                let args = match args {
                    Some(a) => Some(self.eval_args(a)?),
                    None => None,
                };
                crate::lib_static::call_static(self, class, member, args).map_err(|e| e.at(*pos))
            }
            Expr::New { class, args, pos } => {
                let args = self.eval_args(args)?;
                crate::lib_static::new_object(self, class, args).map_err(|e| e.at(*pos))
            }
            Expr::NewArray { elem, size, pos } => {
                let n = self.eval(size)?;
                let n = n
                    .as_i64()
                    .ok_or_else(|| TbelError::runtime("array size must be a number").at(*pos))?;
                if n < 0 {
                    return Err(
                        TbelError::runtime(format!("NegativeArraySizeException: {n}")).at(*pos),
                    );
                }
                let (zero, width) = match elem {
                    DeclType::Int => (Value::Int(0), 4),
                    DeclType::Long => (Value::Long(0), 8),
                    DeclType::Double => (Value::Double(0.0), 8),
                    DeclType::Float => (Value::Float(0.0), 4),
                    DeclType::Byte => (Value::Byte(0), 1),
                    DeclType::Short => (Value::Int(0), 2),
                    DeclType::Bool => (Value::Bool(false), 1),
                    _ => (Value::Null, 4),
                };
                let bytes = (n as usize).saturating_mul(width);
                if self.mem_limit > 0 && bytes > self.mem_limit / 2 {
                    return Err(TbelError::new(
                        ErrorKind::Memory,
                        format!(
                            "Max array length overflow ({bytes} > {})!",
                            self.mem_limit / 2
                        ),
                    )
                    .at(*pos));
                }
                self.alloc(bytes).map_err(|e| e.at(*pos))?;
                Ok(Value::list(vec![zero; n as usize]))
            }
            Expr::InstanceOf(e, ty) => {
                let v = self.eval(e)?;
                Ok(Value::Bool(instance_of(&v, ty)))
            }
            Expr::Cast(ty, e, pos) => {
                let v = self.eval(e)?;
                crate::convert::cast(*ty, v).map_err(|e| e.at(*pos))
            }
        }
    }

    /// Where the variable of [`Expr::Name`] `id` lives now, as an index into the stack: the
    /// running function's own slot, then each caller's variable of that name (innermost first),
    /// then the top level's. A variable not yet assigned is not there.
    fn find_name(&self, id: u32) -> Option<usize> {
        let name = &self.prog.names[id as usize];
        let assigned = |at: usize| !matches!(self.stack[at], Value::Undef);
        if let Some(s) = name.local {
            let at = self.base + s as usize;
            if assigned(at) {
                return Some(at);
            }
        }
        if let Some((_, callers)) = self.frames.split_last() {
            for &(f, base) in callers.iter().rev() {
                if let Some(&s) = self.prog.funcs[f as usize].slot_index.get(&name.name) {
                    let at = base + s as usize;
                    if assigned(at) {
                        return Some(at);
                    }
                }
            }
        }
        name.global.map(|s| s as usize).filter(|&at| assigned(at))
    }

    /// Where an assignment to [`Target::Name`] `id` goes: the variable the chain finds, else
    /// the top level's (which the parser made sure exists).
    fn name_target(&self, id: u32) -> Result<usize> {
        self.find_name(id)
            .or(self.prog.names[id as usize].global.map(|s| s as usize))
            .ok_or_else(|| {
                TbelError::runtime(format!(
                    "unresolvable property or identifier: {}",
                    self.prog.names[id as usize].name
                ))
            })
    }

    fn unresolved_slot(&self, slot: u32, global: bool) -> TbelError {
        TbelError::runtime(format!(
            "unresolvable property or identifier: {}",
            self.slot_name(slot, global)
        ))
    }

    fn eval_args(&mut self, args: &[Expr]) -> Result<Vec<Value>> {
        let mut v = Vec::with_capacity(args.len());
        for a in args {
            v.push(self.eval(a)?);
        }
        Ok(v)
    }

    pub(crate) fn call_func(&mut self, idx: u32, args: Vec<Value>) -> Result<Value> {
        let prog = self.prog;
        let f = &prog.funcs[idx as usize];
        self.tick()?;
        self.depth += 1;
        if self.depth > self.max_depth || self.guard.exceeded() {
            self.depth -= 1;
            return Err(TbelError::new(
                ErrorKind::StackOverflow,
                format!(
                    "StackOverflowError: maximum call depth exceeded in function '{}'",
                    f.name
                ),
            ));
        }
        let saved_base = self.base;
        let saved_func = self.cur_func;
        let new_base = self.stack.len();
        self.stack.resize(new_base + f.slots as usize, Value::Undef);
        for (i, a) in args.into_iter().enumerate() {
            if i < f.params as usize {
                self.stack[new_base + i] = a;
            }
        }
        for i in 0..f.params as usize {
            if let Value::Undef = self.stack[new_base + i] {
                self.stack[new_base + i] = Value::Null;
            }
        }
        self.base = new_base;
        self.cur_func = Some(idx);
        self.frames.push((idx, new_base));
        let saved_last = std::mem::take(&mut self.last);
        let r = self.block(&f.body);
        let last = std::mem::replace(&mut self.last, saved_last);
        self.stack.truncate(new_base);
        self.frames.pop();
        self.base = saved_base;
        self.cur_func = saved_func;
        self.depth -= 1;
        match r? {
            Flow::Return(v) => Ok(v),
            _ => Ok(last),
        }
    }

    fn read_target(&mut self, t: &Target, pos: Pos) -> Result<Value> {
        match t {
            Target::Local(s) => {
                let v = &self.stack[self.base + *s as usize];
                if let Value::Undef = v {
                    return Err(self.unresolved_slot(*s, false).at(pos));
                }
                Ok(v.clone())
            }
            Target::Name(id) => match self.find_name(*id) {
                Some(at) => Ok(self.stack[at].clone()),
                None => Err(TbelError::runtime(format!(
                    "unresolvable property or identifier: {}",
                    self.prog.names[*id as usize].name
                ))
                .at(pos)),
            },
            Target::Prop(o, n) => {
                let o = self.eval(o)?;
                if o.is_null() {
                    return Err(
                        TbelError::runtime(format!("Cannot read property '{n}' of null")).at(pos),
                    );
                }
                crate::lib_methods::property(&o, n).map_err(|e| e.at(pos))
            }
            Target::Index(o, i) => {
                let o = self.eval(o)?;
                let i = self.eval(i)?;
                crate::lib_methods::index_get(&o, &i).map_err(|e| e.at(pos))
            }
        }
    }

    fn write_target(&mut self, t: &Target, v: Value, pos: Pos) -> Result<()> {
        match t {
            Target::Local(s) => self.stack[self.base + *s as usize] = v,
            Target::Name(id) => {
                let at = self.name_target(*id).map_err(|e| e.at(pos))?;
                self.stack[at] = v;
            }
            Target::Prop(o, n) => {
                let o = self.eval(o)?;
                self.set_member(&o, &Value::Str(n.clone()), v)
                    .map_err(|e| e.at(pos))?;
            }
            Target::Index(o, i) => {
                let o = self.eval(o)?;
                let i = self.eval(i)?;
                self.set_member(&o, &i, v).map_err(|e| e.at(pos))?;
            }
        }
        Ok(())
    }

    fn assign(&mut self, t: &Target, op: Option<BinOp>, rhs: &Expr, pos: Pos) -> Result<Value> {
        match (t, op) {
            (Target::Local(s), None) => {
                let v = self.eval(rhs)?;
                self.stack[self.base + *s as usize] = v.clone();
                Ok(v)
            }
            (Target::Name(id), None) => {
                let v = self.eval(rhs)?;
                let at = self.name_target(*id).map_err(|e| e.at(pos))?;
                self.stack[at] = v.clone();
                Ok(v)
            }
            (Target::Local(_) | Target::Name(_), Some(op)) => {
                let old = self.read_target(t, pos)?;
                let r = self.eval(rhs)?;
                let v = compound(op, &old, &r).map_err(|e| e.at(pos))?;
                if let Value::Str(s) = &v {
                    self.check_str(s.len()).map_err(|e| e.at(pos))?;
                }
                self.write_target(t, v.clone(), pos)?;
                Ok(v)
            }
            (Target::Prop(o, n), op) => {
                let o = self.eval(o)?;
                let key = Value::Str(n.clone());
                self.assign_member(o, key, op, rhs, pos)
            }
            (Target::Index(o, i), op) => {
                let o = self.eval(o)?;
                let key = self.eval(i)?;
                self.assign_member(o, key, op, rhs, pos)
            }
        }
    }

    fn assign_member(
        &mut self,
        o: Value,
        key: Value,
        op: Option<BinOp>,
        rhs: &Expr,
        pos: Pos,
    ) -> Result<Value> {
        if o.is_null() {
            return Err(TbelError::runtime(format!(
                "Cannot set property '{}' of null",
                key.to_java_string()
            ))
            .at(pos));
        }
        let v = match op {
            None => self.eval(rhs)?,
            Some(op) => {
                let old = crate::lib_methods::index_get(&o, &key).map_err(|e| e.at(pos))?;
                let r = self.eval(rhs)?;
                compound(op, &old, &r).map_err(|e| e.at(pos))?
            }
        };
        self.set_member(&o, &key, v.clone())
            .map_err(|e| e.at(pos))?;
        Ok(v)
    }

    pub(crate) fn set_member(&mut self, o: &Value, key: &Value, v: Value) -> Result<()> {
        match o {
            Value::Map(m) => {
                let k = key.to_key();
                // TBEL's ExecutionHashMap.put removes the key when the value is null, so
                // `m.k = null` leaves no key behind (nor a null in the converter's output).
                if v.is_null() {
                    if let Some(old) = m.borrow_mut().shift_remove(&k) {
                        self.free(old.shallow_size());
                    }
                    return Ok(());
                }
                let add = k.len() + v.shallow_size();
                let old = m.borrow_mut().insert(k, v);
                if let Some(old) = old {
                    self.free(old.shallow_size())
                }
                self.alloc(add)
            }
            Value::List(l) => {
                let idx = key.as_i64().ok_or_else(|| {
                    TbelError::runtime(format!("invalid list index: {}", key.to_java_string()))
                })?;
                let len = l.borrow().len();
                if idx < 0 || idx as usize > len {
                    return Err(TbelError::runtime(format!(
                        "Index {idx} out of bounds for length {len}"
                    )));
                }
                let add = v.shallow_size();
                if idx as usize == len {
                    l.borrow_mut().push(v);
                } else {
                    let mut b = l.borrow_mut();
                    let v = match (&b[idx as usize], v) {
                        (Value::Byte(_), Value::Int(i)) => Value::Byte(i as i8),
                        (_, v) => v,
                    };
                    b[idx as usize] = v;
                }
                self.alloc(add)
            }
            other => Err(TbelError::runtime(format!(
                "Cannot set property '{}' on {}",
                key.to_java_string(),
                other.type_name()
            ))),
        }
    }
}

/// `x op= y`: MVEL's AssignmentNode runs MathProcessor on the current value; variables have no
/// static type to narrow the result back to (`x /= 2` with x = 7 is 3.5).
fn compound(op: BinOp, old: &Value, r: &Value) -> Result<Value> {
    ops::binary(op, old, r)
}

fn unary(op: UnOp, v: Value) -> Result<Value> {
    Ok(match op {
        UnOp::Not => Value::Bool(!truthy(&v)?),
        UnOp::Plus => v,
        UnOp::Neg => match v {
            Value::Byte(x) => Value::Int(-(x as i32)),
            Value::Char(c) => Value::Int(-(c as i32)),
            Value::Int(x) => Value::Int(x.wrapping_neg()),
            Value::Long(x) => Value::Long(x.wrapping_neg()),
            Value::Float(x) => Value::Float(-x),
            Value::Double(x) => Value::Double(-x),
            Value::Str(ref s) => {
                match ops::binary(BinOp::Sub, &Value::Int(0), &Value::Str(s.clone())) {
                    Ok(r) => r,
                    Err(_) => {
                        return Err(TbelError::runtime(format!("cannot negate String \"{s}\"")));
                    }
                }
            }
            v => {
                return Err(TbelError::runtime(format!(
                    "cannot negate {}",
                    v.type_name()
                )));
            }
        },
        UnOp::BitNot => match v {
            Value::Byte(x) => Value::Int(!(x as i32)),
            Value::Char(c) => Value::Int(!(c as i32)),
            Value::Int(x) => Value::Int(!x),
            Value::Long(x) => Value::Long(!x),
            v => {
                return Err(TbelError::runtime(format!(
                    "cannot apply ~ to {}",
                    v.type_name()
                )));
            }
        },
    })
}

fn instance_of(v: &Value, ty: &str) -> bool {
    match ty {
        "Object" => !v.is_null(),
        "String" => matches!(v, Value::Str(_)),
        "Integer" | "int" => matches!(v, Value::Int(_)),
        "Long" | "long" => matches!(v, Value::Long(_)),
        "Double" | "double" => matches!(v, Value::Double(_)),
        "Float" | "float" => matches!(v, Value::Float(_)),
        "Byte" | "byte" => matches!(v, Value::Byte(_)),
        "Character" | "char" => matches!(v, Value::Char(_)),
        "Boolean" | "boolean" => matches!(v, Value::Bool(_)),
        "Number" => v.is_number() && !matches!(v, Value::Char(_)),
        "List" | "ArrayList" => matches!(v, Value::List(_)),
        "Collection" | "Iterable" => matches!(v, Value::List(_) | Value::Set(_)),
        "Set" | "HashSet" | "LinkedHashSet" => matches!(v, Value::Set(_)),
        "Map" | "HashMap" | "LinkedHashMap" => matches!(v, Value::Map(_)),
        "Date" | "TbDate" => matches!(v, Value::Date(_)),
        _ => false,
    }
}

fn describe(e: &Expr) -> String {
    match e {
        Expr::Prop { name, .. } => format!("property '{name}'"),
        Expr::Method { name, .. } => format!("result of '{name}()'"),
        Expr::Index { .. } => "indexed value".into(),
        _ => "value".into(),
    }
}

fn null_safe_stop() -> TbelError {
    TbelError::new(ErrorKind::NullSafeStop, "null-safe navigation stopped at null")
}

fn null_deref(name: &str, obj: &Expr) -> TbelError {
    TbelError::runtime(format!(
        "Cannot read property '{name}' of null ({})",
        describe(obj)
    ))
}
