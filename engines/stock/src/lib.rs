//! The `stock` engine: CPython's own evaluation loop, untouched.
//!
//! It installs no hook and does nothing at run time, so `pyhost --engine stock` runs a program
//! exactly as `python3.13` does. It is the baseline every other engine is measured against.
//! It calls no CPython API, so it is tagged `abi3` and loads into any supported host.

use pyhost_abi::{export_engine, Engine, EngineDescriptor, PythonTarget};

pub struct StockEngine;

impl Engine for StockEngine {
    fn descriptor() -> EngineDescriptor {
        EngineDescriptor {
            name: "stock".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "CPython's own evaluation loop, no hooks (the baseline)".into(),
            python: PythonTarget::abi3(3, 12),
        }
    }
}

export_engine!(StockEngine);
