//! Recovery on arbitrary segment bytes (on the simulated disk): open never panics; when it
//! succeeds, everything it serves reads back, positions are gap-free, and a second open agrees.
#![no_main]

use std::path::Path;
use std::sync::Arc;

use eventlog::sim::SimFs;
use eventlog::vfs::{Vfs, write_all_at};
use eventlog::{Options, Store};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let fs = SimFs::new();
    let dir = Path::new("/fuzz/store");
    fs.create_dir_all(dir).unwrap();
    // The first byte picks how the input is split into one or two segments.
    let (split, bytes) = match data.split_first() {
        Some((split, rest)) => (*split as usize, rest),
        None => (0, data),
    };
    let cut = if split % 2 == 1 { (split * 17).min(bytes.len()) } else { bytes.len() };
    let first = fs.create_new(&dir.join("00000000000000000000.seg")).unwrap();
    write_all_at(&*first, &bytes[..cut], 0).unwrap();
    if cut < bytes.len() {
        // A second segment named as if the first held 3 events.
        let second = fs.create_new(&dir.join("00000000000000000003.seg")).unwrap();
        write_all_at(&*second, &bytes[cut..], 0).unwrap();
    }
    let options = Options {
        storage: Arc::new(fs.clone()),
        checkpoint_every_events: 0,
        ..Options::default()
    };
    let _ = eventlog::tools::verify_on(&fs, dir);
    let Ok(store) = Store::open(dir, options.clone()) else {
        return;
    };
    let head = store.head();
    let all = store.read_all(0, usize::MAX).expect("recovered events read back");
    assert_eq!(all.len() as u64, head);
    for (position, event) in all.iter().enumerate() {
        assert_eq!(event.position, position as u64);
        assert_eq!(store.get(event.id).unwrap().as_ref(), Some(event));
    }
    drop(store);
    let again = Store::open(dir, options).expect("a recovered store reopens");
    assert_eq!(again.read_all(0, usize::MAX).unwrap(), all);
});
