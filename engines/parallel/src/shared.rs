//! Storage behind `parallel.protect()`: lists, dicts, sets and single values that every
//! interpreter of the process reads and writes under a read-write lock. Items are pickles
//! (bytes): values cross by copy, and no Python object is shared between interpreters. Dict
//! keys and set members are compared by their pickles (so `1` and `1.0` are different keys).

use indexmap::{IndexMap, IndexSet};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};

pub type Item = Vec<u8>;

pub enum Data {
    List(Vec<Item>),
    Dict(IndexMap<Item, Item>),
    Set(IndexSet<Item>),
    Value(Item),
}

impl Data {
    pub fn kind(&self) -> &'static str {
        match self {
            Data::List(_) => "list",
            Data::Dict(_) => "dict",
            Data::Set(_) => "set",
            Data::Value(_) => "value",
        }
    }
}

pub struct Shared {
    pub id: u64,
    data: RwLock<Data>,
    /// The thread holding the write lock inside `update` (0: none): a nested access from that
    /// thread would deadlock, so it is refused instead.
    updating: AtomicU64,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn registry() -> &'static Mutex<HashMap<u64, Arc<Shared>>> {
    static SHARED: OnceLock<Mutex<HashMap<u64, Arc<Shared>>>> = OnceLock::new();
    SHARED.get_or_init(Default::default)
}

/// A number for the calling thread (never 0).
pub fn thread_key() -> u64 {
    thread_local!(static KEY: u64 = NEXT_ID.fetch_add(1, Ordering::Relaxed) | (1 << 63));
    KEY.with(|key| *key)
}

impl Shared {
    pub fn create(data: Data) -> Arc<Shared> {
        let shared = Arc::new(Shared {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            data: RwLock::new(data),
            updating: AtomicU64::new(0),
        });
        registry().lock().unwrap_or_else(|p| p.into_inner()).insert(shared.id, shared.clone());
        shared
    }

    pub fn get(id: u64) -> Option<Arc<Shared>> {
        registry().lock().unwrap_or_else(|p| p.into_inner()).get(&id).cloned()
    }

    /// Forgets the container (proxies still holding its id get an error).
    pub fn drop_id(id: u64) {
        registry().lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
    }

    /// Whether the calling thread is inside `update` of this container.
    pub fn updating_here(&self) -> bool {
        self.updating.load(Ordering::Relaxed) == thread_key()
    }

    /// Read access. `wait` runs a blocking acquisition (the caller releases its GIL there).
    pub fn read<'a>(
        &'a self,
        wait: impl FnOnce(&'a RwLock<Data>) -> RwLockReadGuard<'a, Data>,
    ) -> RwLockReadGuard<'a, Data> {
        match self.data.try_read() {
            Ok(guard) => guard,
            Err(std::sync::TryLockError::Poisoned(poison)) => poison.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => wait(&self.data),
        }
    }

    /// Write access, as `read`.
    pub fn write<'a>(
        &'a self,
        wait: impl FnOnce(&'a RwLock<Data>) -> RwLockWriteGuard<'a, Data>,
    ) -> RwLockWriteGuard<'a, Data> {
        match self.data.try_write() {
            Ok(guard) => guard,
            Err(std::sync::TryLockError::Poisoned(poison)) => poison.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => wait(&self.data),
        }
    }

    pub fn set_updating(&self, active: bool) {
        self.updating.store(if active { thread_key() } else { 0 }, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containers_are_found_by_id_until_dropped() {
        let shared = Shared::create(Data::List(vec![b"1".to_vec()]));
        let found = Shared::get(shared.id).expect("registered");
        match &*found.read(|lock| lock.read().unwrap()) {
            Data::List(items) => assert_eq!(items, &vec![b"1".to_vec()]),
            _ => panic!("a list"),
        }
        Shared::drop_id(shared.id);
        assert!(Shared::get(shared.id).is_none());
    }

    #[test]
    fn an_update_is_marked_for_its_own_thread_only() {
        let shared = Shared::create(Data::Value(Vec::new()));
        shared.set_updating(true);
        assert!(shared.updating_here());
        let other = shared.clone();
        assert!(!std::thread::spawn(move || other.updating_here()).join().unwrap());
        shared.set_updating(false);
        assert!(!shared.updating_here());
    }
}
