//! The engine's own wire format for builtin data crossing between interpreters: one byte
//! `MAGIC`, then one value. A value is a tag byte and its payload; lengths and counts are u64
//! little-endian; containers are followed by their items (a dict by key, value, key, value…).
//!
//! It exists because marshal and pickle are the main interpreter's cost in a `map` of small
//! items (both build a table of every object written, to keep shared references), and this
//! data needs none: only immutable atoms and fresh containers cross (a list or dict met twice
//! sends the whole value by pickle, which keeps the sharing).

/// First byte of a value in this format. Never the first byte of a pickle (0x80, PROTO).
pub const MAGIC: u8 = 0x01;

/// Containers nested deeper than this go by pickle (which has its own limit: see
/// parallel.py's `_dumps`).
pub const MAX_DEPTH: usize = 100;

pub const NONE: u8 = 0;
pub const FALSE: u8 = 1;
pub const TRUE: u8 = 2;
/// An int in i64: 8 bytes.
pub const INT: u8 = 3;
/// Any other int: length, then its hexadecimal text as `int.__format__('#x')` writes it.
pub const BIG_INT: u8 = 4;
/// f64 bits: NaN payloads and -0.0 cross as they are.
pub const FLOAT: u8 = 5;
/// Real then imaginary part, f64 bits each.
pub const COMPLEX: u8 = 6;
/// Kind (1, 2 or 4 bytes per code point, as CPython stores it), length in code points, then
/// the code points: any str crosses as it is, lone surrogates included.
pub const STR: u8 = 7;
pub const BYTES: u8 = 8;
pub const TUPLE: u8 = 9;
pub const LIST: u8 = 10;
pub const DICT: u8 = 11;
