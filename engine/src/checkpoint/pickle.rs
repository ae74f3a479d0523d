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
    /// A storage persistent id.
    Storage(StorageRef),
    /// A rebuilt tensor.
    Tensor(TensorRef),
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

struct Vm<'a> {
    data: &'a [u8],
    pos: usize,
    op_pos: usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u64, Value>,
}

/// Runs the pickle program in `data` and returns the top-level value.
pub fn unpickle(data: &[u8]) -> Result<Value, PickleError> {
    let mut vm = Vm {
        data,
        pos: 0,
        op_pos: 0,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
    };
    vm.run()
}

impl<'a> Vm<'a> {
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
        match self.memo.get(&idx) {
            Some(v) => {
                let v = v.clone();
                self.stack.push(v);
                Ok(())
            }
            None => self.err(format!("memo key {idx} not defined")),
        }
    }

    fn memo_put(&mut self, idx: u64) -> Result<(), PickleError> {
        let v = self.top()?.clone();
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
                b')' => self.stack.push(Value::Tuple(Rc::new(Vec::new()))),
                b't' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::Tuple(Rc::new(items)));
                }
                0x85..=0x87 => {
                    let n = usize::from(op - 0x84);
                    if self.stack.len() < n {
                        return self.err("stack underflow");
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.stack.push(Value::Tuple(Rc::new(items)));
                }
                b']' => self
                    .stack
                    .push(Value::List(Rc::new(RefCell::new(Vec::new())))),
                b'l' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::List(Rc::new(RefCell::new(items))));
                }
                b'a' => {
                    let v = self.pop()?;
                    match self.top()? {
                        Value::List(l) => l.borrow_mut().push(v),
                        _ => return self.err("APPEND on a non-list"),
                    }
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    match self.top()? {
                        Value::List(l) => l.borrow_mut().extend(items),
                        // list subclasses / sets we don't model
                        Value::Object(_) | Value::Opaque(_) => {}
                        _ => return self.err("APPENDS on a non-list"),
                    }
                }
                b'}' => self
                    .stack
                    .push(Value::Dict(Rc::new(RefCell::new(Vec::new())))),
                b'd' => {
                    let items = self.pop_mark()?;
                    let d = Value::Dict(Rc::new(RefCell::new(Vec::new())));
                    self.set_items(&d, items)?;
                    self.stack.push(d);
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    let target = self.top()?.clone();
                    self.set_items(&target, vec![k, v])?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
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
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (module, name) {
                        (Value::Str(m), Value::Str(n)) => self.stack.push(Value::Global(m, n)),
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

    fn persistent_load(&self, pid: Value) -> Result<Value, PickleError> {
        let Value::Tuple(t) = pid else {
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
                Ok(Value::Storage(StorageRef {
                    key: key.clone(),
                    storage_type: storage_type.clone(),
                    numel,
                }))
            }
            _ => self.err(
                "unsupported persistent id (expected ('storage', type, key, location, numel))",
            ),
        }
    }

    fn reduce(&self, func: Value, args: Value) -> Result<Value, PickleError> {
        let Value::Global(module, name) = &func else {
            // e.g. calling a memoized object: keep it opaque
            return Ok(Value::Opaque("call result"));
        };
        let args_v = match &args {
            Value::Tuple(a) => a.to_vec(),
            _ => Vec::new(),
        };
        match (module.as_str(), name.as_str()) {
            ("collections", "OrderedDict") | ("builtins", "dict") | ("__builtin__", "dict") => {
                let d = Rc::new(RefCell::new(Vec::new()));
                if let Some(Value::List(items)) = args_v.first() {
                    for item in items.borrow().iter() {
                        if let Value::Tuple(kv) = item
                            && let [k, v] = kv.as_slice()
                        {
                            d.borrow_mut().push((k.clone(), v.clone()));
                        }
                    }
                }
                Ok(Value::Dict(d))
            }
            ("torch._utils", "_rebuild_tensor" | "_rebuild_tensor_v2" | "_rebuild_tensor_v3") => {
                self.rebuild_tensor(&args_v, name == "_rebuild_tensor_v3")
            }
            ("torch._utils", "_rebuild_parameter" | "_rebuild_parameter_with_state") => {
                match args_v.first() {
                    Some(t @ Value::Tensor(_)) => Ok(t.clone()),
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

    fn rebuild_tensor(&self, args: &[Value], v3: bool) -> Result<Value, PickleError> {
        let (Some(Value::Storage(storage)), Some(Value::Int(offset)), Some(size), Some(stride)) =
            (args.first(), args.get(1), args.get(2), args.get(3))
        else {
            return self.err("_rebuild_tensor: expected (storage, offset, size, stride, ...)");
        };
        let size = self.int_tuple(size, "size")?;
        let stride = self.int_tuple(stride, "stride")?;
        let mut storage = storage.clone();
        // v3 passes the dtype explicitly (storage is untyped there).
        if v3 && let Some(Value::Global(_, dtype)) = args.get(6) {
            storage.storage_type = format!("dtype:{dtype}");
        }
        Ok(Value::Tensor(TensorRef {
            storage,
            offset: *offset,
            size,
            stride,
        }))
    }

    fn int_tuple(&self, v: &Value, what: &str) -> Result<Vec<i64>, PickleError> {
        self.int_tuple_at(v, what, 0)
    }

    fn int_tuple_at(&self, v: &Value, what: &str, depth: usize) -> Result<Vec<i64>, PickleError> {
        if depth > 4 {
            return self.err(format!("tensor {what} is nested too deeply"));
        }
        let items: Vec<Value> = match v {
            Value::Tuple(t) => t.to_vec(),
            Value::List(l) => l.borrow().clone(),
            // torch.Size pickles as REDUCE(torch.Size, (tuple,))
            Value::Object(o) => match &o.borrow().args {
                Value::Tuple(a) => match a.first() {
                    Some(inner) => return self.int_tuple_at(inner, what, depth + 1),
                    None => Vec::new(),
                },
                _ => return self.err(format!("tensor {what} is not a tuple")),
            },
            _ => return self.err(format!("tensor {what} is not a tuple")),
        };
        items
            .iter()
            .map(|x| match x {
                Value::Int(i) => Ok(*i),
                _ => self.err(format!("tensor {what} holds a non-integer")),
            })
            .collect()
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
        let Value::Dict(d) = v else {
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
        let Value::List(l) = v else {
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
        let Value::Dict(d) = unpickle(STATE_DICT_PKL).unwrap() else {
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
        let Value::Object(o) = v else {
            panic!("not an object")
        };
        assert_eq!(o.borrow().class, "argparse.Namespace");
        assert!(matches!(o.borrow().state, Some(Value::Dict(_))));
    }
}
