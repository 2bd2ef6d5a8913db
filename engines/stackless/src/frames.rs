//! What a suspended tasklet's interpreter frames reference, told to CPython's cyclic garbage
//! collector, so that a tasklet blocked on a channel nobody else can reach is found to be
//! garbage (and killed, as Stackless does: see `sched::tasklet_finalize`).
//!
//! **CPython 3.13.0 only** (default build, 64-bit), like `cpython_state`: the layouts mirrored
//! here are private (`Include/internal/pycore_frame.h`, `Include/cpython/code.h`).
//!
//! # The rule
//!
//! The collector finds garbage by subtracting, from every object's reference count, the
//! references that other collectable objects report in their `tp_traverse`; what is left over
//! is held from outside. A running thread's frames report nothing (they are roots), and so far
//! neither did a suspended tasklet's: everything its frames held counted as held from outside,
//! so nothing they reached was ever garbage. A fiber now reports, while suspended:
//!
//! * the references its frames own, walking its saved frame chain exactly as CPython's own
//!   `_PyFrame_Traverse` walks a suspended generator's frame: `f_executable`, `f_funcobj`,
//!   `f_locals`, `frame_obj` and the slots `localsplus[0..stacktop]` (locals, cells, then the
//!   evaluation stack);
//! * the references the engine's own Rust frames on its stack hold across the switch (recorded
//!   in the fiber: `fiber::StackRef`), and its saved context and handled exception.
//!
//! Reporting less than is really held is always safe (the object looks held from outside and
//! is kept); reporting a reference that is not really held would let the collector free a live
//! object. So each rule below reports only slots that are certainly owned:
//!
//! * A frame that is not the innermost of a C call keeps a valid `stacktop` (3.13 writes it
//!   when it pushes the frame of a Python-to-Python call): all of `localsplus[0..stacktop]`.
//! * A frame in the middle of a call into C has `stacktop == -1` (the evaluation loop keeps the
//!   stack pointer in a register): only its locals, cells and free variables
//!   (`localsplus[0..co_nlocalsplus]`), which the 3.13 evaluation loop keeps consistent at
//!   every point where Python code can run (a store writes the new value before releasing the
//!   old one; a dying frame is unlinked from the chain before its locals are released).
//! * Its evaluation stack, though, is where the blocking call's own arguments live (`ch` of
//!   `ch.receive()`), so the engine's blocking entry points make it visible ([`CallSite`]):
//!   when the `args` array they were called with lies in the calling frame's evaluation stack,
//!   with that very call's callable and `self` just below it, that frame was stopped by a
//!   `CALL` that called them directly, whose inputs all stay on the stack, owned, until it
//!   returns; the frame's `stacktop` is set to the end of the arguments while the tasklet is
//!   suspended there (`fiber::switch_to`), or for the whole call when it runs Python code
//!   first ([`ExposedCallerStack`]), and `-1` is put back before the call returns. (CPython
//!   3.14 does the same for every call.)
//! * Frames owned by a generator or coroutine are left to that object's own `tp_traverse`;
//!   entry frames (on a C stack) own nothing.
//!
//! A tasklet suspended inside a running generator or coroutine is not reported at all: were
//! it garbage, the collector would first finalize that generator, which cannot be closed while
//! it runs ("generator already executing" printed as an ignored exception). It stays alive,
//! as before.

use pyo3_ffi as ffi;
use std::ffi::{c_char, c_int, c_void};
use std::ptr;

type Obj = *mut ffi::PyObject;

/// `_PyInterpreterFrame` of CPython 3.13.0 (`Include/internal/pycore_frame.h`): eight pointers,
/// `int stacktop`, `uint16_t return_offset`, `char owner`, then `localsplus` (variable size).
#[repr(C)]
pub struct InterpreterFrame313 {
    /// Strong: the code object (or None for an entry frame).
    pub f_executable: Obj,
    pub previous: *mut InterpreterFrame313,
    /// Strong.
    pub f_funcobj: Obj,
    /// Borrowed.
    pub f_globals: Obj,
    /// Borrowed.
    pub f_builtins: Obj,
    /// Strong, may be NULL.
    pub f_locals: Obj,
    /// Strong, may be NULL.
    pub frame_obj: Obj,
    pub instr_ptr: *mut u16,
    /// Offset of the top of the evaluation stack from `localsplus`; -1 while the evaluation
    /// loop holds the stack pointer itself.
    pub stacktop: c_int,
    pub return_offset: u16,
    pub owner: c_char,
    pub localsplus: [Obj; 1],
}

/// `enum _frameowner` of 3.13.0.
pub const FRAME_OWNED_BY_THREAD: c_char = 0;
pub const FRAME_OWNED_BY_GENERATOR: c_char = 1;
/// The `entry_frame` that every C → Python entry into the interpreter pushes.
pub const FRAME_OWNED_BY_CSTACK: c_char = 3;

/// The head of `PyCodeObject` of CPython 3.13.0 (`_PyCode_DEF` in `Include/cpython/code.h`),
/// up to the two fields read here.
#[repr(C)]
struct CodeHead313 {
    ob_base: ffi::PyVarObject,
    co_consts: Obj,
    co_names: Obj,
    co_exceptiontable: Obj,
    co_flags: c_int,
    co_argcount: c_int,
    co_posonlyargcount: c_int,
    co_kwonlyargcount: c_int,
    /// Slots of evaluation stack the code needs.
    co_stacksize: c_int,
    co_firstlineno: c_int,
    /// Slots of locals, cells and free variables before the evaluation stack.
    co_nlocalsplus: c_int,
}

/// `(co_nlocalsplus, co_stacksize)` of a frame's code, or None if it runs no code object.
unsafe fn code_sizes(frame: *const InterpreterFrame313) -> Option<(usize, usize)> {
    let code = (*frame).f_executable;
    // SAFETY: `f_executable` of a live frame is a strong reference; PyCode_Check reads its type.
    if code.is_null() || ffi::PyCode_Check(code) == 0 {
        return None;
    }
    let head = code.cast::<CodeHead313>();
    Some(((*head).co_nlocalsplus.max(0) as usize, (*head).co_stacksize.max(0) as usize))
}

/// How a blocking entry point was called: the vectorcall arguments it received, the object it
/// was called on (a method's `self`, a module function's module), the method descriptor through
/// which it is reached on its type (NULL for a module function) and its C function, as stored
/// in its `PyMethodDef`.
pub struct CallSite {
    pub args: *const Obj,
    pub nargs: ffi::Py_ssize_t,
    pub kwnames: Obj,
    pub self_obj: Obj,
    pub descriptor: Obj,
    pub function: *mut c_void,
}

impl CallSite {
    /// Makes the evaluation stack of `frame` (the innermost frame, which made this call)
    /// visible to the collector, if the call came straight from a `CALL` of that frame (see the
    /// module notes); returns the frame to hand to [`hide`], or NULL if nothing was exposed.
    ///
    /// # Safety
    /// GIL held, inside the entry point this describes; `frame` is the thread state's
    /// `current_frame`.
    pub unsafe fn expose(&self, frame: *mut ffi::_PyInterpreterFrame) -> *mut ffi::_PyInterpreterFrame {
        let frame = frame.cast::<InterpreterFrame313>();
        let nargs = ffi::PyVectorcall_NARGS(self.nargs as usize);
        if self.args.is_null() || !self.kwnames.is_null() || frame.is_null() {
            return ptr::null_mut();
        }
        if (*frame).owner == FRAME_OWNED_BY_CSTACK || (*frame).stacktop != -1 {
            return ptr::null_mut();
        }
        let Some((nlocalsplus, stacksize)) = code_sizes(frame) else { return ptr::null_mut() };
        let base = ptr::addr_of_mut!((*frame).localsplus).cast::<Obj>();
        let (low, high) = (base.add(nlocalsplus) as usize, base.add(nlocalsplus + stacksize) as usize);
        let (first, end) = (self.args as usize, self.args.offset(nargs) as usize);
        // Room for the callable and self slots below the arguments, all inside the stack.
        if first < low + 2 * size_of::<Obj>() || end > high {
            return ptr::null_mut();
        }
        // The frame's `CALL` called exactly this: [callable, self_or_null, args...].
        let (callable, self_slot) = (*self.args.sub(2), *self.args.sub(1));
        let direct = if !self.descriptor.is_null() && callable == self.descriptor {
            self_slot == self.self_obj
        } else {
            self_slot.is_null()
                && !callable.is_null()
                && ffi::PyCFunction_Check(callable) != 0
                && ffi::PyCFunction_GetFunction(callable).map(|f| f as *mut c_void) == Some(self.function)
                && ffi::PyCFunction_GetSelf(callable) == self.self_obj
        };
        if !direct {
            return ptr::null_mut();
        }
        // SAFETY (3.13.0): see the module notes; `hide` puts back `-1` before the entry point
        // returns to the evaluation loop.
        (*frame).stacktop = ((end - base as usize) / size_of::<Obj>()) as c_int;
        frame.cast()
    }
}

/// Undoes [`CallSite::expose`] (nothing for NULL).
///
/// # Safety
/// `frame` came from `expose` in the same call of the entry point, which is still running.
pub unsafe fn hide(frame: *mut ffi::_PyInterpreterFrame) {
    if !frame.is_null() {
        (*frame.cast::<InterpreterFrame313>()).stacktop = -1;
    }
}

/// [`CallSite::expose`] for as long as it lives, for an entry point that runs Python code
/// (which pushes frames of its own) before it may block.
pub struct ExposedCallerStack {
    frame: *mut ffi::_PyInterpreterFrame,
}

impl ExposedCallerStack {
    /// # Safety
    /// As [`CallSite::expose`], called at the start of the entry point; dropped before it
    /// returns.
    pub unsafe fn new(site: &CallSite) -> Self {
        let ts = crate::cpython_state::current_thread_state();
        Self { frame: site.expose((*ts).current_frame) }
    }
}

impl Drop for ExposedCallerStack {
    fn drop(&mut self) {
        // SAFETY: the frame is the caller's, still executing the call that made `self`.
        unsafe { hide(self.frame) };
    }
}

/// Whether a suspended chain (from `top`) runs inside a generator or coroutine.
unsafe fn in_generator(top: *mut InterpreterFrame313) -> bool {
    let mut frame = top;
    while !frame.is_null() {
        if (*frame).owner == FRAME_OWNED_BY_GENERATOR {
            return true;
        }
        frame = (*frame).previous;
    }
    false
}

/// Visits what the frames of a suspended chain (from `top`) own, by the rules of the module
/// notes; Some(false) means the chain is not reported (it runs inside a generator), and
/// nothing else of the fiber should be.
///
/// # Safety
/// GIL held, from a `tp_traverse`; `top` is the `current_frame` of a suspended tasklet, whose
/// chain is walkable (entry frames still on its stack, or rerouted around while its stack bytes
/// are elsewhere: `cpython_state::unlink_c_stack_frames`).
pub unsafe fn visit_suspended_frames(
    top: *mut ffi::_PyInterpreterFrame,
    visit: ffi::visitproc,
    arg: *mut c_void,
) -> Result<bool, c_int> {
    let top = top.cast::<InterpreterFrame313>();
    if in_generator(top) {
        return Ok(false);
    }
    let mut frame = top;
    while !frame.is_null() {
        if (*frame).owner == FRAME_OWNED_BY_THREAD {
            visit_frame(frame, visit, arg)?;
        }
        frame = (*frame).previous;
    }
    Ok(true)
}

unsafe fn visit_frame(
    frame: *mut InterpreterFrame313,
    visit: ffi::visitproc,
    arg: *mut c_void,
) -> Result<(), c_int> {
    let call = |object: Obj| -> Result<(), c_int> {
        if object.is_null() {
            return Ok(());
        }
        match visit(object, arg) {
            0 => Ok(()),
            rc => Err(rc),
        }
    };
    call((*frame).f_executable)?;
    call((*frame).f_funcobj)?;
    call((*frame).f_locals)?;
    call((*frame).frame_obj.cast())?;
    let Some((nlocalsplus, _)) = code_sizes(frame) else { return Ok(()) };
    let owned = if (*frame).stacktop >= 0 { (*frame).stacktop as usize } else { nlocalsplus };
    let base = ptr::addr_of!((*frame).localsplus).cast::<Obj>();
    for i in 0..owned {
        call(*base.add(i))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::offset_of;

    // Offsets from CPython 3.13.0's headers (LP64): pycore_frame.h and cpython/code.h.
    #[test]
    fn layouts_match_cpython_3_13_0() {
        type F = InterpreterFrame313;
        assert_eq!(offset_of!(F, previous), 8);
        assert_eq!(offset_of!(F, f_funcobj), 16);
        assert_eq!(offset_of!(F, f_locals), 40);
        assert_eq!(offset_of!(F, frame_obj), 48);
        assert_eq!(offset_of!(F, instr_ptr), 56);
        assert_eq!(offset_of!(F, stacktop), 64);
        assert_eq!(offset_of!(F, return_offset), 68);
        assert_eq!(offset_of!(F, owner), 70);
        assert_eq!(offset_of!(F, localsplus), 72);
        assert_eq!(offset_of!(CodeHead313, co_consts), 24);
        assert_eq!(offset_of!(CodeHead313, co_flags), 48);
        assert_eq!(offset_of!(CodeHead313, co_stacksize), 64);
        assert_eq!(offset_of!(CodeHead313, co_nlocalsplus), 72);
    }
}
