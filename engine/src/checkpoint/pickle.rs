//! A small pickle virtual machine for the archives written by `torch.save`
//! and `torch.jit.save` (the `data.pkl` entry).
//!
//! It never imports or runs Python code: `GLOBAL`s become plain names and
//! `REDUCE`/`NEWOBJ` apply only the handful of constructors torch uses for
//! state dicts (`OrderedDict`, `_rebuild_tensor_v2`, `_rebuild_parameter`, …).
//! Anything else becomes an opaque [`Value::Object`], so checkpoints that also
//! pickle e.g. an `argparse.Namespace` or NumPy scalars still load: only the
//! tensors matter to us. Tensor data lives in separate archive entries; the
//! VM only records which storage (persistent id) and which view of it.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// A reference to a storage entry (`data/<key>`) of the archive.
#[derive(Debug, Clone, PartialEq)]
pub struct StorageRef {
    /// Entry name under `data/`.
    pub key: String,
    /// Legacy typed-storage class name, e.g. `FloatStorage`.
    pub storage_type: String,
    /// Number of elements of the storage's dtype.
    pub numel: u64,
}

/// A tensor as a strided view of a storage.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorRef {
    /// The backing storage.
    pub storage: StorageRef,
    /// Offset in elements.
    pub offset: i64,
    /// Shape.
    pub size: Vec<i64>,
    /// Strides in elements.
    pub stride: Vec<i64>,
}

/// An instance of a class we do not interpret.
#[derive(Debug)]
pub struct Object {
    /// `module.name` of the class or callable.
    pub class: String,
    /// Constructor arguments.
    pub args: Value,
    /// State set by `BUILD` (usually a dict of attributes).
    pub state: Option<Value>,
}

/// Unpickled value. Containers are shared (`Rc`) because pickle's memo
/// refers to the same object when it is mutated after being memoized, and
/// so that re-fetching a large memoized tuple costs nothing.
#[derive(Debug, Clone)]
pub enum Value {
    /// `None`.
    None,
    /// `True`/`False`.
    Bool(bool),
    /// An integer that fits in i64.
    Int(i64),
    /// A float.
    Float(f64),
    /// A text string.
    Str(String),
    /// A byte string.
    Bytes(Vec<u8>),
    /// A tuple.
    Tuple(Rc<Vec<Value>>),
    /// A list.
    List(Rc<RefCell<Vec<Value>>>),
    /// A dict or `OrderedDict`, in insertion order.
    Dict(Rc<RefCell<Vec<(Value, Value)>>>),
    /// A class or function reference (`module`, `name`).
    Global(String, String),
    /// A storage persistent id (boxed, like the tensor: every value is as large
    /// as the largest variant, and a pickle holds many more small values).
    Storage(Box<StorageRef>),
    /// A rebuilt tensor.
    Tensor(Box<TensorRef>),
    /// An uninterpreted object.
    Object(Rc<RefCell<Object>>),
    /// Something harmless we do not represent (big ints, sets, buffers).
    Opaque(&'static str),
}

/// A malformed or unsupported pickle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("pickle error at byte {offset}: {message}")]
pub struct PickleError {
    /// Position of the opcode that failed.
    pub offset: usize,
    /// What went wrong.
    pub message: String,
}

/// Deepest container nesting accepted. Dropping a `Value` recurses once per level,
/// so an unbounded depth would overflow the stack, which `catch_unwind` cannot catch;
/// torch state dicts and TorchScript module trees are a few dozen levels at most.
pub const MAX_DEPTH: usize = 512;

/// Most tensor dimensions accepted (libtorch itself stops at 64).
pub const MAX_TENSOR_DIMS: usize = 64;

/// Heap bytes that fetching memoized or duplicated strings, bytes, names and
/// tensor references may copy, as a multiple of the pickle's own size (plus a
/// floor). Only containers are shared (`Rc`), so without this a few bytes of
/// `BINGET` repeated a million times could copy a megabyte string a million times.
const CLONE_BUDGET_FACTOR: usize = 16;
const CLONE_BUDGET_FLOOR: usize = 16 << 20;

/// Heap bytes the values built may take (stack slots, containers and their
/// elements, memo entries), as a multiple of the pickle's size plus a floor. A
/// value costs far more than the byte or two of opcode that makes it, so without
/// this a 2 MB pickle of a million one-element lists takes half a gigabyte before
/// its nesting is refused. State dicts and TorchScript pickles use a few percent.
const ALLOC_BUDGET_FACTOR: usize = 32;
const ALLOC_BUDGET_FLOOR: usize = 64 << 20;
/// What a container costs beyond its elements: the `Rc`/`RefCell`/`Vec` headers
/// and the first allocation of its buffer (room for four values).
const CONTAINER_COST: usize = 64 + 4 * std::mem::size_of::<Value>();

struct Vm<'a> {
    data: &'a [u8],
    pos: usize,
    op_pos: usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u64, Value>,
    clone_budget: usize,
    alloc_budget: usize,
    /// Deepest the stack has been (its slots were charged when first reached).
    stack_high: usize,
}

/// Runs the pickle program in `data` and returns the top-level value, whose
/// nesting is at most [`MAX_DEPTH`] (so it can be dropped normally).
pub fn unpickle(data: &[u8]) -> Result<Value, PickleError> {
    let mut vm = Vm {
        data,
        pos: 0,
        op_pos: 0,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        clone_budget: data
            .len()
            .saturating_mul(CLONE_BUDGET_FACTOR)
            .saturating_add(CLONE_BUDGET_FLOOR),
        alloc_budget: data
            .len()
            .saturating_mul(ALLOC_BUDGET_FACTOR)
            .saturating_add(ALLOC_BUDGET_FLOOR),
        stack_high: 0,
    };
    let root = vm.run()?;
    if nesting_depth(&root) > MAX_DEPTH {
        return Err(PickleError {
            offset: vm.pos,
            message: format!("containers nested more than {MAX_DEPTH} levels deep"),
        });
    }
    Ok(root)
}

/// Address of a shared container, to recognise it when reached again.
fn container_id(v: &Value) -> Option<usize> {
    match v {
        Value::Tuple(t) => Some(Rc::as_ptr(t) as *const () as usize),
        Value::List(l) => Some(Rc::as_ptr(l) as *const () as usize),
        Value::Dict(d) => Some(Rc::as_ptr(d) as *const () as usize),
        Value::Object(o) => Some(Rc::as_ptr(o) as *const () as usize),
        _ => None,
    }
}

/// The values directly inside `v` (shallow clones: containers are `Rc`s).
fn children(v: &Value) -> Vec<Value> {
    match v {
        Value::Tuple(t) => t.to_vec(),
        Value::List(l) => l.borrow().clone(),
        Value::Dict(d) => d
            .borrow()
            .iter()
            .flat_map(|(k, v)| [k.clone(), v.clone()])
            .collect(),
        Value::Object(o) => {
            let o = o.borrow();
            let mut c = vec![o.args.clone()];
            c.extend(o.state.clone());
            c
        }
        _ => Vec::new(),
    }
}

/// Longest chain of nested containers below `root` (1 for a flat container),
/// counted without recursion. Each container is explored once, so shared and
/// self-referring containers cost no more than their size; an edge back to a
/// container still being explored (a cycle) is not followed, since a cycle is
/// never dropped and so never recursed through.
fn nesting_depth(root: &Value) -> usize {
    // Finished containers map to their depth; those being explored to None.
    let mut seen: HashMap<usize, Option<usize>> = HashMap::new();
    // (container, its children, next child, deepest child so far)
    let mut path: Vec<(usize, Vec<Value>, usize, usize)> = Vec::new();
    let Some(id) = container_id(root) else {
        return 0;
    };
    seen.insert(id, None);
    path.push((id, children(root), 0, 0));
    let mut deepest = 0;
    while let Some(top) = path.last_mut() {
        if top.2 < top.1.len() {
            let child = top.1[top.2].clone();
            top.2 += 1;
            let Some(cid) = container_id(&child) else {
                continue;
            };
            match seen.get(&cid) {
                Some(Some(d)) => top.3 = top.3.max(*d),
                Some(None) => {}
                None => {
                    if path.len() > MAX_DEPTH {
                        // Deep enough to refuse; no need to look further.
                        return path.len() + 1;
                    }
                    seen.insert(cid, None);
                    path.push((cid, children(&child), 0, 0));
                }
            }
        } else {
            let (id, _, _, below) = path.pop().unwrap_or_default();
            let d = below + 1;
            seen.insert(id, Some(d));
            deepest = deepest.max(d);
            if let Some(parent) = path.last_mut() {
                parent.3 = parent.3.max(d);
            }
        }
    }
    deepest
}

// The derived drop would recurse once per nesting level, and a pickle of a few
// megabytes can nest a million levels: a stack overflow aborts the process. So
// the last owner of a container moves its contents onto a work list and each
// one is emptied the same way before it is dropped; containers owned elsewhere
// only lose a count. Cycles are leaked, as with any `Rc`.
impl Drop for Value {
    fn drop(&mut self) {
        let mut work = Vec::new();
        take_contents(self, &mut work);
        while let Some(mut v) = work.pop() {
            take_contents(&mut v, &mut work);
        }
    }
}

/// Moves the contents of `v` onto `work` when `v` is its container's last owner.
fn take_contents(v: &mut Value, work: &mut Vec<Value>) {
    match v {
        Value::Tuple(t) => {
            if let Some(items) = Rc::get_mut(t) {
                work.append(items);
            }
        }
        Value::List(l) => {
            if let Some(items) = Rc::get_mut(l) {
                work.append(items.get_mut());
            }
        }
        Value::Dict(d) => {
            if let Some(items) = Rc::get_mut(d) {
                for (k, v) in items.get_mut().drain(..) {
                    work.push(k);
                    work.push(v);
                }
            }
        }
        Value::Object(o) => {
            if let Some(o) = Rc::get_mut(o) {
                let o = o.get_mut();
                work.push(std::mem::replace(&mut o.args, Value::None));
                work.extend(o.state.take());
            }
        }
        _ => {}
    }
}

/// Heap bytes a clone of `v` copies (containers are shared, so cost nothing).
fn clone_cost(v: &Value) -> usize {
    match v {
        Value::Str(s) => s.len(),
        Value::Bytes(b) => b.len(),
        Value::Global(m, n) => m.len() + n.len(),
        Value::Storage(s) => s.key.len() + s.storage_type.len(),
        Value::Tensor(t) => {
            t.storage.key.len() + t.storage.storage_type.len() + 8 * (t.size.len() + t.stride.len())
        }
        _ => 0,
    }
}

impl<'a> Vm<'a> {
    /// Accounts for a copy of `bytes` heap bytes (see [`CLONE_BUDGET_FACTOR`]).
    fn charge(&mut self, bytes: usize) -> Result<(), PickleError> {
        match self.clone_budget.checked_sub(bytes) {
            Some(left) => {
                self.clone_budget = left;
                Ok(())
            }
            None => self.err(format!(
                "memoized or duplicated values copy more than {} times the pickle's size; refusing (memo amplification)",
                CLONE_BUDGET_FACTOR
            )),
        }
    }

    /// Charges `elements` values and `containers` new containers to the
    /// allocation budget.
    fn grow(&mut self, elements: usize, containers: usize) -> Result<(), PickleError> {
        let bytes = elements
            .saturating_mul(std::mem::size_of::<Value>())
            .saturating_add(containers.saturating_mul(CONTAINER_COST));
        match self.alloc_budget.checked_sub(bytes) {
            Some(left) => {
                self.alloc_budget = left;
                Ok(())
            }
            None => self.err(format!(
                "the values it builds would take more than {ALLOC_BUDGET_FACTOR} times the pickle's size in memory; refusing"
            )),
        }
    }

    /// A copy of `v`, charged to the clone budget.
    fn clone_charged(&mut self, v: &Value) -> Result<Value, PickleError> {
        self.charge(clone_cost(v))?;
        Ok(v.clone())
    }

    fn err<T>(&self, message: impl Into<String>) -> Result<T, PickleError> {
        Err(PickleError {
            offset: self.op_pos,
            message: message.into(),
        })
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], PickleError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len());
        match end {
            Some(end) => {
                let s = &self.data[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => self.err(format!(
                "truncated: needs {n} more bytes, {} left",
                self.data.len() - self.pos
            )),
        }
    }

    fn u8(&mut self) -> Result<u8, PickleError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, PickleError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, PickleError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, PickleError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    fn len_u64(&mut self) -> Result<usize, PickleError> {
        let n = self.u64()?;
        match usize::try_from(n) {
            Ok(n) => Ok(n),
            Err(_) => self.err("length does not fit in memory"),
        }
    }

    fn line(&mut self) -> Result<&'a str, PickleError> {
        let rest = &self.data[self.pos..];
        let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
            return self.err("truncated: missing newline");
        };
        self.pos += nl + 1;
        match std::str::from_utf8(&rest[..nl]) {
            Ok(s) => Ok(s),
            Err(_) => self.err("line is not UTF-8"),
        }
    }

    fn utf8(&self, b: &[u8]) -> Result<String, PickleError> {
        match std::str::from_utf8(b) {
            Ok(s) => Ok(s.to_owned()),
            Err(_) => self.err("string is not UTF-8"),
        }
    }

    fn pop(&mut self) -> Result<Value, PickleError> {
        match self.stack.pop() {
            Some(v) => Ok(v),
            None => self.err("stack underflow"),
        }
    }

    fn top(&mut self) -> Result<&mut Value, PickleError> {
        let off = self.op_pos;
        self.stack.last_mut().ok_or(PickleError {
            offset: off,
            message: "stack underflow".into(),
        })
    }

    fn pop_mark(&mut self) -> Result<Vec<Value>, PickleError> {
        let Some(m) = self.marks.pop() else {
            return self.err("MARK missing");
        };
        if m > self.stack.len() {
            return self.err("MARK beyond stack");
        }
        Ok(self.stack.split_off(m))
    }

    fn memo_get(&mut self, idx: u64) -> Result<(), PickleError> {
        let cost = match self.memo.get(&idx) {
            Some(v) => clone_cost(v),
            None => return self.err(format!("memo key {idx} not defined")),
        };
        self.charge(cost)?;
        if let Some(v) = self.memo.get(&idx) {
            let v = v.clone();
            self.stack.push(v);
        }
        Ok(())
    }

    fn memo_put(&mut self, idx: u64) -> Result<(), PickleError> {
        let v = self.top()?.clone();
        self.charge(clone_cost(&v))?;
        self.grow(2, 0)?;
        self.memo.insert(idx, v);
        Ok(())
    }

    fn int_from_le(&self, b: &[u8]) -> Value {
        if b.is_empty() {
            return Value::Int(0);
        }
        if b.len() > 8 {
            return Value::Opaque("big integer");
        }
        let neg = b[b.len() - 1] & 0x80 != 0;
        let mut a = if neg { [0xffu8; 8] } else { [0u8; 8] };
        a[..b.len()].copy_from_slice(b);
        Value::Int(i64::from_le_bytes(a))
    }

    fn set_items(&mut self, target: &Value, items: Vec<Value>) -> Result<(), PickleError> {
        if !items.len().is_multiple_of(2) {
            return self.err("SETITEMS with an odd number of items");
        }
        let mut it = items.into_iter();
        let mut pairs = Vec::new();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            pairs.push((k, v));
        }
        match target {
            Value::Dict(d) => d.borrow_mut().extend(pairs),
            // Dict subclasses we don't model keep their items as state.
            Value::Object(o) => {
                let mut o = o.borrow_mut();
                let d = Rc::new(RefCell::new(pairs));
                o.state.get_or_insert(Value::Dict(d));
            }
            _ => return self.err("SETITEM(S) on a non-dict"),
        }
        Ok(())
    }

    fn run(&mut self) -> Result<Value, PickleError> {
        loop {
            if self.stack.len() > self.stack_high {
                self.grow(self.stack.len() - self.stack_high, 0)?;
                self.stack_high = self.stack.len();
            }
            self.op_pos = self.pos;
            let op = self.u8()?;
            match op {
                0x80 => {
                    let proto = self.u8()?;
                    if proto > 5 {
                        return self.err(format!("unsupported pickle protocol {proto}"));
                    }
                }
                0x95 => {
                    self.u64()?; // FRAME: a length hint only
                }
                b'.' => return self.pop(),
                b'(' => self.marks.push(self.stack.len()),
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let v = self.top()?.clone();
                    self.charge(clone_cost(&v))?;
                    self.stack.push(v);
                }
                b'N' => self.stack.push(Value::None),
                0x88 => self.stack.push(Value::Bool(true)),
                0x89 => self.stack.push(Value::Bool(false)),
                b'J' => {
                    let v = self.u32()? as i32;
                    self.stack.push(Value::Int(i64::from(v)));
                }
                b'K' => {
                    let v = self.u8()?;
                    self.stack.push(Value::Int(i64::from(v)));
                }
                b'M' => {
                    let v = self.u16()?;
                    self.stack.push(Value::Int(i64::from(v)));
                }
                0x8a => {
                    let n = self.u8()? as usize;
                    let b = self.take(n)?;
                    let v = self.int_from_le(b);
                    self.stack.push(v);
                }
                0x8b => {
                    let n = self.u32()? as usize;
                    let b = self.take(n)?;
                    let v = self.int_from_le(b);
                    self.stack.push(v);
                }
                b'I' | b'L' => {
                    let line = self.line()?.trim_end_matches('L');
                    let v = match line {
                        "01" => Value::Bool(true),
                        "00" => Value::Bool(false),
                        s => s
                            .parse::<i64>()
                            .map(Value::Int)
                            .unwrap_or(Value::Opaque("big integer")),
                    };
                    self.stack.push(v);
                }
                b'G' => {
                    let b = self.take(8)?;
                    let mut a = [0u8; 8];
                    a.copy_from_slice(b);
                    self.stack.push(Value::Float(f64::from_be_bytes(a)));
                }
                b'F' => {
                    let line = self.line()?;
                    match line.trim().parse::<f64>() {
                        Ok(f) => self.stack.push(Value::Float(f)),
                        Err(_) => return self.err(format!("bad float literal {line:?}")),
                    }
                }
                b'X' => {
                    let n = self.u32()? as usize;
                    let b = self.take(n)?;
                    let s = self.utf8(b)?;
                    self.stack.push(Value::Str(s));
                }
                0x8c => {
                    let n = self.u8()? as usize;
                    let b = self.take(n)?;
                    let s = self.utf8(b)?;
                    self.stack.push(Value::Str(s));
                }
                0x8d => {
                    let n = self.len_u64()?;
                    let b = self.take(n)?;
                    let s = self.utf8(b)?;
                    self.stack.push(Value::Str(s));
                }
                b'V' => {
                    let s = self.line()?.to_owned();
                    self.stack.push(Value::Str(s));
                }
                b'S' => {
                    let s = self
                        .line()?
                        .trim()
                        .trim_matches(|c| c == '\'' || c == '"')
                        .to_owned();
                    self.stack.push(Value::Str(s));
                }
                b'T' => {
                    let n = self.u32()? as usize;
                    let b = self.take(n)?;
                    self.stack
                        .push(Value::Str(String::from_utf8_lossy(b).into_owned()));
                }
                b'U' => {
                    let n = self.u8()? as usize;
                    let b = self.take(n)?;
                    self.stack
                        .push(Value::Str(String::from_utf8_lossy(b).into_owned()));
                }
                b'B' => {
                    let n = self.u32()? as usize;
                    let b = self.take(n)?.to_vec();
                    self.stack.push(Value::Bytes(b));
                }
                b'C' => {
                    let n = self.u8()? as usize;
                    let b = self.take(n)?.to_vec();
                    self.stack.push(Value::Bytes(b));
                }
                0x8e | 0x96 => {
                    let n = self.len_u64()?;
                    let b = self.take(n)?.to_vec();
                    self.stack.push(Value::Bytes(b));
                }
                b')' => {
                    self.grow(0, 1)?;
                    self.stack.push(Value::Tuple(Rc::new(Vec::new())))
                }
                b't' => {
                    let items = self.pop_mark()?;
                    self.grow(items.len(), 1)?;
                    self.stack.push(Value::Tuple(Rc::new(items)));
                }
                0x85..=0x87 => {
                    let n = usize::from(op - 0x84);
                    if self.stack.len() < n {
                        return self.err("stack underflow");
                    }
                    self.grow(n, 1)?;
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.stack.push(Value::Tuple(Rc::new(items)));
                }
                b']' => {
                    self.grow(0, 1)?;
                    self.stack
                        .push(Value::List(Rc::new(RefCell::new(Vec::new()))))
                }
                b'l' => {
                    let items = self.pop_mark()?;
                    self.grow(items.len(), 1)?;
                    self.stack.push(Value::List(Rc::new(RefCell::new(items))));
                }
                b'a' => {
                    self.grow(1, 0)?;
                    let v = self.pop()?;
                    match self.top()? {
                        Value::List(l) => l.borrow_mut().push(v),
                        _ => return self.err("APPEND on a non-list"),
                    }
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    self.grow(items.len(), 0)?;
                    match self.top()? {
                        Value::List(l) => l.borrow_mut().extend(items),
                        // list subclasses / sets we don't model
                        Value::Object(_) | Value::Opaque(_) => {}
                        _ => return self.err("APPENDS on a non-list"),
                    }
                }
                b'}' => {
                    self.grow(0, 1)?;
                    self.stack
                        .push(Value::Dict(Rc::new(RefCell::new(Vec::new()))))
                }
                b'd' => {
                    let items = self.pop_mark()?;
                    self.grow(items.len(), 1)?;
                    let d = Value::Dict(Rc::new(RefCell::new(Vec::new())));
                    self.set_items(&d, items)?;
                    self.stack.push(d);
                }
                b's' => {
                    self.grow(2, 0)?;
                    let v = self.pop()?;
                    let k = self.pop()?;
                    let target = self.top()?.clone();
                    self.set_items(&target, vec![k, v])?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    self.grow(items.len(), 0)?;
                    let target = self.top()?.clone();
                    self.set_items(&target, items)?;
                }
                0x8f => self.stack.push(Value::Opaque("set")),
                0x90 => {
                    self.pop_mark()?;
                }
                0x91 => {
                    self.pop_mark()?;
                    self.stack.push(Value::Opaque("frozenset"));
                }
                b'h' => {
                    let i = self.u8()?;
                    self.memo_get(u64::from(i))?;
                }
                b'j' => {
                    let i = self.u32()?;
                    self.memo_get(u64::from(i))?;
                }
                b'g' => {
                    let i = self.line()?.trim().parse::<u64>();
                    match i {
                        Ok(i) => self.memo_get(i)?,
                        Err(_) => return self.err("bad GET index"),
                    }
                }
                b'q' => {
                    let i = self.u8()?;
                    self.memo_put(u64::from(i))?;
                }
                b'r' => {
                    let i = self.u32()?;
                    self.memo_put(u64::from(i))?;
                }
                b'p' => {
                    let i = self.line()?.trim().parse::<u64>();
                    match i {
                        Ok(i) => self.memo_put(i)?,
                        Err(_) => return self.err("bad PUT index"),
                    }
                }
                0x94 => {
                    let i = self.memo.len() as u64;
                    self.memo_put(i)?;
                }
                b'c' => {
                    let module = self.line()?.to_owned();
                    let name = self.line()?.to_owned();
                    self.stack.push(Value::Global(module, name));
                }
                0x93 => {
                    let mut name = self.pop()?;
                    let mut module = self.pop()?;
                    match (&mut module, &mut name) {
                        (Value::Str(m), Value::Str(n)) => {
                            let g = Value::Global(std::mem::take(m), std::mem::take(n));
                            self.stack.push(g);
                        }
                        _ => return self.err("STACK_GLOBAL needs two strings"),
                    }
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let v = self.persistent_load(pid)?;
                    self.stack.push(v);
                }
                b'P' => return self.err("text persistent ids are not used by torch"),
                b'R' => {
                    let args = self.pop()?;
                    let func = self.pop()?;
                    let v = self.reduce(func, args)?;
                    self.stack.push(v);
                }
                0x81 => {
                    let args = self.pop()?;
                    let cls = self.pop()?;
                    let v = self.reduce(cls, args)?;
                    self.stack.push(v);
                }
                0x92 => {
                    let _kwargs = self.pop()?;
                    let args = self.pop()?;
                    let cls = self.pop()?;
                    let v = self.reduce(cls, args)?;
                    self.stack.push(v);
                }
                b'b' => {
                    let state = self.pop()?;
                    match self.top()? {
                        Value::Object(o) => o.borrow_mut().state = Some(state),
                        // OrderedDict state (e.g. a state dict's `_metadata`) and
                        // attributes of rebuilt tensors are irrelevant to the weights.
                        Value::Dict(_) | Value::Tensor(_) | Value::Opaque(_) | Value::List(_) => {}
                        other => {
                            let what = format!("BUILD on {}", kind_name(other));
                            return self.err(what);
                        }
                    }
                }
                b'i' | b'o' => return self.err("INST/OBJ opcodes are not used by torch.save"),
                0x82..=0x84 => return self.err("extension registry opcodes are not supported"),
                0x97 | 0x98 => return self.err("out-of-band buffers are not supported"),
                other => return self.err(format!("unknown opcode 0x{other:02x}")),
            }
        }
    }

    fn persistent_load(&mut self, pid: Value) -> Result<Value, PickleError> {
        let Value::Tuple(t) = &pid else {
            return self.err("persistent id is not a tuple");
        };
        match t.as_slice() {
            [
                Value::Str(tag),
                Value::Global(_, storage_type),
                Value::Str(key),
                _location,
                Value::Int(numel),
            ] if tag == "storage" => {
                let Ok(numel) = u64::try_from(*numel) else {
                    return self.err("negative storage size");
                };
                self.charge(key.len() + storage_type.len())?;
                Ok(Value::Storage(Box::new(StorageRef {
                    key: key.clone(),
                    storage_type: storage_type.clone(),
                    numel,
                })))
            }
            _ => self.err(
                "unsupported persistent id (expected ('storage', type, key, location, numel))",
            ),
        }
    }

    fn reduce(&mut self, func: Value, args: Value) -> Result<Value, PickleError> {
        let Value::Global(module, name) = &func else {
            // e.g. calling a memoized object: keep it opaque
            return Ok(Value::Opaque("call result"));
        };
        // Borrowed, not copied: one large memoized tuple can be the arguments of
        // every REDUCE in the file.
        let args_v: &[Value] = match &args {
            Value::Tuple(a) => a.as_slice(),
            _ => &[],
        };
        match (module.as_str(), name.as_str()) {
            ("collections", "OrderedDict") | ("builtins", "dict") | ("__builtin__", "dict") => {
                let mut pairs = Vec::new();
                if let Some(Value::List(items)) = args_v.first() {
                    for item in items.borrow().iter() {
                        if let Value::Tuple(kv) = item
                            && let [k, v] = kv.as_slice()
                        {
                            let k = self.clone_charged(k)?;
                            let v = self.clone_charged(v)?;
                            pairs.push((k, v));
                        }
                    }
                }
                Ok(Value::Dict(Rc::new(RefCell::new(pairs))))
            }
            ("torch._utils", "_rebuild_tensor" | "_rebuild_tensor_v2" | "_rebuild_tensor_v3") => {
                self.rebuild_tensor(args_v, name == "_rebuild_tensor_v3")
            }
            ("torch._utils", "_rebuild_parameter" | "_rebuild_parameter_with_state") => {
                match args_v.first() {
                    Some(t @ Value::Tensor(_)) => self.clone_charged(t),
                    _ => self.err("_rebuild_parameter without a tensor"),
                }
            }
            _ => Ok(Value::Object(Rc::new(RefCell::new(Object {
                class: format!("{module}.{name}"),
                args,
                state: None,
            })))),
        }
    }

    fn rebuild_tensor(&mut self, args: &[Value], v3: bool) -> Result<Value, PickleError> {
        let (Some(Value::Storage(storage)), Some(Value::Int(offset)), Some(size), Some(stride)) =
            (args.first(), args.get(1), args.get(2), args.get(3))
        else {
            return self.err("_rebuild_tensor: expected (storage, offset, size, stride, ...)");
        };
        let size = self.int_tuple(size, "size")?;
        let stride = self.int_tuple(stride, "stride")?;
        self.charge(
            storage.key.len() + storage.storage_type.len() + 8 * (size.len() + stride.len()),
        )?;
        let mut storage = StorageRef::clone(storage);
        // v3 passes the dtype explicitly (storage is untyped there).
        if v3 && let Some(Value::Global(_, dtype)) = args.get(6) {
            storage.storage_type = format!("dtype:{dtype}");
        }
        Ok(Value::Tensor(Box::new(TensorRef {
            storage,
            offset: *offset,
            size,
            stride,
        })))
    }

    fn int_tuple(&self, v: &Value, what: &str) -> Result<Vec<i64>, PickleError> {
        self.int_tuple_at(v, what, 0)
    }

    fn int_tuple_at(&self, v: &Value, what: &str, depth: usize) -> Result<Vec<i64>, PickleError> {
        if depth > 4 {
            return self.err(format!("tensor {what} is nested too deeply"));
        }
        let ints = |items: &[Value]| -> Result<Vec<i64>, PickleError> {
            // Checked before copying: every tensor could name the same huge tuple.
            if items.len() > MAX_TENSOR_DIMS {
                return self.err(format!(
                    "tensor {what} has {} dimensions (at most {MAX_TENSOR_DIMS})",
                    items.len()
                ));
            }
            items
                .iter()
                .map(|x| match x {
                    Value::Int(i) => Ok(*i),
                    _ => self.err(format!("tensor {what} holds a non-integer")),
                })
                .collect()
        };
        match v {
            Value::Tuple(t) => ints(t),
            Value::List(l) => ints(&l.borrow()),
            // torch.Size pickles as REDUCE(torch.Size, (tuple,))
            Value::Object(o) => match &o.borrow().args {
                Value::Tuple(a) => match a.first() {
                    Some(inner) => self.int_tuple_at(inner, what, depth + 1),
                    None => Ok(Vec::new()),
                },
                _ => self.err(format!("tensor {what} is not a tuple")),
            },
            _ => self.err(format!("tensor {what} is not a tuple")),
        }
    }
}

/// Short type name for error messages.
pub fn kind_name(v: &Value) -> &'static str {
    match v {
        Value::None => "None",
        Value::Bool(_) => "bool",
        Value::Int(_) => "int",
        Value::Float(_) => "float",
        Value::Str(_) => "str",
        Value::Bytes(_) => "bytes",
        Value::Tuple(_) => "tuple",
        Value::List(_) => "list",
        Value::Dict(_) => "dict",
        Value::Global(..) => "global",
        Value::Storage(_) => "storage",
        Value::Tensor(_) => "tensor",
        Value::Object(_) => "object",
        Value::Opaque(s) => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_protocol_2_ordered_dict_of_ints() {
        // pickle.dumps(collections.OrderedDict([('a', 1), ('b', -2)]), protocol=2)
        let data: &[u8] = b"\x80\x02ccollections\nOrderedDict\nq\x00)Rq\x01(X\x01\x00\x00\x00aq\x02K\x01X\x01\x00\x00\x00bq\x03J\xfe\xff\xff\xffu.";
        let v = unpickle(data).unwrap();
        let Value::Dict(d) = &v else {
            panic!("not a dict: {v:?}")
        };
        let d = d.borrow();
        assert_eq!(d.len(), 2);
        assert!(matches!((&d[0].0, &d[0].1), (Value::Str(k), Value::Int(1)) if k == "a"));
        assert!(matches!((&d[1].0, &d[1].1), (Value::Str(k), Value::Int(-2)) if k == "b"));
    }

    #[test]
    fn memo_shares_mutated_containers() {
        // d = {}; pickle.dumps([d, d]) then d filled after memoization:
        // EMPTY_LIST, BINPUT 0, MARK, EMPTY_DICT, BINPUT 1, BINGET 1, APPENDS, then
        // BINGET 1 K 'x' SETITEM -> both list entries must see the item.
        let data: &[u8] = b"\x80\x02]q\x00(}q\x01h\x01eh\x01X\x01\x00\x00\x00xK\x07s0.";
        let v = unpickle(data).unwrap();
        let Value::List(l) = &v else {
            panic!("not a list")
        };
        let l = l.borrow();
        assert_eq!(l.len(), 2);
        for item in l.iter() {
            let Value::Dict(d) = item else {
                panic!("not a dict")
            };
            assert_eq!(d.borrow().len(), 1);
        }
    }

    /// data.pkl of `torch.save({'w': torch.zeros(2, 3), 'n': torch.tensor(5)})`
    /// (torch 2.13, default protocol 2).
    const STATE_DICT_PKL: &[u8] = b"\x80\x02\x7d\x71\x00\x28\x58\x01\x00\x00\x00\x77\x71\x01\x63\x74\x6f\x72\x63\x68\x2e\x5f\x75\x74\x69\x6c\x73\x0a\x5f\x72\x65\x62\x75\x69\x6c\x64\x5f\x74\x65\x6e\x73\x6f\x72\x5f\x76\x32\x0a\x71\x02\x28\x28\x58\x07\x00\x00\x00\x73\x74\x6f\x72\x61\x67\x65\x71\x03\x63\x74\x6f\x72\x63\x68\x0a\x46\x6c\x6f\x61\x74\x53\x74\x6f\x72\x61\x67\x65\x0a\x71\x04\x58\x01\x00\x00\x00\x30\x71\x05\x58\x03\x00\x00\x00\x63\x70\x75\x71\x06\x4b\x06\x74\x71\x07\x51\x4b\x00\x4b\x02\x4b\x03\x86\x71\x08\x4b\x03\x4b\x01\x86\x71\x09\x89\x63\x63\x6f\x6c\x6c\x65\x63\x74\x69\x6f\x6e\x73\x0a\x4f\x72\x64\x65\x72\x65\x64\x44\x69\x63\x74\x0a\x71\x0a\x29\x52\x71\x0b\x74\x71\x0c\x52\x71\x0d\x58\x01\x00\x00\x00\x6e\x71\x0e\x68\x02\x28\x28\x68\x03\x63\x74\x6f\x72\x63\x68\x0a\x4c\x6f\x6e\x67\x53\x74\x6f\x72\x61\x67\x65\x0a\x71\x0f\x58\x01\x00\x00\x00\x31\x71\x10\x68\x06\x4b\x01\x74\x71\x11\x51\x4b\x00\x29\x29\x89\x68\x0a\x29\x52\x71\x12\x74\x71\x13\x52\x71\x14\x75\x2e";

    #[test]
    fn reads_a_torch_save_state_dict() {
        let v = unpickle(STATE_DICT_PKL).unwrap();
        let Value::Dict(d) = &v else {
            panic!("not a dict")
        };
        let d = d.borrow();
        let [
            (Value::Str(k0), Value::Tensor(w)),
            (Value::Str(k1), Value::Tensor(n)),
        ] = d.as_slice()
        else {
            panic!("unexpected entries {d:?}")
        };
        assert_eq!((k0.as_str(), k1.as_str()), ("w", "n"));
        assert_eq!(
            (w.size.as_slice(), w.stride.as_slice(), w.offset),
            (&[2i64, 3][..], &[3i64, 1][..], 0)
        );
        assert_eq!(
            w.storage,
            StorageRef {
                key: "0".into(),
                storage_type: "FloatStorage".into(),
                numel: 6
            }
        );
        assert!(n.size.is_empty() && n.stride.is_empty());
        assert_eq!(
            (n.storage.key.as_str(), n.storage.storage_type.as_str()),
            ("1", "LongStorage")
        );
    }

    #[test]
    fn damaged_pickles_never_panic() {
        for len in 0..STATE_DICT_PKL.len() {
            assert!(
                unpickle(&STATE_DICT_PKL[..len]).is_err(),
                "prefix of {len} bytes accepted"
            );
        }
        // Every single-byte substitution must give a value or an error, not a panic.
        for i in 0..STATE_DICT_PKL.len() {
            for b in [
                0x00, 0xff, b'(', b'.', b'h', b't', b'R', b'Q', b'b', 0x85, 0x94,
            ] {
                let mut data = STATE_DICT_PKL.to_vec();
                data[i] = b;
                let _ = unpickle(&data);
            }
        }
    }

    #[test]
    fn truncated_input_is_an_error_not_a_panic() {
        let data: &[u8] = b"\x80\x02X\x10\x00\x00\x00abc";
        let e = unpickle(data).unwrap_err();
        assert!(e.message.contains("truncated"), "{e}");
        assert!(unpickle(b"").is_err());
        assert!(unpickle(b"\x80\x02}(").is_err());
    }

    #[test]
    fn unknown_globals_become_opaque_objects() {
        // pickle of argparse.Namespace(lr=0.1) via REDUCE + BUILD, protocol 2
        let data: &[u8] = b"\x80\x02cargparse\nNamespace\nq\x00)\x81q\x01}q\x02X\x02\x00\x00\x00lrq\x03G?\xb9\x99\x99\x99\x99\x99\x9asb.";
        let v = unpickle(data).unwrap();
        let Value::Object(o) = &v else {
            panic!("not an object")
        };
        assert_eq!(o.borrow().class, "argparse.Namespace");
        assert!(matches!(o.borrow().state, Some(Value::Dict(_))));
    }

    /// Protocol-2 pickle header, `body`, then STOP.
    fn program(body: &[u8]) -> Vec<u8> {
        let mut p = b"\x80\x02".to_vec();
        p.extend_from_slice(body);
        p.push(b'.');
        p
    }

    fn assert_fast<T>(what: &str, f: impl FnOnce() -> T) -> T {
        let start = std::time::Instant::now();
        let out = f();
        let took = start.elapsed();
        assert!(took.as_secs_f64() < 2.0, "{what} took {took:?}");
        out
    }

    #[test]
    fn values_far_larger_than_the_pickle_are_refused_while_it_runs() {
        // A million nested lists from 2 MB (the corpus's many-values.pt): half a
        // gigabyte of values before the nesting could be checked at the end.
        let mut body = vec![b']'; 1_000_000];
        body.extend(std::iter::repeat_n(b'a', 999_999));
        let lists = program(&body);
        let e = assert_fast("a million nested lists", || unpickle(&lists).unwrap_err());
        assert!(e.message.contains("times the pickle's size"), "{e}");
        assert!(e.offset < lists.len() / 2, "refused early, at {}", e.offset);
        // Six million NONEs on the stack: 336 MB of slots from 6 MB.
        let e = unpickle(&program(&vec![b'N'; 6_000_000])).unwrap_err();
        assert!(e.message.contains("times the pickle's size"), "{e}");
        // A real state dict is far inside the budget.
        assert!(unpickle(STATE_DICT_PKL).is_ok());
    }

    #[test]
    fn deeply_nested_pickles_are_refused_without_overflowing_the_stack() {
        // EMPTY_TUPLE then 100,000 TUPLE1: 100,000 nested tuples from 100 KB,
        // within the allocation budget, so the depth check is what refuses them.
        let mut body = b")".to_vec();
        body.extend(std::iter::repeat_n(0x85u8, 100_000));
        let e = assert_fast("deep tuples", || unpickle(&program(&body)).unwrap_err());
        assert!(e.message.contains("nested more than"), "{e}");

        // The same chain left on the stack by a pickle that then fails: the VM's
        // stack is dropped with it.
        let mut bad = b"\x80\x02)".to_vec();
        bad.extend(std::iter::repeat_n(0x85u8, 100_000));
        bad.push(0xff);
        let e = assert_fast("deep tuples then a bad opcode", || {
            unpickle(&bad).unwrap_err()
        });
        assert!(e.message.contains("unknown opcode"), "{e}");

        // Nesting made by mutation after memoization: list i is appended into
        // list i-1 through the memo (MARK EMPTY_LIST PUT ... then GET/GET/APPEND).
        let n = 200_000u32;
        let mut body = Vec::new();
        for i in 0..n {
            body.push(b']');
            body.push(b'r');
            body.extend_from_slice(&i.to_le_bytes());
            body.push(b'0');
        }
        for i in 1..n {
            body.push(b'j');
            body.extend_from_slice(&(i - 1).to_le_bytes());
            body.push(b'j');
            body.extend_from_slice(&i.to_le_bytes());
            body.extend_from_slice(b"a0");
        }
        body.push(b'j');
        body.extend_from_slice(&0u32.to_le_bytes());
        let e = assert_fast("lists nested through the memo", || {
            unpickle(&program(&body)).unwrap_err()
        });
        assert!(e.message.contains("nested more than"), "{e}");

        // Moderate nesting is fine.
        let mut body = b")".to_vec();
        body.extend(std::iter::repeat_n(0x85u8, MAX_DEPTH - 1));
        assert!(unpickle(&program(&body)).is_ok());
    }

    #[test]
    fn a_value_dropped_outside_the_reader_does_not_recurse() {
        let mut v = Value::Tuple(Rc::new(Vec::new()));
        for _ in 0..1_000_000 {
            v = Value::Tuple(Rc::new(vec![v]));
        }
        assert_fast("dropping a million nested tuples", || drop(v));
    }

    #[test]
    fn memo_amplification_is_refused() {
        // A 1 MiB string memoized, then fetched a million times (5 bytes each):
        // copying it each time would need a terabyte.
        let big = 1usize << 20;
        let mut body = vec![b'X'];
        body.extend_from_slice(&(big as u32).to_le_bytes());
        body.extend(std::iter::repeat_n(b'a', big));
        body.extend_from_slice(b"q\x00");
        for _ in 0..1_000_000 {
            body.extend_from_slice(b"h\x00");
        }
        let e = assert_fast("memo amplification", || {
            unpickle(&program(&body)).unwrap_err()
        });
        assert!(e.message.contains("memo amplification"), "{e}");

        // Same with DUP.
        let mut body = vec![b'X'];
        body.extend_from_slice(&(big as u32).to_le_bytes());
        body.extend(std::iter::repeat_n(b'a', big));
        body.extend(std::iter::repeat_n(b'2', 1_000_000));
        let e = assert_fast("DUP amplification", || {
            unpickle(&program(&body)).unwrap_err()
        });
        assert!(e.message.contains("memo amplification"), "{e}");
    }

    #[test]
    fn tensor_shapes_with_absurdly_many_dimensions_are_refused() {
        // _rebuild_tensor_v2(storage, 0, (1,)*100000, (1,)*100000): every tensor naming
        // such a tuple would copy it.
        let mut body = b"ctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x01tQK\x00(".to_vec();
        body.extend(std::iter::repeat_n(b"K\x01".as_slice(), 100_000).flatten());
        body.extend_from_slice(b"tq\x00h\x00tR");
        let e = unpickle(&program(&body)).unwrap_err();
        assert!(e.message.contains("dimensions"), "{e}");
    }
}
